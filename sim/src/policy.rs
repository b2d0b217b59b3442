//! The policies the simulator compares, and the edge where it calls the real scheduler: each call to
//! `plan` is timed with `Instant` and, with checking on, followed by `invariants::check`.
//!
//! - `easy`: the real scheduler as the head runs it: every pending job in one `plan` call (priority
//!   order, best fit, EASY backfill around the top job's reservation).
//! - `fcfs`: strict first come, first served, built on the same `plan`: the pass shows the scheduler
//!   only the oldest pending job (submit time, then ID); if it starts, it is added to the running
//!   allocations and the next oldest is shown, until one does not start. That job blocks everyone
//!   behind it, so nothing ever jumps the queue. Only a job waiting for resources (`Resources`, or
//!   `ReqNodeNotAvail` for nodes that are down or drained) blocks; one that can never run (the whole
//!   cluster cannot hold it: `PartitionConfig`) is passed over, as Slurm's FIFO scheduler does.

use crate::allocation::Allocation;
use crate::cluster::Cluster;
use crate::error::SimError;
use crate::job::Job;
use crate::snapshot;
use beowulf_scheduler::{Plan, SchedulerInput, invariants, plan};
use beowulf_types::{JobId, NodeName, PendingReason, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Policy {
    Easy,
    Fcfs,
}

impl Policy {
    pub const ALL: [Policy; 2] = [Policy::Easy, Policy::Fcfs];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Easy => "easy",
            Policy::Fcfs => "fcfs",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|policy| policy.as_str() == s)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a job FCFS could not start blocks the queue: yes when it waits for resources (or for nodes
/// to come back); no when it can never run or is not eligible yet, as Slurm's FIFO scheduler skips
/// such jobs.
fn blocks(reason: Option<PendingReason>) -> bool {
    match reason {
        Some(
            PendingReason::Resources | PendingReason::Priority | PendingReason::ReqNodeNotAvail,
        ) => true,
        #[allow(unreachable_patterns)]
        // the scheduler is gaining reasons (partitions, dependencies)
        _ => false,
    }
}

/// A job a pass starts, and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job: JobId,
    pub nodes: Vec<NodeName>,
}

/// What the scheduler calls cost, in wall-clock time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Scheduling passes (one per event batch that left jobs pending, plus periodic ones).
    pub passes: u64,
    /// Calls to `plan` (one per pass for `easy`; starts + 1 per pass for `fcfs`).
    pub calls: u64,
    /// Wall-clock time inside `plan`.
    pub plan_time: Duration,
    /// Wall-clock time inside `invariants::check`.
    pub check_time: Duration,
}

/// Runs passes of one policy over the simulator's state.
#[derive(Debug)]
pub struct PassRunner {
    policy: Policy,
    check: bool,
    rng: StdRng,
    pub stats: PassStats,
}

impl PassRunner {
    /// `check`: run `invariants::check` after every `plan` call and fail on a violation.
    pub fn new(policy: Policy, check: bool, seed: u64) -> Self {
        PassRunner {
            policy,
            check,
            rng: StdRng::seed_from_u64(seed),
            stats: PassStats::default(),
        }
    }

    /// One scheduling pass at `now`. `pending` is in queue order (submit time, then ID).
    pub fn pass(
        &mut self,
        now: Timestamp,
        cluster: &Cluster,
        running: &BTreeMap<JobId, Allocation>,
        pending: &[&Job],
    ) -> Result<Vec<Placement>, SimError> {
        self.stats.passes += 1;
        match self.policy {
            Policy::Easy => {
                let input = snapshot::input(cluster, running.values(), pending.iter().copied());
                let plan = self.call(&input, now)?;
                Ok(plan
                    .starts
                    .into_iter()
                    .map(|start| Placement {
                        job: start.job,
                        nodes: start.nodes,
                    })
                    .collect())
            }
            Policy::Fcfs => {
                let mut placements = Vec::new();
                let mut started: Vec<Allocation> = Vec::new();
                for &job in pending {
                    let input = snapshot::input(cluster, running.values().chain(&started), [job]);
                    let plan = self.call(&input, now)?;
                    match plan.starts.into_iter().next() {
                        Some(start) => {
                            started.push(Allocation {
                                job: job.id,
                                nodes: start.nodes.clone(),
                                per_node: job.per_node,
                                start: now,
                                expected_end: now.plus(job.time_limit),
                            });
                            placements.push(Placement {
                                job: start.job,
                                nodes: start.nodes,
                            });
                        }
                        None if blocks(plan.pending.get(&job.id).map(|p| p.reason)) => break,
                        None => {}
                    }
                }
                Ok(placements)
            }
        }
    }

    /// One timed (and, with checking on, checked) call to the scheduler.
    pub fn call(&mut self, input: &SchedulerInput, now: Timestamp) -> Result<Plan, SimError> {
        self.stats.calls += 1;
        let started = Instant::now();
        let plan = plan(input, now, &mut self.rng);
        self.stats.plan_time += started.elapsed();
        if self.check {
            let started = Instant::now();
            let checked = invariants::check(input, now, &plan);
            self.stats.check_time += started.elapsed();
            if let Err(problem) = checked {
                return Err(SimError::Invariant {
                    policy: self.policy.as_str(),
                    pass: self.stats.passes,
                    at: now,
                    problem,
                    starts: plan.starts.iter().map(|start| start.job.0).collect(),
                });
            }
        }
        Ok(plan)
    }
}
