//! Hold, release, requeue and update driven on the head directly, as `scontrol` would.

use super::*;
use crate::head::tests::{
    ROOT, config, config_with, finished, job_file, last_desired, pass, register,
};
use beowulf_types::NodeName;

const ALICE: Caller = Caller {
    uid: 1000,
    gid: 1000,
};
const BOB: Caller = Caller {
    uid: 1001,
    gid: 1001,
};

fn reason(head: &Head, id: JobId) -> String {
    head.show_job(id).unwrap().reason
}

#[test]
fn a_held_job_waits_with_its_owners_reason_until_released_and_only_its_owner_may() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\nhold = true\n"))
        .unwrap();
    assert_eq!(reason(&head, id), "JobHeldUser", "held at submit");
    assert_eq!(pass(&head), 0);
    assert_eq!(reason(&head, id), "JobHeldUser");
    assert!(matches!(
        head.release(&BOB, id, false),
        Err(HeadError::PermissionDenied(_))
    ));
    assert_eq!(head.release(&ALICE, id, false).unwrap(), [id]);
    // Releasing a job that is not held changes nothing.
    assert_eq!(head.release(&ALICE, id, false).unwrap(), []);
    assert_eq!(pass(&head), 1);
    assert_eq!(head.show_job(id).unwrap().state, "RUNNING");
    // A running job cannot be held.
    let e = head.hold(&ALICE, id, false, false).unwrap_err();
    assert!(matches!(e, HeadError::Conflict(_)), "{e}");
    assert!(
        e.to_string().contains("only a pending job can be held"),
        "{e}"
    );
}

#[test]
fn roots_hold_is_an_admin_hold_only_root_releases() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\n"))
        .unwrap();
    assert_eq!(head.hold(&ROOT, id, false, false).unwrap(), [id]);
    assert_eq!(reason(&head, id), "JobHeldAdmin");
    // The owner's hold does not weaken it, nor may the owner release it.
    head.hold(&ALICE, id, false, false).unwrap();
    assert_eq!(reason(&head, id), "JobHeldAdmin");
    let e = head.release(&ALICE, id, false).unwrap_err();
    assert!(matches!(e, HeadError::PermissionDenied(_)), "{e}");
    assert!(e.to_string().contains("only root may release it"), "{e}");
    head.release(&ROOT, id, false).unwrap();
    assert_eq!(reason(&head, id), "None");
    // uhold: root holds as a user would.
    head.hold(&ROOT, id, false, true).unwrap();
    assert_eq!(reason(&head, id), "JobHeldUser");
    head.release(&ALICE, id, false).unwrap();
    assert!(matches!(
        head.hold(&BOB, id, false, false),
        Err(HeadError::PermissionDenied(_))
    ));
}

#[test]
fn a_hold_survives_a_restart_and_records_from_before_holds_load_unheld() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let head = Head::open(config(dir.path())).unwrap();
        let _n1 = register(&head, "node1");
        let id = head
            .submit(&ALICE, job_file("command = [\"a\"]\n"))
            .unwrap();
        head.hold(&ROOT, id, false, false).unwrap();
        id
    };
    let head = Head::open(config(dir.path())).unwrap();
    assert_eq!(reason(&head, id), "JobHeldAdmin");

    let record = head.read(|inner| inner.jobs[&id].clone());
    let mut stored = serde_json::to_value(&record).unwrap();
    stored.as_object_mut().unwrap().remove("hold");
    stored["spec"].as_object_mut().unwrap().remove("hold");
    let old: JobRecord = serde_json::from_value(stored).unwrap();
    assert_eq!((old.hold, old.spec.hold), (None, false));
}

#[test]
fn an_arrays_id_holds_releases_and_requeues_every_element() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let array = head
        .submit(
            &ALICE,
            job_file("command = [\"a\"]\narray = \"0-2\"\nrequeue = true\n"),
        )
        .unwrap();
    let elements: Vec<JobId> = (0..3).map(|i| JobId(array.0 + i)).collect();
    assert_eq!(head.hold(&ALICE, array, true, false).unwrap(), elements);
    // Without whole_array, the ID is the first element only.
    assert_eq!(head.release(&ALICE, array, false).unwrap(), [array]);
    assert_eq!(head.release(&ALICE, array, true).unwrap(), &elements[1..]);
    // Each element takes one of node1's two CPUs: two run.
    assert_eq!(pass(&head), 2);
    let requeued = head.requeue(&ALICE, array, true).unwrap();
    assert_eq!(requeued.len(), 2);
    for id in requeued {
        let info = head.show_job(id).unwrap();
        assert_eq!((info.state.as_str(), info.restarts), ("PENDING", 1));
    }
}

#[test]
fn a_requeued_job_stops_and_runs_again_with_its_restart_count() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let mut n1 = register(&head, "node1");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\nrequeue = true\n"))
        .unwrap();
    let e = head.requeue(&ALICE, id, false).unwrap_err();
    assert!(
        e.to_string().contains("only a running job can be requeued"),
        "{e}"
    );
    pass(&head);
    assert!(matches!(
        head.requeue(&BOB, id, false),
        Err(HeadError::PermissionDenied(_))
    ));
    assert_eq!(head.requeue(&ALICE, id, false).unwrap(), [id]);
    let info = head.show_job(id).unwrap();
    assert_eq!((info.state.as_str(), info.restarts), ("PENDING", 1));
    // The old run leaves node1's desired state: its agent stops it, as for a cancel.
    assert!(last_desired(&mut n1).assignments.is_empty());
    // It runs again only once the agent reports the old run over (node1 has room for both).
    assert_eq!(pass(&head), 0);
    assert_eq!(reason(&head, id), "Requeued");
    head.run_report(&NodeName::new("node1"), &finished(id.0, 1, 143))
        .unwrap();
    assert_eq!(head.show_job(id).unwrap().state, "PENDING");
    assert_eq!(pass(&head), 1);
    let run = last_desired(&mut n1).assignments.remove(0);
    assert_eq!(run.run, 2);
    assert_eq!(run.env["SLURM_RESTART_COUNT"], "1");
}

#[test]
fn a_job_that_may_not_be_requeued_is_refused_saying_how_to_allow_it() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\n"))
        .unwrap();
    pass(&head);
    let e = head.requeue(&ROOT, id, false).unwrap_err();
    assert!(matches!(e, HeadError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("--requeue"), "{e}");
    assert_eq!(head.show_job(id).unwrap().state, "RUNNING");
    head.cancel(&ALICE, id).unwrap();
    assert!(matches!(
        head.requeue(&ALICE, id, false),
        Err(HeadError::AlreadyEnded { .. })
    ));
}

#[test]
fn updates_change_a_pending_job_and_only_lower_a_running_ones_limit() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let _n2 = register(&head, "node2");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\nhold = true\n"))
        .unwrap();
    let update = JobUpdate {
        time_limit: Some(10 * 60_000),
        name: Some("renamed".into()),
        nodes: Some(2),
        ..JobUpdate::default()
    };
    head.update_job(&ALICE, id, &update).unwrap();
    let info = head.show_job(id).unwrap();
    assert_eq!(
        (
            info.time_limit_ms,
            info.name.as_str(),
            info.num_nodes,
            info.ntasks
        ),
        (600_000, "renamed", 2, 2)
    );
    assert!(
        info.events.last().unwrap().message.contains(
            "updated by uid 1000: JobName=renamed NumNodes=2 NumTasks=2 TimeLimit=10 min"
        ),
        "{:?}",
        info.events
    );
    // More nodes than the cluster has: refused, nothing changed.
    let e = head
        .update_job(
            &ALICE,
            id,
            &JobUpdate {
                nodes: Some(3),
                ..JobUpdate::default()
            },
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("asks for 3 nodes but the cluster has 2"),
        "{e}"
    );
    let e = head
        .update_job(
            &ALICE,
            id,
            &JobUpdate {
                partition: Some("gpu".into()),
                ..JobUpdate::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("no partition `gpu`"), "{e}");
    assert_eq!(head.show_job(id).unwrap().num_nodes, 2);
    assert!(matches!(
        head.update_job(
            &BOB,
            id,
            &JobUpdate {
                name: Some("x".into()),
                ..JobUpdate::default()
            }
        ),
        Err(HeadError::PermissionDenied(_))
    ));
    assert!(matches!(
        head.update_job(&ALICE, id, &JobUpdate::default()),
        Err(HeadError::Invalid(_))
    ));

    head.release(&ALICE, id, false).unwrap();
    pass(&head);
    let running = |limit: u64, nodes: Option<u32>| JobUpdate {
        time_limit: Some(limit),
        nodes,
        ..JobUpdate::default()
    };
    let e = head
        .update_job(&ALICE, id, &running(5 * 60_000, Some(1)))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("NumNodes can change only while it is pending"),
        "{e}"
    );
    let e = head
        .update_job(&ALICE, id, &running(20 * 60_000, None))
        .unwrap_err();
    assert!(matches!(e, HeadError::PermissionDenied(_)), "{e}");
    head.update_job(&ALICE, id, &running(5 * 60_000, None))
        .unwrap();
    head.update_job(&ROOT, id, &running(30 * 60_000, None))
        .unwrap();
    assert_eq!(head.show_job(id).unwrap().time_limit_ms, 30 * 60_000);
}

#[test]
fn a_user_may_not_set_a_time_limit_over_the_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let partitions = "[[partition]]\nname = \"short\"\ndefault = true\nmax_time = \"00:30:00\"\n";
    let head = Head::open(config_with(dir.path(), partitions)).unwrap();
    let _n1 = register(&head, "node1");
    let id = head
        .submit(
            &ALICE,
            job_file("command = [\"a\"]\ntime_limit = 10\nhold = true\n"),
        )
        .unwrap();
    let hour = JobUpdate {
        time_limit: Some(60 * 60_000),
        ..JobUpdate::default()
    };
    let e = head.update_job(&ALICE, id, &hour).unwrap_err();
    assert!(
        e.to_string()
            .contains("longer than partition short's limit of 30 min"),
        "{e}"
    );
    head.update_job(&ROOT, id, &hour).unwrap();
    assert_eq!(head.show_job(id).unwrap().time_limit_ms, 60 * 60_000);
}

#[test]
fn the_scheduler_does_not_start_a_held_job_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(config(dir.path())).unwrap();
    let _n1 = register(&head, "node1");
    let id = head
        .submit(&ALICE, job_file("command = [\"a\"]\n"))
        .unwrap();
    head.hold(&ALICE, id, false, false).unwrap();
    assert_eq!(pass(&head), 0);
    let why = head.why(id).unwrap();
    assert_eq!(why.reason, Some(beowulf_types::PendingReason::JobHeldUser));
}
