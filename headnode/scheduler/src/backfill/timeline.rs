//! The earliest time a job fits on the Up nodes, found by replaying future releases (running jobs at
//! their expected end, this pass's starts at `now + time_limit`) in time order.

use super::Reservation;
use crate::cluster::Cluster;
use crate::placement::best_fit;
use beowulf_types::{Resources, Timestamp};

/// When and where a job needing `per_node` on `count` distinct Up nodes could start at the earliest,
/// assuming nothing else starts meanwhile; `None` if it never fits even once everything has ended.
///
/// Releases at the same instant are applied together before checking, so a job may start exactly
/// when another ends. The nodes are chosen by best fit on what is free at that time. Cost:
/// O(R log R + N) for R releases and N nodes, because each release changes one node and the count of
/// nodes that fit is kept up to date incrementally.
pub(crate) fn earliest_start(
    cluster: &Cluster<'_>,
    per_node: &Resources,
    count: usize,
    now: Timestamp,
) -> Option<Reservation> {
    if count == 0 {
        return None;
    }
    let mut used = cluster.used.clone();
    let fits = |used: &[crate::cluster::Usage], node: usize| {
        used[node].free_of(&cluster.capacity[node]).fits(per_node)
    };
    let mut fitting = cluster.up.iter().filter(|&&node| fits(&used, node)).count();

    let mut releases: Vec<_> = cluster.releases.iter().collect();
    releases.sort_unstable_by_key(|release| (release.at, release.node));

    let mut at = now;
    let mut next = 0;
    while fitting < count {
        let release = releases.get(next)?;
        at = release.at.max(now);
        while let Some(release) = releases.get(next)
            && release.at.max(now) == at
        {
            let before = fits(&used, release.node);
            used[release.node].sub(&release.amount);
            if !before && fits(&used, release.node) {
                fitting += 1;
            }
            next += 1;
        }
    }

    let free_at = |node: usize| used[node].free_of(&cluster.capacity[node]);
    let nodes = best_fit(
        cluster.up.iter().map(|&node| (node, free_at(node))),
        per_node,
        count,
    )?;
    let reserved = nodes
        .into_iter()
        .map(|node| (node, free_at(node).saturating_sub(per_node)))
        .collect();
    Some(Reservation::new(at, cluster.capacity.len(), reserved))
}
