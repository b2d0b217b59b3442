//! Builders shared by the scheduler's integration tests: small clusters, jobs and a checked `plan` call.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use beowulf_scheduler::{
    NodeAvailability, NodeView, PendingJob, Plan, PriorityWeights, RunningJob, SchedulerInput,
    invariants, plan,
};
use beowulf_types::{JobId, NodeName, Resources, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;

pub use NodeAvailability::{Down, Drain, Up};

/// Memory every node has in the scenarios, so CPUs decide.
pub const NODE_MEMORY_MB: u64 = 16 * 1024;
/// Memory every scenario job asks for per node.
pub const JOB_MEMORY_MB: u64 = 256;

pub fn name(name: &str) -> NodeName {
    NodeName::new(name)
}

/// Nodes as (name, CPUs, availability), all with [`NODE_MEMORY_MB`].
pub fn input(nodes: &[(&str, u32, NodeAvailability)]) -> SchedulerInput {
    SchedulerInput {
        nodes: nodes
            .iter()
            .map(|&(node, cpus, availability)| {
                (
                    name(node),
                    NodeView {
                        capacity: Resources::new(cpus, NODE_MEMORY_MB),
                        availability,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Default::default()
    }
}

pub fn pending(id: u64, submitted: u64, nodes: u32, cpus: u32, time_limit: u64) -> PendingJob {
    PendingJob {
        id: JobId(id),
        submitted: Timestamp(submitted),
        nodes,
        per_node: Resources::new(cpus, JOB_MEMORY_MB),
        time_limit,
        ..Default::default()
    }
}

/// A running job holding `cpus` (and [`JOB_MEMORY_MB`]) on each named node until `expected_end`.
pub fn running(id: u64, nodes: &[&str], cpus: u32, expected_end: u64) -> RunningJob {
    RunningJob {
        id: JobId(id),
        allocation: nodes
            .iter()
            .map(|&node| (name(node), Resources::new(cpus, JOB_MEMORY_MB)))
            .collect::<BTreeMap<_, _>>(),
        expected_end: Timestamp(expected_end),
        ..Default::default()
    }
}

/// Plans with a fixed seed and asserts the plan passes [`invariants::check`].
pub fn checked_plan(input: &SchedulerInput, now: u64) -> Plan {
    let plan = plan(input, Timestamp(now), &mut StdRng::seed_from_u64(7));
    if let Err(problem) = invariants::check(input, Timestamp(now), &plan) {
        panic!("invariant broken: {problem}\ninput: {input:#?}\nplan: {plan:#?}");
    }
    plan
}

/// The started job IDs, in start order.
pub fn started(plan: &Plan) -> Vec<u64> {
    plan.starts.iter().map(|start| start.job.0).collect()
}

/// The nodes a started job got.
pub fn nodes_of(plan: &Plan, job: u64) -> Vec<String> {
    plan.starts
        .iter()
        .find(|start| start.job == JobId(job))
        .map(|start| start.nodes.iter().map(|n| n.as_str().to_string()).collect())
        .unwrap_or_else(|| panic!("job {job} did not start: {plan:#?}"))
}

pub fn waiting(plan: &Plan, job: u64) -> &beowulf_scheduler::Pending {
    plan.pending
        .get(&JobId(job))
        .unwrap_or_else(|| panic!("job {job} is not pending: {plan:#?}"))
}
