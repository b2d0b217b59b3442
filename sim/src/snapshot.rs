//! The one place that builds the scheduler's input types (`SchedulerInput`, `NodeView`, `RunningJob`,
//! `PendingJob`) from the simulator's state, so a change to those structs is a change to this file.
//!
//! The simulator models one partition, no QOS, reservations, fair-share, features, GRES, arrays or
//! dependencies: every field for those keeps the scheduler's neutral default.

use crate::allocation::Allocation;
use crate::cluster::{Cluster, SimNode};
use crate::job::Job;
use beowulf_scheduler::{NodeView, PendingJob, PriorityWeights, RunningJob, SchedulerInput};
use std::collections::BTreeMap;

/// The snapshot a pass reads: every node, every running allocation, and `pending` (in any order;
/// the scheduler orders them). Priority weights are the scheduler's defaults.
pub fn input<'a>(
    cluster: &Cluster,
    running: impl IntoIterator<Item = &'a Allocation>,
    pending: impl IntoIterator<Item = &'a Job>,
) -> SchedulerInput {
    SchedulerInput {
        nodes: cluster
            .nodes
            .iter()
            .map(|(name, node)| (name.clone(), node_view(node)))
            .collect(),
        running: running.into_iter().map(running_job).collect(),
        pending: pending.into_iter().map(pending_job).collect(),
        weights: PriorityWeights::default(),
        ..SchedulerInput::default()
    }
}

pub fn node_view(node: &SimNode) -> NodeView {
    NodeView {
        capacity: node.capacity,
        availability: node.availability,
        ..NodeView::default()
    }
}

pub fn running_job(allocation: &Allocation) -> RunningJob {
    RunningJob {
        id: allocation.job,
        allocation: allocation
            .nodes
            .iter()
            .map(|name| (name.clone(), allocation.per_node))
            .collect::<BTreeMap<_, _>>(),
        expected_end: allocation.expected_end,
        ..RunningJob::default()
    }
}

pub fn pending_job(job: &Job) -> PendingJob {
    PendingJob {
        id: job.id,
        submitted: job.submit,
        nodes: job.nodes,
        per_node: job.per_node,
        time_limit: job.time_limit,
        ..PendingJob::default()
    }
}
