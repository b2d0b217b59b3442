//! Local tier, issue 7: Open MPI with `launch = "direct"` — each agent starts its node's ranks
//! itself and wires them up through its PMIx server, with no mpirun and no daemon per node. Six ranks on three agents (two per node, so shared memory between local ranks and
//! TCP between nodes), run as the submitting user; a failing rank fails the job with its own
//! exit code and leaves nothing behind; `cluster cancel` stops every rank.

use beowulf_tests::{
    LocalCluster, assert_mpi_hello, processes_with, repo_root, status_field, text,
    wait_for_processes, wait_no_process,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NOBODY: u32 = 65534;
const MINUTE: Duration = Duration::from_secs(60);

/// Compiles examples/mpi-hello.c into the cluster's work directory (every user may run it).
fn hello(cluster: &LocalCluster) -> PathBuf {
    let program = cluster.work.path().join("mpi-hello-direct");
    let cc = std::process::Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(repo_root().join("examples/mpi-hello.c"))
        .output()
        .expect("mpicc runs (libopenmpi-dev is a build dependency)");
    assert!(cc.status.success(), "mpicc: {}", text(&cc.stderr));
    program
}

fn job(cluster: &LocalCluster, name: &str, program: &Path, env: &str) -> PathBuf {
    cluster.job_file(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nnodes = 3\nntasks = 6\ncommand = [\"{}\"]\n\
             output = \"{name}-%j.out\"\ntime_limit = \"00:05:00\"\nenv = {{ {env} }}\n\
             [mpi]\nflavor = \"openmpi\"\nfabric = \"tcp\"\nlaunch = \"direct\"\n",
            program.display()
        ),
    )
}

fn submit_as_nobody(cluster: &LocalCluster, file: &Path, wait: bool) -> serde_json::Value {
    cluster.submit_as(NOBODY, NOBODY, file, wait)
}

/// The ranks of `program` now running (not the shells or tools that mention it).
#[test]
fn open_mpi_with_launch_direct_is_started_by_the_agents_without_mpirun() {
    let cluster = LocalCluster::start(3, 10);
    let program = hello(&cluster);

    // 1. Six ranks, two per node, each printing its rank and node; the ring and the allreduce
    //    need every rank's address, which only the agents' fences carried.
    let info = submit_as_nobody(&cluster, &job(&cluster, "hello", &program, ""), true);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let output = std::fs::read_to_string(info["stdout"].as_str().unwrap()).unwrap();
    assert_mpi_hello(&output, 6, 2);
    assert!(
        info["phases_ms"]["mpi_ran"].is_u64(),
        "no mpi_ran phase: {info:#}"
    );

    // 2. While ranks run: they are the agents' own children, as the user — no mpirun, no orted.
    let sleeping = job(&cluster, "sleeping", &program, "MPI_HELLO_SLEEP = \"300\"");
    let id = submit_as_nobody(&cluster, &sleeping, false)["id"]
        .as_u64()
        .unwrap();
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    let ranks = wait_for_processes(program.to_str().unwrap(), 6, MINUTE);
    for pid in &ranks {
        assert_eq!(
            status_field(*pid, "Uid:").as_deref(),
            Some("65534"),
            "rank {pid} is not the user's"
        );
        let parent: i32 = status_field(*pid, "PPid:").unwrap().parse().unwrap();
        let parent_cmd = std::fs::read_to_string(format!("/proc/{parent}/cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        assert!(
            parent_cmd.contains("computed"),
            "rank {pid} was started by {parent_cmd:?}, not by an agent"
        );
    }
    assert!(processes_with("orted").is_empty(), "an orted runs");
    // 3. Cancel stops every rank on every node within 10 s.
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    let took = wait_no_process(program.to_str().unwrap(), Duration::from_secs(10));
    eprintln!("cancel stopped every rank in {took:?}");
    assert_eq!(
        cluster.wait_state(id, &["CANCELLED"], MINUTE)["state"],
        "CANCELLED"
    );

    // 4. Rank 3 exits with 7 while its node's other rank (and the other nodes' ranks) would
    //    wait on it forever: the job fails with rank 3's code, and no rank is left anywhere.
    let failing = job(&cluster, "failing", &program, "MPI_HELLO_FAIL_RANK = \"3\"");
    let info = submit_as_nobody(&cluster, &failing, true);
    assert_eq!(info["state"], "FAILED", "{info:#}");
    assert_eq!(info["exit_code"], 7, "{info:#}");
    // Its last words, on node2's stderr, reached the job's file through node1 before the job
    // ended.
    let output = std::fs::read_to_string(info["stdout"].as_str().unwrap()).unwrap();
    assert!(
        output.contains("rank 3: exiting with code 7"),
        "the failing rank's message is missing:\n{output}"
    );
    wait_no_process(program.to_str().unwrap(), Duration::from_secs(10));
}
