//! The invariant checker itself must fail on broken plans, or the property tests prove nothing.

mod common;

use beowulf_scheduler::{Pending, Plan, SchedulerInput, Start, invariants};
use beowulf_types::{JobId, PendingReason, Resources, Timestamp};
use common::*;

const NOW: u64 = 1_000_000;

/// n1 and n2 with 4 CPUs; job 100 holds all of n1 until NOW + 5000; job 1 wants both nodes whole;
/// job 2 is a small long job.
fn scene() -> (SchedulerInput, Plan) {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, Drain)]);
    input.running = vec![running(100, &["n1"], 4, NOW + 5000)];
    input.pending = vec![pending(1, 0, 2, 4, 10_000), pending(2, 10, 1, 2, 100_000)];
    let plan = checked_plan(&input, NOW);
    assert_eq!(waiting(&plan, 2).reason, PendingReason::Priority);
    (input, plan)
}

fn start(job: u64, nodes: &[&str], cpus: u32) -> Start {
    Start {
        job: JobId(job),
        nodes: nodes.iter().map(|n| name(n)).collect(),
        per_node: Resources::new(cpus, JOB_MEMORY_MB),
        priority: 0,
    }
}

fn expect_error(input: &SchedulerInput, plan: &Plan, needle: &str) {
    match invariants::check(input, Timestamp(NOW), plan) {
        Ok(()) => panic!("checker accepted a broken plan: {plan:#?}"),
        Err(problem) => assert!(problem.contains(needle), "{problem}"),
    }
}

#[test]
fn rejects_a_start_that_delays_the_top_job() {
    let (input, mut plan) = scene();
    plan.pending.remove(&JobId(2));
    plan.starts.push(start(2, &["n2"], 2));
    expect_error(&input, &plan, "delays top job 1");
}

#[test]
fn rejects_an_estimate_earlier_or_later_than_possible() {
    let (input, mut plan) = scene();
    for (estimate, needle) in [
        (NOW + 4999, "delays top job"),
        (NOW + 5001, "could start before"),
    ] {
        plan.pending.get_mut(&JobId(1)).unwrap().estimated_start = Some(Timestamp(estimate));
        expect_error(&input, &plan, needle);
    }
}

#[test]
fn rejects_oversubscription_and_unavailable_or_wrong_nodes() {
    let (input, plan) = scene();
    let cases = [
        (start(2, &["n1"], 2), "oversubscribed"),
        (start(2, &["n3"], 2), "Drain"),
        (start(2, &["n9"], 2), "unknown node"),
        (start(2, &["n2", "n2"], 2), "asked for 1 nodes"),
        (start(2, &["n2"], 1), "per node"),
    ];
    for (bad, needle) in cases {
        let mut plan = plan.clone();
        plan.pending.remove(&JobId(2));
        plan.starts.push(bad);
        expect_error(&input, &plan, needle);
    }
}

#[test]
fn rejects_jobs_missing_doubled_or_unknown() {
    let (input, plan) = scene();
    let mut missing = plan.clone();
    missing.pending.remove(&JobId(2));
    expect_error(&input, &missing, "neither starts");

    let mut doubled = plan.clone();
    doubled.starts.push(start(2, &["n2"], 2));
    expect_error(&input, &doubled, "both starts and waits");

    let mut unknown = plan.clone();
    let entry = plan.pending[&JobId(2)].clone();
    unknown.pending.insert(JobId(77), entry);
    expect_error(&input, &unknown, "not pending");
}

#[test]
fn rejects_reasons_that_do_not_match_the_cluster() {
    let (input, plan) = scene();
    for (job, reason) in [
        (1, PendingReason::PartitionConfig),
        (1, PendingReason::ReqNodeNotAvail),
        (2, PendingReason::Resources),
        (1, PendingReason::None),
    ] {
        let mut plan = plan.clone();
        plan.pending.insert(
            JobId(job),
            Pending {
                reason,
                ..plan.pending[&JobId(job)].clone()
            },
        );
        expect_error(&input, &plan, "waits with reason");
    }
}
