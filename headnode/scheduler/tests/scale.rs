//! Scale check: 10,000 nodes and 100,000 pending jobs. Ignored by default (it wants a release build):
//! `cargo test -p beowulf-scheduler --release --test scale -- --ignored --nocapture`.

use beowulf_scheduler::{
    NodeAvailability, NodeView, PendingJob, PriorityWeights, RunningJob, SchedulerInput,
    invariants, plan,
};
use beowulf_types::{JobId, NodeName, Resources, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

const NOW: u64 = 1_000_000_000;

fn big_cluster(busy_share: f64) -> SchedulerInput {
    let mut rng = StdRng::seed_from_u64(1);
    let nodes: BTreeMap<NodeName, NodeView> = (0..10_000)
        .map(|i| {
            let availability = match i % 50 {
                0 => NodeAvailability::Drain,
                1 => NodeAvailability::Down,
                _ => NodeAvailability::Up,
            };
            (
                NodeName::new(format!("node{i:05}")),
                NodeView {
                    capacity: Resources::new(64, 256 * 1024),
                    availability,
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut running = Vec::new();
    for (i, name) in nodes.keys().enumerate() {
        if rng.random_bool(busy_share) {
            let cpus = rng.random_range(1..=64);
            running.push(RunningJob {
                id: JobId(10_000_000 + i as u64),
                allocation: BTreeMap::from([(name.clone(), Resources::new(cpus, 1024))]),
                expected_end: Timestamp(NOW + rng.random_range(1..3_600_000)),
                ..Default::default()
            });
        }
    }
    let pending = (0..100_000u64)
        .map(|id| PendingJob {
            id: JobId(id),
            // Up to a week old, so age and size both matter under the default weights.
            submitted: Timestamp(NOW - rng.random_range(0..7 * 24 * 3_600_000)),
            nodes: [1, 1, 1, 2, 4, 16, 64][rng.random_range(0..7)],
            per_node: Resources::new([1, 2, 4, 8, 16, 32, 64][rng.random_range(0..7)], 2048),
            time_limit: rng.random_range(60_000..86_400_000),
            ..Default::default()
        })
        .collect();
    SchedulerInput {
        nodes,
        running,
        pending,
        weights: PriorityWeights::default(),
        ..Default::default()
    }
}

#[test]
#[ignore = "slow in debug builds; run with --release"]
#[expect(
    clippy::disallowed_methods,
    reason = "the test times the scheduler; the scheduler itself reads no clock"
)]
fn ten_thousand_nodes_and_a_hundred_thousand_jobs() {
    for busy_share in [0.0, 0.5, 1.0] {
        let input = big_cluster(busy_share);
        let started = Instant::now();
        let plan = plan(&input, Timestamp(NOW), &mut StdRng::seed_from_u64(2));
        let elapsed = started.elapsed();
        println!(
            "busy {busy_share}: {} starts, {} pending in {elapsed:?}",
            plan.starts.len(),
            plan.pending.len()
        );
        let checked = Instant::now();
        if let Err(problem) = invariants::check(&input, Timestamp(NOW), &plan) {
            panic!("busy {busy_share}: {problem}");
        }
        println!("  checked in {:?}", checked.elapsed());
    }
}
