//! Local tier: the scheduler's policies through the real daemons and CLI (why, arrays,
//! dependencies, reservations).

use beowulf_tests::{LocalCluster, json, text};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

fn why(cluster: &LocalCluster, job: u64) -> serde_json::Value {
    let out = cluster.cluster(&["why", &job.to_string(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    json(&out.stdout)
}

/// Polls `why` until the job waits for `reason`.
fn wait_reason(cluster: &LocalCluster, job: u64, reason: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let w = why(cluster, job);
        if w["reason"] == reason {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never waited for {reason}: {w:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn why_names_what_blocks_a_job_and_when_it_should_start() {
    let cluster = LocalCluster::start(1, 10);
    let big = cluster.job_file(
        "big.toml",
        "cpus_per_task = 2\ntime_limit = 10\ncommand = [\"sleep\", \"64.5\"]\noutput = \"/dev/null\"\n",
    );
    let running = cluster.submit(&big);
    let started = cluster.wait_state(running, &["RUNNING"], MINUTE)["start_time_ms"]
        .as_u64()
        .unwrap();
    let waiting = cluster.submit(&big);
    let w = wait_reason(&cluster, waiting, "Resources");
    let estimate = w["estimated_start_ms"]
        .as_u64()
        .expect("the top job has an estimate");
    let expected = started + 10 * 60 * 1000;
    assert!(
        estimate.abs_diff(expected) < 2000,
        "estimate {estimate}, expected about {expected}"
    );
    assert!(!w["blockers"].as_array().unwrap().is_empty(), "{w:#}");
    let plain = cluster.cluster(&["why", &waiting.to_string()]);
    assert!(
        text(&plain.stdout).contains("Resources"),
        "{}",
        text(&plain.stdout)
    );
    assert!(
        cluster
            .cluster(&["cancel", &running.to_string(), &waiting.to_string()])
            .status
            .success()
    );
}

#[test]
fn array_elements_get_their_own_ids_and_env_and_the_throttle_holds() {
    let cluster = LocalCluster::start(2, 10);
    let job = cluster.job_file(
        "array.toml",
        "command = [\"sh\", \"-c\", \"echo start $SLURM_ARRAY_TASK_ID $SLURM_JOB_ID $SLURM_ARRAY_JOB_ID $(date +%s%N) >> log; sleep 0.5; echo end $SLURM_ARRAY_TASK_ID $SLURM_JOB_ID $SLURM_ARRAY_JOB_ID $(date +%s%N) >> log\"]\noutput = \"/dev/null\"\n",
    );
    let out = cluster.cluster(&[
        "submit",
        "--json",
        "--array",
        "1-5%2",
        job.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply = json(&out.stdout);
    let first = reply["id"].as_u64().unwrap();
    assert_eq!(reply["count"], 5);
    for id in first..first + 5 {
        cluster.wait_state(id, &["COMPLETED"], MINUTE);
    }
    let log = std::fs::read_to_string(cluster.work.path().join("log")).unwrap();
    let mut events: Vec<(u128, i32)> = Vec::new();
    let mut seen = Vec::new();
    for line in log.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (index, id, array, at): (u32, u64, u64, u128) = (
            w[1].parse().unwrap(),
            w[2].parse().unwrap(),
            w[3].parse().unwrap(),
            w[4].parse().unwrap(),
        );
        assert_eq!(array, first, "{line}");
        assert_eq!(
            id,
            first + u64::from(index) - 1,
            "element {index} has its own ID: {line}"
        );
        events.push((at, if w[0] == "start" { 1 } else { -1 }));
        if w[0] == "start" {
            seen.push(index);
        }
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    events.sort();
    let (mut running, mut most) = (0, 0);
    for (_, delta) in events {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} elements ran at once despite %2");
}

#[test]
fn dependencies_wait_for_their_jobs_and_say_when_they_never_can() {
    let cluster = LocalCluster::start(2, 10);
    let failing = cluster.job_file(
        "fail.toml",
        "command = [\"sh\", \"-c\", \"sleep 1; exit 1\"]\noutput = \"/dev/null\"\n",
    );
    let after = cluster.job_file(
        "after.toml",
        "command = [\"true\"]\noutput = \"/dev/null\"\n",
    );
    let a = cluster.submit(&failing);
    let dep = |kind: &str| {
        let out = cluster.cluster(&[
            "submit",
            "--json",
            "-d",
            &format!("{kind}:{a}"),
            after.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        json(&out.stdout)["id"].as_u64().unwrap()
    };
    let ok = dep("afterok");
    let notok = dep("afternotok");
    wait_reason(&cluster, notok, "Dependency");
    let a_info = cluster.wait_state(a, &["FAILED"], MINUTE);
    let c_info = cluster.wait_state(notok, &["COMPLETED"], MINUTE);
    assert!(c_info["start_time_ms"].as_u64() >= a_info["end_time_ms"].as_u64());
    wait_reason(&cluster, ok, "DependencyNeverSatisfied");
    assert_eq!(cluster.show(ok)["state"], "PENDING");

    let out = cluster.cluster(&["submit", "-d", "afterok:999", after.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--dependency: job 999 does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_maintenance_reservation_keeps_jobs_off_its_nodes_until_deleted() {
    let cluster = LocalCluster::start(2, 10);
    let out = cluster.cluster(&[
        "reserve",
        "create",
        "maint",
        "--nodes",
        "node1",
        "--duration",
        "30",
        "--maintenance",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = cluster.cluster(&["reserve", "list", "--json"]);
    assert_eq!(json(&list.stdout)[0]["name"], "maint");

    let wide = cluster.job_file(
        "wide.toml",
        "nodes = 2\ncommand = [\"true\"]\noutput = \"/dev/null\"\n",
    );
    let small = cluster.job_file(
        "small.toml",
        "command = [\"hostname\"]\noutput = \"small-%j.out\"\n",
    );
    let w = cluster.submit(&wide);
    let s = cluster.submit(&small);
    wait_reason(&cluster, w, "Reservation");
    let small_info = cluster.wait_state(s, &["COMPLETED"], MINUTE);
    assert_eq!(
        small_info["nodes"][0], "node2",
        "nothing runs on the reserved node"
    );

    // Only root manages reservations.
    let out = cluster.cluster_as(65534, 65534, &["reserve", "delete", "maint"]);
    assert!(!out.status.success());
    assert!(
        cluster
            .cluster(&["reserve", "delete", "maint"])
            .status
            .success()
    );
    cluster.wait_state(w, &["COMPLETED"], MINUTE);
}

const POLICY: &str = r#"
[priority]
age_weight = 1000
max_age_ms = 604800000
size_weight = 100
qos_weight = 10000

[[partition]]
name = "short"
nodes = "node[1-2]"
max_time = "0:05:00"
default = true

[[partition]]
name = "long"
nodes = "node2"

[qos.low]
priority = 0
preempt_mode = "requeue"

[qos.high]
priority = 100
preempts = ["low"]
"#;

#[test]
fn partitions_enforce_their_limits() {
    let cluster = LocalCluster::start_with_policy(2, 10, Some(POLICY));
    let long = cluster.job_file(
        "long.toml",
        "time_limit = 10\ncommand = [\"true\"]\noutput = \"/dev/null\"\n",
    );
    let id = cluster.submit(&long);
    wait_reason(&cluster, id, "PartitionTimeLimit");
    let out = cluster.cluster(&["submit", "-p", "long", "--json", long.to_str().unwrap()]);
    let in_long = json(&out.stdout)["id"].as_u64().unwrap();
    let info = cluster.wait_state(in_long, &["COMPLETED"], MINUTE);
    assert_eq!(info["nodes"][0], "node2", "partition long is node2 only");
    let wide = cluster.job_file(
        "wide.toml",
        "nodes = 2\npartition = \"long\"\ncommand = [\"true\"]\n",
    );
    let out = cluster.cluster(&["submit", wide.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("wide.toml:1: field `nodes`: asks for 2 nodes but partition `long` has 1"),
        "{}",
        text(&out.stderr)
    );
}

/// A job's partition, named or the default, is resolved once at submit and is what `cluster
/// queue`, `cluster show` and the job's own `SLURM_JOB_PARTITION` say (issue 19: they said `all`).
#[test]
fn a_jobs_partition_shows_in_queue_show_and_its_environment() {
    let cluster = LocalCluster::start_with_policy(2, 10, Some(POLICY));
    let file = cluster.job_file(
        "partition.toml",
        "time_limit = 1
output = \"/dev/null\"\n\
         command = [\"sh\", \"-c\", \"echo $SLURM_JOB_PARTITION > partition-$SLURM_JOB_ID.txt\"]\n",
    );
    let default = cluster.submit(&file);
    let out = cluster.cluster(&["submit", "-p", "long", "--json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let named = json(&out.stdout)["id"].as_u64().unwrap();
    for (id, partition) in [(default, "short"), (named, "long")] {
        let info = cluster.wait_state(id, &["COMPLETED"], MINUTE);
        assert_eq!(info["partition"], partition, "show of job {id}");
        let listed = cluster
            .queue_all()
            .into_iter()
            .find(|j| j["id"] == id)
            .unwrap();
        assert_eq!(listed["partition"], partition, "queue of job {id}");
        let seen = std::fs::read_to_string(cluster.work.path().join(format!("partition-{id}.txt")))
            .unwrap();
        assert_eq!(seen.trim(), partition, "SLURM_JOB_PARTITION of job {id}");
    }
    let table = text(&cluster.cluster(&["queue", "--all"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&named.to_string()) && l.contains("long")),
        "{table}"
    );
}

#[test]
fn a_high_qos_job_preempts_a_low_one_which_is_requeued() {
    let cluster = LocalCluster::start_with_policy(2, 10, Some(POLICY));
    let low = cluster.job_file(
        "low.toml",
        "qos = \"low\"\ncpus_per_task = 2\ntime_limit = 5\ncommand = [\"sleep\", \"65.5\"]\noutput = \"/dev/null\"\n",
    );
    let lows = [cluster.submit(&low), cluster.submit(&low)];
    for &id in &lows {
        cluster.wait_state(id, &["RUNNING"], MINUTE);
    }
    let high = cluster.job_file("high.toml", "qos = \"high\"\ntime_limit = 1\ncpus_per_task = 2\ncommand = [\"true\"]\noutput = \"/dev/null\"\n");
    let h = cluster.submit(&high);
    cluster.wait_state(h, &["COMPLETED"], MINUTE);
    let requeued: Vec<_> = lows
        .iter()
        .map(|&id| cluster.show(id))
        .filter(|j| j["restarts"] == 1)
        .collect();
    assert_eq!(requeued.len(), 1, "exactly one low job was preempted");
    let events = requeued[0]["events"].to_string();
    assert!(
        events.contains(&format!("preempted by job {h}")),
        "{events}"
    );
    // The victim runs again once the high job is done.
    cluster.wait_state(requeued[0]["id"].as_u64().unwrap(), &["RUNNING"], MINUTE);
    assert!(
        cluster
            .cluster(&["cancel", &lows[0].to_string(), &lows[1].to_string()])
            .status
            .success()
    );
}
