//! What a node has and what a job asks for on each node.

use serde::{Deserialize, Serialize};

/// CPUs and memory, on one node.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Resources {
    pub cpus: u32,
    pub memory_mb: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpus: 0,
        memory_mb: 0,
    };

    pub fn new(cpus: u32, memory_mb: u64) -> Self {
        Resources { cpus, memory_mb }
    }

    /// True when `need` fits inside `self`.
    pub fn fits(&self, need: &Resources) -> bool {
        need.cpus <= self.cpus && need.memory_mb <= self.memory_mb
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.saturating_sub(other.cpus),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus: self.cpus + other.cpus,
            memory_mb: self.memory_mb + other.memory_mb,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.cpus == 0 && self.memory_mb == 0
    }
}
