//! What keeps a job from being considered for nodes at all, checked before placement: a hold, its
//! partition (unknown, access, limits), the reservation it names, its dependencies, its array's
//! throttle.

use crate::advance::{self, ReservationProblem};
use crate::array::ArrayCounts;
use crate::dependency::{self, Dependency, JobOutcome, Verdict};
use crate::partition::{self, PartitionProblem};
use crate::{PendingJob, SchedulerInput};
use beowulf_types::{JobHold, JobId, PendingReason, Timestamp};
use std::collections::BTreeMap;

/// Why a job is held before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Held by its owner or by root: nothing else is checked until it is released.
    Held(JobHold),
    Partition(PartitionProblem),
    Reservation {
        name: String,
        problem: ReservationProblem,
    },
    /// An `after*` dependency on `job`, whose state is `outcome` (`None`: unknown job).
    Dependency {
        dependency: Dependency,
        outcome: Option<JobOutcome>,
        never: bool,
    },
    /// `singleton`: `holder` has the same user and name and runs, or waits ahead.
    Singleton {
        holder: JobId,
    },
    ArrayLimit {
        array: JobId,
        running: u32,
        max_running: u32,
    },
    /// `--begin`: not eligible before `at`.
    BeginTime {
        at: Timestamp,
    },
}

impl Hold {
    pub fn reason(&self) -> PendingReason {
        match self {
            Hold::Held(hold) => hold.reason(),
            Hold::Partition(problem) => problem.reason(),
            Hold::Reservation { .. } => PendingReason::Reservation,
            Hold::Dependency { never: true, .. } => PendingReason::DependencyNeverSatisfied,
            Hold::Dependency { .. } | Hold::Singleton { .. } => PendingReason::Dependency,
            Hold::ArrayLimit { .. } => PendingReason::JobArrayTaskLimit,
            Hold::BeginTime { .. } => PendingReason::BeginTime,
        }
    }

    /// When the hold ends by itself, if a time says so: the begin time.
    pub fn eligible(&self) -> Option<Timestamp> {
        match self {
            Hold::BeginTime { at } => Some(*at),
            _ => None,
        }
    }
}

/// Job states and singleton holders, built once per pass (lazily: most queues have no dependencies).
#[derive(Debug, Default)]
pub(crate) struct JobStates<'a> {
    built: bool,
    outcomes: BTreeMap<JobId, JobOutcome>,
    /// (user, name) -> a job holding the name: running, or the earliest pending singleton.
    running_names: BTreeMap<(&'a str, &'a str), JobId>,
    singleton_queue: BTreeMap<(&'a str, &'a str), (Timestamp, JobId)>,
    /// (user, name) of jobs started in this pass.
    pub started_names: BTreeMap<(&'a str, &'a str), JobId>,
}

impl<'a> JobStates<'a> {
    fn build(&mut self, input: &'a SchedulerInput) {
        if self.built {
            return;
        }
        self.built = true;
        for job in &input.pending {
            self.outcomes.entry(job.id).or_insert(JobOutcome::Pending);
            if job.dependencies.contains(&Dependency::Singleton) {
                let key = (job.user.as_str(), job.name.as_str());
                let entry = self
                    .singleton_queue
                    .entry(key)
                    .or_insert((job.submitted, job.id));
                *entry = (*entry).min((job.submitted, job.id));
            }
        }
        for job in &input.running {
            self.outcomes.insert(job.id, JobOutcome::Running);
            self.running_names
                .entry((job.user.as_str(), job.name.as_str()))
                .or_insert(job.id);
        }
        for (&id, &outcome) in &input.job_outcomes {
            self.outcomes.insert(id, outcome);
        }
    }

    /// The first unsatisfied dependency of `job`, a never-satisfiable one first.
    pub fn check(&mut self, input: &'a SchedulerInput, job: &'a PendingJob) -> Result<(), Hold> {
        if job.dependencies.is_empty() {
            return Ok(());
        }
        self.build(input);
        let mut waiting = None;
        for &dependency in &job.dependencies {
            let target = match dependency {
                Dependency::AfterOk(id) | Dependency::AfterAny(id) | Dependency::AfterNotOk(id) => {
                    id
                }
                Dependency::Singleton => {
                    if waiting.is_none() {
                        waiting = self
                            .singleton_holder(job)
                            .map(|holder| Hold::Singleton { holder });
                    }
                    continue;
                }
            };
            let outcome = self.outcomes.get(&target).copied();
            match dependency::verdict(dependency, outcome) {
                Verdict::Satisfied => {}
                Verdict::Never => {
                    return Err(Hold::Dependency {
                        dependency,
                        outcome,
                        never: true,
                    });
                }
                Verdict::Waiting => {
                    if waiting.is_none() {
                        waiting = Some(Hold::Dependency {
                            dependency,
                            outcome,
                            never: false,
                        });
                    }
                }
            }
        }
        waiting.map_or(Ok(()), Err)
    }

    fn singleton_holder(&self, job: &'a PendingJob) -> Option<JobId> {
        let key = (job.user.as_str(), job.name.as_str());
        if let Some(&holder) = self.running_names.get(&key) {
            return Some(holder);
        }
        if let Some(&holder) = self.started_names.get(&key) {
            return Some(holder);
        }
        self.singleton_queue
            .get(&key)
            .filter(|&&(_, first)| first != job.id)
            .map(|&(_, first)| first)
    }

    /// Records a start, for `singleton`s considered later in the pass.
    pub fn started(&mut self, job: &'a PendingJob) {
        self.started_names
            .entry((job.user.as_str(), job.name.as_str()))
            .or_insert(job.id);
    }
}

/// Hold, partition, begin time, named reservation and dependencies, in that order (Slurm, too,
/// shows `BeginTime` before dependencies). `Ok` carries the job's partition (`None`: the implicit
/// whole-cluster partition).
pub(crate) fn admit<'a>(
    input: &'a SchedulerInput,
    job: &'a PendingJob,
    states: &mut JobStates<'a>,
    now: Timestamp,
) -> Result<Option<&'a str>, Hold> {
    if let Some(hold) = job.held {
        return Err(Hold::Held(hold));
    }
    let partition = partition::of_job(input, job).map_err(Hold::Partition)?;
    if let Some((name, limits)) = partition {
        partition::check_limits(name, limits, job).map_err(Hold::Partition)?;
    }
    if let Some(at) = job.begin
        && at > now
    {
        return Err(Hold::BeginTime { at });
    }
    if let Some(name) = &job.reservation {
        advance::check(input.reservations.get(name), &job.user, job.time_limit, now).map_err(
            |problem| Hold::Reservation {
                name: name.clone(),
                problem,
            },
        )?;
    }
    states.check(input, job)?;
    Ok(partition.map(|(name, _)| name))
}

/// The array throttle, checked once the job could run at all.
pub(crate) fn array_limit(job: &PendingJob, counts: &ArrayCounts) -> Result<(), Hold> {
    match &job.array {
        Some(member) if counts.at_limit(member) => Err(Hold::ArrayLimit {
            array: member.array,
            running: counts.running(member.array),
            max_running: member.max_running.unwrap_or(0),
        }),
        _ => Ok(()),
    }
}
