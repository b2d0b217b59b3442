//! One scheduling pass: priority order, placement, EASY backfill, and a reason for every waiting job.

use crate::SchedulerInput;
use beowulf_types::{JobId, NodeName, PendingReason, Resources, Timestamp};
use rand::Rng;
use std::collections::BTreeMap;

/// The output of one scheduling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Jobs to start now, in the order they were chosen.
    pub starts: Vec<Start>,
    /// Every pending job that does not start, with why.
    pub pending: BTreeMap<JobId, Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub job: JobId,
    /// The job's nodes; the first is where rank 0 (and a batch script) runs.
    pub nodes: Vec<NodeName>,
    pub per_node: Resources,
    pub priority: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub reason: PendingReason,
    pub priority: u64,
    /// When the backfill plan expects the job to start, if it has one.
    pub estimated_start: Option<Timestamp>,
}

/// Plans one pass. Pure: the same input, `now` and rng state give the same plan.
pub fn plan(input: &SchedulerInput, now: Timestamp, rng: &mut impl Rng) -> Plan {
    let _ = (input, now, rng.random::<u32>());
    Plan::default()
}
