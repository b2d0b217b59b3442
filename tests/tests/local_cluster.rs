//! Local tier: one headnoded and five computed processes on this machine, used through the CLI.
//! One test per "done when" item of the core issue.

use beowulf_tests::{
    LocalCluster, json, process_alive, processes_with, repo_root, text, wait_no_process,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn hello_runs_one_task_on_each_of_five_nodes() {
    let cluster = LocalCluster::start(5, 10);
    let hello = repo_root().join("examples/hello.toml");
    let out = cluster.cluster(&["submit", "--wait", hello.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "submit --wait failed: {}",
        text(&out.stderr)
    );
    let info = cluster.show(1);
    assert_eq!(info["state"], "COMPLETED");
    assert_eq!(info["exit_code"], 0);
    let output = std::fs::read_to_string(cluster.work.path().join("hello-1.out")).unwrap();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for line in output.lines() {
        // "hello from rank R of 5 on nodeN (...)"
        let words: Vec<&str> = line.split_whitespace().collect();
        seen.insert(words[3].to_string(), words[7].to_string());
    }
    let ranks: Vec<&String> = seen.keys().collect();
    assert_eq!(ranks, ["0", "1", "2", "3", "4"], "{output}");
    let mut nodes: Vec<&String> = seen.values().collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["node1", "node2", "node3", "node4", "node5"],
        "{output}"
    );
    // Rank r runs on node r+1: the allocation is sorted and rank 0 is on the first node.
    assert_eq!(seen["0"], "node1");
}

#[test]
fn two_hundred_jobs_submitted_at_once_all_complete_exactly_once() {
    let cluster = LocalCluster::start(5, 10);
    let job = cluster.job_file(
        "append.toml",
        "command = [\"sh\", \"-c\", \"echo $SLURM_JOB_ID >> ran.log\"]\noutput = \"/dev/null\"\n",
    );
    let ids: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..25).map(|_| cluster.submit(&job)).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), 200);
    let deadline = Instant::now() + MINUTE;
    loop {
        let jobs = cluster.queue_all();
        let done = jobs.iter().filter(|j| j["state"] == "COMPLETED").count();
        if done == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 200 jobs completed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(cluster.work.path().join("ran.log")).unwrap();
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for line in log.lines() {
        *counts.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        expected,
        "every job ran"
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "a job ran twice: {counts:?}"
    );
}

/// The default store: every change fsynced in the log before it is answered, moved into redb
/// every 100 ms, so the kill may or may not leave changes for the restart to replay.
#[test]
fn kill_9_of_headnoded_loses_no_acknowledged_job() {
    kill_9_of_headnoded_with(LocalCluster::start(5, 10), None);
}

/// With `acknowledge = "write"` and a flush a minute away, the kill comes while every change is
/// only in the write-ahead log: the restart must replay it.
#[test]
fn kill_9_of_headnoded_loses_no_job_acknowledged_on_write() {
    let policy = "[store]\nacknowledge = \"write\"\nflush_delay_ms = 60000\n";
    kill_9_of_headnoded_with(
        LocalCluster::start_with_policy(5, 10, Some(policy)),
        Some(true),
    );
}

/// Issue 18's crash figure: headnoded is killed five times while a user keeps submitting. Every
/// submit that was answered with an ID runs exactly once; a submit that got no answer may or may
/// not exist (the user was told so), but no job runs twice.
#[test]
fn headnoded_killed_repeatedly_during_a_submit_loop_loses_and_repeats_no_job() {
    const KILLS: usize = 5;
    let cluster = LocalCluster::start(2, 10);
    let job = cluster.job_file(
        "once.toml",
        "command = [\"sh\", \"-c\", \"echo $SLURM_JOB_ID >> ran.log\"]\noutput = \"/dev/null\"\n",
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the submit loop however the main thread leaves the scope: a failed restart must
    /// fail the test, not leave the scope waiting for the loop forever.
    struct StopOnExit<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnExit<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let (acknowledged, refused) = std::thread::scope(|s| {
        let stopper = StopOnExit(&stop);
        let submitter = s.spawn(|| {
            let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = cluster.cluster(&["submit", "--json", job.to_str().unwrap()]);
                if out.status.success() {
                    acknowledged.push(json(&out.stdout)["id"].as_u64().unwrap());
                } else {
                    refused.push(text(&out.stderr));
                }
            }
            (acknowledged, refused)
        });
        for _ in 0..KILLS {
            std::thread::sleep(Duration::from_millis(1500));
            cluster.kill9("headnoded");
            cluster.init(10);
        }
        std::thread::sleep(Duration::from_millis(500));
        drop(stopper);
        submitter.join().unwrap()
    });
    assert!(
        acknowledged.len() >= 20,
        "only {} submits were answered",
        acknowledged.len()
    );
    for message in &refused {
        assert!(
            message.contains("headnoded") || message.contains("may"),
            "a submit failed without saying why: {message}"
        );
    }
    let deadline = Instant::now() + MINUTE;
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    loop {
        counts.clear();
        let log = std::fs::read_to_string(cluster.work.path().join("ran.log")).unwrap_or_default();
        for line in log.lines() {
            *counts.entry(line.trim().parse().unwrap()).or_default() += 1;
        }
        if acknowledged.iter().all(|id| counts.contains_key(id)) {
            break;
        }
        let missing: Vec<&u64> = acknowledged
            .iter()
            .filter(|id| !counts.contains_key(id))
            .collect();
        assert!(
            Instant::now() < deadline,
            "acknowledged jobs never ran: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let twice: Vec<(&u64, &u32)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(twice, Vec::<(&u64, &u32)>::new(), "jobs ran more than once");
    eprintln!(
        "{KILLS} kills of headnoded: {} submits acknowledged, all ran once; {} refused or unanswered",
        acknowledged.len(),
        refused.len()
    );
}

/// `replays_log`: whether the restart must find changes in the log (`None`: either).
fn kill_9_of_headnoded_with(cluster: LocalCluster, replays_log: Option<bool>) {
    // Two CPUs per job: five run at once, five wait in the queue.
    let job = cluster.job_file(
        "sleepy.toml",
        "cpus_per_task = 2\ncommand = [\"sh\", \"-c\", \"sleep 2; echo $SLURM_JOB_ID >> ran.log; exit 3\"]\noutput = \"/dev/null\"\n",
    );
    let ids: Vec<u64> = (0..10).map(|_| cluster.submit(&job)).collect();
    cluster.wait_state(ids[0], &["RUNNING"], MINUTE);
    cluster.kill9("headnoded");
    // Start it again (init starts only what is not running).
    cluster.init(10);
    let log = std::fs::read_to_string(cluster.state.path().join("logs/headnoded.log")).unwrap();
    if let Some(replays_log) = replays_log {
        assert_eq!(
            log.contains("replaying the state store's log"),
            replays_log,
            "{log}"
        );
    }
    for &id in &ids {
        let info = cluster.wait_state(id, &["FAILED", "COMPLETED"], MINUTE);
        assert_eq!(info["state"], "FAILED", "job {id}: {info:#}");
        assert_eq!(
            info["exit_code"], 3,
            "job {id}'s exit code is recorded: {info:#}"
        );
    }
    let log = std::fs::read_to_string(cluster.work.path().join("ran.log")).unwrap();
    let mut ran: Vec<u64> = log.lines().map(|l| l.trim().parse().unwrap()).collect();
    ran.sort();
    assert_eq!(ran, ids, "each job ran exactly once");
}

#[test]
fn kill_9_of_an_agent_marks_its_node_down_and_requeues_or_fails_its_jobs() {
    let heartbeat_timeout = 3;
    let cluster = LocalCluster::start(5, heartbeat_timeout);
    // Two single-CPU jobs: best fit packs them onto the same node.
    let requeue = cluster.job_file(
        "requeue.toml",
        "requeue = true\ncommand = [\"sh\", \"-c\", \"echo $SLURMD_NODENAME >> requeue.log; sleep 4\"]\noutput = \"/dev/null\"\n",
    );
    let no_requeue = cluster.job_file(
        "norequeue.toml",
        "command = [\"sleep\", \"4\"]\noutput = \"/dev/null\"\n",
    );
    let a = cluster.submit(&requeue);
    let b = cluster.submit(&no_requeue);
    let a_info = cluster.wait_state(a, &["RUNNING"], MINUTE);
    let b_info = cluster.wait_state(b, &["RUNNING"], MINUTE);
    let node = a_info["nodes"][0].as_str().unwrap().to_string();
    assert_eq!(
        b_info["nodes"][0],
        node.as_str(),
        "best fit put both jobs on one node"
    );

    let killed_at = Instant::now();
    cluster.kill9(&node);
    let deadline = Instant::now() + Duration::from_secs(heartbeat_timeout as u64 + 5);
    loop {
        let nodes = cluster.nodes_json();
        let state = nodes.iter().find(|n| n["name"] == node.as_str()).unwrap()["state"].clone();
        if state == "DOWN" {
            break;
        }
        assert!(Instant::now() < deadline, "{node} is {state}, not DOWN");
        std::thread::sleep(Duration::from_millis(100));
    }
    let down_after = killed_at.elapsed();
    assert!(
        down_after >= Duration::from_secs(heartbeat_timeout as u64 - 1),
        "DOWN too early: {down_after:?}"
    );

    let b_info = cluster.wait_state(b, &["NODE_FAIL"], MINUTE);
    assert!(
        b_info["reason"].as_str().unwrap().contains(&node),
        "{b_info:#}"
    );
    let a_info = cluster.wait_state(a, &["COMPLETED"], MINUTE);
    assert_eq!(a_info["restarts"], 1);
    assert_ne!(
        a_info["nodes"][0],
        node.as_str(),
        "the requeued job ran elsewhere"
    );
    // Start the killed agent again, as an admin would: it kills and releases what its predecessor
    // left (the runs' cgroups), and `cluster down` then stops it cleanly. Without this every run
    // of the test left that node's cgroup directories on the machine.
    cluster.init(heartbeat_timeout);
    let restarted = cluster.pid(&node);
    assert!(process_alive(restarted), "{node} was not started again");
}

#[test]
fn time_limit_ends_a_job_timeout_and_cancel_stops_every_task() {
    let cluster = LocalCluster::start(5, 10);
    let slow = cluster.job_file(
        "slow.toml",
        "time_limit = \"0:02\"\ncommand = [\"sleep\", \"61.25\"]\noutput = \"/dev/null\"\n",
    );
    let id = cluster.submit(&slow);
    let info = cluster.wait_state(id, &["TIMEOUT"], Duration::from_secs(15));
    let ran = info["end_time_ms"].as_u64().unwrap() - info["start_time_ms"].as_u64().unwrap();
    assert!((2000..5000).contains(&ran), "ended after {ran} ms");
    wait_no_process("sleep 61.25", Duration::from_secs(5));

    let wide = cluster.job_file(
        "wide.toml",
        "nodes = 5\ntasks_per_node = 2\ncommand = [\"sleep\", \"62.5\"]\noutput = \"/dev/null\"\n",
    );
    let id = cluster.submit(&wide);
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 62.5").len() < 10 {
        assert!(Instant::now() < deadline, "not all 10 tasks started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let took = wait_no_process("sleep 62.5", Duration::from_secs(10));
    assert_eq!(cluster.show(id)["state"], "CANCELLED");
    eprintln!("cancel stopped 10 tasks on 5 nodes in {took:?}");
}

#[test]
fn malformed_job_files_are_refused_with_line_and_field_and_change_nothing() {
    let cluster = LocalCluster::start(5, 10);
    let before = cluster.queue_all().len();
    let cases = [
        (
            "bad-toml.toml",
            "nodes = 1\ncommand = [\"true\"\n",
            ":2",
            "",
        ),
        (
            "unknown.toml",
            "command = [\"true\"]\nnodez = 2\n",
            ":2:",
            "nodez",
        ),
        (
            "type.toml",
            "command = [\"true\"]\n\nnodes = \"two\"\n",
            ":3:",
            "nodes",
        ),
        (
            "zero.toml",
            "nodes = 0\ncommand = [\"true\"]\n",
            ":1:",
            "nodes",
        ),
        (
            "huge.toml",
            "command = [\"true\"]\nnodes = 99\n",
            ":2:",
            "nodes",
        ),
        (
            "cpus.toml",
            "cpus_per_task = 64\ncommand = [\"true\"]\n",
            ":1:",
            "cpus_per_task",
        ),
    ];
    for (file, body, line, field) in cases {
        let path = cluster.job_file(file, body);
        let out = cluster.cluster(&["submit", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(
            err.contains(&format!("{file}{line}")),
            "{file}: error does not name the line: {err}"
        );
        assert!(
            err.contains(field),
            "{file}: error does not name the field {field}: {err}"
        );
    }
    assert_eq!(cluster.queue_all().len(), before, "the queue changed");
}

#[test]
fn a_non_root_user_runs_as_itself_and_cannot_cancel_roots_job() {
    const NOBODY: u32 = 65534;
    let cluster = LocalCluster::start(5, 10);
    let whoami = cluster.job_file(
        "whoami.toml",
        "command = [\"sh\", \"-c\", \"id -u; id -g\"]\noutput = \"who-%j.out\"\n",
    );
    let out = cluster.cluster_as(
        NOBODY,
        NOBODY,
        &["submit", "--wait", "--json", whoami.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = json(&out.stdout);
    assert_eq!(info["uid"], NOBODY);
    let output = std::fs::read_to_string(info["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(
        output.split_whitespace().collect::<Vec<_>>(),
        ["65534", "65534"]
    );

    let long = cluster.job_file(
        "long.toml",
        "command = [\"sleep\", \"63.75\"]\noutput = \"/dev/null\"\n",
    );
    let id = cluster.submit(&long);
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 63.75").is_empty() {
        assert!(
            Instant::now() < deadline,
            "root's job never started its task"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cluster.cluster_as(NOBODY, NOBODY, &["cancel", &id.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only your own jobs"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cluster.show(id)["state"], "RUNNING");
    let pids = processes_with("sleep 63.75");
    assert!(pids.iter().all(|&p| process_alive(p)) && !pids.is_empty());
    assert!(
        cluster
            .cluster(&["cancel", &id.to_string()])
            .status
            .success()
    );
    wait_no_process("sleep 63.75", Duration::from_secs(10));
}

#[test]
fn drain_keeps_jobs_off_a_node_and_resume_brings_it_back() {
    let cluster = LocalCluster::start(2, 10);
    let out = cluster.cluster(&["drain", "node1", "--reason", "disk swap"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = cluster.job_file(
        "two.toml",
        "nodes = 2\ncommand = [\"true\"]\noutput = \"/dev/null\"\n",
    );
    let id = cluster.submit(&job);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = cluster.show(id);
        if info["reason"] == "ReqNodeNotAvail" {
            break;
        }
        assert_eq!(
            info["state"], "PENDING",
            "started on a drained node: {info:#}"
        );
        assert!(Instant::now() < deadline, "{info:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let node1 = cluster
        .nodes_json()
        .into_iter()
        .find(|n| n["name"] == "node1")
        .unwrap();
    assert_eq!(node1["state"], "DRAINED");
    assert_eq!(node1["reason"], "disk swap");
    assert!(cluster.cluster(&["resume", "node1"]).status.success());
    cluster.wait_state(id, &["COMPLETED"], MINUTE);
}

/// An idle cluster says nothing it has not something to say about: no `inventory changed` when
/// nothing changed (each was a store commit and a scheduler wake-up), and no colour codes in its
/// log files, which are not terminals.
#[test]
fn an_idle_cluster_logs_no_false_changes_and_no_colour_codes() {
    let cluster = LocalCluster::start(2, 10);
    // Agents look at their hardware again every 5 s: four looks each.
    std::thread::sleep(Duration::from_secs(21));
    let logs = cluster.state.path().join("logs");
    for name in ["headnoded.log", "node1.log", "node2.log"] {
        let log =
            std::fs::read_to_string(logs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(log.contains("INFO"), "{name} is empty: {log}");
        assert!(!log.contains('\u{1b}'), "{name} has colour codes: {log}");
        assert!(
            !log.contains("inventory changed"),
            "{name} reports changes that did not happen: {log}"
        );
    }
}
