//! Job control after submit, as Slurm's `scontrol` does it: hold, release, requeue and update.
//! Each is allowed to the job's owner and root only, and goes through the store like every job
//! change, so a restarted head keeps it.

use super::identity::Caller;
use super::jobs::{array_elements, authorize, fits_cluster};
use super::{Head, HeadError, Tx, now};
use crate::model::JobRecord;
use beowulf_types::jobfile::MAX_TIME_LIMIT_MS;
use beowulf_types::{
    JobHold, JobId, JobSignal, JobState, MAX_KEPT_SIGNALS, Millis, SignalScope, apply_overrides,
};
use std::collections::BTreeMap;

/// What `scontrol update job` may change. `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobUpdate {
    pub time_limit: Option<Millis>,
    /// Only while the job is pending.
    pub partition: Option<String>,
    pub name: Option<String>,
    /// Only while the job is pending.
    pub nodes: Option<u32>,
    /// Only while the job is pending.
    pub ntasks: Option<u32>,
}

impl JobUpdate {
    fn is_empty(&self) -> bool {
        *self == JobUpdate::default()
    }
}

impl Head {
    /// Holds pending jobs (with `whole_array`, every pending element of the array whose ID is
    /// `id`): they stay pending and are not considered until released. Root's hold is an admin
    /// hold, which only root may release, unless `user_hold` (`scontrol uhold`) asks for a user
    /// one; a user's hold never weakens root's. Returns the jobs now held.
    pub fn hold(
        &self,
        caller: &Caller,
        id: JobId,
        whole_array: bool,
        user_hold: bool,
    ) -> Result<Vec<JobId>, HeadError> {
        let kind = if caller.is_root() && !user_hold {
            JobHold::Admin
        } else {
            JobHold::User
        };
        let held = self.mutate(|tx| {
            let targets = pending_targets(tx, caller, id, whole_array, ("hold", "held"))?;
            let now = now();
            for target in &targets {
                let job = tx.job_mut(*target).expect("listed by pending_targets");
                let stronger = job.hold.map_or(kind, |was| was.max(kind));
                if job.hold != Some(stronger) {
                    job.hold = Some(stronger);
                    job.log(
                        now,
                        format!("held by uid {} ({})", caller.uid, stronger.reason()),
                    );
                }
            }
            Ok(targets)
        })?;
        self.wake_scheduler.notify_one();
        Ok(held)
    }

    /// Releases held pending jobs (with `whole_array`, every element of the array): they are
    /// considered again. Only root releases root's hold. Jobs that are not held are left as they
    /// are. Returns the jobs released.
    pub fn release(
        &self,
        caller: &Caller,
        id: JobId,
        whole_array: bool,
    ) -> Result<Vec<JobId>, HeadError> {
        let released = self.mutate(|tx| {
            let targets = pending_targets(tx, caller, id, whole_array, ("release", "released"))?;
            let held: Vec<JobId> = targets
                .into_iter()
                .filter(|t| tx.job(*t).is_some_and(|j| j.hold.is_some()))
                .collect();
            if !caller.is_root()
                && let Some(by_root) = held
                    .iter()
                    .find(|t| tx.job(**t).is_some_and(|j| j.hold == Some(JobHold::Admin)))
            {
                return Err(HeadError::PermissionDenied(format!(
                    "job {by_root} was held by root ({}); only root may release it",
                    JobHold::Admin.reason()
                )));
            }
            let now = now();
            for target in &held {
                let job = tx.job_mut(*target).expect("listed above");
                job.hold = None;
                job.log(now, format!("released by uid {}", caller.uid));
            }
            Ok(held)
        })?;
        self.wake_scheduler.notify_one();
        Ok(released)
    }

    /// Stops running jobs and queues them again (with `whole_array`, every running element of
    /// the array): their tasks get SIGTERM, then SIGKILL after the kill wait, as for a cancel, and
    /// the next run has a restart count one higher (`SLURM_RESTART_COUNT`). A job submitted with
    /// `requeue = false` (`--no-requeue`, the default here) is refused, as Slurm refuses jobs
    /// that may not be requeued. Returns the jobs requeued.
    pub fn requeue(
        &self,
        caller: &Caller,
        id: JobId,
        whole_array: bool,
    ) -> Result<Vec<JobId>, HeadError> {
        let requeued = self.mutate(|tx| {
            let running = targets_in(
                tx,
                caller,
                id,
                whole_array,
                JobState::Running,
                ("requeue", "requeued"),
            )?;
            let first = &running[0];
            if let Some(job) = tx.job(*first).filter(|j| !j.spec.requeue) {
                return Err(HeadError::Conflict(format!(
                    "job {} may not be requeued: it was submitted with requeue = false (the \
                     default here); submit it with --requeue (requeue = true in a job file)",
                    job.id
                )));
            }
            let now = now();
            for target in &running {
                let job = tx.job_mut(*target).expect("listed above");
                job.requeue(now, &format!("requested by uid {}", caller.uid));
            }
            Ok(running)
        })?;
        self.wake_scheduler.notify_one();
        Ok(requeued)
    }

    /// Sends `signal` to running jobs (with `whole_array`, every running element of the array)
    /// without ending them (`scancel --signal`): each node's agent delivers it once to the
    /// processes `scope` names. Returns the jobs signalled.
    pub fn signal_jobs(
        &self,
        caller: &Caller,
        id: JobId,
        whole_array: bool,
        signal: i32,
        scope: SignalScope,
    ) -> Result<Vec<JobId>, HeadError> {
        if !(1..=31).contains(&signal) {
            return Err(HeadError::Invalid(format!(
                "{signal} is not a signal number (1 to 31)"
            )));
        }
        self.mutate(|tx| {
            let running = targets_in(
                tx,
                caller,
                id,
                whole_array,
                JobState::Running,
                ("signal", "signalled"),
            )?;
            let now = now();
            for target in &running {
                let job = tx.job_mut(*target).expect("listed above");
                let seq = job.signals.last().map_or(1, |s| s.seq.saturating_add(1));
                job.signals.push(JobSignal { seq, signal, scope });
                if job.signals.len() > MAX_KEPT_SIGNALS {
                    job.signals.remove(0);
                }
                job.log(
                    now,
                    format!("signal {signal} ({scope:?}) sent by uid {}", caller.uid),
                );
            }
            Ok(running)
        })
    }

    /// Changes one job's fields (`scontrol update job`): its name and time limit while it has
    /// not ended, its partition and node and task counts only while it is pending. A user may
    /// only lower the time limit of a running job and not set one over the partition's limit;
    /// root may do both. The changed job must still fit the cluster, as at submit.
    pub fn update_job(
        &self,
        caller: &Caller,
        id: JobId,
        update: &JobUpdate,
    ) -> Result<(), HeadError> {
        if update.is_empty() {
            return Err(HeadError::Invalid(format!(
                "no field to update for job {id}; give TimeLimit, Partition, JobName, NumNodes or NumTasks"
            )));
        }
        self.mutate(|tx| {
            let job = tx.job(id).ok_or(HeadError::NoSuchJob(id))?;
            authorize(caller, job, "update")?;
            if job.state.is_terminal() {
                return Err(HeadError::AlreadyEnded {
                    job: id,
                    state: job.state,
                });
            }
            let job = job.clone();
            let changed = apply_update(tx, &self.config, caller, job, update)?;
            tx.insert_job(changed);
            Ok(())
        })?;
        self.wake_scheduler.notify_one();
        Ok(())
    }
}

/// `job` with `update` applied and logged, or why it may not be.
fn apply_update(
    tx: &Tx<'_>,
    config: &crate::config::HeadConfig,
    caller: &Caller,
    mut job: JobRecord,
    update: &JobUpdate,
) -> Result<JobRecord, HeadError> {
    let id = job.id;
    let pending = job.state == JobState::Pending;
    let pending_only = [
        ("Partition", update.partition.is_some()),
        ("NumNodes", update.nodes.is_some()),
        ("NumTasks", update.ntasks.is_some()),
    ];
    if let Some((field, _)) = pending_only.iter().find(|(_, given)| *given && !pending) {
        return Err(HeadError::Conflict(format!(
            "job {id} is {}: its {field} can change only while it is pending",
            job.state
        )));
    }
    let mut said = Vec::new();
    let invalid = |field: &str, value: &str, message: String| {
        HeadError::Invalid(format!("{field}={value} for job {id}: {message}"))
    };
    for (field, value, label) in [
        ("name", &update.name, "JobName"),
        ("partition", &update.partition, "Partition"),
    ] {
        if let Some(value) = value {
            let overrides = BTreeMap::from([(field.to_string(), value.clone())]);
            apply_overrides(&mut job.spec, &overrides)
                .map_err(|e| invalid(label, value, e.message))?;
            said.push(format!("{label}={value}"));
        }
    }
    if update.nodes.is_some() || update.ntasks.is_some() {
        job.spec
            .set_layout(update.nodes, update.ntasks)
            .map_err(|message| {
                let given: Vec<String> = [("NumNodes", update.nodes), ("NumTasks", update.ntasks)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
                    .collect();
                HeadError::Invalid(format!("{} for job {id}: {message}", given.join(" ")))
            })?;
        said.push(format!(
            "NumNodes={} NumTasks={}",
            job.spec.nodes, job.spec.ntasks
        ));
    }
    if pending && (update.partition.is_some() || update.nodes.is_some() || update.ntasks.is_some())
    {
        job.partition = fits_cluster(tx, config, &job.spec).map_err(|message| {
            HeadError::Invalid(format!("the update of job {id} does not fit: {message}"))
        })?;
    }
    if let Some(limit) = update.time_limit {
        let shown = |ms: Millis| format!("{} min", ms.div_ceil(60_000));
        if limit == 0 || limit > MAX_TIME_LIMIT_MS {
            return Err(invalid(
                "TimeLimit",
                &shown(limit),
                format!("must be from 1 minute to {}", shown(MAX_TIME_LIMIT_MS)),
            ));
        }
        if !caller.is_root() {
            if job.state == JobState::Running && limit > job.spec.time_limit_ms {
                return Err(HeadError::PermissionDenied(format!(
                    "TimeLimit={} for job {id}: a running job's time limit may only be lowered \
                     (it is {}); only root may raise it",
                    shown(limit),
                    shown(job.spec.time_limit_ms)
                )));
            }
            let max = job
                .partition
                .as_ref()
                .and_then(|p| config.partitions().get(p))
                .and_then(|p| p.max_time);
            if let Some(max) = max.filter(|max| limit > *max) {
                return Err(invalid(
                    "TimeLimit",
                    &shown(limit),
                    format!(
                        "longer than partition {}'s limit of {}",
                        job.partition_name(),
                        shown(max)
                    ),
                ));
            }
        }
        job.spec.time_limit_ms = limit;
        said.push(format!("TimeLimit={}", shown(limit)));
    }
    job.log(
        now(),
        format!("updated by uid {}: {}", caller.uid, said.join(" ")),
    );
    Ok(job)
}

/// The jobs `id` names (with `whole_array`, every element of the array it is the ID of), once
/// the caller may act on them.
fn owned_targets(
    tx: &Tx<'_>,
    caller: &Caller,
    id: JobId,
    whole_array: bool,
    verb: &str,
) -> Result<Vec<JobId>, HeadError> {
    let job = tx.job(id).ok_or(HeadError::NoSuchJob(id))?;
    // The elements of an array share its user: the check covers them all.
    authorize(caller, job, verb)?;
    Ok(array_elements(job)
        .filter(|_| whole_array)
        .unwrap_or_else(|| vec![id]))
}

/// The pending jobs among those `id` names ([`owned_targets`]); an error when there is none.
/// `verb` and `done` name the action in messages (`hold`, `held`).
fn pending_targets(
    tx: &Tx<'_>,
    caller: &Caller,
    id: JobId,
    whole_array: bool,
    action: (&str, &str),
) -> Result<Vec<JobId>, HeadError> {
    targets_in(tx, caller, id, whole_array, JobState::Pending, action)
}

/// The jobs in state `wanted` among those `id` names ([`owned_targets`]); an error when there
/// is none. `verb` and `done` name the action in messages (`requeue`, `requeued`).
fn targets_in(
    tx: &Tx<'_>,
    caller: &Caller,
    id: JobId,
    whole_array: bool,
    wanted: JobState,
    (verb, done): (&str, &str),
) -> Result<Vec<JobId>, HeadError> {
    let targets = owned_targets(tx, caller, id, whole_array, verb)?;
    let found: Vec<JobId> = targets
        .iter()
        .copied()
        .filter(|t| tx.job(*t).is_some_and(|j| j.state == wanted))
        .collect();
    if found.is_empty() {
        return Err(not_in_state(tx, &targets, id, wanted, done));
    }
    Ok(found)
}

/// Why none of `targets` (named by `id`) is in `wanted`, the only state in which it can be
/// `done`: they have all ended, or they are in another live state.
fn not_in_state(
    tx: &Tx<'_>,
    targets: &[JobId],
    id: JobId,
    wanted: JobState,
    done: &str,
) -> HeadError {
    let live = targets
        .iter()
        .filter_map(|t| tx.job(*t))
        .find(|j| !j.state.is_terminal());
    match live {
        Some(job) => HeadError::Conflict(format!(
            "job {} is {}: only a {} job can be {done}",
            job.id,
            job.state,
            wanted.as_str().to_lowercase()
        )),
        None => HeadError::AlreadyEnded {
            job: id,
            state: tx.job(id).expect("checked by owned_targets").state,
        },
    }
}

#[cfg(test)]
mod tests;
