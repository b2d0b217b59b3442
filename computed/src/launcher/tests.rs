//! Tests that start real processes (as root here: user switching and cgroups; the cgroup
//! assertions are skipped with a message when not root).

use super::cgroup::{self, Layout};
use super::*;
use beowulf_types::{JobId, RunKey};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A node name no other test (or concurrent test run) uses.
fn node(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

/// A world-writable temporary directory, usable as the task user's workdir.
fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The user tasks run as: nobody when we are root, else ourselves.
fn task_user() -> (u32, u32) {
    if is_root() {
        (NOBODY, NOBODY)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// Run 0 of `job`.
fn key(job: u64) -> RunKey {
    RunKey {
        job: JobId(job),
        run: 0,
    }
}

fn task(job: u64, rank: u32, script: &str, dir: &Path) -> TaskLaunch {
    let (uid, gid) = task_user();
    TaskLaunch {
        key: key(job).task(rank),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("RANK".into(), rank.to_string()),
        ],
        workdir: dir.to_path_buf(),
        stdout: dir.join(format!("out.{rank}")),
        stderr: dir.join(format!("out.{rank}")),
        uid,
        gid,
        groups: Vec::new(),
        umask: 0o022,
        container: None,
        output: TaskOutput::Files,
    }
}

async fn next_exit(rx: &mut UnboundedReceiver<TaskExit>) -> TaskExit {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no TaskExit within 20 s")
        .expect("exit channel closed")
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

fn limits() -> JobLimits {
    JobLimits {
        cpus: 1,
        memory_mb: 64,
        pids_max: Some(64),
    }
}

/// Kills and releases whatever a test left behind and removes the node's cgroup directories.
fn cleanup(launcher: &ProcessLauncher, runs: &[RunKey]) {
    for &key in runs {
        let _ = launcher.kill_job(key);
        for _ in 0..100 {
            if launcher.release_job(key).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    launcher.remove_node_dirs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_runs_as_its_user_and_appends_output() {
    let launcher = ProcessLauncher::new(&node("user")).unwrap();
    let dir = workdir();
    launcher.prepare_job(key(1), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    let t = task(
        1,
        3,
        "echo rank $RANK; id -u; echo to-stderr >&2; pwd",
        dir.path(),
    );
    let out = t.stdout.clone();
    let pid = launcher.start_task(t, tx).unwrap().pid;
    assert!(pid > 0);
    let exit = next_exit(&mut rx).await;
    assert_eq!(
        (exit.key.run.job, exit.key.run.run, exit.key.rank, exit.code),
        (JobId(1), 0, 3, 0),
        "{exit:?}"
    );
    assert_eq!(exit.detail, "exited with code 0");
    let text = fs::read_to_string(&out).unwrap();
    let (uid, _) = task_user();
    assert!(text.contains("rank 3"), "{text}");
    assert!(text.contains(&uid.to_string()), "{text}");
    assert!(text.contains("to-stderr"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert_eq!(fs::metadata(&out).unwrap().uid(), uid);
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o644);

    // A second run appends; separate stdout and stderr files.
    let (tx, mut rx) = unbounded_channel();
    let mut t = task(1, 3, "echo again; echo oops >&2", dir.path());
    t.stderr = "err.3".into(); // relative: in the workdir
    launcher.start_task(t, tx).unwrap();
    assert_eq!(next_exit(&mut rx).await.code, 0);
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("rank 3\n") && text.ends_with("again\n"),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("err.3")).unwrap(),
        "oops\n"
    );
    cleanup(&launcher, &[key(1)]);
}

/// A task starts clean whatever the agent's own state: no signal ignored or blocked (the agent
/// ignores SIGPIPE, and blocks every signal around the clone), stdin on /dev/null, its own
/// session, only the user's group, and no descriptor of the agent's but the standard three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_starts_with_default_signals_its_own_session_and_no_agent_descriptors() {
    let launcher = ProcessLauncher::new(&node("clean")).unwrap();
    let dir = workdir();
    launcher.prepare_job(key(7), &limits()).unwrap();
    // The agent process ignores SIGPIPE (Rust's runtime does); make sure the test would see it.
    // SAFETY: reading the current disposition only.
    let ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old);
        old.sa_sigaction == libc::SIG_IGN
    };
    assert!(ignored, "the test process should ignore SIGPIPE");
    let (tx, mut rx) = unbounded_channel();
    let t = task(
        7,
        0,
        "grep -E '^(SigIgn|SigBlk|Groups):' /proc/self/status; \
         echo stdin=$(readlink /proc/self/fd/0); \
         echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$; \
         echo fds=$(ls /proc/self/fd | sort -n | tr '\\n' ' ')",
        dir.path(),
    );
    let out = t.stdout.clone();
    let pid = launcher.start_task(t, tx).unwrap().pid;
    assert_eq!(next_exit(&mut rx).await.code, 0);
    let text = fs::read_to_string(&out).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000", "{text}");
    assert_eq!(field("SigBlk:"), "0000000000000000", "{text}");
    assert_eq!(field("stdin="), "/dev/null", "{text}");
    // `sh -c` runs the grep, cut and ls as its children, in the session the task leads.
    assert!(text.contains(&format!("sid={pid} pid={pid}")), "{text}");
    if is_root() {
        assert_eq!(field("Groups:"), NOBODY.to_string(), "{text}");
    }
    // ls itself has 0-2 and the directory it reads (3); nothing of the agent's.
    assert_eq!(field("fds="), "0 1 2 3", "{text}");
    cleanup(&launcher, &[key(7)]);
}

/// A stopping agent leaves no cgroup behind: the runs whose tasks ended are released and its
/// node's directories removed, in every hierarchy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_removes_the_nodes_cgroups() {
    if !is_root() {
        eprintln!("skipping: cgroups need root");
        return;
    }
    let launcher = ProcessLauncher::new(&node("shutdown")).unwrap();
    if !launcher.cgroups_enabled() {
        eprintln!("skipping: no writable cgroups here");
        return;
    }
    let dir = workdir();
    launcher.prepare_job(key(8), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    launcher
        .start_task(task(8, 0, "true", dir.path()), tx)
        .unwrap();
    assert_eq!(next_exit(&mut rx).await.code, 0);
    let job_dirs = launcher.cgroup_dirs(key(8));
    let node_dirs: Vec<_> = job_dirs
        .iter()
        .map(|d| d.parent().unwrap().to_path_buf())
        .collect();
    assert!(!job_dirs.is_empty() && job_dirs.iter().all(|d| d.is_dir()));
    launcher.shut_down();
    for d in job_dirs.iter().chain(&node_dirs) {
        assert!(!d.exists(), "{} is left after shut_down", d.display());
    }
}

/// Reads a pipe's read end to its end.
fn read_all(fd: OwnedFd) -> String {
    let mut text = String::new();
    io::Read::read_to_string(&mut fs::File::from(fd), &mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_comes_out_of_the_returned_pipes_and_no_file_is_written() {
    let launcher = ProcessLauncher::new(&node("pipes")).unwrap();
    let dir = workdir();
    launcher.prepare_job(key(12), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    // One pipe for both when they name one file: the lines keep their order.
    let mut t = task(12, 0, "echo one; echo two >&2; echo three", dir.path());
    t.output = TaskOutput::Pipes;
    let pipes = launcher.start_task(t, tx.clone()).unwrap().pipes.unwrap();
    assert!(pipes.stderr.is_none());
    // The agent holds no write end: the pipe ends when the task does.
    let text = tokio::task::spawn_blocking(move || read_all(pipes.stdout))
        .await
        .unwrap();
    assert_eq!(text, "one\ntwo\nthree\n");
    assert_eq!(next_exit(&mut rx).await.code, 0);
    // Two pipes for two files.
    let mut t = task(12, 1, "echo out; echo err >&2", dir.path());
    t.stderr = dir.path().join("err.1");
    t.output = TaskOutput::Pipes;
    let pipes = launcher.start_task(t, tx).unwrap().pipes.unwrap();
    let stderr = pipes.stderr.unwrap();
    let (out, err) =
        tokio::task::spawn_blocking(move || (read_all(pipes.stdout), read_all(stderr)))
            .await
            .unwrap();
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(next_exit(&mut rx).await.code, 0);
    assert!(!dir.path().join("out.0").exists() && !dir.path().join("err.1").exists());
    cleanup(&launcher, &[key(12)]);
}

/// A node that keeps CPUs for itself (`reserved_cpus`) runs its tasks on the others only, and a
/// task cannot widen its affinity onto the reserved ones (the cpuset holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_only_on_the_cpus_the_node_does_not_reserve() {
    let own = cpus::own_cpus().unwrap();
    let Some((first, rest)) = own.split_first().filter(|(_, rest)| !rest.is_empty()) else {
        eprintln!("skipped: this machine lets the test use one CPU only ({own:?})");
        return;
    };
    let cpus = TaskCpus::from_lists(&own, &[*first]).unwrap();
    let launcher = ProcessLauncher::new(&node("cpus"))
        .unwrap()
        .with_task_cpus(Some(cpus));
    let dir = workdir();
    launcher.prepare_job(key(13), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    let widen = format!(
        "taskset -cp {first} $$ >/dev/null 2>&1 && echo widened; grep Cpus_allowed_list /proc/self/status"
    );
    let t = task(13, 0, &widen, dir.path());
    let out = t.stdout.clone();
    launcher.start_task(t, tx).unwrap();
    assert_eq!(next_exit(&mut rx).await.code, 0);
    let text = fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.trim_start_matches("Cpus_allowed_list:").trim(),
        cpu_list(rest),
        "{text}"
    );
    cleanup(&launcher, &[key(13)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals() {
    let launcher = ProcessLauncher::new(&node("codes")).unwrap();
    let dir = workdir();
    launcher.prepare_job(key(2), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    launcher
        .start_task(task(2, 0, "exit 7", dir.path()), tx.clone())
        .unwrap();
    launcher
        .start_task(task(2, 1, "kill -9 $$", dir.path()), tx)
        .unwrap();
    let mut exits = [next_exit(&mut rx).await, next_exit(&mut rx).await];
    exits.sort_by_key(|e| e.key.rank);
    assert_eq!(exits[0].code, 7);
    assert_eq!(exits[0].detail, "exited with code 7");
    assert_eq!(exits[1].code, 137);
    assert!(
        exits[1].detail.contains("killed by signal 9"),
        "{}",
        exits[1].detail
    );
    cleanup(&launcher, &[key(2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_name_their_cause() {
    let launcher = ProcessLauncher::new(&node("fail")).unwrap();
    let dir = workdir();
    let (tx, _rx) = unbounded_channel();

    let err = launcher
        .start_task(task(3, 0, "true", dir.path()), tx.clone())
        .unwrap_err();
    assert!(matches!(err, LaunchError::NotPrepared { .. }), "{err}");
    launcher.prepare_job(key(3), &limits()).unwrap();

    // Missing workdir.
    let missing = dir.path().join("no-such-dir");
    let mut t = task(3, 0, "true", dir.path());
    t.workdir = missing.clone();
    let err = launcher.start_task(t, tx.clone()).unwrap_err();
    assert!(matches!(err, LaunchError::Workdir { .. }), "{err}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let exit = TaskExit::not_started(key(3).task(0), &err);
    assert_eq!(exit.code, 126);
    assert!(exit.detail.contains("no-such-dir"), "{}", exit.detail);

    // Program not in PATH.
    let mut t = task(3, 0, "true", dir.path());
    t.argv = vec!["no-such-program-xyz".into()];
    let err = launcher.start_task(t, tx.clone()).unwrap_err();
    assert_eq!(err.exit_code(), 127, "{err}");
    assert!(err.to_string().contains("no-such-program-xyz"), "{err}");

    // Not executable (exec itself fails).
    let script = dir.path().join("script");
    fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    let mut t = task(3, 0, "true", dir.path());
    t.argv = vec![script.display().to_string()];
    let err = launcher.start_task(t, tx.clone()).unwrap_err();
    assert!(matches!(err, LaunchError::Exec { .. }), "{err}");
    assert_eq!(err.exit_code(), 126);
    assert!(err.to_string().contains("script"), "{err}");

    // Output not writable by the task's user.
    if is_root() {
        let locked = tempfile::tempdir().unwrap(); // 0700 root
        let mut t = task(3, 0, "true", dir.path());
        t.stdout = locked.path().join("out");
        let err = launcher.start_task(t, tx.clone()).unwrap_err();
        assert!(matches!(err, LaunchError::OutputFile { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&locked.path().join("out").display().to_string()),
            "{err}"
        );
        assert!(!locked.path().join("out").exists());
    } else {
        eprintln!("skipping the unwritable-output check: not root");
        let other = ProcessLauncher::without_cgroups(&node("fail2")).unwrap();
        other.prepare_job(key(3), &limits()).unwrap();
        let mut t = task(3, 0, "true", dir.path());
        t.uid = 0;
        let err = other.start_task(t, tx.clone()).unwrap_err();
        assert!(
            matches!(err, LaunchError::UserSwitchNotPermitted { .. }),
            "{err}"
        );
    }

    assert!(!launcher.job_alive(key(3)));
    cleanup(&launcher, &[key(3)]);
}

/// The live pids of the job, waiting until there are at least `n`.
async fn job_pids(launcher: &ProcessLauncher, job: u64, n: usize) -> Vec<i32> {
    let mut pids = Vec::new();
    let found = wait_for(Duration::from_secs(5), || {
        pids = launcher
            .cgroups
            .as_ref()
            .map(|c| c.live_pids(key(job)))
            .unwrap_or_default();
        pids.len() >= n
    })
    .await;
    assert!(
        found,
        "expected {n} processes in the job's cgroup, got {pids:?}"
    );
    pids
}

async fn kill_and_release_with_grandchild(launcher: &ProcessLauncher, job: u64) {
    let dir = workdir();
    launcher
        .prepare_job(key(job), &limits())
        .expect("prepare_job");
    let (tx, mut rx) = unbounded_channel();
    let pid = launcher
        .start_task(
            task(
                job,
                0,
                "sleep 1000 & sleep 1000; echo not reached",
                dir.path(),
            ),
            tx,
        )
        .unwrap()
        .pid;
    let pids = job_pids(launcher, job, 2).await;
    assert!(pids.contains(&(pid as i32)), "{pid} not in {pids:?}");
    for d in launcher.cgroup_dirs(key(job)) {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            d.display()
        );
    }
    assert!(launcher.job_alive(key(job)));
    assert!(matches!(
        launcher.release_job(key(job)),
        Err(LaunchError::StillRunning { .. })
    ));

    launcher.kill_job(key(job)).unwrap();
    let dead = wait_for(Duration::from_secs(2), || {
        !launcher.job_alive(key(job)) && pids.iter().all(|p| !cgroup::pid_is_live(*p))
    })
    .await;
    assert!(
        dead,
        "job processes {pids:?} still alive 2 s after kill_job"
    );
    let exit = next_exit(&mut rx).await;
    assert_eq!(exit.code, 137, "{exit:?}");
    launcher.kill_job(key(job)).unwrap(); // idempotent

    let released = wait_for(Duration::from_secs(2), || {
        launcher.release_job(key(job)).is_ok()
    })
    .await;
    assert!(released, "{:?}", launcher.release_job(key(job)));
    for d in launcher.cgroup_dirs(key(job)) {
        assert!(!d.exists(), "{} still exists", d.display());
    }
    launcher.release_job(key(job)).unwrap(); // idempotent
    launcher.kill_job(key(job)).unwrap(); // of a released job: fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_limits_kill_release_and_leftovers() {
    if !is_root() {
        eprintln!("skipping cgroup test: not root, cgroups are not writable");
        return;
    }
    let name = node("cgroup");
    let launcher = ProcessLauncher::new(&name).unwrap();
    assert!(launcher.cgroups_enabled(), "root but no cgroups");
    launcher.prepare_job(key(4), &limits()).unwrap();
    let dirs = launcher.cgroup_dirs(key(4));
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert!(d.is_dir(), "{}", d.display());
        assert!(
            d.display()
                .to_string()
                .contains(&format!("/beowulf/{name}/job_4.0"))
        );
    }
    let read = |file: &str| {
        dirs.iter()
            .map(|d| d.join(file))
            .find(|f| f.exists())
            .map(|f| fs::read_to_string(f).unwrap().trim().to_string())
    };
    match launcher.cgroups.as_ref().unwrap() {
        cgroup::Cgroups::V1 { .. } => {
            assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("100000"));
            assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
            assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
        }
        cgroup::Cgroups::V2 { .. } => {
            if let Some(cpu) = read("cpu.max") {
                assert_eq!(cpu, "100000 100000");
            }
            if let Some(mem) = read("memory.max") {
                assert_eq!(mem, "67108864");
            }
        }
    }
    // prepare is idempotent
    launcher.prepare_job(key(4), &limits()).unwrap();

    kill_and_release_with_grandchild(&launcher, 4).await;

    // Leftovers: a job prepared by one instance is found by the next one (same node name).
    let leftover = RunKey {
        job: JobId(77),
        run: 3,
    };
    launcher.prepare_job(leftover, &limits()).unwrap();
    let other_node = ProcessLauncher::new(&node("cgroup-other")).unwrap();
    assert!(other_node.leftover_jobs().is_empty());
    let restarted = ProcessLauncher::new(&name).unwrap();
    assert_eq!(restarted.leftover_jobs(), vec![leftover]);
    assert!(!restarted.job_alive(leftover));
    restarted.kill_job(leftover).unwrap();
    restarted.release_job(leftover).unwrap();
    assert!(restarted.leftover_jobs().is_empty());

    cleanup(&launcher, &[key(4), leftover]);
    other_node.remove_node_dirs();
    restarted.remove_node_dirs();
}

/// The hybrid machine's cgroup2 mount (no controllers) still gives grouping and cgroup.kill:
/// exercise the v2 code path there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_v2_kill_on_unified_mount() {
    if !is_root() {
        eprintln!("skipping cgroup v2 test: not root");
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let mount = parse_mountinfo(&mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup2");
    let own = cgroup::parse_proc_cgroup(&own)
        .into_iter()
        .find(|o| o.hierarchy_id == 0);
    let (Some(mount), Some(own)) = (mount, own) else {
        eprintln!("skipping cgroup v2 test: no cgroup2 mount");
        return;
    };
    let own_dir = mount.mount_point.join(own.path.trim_start_matches('/'));
    let launcher = ProcessLauncher::with_layout(&node("v2"), Layout::V2(own_dir.clone())).unwrap();
    if !launcher.cgroups_enabled() {
        eprintln!(
            "skipping cgroup v2 test: {} not writable",
            own_dir.display()
        );
        return;
    }
    kill_and_release_with_grandchild(&launcher, 5).await;
    cleanup(&launcher, &[key(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_group_fallback_kills_the_session() {
    let launcher = ProcessLauncher::without_cgroups(&node("pgrp")).unwrap();
    assert!(!launcher.cgroups_enabled());
    assert!(launcher.leftover_jobs().is_empty());
    let dir = workdir();
    launcher.prepare_job(key(6), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    let t = task(6, 0, "sleep 1000 & echo $! > bgpid; wait", dir.path());
    launcher.start_task(t, tx).unwrap();
    let bgpid_file = dir.path().join("bgpid");
    let mut bgpid = 0;
    assert!(
        wait_for(Duration::from_secs(5), || {
            bgpid = fs::read_to_string(&bgpid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            bgpid > 0
        })
        .await
    );
    assert!(launcher.job_alive(key(6)));
    launcher.kill_job(key(6)).unwrap();
    assert_eq!(next_exit(&mut rx).await.code, 137);
    let dead = wait_for(Duration::from_secs(2), || {
        !launcher.job_alive(key(6)) && !cgroup::pid_is_live(bgpid)
    })
    .await;
    assert!(dead, "background process {bgpid} survived");
    launcher.release_job(key(6)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_loop_stops_at_the_runs_pids_limit() {
    if !is_root() {
        eprintln!("skipped: cgroup limits need root");
        return;
    }
    let launcher = ProcessLauncher::new(&node("pids")).unwrap();
    if !launcher.cgroups_enabled() {
        eprintln!("skipping: no writable cgroups here");
        return;
    }
    let dir = workdir();
    launcher.prepare_job(key(14), &limits()).unwrap();
    let (tx, mut rx) = unbounded_channel();
    // 200 sleepers wanted, the run may have 64 processes: the shell's fork fails (dash then
    // gives up), the sleepers it did start stay until the run is killed.
    launcher
        .start_task(
            task(14, 0, "for i in $(seq 200); do sleep 30 & done", dir.path()),
            tx,
        )
        .unwrap();
    let exit = next_exit(&mut rx).await;
    assert_ne!(exit.code, 0, "{}", exit.detail);
    let pids_max: Vec<String> = launcher
        .cgroup_dirs(key(14))
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("pids.max")).ok())
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(pids_max, ["64"]);
    let live: usize = launcher
        .cgroup_dirs(key(14))
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .map(|t| t.lines().count())
        .max()
        .unwrap_or(0);
    assert!(
        (1..=64).contains(&live),
        "{live} processes in a run limited to 64"
    );
    let out = fs::read_to_string(dir.path().join("out.0")).unwrap();
    assert!(out.contains("fork"), "{out}");
    launcher.kill_job(key(14)).unwrap();
    assert!(!launcher.job_alive(key(14)));
    cleanup(&launcher, &[key(14)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_is_looked_up_with_the_users_own_credentials() {
    if !is_root() {
        eprintln!("skipped: taking another identity needs root");
        return;
    }
    let launcher = ProcessLauncher::without_cgroups(&node("lookup")).unwrap();
    let dir = workdir();
    // A tool in a directory only root may search: root's agent sees it, the user must not.
    let private = tempfile::tempdir().unwrap();
    fs::set_permissions(private.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let tool = private.path().join("private-tool");
    fs::write(&tool, "#!/bin/sh\necho found\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    launcher.prepare_job(key(15), &limits()).unwrap();
    let mut t = task(15, 0, "", dir.path());
    t.argv = vec!["private-tool".into()];
    t.env = vec![("PATH".into(), private.path().display().to_string())];
    let (tx, _rx) = unbounded_channel();
    let err = launcher.start_task(t, tx).unwrap_err();
    assert!(matches!(err, LaunchError::ProgramNotFound { .. }), "{err}");
    cleanup(&launcher, &[key(15)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_files_take_the_submitters_umask_and_tasks_all_their_groups() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let launcher = ProcessLauncher::without_cgroups(&node("umask")).unwrap();
    let dir = workdir();
    launcher.prepare_job(key(16), &limits()).unwrap();
    let mut t = task(16, 0, "id -G; umask", dir.path());
    t.umask = 0o077;
    t.groups = vec![NOBODY, 4242, 4243];
    let (tx, mut rx) = unbounded_channel();
    launcher.start_task(t, tx).unwrap();
    assert_eq!(next_exit(&mut rx).await.code, 0);
    let out = dir.path().join("out.0");
    let mode = fs::metadata(&out).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "created with the task's umask");
    let text = fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let mut groups: Vec<&str> = lines.next().unwrap().split(' ').collect();
    groups.sort_unstable();
    assert_eq!(groups, ["4242", "4243", "65534"], "{text}");
    assert_eq!(lines.next(), Some("0077"), "{text}");
    cleanup(&launcher, &[key(16)]);
}
