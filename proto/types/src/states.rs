//! Job and node states, named as Slurm names them, and the reasons a job waits.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job's state.
///
/// ```text
///            submit
///              │
///              ▼            placed by a plan (Start)
///          PENDING ───────────────────────────▶ RUNNING
///          ▲ │  │ cancel                         │  │ every task exited 0 ──▶ COMPLETED (Complete)
///          │ │  ▼                                │  │ a task exited non-zero ▶ FAILED    (Fail)
///          │ │                                   │  │ the OOM killer ended one ▶ OUT_OF_MEMORY (OutOfMemory)
///          │ │ CANCELLED ◀──────── cancel ───────┘  │ time limit passed ─────▶ TIMEOUT   (TimeOut)
///          │ │                                      │ a node went DOWN, or preempted:
///          │ └─ cannot be delivered (Fail) ─▶ FAILED │
///          ├────────── requeue = true (Requeue) ────┤
///          │                                        └─ requeue = false ──────▶ NODE_FAIL (NodeFail)
///          └── scontrol requeue of a job with requeue = true (Requeue) ◀── RUNNING
/// ```
/// The six states on the right and CANCELLED are terminal. [`JobState::after`] is this diagram
/// as code: the head moves a job only through it. A hold (`scontrol hold`, `sbatch --hold`) is
/// no state: a held job stays PENDING, with reason [`PendingReason::JobHeldUser`] or
/// [`PendingReason::JobHeldAdmin`], until it is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    OutOfMemory,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Timeout,
        JobState::NodeFail,
        JobState::OutOfMemory,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// Slurm's name, as `squeue` and `sacct` print it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
            JobState::Timeout => "TIMEOUT",
            JobState::NodeFail => "NODE_FAIL",
            JobState::OutOfMemory => "OUT_OF_MEMORY",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }
}

/// What happens to a job: the arrows of the diagram on [`JobState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobTransition {
    /// A plan placed it.
    Start,
    /// Its nodes failed (or a preemptor took them, or its owner or root requeued it with
    /// `scontrol requeue`) and it may run again.
    Requeue,
    /// Every task exited 0.
    Complete,
    /// A task exited non-zero, or the run could not be delivered to its nodes.
    Fail,
    /// A user or a preemptor cancelled it.
    Cancel,
    /// Its time limit passed.
    TimeOut,
    /// A node failed and it may not be requeued.
    NodeFail,
    /// The kernel's OOM killer ended a process of the run (its cgroup hit the memory limit).
    OutOfMemory,
}

impl JobTransition {
    pub const ALL: [JobTransition; 8] = [
        JobTransition::Start,
        JobTransition::Requeue,
        JobTransition::Complete,
        JobTransition::Fail,
        JobTransition::Cancel,
        JobTransition::TimeOut,
        JobTransition::NodeFail,
        JobTransition::OutOfMemory,
    ];
}

impl JobState {
    /// The state a job in this state moves to on `transition`, or `None` when the diagram has no
    /// such arrow (every transition out of a terminal state, a start of a running job, ...).
    pub fn after(self, transition: JobTransition) -> Option<JobState> {
        use JobState as S;
        use JobTransition as T;
        match (self, transition) {
            (S::Pending, T::Start) => Some(S::Running),
            (S::Pending | S::Running, T::Cancel) => Some(S::Cancelled),
            (S::Pending | S::Running, T::Fail) => Some(S::Failed),
            (S::Running, T::Complete) => Some(S::Completed),
            (S::Running, T::TimeOut) => Some(S::Timeout),
            (S::Running, T::NodeFail) => Some(S::NodeFail),
            (S::Running, T::OutOfMemory) => Some(S::OutOfMemory),
            (S::Running, T::Requeue) => Some(S::Pending),
            _ => None,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's state as users see it, derived from its health, its admin flag and its allocations.
///
/// ```text
///   agent registers        some CPUs allocated        all CPUs allocated
///   ───────────────▶ IDLE ◀──────────────────▶ MIXED ◀──────────────────▶ ALLOCATED
///                     │ drain                    │ drain                    │ drain
///                     ▼                          ▼                          ▼
///                  DRAINED ◀── last job ends ── DRAINING ◀─────────────────┘
///   (any state) ── heartbeats missed ──▶ DOWN ── agent registers again ──▶ IDLE / DRAINED
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeState {
    Idle,
    Mixed,
    Allocated,
    Draining,
    Drained,
    Down,
}

impl NodeState {
    pub const ALL: [NodeState; 6] = [
        NodeState::Idle,
        NodeState::Mixed,
        NodeState::Allocated,
        NodeState::Draining,
        NodeState::Drained,
        NodeState::Down,
    ];

    /// The inverse of [`NodeState::as_str`] (any case), for states read off the wire.
    pub fn parse(s: &str) -> Option<NodeState> {
        NodeState::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Idle => "IDLE",
            NodeState::Mixed => "MIXED",
            NodeState::Allocated => "ALLOCATED",
            NodeState::Draining => "DRAINING",
            NodeState::Drained => "DRAINED",
            NodeState::Down => "DOWN",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pending job has not started, in Slurm's words where Slurm has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PendingReason {
    /// Not yet considered by a scheduling pass.
    None,
    /// The job is the highest-priority job that cannot start: it waits for resources to free up, and
    /// holds a reservation in the backfill plan.
    Resources,
    /// A higher-priority job is waiting, and starting this one now would delay that job.
    Priority,
    /// Not enough usable nodes: some nodes the job needs are DOWN, drained or draining.
    ReqNodeNotAvail,
    /// The job asks for more than any partition can ever give (checked again at every pass, because the
    /// cluster can shrink after the job was accepted).
    PartitionConfig,
    /// The job was requeued after a node failure and waits to be placed again.
    Requeued,
    /// The job's time limit is longer than its partition's `max_time` (it waits until an admin raises
    /// the limit, as in Slurm).
    PartitionTimeLimit,
    /// The job asks for more nodes than its partition's `max_nodes`.
    PartitionNodeLimit,
    /// The job's account is not among the partition's allowed accounts.
    AccountNotAllowed,
    /// The job's user (or none of its groups) is not among the partition's allowed users or groups.
    /// Slurm refuses such jobs at submit; the head may not, when the partition changed afterwards.
    PartitionNotAllowed,
    /// A dependency (`afterok`, `afterany`, `afternotok`, `singleton`) is not satisfied yet.
    Dependency,
    /// A dependency can never be satisfied (for example `afterok` on a job that failed).
    DependencyNeverSatisfied,
    /// The job's array already runs as many elements as its throttle (`%N`) allows.
    JobArrayTaskLimit,
    /// No node of the partition has the requested features or generic resources (GRES).
    BadConstraints,
    /// An advance reservation keeps the job off the nodes it could use now, or the reservation the
    /// job names does not let it run (unknown, not its user, maintenance, window too short).
    Reservation,
    /// Running jobs of a lower QOS are being preempted for this job; it starts at a later pass.
    Preempting,
    /// Its owner held it (`scontrol hold`, `sbatch --hold`): it is not considered until released.
    JobHeldUser,
    /// Root held it: it is not considered until root releases it.
    JobHeldAdmin,
    /// The job's begin time (`--begin`) has not come yet.
    BeginTime,
}

impl PendingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PendingReason::None => "None",
            PendingReason::Resources => "Resources",
            PendingReason::Priority => "Priority",
            PendingReason::ReqNodeNotAvail => "ReqNodeNotAvail",
            PendingReason::PartitionConfig => "PartitionConfig",
            PendingReason::Requeued => "Requeued",
            PendingReason::PartitionTimeLimit => "PartitionTimeLimit",
            PendingReason::PartitionNodeLimit => "PartitionNodeLimit",
            PendingReason::AccountNotAllowed => "AccountNotAllowed",
            PendingReason::PartitionNotAllowed => "PartitionNotAllowed",
            PendingReason::Dependency => "Dependency",
            PendingReason::DependencyNeverSatisfied => "DependencyNeverSatisfied",
            PendingReason::JobArrayTaskLimit => "JobArrayTaskLimit",
            PendingReason::BadConstraints => "BadConstraints",
            PendingReason::Reservation => "Reservation",
            PendingReason::Preempting => "Preempting",
            PendingReason::JobHeldUser => "JobHeldUser",
            PendingReason::JobHeldAdmin => "JobHeldAdmin",
            PendingReason::BeginTime => "BeginTime",
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who held a pending job, as Slurm tells the two apart: a user hold its owner may release, an
/// admin hold only root may. Ordered by strength (`User < Admin`): a second hold never weakens
/// the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobHold {
    /// Held by its owner (or submitted held, or held by root with `scontrol uhold`).
    User,
    /// Held by root with `scontrol hold`.
    Admin,
}

impl JobHold {
    /// The reason a job held this way waits with.
    pub fn reason(self) -> PendingReason {
        match self {
            JobHold::User => PendingReason::JobHeldUser,
            JobHold::Admin => PendingReason::JobHeldAdmin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_state_names_round_trip_and_only_two_are_live() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                state.is_terminal(),
                !matches!(state, JobState::Pending | JobState::Running)
            );
        }
        assert_eq!(JobState::parse("node_fail"), Some(JobState::NodeFail));
        assert_eq!(JobState::parse("bogus"), None);
    }

    #[test]
    fn transitions_follow_the_diagram_and_never_leave_a_terminal_state() {
        for state in JobState::ALL {
            for transition in JobTransition::ALL {
                let next = state.after(transition);
                if state.is_terminal() {
                    assert_eq!(next, None, "{state} on {transition:?}");
                }
                if let Some(next) = next {
                    assert_ne!(next, state, "{state} on {transition:?} goes nowhere");
                }
            }
        }
        // The arrows, counted: 3 out of PENDING, 7 out of RUNNING.
        let arrows = |state: JobState| {
            JobTransition::ALL
                .into_iter()
                .filter(|t| state.after(*t).is_some())
                .count()
        };
        assert_eq!(arrows(JobState::Pending), 3);
        assert_eq!(arrows(JobState::Running), 7);
        assert_eq!(
            JobState::Running.after(JobTransition::Requeue),
            Some(JobState::Pending)
        );
        assert_eq!(JobState::Pending.after(JobTransition::Complete), None);
    }

    #[test]
    fn a_hold_says_who_held_the_job() {
        assert_eq!(JobHold::User.reason().as_str(), "JobHeldUser");
        assert_eq!(JobHold::Admin.reason().as_str(), "JobHeldAdmin");
    }
}
