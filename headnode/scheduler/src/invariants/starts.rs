//! Checks of a plan's starts (shape, nodes, capacity, policy) and of its preemptions.

use super::load::{Load, fits_free, held_load};
use super::policy;
use crate::dependency::Dependency;
use crate::qos::PreemptMode;
use crate::{NodeAvailability, PendingJob, Plan, SchedulerInput};
use beowulf_types::{JobId, NodeName, PendingReason, Timestamp};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Checks every start; returns the started job IDs.
pub(super) fn check(
    input: &SchedulerInput,
    now: Timestamp,
    plan: &Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
) -> Result<BTreeSet<JobId>, String> {
    let mut started = BTreeSet::new();
    let mut touched = BTreeSet::new();
    let mut array_running: BTreeMap<JobId, u64> = BTreeMap::new();
    for running in &input.running {
        if let Some(member) = &running.array {
            *array_running.entry(member.array).or_default() += 1;
        }
    }
    let mut started_names: BTreeSet<(&str, &str)> = BTreeSet::new();
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
        check_policy(input, now, job)?;
        if let Some(missing) = job.required_nodes.iter().find(|n| !distinct.contains(n)) {
            return Err(format!(
                "job {} starts on {:?} without its required node {missing}",
                start.job, start.nodes
            ));
        }
        for name in &start.nodes {
            let view = match input.nodes.get(name) {
                Some(view) if view.availability == NodeAvailability::Up => view,
                Some(view) => {
                    return Err(format!(
                        "job {} starts on {name}, which is {:?}",
                        start.job, view.availability
                    ));
                }
                None => return Err(format!("job {} starts on unknown node {name}", start.job)),
            };
            if !policy::static_member(input, job, name, view, true, true) {
                return Err(format!(
                    "job {} starts on {name}, outside its partition, constraint or reservation",
                    start.job
                ));
            }
            if policy::window_blocks(input, job, name, now) {
                return Err(format!(
                    "job {} starts on {name}, which an advance reservation keeps from its run",
                    start.job
                ));
            }
            // Held nodes take no start considered after the preemptor (lower in queue order).
            let key = |priority: u64, job: &PendingJob| (Reverse(priority), job.submitted, job.id);
            let mine = key(start.priority, job);
            let later = plan.held_for_preemptors.iter().any(|(preemptor, nodes)| {
                nodes.contains(name)
                    && plan.pending.get(preemptor).is_some_and(|p| {
                        jobs.get(preemptor)
                            .is_some_and(|j| key(p.priority, j) < mine)
                    })
            });
            if later {
                return Err(format!(
                    "job {} starts on {name}, which is held for a preemptor",
                    start.job
                ));
            }
            touched.insert(name);
        }
        if let Some(member) = &job.array {
            let running = array_running.entry(member.array).or_default();
            if member
                .max_running
                .is_some_and(|max| *running >= u64::from(max))
            {
                return Err(format!(
                    "job {} starts but array {} already runs {} of at most {:?}",
                    start.job, member.array, running, member.max_running
                ));
            }
            *running += 1;
        }
        let key = (job.user.as_str(), job.name.as_str());
        if job.dependencies.contains(&Dependency::Singleton) && started_names.contains(&key) {
            return Err(format!(
                "singleton job {} starts in the same pass as another job named {:?} of {:?}",
                start.job, job.name, job.user
            ));
        }
        started_names.insert(key);
    }

    // No node that receives work is oversubscribed.
    let nothing = BTreeSet::new();
    let load = held_load(input, now, plan, jobs, &nothing, |_| true);
    for name in touched {
        let view = &input.nodes[name];
        let empty = Load::default();
        let used = load.get(name).unwrap_or(&empty);
        let over_gres = used
            .gres
            .iter()
            .any(|(kind, count)| *count > u64::from(view.gres.get(kind).copied().unwrap_or(0)));
        if used.exclusive > 0 && used.jobs > 1 {
            return Err(format!(
                "{name} runs {} jobs, {} of them exclusive",
                used.jobs, used.exclusive
            ));
        }
        if used.cpus > u64::from(view.capacity.cpus)
            || used.memory_mb > view.capacity.memory_mb
            || over_gres
        {
            return Err(format!(
                "{name} is oversubscribed: {} CPUs, {} MiB and GRES {:?} in use of {:?}, GRES {:?}",
                used.cpus, used.memory_mb, used.gres, view.capacity, view.gres
            ));
        }
    }
    Ok(started)
}

/// No hold, partition access and limits, the named reservation, dependencies.
fn check_policy(input: &SchedulerInput, now: Timestamp, job: &PendingJob) -> Result<(), String> {
    let id = job.id;
    if let Some(hold) = job.held {
        return Err(format!("job {id} starts while held ({})", hold.reason()));
    }
    if job.begin.is_some_and(|at| at > now) {
        return Err(format!("job {id} starts before its begin time"));
    }
    let partition = policy::partition(input, job)
        .map_err(|()| format!("job {id} starts without a partition to run in"))?;
    if let Some(p) = partition {
        if !policy::user_allowed(p, job) || !policy::account_allowed(p, job) {
            return Err(format!("job {id} starts in a partition it may not use"));
        }
        if p.max_time.is_some_and(|max| job.time_limit > max)
            || p.max_nodes.is_some_and(|max| job.nodes > max)
        {
            return Err(format!("job {id} starts beyond its partition's limits"));
        }
    }
    if !policy::named_reservation_usable(input, job, now) {
        return Err(format!(
            "job {id} starts in a reservation that does not admit it"
        ));
    }
    let (waits, never) = policy::dependency_state(input, job);
    if waits || never {
        return Err(format!("job {id} starts with an unsatisfied dependency"));
    }
    Ok(())
}

/// Preemptions: victims are running, preemptable by the preemptor's QOS, each chosen once; each
/// preemptor waits with `Preempting` and fits its held nodes once its victims are gone.
pub(super) fn check_preemptions(
    input: &SchedulerInput,
    now: Timestamp,
    plan: &Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
) -> Result<(), String> {
    let mut victims = BTreeSet::new();
    let mut by_preemptor: BTreeMap<JobId, BTreeSet<JobId>> = BTreeMap::new();
    for preemption in &plan.preemptions {
        let victim = input
            .running
            .iter()
            .find(|r| r.id == preemption.victim)
            .ok_or_else(|| format!("preempted job {} is not running", preemption.victim))?;
        if !victims.insert(victim.id) {
            return Err(format!("job {} is preempted twice", victim.id));
        }
        let by = jobs
            .get(&preemption.by)
            .ok_or_else(|| format!("preemptor {} is not pending", preemption.by))?;
        let preemptor_qos = by.qos.as_ref().and_then(|q| input.qos.get(q));
        let victim_qos = victim
            .qos
            .as_ref()
            .and_then(|q| input.qos.get(q).map(|d| (q, d)));
        let allowed = match (preemptor_qos, victim_qos) {
            (Some(p), Some((name, v))) => {
                p.preempts.contains(name)
                    && v.preempt_mode != PreemptMode::Off
                    && v.preempt_mode == preemption.mode
            }
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "job {} (QOS {:?}) may not preempt job {} (QOS {:?}) with {:?}",
                by.id, by.qos, victim.id, victim.qos, preemption.mode
            ));
        }
        by_preemptor.entry(by.id).or_default().insert(victim.id);
    }
    for (id, pending) in &plan.pending {
        let preempting = by_preemptor.contains_key(id);
        if preempting != (pending.reason == PendingReason::Preempting) {
            return Err(format!(
                "job {id} waits with {} but {} preemptions",
                pending.reason,
                if preempting { "has" } else { "has no" }
            ));
        }
    }
    for (id, own) in &by_preemptor {
        let job = jobs[id];
        let nodes = plan
            .held_for_preemptors
            .get(id)
            .ok_or_else(|| format!("preemptor {id} holds no nodes"))?;
        let distinct: BTreeSet<&NodeName> = nodes.iter().collect();
        if distinct.len() != job.nodes as usize || distinct.len() != nodes.len() {
            return Err(format!(
                "preemptor {id} holds {nodes:?} for {} nodes",
                job.nodes
            ));
        }
        let load = held_load(input, now, plan, jobs, own, |_| true);
        for name in nodes {
            let ok = input.nodes.get(name).is_some_and(|view| {
                view.availability == NodeAvailability::Up
                    && policy::static_member(input, job, name, view, true, true)
                    && !policy::window_blocks(input, job, name, now)
            }) && fits_free(input, &load, name, job);
            if !ok {
                return Err(format!(
                    "preemptor {id} would not fit on {name} once its victims are gone"
                ));
            }
        }
    }
    if plan.held_for_preemptors.len() != by_preemptor.len() {
        return Err("nodes are held for a job that preempts nothing".to_string());
    }
    Ok(())
}
