//! The earliest time a job fits on the nodes it may use, found by replaying future releases (running
//! jobs at their expected end, this pass's starts at `now + time_limit`) and advance reservations'
//! ends in time order.

use super::{Reservation, Spare};
use crate::cluster::{Cluster, Usage, sub_gres};
use crate::eligibility::{Eligibility, Place};
use crate::gres::Need;
use crate::placement::best_fit_including;
use beowulf_types::Timestamp;

/// Where a job's start is searched: its static node set and how it is placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'p, 'a> {
    pub static_set: usize,
    pub place: &'p Place<'a>,
    pub need: &'p Need,
    pub count: usize,
    /// Nodes it requires (`--nodelist`), indices ascending.
    pub required: &'p [usize],
}

/// When and where a job could start at the earliest, assuming nothing else starts meanwhile; `None`
/// if it never fits even once everything has ended and every reservation is over.
///
/// Releases at the same instant are applied together before checking, so a job may start exactly
/// when another ends. The nodes are chosen by best fit on what is free at that time among the nodes
/// the job may use for a start then. Cost: O(R log R + N) for R releases and N nodes, plus O(N) each
/// time an advance reservation changes which nodes the job may use.
pub(crate) fn earliest_start<'a>(
    cluster: &Cluster<'a>,
    eligibility: &mut Eligibility<'a>,
    target: Target<'_, 'a>,
    now: Timestamp,
) -> Option<Reservation> {
    let Target {
        static_set,
        place,
        need,
        count,
        required,
    } = target;
    if count == 0 || required.len() > count {
        return None;
    }
    let mut used = cluster.used.clone();
    let mut gres_used = cluster.gres_used.clone();
    let fits = |used: &[Usage], gres_used: &[Vec<u32>], node: usize| {
        used[node].holds(&cluster.capacity[node], need) && cluster.gres_fit(gres_used, node, need)
    };
    // Required nodes (Up members of the set) that fit: the job fits when all of them do and
    // `count` members in all.
    let required_in = |set: usize, used: &[Usage], gres_used: &[Vec<u32>], e: &Eligibility<'a>| {
        let set = e.set(set);
        required
            .iter()
            .filter(|&&node| set.up.binary_search(&node).is_ok() && fits(used, gres_used, node))
            .count()
    };
    let changes = eligibility.window_changes(place, now);
    let mut set = eligibility.window_set(cluster, static_set, place, now);
    let count_in = |set: usize, used: &[Usage], gres_used: &[Vec<u32>], e: &Eligibility<'a>| {
        e.set(set)
            .up
            .iter()
            .filter(|&&node| fits(used, gres_used, node))
            .count()
    };
    let mut fitting = count_in(set, &used, &gres_used, eligibility);
    let mut required_fitting = required_in(set, &used, &gres_used, eligibility);

    let mut releases: Vec<_> = cluster.releases.iter().collect();
    releases.sort_unstable_by_key(|release| (release.at, release.node));

    let mut at = now;
    let mut next = 0;
    let mut next_change = 0;
    while fitting < count || required_fitting < required.len() {
        let release_at = releases.get(next).map(|release| release.at.max(now));
        let change_at = changes.get(next_change).copied();
        at = match (release_at, change_at) {
            (None, None) => return None,
            (Some(r), None) => r,
            (None, Some(c)) => c,
            (Some(r), Some(c)) => r.min(c),
        };
        while let Some(release) = releases.get(next)
            && release.at.max(now) == at
        {
            let node = release.node;
            let member = eligibility.set(set).mask[node];
            let before = member && fits(&used, &gres_used, node);
            used[node].sub(&release.amount, release.exclusive);
            sub_gres(&mut gres_used[node], &release.gres);
            if member && !before && fits(&used, &gres_used, node) {
                fitting += 1;
                if required.binary_search(&node).is_ok()
                    && eligibility.set(set).up.binary_search(&node).is_ok()
                {
                    required_fitting += 1;
                }
            }
            next += 1;
        }
        while changes.get(next_change).is_some_and(|&c| c <= at) {
            next_change += 1;
        }
        let now_set = eligibility.window_set(cluster, static_set, place, at);
        if now_set != set {
            set = now_set;
            fitting = count_in(set, &used, &gres_used, eligibility);
            required_fitting = required_in(set, &used, &gres_used, eligibility);
        }
    }

    let free_at = |node: usize| used[node].free_of(&cluster.capacity[node]);
    let nodes = best_fit_including(
        eligibility
            .set(set)
            .up
            .iter()
            .filter(|&&node| used[node].admits(need) && cluster.gres_fit(&gres_used, node, need))
            .map(|&node| (node, free_at(node))),
        &need.per_node,
        count,
        required,
    )?;
    let reserved = nodes
        .into_iter()
        .map(|node| {
            let mut gres = cluster.gres_free(&gres_used, node);
            sub_gres(&mut gres, &need.gres);
            let resources = free_at(node).saturating_sub(&need.per_node);
            (
                node,
                Spare {
                    resources,
                    gres,
                    shared: !need.exclusive,
                },
            )
        })
        .collect();
    Some(Reservation::new(at, cluster.capacity.len(), reserved))
}
