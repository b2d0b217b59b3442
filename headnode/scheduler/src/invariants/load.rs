//! What running jobs and a plan's starts hold on each node at a given time: CPUs, memory and GRES.

use crate::{PendingJob, Plan, SchedulerInput};
use beowulf_types::{JobId, NodeName, Resources, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default)]
pub(super) struct Load {
    pub cpus: u64,
    pub memory_mb: u64,
    pub gres: BTreeMap<String, u64>,
    /// Jobs holding the node, and how many of them want it alone.
    pub jobs: u64,
    pub exclusive: u64,
}

impl Load {
    fn add(&mut self, amount: &Resources, gres: &BTreeMap<String, u32>, exclusive: bool) {
        self.jobs += 1;
        self.exclusive += u64::from(exclusive);
        self.cpus = self.cpus.saturating_add(u64::from(amount.cpus));
        self.memory_mb = self.memory_mb.saturating_add(amount.memory_mb);
        for (name, count) in gres {
            *self.gres.entry(name.clone()).or_default() += u64::from(*count);
        }
    }
}

/// Per node, what running jobs (except `skip`) and the plan's starts whose end satisfies `held`
/// hold. Running jobs end at `expected_end`, but never before `now`; starts at `now + time_limit`.
pub(super) fn held_load<'a>(
    input: &'a SchedulerInput,
    now: Timestamp,
    plan: &'a Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
    skip: &BTreeSet<JobId>,
    held: impl Fn(Timestamp) -> bool,
) -> BTreeMap<&'a NodeName, Load> {
    let mut load: BTreeMap<&NodeName, Load> = BTreeMap::new();
    for running in &input.running {
        if !skip.contains(&running.id) && held(running.expected_end.max(now)) {
            for (name, amount) in &running.allocation {
                load.entry(name).or_default().add(
                    amount,
                    &running.gres_per_node,
                    running.exclusive,
                );
            }
        }
    }
    for start in &plan.starts {
        let Some(job) = jobs.get(&start.job) else {
            continue;
        };
        if held(now.plus(job.time_limit)) {
            for name in &start.nodes {
                load.entry(name).or_default().add(
                    &start.per_node,
                    &job.gres_per_node,
                    job.exclusive,
                );
            }
        }
    }
    load
}

/// Whether `job`'s per-node request fits what `load` leaves of the node `name`, and the node may
/// be shared as it must (an exclusive job on a node nobody holds, others where no exclusive job
/// runs).
pub(super) fn fits_free(
    input: &SchedulerInput,
    load: &BTreeMap<&NodeName, Load>,
    name: &NodeName,
    job: &PendingJob,
) -> bool {
    let view = &input.nodes[name];
    let empty = Load::default();
    let used = load.get(name).unwrap_or(&empty);
    let shareable = if job.exclusive {
        used.jobs == 0
    } else {
        used.exclusive == 0
    };
    shareable
        && u64::from(view.capacity.cpus).saturating_sub(used.cpus) >= u64::from(job.per_node.cpus)
        && view.capacity.memory_mb.saturating_sub(used.memory_mb) >= job.per_node.memory_mb
        && job.gres_per_node.iter().all(|(kind, need)| {
            let have = u64::from(view.gres.get(kind).copied().unwrap_or(0));
            have.saturating_sub(used.gres.get(kind).copied().unwrap_or(0)) >= u64::from(*need)
        })
}

/// Whether `job`'s per-node request fits the node's whole capacity (with or without GRES).
pub(super) fn fits_capacity(
    input: &SchedulerInput,
    name: &NodeName,
    job: &PendingJob,
    with_gres: bool,
) -> bool {
    let view = &input.nodes[name];
    view.capacity.fits(&job.per_node)
        && (!with_gres
            || job
                .gres_per_node
                .iter()
                .all(|(kind, need)| view.gres.get(kind).copied().unwrap_or(0) >= *need))
}
