//! An allocation held by a running simulated job: its nodes, what it holds on each, and its times.

use beowulf_types::{JobId, NodeName, Resources, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub job: JobId,
    /// Distinct nodes, each holding `per_node`.
    pub nodes: Vec<NodeName>,
    pub per_node: Resources,
    pub start: Timestamp,
    /// Start plus time limit: what the scheduler plans with (the real end is known only to the sim).
    pub expected_end: Timestamp,
}

impl Allocation {
    /// CPUs held over all nodes.
    pub fn cpus(&self) -> u64 {
        self.nodes.len() as u64 * u64::from(self.per_node.cpus)
    }
}
