//! Scenario tests of one scheduling pass: ordering, unavailable nodes, the top job's reservation and
//! EASY backfill around it.

mod common;

use beowulf_scheduler::{NodeAvailability, PriorityWeights, SchedulerInput, Start};
use beowulf_types::{JobId, NodeName, PendingReason, Resources};
use common::*;

const NOW: u64 = 1_000_000;

#[test]
fn equal_jobs_start_oldest_first() {
    let mut input = input(&[("n1", 1, Up), ("n2", 1, Up)]);
    // IDs deliberately out of submission order.
    input.pending = vec![
        pending(1, NOW - 100, 1, 1, 1000),
        pending(2, NOW - 300, 1, 1, 1000),
        pending(3, NOW - 200, 1, 1, 1000),
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2, 3]);
    let youngest = waiting(&plan, 1);
    assert_eq!(youngest.reason, PendingReason::Resources);
    assert_eq!(youngest.estimated_start.map(|t| t.0), Some(NOW + 1000));
    assert!(plan.starts[0].priority > plan.starts[1].priority);
    assert!(plan.starts[1].priority > youngest.priority);
}

#[test]
fn same_age_ties_go_to_the_lower_job_id_and_bigger_jobs_go_first() {
    let mut input = input(&[("n1", 4, Up)]);
    input.pending = vec![
        pending(5, NOW - 10, 1, 1, 1000),
        pending(4, NOW - 10, 1, 1, 1000),
        pending(6, NOW - 10, 1, 2, 1000),
    ];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![6, 4, 5]);
}

#[test]
fn age_outweighs_size_with_default_weights() {
    let mut input = input(&[("n1", 4, Up)]);
    input.weights = PriorityWeights::default();
    // Two days older beats asking for the whole cluster (size weight is a tenth of age weight).
    let now = 2 * 24 * 60 * 60 * 1000;
    input.pending = vec![pending(1, now, 1, 4, 1000), pending(2, 0, 1, 1, 1000)];
    let plan = checked_plan(&input, now);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
}

#[test]
fn job_that_needs_drained_or_down_nodes_gets_req_node_not_avail() {
    for unavailable in [Drain, Down] {
        let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, unavailable)]);
        input.pending = vec![pending(1, 0, 3, 2, 1000), pending(2, 10, 1, 2, 1000)];
        let plan = checked_plan(&input, NOW);
        let big = waiting(&plan, 1);
        assert_eq!(big.reason, PendingReason::ReqNodeNotAvail);
        assert_eq!(big.estimated_start, None);
        // It holds no reservation: the younger job still starts.
        assert_eq!(started(&plan), vec![2]);
    }
}

#[test]
fn job_larger_than_the_whole_cluster_gets_partition_config() {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up), ("n3", 4, Drain)]);
    input.pending = vec![
        pending(1, 0, 4, 1, 1000),  // more nodes than exist
        pending(2, 0, 1, 5, 1000),  // more CPUs than any node has
        pending(3, 0, 0, 1, 1000),  // zero nodes: no partition serves it
        pending(4, 10, 2, 4, 1000), // fits
    ];
    let plan = checked_plan(&input, NOW);
    for job in [1, 2, 3] {
        assert_eq!(waiting(&plan, job).reason, PendingReason::PartitionConfig);
        assert_eq!(waiting(&plan, job).estimated_start, None);
    }
    assert_eq!(started(&plan), vec![4]);
}

#[test]
fn drained_and_down_nodes_never_receive_starts() {
    // The unavailable nodes are the tightest fit, so best fit would pick them if it could.
    let mut input = input(&[("a-drain", 1, Drain), ("b-down", 1, Down), ("c-up", 8, Up)]);
    input.pending = (1..=10).map(|id| pending(id, id, 1, 1, 1000)).collect();
    let plan = checked_plan(&input, NOW);
    assert_eq!(plan.starts.len(), 8);
    assert!(plan.starts.iter().all(|s| s.nodes == vec![name("c-up")]));
    assert_eq!(waiting(&plan, 9).reason, PendingReason::Resources);
    assert_eq!(waiting(&plan, 10).reason, PendingReason::Resources);
}

/// n1 and n2 have 4 CPUs; job 100 holds all of n1 until NOW + 5000; job 1 wants both nodes whole.
fn top_job_waiting_for_n1() -> SchedulerInput {
    let mut input = input(&[("n1", 4, Up), ("n2", 4, Up)]);
    input.running = vec![running(100, &["n1"], 4, NOW + 5000)];
    input.pending = vec![pending(1, 0, 2, 4, 10_000)];
    input
}

#[test]
fn top_job_waits_for_the_running_job_it_needs_to_end() {
    let plan = checked_plan(&top_job_waiting_for_n1(), NOW);
    assert!(plan.starts.is_empty());
    let top = waiting(&plan, 1);
    assert_eq!(top.reason, PendingReason::Resources);
    assert_eq!(top.estimated_start.map(|t| t.0), Some(NOW + 5000));
}

#[test]
fn short_job_backfills_when_it_ends_by_the_shadow_time() {
    let mut input = top_job_waiting_for_n1();
    // Ends at NOW + 3000, and one ending exactly at the shadow time, NOW + 5000.
    input.pending.push(pending(2, 10, 1, 2, 3000));
    input.pending.push(pending(3, 20, 1, 2, 5000));
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2, 3]);
    assert_eq!(nodes_of(&plan, 2), vec!["n2"]);
    assert_eq!(
        waiting(&plan, 1).estimated_start.map(|t| t.0),
        Some(NOW + 5000)
    );
}

#[test]
fn long_job_on_the_reserved_node_does_not_backfill() {
    let mut input = top_job_waiting_for_n1();
    input.pending.push(pending(2, 10, 1, 2, 5001));
    let plan = checked_plan(&input, NOW);
    assert!(plan.starts.is_empty());
    assert_eq!(waiting(&plan, 2).reason, PendingReason::Priority);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
}

/// n1 (8 CPUs) has 2 free until NOW + 5000; job 1 wants 8 CPUs on one node, so it reserves n1.
fn top_job_reserving_n1(other: Option<(u32, NodeAvailability)>) -> SchedulerInput {
    let mut nodes = vec![("n1", 8, Up)];
    if let Some((cpus, availability)) = other {
        nodes.push(("n2", cpus, availability));
    }
    let mut input = input(&nodes);
    input.running = vec![running(100, &["n1"], 6, NOW + 5000)];
    input.pending = vec![pending(1, 0, 1, 8, 10_000)];
    input
}

#[test]
fn long_job_backfills_on_a_node_the_reservation_does_not_need() {
    // Best fit alone would put the 2-CPU job on n1 (0 left, against 2 left on n2).
    let mut input = top_job_reserving_n1(Some((4, Up)));
    input.pending.push(pending(2, 10, 1, 2, 1_000_000));
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(nodes_of(&plan, 2), vec!["n2"]);
    assert_eq!(
        waiting(&plan, 1).estimated_start.map(|t| t.0),
        Some(NOW + 5000)
    );
}

#[test]
fn long_job_waits_with_priority_when_only_reserved_resources_fit() {
    for other in [None, Some((4, Down)), Some((4, Drain)), Some((1, Up))] {
        let mut input = top_job_reserving_n1(other);
        input.pending.push(pending(2, 10, 1, 2, 1_000_000));
        let plan = checked_plan(&input, NOW);
        assert!(plan.starts.is_empty(), "{other:?}: {plan:#?}");
        assert_eq!(
            waiting(&plan, 2).reason,
            PendingReason::Priority,
            "{other:?}"
        );
    }
}

#[test]
fn long_job_may_use_what_the_reservation_leaves_over_on_its_node() {
    // n1 has 8 CPUs; the top job needs 6 of them at the shadow time, so 2 are spare for long jobs.
    for (held_now, expect_started) in [(6, vec![2, 3]), (5, vec![2, 3])] {
        let mut input = input(&[("n1", 8, Up)]);
        input.running = vec![running(100, &["n1"], held_now, NOW + 5000)];
        input.pending = vec![
            pending(1, 0, 1, 6, 10_000),
            pending(2, 10, 1, 1, 1_000_000),
            pending(3, 20, 1, 1, 1_000_000),
            pending(4, 30, 1, 1, 1_000_000),
        ];
        let plan = checked_plan(&input, NOW);
        assert_eq!(started(&plan), expect_started, "{held_now} held");
        assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
        // With 5 held, one CPU is still free now, but it is not spare at the shadow time.
        let expected = if held_now == 5 {
            PendingReason::Priority
        } else {
            PendingReason::Resources
        };
        assert_eq!(waiting(&plan, 4).reason, expected, "{held_now} held");
    }
}

#[test]
fn job_that_cannot_fit_now_behind_the_top_job_waits_for_resources() {
    let mut input = top_job_waiting_for_n1();
    input.pending.push(pending(2, 10, 2, 1, 100));
    let plan = checked_plan(&input, NOW);
    assert_eq!(waiting(&plan, 2).reason, PendingReason::Resources);
    assert_eq!(waiting(&plan, 2).estimated_start, None);
}

#[test]
fn top_job_estimate_counts_jobs_started_earlier_in_the_pass() {
    let mut input = top_job_waiting_for_n1();
    // Older than the top job, 1 node x 4 CPUs for 8 s: it takes n2 now and delays the top job.
    input.pending.push(pending(2, 0, 1, 4, 8000));
    input.pending[0].submitted = beowulf_types::Timestamp(10);
    input.weights.size_weight = 0;
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(
        waiting(&plan, 1).estimated_start.map(|t| t.0),
        Some(NOW + 8000)
    );
}

#[test]
fn overdue_running_job_may_end_any_moment() {
    let mut input = top_job_waiting_for_n1();
    input.running[0].expected_end = beowulf_types::Timestamp(NOW - 1);
    let plan = checked_plan(&input, NOW);
    assert!(plan.starts.is_empty());
    assert_eq!(waiting(&plan, 1).estimated_start.map(|t| t.0), Some(NOW));
}

#[test]
fn zero_cpu_jobs_still_start_on_a_cluster_without_free_cpus() {
    let mut input = input(&[("n1", 2, Up)]);
    input.running = vec![running(100, &["n1"], 2, NOW + 5000)];
    input.pending = vec![pending(1, 0, 1, 1, 1000), pending(2, 10, 1, 0, 1000)];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![2]);
    assert_eq!(waiting(&plan, 1).reason, PendingReason::Resources);
}

#[test]
fn multi_node_start_lists_its_nodes_sorted_and_best_fit() {
    let mut input = input(&[("n1", 8, Up), ("n2", 2, Up), ("n3", 4, Up), ("n4", 2, Up)]);
    input.pending = vec![pending(1, 0, 2, 2, 1000)];
    let plan = checked_plan(&input, NOW);
    assert_eq!(
        plan.starts,
        vec![Start {
            job: JobId(1),
            nodes: vec![NodeName::new("n2"), NodeName::new("n4")],
            per_node: Resources::new(2, JOB_MEMORY_MB),
            priority: plan.starts[0].priority,
        }]
    );
}

#[test]
fn duplicate_job_ids_are_planned_once() {
    let mut input = input(&[("n1", 4, Up)]);
    input.pending = vec![pending(1, 0, 1, 1, 1000), pending(1, 0, 1, 1, 1000)];
    let plan = checked_plan(&input, NOW);
    assert_eq!(started(&plan), vec![1]);
    assert!(plan.pending.is_empty());
}
