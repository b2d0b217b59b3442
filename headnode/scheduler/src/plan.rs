//! The output of one scheduling pass ([`Plan`]), made by [`plan`](fn@crate::plan).

use crate::preemption::Preemption;
use crate::priority::PriorityFactors;
use beowulf_types::{JobId, NodeName, PendingReason, Resources, Timestamp};
use std::collections::BTreeMap;

/// The output of one scheduling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Jobs to start now, in the order they were chosen.
    pub starts: Vec<Start>,
    /// Every pending job that does not start, with why.
    pub pending: BTreeMap<JobId, Pending>,
    /// Running jobs to end (requeue or cancel) so that higher-QOS jobs can start at a later pass.
    pub preemptions: Vec<Preemption>,
    /// Per preemptor (reason `Preempting`), the nodes it will use once its victims are gone; nothing
    /// else started there in this pass.
    pub held_for_preemptors: BTreeMap<JobId, Vec<NodeName>>,
    /// The top job's EASY reservation: the highest-priority job that cannot start now, and where
    /// and when it will; backfilled jobs never delay it.
    pub top_job: Option<TopJob>,
}

/// The job holding the backfill reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopJob {
    pub job: JobId,
    /// The shadow time.
    pub start: Timestamp,
    pub nodes: Vec<NodeName>,
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
    /// What `priority` is made of, factor by factor.
    pub factors: PriorityFactors,
}
