//! Scenario tests of the placement options a Slurm user gives sbatch: `--nodelist` (the job gets
//! every listed node), `--exclude` (never those), `--exclusive` (no sharing either way) and
//! `--begin` (not eligible before), each observed in the plan: where jobs start, why the others
//! wait, and that backfill keeps to them.

mod common;

use beowulf_scheduler::{Blocker, NodeLack, Partition, why};
use beowulf_types::{NodeName, PendingReason, Timestamp};
use common::*;
use std::collections::{BTreeMap, BTreeSet};

const NOW: u64 = 1_000_000;

fn nodes(items: &[&str]) -> BTreeSet<NodeName> {
    items.iter().map(|s| name(s)).collect()
}

#[test]
fn a_node_list_gives_the_job_every_listed_node_and_best_fit_for_the_rest() {
    // n1 is the tightest fit, so without a list a 1-node job lands there.
    let mut input = input(&[("n1", 2, Up), ("n2", 8, Up), ("n3", 8, Up), ("n4", 8, Up)]);
    let mut listed = pending(1, 0, 1, 1, 1000);
    listed.required_nodes = nodes(&["n3"]);
    let mut more = pending(2, 10, 2, 1, 1000);
    more.required_nodes = nodes(&["n4"]);
    input.pending = vec![listed, more];
    let plan = checked_plan(&input, NOW);
    assert_eq!(nodes_of(&plan, 1), ["n3"]);
    // Its listed node, and the best fit of the others for the second node.
    assert_eq!(nodes_of(&plan, 2), ["n1", "n4"]);
}

#[test]
fn a_job_whose_listed_node_is_busy_waits_for_it_even_with_other_nodes_free() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, Up)]);
    input.running = vec![running(100, &["n2"], 4, NOW + 5000)];
    let mut listed = pending(1, 0, 1, 1, 1000);
    listed.required_nodes = nodes(&["n2"]);
    // A later job that fits elsewhere and ends after n2 frees: backfill may start it, but never
    // on n2 beyond the shadow time.
    let long = pending(2, 10, 1, 4, 10_000);
    input.pending = vec![listed, long];
    let plan = checked_plan(&input, NOW);
    let wait = waiting(&plan, 1);
    assert_eq!(wait.reason, PendingReason::Resources);
    assert_eq!(wait.estimated_start, Some(Timestamp(NOW + 5000)));
    let top = plan.top_job.as_ref().unwrap();
    assert_eq!(
        top.nodes,
        [name("n2")],
        "the reservation is on the listed node"
    );
    assert_eq!(nodes_of(&plan, 2), ["n1"]);
}

#[test]
fn listed_nodes_that_can_never_take_the_job_say_why() {
    let mut input = input(&[
        ("n1", 4, Up),
        ("n2", 4, Drain),
        ("n3", 2, Up),
        ("x1", 4, Up),
    ]);
    input.partitions = BTreeMap::from([(
        "batch".to_string(),
        Partition {
            nodes: nodes(&["n1", "n2", "n3"]),
            default: true,
            ..Default::default()
        },
    )]);
    let with_list = |id: u64, cpus: u32, count: u32, list: &[&str]| {
        let mut job = pending(id, id, count, cpus, 1000);
        job.required_nodes = nodes(list);
        job
    };
    input.pending = vec![
        with_list(1, 1, 1, &["n2"]),       // drained
        with_list(2, 1, 1, &["ghost"]),    // no such node
        with_list(3, 1, 1, &["x1"]),       // outside its partition
        with_list(4, 4, 1, &["n3"]),       // too small
        with_list(5, 1, 1, &["n1", "n3"]), // more listed nodes than it asks for
        with_list(6, 1, 2, &["n1", "n3"]),
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::ReqNodeNotAvail);
    for job in [2, 3, 4, 5] {
        assert_eq!(
            waiting(&plan, job).reason,
            PendingReason::BadConstraints,
            "job {job}"
        );
    }
    assert_eq!(nodes_of(&plan, 6), ["n1", "n3"]);
}

#[test]
fn excluded_nodes_are_never_used_and_excluding_every_node_is_bad_constraints() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 8, Up)]);
    let mut avoid = pending(1, 0, 1, 1, 1000);
    avoid.excluded_nodes = nodes(&["n1", "n2"]);
    let mut two = pending(2, 10, 2, 1, 1000);
    two.excluded_nodes = nodes(&["n3"]);
    let mut none_left = pending(3, 20, 2, 1, 1000);
    none_left.excluded_nodes = nodes(&["n1", "n2"]);
    input.pending = vec![avoid, two, none_left];
    let plan = checked_plan(&input, NOW);
    assert_eq!(nodes_of(&plan, 1), ["n3"], "best fit would take n1");
    assert_eq!(nodes_of(&plan, 2), ["n1", "n2"]);
    assert_eq!(waiting(&plan, 3).reason, PendingReason::BadConstraints);
    let explanation = why(&input, Timestamp(NOW), beowulf_types::JobId(3));
    assert!(
        explanation.blockers.contains(&Blocker::Nodes {
            lack: NodeLack::Excluded,
            nodes: vec![name("n1"), name("n2")],
        }),
        "{explanation:#?}"
    );
}

#[test]
fn an_exclusive_job_takes_only_empty_nodes_and_keeps_others_off_them() {
    let mut input = input(&[("n1", 8, Up), ("n2", 8, Up)]);
    // Queue order by age alone: the bigger job must not pass the exclusive one.
    input.weights.size_weight = 0;
    input.running = vec![running(100, &["n1"], 2, NOW + 5000)];
    let mut alone = pending(1, 0, 1, 1, 1000);
    alone.exclusive = true;
    // Fits only on n2 beside the exclusive job (n1 has 6 free CPUs): it must not go there.
    let big = pending(2, 10, 1, 7, 1000);
    input.pending = vec![alone, big];
    let plan = checked_plan(&input, NOW);
    assert_eq!(
        nodes_of(&plan, 1),
        ["n2"],
        "n1 runs a job, though best fit would choose it"
    );
    let wait = waiting(&plan, 2);
    assert_eq!(wait.reason, PendingReason::Resources);
    assert_eq!(
        wait.estimated_start,
        Some(Timestamp(NOW + 1000)),
        "n2 is free of the exclusive job once it ends"
    );
    // And the same as a running job: nothing joins a node an exclusive job holds.
    let mut held = input.clone();
    held.running.push(beowulf_scheduler::RunningJob {
        exclusive: true,
        ..running(101, &["n2"], 1, NOW + 3000)
    });
    held.pending = vec![pending(3, 0, 1, 1, 1000)];
    let plan = checked_plan(&held, NOW);
    assert_eq!(nodes_of(&plan, 3), ["n1"]);
    held.running[0].allocation =
        BTreeMap::from([(name("n1"), beowulf_types::Resources::new(8, 1))]);
    let plan = checked_plan(&held, NOW);
    assert_eq!(waiting(&plan, 3).reason, PendingReason::Resources);
    assert_eq!(
        waiting(&plan, 3).estimated_start,
        Some(Timestamp(NOW + 3000)),
        "the exclusive job's node frees first"
    );
    let explanation = why(&held, Timestamp(NOW), beowulf_types::JobId(3));
    assert!(
        explanation.blockers.contains(&Blocker::Nodes {
            lack: NodeLack::HeldExclusively,
            nodes: vec![name("n2")],
        }),
        "{explanation:#?}"
    );
}

#[test]
fn backfill_keeps_an_exclusive_top_job_s_nodes_empty_from_its_start() {
    // One node, busy until NOW + 5000: the exclusive job is the top job with its reservation there.
    let mut input = input(&[("n1", 8, Up)]);
    input.running = vec![running(100, &["n1"], 1, NOW + 5000)];
    let mut alone = pending(1, 0, 1, 1, 1000);
    alone.exclusive = true;
    // Ends before the shadow time: may run now beside the running job.
    let short = pending(2, 10, 1, 1, 4000);
    // Would still run at the shadow time: a non-exclusive top job would share its spare CPUs with
    // it, an exclusive one must not.
    let long = pending(3, 20, 1, 1, 10_000);
    input.pending = vec![alone, short, long];
    let plan = checked_plan(&input, NOW);
    assert_eq!(plan.top_job.as_ref().map(|t| t.job.0), Some(1));
    assert_eq!(started(&plan), [2]);
    assert_eq!(waiting(&plan, 3).reason, PendingReason::Priority);
    // The same queue without --exclusive backfills the long job into the spare CPUs.
    input.pending[0].exclusive = false;
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), [1, 2, 3]);
}

#[test]
fn a_job_before_its_begin_time_waits_with_begin_time_and_holds_no_reservation() {
    let mut input = input(&[("n1", 4, Up)]);
    input.running = vec![running(100, &["n1"], 2, NOW + 5000)];
    // The oldest job, but not eligible for another minute: it must not block the others.
    let mut later = pending(1, 0, 1, 4, 1000);
    later.begin = Some(Timestamp(NOW + 60_000));
    let now_job = pending(2, 10, 1, 2, 100_000);
    input.pending = vec![later.clone(), now_job];
    let plan = checked_plan(&input, NOW);
    let wait = waiting(&plan, 1);
    assert_eq!(wait.reason, PendingReason::BeginTime);
    assert_eq!(wait.estimated_start, Some(Timestamp(NOW + 60_000)));
    assert_eq!(
        started(&plan),
        [2],
        "no reservation for a job not yet eligible"
    );
    assert!(plan.top_job.is_none());
    let text = why(&input, Timestamp(NOW), beowulf_types::JobId(1)).to_string();
    assert!(text.contains("BeginTime"), "{text}");
    assert!(
        text.contains("Not eligible before its begin time"),
        "{text}"
    );
    // From its begin time on it is an ordinary job.
    input.running.clear();
    input.pending = vec![later];
    assert_eq!(started(&checked_plan(&input, NOW + 60_000)), [1]);
}
