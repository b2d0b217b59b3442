//! Test harness for the local tier: a real headnoded and real computed processes on this machine,
//! driven only through the `cluster` and `submit` commands a user would type.
//!
//! The binaries come from the workspace's target directory; the README's test command builds them
//! (`cargo build --workspace --bins`) before `cargo test`.

pub mod lab;
pub mod sshd;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where `cluster`, `submit`, `headnoded` and `computed` were built.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BEOWULF_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let dir = target.join(profile);
    for bin in ["cluster", "submit", "headnoded", "computed"] {
        assert!(
            dir.join(bin).exists(),
            "{bin} is not built in {}: run `cargo build --workspace --bins` first (the README's test command does)",
            dir.display()
        );
    }
    dir
}

/// The repository's root (for `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Seconds between SIGTERM and SIGKILL on the test clusters' nodes: short, so tests that cancel
/// jobs which ignore SIGTERM (a fork loop) do not wait Slurm's 30 s, long enough to observe.
pub const KILL_WAIT_S: &str = "2";

/// A local cluster in a temporary directory, stopped (by PID, through `cluster down`) on drop.
#[derive(Debug)]
pub struct LocalCluster {
    pub state: tempfile::TempDir,
    /// A directory every user may write to: jobs run and write their output here.
    pub work: tempfile::TempDir,
    pub nodes: u32,
}

impl LocalCluster {
    /// Starts headnoded and `nodes` agents with the given heartbeat timeout (seconds).
    pub fn start(nodes: u32, heartbeat_timeout: u32) -> LocalCluster {
        Self::start_with_policy(nodes, heartbeat_timeout, None)
    }

    /// Like [`LocalCluster::start`], with scheduling policy sections for headnoded.toml.
    pub fn start_with_policy(
        nodes: u32,
        heartbeat_timeout: u32,
        policy: Option<&str>,
    ) -> LocalCluster {
        let state = tempfile::Builder::new()
            .prefix("bw-state-")
            .tempdir()
            .unwrap();
        if let Some(policy) = policy {
            std::fs::write(state.path().join("policy.toml"), policy).unwrap();
        }
        let work = tempfile::Builder::new()
            .prefix("bw-work-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let cluster = LocalCluster { state, work, nodes };
        cluster.init(heartbeat_timeout);
        cluster
    }

    /// Runs `cluster init --local` (it starts whatever daemon is not running).
    pub fn init(&self, heartbeat_timeout: u32) {
        let out = self.try_init(heartbeat_timeout);
        assert!(
            out.status.success(),
            "cluster init failed: {}",
            text(&out.stderr)
        );
    }

    /// Runs `cluster init --local` and returns what it did, failed or not.
    pub fn try_init(&self, heartbeat_timeout: u32) -> Output {
        let nodes = self.nodes.to_string();
        let timeout = heartbeat_timeout.to_string();
        let policy = self.state.path().join("policy.toml");
        let mut args = vec![
            "init",
            "--local",
            "--nodes",
            &nodes,
            "--heartbeat-timeout",
            &timeout,
            "--kill-wait",
            KILL_WAIT_S,
        ];
        if policy.exists() {
            args.extend(["--policy", policy.to_str().unwrap()]);
        }
        self.cluster(&args)
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join(program));
        cmd.args(args)
            .env("BEOWULF_STATE_DIR", self.state.path())
            .env_remove("BEOWULF_SOCKET")
            .current_dir(self.work.path());
        cmd
    }

    /// Runs `sbatch ARGS`: the `submit` program under the name an install links it as.
    pub fn sbatch(&self, args: &[&str]) -> Output {
        self.slurm("sbatch", args)
    }

    /// Runs a Slurm command (`sbatch`, `srun`, `squeue`, `scancel`, `sacct`, `sinfo`,
    /// `scontrol`, `sprio`, `sshare`): our program under the name an install links it as (`submit`
    /// for sbatch, `cluster` for the rest), with every such name on the `PATH` it exports to jobs (a batch
    /// script's `srun` is found there).
    pub fn slurm(&self, name: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.slurm_links().join(name));
        cmd.args(args);
        self.slurm_env(&mut cmd);
        cmd.output().expect("the Slurm command runs")
    }

    /// Gives `cmd` what a Slurm command of this cluster needs: the state directory, the Slurm
    /// names first on its PATH, the work directory as its working directory.
    pub fn slurm_env(&self, cmd: &mut Command) {
        let links = self.slurm_links();
        let path = match std::env::var("PATH") {
            Ok(path) => format!("{}:{path}", links.display()),
            Err(_) => links.display().to_string(),
        };
        cmd.env("BEOWULF_STATE_DIR", self.state.path())
            .env("PATH", path)
            .env_remove("BEOWULF_SOCKET")
            .env_remove("SLURM_JOB_ID")
            .current_dir(self.work.path());
    }

    /// The Slurm command `name` as an install links it (`submit` for sbatch, `cluster` for the
    /// rest), in the directory `bin` of the state directory, which tools may take on their PATH.
    pub fn slurm_link(&self, name: &str) -> PathBuf {
        self.slurm_links().join(name)
    }

    /// The directory of Slurm's command names, linked to our programs as an install links them.
    pub fn slurm_links(&self) -> PathBuf {
        let links = self.state.path().join("bin");
        std::fs::create_dir_all(&links).unwrap();
        let names = [
            "sbatch", "srun", "salloc", "squeue", "scancel", "sacct", "sinfo", "scontrol", "sprio",
            "sshare",
        ];
        for name in names {
            let link = links.join(name);
            if !link.exists() {
                let program = if name == "sbatch" {
                    "submit"
                } else {
                    "cluster"
                };
                std::os::unix::fs::symlink(bin_dir().join(program), &link).unwrap();
            }
        }
        std::fs::set_permissions(&links, std::fs::Permissions::from_mode(0o755)).unwrap();
        links
    }

    /// Runs `cluster ARGS` as the current user.
    pub fn cluster(&self, args: &[&str]) -> Output {
        self.command("cluster", args)
            .output()
            .expect("cluster runs")
    }

    /// Runs `cluster ARGS` as another user.
    pub fn cluster_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        let mut cmd = self.command("cluster", args);
        cmd.uid(uid).gid(gid);
        cmd.output().expect("cluster runs")
    }

    /// `submit --json [--wait] FILE` as another user; the job's record. Without `--wait` the
    /// submit must succeed (with it, the exit code is the job's, as srun's is).
    pub fn submit_as(&self, uid: u32, gid: u32, file: &Path, wait: bool) -> Value {
        let mut args = vec!["submit", "--json"];
        if wait {
            args.push("--wait");
        }
        args.push(file.to_str().unwrap());
        let out = self.cluster_as(uid, gid, &args);
        assert!(
            out.status.success() || wait,
            "submit: {}",
            text(&out.stderr)
        );
        json(&out.stdout)
    }

    /// Writes a job file into the work directory and returns its path.
    pub fn job_file(&self, name: &str, body: &str) -> PathBuf {
        let path = self.work.path().join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// Submits a job file without waiting; returns its ID.
    pub fn submit(&self, file: &Path) -> u64 {
        let out = self.cluster(&["submit", "--json", file.to_str().unwrap()]);
        assert!(out.status.success(), "submit failed: {}", text(&out.stderr));
        json(&out.stdout)["id"]
            .as_u64()
            .expect("submit --json prints the id")
    }

    pub fn show(&self, job: u64) -> Value {
        let out = self.cluster(&["show", &job.to_string(), "--json"]);
        assert!(out.status.success(), "show failed: {}", text(&out.stderr));
        json(&out.stdout)
    }

    pub fn nodes_json(&self) -> Vec<Value> {
        let out = self.cluster(&["nodes", "--json"]);
        assert!(out.status.success(), "nodes failed: {}", text(&out.stderr));
        json(&out.stdout).as_array().cloned().unwrap_or_default()
    }

    pub fn queue_all(&self) -> Vec<Value> {
        let out = self.cluster(&["queue", "--all", "--json"]);
        assert!(out.status.success(), "queue failed: {}", text(&out.stderr));
        json(&out.stdout).as_array().cloned().unwrap_or_default()
    }

    /// Waits until `job` is in one of `states`; panics with its last state after `timeout`.
    pub fn wait_state(&self, job: u64, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.show(job);
            if states.iter().any(|s| info["state"] == *s) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} did not reach {states:?} in {timeout:?}: {info:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID `cluster init` recorded for `name` (`headnoded`, `node1`, ...).
    pub fn pid(&self, name: &str) -> i32 {
        let pids = std::fs::read_to_string(self.state.path().join("pids")).unwrap();
        pids.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no pid recorded for {name}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// `kill -9` one of the cluster's daemons and waits until it is gone.
    pub fn kill9(&self, name: &str) {
        let pid = self.pid(name);
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is one this cluster recorded.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_alive(pid) {
            assert!(
                Instant::now() < deadline,
                "{name} (pid {pid}) survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tails();
        }
        let _ = self.cluster(&["down"]);
    }
}

/// Lines of each daemon's log a failed test prints (its state directory goes with it).
const LOG_TAIL_LINES: usize = 40;

impl LocalCluster {
    /// Prints the end of every daemon's log: a failing test's only trace of what they did.
    fn print_log_tails(&self) {
        let Ok(entries) = std::fs::read_dir(self.state.path().join("logs")) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- last {} lines of {}", tail.len(), log.display());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// True when `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// PIDs of live processes whose command line contains `needle` (a marker unique to one test).
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && process_alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// PIDs of live processes running `program`: their command line starts with it (not those that
/// only mention it, like a container runtime's).
pub fn processes_running(program: &str) -> Vec<i32> {
    processes_with(program)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(program))
        })
        .collect()
}

/// Waits until `count` processes run `program` (an MPI job's ranks); returns their PIDs.
pub fn wait_for_processes(program: &str, count: usize, timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = processes_running(program);
        if pids.len() == count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "{count} processes of {program} never ran: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first value of a field of `/proc/PID/status` (`"Uid:"` gives the real uid).
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1).map(str::to_string)
}

/// The `Cpus_allowed_list` of `pid` (this process for 0), as a list of CPUs.
pub fn cpus_allowed(pid: i32) -> Vec<u32> {
    let pid = if pid == 0 {
        std::process::id() as i32
    } else {
        pid
    };
    let list = status_field(pid, "Cpus_allowed_list:").unwrap_or_default();
    list.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()
        })
        .collect()
}

/// The CPUs a local cluster's tasks may run on: all of this machine's but the first, which
/// `cluster init --local` keeps for the daemons when there are two or more.
pub fn local_task_cpus() -> Vec<u32> {
    let own = cpus_allowed(0);
    if own.len() >= 2 {
        own[1..].to_vec()
    } else {
        own
    }
}

/// Waits until no live process carries `needle`; returns how long that took.
pub fn wait_no_process(needle: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let left = processes_with(needle);
        if left.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "processes still running {needle:?} after {timeout:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(bytes)))
}

/// The example Open MPI image's rootfs tarball, built (or taken from the cache) by the project's
/// script.
pub fn mpi_image() -> PathBuf {
    mpi_image_of("openmpi")
}

/// The example image for an MPI `flavor` ("openmpi" or "mpich"; MPICH's first build compiles
/// it, about 10 minutes), built or taken from the cache by the project's script.
pub fn mpi_image_of(flavor: &str) -> PathBuf {
    let script = repo_root().join("scripts/build-mpi-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(flavor)
        .output()
        .expect("the image build script runs");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the tarball")
            .trim(),
    );
    assert!(path.is_file(), "no tarball at {}", path.display());
    path
}

/// Checks the output of examples/mpi-hello.c run as `ranks` ranks, `per_node` on each of node1,
/// node2, ... in turn: every rank's line, and rank 0's ring and allreduce results.
pub fn assert_mpi_hello(output: &str, ranks: u32, per_node: u32) {
    let mut expected: Vec<String> = (0..ranks)
        .map(|rank| format!("rank {rank} of {ranks} on node{}", rank / per_node + 1))
        .collect();
    expected.push(format!("ring ok sum={}", ranks * (ranks - 1) / 2));
    expected.push(format!("allreduce ok sum={}", ranks * (ranks + 1) / 2));
    for line in expected {
        assert!(
            output.lines().any(|l| l == line),
            "no {line:?} in:\n{output}"
        );
    }
}
