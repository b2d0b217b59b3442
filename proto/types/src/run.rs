//! Run and task keys: which run of a job, and which task (rank) of that run, a value is about.

use crate::JobId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One run of a job: `(job, run)`. A job's run number goes up by one at every start, so a
/// requeued job's new run is never confused with its old one. Shown as `17.2`.
///
/// The agent's ledger persists it as `{"job":17,"run":2}`: its field names and types are part of
/// that format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub job: JobId,
    pub run: u32,
}

impl RunKey {
    /// Task `rank` of this run.
    pub fn task(self, rank: u32) -> TaskKey {
        TaskKey { run: self, rank }
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.job, self.run)
    }
}

/// One task (rank) of a job run. Shown as `task 3 of job 17.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub run: RunKey,
    pub rank: u32,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} of job {}", self.rank, self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_show_as_in_messages() {
        let run = RunKey {
            job: JobId(17),
            run: 2,
        };
        assert_eq!(run.to_string(), "17.2");
        assert_eq!(run.task(3), TaskKey { run, rank: 3 });
        assert_eq!(run.task(3).to_string(), "task 3 of job 17.2");
    }
}
