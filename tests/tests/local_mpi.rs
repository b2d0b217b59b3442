//! Local tier, issue 5: a containerized 5-rank MPI job across the 5 local agents over TCP,
//! launched directly by the agents (the default) and under mpirun, run as the submitting user;
//! a failing rank fails the job and leaves nothing behind; `cluster cancel` stops every rank;
//! `fabric = "ib"` waits, naming the nodes without a verbs port; ranks stay off the CPU the local
//! cluster keeps for its daemons.
//!
//! The image is built from Debian packages by `scripts/build-mpi-image.sh` (cached by recipe).

use beowulf_tests::{
    LocalCluster, assert_mpi_hello, cpus_allowed, local_task_cpus, mpi_image, processes_with,
    status_field, text, wait_for_processes, wait_no_process,
};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

const NOBODY: u32 = 65534;
const MINUTE: Duration = Duration::from_secs(60);
/// Every process of an MPI job carries this in its command line (mpirun, orted, the ranks).
const RANK_BINARY: &str = "/opt/mpi-hello/mpi-hello";

/// A 5-rank job in the mpi-hello image, launched the default way (directly, by the agents).
fn job(cluster: &LocalCluster, name: &str, env: &str, fabric: &str) -> PathBuf {
    job_launched(cluster, name, env, fabric, "")
}

/// The same, with `mpi_extra` added to its `[mpi]` section.
fn job_launched(
    cluster: &LocalCluster,
    name: &str,
    env: &str,
    fabric: &str,
    mpi_extra: &str,
) -> PathBuf {
    cluster.job_file(
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nnodes = 5\nntasks = 5\ncommand = [\"{RANK_BINARY}\"]\n\
             output = \"{name}-%j.out\"\ntime_limit = \"00:05:00\"\nenv = {{ {env} }}\n\
             [container]\nimage = \"mpi-hello\"\n[mpi]\nflavor = \"openmpi\"\nfabric = \"{fabric}\"\n{mpi_extra}"
        ),
    )
}

fn submit_as_nobody(
    cluster: &LocalCluster,
    file: &std::path::Path,
    wait: bool,
) -> serde_json::Value {
    cluster.submit_as(NOBODY, NOBODY, file, wait)
}

#[test]
fn containerized_mpi_across_five_agents_runs_as_the_user_fails_cleanly_and_cancels() {
    let tarball = mpi_image();
    let cluster = LocalCluster::start(5, 10);
    let out = cluster.cluster(&["image", "import", "mpi-hello", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));

    // 1. Five ranks, one per node, in containers, over TCP.
    let hello = job(&cluster, "hello", "", "auto");
    let info = submit_as_nobody(&cluster, &hello, true);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    assert_eq!(info["uid"], NOBODY);
    assert_eq!(info["fabric"], "tcp");
    let reason = info["fabric_reason"].as_str().unwrap();
    assert!(
        reason.contains("(no InfiniBand or RoCE device)")
            && (1..=5).all(|i| reason.contains(&format!("node{i}"))),
        "{info:#}"
    );
    let digest = info["image_digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"), "{info:#}");
    for phase in ["queued", "image_staged", "containers_started", "mpi_ran"] {
        assert!(
            info["phases_ms"][phase].is_u64(),
            "no {phase} phase: {info:#}"
        );
    }
    let output_path = info["stdout"].as_str().unwrap();
    assert_mpi_hello(&std::fs::read_to_string(output_path).unwrap(), 5, 1);
    assert_eq!(std::fs::metadata(output_path).unwrap().uid(), NOBODY);

    // 1b. The same job under mpirun, in the first node's container, with its daemons started in
    //     the other nodes' containers through their agents.
    let mpirun = job_launched(&cluster, "mpirun", "", "auto", "launch = \"mpirun\"\n");
    let info = submit_as_nobody(&cluster, &mpirun, true);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    assert_mpi_hello(
        &std::fs::read_to_string(info["stdout"].as_str().unwrap()).unwrap(),
        5,
        1,
    );

    // 2. A rank exiting non-zero fails the job; nothing of it is left on any node.
    let failing = job(&cluster, "failing", "MPI_HELLO_FAIL_RANK = \"3\"", "auto");
    let info = submit_as_nobody(&cluster, &failing, true);
    assert_eq!(info["state"], "FAILED", "{info:#}");
    assert_eq!(info["exit_code"], 7, "{info:#}");
    wait_no_process(RANK_BINARY, Duration::from_secs(10));
    wait_no_process("orted", Duration::from_secs(10));

    // 3. Cancel stops every rank on every node within 10 s; the ranks ran as the user.
    let sleeping = job(&cluster, "sleeping", "MPI_HELLO_SLEEP = \"300\"", "auto");
    let id = submit_as_nobody(&cluster, &sleeping, false)["id"]
        .as_u64()
        .unwrap();
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    for pid in wait_for_processes(RANK_BINARY, 5, MINUTE) {
        assert_eq!(
            status_field(pid, "Uid:").as_deref(),
            Some("65534"),
            "rank pid {pid} is not the user's"
        );
        // The local cluster keeps a CPU for its daemons: ranks spinning on every core stalled them.
        assert_eq!(
            cpus_allowed(pid),
            local_task_cpus(),
            "rank pid {pid} may run on a reserved CPU"
        );
    }
    // Launched directly: no mpirun and no MPI daemon.
    assert!(processes_with("orted").is_empty() && processes_with("mpirun").is_empty());
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    let took = wait_no_process(RANK_BINARY, Duration::from_secs(10));
    eprintln!("cancel stopped every rank in {took:?}");
    wait_no_process("orted", Duration::from_secs(10));
    assert_eq!(
        cluster.wait_state(id, &["CANCELLED"], MINUTE)["state"],
        "CANCELLED"
    );

    // 4. fabric = "ib" is a placement constraint: no node here has a verbs port, so it waits
    //    and says which nodes lack it.
    let ib = job(&cluster, "ib", "", "ib");
    let id = submit_as_nobody(&cluster, &ib, false)["id"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let why = cluster.cluster(&["why", &id.to_string()]);
    let why = text(&why.stdout);
    assert!(
        why.contains("fabric:ib") && why.contains("node1,node2,node3,node4,node5"),
        "{why}"
    );
    assert_eq!(cluster.show(id)["state"], "PENDING");
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
}

/// A container's program that handles SIGTERM gets it at a cancel and has the kill wait to save
/// its state, as under Slurm (and `docker stop`); one that does not is killed after the wait.
#[test]
fn a_container_job_gets_sigterm_before_sigkill_at_a_cancel() {
    let tarball = mpi_image();
    let cluster = LocalCluster::start(1, 10);
    let out = cluster.cluster(&["image", "import", "mpi-hello", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    let file = cluster.job_file(
        "trap.toml",
        "name = \"trap\"\noutput = \"trap-%j.out\"\n\
         command = [\"bash\", \"-c\", \"trap 'echo checkpointed; exit 0' TERM; echo ready; while :; do sleep 1; done\"]\n\
         [container]\nimage = \"mpi-hello\"\n",
    );
    let id = submit_as_nobody(&cluster, &file, false)["id"]
        .as_u64()
        .unwrap();
    let output = cluster.work.path().join(format!("trap-{id}.out"));
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&output)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the container job never started: {:#}",
            cluster.show(id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cluster.cluster(&["cancel", &id.to_string()]);
    assert!(out.status.success(), "cancel: {}", text(&out.stderr));
    let info = cluster.wait_state(id, &["CANCELLED"], MINUTE);
    assert_eq!(info["state"], "CANCELLED");
    let written = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let written = std::fs::read_to_string(&output).unwrap_or_default();
            if written.contains("checkpointed") || std::time::Instant::now() > deadline {
                break written;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(
        written.contains("checkpointed"),
        "the container's shell got no SIGTERM before the kill: {written:?}"
    );
}
