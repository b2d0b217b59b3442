//! Checks a [`Plan`] against the input it was planned from: the properties every pass must keep.
//!
//! Written independently of the pass (plain sums over the snapshot, no shared helpers), so tests and
//! the simulator can run it after every pass and catch a scheduler bug instead of repeating it.

use crate::{NodeAvailability, PendingJob, Plan, SchedulerInput};
use beowulf_types::{JobId, NodeName, PendingReason, Resources, Timestamp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// `Ok` when `plan` is a valid answer to `input` at `now`:
/// - every start names a pending job once, with exactly its `nodes` distinct nodes (sorted by name),
///   its `per_node`, all Up, and no node that receives a start ends up over its capacity (running
///   allocations plus starts, CPUs and memory);
/// - every pending job is either started or in `plan.pending`, never both, and nothing else is there;
/// - reasons are consistent: `PartitionConfig` only for jobs the whole cluster cannot hold,
///   `ReqNodeNotAvail` only for jobs only Drain/Down nodes would let fit, `Resources` only for jobs
///   that do not fit the free resources, `Priority` only behind a top job;
/// - the top job (the highest-priority `Resources` job) has an `estimated_start`, and that is exactly
///   its earliest start once the plan's starts are added as running jobs ending at `now + time_limit`:
///   not later (backfill did not delay it) and not earlier (the estimate is honest).
///
/// A job ID listed twice in `input.pending` is judged by its first entry, as [`crate::plan`] does.
pub fn check(input: &SchedulerInput, now: Timestamp, plan: &Plan) -> Result<(), String> {
    let mut jobs: BTreeMap<JobId, &PendingJob> = BTreeMap::new();
    for job in &input.pending {
        jobs.entry(job.id).or_insert(job);
    }

    // Starts: well-formed, on Up nodes.
    let mut started = BTreeSet::new();
    let mut touched = BTreeSet::new();
    for start in &plan.starts {
        let job = jobs
            .get(&start.job)
            .ok_or_else(|| format!("job {} starts but is not pending", start.job))?;
        if !started.insert(start.job) {
            return Err(format!("job {} starts twice", start.job));
        }
        if plan.pending.contains_key(&start.job) {
            return Err(format!("job {} both starts and waits", start.job));
        }
        if start.per_node != job.per_node {
            return Err(format!(
                "job {} starts with {:?} per node but asked for {:?}",
                start.job, start.per_node, job.per_node
            ));
        }
        if start.nodes.len() != job.nodes as usize {
            return Err(format!(
                "job {} asked for {} nodes but starts on {}",
                start.job,
                job.nodes,
                start.nodes.len()
            ));
        }
        let distinct: BTreeSet<&NodeName> = start.nodes.iter().collect();
        if distinct.len() != start.nodes.len() {
            return Err(format!(
                "job {} starts on a node twice: {:?}",
                start.job, start.nodes
            ));
        }
        if !start.nodes.is_sorted() {
            return Err(format!(
                "job {}'s nodes are not sorted by name: {:?}",
                start.job, start.nodes
            ));
        }
        for name in &start.nodes {
            match input.nodes.get(name).map(|view| view.availability) {
                Some(NodeAvailability::Up) => {}
                Some(other) => {
                    return Err(format!(
                        "job {} starts on {name}, which is {other:?}",
                        start.job
                    ));
                }
                None => return Err(format!("job {} starts on unknown node {name}", start.job)),
            }
            touched.insert(name);
        }
    }

    // No node that receives work is oversubscribed.
    let load = held_load(input, now, plan, &jobs, |_| true);
    for name in touched {
        let capacity = input.nodes[name].capacity;
        let (cpus, memory_mb) = load.get(name).copied().unwrap_or_default();
        if cpus > u64::from(capacity.cpus) || memory_mb > capacity.memory_mb {
            return Err(format!(
                "{name} is oversubscribed: {cpus} CPUs and {memory_mb} MiB in use of {capacity:?}"
            ));
        }
    }

    // Every pending job is accounted for exactly once.
    for id in plan.pending.keys() {
        if !jobs.contains_key(id) {
            return Err(format!("plan.pending lists job {id}, which is not pending"));
        }
    }
    for id in jobs.keys() {
        if !started.contains(id) && !plan.pending.contains_key(id) {
            return Err(format!("job {id} neither starts nor has a pending reason"));
        }
    }

    // The top job: highest priority among the `Resources` jobs (earlier jobs started or never fit).
    let order_key = |id: &JobId| (Reverse(plan.pending[id].priority), jobs[id].submitted, *id);
    let top = plan
        .pending
        .iter()
        .filter(|(_, pending)| pending.reason == PendingReason::Resources)
        .map(|(id, _)| id)
        .min_by_key(|id| order_key(id));

    // Reasons agree with the cluster.
    let free_now = free_up(input, &load);
    // Per request shape: (Up nodes that could hold it, all nodes that could, Up nodes free for it
    // now); one scan per shape keeps the check cheap on big queues.
    let mut by_shape: BTreeMap<Resources, (usize, usize, usize)> = BTreeMap::new();
    for (id, pending) in &plan.pending {
        let job = jobs[id];
        let (up_capacity, all_capacity, free_for_it) =
            *by_shape.entry(job.per_node).or_insert_with(|| {
                (
                    count_fitting(input, &job.per_node, true),
                    count_fitting(input, &job.per_node, false),
                    fitting_free(&free_now, &job.per_node),
                )
            });
        let want = job.nodes as usize;
        let fits_eventually = want > 0 && up_capacity >= want;
        let ok = match pending.reason {
            PendingReason::PartitionConfig => want == 0 || all_capacity < want,
            PendingReason::ReqNodeNotAvail => {
                want > 0 && up_capacity < want && all_capacity >= want
            }
            PendingReason::Resources => fits_eventually && free_for_it < want,
            PendingReason::Priority => {
                fits_eventually && top.is_some_and(|top| order_key(top) < order_key(id))
            }
            PendingReason::None | PendingReason::Requeued => false,
        };
        if !ok {
            return Err(format!(
                "job {id} waits with reason {} but needs {want} x {:?} (Up nodes that could hold \
                 it: {up_capacity}, all nodes: {all_capacity}, Up nodes free for it now: \
                 {free_for_it})",
                pending.reason, job.per_node,
            ));
        }
    }

    let Some(top) = top else {
        return Ok(());
    };
    let job = jobs[top];
    let estimate = plan.pending[top]
        .estimated_start
        .ok_or_else(|| format!("top job {top} has no estimated start"))?;
    if estimate < now {
        return Err(format!(
            "top job {top} is estimated to start at {}, before now ({})",
            estimate.0, now.0
        ));
    }
    let fits_at = |at: Timestamp| {
        let load = held_load(input, now, plan, &jobs, |end| end > at);
        fitting_free(&free_up(input, &load), &job.per_node) >= job.nodes as usize
    };
    if !fits_at(estimate) {
        return Err(format!(
            "backfill delays top job {top}: with the plan's starts it no longer fits at its \
             estimated start {}",
            estimate.0
        ));
    }
    if estimate > now && fits_at(Timestamp(estimate.0 - 1)) {
        return Err(format!(
            "top job {top} could start before its estimated start {}",
            estimate.0
        ));
    }
    Ok(())
}

/// CPUs and memory held per node by running jobs and the plan's starts whose end satisfies `held`.
/// Running jobs end at `expected_end`, but never before `now` (an overdue job still holds its
/// resources until it is cleaned up); starts end at `now + time_limit`.
fn held_load<'a>(
    input: &'a SchedulerInput,
    now: Timestamp,
    plan: &'a Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
    held: impl Fn(Timestamp) -> bool,
) -> BTreeMap<&'a NodeName, (u64, u64)> {
    let mut load: BTreeMap<&NodeName, (u64, u64)> = BTreeMap::new();
    let mut add = |name: &'a NodeName, amount: &Resources| {
        let entry = load.entry(name).or_default();
        entry.0 = entry.0.saturating_add(u64::from(amount.cpus));
        entry.1 = entry.1.saturating_add(amount.memory_mb);
    };
    for running in &input.running {
        if held(running.expected_end.max(now)) {
            for (name, amount) in &running.allocation {
                add(name, amount);
            }
        }
    }
    for start in &plan.starts {
        let Some(job) = jobs.get(&start.job) else {
            continue;
        };
        if held(now.plus(job.time_limit)) {
            for name in &start.nodes {
                add(name, &start.per_node);
            }
        }
    }
    load
}

/// Free resources of each Up node under `load`.
fn free_up(input: &SchedulerInput, load: &BTreeMap<&NodeName, (u64, u64)>) -> Vec<Resources> {
    input
        .nodes
        .iter()
        .filter(|(_, view)| view.availability == NodeAvailability::Up)
        .map(|(name, view)| {
            let (cpus, memory_mb) = load.get(name).copied().unwrap_or_default();
            Resources {
                cpus: u64::from(view.capacity.cpus).saturating_sub(cpus) as u32,
                memory_mb: view.capacity.memory_mb.saturating_sub(memory_mb),
            }
        })
        .collect()
}

fn fitting_free(free: &[Resources], need: &Resources) -> usize {
    free.iter().filter(|free| free.fits(need)).count()
}

/// Nodes whose whole capacity holds `need`: only Up nodes, or all nodes.
fn count_fitting(input: &SchedulerInput, need: &Resources, up_only: bool) -> usize {
    input
        .nodes
        .values()
        .filter(|view| !up_only || view.availability == NodeAvailability::Up)
        .filter(|view| view.capacity.fits(need))
        .count()
}
