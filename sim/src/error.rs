//! The simulator's errors: parse errors carry the file and line, invariant failures the pass and job.

use beowulf_types::{JobId, NodeName, Timestamp};
use thiserror::Error;

/// A trace in the Standard Workload Format that cannot be read.
#[derive(Debug, Error)]
pub enum SwfError {
    /// `trace.swf:12: field 4 (run time): `abc` is not a number`.
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// A scenario file that cannot be parsed, or whose expectations the simulation did not meet.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// `backfill.scn:7: job 3: `run` is missing`.
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {policy}: {source}")]
    Simulation {
        file: String,
        policy: String,
        #[source]
        source: Box<SimError>,
    },
    /// Every expectation that did not hold, one per line, each naming the line of its `expect`.
    #[error("{file}: {} expectation(s) not met:\n{}", failures.len(), failures.join("\n"))]
    Mismatch { file: String, failures: Vec<String> },
}

/// A simulation that cannot be set up, or a scheduling pass whose plan broke an invariant.
#[derive(Debug, Error)]
pub enum SimError {
    #[error("job {0} is listed twice in the workload")]
    DuplicateJob(JobId),
    #[error("a node event at {} ms names {node}, which is not in the cluster", at.0)]
    UnknownNode { at: Timestamp, node: NodeName },
    /// The message from `invariants::check` names the job; `starts` lists what the pass started.
    #[error(
        "{policy} pass {pass} at t={} ms broke an invariant: {problem} (the pass started jobs {starts:?})",
        at.0
    )]
    Invariant {
        policy: &'static str,
        pass: u64,
        at: Timestamp,
        problem: String,
        starts: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invariant_failure_names_the_policy_pass_time_and_job() {
        let error = SimError::Invariant {
            policy: "easy",
            pass: 17,
            at: Timestamp(42_000),
            problem: "node3 is oversubscribed: 5 CPUs and 0 MiB in use".to_string(),
            starts: vec![9],
        };
        assert_eq!(
            error.to_string(),
            "easy pass 17 at t=42000 ms broke an invariant: node3 is oversubscribed: 5 CPUs and \
             0 MiB in use (the pass started jobs [9])"
        );
    }
}
