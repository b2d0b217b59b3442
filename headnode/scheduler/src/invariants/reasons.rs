//! Checks that every pending reason is true of the input: holds, limits, reservations,
//! dependencies and throttles for the jobs held back; node counts for the rest.

use super::load::{fits_capacity, fits_free, held_load};
use super::policy;
use crate::constraint::Constraint;
use crate::dependency::Dependency;
use crate::{NodeAvailability, PendingJob, Plan, SchedulerInput};
use beowulf_types::{JobHold, JobId, NodeName, PendingReason, Resources, Timestamp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

type OrderKey = (Reverse<u64>, Timestamp, JobId);

/// Node counts for a job: (static Up nodes whose capacity holds it, static nodes any state, its
/// partition's nodes holding its CPUs and memory, partition and constraint ignoring its
/// reservation, static Up unheld nodes free for it now).
type Counts = (usize, usize, usize, usize, usize);

/// What the counts of a job depend on, so equal jobs of a big queue are counted once.
type CountKey<'a> = (
    Option<&'a str>,
    Option<&'a Constraint>,
    Option<&'a str>,
    Resources,
    &'a BTreeMap<String, u32>,
    &'a BTreeSet<NodeName>,
    bool,
);

pub(super) fn check(
    input: &SchedulerInput,
    now: Timestamp,
    plan: &Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
    top: Option<OrderKey>,
    order_key: impl Fn(&JobId) -> OrderKey,
) -> Result<(), String> {
    let nothing = BTreeSet::new();
    let load = held_load(input, now, plan, jobs, &nothing, |_| true);
    let held = held_nodes(plan);
    let mut array_running: BTreeMap<JobId, u64> = BTreeMap::new();
    for member in input.running.iter().filter_map(|r| r.array.as_ref()).chain(
        plan.starts
            .iter()
            .filter_map(|s| jobs[&s.job].array.as_ref()),
    ) {
        *array_running.entry(member.array).or_default() += 1;
    }
    let started_names: BTreeSet<(&str, &str)> = plan
        .starts
        .iter()
        .map(|s| (jobs[&s.job].user.as_str(), jobs[&s.job].name.as_str()))
        .collect();

    let mut by_shape: BTreeMap<CountKey<'_>, Counts> = BTreeMap::new();
    for (id, pending) in &plan.pending {
        let job = jobs[id];
        let key: CountKey<'_> = (
            job.partition.as_deref(),
            job.constraint.as_ref(),
            job.reservation.as_deref(),
            job.per_node,
            &job.gres_per_node,
            &job.excluded_nodes,
            job.exclusive,
        );
        let (up, all, plain, unreserved, free) = *by_shape.entry(key).or_insert_with(|| {
            let mut counts = (0, 0, 0, 0, 0);
            for (name, view) in &input.nodes {
                let member = policy::static_member(input, job, name, view, true, true);
                let holds = fits_capacity(input, name, job, true);
                if member && holds {
                    counts.1 += 1;
                    if view.availability == NodeAvailability::Up {
                        counts.0 += 1;
                        if !held.contains(name) && fits_free(input, &load, name, job) {
                            counts.4 += 1;
                        }
                    }
                }
                if policy::static_member(input, job, name, view, false, false)
                    && fits_capacity(input, name, job, false)
                {
                    counts.2 += 1;
                }
                if policy::static_member(input, job, name, view, true, false) && holds {
                    counts.3 += 1;
                }
            }
            counts
        });
        let want = job.nodes as usize;
        let partition = policy::partition(input, job);
        let limits = partition.ok().flatten();
        let (waits, never) = policy::dependency_state(input, job);
        // Required nodes (`--nodelist`): whether one can never take the job (missing, outside its
        // nodes, too small, or more of them than it asks for), one is unavailable, one is busy.
        let required = |ok: &dyn Fn(&NodeName, &crate::NodeView) -> bool| {
            job.required_nodes
                .iter()
                .all(|name| input.nodes.get(name).is_some_and(|view| ok(name, view)))
        };
        let required_never = job.required_nodes.len() > want
            || !required(&|name, view| {
                policy::static_member(input, job, name, view, true, true)
                    && fits_capacity(input, name, job, true)
            });
        let required_down = !required(&|_, view| view.availability == NodeAvailability::Up);
        let required_busy =
            !required(&|name, _| !held.contains(name) && fits_free(input, &load, name, job));
        let fits_eventually = want > 0 && up >= want && !required_never && !required_down;
        let has_constraints = job.constraint.is_some()
            || !job.gres_per_node.is_empty()
            || !job.excluded_nodes.is_empty()
            || !job.required_nodes.is_empty();
        if let Some(hold) = job.held
            && pending.reason != hold.reason()
        {
            return Err(format!(
                "job {id} is held but waits with reason {}",
                pending.reason
            ));
        }
        let ok = match pending.reason {
            PendingReason::JobHeldUser => job.held == Some(JobHold::User),
            PendingReason::JobHeldAdmin => job.held == Some(JobHold::Admin),
            PendingReason::PartitionConfig => {
                partition.is_err() || want == 0 || (all < want && plain < want)
            }
            PendingReason::PartitionTimeLimit => {
                limits.is_some_and(|p| p.max_time.is_some_and(|max| job.time_limit > max))
            }
            PendingReason::PartitionNodeLimit => {
                limits.is_some_and(|p| p.max_nodes.is_some_and(|max| job.nodes > max))
            }
            PendingReason::AccountNotAllowed => {
                limits.is_some_and(|p| !policy::account_allowed(p, job))
            }
            PendingReason::PartitionNotAllowed => {
                limits.is_some_and(|p| !policy::user_allowed(p, job))
            }
            PendingReason::Dependency => {
                waits
                    || (job.dependencies.contains(&Dependency::Singleton)
                        && started_names.contains(&(job.user.as_str(), job.name.as_str())))
            }
            PendingReason::DependencyNeverSatisfied => never,
            PendingReason::JobArrayTaskLimit => job.array.is_some_and(|member| {
                member.max_running.is_some_and(|max| {
                    array_running.get(&member.array).copied().unwrap_or(0) >= u64::from(max)
                })
            }),
            PendingReason::BadConstraints => {
                has_constraints && ((all < want && plain >= want) || required_never)
            }
            PendingReason::Reservation => {
                !policy::named_reservation_usable(input, job, now)
                    || (job.reservation.is_some() && all < want && unreserved >= want)
                    || blocked_by_window(input, job, now, &load, &held)
                    || (job.reservation.is_some() && pending.estimated_start.is_none())
            }
            PendingReason::ReqNodeNotAvail => {
                want > 0 && ((up < want && all >= want) || (!required_never && required_down))
            }
            PendingReason::Resources => fits_eventually && (free < want || required_busy),
            PendingReason::Priority => {
                fits_eventually && top.is_some_and(|top| top < order_key(id))
            }
            // Checked with the preemptions.
            PendingReason::Preempting => true,
            PendingReason::BeginTime => {
                job.begin.is_some_and(|at| at > now) && pending.estimated_start == job.begin
            }
            PendingReason::None | PendingReason::Requeued => false,
        };
        if !ok {
            return Err(format!(
                "job {id} waits with reason {} but needs {want} x {:?} (Up nodes that could hold \
                 it: {up}, all nodes: {all}, Up nodes free for it now: {free})",
                pending.reason, job.per_node,
            ));
        }
    }
    Ok(())
}

/// Whether advance reservations keep the job from nodes where it would otherwise fit now: some
/// reservation blocks a static node of the job for a start now, and the job does not fit the
/// static nodes left (or a node it requires is one of those blocked).
fn blocked_by_window(
    input: &SchedulerInput,
    job: &PendingJob,
    now: Timestamp,
    load: &BTreeMap<&NodeName, super::load::Load>,
    held: &BTreeSet<&NodeName>,
) -> bool {
    let mut blocked_any = false;
    let mut blocked_required = false;
    let mut usable = 0;
    for (name, view) in &input.nodes {
        if view.availability != NodeAvailability::Up
            || !policy::static_member(input, job, name, view, true, true)
        {
            continue;
        }
        if policy::window_blocks(input, job, name, now) {
            blocked_any = true;
            blocked_required |= job.required_nodes.contains(name);
        } else if !held.contains(name) && fits_free(input, load, name, job) {
            usable += 1;
        }
    }
    blocked_any && (usable < job.nodes as usize || blocked_required)
}

/// Names of nodes held for preemptors.
fn held_nodes(plan: &Plan) -> BTreeSet<&NodeName> {
    plan.held_for_preemptors.values().flatten().collect()
}
