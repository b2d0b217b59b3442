//! Partitions: named node sets with limits and access lists, and which partition a job runs in.

mod job;

pub(crate) use job::{check_limits, of_job};

use beowulf_types::{Millis, NodeName, PendingReason};
use std::collections::BTreeSet;

/// A named set of nodes with limits (Slurm's `PartitionName=...` line). Every field's default means
/// "no constraint".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    /// The partition's nodes. Empty: every node of the cluster.
    pub nodes: BTreeSet<NodeName>,
    /// Longest time limit a job may have (`MaxTime`); longer jobs wait with `PartitionTimeLimit`.
    pub max_time: Option<Millis>,
    /// Most nodes a job may ask for (`MaxNodes`); larger jobs wait with `PartitionNodeLimit`.
    pub max_nodes: Option<u32>,
    /// Users allowed by name (`AllowUsers`, a Beowulf extension); with `allowed_groups`, a job is
    /// allowed when its user is listed or one of its groups is. Both empty: everyone.
    pub allowed_users: BTreeSet<String>,
    /// Groups allowed by name (`AllowGroups`).
    pub allowed_groups: BTreeSet<String>,
    /// Accounts allowed (`AllowAccounts`). Empty: every account.
    pub allowed_accounts: BTreeSet<String>,
    /// Slurm's `PriorityJobFactor`: normalised by the largest in the input, times
    /// `PriorityWeights::partition_weight`.
    pub priority_factor: u32,
    /// Jobs that name no partition run here (`Default=YES`). With several, the first by name wins.
    pub default: bool,
}

/// Why a job cannot run in its partition as configured (limits and access, not resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionProblem {
    /// The job names a partition the input does not have.
    Unknown(String),
    /// The job names none and no partition is the default.
    NoDefault,
    TimeLimit {
        partition: String,
        max_time: Millis,
    },
    NodeLimit {
        partition: String,
        max_nodes: u32,
    },
    AccountNotAllowed {
        partition: String,
    },
    UserNotAllowed {
        partition: String,
    },
}

impl PartitionProblem {
    pub fn reason(&self) -> PendingReason {
        match self {
            PartitionProblem::Unknown(_) | PartitionProblem::NoDefault => {
                PendingReason::PartitionConfig
            }
            PartitionProblem::TimeLimit { .. } => PendingReason::PartitionTimeLimit,
            PartitionProblem::NodeLimit { .. } => PendingReason::PartitionNodeLimit,
            PartitionProblem::AccountNotAllowed { .. } => PendingReason::AccountNotAllowed,
            PartitionProblem::UserNotAllowed { .. } => PendingReason::PartitionNotAllowed,
        }
    }
}

/// Whether `node` belongs to `partition` (an empty node set is the whole cluster).
pub(crate) fn contains(partition: &Partition, node: &NodeName) -> bool {
    partition.nodes.is_empty() || partition.nodes.contains(node)
}
