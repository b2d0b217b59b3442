//! The scale benchmark: one full scheduling pass over a large cluster and queue (10,000 nodes and
//! 100,000 pending jobs by default), built as simulator state and handed to the scheduler through the
//! same snapshot as every simulated pass, then timed at the sim's edge.

use crate::allocation::Allocation;
use crate::cluster::Cluster;
use crate::error::SimError;
use crate::job::{Job, MEMORY_PER_CPU_MB};
use crate::policy::{PassRunner, Policy};
use crate::snapshot;
use beowulf_scheduler::{NodeAvailability, SchedulerInput};
use beowulf_types::{JobId, Resources, Timestamp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// The pass happens at this virtual time (jobs were submitted up to a week before).
const NOW: Timestamp = Timestamp(1_000_000_000_000);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BigPassConfig {
    pub nodes: u32,
    pub cpus: u32,
    pub jobs: usize,
    /// Share of nodes that run a job holding 1..=cpus CPUs (Up, Drain and Down nodes alike).
    pub busy_share: f64,
    pub seed: u64,
    pub check: bool,
}

impl Default for BigPassConfig {
    fn default() -> Self {
        BigPassConfig {
            nodes: 10_000,
            cpus: 64,
            jobs: 100_000,
            busy_share: 0.5,
            seed: 1,
            check: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigPassResult {
    pub nodes: usize,
    pub running: usize,
    pub pending: usize,
    pub starts: usize,
    pub waiting: usize,
    /// Wall-clock time of the one `plan` call.
    pub plan_time: Duration,
    /// Wall-clock time of `invariants::check` on it (zero when not checked).
    pub check_time: Duration,
}

/// Builds the state and runs one EASY pass over all of it ([`build`], then [`pass`]).
pub fn run(config: &BigPassConfig) -> Result<BigPassResult, SimError> {
    pass(&build(config), config)
}

/// The scheduler input for `config`: nodes (1 in 50 drained, 1 in 50 down), running jobs on a share
/// of them, and the pending queue, built as simulator state and turned into a snapshot.
pub fn build(config: &BigPassConfig) -> SchedulerInput {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut cluster = Cluster::uniform(config.nodes, config.cpus);
    // One node in 50 drained, one in 50 down, as in the scheduler's own scale test.
    for (i, node) in cluster.nodes.values_mut().enumerate() {
        node.availability = match i % 50 {
            0 => NodeAvailability::Drain,
            1 => NodeAvailability::Down,
            _ => NodeAvailability::Up,
        };
    }
    let mut running = Vec::new();
    for (i, name) in cluster.nodes.keys().enumerate() {
        if rng.random_bool(config.busy_share.clamp(0.0, 1.0)) {
            let cpus = rng.random_range(1..=config.cpus.max(1));
            running.push(Allocation {
                job: JobId(10_000_000 + i as u64),
                nodes: vec![name.clone()],
                per_node: resources(cpus),
                start: Timestamp(NOW.0 - rng.random_range(0..3_600_000)),
                expected_end: NOW.plus(rng.random_range(1..3_600_000)),
            });
        }
    }
    let widths = [1, 1, 1, 2, 4, 16, 64];
    let sizes = [1, 2, 4, 8, 16, 32, 64];
    let pending: Vec<Job> = (0..config.jobs as u64)
        .map(|id| {
            let time_limit = rng.random_range(60_000..86_400_000);
            Job {
                id: JobId(id),
                submit: Timestamp(NOW.0 - rng.random_range(0..7 * 24 * 3_600_000)),
                nodes: widths[rng.random_range(0..widths.len())],
                per_node: resources(sizes[rng.random_range(0..sizes.len())].min(config.cpus)),
                runtime: time_limit,
                time_limit,
                requeue: false,
            }
        })
        .collect();
    snapshot::input(&cluster, &running, &pending)
}

/// One timed EASY pass over `input` (and, with `config.check`, the invariant check of its plan).
pub fn pass(input: &SchedulerInput, config: &BigPassConfig) -> Result<BigPassResult, SimError> {
    let mut runner = PassRunner::new(Policy::Easy, config.check, config.seed);
    let plan = runner.call(input, NOW)?;
    Ok(BigPassResult {
        nodes: input.nodes.len(),
        running: input.running.len(),
        pending: input.pending.len(),
        starts: plan.starts.len(),
        waiting: plan.pending.len(),
        plan_time: runner.stats.plan_time,
        check_time: runner.stats.check_time,
    })
}

fn resources(cpus: u32) -> Resources {
    Resources::new(cpus, u64::from(cpus) * MEMORY_PER_CPU_MB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_big_pass_accounts_for_every_job_and_passes_the_checker() {
        let config = BigPassConfig {
            nodes: 200,
            jobs: 2_000,
            ..BigPassConfig::default()
        };
        let result = run(&config).unwrap();
        assert_eq!(result.nodes, 200);
        assert_eq!(result.pending, 2_000);
        assert_eq!(result.starts + result.waiting, 2_000);
        assert!(result.starts > 0 && result.waiting > 0, "{result:?}");
        assert!(result.running > 50 && result.running < 150, "{result:?}");
    }
}
