//! A job of a simulated workload (what is submitted, and how long it really runs) and what became of it.

use beowulf_types::{JobId, JobState, Millis, NodeName, Resources, Timestamp};

/// Memory a simulated job asks for per CPU on each node (the head's default, 128 MiB per CPU); nodes
/// get the same per CPU, so CPUs, not memory, decide where jobs fit.
pub const MEMORY_PER_CPU_MB: u64 = 128;

/// One job of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub submit: Timestamp,
    /// Number of distinct nodes.
    pub nodes: u32,
    /// What the job needs on each of its nodes.
    pub per_node: Resources,
    /// How long the job would run if nothing stopped it; it is stopped at `time_limit` (TIMEOUT).
    pub runtime: Millis,
    /// What the user asked for; the scheduler plans with this, never with `runtime`.
    pub time_limit: Millis,
    /// Whether the job goes back to the queue when one of its nodes goes down (else NODE_FAIL).
    pub requeue: bool,
}

impl Job {
    /// CPUs the job holds while it runs.
    pub fn cpus(&self) -> u64 {
        u64::from(self.nodes) * u64::from(self.per_node.cpus)
    }

    /// How long a run lasts, and the state it ends in: the runtime, capped at the time limit.
    pub fn run_end(&self) -> (Millis, JobState) {
        if self.runtime > self.time_limit {
            (self.time_limit, JobState::Timeout)
        } else {
            (self.runtime, JobState::Completed)
        }
    }
}

/// A job at the end of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOutcome {
    pub id: JobId,
    pub submit: Timestamp,
    /// COMPLETED, TIMEOUT, NODE_FAIL, or PENDING for a job that never started.
    pub state: JobState,
    /// Start of the last run (a requeued job runs more than once).
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    /// Nodes of the last run.
    pub nodes: Vec<NodeName>,
    /// CPUs the job held while running.
    pub cpus: u64,
    /// How many times the job started.
    pub runs: u32,
}

impl JobOutcome {
    /// Time from submit to the start of the last run.
    pub fn wait(&self) -> Option<Millis> {
        self.start.map(|start| start.since(self.submit))
    }

    /// Length of the last run.
    pub fn run(&self) -> Option<Millis> {
        Some(self.end?.since(self.start?))
    }
}
