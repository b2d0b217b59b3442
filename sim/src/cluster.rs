//! The simulated cluster: named nodes, each with a capacity and an availability that node events change.

use crate::job::MEMORY_PER_CPU_MB;
use beowulf_scheduler::NodeAvailability;
use beowulf_types::{NodeName, Resources};
use std::collections::BTreeMap;

/// One simulated node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimNode {
    pub capacity: Resources,
    pub availability: NodeAvailability,
}

/// The nodes, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: BTreeMap<NodeName, SimNode>,
}

impl Cluster {
    /// `count` identical Up nodes with `cpus` CPUs each (and [`MEMORY_PER_CPU_MB`] per CPU), named
    /// `node1`... with the number zero-padded to the width of `count` (`node001`..`node128`), so name
    /// order, which the scheduler's placement follows, is number order.
    pub fn uniform(count: u32, cpus: u32) -> Self {
        let width = count.to_string().len();
        let nodes = (1..=count)
            .map(|i| {
                (
                    NodeName::new(format!("node{i:0width$}")),
                    SimNode {
                        capacity: Resources::new(cpus, u64::from(cpus) * MEMORY_PER_CPU_MB),
                        availability: NodeAvailability::Up,
                    },
                )
            })
            .collect();
        Cluster { nodes }
    }

    /// CPUs of all nodes, whatever their availability.
    pub fn total_cpus(&self) -> u64 {
        self.nodes
            .values()
            .map(|node| u64::from(node.capacity.cpus))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_zero_padded_so_name_order_is_number_order() {
        let cluster = Cluster::uniform(12, 2);
        let names: Vec<&str> = cluster.nodes.keys().map(NodeName::as_str).collect();
        assert_eq!(names[0], "node01");
        assert_eq!(names[9], "node10");
        assert_eq!(names[11], "node12");
        assert_eq!(cluster.total_cpus(), 24);
        assert_eq!(
            Cluster::uniform(4, 1).nodes.keys().next().unwrap().as_str(),
            "node1"
        );
    }
}
