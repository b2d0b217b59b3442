//! Interactive work from outside the job's nodes: job steps the head relays to a job's first
//! node (`srun` in a `salloc` shell, `srun` that allocated its own job, `srun --jobid`), and
//! the end of an allocation when its submitter's command ended.
//!
//! ```text
//!  salloc / srun ──Submit(allocation = true)──▶ PENDING ─▶ RUNNING (nodes held, nothing runs)
//!        │ Step(job) ─▶ step_target: the caller's? running? takes steps? ─▶ first node's
//!        │              agent over mutual TLS (the head's certificate) ─▶ tasks on the nodes
//!        └ EndAllocation(job, exit code) ─▶ COMPLETED (0) or FAILED (code)
//!          (or its time limit: TIMEOUT; scancel: CANCELLED — the same as any job)
//! ```

use super::jobs::authorize;
use super::{Caller, Head, HeadError, now};
use beowulf_types::{JobId, JobState, JobTransition, NodeName, RunKey};

/// Where the head sends a job step: the running job's first node's agent, with the run's
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTarget {
    pub run: RunKey,
    pub token: String,
    pub node: NodeName,
    /// `host:port` of the node's AgentLaunch service.
    pub endpoint: String,
}

impl Head {
    /// Where a step of job `id` that `caller` asked for runs: only the job's user (or root),
    /// only while it runs, only for a job that takes steps (an allocation or a batch script).
    pub fn step_target(&self, caller: &Caller, id: JobId) -> Result<StepTarget, HeadError> {
        self.read(|inner| {
            let job = inner.jobs.get(&id).ok_or(HeadError::NoSuchJob(id))?;
            authorize(caller, job, "run steps in")?;
            if job.state != JobState::Running {
                return Err(HeadError::Conflict(format!(
                    "job {id} is {}, not running: steps run only in a running job{}",
                    job.state,
                    if job.state.is_terminal() {
                        ""
                    } else {
                        "; wait for it to start"
                    }
                )));
            }
            if !job.spec.takes_steps() {
                return Err(HeadError::Conflict(format!(
                    "job {id} runs its own command on every node: steps run only in an allocation \
                     (salloc) or a batch script"
                )));
            }
            let (Some(launch), Some(first)) = (job.launch.as_ref(), job.nodes.first()) else {
                return Err(HeadError::Conflict(format!(
                    "job {id} has no launch credential (it started before this head knew steps); \
                     requeue it or submit it again"
                )));
            };
            let endpoint = inner
                .nodes
                .get(first)
                .map(|n| n.launch_endpoint.clone())
                .filter(|e| !e.is_empty())
                .ok_or_else(|| {
                    HeadError::Conflict(format!(
                        "node {first} of job {id} has no launch endpoint: is its agent connected?"
                    ))
                })?;
            Ok(StepTarget {
                run: job.run_key(),
                token: launch.token.clone(),
                node: first.clone(),
                endpoint,
            })
        })
    }

    /// Ends allocation `id` whose submitter's command ended with `exit_code` (salloc's shell, or
    /// the program srun ran): COMPLETED when it is 0, else FAILED with that code.
    pub fn end_allocation(
        &self,
        caller: &Caller,
        id: JobId,
        exit_code: i32,
    ) -> Result<JobState, HeadError> {
        let state = self.mutate(|tx| {
            let job = tx.job(id).ok_or(HeadError::NoSuchJob(id))?;
            authorize(caller, job, "end")?;
            if !job.spec.is_allocation() {
                return Err(HeadError::Conflict(format!(
                    "job {id} is not an allocation: it ends when its own program does (cancel it \
                     with `scancel {id}`)"
                )));
            }
            if job.state.is_terminal() {
                return Err(HeadError::AlreadyEnded {
                    job: id,
                    state: job.state,
                });
            }
            let now = now();
            let job = tx.job_mut(id).expect("exists");
            if job.state != JobState::Running {
                // Ended before it started (salloc interrupted while waiting): a cancel.
                job.end(
                    JobTransition::Cancel,
                    now,
                    format!("its submitter (uid {}) left before it started", caller.uid),
                );
                return Ok(JobState::Cancelled);
            }
            job.exit_code = Some(exit_code);
            if exit_code == 0 {
                job.end(
                    JobTransition::Complete,
                    now,
                    "its submitter's command ended",
                );
                Ok(JobState::Completed)
            } else {
                job.end(
                    JobTransition::Fail,
                    now,
                    format!("its submitter's command exited with code {exit_code}"),
                );
                Ok(JobState::Failed)
            }
        })?;
        self.wake_scheduler.notify_one();
        Ok(state)
    }
}
