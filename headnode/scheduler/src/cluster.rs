//! The pass's table of nodes: capacity, what is in use, what is free now, and when allocations end.

use crate::{NodeAvailability, SchedulerInput};
use beowulf_types::{NodeName, Resources, Timestamp};

/// Resources in use on one node. Summed in `u64` so that many allocations cannot overflow a node's
/// `u32` CPU count; sums saturate (no real node comes near `u64::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub cpus: u64,
    pub memory_mb: u64,
}

impl Usage {
    pub fn add(&mut self, amount: &Resources) {
        self.cpus = self.cpus.saturating_add(u64::from(amount.cpus));
        self.memory_mb = self.memory_mb.saturating_add(amount.memory_mb);
    }

    pub fn sub(&mut self, amount: &Resources) {
        self.cpus = self.cpus.saturating_sub(u64::from(amount.cpus));
        self.memory_mb = self.memory_mb.saturating_sub(amount.memory_mb);
    }

    /// What is left of `capacity` with this usage; zero, never negative, on an oversubscribed node.
    pub fn free_of(&self, capacity: &Resources) -> Resources {
        Resources {
            // Never more than `capacity.cpus`, so the cast back to u32 is lossless.
            cpus: u64::from(capacity.cpus).saturating_sub(self.cpus) as u32,
            memory_mb: capacity.memory_mb.saturating_sub(self.memory_mb),
        }
    }
}

/// An allocation on one node that ends at a known time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Release {
    pub at: Timestamp,
    pub node: usize,
    pub amount: Resources,
}

/// Nodes by index; index order is `NodeName` order (the input is a `BTreeMap`), so sorting indices
/// sorts names.
#[derive(Debug)]
pub(crate) struct Cluster<'a> {
    pub names: Vec<&'a NodeName>,
    pub capacity: Vec<Resources>,
    pub availability: Vec<NodeAvailability>,
    /// Running allocations plus the starts chosen so far in this pass.
    pub used: Vec<Usage>,
    /// `capacity - used`, kept in step with `used`.
    pub free: Vec<Resources>,
    /// Indices of the nodes that may receive new work, ascending.
    pub up: Vec<usize>,
    /// Free CPUs summed over the Up nodes: at zero, no job that needs a CPU can start this pass.
    pub free_up_cpus: u64,
    /// CPUs of the Up and Drain nodes: the "cluster size" of the priority's size factor.
    pub total_cpus: u64,
    /// When allocations on Up nodes end: running jobs at their expected end (an overdue job at
    /// `now`: it may end at any moment), jobs started in this pass at `now + time_limit`. Allocations
    /// on other nodes are left out: nothing new is placed there.
    pub releases: Vec<Release>,
}

impl<'a> Cluster<'a> {
    pub fn new(input: &'a SchedulerInput, now: Timestamp) -> Cluster<'a> {
        let count = input.nodes.len();
        let mut names = Vec::with_capacity(count);
        let mut capacity = Vec::with_capacity(count);
        let mut availability = Vec::with_capacity(count);
        let mut up = Vec::new();
        let mut total_cpus = 0u64;
        for (index, (name, view)) in input.nodes.iter().enumerate() {
            names.push(name);
            capacity.push(view.capacity);
            availability.push(view.availability);
            match view.availability {
                NodeAvailability::Up => {
                    up.push(index);
                    total_cpus += u64::from(view.capacity.cpus);
                }
                NodeAvailability::Drain => total_cpus += u64::from(view.capacity.cpus),
                NodeAvailability::Down => {}
            }
        }

        let mut used = vec![Usage::default(); count];
        let mut releases = Vec::new();
        for job in &input.running {
            let at = job.expected_end.max(now);
            for (name, amount) in &job.allocation {
                // An allocation on a node the snapshot does not list holds nothing the pass can use.
                let Ok(node) = names.binary_search(&name) else {
                    continue;
                };
                used[node].add(amount);
                if availability[node] == NodeAvailability::Up {
                    releases.push(Release {
                        at,
                        node,
                        amount: *amount,
                    });
                }
            }
        }

        let free: Vec<Resources> = (0..count).map(|i| used[i].free_of(&capacity[i])).collect();
        let free_up_cpus = up.iter().map(|&i| u64::from(free[i].cpus)).sum();
        Cluster {
            names,
            capacity,
            availability,
            used,
            free,
            up,
            free_up_cpus,
            total_cpus,
            releases,
        }
    }

    /// Records a start chosen in this pass: `per_node` on each of `nodes` (all Up), until `until`.
    pub fn allocate(&mut self, nodes: &[usize], per_node: &Resources, until: Timestamp) {
        for &node in nodes {
            debug_assert_eq!(self.availability[node], NodeAvailability::Up);
            let before = self.free[node].cpus;
            self.used[node].add(per_node);
            self.free[node] = self.used[node].free_of(&self.capacity[node]);
            self.free_up_cpus -= u64::from(before - self.free[node].cpus);
            self.releases.push(Release {
                at: until,
                node,
                amount: *per_node,
            });
        }
    }

    /// True when no Up node has a free CPU, so only jobs asking for zero CPUs could still start.
    pub fn no_free_cpu(&self) -> bool {
        self.free_up_cpus == 0
    }
}
