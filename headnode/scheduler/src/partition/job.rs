//! A job in its partition: which partition it runs in ([`of_job`]), and whether the partition's
//! limits and access lists let it run there ([`check_limits`]).

use super::{Partition, PartitionProblem};
use crate::{PendingJob, SchedulerInput};

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

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::{JobId, PendingReason};
    use std::collections::BTreeSet;

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
