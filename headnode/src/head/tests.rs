//! The head's state machine driven directly: no sockets, a temporary store, a fake agent stream.

use super::*;
use beowulf_types::Inventory;
use rand::SeedableRng;

pub(super) fn config(dir: &std::path::Path) -> HeadConfig {
    config_with(dir, "")
}

/// headnoded.toml for `dir`, followed by `sections`.
pub(super) fn config_with(dir: &std::path::Path, sections: &str) -> HeadConfig {
    HeadConfig::parse(
        &dir.join("headnoded.toml"),
        &format!(
            "state_dir = {:?}\nsocket = {:?}\n{sections}",
            dir,
            dir.join("sock")
        ),
    )
    .unwrap()
}

pub(super) const ROOT: Caller = Caller { uid: 0, gid: 0 };

pub(super) fn job_file(text: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        file_name: "job.toml".into(),
        file_text: text.into(),
        cwd: "/tmp".into(),
        ..Default::default()
    }
}

/// Registers `node` with 2 CPUs; returns the stream the head sends its desired state on.
pub(super) fn register(head: &Head, node: &str) -> mpsc::UnboundedReceiver<v1::HeadMessage> {
    let (tx, rx) = mpsc::unbounded_channel();
    let inventory = Inventory {
        cpus: 2,
        memory_mb: 1024,
        ..Inventory::default()
    };
    let register = v1::Register {
        node: node.into(),
        inventory: Some(v1::Inventory::from(&inventory)),
        runs: vec![],
        generation: 0,
        launch_endpoint: format!("127.0.0.1:7{}", node.len()),
    };
    head.register(&register, tx).unwrap();
    rx
}

pub(super) fn last_desired(rx: &mut mpsc::UnboundedReceiver<v1::HeadMessage>) -> v1::DesiredState {
    let mut last = None;
    while let Ok(v1::HeadMessage {
        body: Some(v1::head_message::Body::Desired(d)),
    }) = rx.try_recv()
    {
        last = Some(d);
    }
    last.expect("a desired state was sent")
}

pub(super) fn pass(head: &Head) -> usize {
    head.schedule_pass(&mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap()
}

pub(super) fn finished(job: u64, run: u32, code: i32) -> v1::RunReport {
    v1::RunReport {
        job_id: job,
        run,
        finished: true,
        exit_code: code,
        detail: String::new(),
        lost: false,
        ..Default::default()
    }
}

#[test]
fn a_job_is_dispatched_as_desired_state_and_completes_from_reports() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let mut n2 = register(&head, "node2");
    let id = head
        .submit(&ROOT, job_file("nodes = 2\ncommand = [\"true\"]\n"))
        .unwrap();
    assert_eq!(pass(&head), 1);
    let d1 = last_desired(&mut n1);
    let d2 = last_desired(&mut n2);
    assert_eq!(d1.assignments.len(), 1);
    assert_eq!(
        (d1.assignments[0].node_index, d2.assignments[0].node_index),
        (0, 1)
    );
    assert_eq!(d1.assignments[0].env["SLURM_JOB_NODELIST"], "node[1-2]");
    assert!(d2.generation >= d1.generation);

    head.run_report(&NodeName::new("node1"), &finished(id.0, 1, 0))
        .unwrap();
    assert_eq!(head.show_job(id).unwrap().state, "RUNNING");
    head.run_report(&NodeName::new("node2"), &finished(id.0, 1, 0))
        .unwrap();
    let info = head.show_job(id).unwrap();
    assert_eq!(
        (info.state.as_str(), info.exit_code),
        ("COMPLETED", Some(0))
    );
    // Once ended, the job leaves every node's desired state.
    assert!(last_desired(&mut n1).assignments.is_empty());
}

#[test]
fn nodes_of_a_job_with_tasks_on_several_nodes_send_their_output_to_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let mut n2 = register(&head, "node2");
    let id = head
        .submit(&ROOT, job_file("nodes = 2\ncommand = [\"true\"]\n"))
        .unwrap();
    pass(&head);
    let a1 = last_desired(&mut n1).assignments.remove(0);
    let a2 = last_desired(&mut n2).assignments.remove(0);
    let (o1, o2) = (a1.output.unwrap(), a2.output.unwrap());
    assert_eq!(o1, o2, "every node is told the same writer and credential");
    assert_eq!(o1.writer_index, 0);
    assert_eq!(
        o1.writer_endpoint, "127.0.0.1:75",
        "node1's launch endpoint"
    );
    assert_eq!(o1.token.len(), 32);
    for node in ["node1", "node2"] {
        head.run_report(&NodeName::new(node), &finished(id.0, 1, 0))
            .unwrap();
    }
    // One node, or a script (it runs on the first node only): the tasks write the file.
    head.submit(&ROOT, job_file("command = [\"true\"]\n"))
        .unwrap();
    head.submit(&ROOT, job_file("nodes = 2\nscript = \"true\"\n"))
        .unwrap();
    pass(&head);
    let desired = last_desired(&mut n1);
    assert_eq!(desired.assignments.len(), 2, "{desired:?}");
    for a in &desired.assignments {
        assert!(a.output.is_none(), "job {} forwards output", a.job_id);
    }
}

#[test]
fn a_failed_rank_ends_the_job_and_holds_the_other_nodes_until_they_report() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let _n2 = register(&head, "node2");
    let id = head
        .submit(
            &ROOT,
            job_file("nodes = 2\ntasks_per_node = 2\ncommand = [\"x\"]\n"),
        )
        .unwrap();
    pass(&head);
    head.run_report(&NodeName::new("node1"), &finished(id.0, 1, 3))
        .unwrap();
    let info = head.show_job(id).unwrap();
    assert_eq!((info.state.as_str(), info.exit_code), ("FAILED", Some(3)));
    let node2 = |head: &Head| {
        head.list_nodes()
            .into_iter()
            .find(|n| n.name == "node2")
            .unwrap()
    };
    assert_eq!(
        node2(&head).cpus_allocated,
        2,
        "node2 is held until its tasks are gone"
    );
    let other = head
        .submit(&ROOT, job_file("nodes = 2\ncommand = [\"y\"]\n"))
        .unwrap();
    pass(&head);
    assert_eq!(head.show_job(other).unwrap().state, "PENDING");
    head.run_report(&NodeName::new("node2"), &finished(id.0, 1, 137))
        .unwrap();
    assert_eq!(node2(&head).cpus_allocated, 0);
    pass(&head);
    assert_eq!(head.show_job(other).unwrap().state, "RUNNING");
}

/// On node1 (2 CPUs): one job that ran and completed, one still queued behind it; returns their IDs
/// and node1's desired-state stream.
fn one_done_one_queued(head: &Head) -> (JobId, JobId, mpsc::UnboundedReceiver<v1::HeadMessage>) {
    let node1 = register(head, "node1");
    let done = head
        .submit(&ROOT, job_file("command = [\"a\"]\ncpus_per_task = 2\n"))
        .unwrap();
    let queued = head
        .submit(&ROOT, job_file("command = [\"b\"]\ncpus_per_task = 2\n"))
        .unwrap();
    pass(head);
    head.run_report(&NodeName::new("node1"), &finished(done.0, 1, 0))
        .unwrap();
    (done, queued, node1)
}

/// A reopened head knows both jobs of [`one_done_one_queued`] and does not reuse their IDs.
fn assert_survived(head: &Head, done: JobId, queued: JobId) {
    assert_eq!(head.show_job(done).unwrap().state, "COMPLETED");
    assert_eq!(head.show_job(queued).unwrap().state, "PENDING");
    let next = head.submit(&ROOT, job_file("command = [\"c\"]\n")).unwrap();
    assert!(next.0 > queued.0, "job IDs are never reused");
}

#[test]
fn acknowledged_jobs_and_results_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (done, queued) = {
        let head = Head::open(config(dir.path())).unwrap();
        let (done, queued, _node1) = one_done_one_queued(&head);
        (done, queued)
    };
    assert_survived(&Head::open(config(dir.path())).unwrap(), done, queued);
}

#[test]
fn acknowledged_jobs_survive_a_crash_before_the_store_is_flushed() {
    for acknowledge in ["fsync", "write"] {
        acknowledged_jobs_survive_a_crash_with_only_the_log(acknowledge);
    }
}

/// Every change reaches the log before it is answered, in both modes: a crash of headnoded before
/// the flusher moved it into redb loses nothing.
fn acknowledged_jobs_survive_a_crash_with_only_the_log(acknowledge: &str) {
    let dir = tempfile::tempdir().unwrap();
    // A flush an hour away: every change stays only in the log while the test runs.
    let mode = format!("[store]\nacknowledge = \"{acknowledge}\"\nflush_delay_ms = 3600000\n");
    let head = Head::open(config_with(dir.path(), &mode)).unwrap();
    let (done, queued, _node1) = one_done_one_queued(&head);
    // What a crash of headnoded now leaves on disk: its files as they are (the kernel has them).
    let crashed = |with_log: bool| {
        let image = tempfile::tempdir().unwrap();
        let mut files = vec!["headnoded.redb"];
        if with_log {
            files.push("headnoded.wal");
        }
        for file in files {
            std::fs::copy(dir.path().join(file), image.path().join(file)).unwrap();
        }
        image
    };
    let without_log = crashed(false);
    let reopened = Head::open(config(without_log.path())).unwrap();
    assert!(
        reopened.show_job(done).is_err(),
        "{acknowledge}: the store alone already had the jobs: the log was not what kept them"
    );
    let with_log = crashed(true);
    assert_survived(&Head::open(config(with_log.path())).unwrap(), done, queued);
    assert_eq!(
        std::fs::metadata(with_log.path().join("headnoded.wal"))
            .unwrap()
            .len(),
        0,
        "{acknowledge}: the replayed log is emptied"
    );
    // A clean stop moves the log into the store.
    drop(head);
    std::fs::remove_file(dir.path().join("headnoded.wal")).unwrap();
    let reopened = Head::open(config(dir.path())).unwrap();
    assert_eq!(reopened.show_job(queued).unwrap().state, "PENDING");
}

#[test]
fn only_the_owner_or_root_may_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let alice = Caller {
        uid: 1000,
        gid: 1000,
    };
    let bob = Caller {
        uid: 1001,
        gid: 1001,
    };
    let id = head
        .submit(&alice, job_file("command = [\"a\"]\n"))
        .unwrap();
    assert!(matches!(
        head.cancel(&bob, id),
        Err(HeadError::PermissionDenied(_))
    ));
    assert_eq!(head.cancel(&alice, id).unwrap(), JobState::Cancelled);
    assert!(matches!(
        head.cancel(&ROOT, id),
        Err(HeadError::AlreadyEnded { .. })
    ));
}

#[test]
fn a_submit_larger_than_the_cluster_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let err = head
        .submit(&ROOT, job_file("command = [\"a\"]\nnodes = 2\n"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "job.toml:2: field `nodes`: asks for 2 nodes but the cluster has 1"
    );
    assert!(head.list_jobs(true).is_empty());
    // The refused submit did not consume a job ID.
    assert_eq!(
        head.submit(&ROOT, job_file("command = [\"a\"]\n")).unwrap(),
        JobId(1)
    );
}

/// An inventory of 2 CPUs with one soft-RoCE port in `state`.
fn with_rxe(state: beowulf_types::IbPortState) -> v1::Inventory {
    v1::Inventory::from(&Inventory {
        cpus: 2,
        memory_mb: 1024,
        ib_ports: vec![beowulf_types::IbPort {
            device: "rxe0".into(),
            port: 1,
            state,
            phys_state: String::new(),
            rate: String::new(),
            link_layer: "Ethernet".into(),
            netdev: Some("eth1".into()),
        }],
        ..Inventory::default()
    })
}

#[test]
fn an_ib_port_going_down_makes_the_next_mpi_job_use_tcp_naming_the_node() {
    use beowulf_types::IbPortState::{Active, Down};
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let _n2 = register(&head, "node2");
    let (node1, node2) = (NodeName::new("node1"), NodeName::new("node2"));
    // Both ports come up after registration (heartbeats carry the new inventory).
    head.update_inventory(&node1, &with_rxe(Active)).unwrap();
    head.update_inventory(&node2, &with_rxe(Active)).unwrap();
    let mpi = "nodes = 2\ncommand = [\"hello\"]\n[mpi]\nflavor = \"openmpi\"\n";
    let first = head.submit(&ROOT, job_file(mpi)).unwrap();
    assert_eq!(pass(&head), 1);
    let show = head.show_job(first).unwrap();
    assert_eq!(show.fabric, "ib", "{}", show.fabric_reason);
    head.cancel(&ROOT, first).unwrap();
    head.run_report(&node1, &finished(first.0, 1, 137)).unwrap();
    head.run_report(&node2, &finished(first.0, 1, 137)).unwrap();

    // node2's port goes down: the next job runs over TCP and says which node lacks the port.
    head.update_inventory(&node2, &with_rxe(Down)).unwrap();
    let second = head.submit(&ROOT, job_file(mpi)).unwrap();
    assert_eq!(pass(&head), 1);
    let show = head.show_job(second).unwrap();
    assert_eq!(show.fabric, "tcp");
    assert!(
        show.fabric_reason.contains("node2 (no ACTIVE verbs port"),
        "{}",
        show.fabric_reason
    );
}

#[test]
fn concurrent_submits_are_all_durable_with_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let head = std::sync::Arc::new(Head::open(config(dir.path())).unwrap());
    let _n1 = register(&head, "node1");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let head = head.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|_| {
                        head.submit(&ROOT, job_file("command = [\"true\"]\n"))
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut ids: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .map(|id| id.0)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    drop(head);
    // Every acknowledged submit is in the store, and the counter is past them.
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    assert_eq!(head.lock().jobs.len(), 200);
    let next = head
        .submit(&ROOT, job_file("command = [\"true\"]\n"))
        .unwrap();
    assert_eq!(next, JobId(201));
}

#[test]
fn a_failed_store_write_undoes_the_change_and_tells_the_caller() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let first = head
        .submit(&ROOT, job_file("command = [\"true\"]\n"))
        .unwrap();
    let generation = head.generation();

    head.store.fail_commits.store(true, Ordering::SeqCst);
    let err = head
        .submit(&ROOT, job_file("command = [\"true\"]\n"))
        .unwrap_err();
    assert!(
        err.to_string().contains("injected by a test"),
        "the store's error reaches the caller: {err}"
    );
    // The scheduler's start of the first job fails too: nothing is sent to the agent.
    let _ = n1.try_recv();
    assert!(
        head.schedule_pass(&mut rand::rngs::StdRng::seed_from_u64(1))
            .is_err()
    );
    assert!(
        n1.try_recv().is_err(),
        "no desired state for an unwritten start"
    );
    assert_eq!(head.generation(), generation);
    assert_eq!(head.show_job(first).unwrap().state, "PENDING");
    assert!(matches!(
        head.show_job(JobId(first.0 + 1)),
        Err(HeadError::NoSuchJob(_))
    ));

    head.store.fail_commits.store(false, Ordering::SeqCst);
    let second = head
        .submit(&ROOT, job_file("command = [\"true\"]\n"))
        .unwrap();
    assert_eq!(
        second,
        JobId(first.0 + 1),
        "the failed submit's id is reused"
    );
    assert_eq!(pass(&head), 2);
    assert_eq!(last_desired(&mut n1).assignments.len(), 2);
}

#[test]
fn mpich_jobs_are_started_directly_by_every_node_with_the_flavor_named() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let mut n2 = register(&head, "node2");
    let job = "nodes = 2\nntasks = 2\ncommand = [\"./hello\"]\n[mpi]\nflavor = \"mpich\"\n";
    head.submit(&ROOT, job_file(job)).unwrap();
    assert_eq!(pass(&head), 1);
    for node in [&mut n1, &mut n2] {
        let desired = last_desired(node);
        let mpi = desired.assignments[0].mpi.as_ref().expect("an MPI launch");
        assert_eq!(
            (mpi.mpi_flavor(), mpi.direct),
            (beowulf_types::MpiFlavor::Mpich, true)
        );
        assert_eq!(mpi.tasks_per_node, vec![1, 1]);
    }
}

/// A node silent past the timeout is failed, unless the head itself was away meanwhile: then it
/// gets a new timeout from the head's return.
#[test]
fn silence_while_the_head_was_away_is_forgiven_once() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config_with(dir.path(), "heartbeat_timeout_ms = 200\n")).unwrap();
    let _stream = register(&head, "node1");
    std::thread::sleep(std::time::Duration::from_millis(300));
    head.forgive_silence();
    assert_eq!(
        head.check_heartbeats().unwrap(),
        0,
        "failed a forgiven node"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(head.check_heartbeats().unwrap(), 1, "kept a silent node");
    let node = head.read(|inner| inner.nodes[&NodeName::new("node1")].clone());
    assert!(
        node.down_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("not responding: no heartbeat for")),
        "{node:?}"
    );
}

/// node1's heartbeat: it acted on `generation` and knows `runs`.
fn heartbeat(head: &Head, generation: u64, runs: &[RunKey]) {
    let beat = v1::Heartbeat {
        generation,
        inventory: None,
        runs: runs.iter().copied().map(v1::RunRef::from).collect(),
    };
    head.heartbeat(&NodeName::new("node1"), &beat).unwrap();
}

#[test]
fn a_run_cancelled_before_its_start_reached_the_node_is_released_by_the_next_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let id = head
        .submit(&ROOT, job_file("tasks_per_node = 2\ncommand = [\"x\"]\n"))
        .unwrap();
    pass(&head);
    let started = last_desired(&mut n1).generation;
    head.cancel(&ROOT, id).unwrap();
    let cancelled = last_desired(&mut n1).generation;
    assert!(cancelled > started);
    let allocated = |head: &Head| head.list_nodes()[0].cpus_allocated;
    assert_eq!(allocated(&head), 2, "held until node1 says the run is gone");
    // The agent has not acted on the cancel yet: it may still start the run.
    heartbeat(&head, started, &[]);
    assert_eq!(allocated(&head), 2);
    // It acted on the cancel and knows the run: its tasks are being killed, it will report.
    heartbeat(&head, cancelled, &[RunKey { job: id, run: 1 }]);
    assert_eq!(allocated(&head), 2);
    // It acted on the cancel and never had the run: nothing of it is there.
    heartbeat(&head, cancelled, &[]);
    assert_eq!(allocated(&head), 0);
    assert_eq!(head.show_job(id).unwrap().state, "CANCELLED");
}

#[test]
fn a_job_that_would_make_its_nodes_desired_state_undeliverable_fails_and_says_why() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let (tx, mut n1) = mpsc::unbounded_channel();
    let inventory = Inventory {
        cpus: 8,
        memory_mb: 8192,
        ..Inventory::default()
    };
    head.register(
        &v1::Register {
            node: "node1".into(),
            inventory: Some(v1::Inventory::from(&inventory)),
            launch_endpoint: "127.0.0.1:7001".into(),
            ..Default::default()
        },
        tx,
    )
    .unwrap();
    // 300 KiB of exported environment per job; node1's state may hold 1 MiB here (48 MiB for
    // real): three such jobs fit, a fourth would not.
    desired::TEST_BUDGET_BYTES.store(1 << 20, Ordering::Relaxed);
    let ids: Vec<JobId> = (0..4)
        .map(|i| {
            let mut request = job_file(&format!("name = \"big{i}\"\ncommand = [\"x\"]\n"));
            for part in 0..3 {
                request
                    .env
                    .insert(format!("BULK{part}"), "x".repeat(100 << 10));
            }
            head.submit(&ROOT, request).unwrap()
        })
        .collect();
    pass(&head);
    desired::TEST_BUDGET_BYTES.store(0, Ordering::Relaxed);
    let states: Vec<String> = ids
        .iter()
        .map(|id| head.show_job(*id).unwrap().state)
        .collect();
    assert_eq!(states, ["RUNNING", "RUNNING", "RUNNING", "FAILED"]);
    let reason = head.show_job(ids[3]).unwrap().reason;
    assert!(
        reason.contains("node1's desired state would be")
            && reason.contains("export less environment"),
        "{reason}"
    );
    // What node1 is sent stays within the budget, and holds the three that started.
    let sent = last_desired(&mut n1);
    assert_eq!(sent.assignments.len(), 3);
    assert!(prost::Message::encoded_len(&sent) <= 1 << 20);
}

#[test]
fn listings_come_in_pages_that_together_hold_every_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let ids: Vec<JobId> = (0..7)
        .map(|_| head.submit(&ROOT, job_file("command = [\"x\"]\n")).unwrap())
        .collect();
    let mut seen = Vec::new();
    let mut after = JobId(0);
    loop {
        let (page, more) = head.list_jobs_page(true, after, 3);
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|j| JobId(j.id)));
        match page.last() {
            Some(last) if more => after = JobId(last.id),
            _ => break,
        }
    }
    assert_eq!(seen, ids);
}

/// A run's argv and environment travel once per session: the node's next desired states leave
/// them out, and an agent that connects again gets them whole.
#[test]
fn a_runs_argv_and_environment_go_to_its_node_once_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let first = head
        .submit(&ROOT, job_file("command = [\"sleep\", \"100\"]\n"))
        .unwrap();
    assert_eq!(pass(&head), 1);
    let d = last_desired(&mut n1);
    assert_eq!(d.assignments.len(), 1);
    assert!(!d.assignments[0].payload_omitted);
    assert_eq!(d.assignments[0].argv, ["sleep", "100"]);

    let second = head
        .submit(&ROOT, job_file("command = [\"sleep\", \"200\"]\n"))
        .unwrap();
    assert_eq!(pass(&head), 1);
    let d = last_desired(&mut n1);
    let by_job: BTreeMap<u64, &v1::Assignment> =
        d.assignments.iter().map(|a| (a.job_id, a)).collect();
    let (old, new) = (by_job[&first.0], by_job[&second.0]);
    assert!(old.payload_omitted && old.argv.is_empty() && old.env.is_empty());
    assert!(!new.payload_omitted);
    assert_eq!(new.argv, ["sleep", "200"]);
    assert_eq!(new.env["SLURM_JOB_ID"], second.0.to_string());

    // A new session (the agent reconnected or restarted) starts from nothing.
    let mut again = register(&head, "node1");
    let d = last_desired(&mut again);
    assert_eq!(d.assignments.len(), 2);
    assert!(
        d.assignments
            .iter()
            .all(|a| !a.payload_omitted && a.argv.len() == 2 && !a.env.is_empty()),
        "{d:?}"
    );
}

/// A plan is made from a snapshot and applied in a later change: a job cancelled in between is
/// not started (it used to come back RUNNING, its nodes held forever), and a job whose node was
/// drained in between waits for the next pass.
#[test]
fn a_plan_does_not_start_jobs_cancelled_or_nodes_drained_since_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let cancelled = head
        .submit(&ROOT, job_file("command = [\"sleep\", \"100\"]\n"))
        .unwrap();
    let plan_of = |head: &Head| {
        let now = now();
        let inner = head.lock();
        let input = schedule::snapshot(&inner, &head.config, now);
        (
            beowulf_scheduler::plan(&input, now, &mut rand::rngs::StdRng::seed_from_u64(1)),
            now,
        )
    };
    let (plan, now) = plan_of(&head);
    assert_eq!(plan.starts.len(), 1);
    head.cancel(&ROOT, cancelled).unwrap();
    assert_eq!(head.apply_plan(plan, now).unwrap(), 0);
    assert_eq!(head.show_job(cancelled).unwrap().state, "CANCELLED");
    assert!(last_desired(&mut n1).assignments.is_empty());

    let drained = head
        .submit(&ROOT, job_file("command = [\"sleep\", \"100\"]\n"))
        .unwrap();
    let (plan, now) = plan_of(&head);
    assert_eq!(plan.starts.len(), 1);
    head.drain(&ROOT, &NodeName::new("node1"), "maintenance")
        .unwrap();
    assert_eq!(head.apply_plan(plan, now).unwrap(), 0);
    assert_eq!(head.show_job(drained).unwrap().state, "PENDING");
}

#[test]
fn pending_jobs_carry_the_factors_of_their_priority_and_shares_count_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "[priority]\nage_weight = 1000\nmax_age_ms = 1\nsize_weight = 100\n\
                  fairshare_weight = 500\n";
    let head = Head::open(config_with(dir.path(), policy)).unwrap();
    let _n1 = register(&head, "node1");
    let running = head
        .submit(
            &ROOT,
            job_file("cpus_per_task = 2\naccount = \"physics\"\ncommand = [\"sleep\", \"60\"]\n"),
        )
        .unwrap();
    assert_eq!(pass(&head), 1);
    let chem = head
        .submit(
            &ROOT,
            job_file("account = \"chem\"\ncommand = [\"true\"]\n"),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(pass(&head), 0);
    let shown = head.show_job(chem).unwrap();
    let f = shown
        .priority_factors
        .expect("a pending job has its factors");
    let part = |f: &Option<v1::PriorityFactor>| f.unwrap_or_default();
    let parts = [&f.age, &f.size, &f.fairshare, &f.partition, &f.qos];
    assert_eq!(
        parts.iter().map(|p| part(p).weighted).sum::<u64>(),
        shown.priority,
        "{f:?}"
    );
    assert_eq!(part(&f.age).millionths, 1_000_000);
    assert_eq!(part(&f.size).millionths, 500_000);
    // The fair-share factor is the table's: the only user used everything (2^-1), chem nothing
    // of the accounts' usage (1.0).
    let table = head.shares();
    assert!(table.users["root"].usage > 0.0, "{table:?}");
    assert!(table.accounts["physics"].usage > 0.0, "{table:?}");
    assert_eq!(table.accounts["chem"].usage, 0.0);
    assert_eq!(table.of("root", "chem"), 0.75);
    assert_eq!(part(&f.fairshare).millionths, 750_000);
    // Running jobs have none.
    assert_eq!(head.show_job(running).unwrap().priority_factors, None);
}

#[test]
fn an_allocation_holds_its_nodes_takes_steps_only_from_its_user_and_ends_with_its_command() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let mut n2 = register(&head, "node2");
    let alice = Caller {
        uid: 1000,
        gid: 1000,
    };
    let bob = Caller {
        uid: 1001,
        gid: 1001,
    };
    let id = head
        .submit(&alice, job_file("nodes = 2\nallocation = true\n"))
        .unwrap();
    // Not running yet: no step.
    assert!(matches!(
        head.step_target(&alice, id),
        Err(HeadError::Conflict(_))
    ));
    assert_eq!(pass(&head), 1);
    // Its nodes hold it and run nothing of it; they get the credential steps need.
    for rx in [&mut n1, &mut n2] {
        let desired = last_desired(rx);
        let a = &desired.assignments[0];
        assert_eq!((a.local_tasks, a.argv.is_empty()), (0, true), "{a:?}");
        assert!(a.steps.as_ref().is_some_and(|s| !s.token.is_empty()));
    }
    let target = head.step_target(&alice, id).unwrap();
    assert_eq!(target.node.as_str(), "node1");
    assert_eq!(target.endpoint, "127.0.0.1:75");
    assert_eq!(target.run.job, id);
    assert!(matches!(
        head.step_target(&bob, id),
        Err(HeadError::PermissionDenied(_))
    ));
    assert!(head.step_target(&ROOT, id).is_ok());
    // A node reporting the taskless run finished does not end it: its user does.
    head.run_report(&NodeName::new("node1"), &finished(id.0, 1, 0))
        .unwrap();
    assert_eq!(head.show_job(id).unwrap().state, "RUNNING");
    assert!(matches!(
        head.end_allocation(&bob, id, 0),
        Err(HeadError::PermissionDenied(_))
    ));
    assert_eq!(
        head.end_allocation(&alice, id, 3).unwrap(),
        JobState::Failed
    );
    let info = head.show_job(id).unwrap();
    assert_eq!((info.state.as_str(), info.exit_code), ("FAILED", Some(3)));
    assert!(matches!(
        head.step_target(&alice, id),
        Err(HeadError::Conflict(_))
    ));

    // A job with its own command is not an allocation, and takes no steps from outside.
    let command = head
        .submit(&alice, job_file("command = [\"sleep\", \"9\"]\n"))
        .unwrap();
    pass(&head);
    assert!(matches!(
        head.end_allocation(&alice, command, 0),
        Err(HeadError::Conflict(_))
    ));
    assert!(matches!(
        head.step_target(&alice, command),
        Err(HeadError::Conflict(_))
    ));
    // An allocation given up before it started is cancelled.
    let waiting = head
        .submit(&alice, job_file("nodes = 2\nallocation = true\n"))
        .unwrap();
    assert_eq!(
        head.end_allocation(&alice, waiting, 1).unwrap(),
        JobState::Cancelled
    );
}

#[test]
fn what_no_node_could_ever_give_is_refused_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let refused = |text: &str| match head.submit(&ROOT, job_file(text)) {
        Err(HeadError::JobFile(e)) => e,
        other => panic!("not refused: {other:?}"),
    };
    let feature = refused("constraint = \"bigmem\"\ncommand = [\"true\"]\n");
    assert_eq!(feature.field.as_deref(), Some("constraint"), "{feature}");
    assert!(
        feature
            .message
            .contains("requested node configuration is not available"),
        "{feature}"
    );
    let gpu = refused("gres = \"gpu:1\"\ncommand = [\"true\"]\n");
    assert_eq!(gpu.field.as_deref(), Some("gres"), "{gpu}");
    assert!(gpu.message.contains("most on one node: 0"), "{gpu}");
    assert!(head.list_jobs_page(true, JobId(0), 10).0.is_empty());
}
