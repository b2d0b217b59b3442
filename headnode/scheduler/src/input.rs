//! The snapshot a scheduling pass reads: nodes, running jobs, pending jobs, weights.

use beowulf_types::{JobId, Millis, NodeName, Resources, Timestamp};
use std::collections::BTreeMap;

/// Everything one scheduling pass may look at.
#[derive(Debug, Clone, Default)]
pub struct SchedulerInput {
    pub nodes: BTreeMap<NodeName, NodeView>,
    /// Jobs that hold resources now (running, or ended but not yet cleaned up on some node).
    pub running: Vec<RunningJob>,
    /// Jobs waiting to start, in any order; the scheduler orders them by priority.
    pub pending: Vec<PendingJob>,
    pub weights: PriorityWeights,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// What the node has in total.
    pub capacity: Resources,
    pub availability: NodeAvailability,
}

/// Whether new work may be placed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAvailability {
    /// Healthy and accepting jobs.
    Up,
    /// Healthy, but an admin drained it: running jobs finish, nothing new starts.
    Drain,
    /// Missed its heartbeats: nothing starts, and its jobs have been dealt with by the head.
    Down,
}

/// A job holding resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub id: JobId,
    /// Resources the job holds on each of its nodes.
    pub allocation: BTreeMap<NodeName, Resources>,
    /// When the job will have released its resources at the latest (start + time limit).
    pub expected_end: Timestamp,
}

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub id: JobId,
    pub submitted: Timestamp,
    /// Number of distinct nodes the job needs.
    pub nodes: u32,
    /// What the job needs on each of those nodes.
    pub per_node: Resources,
    pub time_limit: Millis,
}

/// Weights of the multifactor priority: `age_weight * age_factor + size_weight * size_factor`, each
/// factor in 0.0..=1.0 as in Slurm's priority/multifactor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityWeights {
    /// Weight of waiting time; the age factor reaches 1.0 at `max_age`.
    pub age_weight: u32,
    pub max_age: Millis,
    /// Weight of job size (share of the cluster's CPUs the job asks for: larger jobs first, as Slurm
    /// does by default, so they are not starved by a stream of small ones).
    pub size_weight: u32,
}

impl Default for PriorityWeights {
    /// Age dominates (first come, first served within a week), size breaks near-ties.
    fn default() -> Self {
        PriorityWeights {
            age_weight: 1000,
            max_age: 7 * 24 * 60 * 60 * 1000,
            size_weight: 100,
        }
    }
}
