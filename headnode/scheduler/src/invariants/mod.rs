//! Checks a [`Plan`] against the input it was planned from: the properties every pass must keep.
//!
//! Written independently of the pass (plain loops over the snapshot, no shared helpers beyond
//! `Constraint::matches`), so tests and the simulator can run it after every pass and catch a
//! scheduler bug instead of repeating it.

mod load;
mod policy;
mod reasons;
mod starts;

use crate::{NodeAvailability, PendingJob, Plan, SchedulerInput};
use beowulf_types::{JobId, NodeName, PendingReason, Timestamp};
use load::{fits_free, held_load};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// `Ok` when `plan` is a valid answer to `input` at `now`:
/// - every start names a pending job once, with exactly its `nodes` distinct nodes (sorted by name),
///   its `per_node`, all Up, and no node that receives a start ends up over its capacity (running
///   allocations plus starts: CPUs, memory, GRES);
/// - every start respects site policy: its partition's nodes, access and limits, its constraint,
///   advance reservations (its own window and nodes; others' nodes only if it ends before they
///   begin), satisfied dependencies, its array's throttle, no hold, and no node held for a
///   preemptor;
/// - preemptions name running jobs of a QOS the preemptor's QOS preempts (never mode `Off`), each
///   once, by a job waiting with `Preempting` that then fits its held nodes;
/// - every pending job is either started or in `plan.pending`, never both, and nothing else is there;
/// - reasons are consistent with the input (see `reasons`), `Priority` only behind a top job, and
///   a held job waits with its hold's reason;
/// - the top job (the highest-priority job waiting with `Resources`, or with `Reservation` and an
///   estimate) has an `estimated_start`, and that is exactly its earliest start once the plan's
///   starts are added as running jobs ending at `now + time_limit`: not later (backfill did not delay
///   it) and not earlier (the estimate is honest).
///
/// A job ID listed twice in `input.pending` is judged by its first entry, as [`crate::plan`] does.
pub fn check(input: &SchedulerInput, now: Timestamp, plan: &Plan) -> Result<(), String> {
    let mut jobs: BTreeMap<JobId, &PendingJob> = BTreeMap::new();
    for job in &input.pending {
        jobs.entry(job.id).or_insert(job);
    }

    let started = starts::check(input, now, plan, &jobs)?;
    starts::check_preemptions(input, now, plan, &jobs)?;

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

    let order_key = |id: &JobId| (Reverse(plan.pending[id].priority), jobs[id].submitted, *id);
    let top = plan
        .pending
        .iter()
        .filter(|(_, pending)| {
            pending.reason == PendingReason::Resources
                || (pending.reason == PendingReason::Reservation
                    && pending.estimated_start.is_some())
        })
        .map(|(id, _)| id)
        .min_by_key(|id| order_key(id));

    reasons::check(input, now, plan, &jobs, top.map(&order_key), order_key)?;

    let Some(top) = top else {
        if plan.top_job.is_some() {
            return Err("plan names a top job but no job waits as the top job".to_string());
        }
        return Ok(());
    };
    check_top_job(input, now, plan, &jobs, *top)
}

fn check_top_job(
    input: &SchedulerInput,
    now: Timestamp,
    plan: &Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
    top: JobId,
) -> Result<(), String> {
    let job = jobs[&top];
    let estimate = plan.pending[&top]
        .estimated_start
        .ok_or_else(|| format!("top job {top} has no estimated start"))?;
    if estimate < now {
        return Err(format!(
            "top job {top} is estimated to start at {}, before now ({})",
            estimate.0, now.0
        ));
    }
    let nothing = BTreeSet::new();
    let fits_at = |at: Timestamp| {
        let load = held_load(input, now, plan, jobs, &nothing, |end| end > at);
        let usable: BTreeSet<&NodeName> = input
            .nodes
            .iter()
            .filter(|(name, view)| {
                view.availability == NodeAvailability::Up
                    && policy::static_member(input, job, name, view, true, true)
                    && !policy::window_blocks(input, job, name, at)
                    && fits_free(input, &load, name, job)
            })
            .map(|(name, _)| name)
            .collect();
        usable.len() >= job.nodes as usize && job.required_nodes.iter().all(|n| usable.contains(n))
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
    match &plan.top_job {
        Some(named) if named.job == top && named.start == estimate => {}
        other => {
            return Err(format!(
                "plan.top_job is {other:?}, but the top job is {top} from {}",
                estimate.0
            ));
        }
    }
    Ok(())
}
