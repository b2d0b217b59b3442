//! The pass's table of nodes: capacity, what is in use, what is free now, and when allocations end.

use crate::gres::{self, GresKinds, Need};
use crate::{NodeAvailability, SchedulerInput};
use beowulf_types::{NodeName, Resources, Timestamp};

/// Resources in use on one node, and how many jobs hold them. Summed in `u64` so that many
/// allocations cannot overflow a node's `u32` CPU count; sums saturate (no real node comes near
/// `u64::MAX`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub cpus: u64,
    pub memory_mb: u64,
    /// Allocations on the node.
    pub jobs: u64,
    /// Those of them that want the node alone (`--exclusive`).
    pub exclusive: u64,
}

impl Usage {
    /// Adds one job's allocation.
    pub fn add(&mut self, amount: &Resources, exclusive: bool) {
        self.cpus = self.cpus.saturating_add(u64::from(amount.cpus));
        self.memory_mb = self.memory_mb.saturating_add(amount.memory_mb);
        self.jobs = self.jobs.saturating_add(1);
        self.exclusive = self.exclusive.saturating_add(u64::from(exclusive));
    }

    /// Removes one job's allocation.
    pub fn sub(&mut self, amount: &Resources, exclusive: bool) {
        self.cpus = self.cpus.saturating_sub(u64::from(amount.cpus));
        self.memory_mb = self.memory_mb.saturating_sub(amount.memory_mb);
        self.jobs = self.jobs.saturating_sub(1);
        self.exclusive = self.exclusive.saturating_sub(u64::from(exclusive));
    }

    /// Whether a job needing `need` may share the node with what holds it now: an exclusive job
    /// only a node nobody holds, any other job only a node no exclusive job holds.
    #[inline]
    pub fn admits(&self, need: &Need) -> bool {
        if need.exclusive {
            self.jobs == 0
        } else {
            self.exclusive == 0
        }
    }

    /// Whether `need` fits what is free of `capacity` and may share the node (see [`Usage::admits`]);
    /// GRES are checked apart.
    #[inline]
    pub fn holds(&self, capacity: &Resources, need: &Need) -> bool {
        self.admits(need) && self.free_of(capacity).fits(&need.per_node)
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    pub at: Timestamp,
    pub node: usize,
    pub amount: Resources,
    /// GRES released, as (kind, count).
    pub gres: Vec<(usize, u32)>,
    /// The allocation was an exclusive job's.
    pub exclusive: bool,
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
    /// GRES kinds, and per node the capacity and use by kind (empty rows when no node has GRES).
    pub gres_kinds: GresKinds<'a>,
    pub gres_capacity: Vec<Vec<u32>>,
    pub gres_used: Vec<Vec<u32>>,
    /// Nodes held for a preemptor in this pass: nothing else starts there now.
    pub claimed: Vec<bool>,
    /// Whether any node is claimed: lets the hot scans skip `claimed` in the common case.
    pub any_claimed: bool,
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
        let gres_kinds = GresKinds::new(input.nodes.values().flat_map(|view| view.gres.keys()));
        let mut gres_capacity = Vec::with_capacity(count);
        for (index, (name, view)) in input.nodes.iter().enumerate() {
            names.push(name);
            capacity.push(view.capacity);
            availability.push(view.availability);
            gres_capacity.push(gres_kinds.table(&view.gres));
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
        let mut gres_used = vec![vec![0u32; gres_kinds.len()]; count];
        let mut releases = Vec::new();
        for job in &input.running {
            let at = job.expected_end.max(now);
            let gres = gres_kinds.need(&job.gres_per_node);
            for (name, amount) in &job.allocation {
                // An allocation on a node the snapshot does not list holds nothing the pass can use.
                let Ok(node) = names.binary_search(&name) else {
                    continue;
                };
                used[node].add(amount, job.exclusive);
                add_gres(&mut gres_used[node], &gres);
                if availability[node] == NodeAvailability::Up {
                    releases.push(Release {
                        at,
                        node,
                        amount: *amount,
                        gres: gres.clone(),
                        exclusive: job.exclusive,
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
            gres_kinds,
            gres_capacity,
            gres_used,
            claimed: vec![false; count],
            any_claimed: false,
            free_up_cpus,
            total_cpus,
            releases,
        }
    }

    /// Free GRES of `node` by kind under `gres_used`.
    pub fn gres_free(&self, gres_used: &[Vec<u32>], node: usize) -> Vec<u32> {
        self.gres_capacity[node]
            .iter()
            .zip(&gres_used[node])
            .map(|(have, used)| have.saturating_sub(*used))
            .collect()
    }

    /// Whether `need`'s GRES fit on `node` under `gres_used` (always, when it needs none).
    #[inline]
    pub fn gres_fit(&self, gres_used: &[Vec<u32>], node: usize, need: &Need) -> bool {
        need.gres.is_empty() || gres::fits(&self.gres_free(gres_used, node), &need.gres)
    }

    /// Whether a start now may use `node` for `need` beyond CPUs and memory: not held for a
    /// preemptor, shareable as `need` asks (exclusive jobs), and its free GRES hold `need`'s.
    #[inline]
    pub fn open_for(&self, node: usize, need: &Need) -> bool {
        (!self.any_claimed || !self.claimed[node])
            && self.used[node].admits(need)
            && self.gres_fit(&self.gres_used, node, need)
    }

    /// Whether `need` fits the node's whole capacity.
    pub fn capacity_fits(&self, node: usize, need: &Need) -> bool {
        self.capacity[node].fits(&need.per_node)
            && (need.gres.is_empty() || gres::fits(&self.gres_capacity[node], &need.gres))
    }

    /// Records a start chosen in this pass: `need` on each of `nodes` (all Up), until `until`.
    pub fn allocate(&mut self, nodes: &[usize], need: &Need, until: Timestamp) {
        for &node in nodes {
            debug_assert_eq!(self.availability[node], NodeAvailability::Up);
            let before = self.free[node].cpus;
            self.used[node].add(&need.per_node, need.exclusive);
            add_gres(&mut self.gres_used[node], &need.gres);
            self.free[node] = self.used[node].free_of(&self.capacity[node]);
            self.free_up_cpus -= u64::from(before - self.free[node].cpus);
            self.releases.push(Release {
                at: until,
                node,
                amount: need.per_node,
                gres: need.gres.clone(),
                exclusive: need.exclusive,
            });
        }
    }

    /// Holds `nodes` for a preemptor: nothing else starts there in this pass.
    pub fn claim(&mut self, nodes: &[usize]) {
        for &node in nodes {
            if !self.claimed[node] {
                self.claimed[node] = true;
                self.any_claimed = true;
                self.free_up_cpus -= u64::from(self.free[node].cpus);
            }
        }
    }

    /// True when no Up node has a free CPU, so only jobs asking for zero CPUs could still start.
    pub fn no_free_cpu(&self) -> bool {
        self.free_up_cpus == 0
    }
}

pub(crate) fn add_gres(used: &mut [u32], gres: &[(usize, u32)]) {
    for &(kind, count) in gres {
        if let Some(slot) = used.get_mut(kind) {
            *slot = slot.saturating_add(count);
        }
    }
}

pub(crate) fn sub_gres(used: &mut [u32], gres: &[(usize, u32)]) {
    for &(kind, count) in gres {
        if let Some(slot) = used.get_mut(kind) {
            *slot = slot.saturating_sub(count);
        }
    }
}
