//! The checker's own reading of site policy: a job's partition, which nodes it may use (statically
//! and for a start at a given time), dependencies and array throttles. Plain loops over the input,
//! sharing nothing with the pass but `Constraint::matches`.

use crate::dependency::{Dependency, JobOutcome};
use crate::partition::Partition;
use crate::{NodeView, PendingJob, SchedulerInput};
use beowulf_types::{JobId, NodeName, Timestamp};

/// The job's partition: `Ok(None)` without partitions, `Err(())` when it names an unknown one or
/// names none and there is no default.
pub(super) fn partition<'a>(
    input: &'a SchedulerInput,
    job: &PendingJob,
) -> Result<Option<&'a Partition>, ()> {
    if input.partitions.is_empty() {
        return Ok(None);
    }
    let found = match &job.partition {
        Some(name) => input.partitions.get(name),
        None => input.partitions.values().find(|p| p.default),
    };
    found.map(Some).ok_or(())
}

pub(super) fn in_partition(partition: Option<&Partition>, name: &NodeName) -> bool {
    partition.is_none_or(|p| p.nodes.is_empty() || p.nodes.contains(name))
}

/// Whether the job's user and groups may use the partition.
pub(super) fn user_allowed(partition: &Partition, job: &PendingJob) -> bool {
    (partition.allowed_users.is_empty() && partition.allowed_groups.is_empty())
        || partition.allowed_users.contains(&job.user)
        || job
            .groups
            .iter()
            .any(|g| partition.allowed_groups.contains(g))
}

pub(super) fn account_allowed(partition: &Partition, job: &PendingJob) -> bool {
    partition.allowed_accounts.is_empty() || partition.allowed_accounts.contains(&job.account)
}

/// Whether the reservation the job names exists and admits it at some time from `now` on.
pub(super) fn named_reservation_usable(
    input: &SchedulerInput,
    job: &PendingJob,
    now: Timestamp,
) -> bool {
    let Some(name) = &job.reservation else {
        return true;
    };
    let Some(r) = input.reservations.get(name) else {
        return false;
    };
    !r.maintenance
        && (r.users.is_empty() || r.users.contains(&job.user))
        && r.start.max(now).0.saturating_add(job.time_limit) <= r.end.0
}

/// Node membership before time: partition, constraint and exclusions (`with_constraint`), named
/// reservation's nodes.
pub(super) fn static_member(
    input: &SchedulerInput,
    job: &PendingJob,
    name: &NodeName,
    view: &NodeView,
    with_constraint: bool,
    with_reservation: bool,
) -> bool {
    let partition = partition(input, job).ok().flatten();
    in_partition(partition, name)
        && (!with_constraint
            || job
                .constraint
                .as_ref()
                .is_none_or(|c| c.matches(&view.features))
                && !job.excluded_nodes.contains(name))
        && (!with_reservation
            || job.reservation.as_ref().is_none_or(|r| {
                input
                    .reservations
                    .get(r)
                    .is_some_and(|res| res.all_nodes || res.nodes.contains(name))
            }))
}

/// Whether an advance reservation keeps `name` from the job for a run starting at `at` (including
/// its own reservation's window not admitting that start).
pub(super) fn window_blocks(
    input: &SchedulerInput,
    job: &PendingJob,
    name: &NodeName,
    at: Timestamp,
) -> bool {
    let end = at.0.saturating_add(job.time_limit);
    if let Some(own) = job
        .reservation
        .as_ref()
        .and_then(|r| input.reservations.get(r))
        && (own.maintenance || at < own.start || end > own.end.0)
    {
        return true;
    }
    input.reservations.iter().any(|(rname, r)| {
        let own = job.reservation.as_deref() == Some(rname.as_str());
        (!own || r.maintenance)
            && (r.all_nodes || r.nodes.contains(name))
            && r.start.0 < end
            && r.end > at
    })
}

/// A job's state as dependencies see it.
pub(super) fn outcome(input: &SchedulerInput, id: JobId) -> Option<JobOutcome> {
    if let Some(outcome) = input.job_outcomes.get(&id) {
        return Some(*outcome);
    }
    if input.running.iter().any(|r| r.id == id) {
        return Some(JobOutcome::Running);
    }
    input
        .pending
        .iter()
        .any(|p| p.id == id)
        .then_some(JobOutcome::Pending)
}

/// (some dependency waits, some dependency can never hold), `singleton` judged against running
/// jobs and earlier pending singletons only.
pub(super) fn dependency_state(input: &SchedulerInput, job: &PendingJob) -> (bool, bool) {
    let mut waits = false;
    let mut never = false;
    for dependency in &job.dependencies {
        let (id, ok): (JobId, fn(JobOutcome) -> bool) = match *dependency {
            Dependency::AfterOk(id) => (id, |o| o == JobOutcome::Completed),
            Dependency::AfterNotOk(id) => (id, |o| o == JobOutcome::Failed),
            Dependency::AfterAny(id) => (id, |_| true),
            Dependency::Singleton => {
                let same = |user: &str, name: &str| user == job.user && name == job.name;
                waits |= input.running.iter().any(|r| same(&r.user, &r.name))
                    || input.pending.iter().any(|p| {
                        p.id != job.id
                            && same(&p.user, &p.name)
                            && p.dependencies.contains(&Dependency::Singleton)
                            && (p.submitted, p.id) < (job.submitted, job.id)
                    });
                continue;
            }
        };
        match outcome(input, id) {
            None => never = true,
            Some(o @ (JobOutcome::Completed | JobOutcome::Failed)) => never |= !ok(o),
            Some(_) => waits = true,
        }
    }
    (waits, never)
}
