//! Job dependencies (Slurm's `--dependency`): `afterok`, `afterany`, `afternotok` on other jobs, and
//! `singleton` (one job at a time per user and name).

use beowulf_types::JobId;
use std::fmt;

/// One dependency; a job's list must all hold (Slurm's `,`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// Start after the job ended COMPLETED (exit 0).
    AfterOk(JobId),
    /// Start after the job ended, however it ended.
    AfterAny(JobId),
    /// Start after the job ended in any way but COMPLETED.
    AfterNotOk(JobId),
    /// Start when no other job of the same user and name runs, and no earlier-submitted pending
    /// job of the same user and name that is itself a singleton is waiting.
    Singleton,
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependency::AfterOk(job) => write!(f, "afterok:{job}"),
            Dependency::AfterAny(job) => write!(f, "afterany:{job}"),
            Dependency::AfterNotOk(job) => write!(f, "afternotok:{job}"),
            Dependency::Singleton => f.write_str("singleton"),
        }
    }
}

/// What became of a job another job depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobOutcome {
    Pending,
    Running,
    /// Ended COMPLETED.
    Completed,
    /// Ended any other way (FAILED, CANCELLED, TIMEOUT, NODE_FAIL).
    Failed,
}

impl JobOutcome {
    pub fn has_ended(self) -> bool {
        matches!(self, JobOutcome::Completed | JobOutcome::Failed)
    }
}

/// Whether a dependency on a job in state `outcome` (None: unknown job) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Satisfied,
    /// Not yet.
    Waiting,
    /// Never will.
    Never,
}

/// The verdict of an `after*` dependency given the other job's outcome.
pub fn verdict(dependency: Dependency, outcome: Option<JobOutcome>) -> Verdict {
    let Some(outcome) = outcome else {
        return match dependency {
            Dependency::Singleton => Verdict::Satisfied,
            _ => Verdict::Never,
        };
    };
    let wanted = match dependency {
        Dependency::AfterOk(_) => outcome == JobOutcome::Completed,
        Dependency::AfterNotOk(_) => outcome == JobOutcome::Failed,
        Dependency::AfterAny(_) => true,
        Dependency::Singleton => return Verdict::Satisfied,
    };
    if !outcome.has_ended() {
        Verdict::Waiting
    } else if wanted {
        Verdict::Satisfied
    } else {
        Verdict::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobOutcome::*;

    #[test]
    fn verdicts_follow_slurm() {
        let job = JobId(7);
        assert_eq!(
            verdict(Dependency::AfterOk(job), Some(Running)),
            Verdict::Waiting
        );
        assert_eq!(
            verdict(Dependency::AfterOk(job), Some(Completed)),
            Verdict::Satisfied
        );
        assert_eq!(
            verdict(Dependency::AfterOk(job), Some(Failed)),
            Verdict::Never
        );
        assert_eq!(
            verdict(Dependency::AfterNotOk(job), Some(Completed)),
            Verdict::Never
        );
        assert_eq!(
            verdict(Dependency::AfterNotOk(job), Some(Failed)),
            Verdict::Satisfied
        );
        assert_eq!(
            verdict(Dependency::AfterAny(job), Some(Pending)),
            Verdict::Waiting
        );
        assert_eq!(
            verdict(Dependency::AfterAny(job), Some(Failed)),
            Verdict::Satisfied
        );
        assert_eq!(verdict(Dependency::AfterAny(job), None), Verdict::Never);
    }
}
