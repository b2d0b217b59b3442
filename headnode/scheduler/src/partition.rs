//! Partitions: named node sets with limits and access lists, and which partition a job runs in.

use crate::{PendingJob, SchedulerInput};
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

/// The partition a job runs in: `Ok(None)` when the input has no partitions (the whole cluster,
/// no limits), `Ok(Some((name, partition)))` otherwise, or the reason it has none.
pub(crate) fn of_job<'a>(
    input: &'a SchedulerInput,
    job: &PendingJob,
) -> Result<Option<(&'a str, &'a Partition)>, PartitionProblem> {
    if input.partitions.is_empty() {
        return Ok(None);
    }
    match &job.partition {
        Some(name) => input
            .partitions
            .get_key_value(name)
            .map(|(name, partition)| Some((name.as_str(), partition)))
            .ok_or_else(|| PartitionProblem::Unknown(name.clone())),
        None => input
            .partitions
            .iter()
            .find(|(_, partition)| partition.default)
            .map(|(name, partition)| Some((name.as_str(), partition)))
            .ok_or(PartitionProblem::NoDefault),
    }
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

/// Limits and access of `job` in `partition`, in Slurm's order: access first (a job that may never
/// run there should not be told to shorten its time limit), then time, then size.
pub(crate) fn check_limits(
    name: &str,
    partition: &Partition,
    job: &PendingJob,
) -> Result<(), PartitionProblem> {
    let partition_name = || name.to_string();
    let open = partition.allowed_users.is_empty() && partition.allowed_groups.is_empty();
    if !open
        && !partition.allowed_users.contains(&job.user)
        && partition.allowed_groups.is_disjoint(&job.groups)
    {
        return Err(PartitionProblem::UserNotAllowed {
            partition: partition_name(),
        });
    }
    if !partition.allowed_accounts.is_empty() && !partition.allowed_accounts.contains(&job.account)
    {
        return Err(PartitionProblem::AccountNotAllowed {
            partition: partition_name(),
        });
    }
    if let Some(max_time) = partition.max_time
        && job.time_limit > max_time
    {
        return Err(PartitionProblem::TimeLimit {
            partition: partition_name(),
            max_time,
        });
    }
    if let Some(max_nodes) = partition.max_nodes
        && job.nodes > max_nodes
    {
        return Err(PartitionProblem::NodeLimit {
            partition: partition_name(),
            max_nodes,
        });
    }
    Ok(())
}

/// Whether `node` belongs to `partition` (an empty node set is the whole cluster).
pub(crate) fn contains(partition: &Partition, node: &NodeName) -> bool {
    partition.nodes.is_empty() || partition.nodes.contains(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;

    fn job() -> PendingJob {
        PendingJob {
            id: JobId(1),
            nodes: 2,
            time_limit: 100,
            user: "ann".into(),
            account: "phys".into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_partition_is_used_when_the_job_names_none() {
        let mut input = SchedulerInput::default();
        assert_eq!(of_job(&input, &job()), Ok(None));
        input.partitions.insert("a".into(), Partition::default());
        assert_eq!(of_job(&input, &job()), Err(PartitionProblem::NoDefault));
        input.partitions.insert(
            "b".into(),
            Partition {
                default: true,
                ..Default::default()
            },
        );
        assert_eq!(of_job(&input, &job()).unwrap().unwrap().0, "b");
        let named = PendingJob {
            partition: Some("zz".into()),
            ..job()
        };
        assert_eq!(
            of_job(&input, &named),
            Err(PartitionProblem::Unknown("zz".into()))
        );
    }

    #[test]
    fn limits_and_access_are_checked_in_order() {
        let open = Partition::default();
        assert_eq!(check_limits("p", &open, &job()), Ok(()));
        let strict = Partition {
            max_time: Some(50),
            max_nodes: Some(1),
            allowed_groups: BTreeSet::from(["staff".to_string()]),
            allowed_accounts: BTreeSet::from(["chem".to_string()]),
            ..Default::default()
        };
        let reason = |job: &PendingJob| check_limits("p", &strict, job).unwrap_err().reason();
        assert_eq!(reason(&job()), PendingReason::PartitionNotAllowed);
        let mut staff = job();
        staff.groups.insert("staff".into());
        assert_eq!(reason(&staff), PendingReason::AccountNotAllowed);
        staff.account = "chem".into();
        assert_eq!(reason(&staff), PendingReason::PartitionTimeLimit);
        staff.time_limit = 50;
        assert_eq!(reason(&staff), PendingReason::PartitionNodeLimit);
        staff.nodes = 1;
        assert_eq!(check_limits("p", &strict, &staff), Ok(()));
    }
}
