//! Preemption by QOS: for a pending job whose QOS preempts others, the fewest lowest-priority running
//! jobs whose end would let it fit now.

use crate::cluster::{Cluster, sub_gres};
use crate::eligibility::NodeSet;
use crate::gres::Need;
use crate::placement::best_fit_including;
use crate::qos::PreemptMode;
use crate::{PendingJob, SchedulerInput};
use beowulf_types::JobId;
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// One running job to end so that a preemptor can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Preemption {
    pub victim: JobId,
    /// The pending job it makes room for.
    pub by: JobId,
    /// The victim QOS's mode: requeue or cancel.
    pub mode: PreemptMode,
}

/// Whether a job of QOS `preemptor_qos` may preempt a running job of QOS `victim_qos`, and how.
pub fn mode(
    input: &SchedulerInput,
    preemptor_qos: Option<&str>,
    victim_qos: Option<&str>,
) -> Option<PreemptMode> {
    let preemptor = input.qos.get(preemptor_qos?)?;
    let victim_name = victim_qos?;
    let victim = input.qos.get(victim_name)?;
    (preemptor.preempts.contains(victim_name) && victim.preempt_mode != PreemptMode::Off)
        .then_some(victim.preempt_mode)
}

/// The victims (indices into `input.running`) and the nodes the preemptor would then use, or `None`
/// when even preempting every eligible job would not make room.
///
/// Victims are taken lowest QOS priority first, then lowest job priority, then youngest (highest
/// ID), until the job fits on `set`'s Up, unclaimed nodes (all of its `required` ones among them);
/// then, latest taken first, each victim the job fits without is given back, so every victim left
/// is needed.
pub(crate) fn choose(
    input: &SchedulerInput,
    cluster: &Cluster<'_>,
    set: &NodeSet,
    job: &PendingJob,
    need: &Need,
    required: &[usize],
    excluded: &BTreeSet<JobId>,
) -> Option<(Vec<usize>, Vec<usize>)> {
    let count = job.nodes as usize;
    let qos_priority = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| input.qos.get(n))
            .map_or(0, |q| q.priority)
    };
    let mut candidates: Vec<usize> = (0..input.running.len())
        .filter(|&i| {
            let victim = &input.running[i];
            !excluded.contains(&victim.id)
                && mode(input, job.qos.as_deref(), victim.qos.as_deref()).is_some()
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by_key(|&i| {
        let victim = &input.running[i];
        (
            qos_priority(&victim.qos),
            victim.priority,
            Reverse(victim.id),
        )
    });

    let usable = |node: usize| set.mask[node] && set.up.binary_search(&node).is_ok();
    let mut used = cluster.used.clone();
    let mut gres_used = cluster.gres_used.clone();
    let fits = |used: &[crate::cluster::Usage], gres_used: &[Vec<u32>], node: usize| {
        !cluster.claimed[node]
            && used[node].holds(&cluster.capacity[node], need)
            && cluster.gres_fit(gres_used, node, need)
    };
    let satisfied = |fitting: usize, used: &[crate::cluster::Usage], gres_used: &[Vec<u32>]| {
        fitting >= count
            && required
                .iter()
                .all(|&node| usable(node) && fits(used, gres_used, node))
    };
    let mut fitting = set
        .up
        .iter()
        .filter(|&&node| fits(&used, &gres_used, node))
        .count();
    // Node entries of each victim: (node index, amount), on usable nodes only.
    let entries = |i: usize| -> Vec<usize> {
        input.running[i]
            .allocation
            .keys()
            .filter_map(|name| cluster.names.binary_search(&name).ok())
            .filter(|&node| usable(node))
            .collect()
    };
    let apply = |i: usize,
                 release: bool,
                 used: &mut Vec<crate::cluster::Usage>,
                 gres_used: &mut Vec<Vec<u32>>,
                 fitting: &mut usize| {
        let victim = &input.running[i];
        let gres = cluster.gres_kinds.need(&victim.gres_per_node);
        for node in entries(i) {
            let amount = victim.allocation[cluster.names[node]];
            let before = fits(used, gres_used, node);
            if release {
                used[node].sub(&amount, victim.exclusive);
                sub_gres(&mut gres_used[node], &gres);
            } else {
                used[node].add(&amount, victim.exclusive);
                crate::cluster::add_gres(&mut gres_used[node], &gres);
            }
            let after = fits(used, gres_used, node);
            match (before, after) {
                (false, true) => *fitting += 1,
                (true, false) => *fitting -= 1,
                _ => {}
            }
        }
    };
    let mut taken = Vec::new();
    for &candidate in &candidates {
        if satisfied(fitting, &used, &gres_used) {
            break;
        }
        if entries(candidate).is_empty() {
            continue;
        }
        apply(candidate, true, &mut used, &mut gres_used, &mut fitting);
        taken.push(candidate);
    }
    if !satisfied(fitting, &used, &gres_used) || taken.is_empty() {
        return None;
    }
    let mut victims = Vec::new();
    for &victim in taken.iter().rev() {
        apply(victim, false, &mut used, &mut gres_used, &mut fitting);
        if !satisfied(fitting, &used, &gres_used) {
            apply(victim, true, &mut used, &mut gres_used, &mut fitting);
            victims.push(victim);
        }
    }
    victims.reverse();
    let nodes = best_fit_including(
        set.up
            .iter()
            .filter(|&&node| fits(&used, &gres_used, node))
            .map(|&node| (node, used[node].free_of(&cluster.capacity[node]))),
        &need.per_node,
        count,
        required,
    )?;
    Some((victims, nodes))
}
