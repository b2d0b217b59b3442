//! Local tier, issue 5 for `flavor = "mpich"`: a containerized 5-rank MPICH job across the 5 local
//! agents, its ranks started by the agents and wired up through their PMIx servers, over
//! libfabric's tcp provider; run as the submitting user; a failing rank fails the job and leaves
//! nothing behind; `cluster cancel` stops every rank.
//!
//! The image is built by `scripts/build-mpi-image.sh mpich`, with MPICH from
//! `scripts/build-mpich.sh` (both cached by recipe; the first MPICH build takes about 10 minutes).

use beowulf_tests::{
    LocalCluster, assert_mpi_hello, mpi_image_of, status_field, text, wait_for_processes,
    wait_no_process,
};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

const NOBODY: u32 = 65534;
const MINUTE: Duration = Duration::from_secs(60);
const RANK_BINARY: &str = "/opt/mpi-hello/mpi-hello";

/// A 5-rank MPICH job in the mpich-hello image.
fn job(cluster: &LocalCluster, name: &str, env: &str) -> PathBuf {
    cluster.job_file(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nnodes = 5\nntasks = 5\ncommand = [\"{RANK_BINARY}\"]\n\
             output = \"{name}-%j.out\"\ntime_limit = \"00:05:00\"\nenv = {{ {env} }}\n\
             [container]\nimage = \"mpich-hello\"\n[mpi]\nflavor = \"mpich\"\nfabric = \"auto\"\n"
        ),
    )
}

#[test]
fn containerized_mpich_across_five_agents_runs_as_the_user_fails_cleanly_and_cancels() {
    let tarball = mpi_image_of("mpich");
    let cluster = LocalCluster::start(5, 10);
    let out = cluster.cluster(&["image", "import", "mpich-hello", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));

    // 1. Five ranks, one per node, in containers, over TCP: every rank's line and the right ring
    //    and allreduce results.
    let hello = job(&cluster, "hello", "");
    let info = cluster.submit_as(NOBODY, NOBODY, &hello, true);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    assert_eq!(info["uid"], NOBODY);
    assert_eq!(info["fabric"], "tcp", "{info:#}");
    let output_path = info["stdout"].as_str().unwrap();
    let output = std::fs::read_to_string(output_path).unwrap();
    assert_mpi_hello(&output, 5, 1);
    assert_eq!(std::fs::metadata(output_path).unwrap().uid(), NOBODY);
    wait_no_process(RANK_BINARY, Duration::from_secs(10));

    // 2. A rank exiting non-zero fails the job; nothing of it is left on any node.
    let failing = job(&cluster, "failing", "MPI_HELLO_FAIL_RANK = \"3\"");
    let info = cluster.submit_as(NOBODY, NOBODY, &failing, true);
    assert_eq!(info["state"], "FAILED", "{info:#}");
    assert_eq!(info["exit_code"], 7, "{info:#}");
    wait_no_process(RANK_BINARY, Duration::from_secs(10));

    // 3. Cancel stops every rank on every node within 10 s; the ranks ran as the user.
    let sleeping = job(&cluster, "sleeping", "MPI_HELLO_SLEEP = \"300\"");
    let id = cluster.submit_as(NOBODY, NOBODY, &sleeping, false)["id"]
        .as_u64()
        .unwrap();
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    for pid in wait_for_processes(RANK_BINARY, 5, MINUTE) {
        assert_eq!(
            status_field(pid, "Uid:").as_deref(),
            Some("65534"),
            "rank pid {pid} is not the user's"
        );
    }
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    let took = wait_no_process(RANK_BINARY, Duration::from_secs(10));
    eprintln!("cancel stopped every MPICH rank in {took:?}");
    assert_eq!(
        cluster.wait_state(id, &["CANCELLED"], MINUTE)["state"],
        "CANCELLED"
    );
}
