//! Whether a job can ever run: on its Up nodes once everything running has ended, or only if drained
//! or down nodes came back (`ReqNodeNotAvail`), or never with the nodes it may use: `BadConstraints`
//! when its features or GRES rule the nodes out, `Reservation` when its reservation's nodes are too
//! few, `PartitionConfig` when its partition is too small.

use crate::NodeAvailability;
use crate::cluster::Cluster;
use crate::eligibility::NodeSet;
use crate::gres::Need;
use beowulf_types::PendingReason;
use std::collections::BTreeMap;

/// (static node set, need) -> (members whose capacity holds it that are Up, all such members).
/// Capacity does not change during a pass, so one scan per distinct request is enough.
#[derive(Debug, Default)]
pub(crate) struct Feasibility {
    counts: BTreeMap<(usize, Need), (usize, usize)>,
}

/// The node sets a job that can never fit is judged on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sets<'s> {
    /// Its partition's nodes alone.
    pub partition: &'s [usize],
    /// Its partition's nodes matching its constraint (its reservation left out).
    pub without_reservation: &'s [usize],
    pub names_reservation: bool,
    pub has_constraints: bool,
}

impl Feasibility {
    /// (members of set `id` whose capacity holds `need` that are Up, all such members), counted
    /// once per set and need.
    pub fn counts(
        &mut self,
        cluster: &Cluster<'_>,
        id: usize,
        members: &[usize],
        need: &Need,
    ) -> (usize, usize) {
        if let Some(&known) = self.counts.get(&(id, need.clone())) {
            return known;
        }
        let mut up = 0;
        let mut all = 0;
        for &node in members {
            if cluster.capacity_fits(node, need) {
                all += 1;
                if cluster.availability[node] == NodeAvailability::Up {
                    up += 1;
                }
            }
        }
        self.counts.insert((id, need.clone()), (up, all));
        (up, all)
    }
}

/// `None` when the job fits the capacity of enough Up nodes it may use (it can start once enough
/// has ended), otherwise the reason it never can with the cluster as it is now. `counts` are
/// [`Feasibility::counts`] of its static set; `sets` is asked for only when the job cannot fit
/// even with every node back. A job asking for zero nodes is a request no partition serves.
pub(crate) fn never_fits<'s>(
    cluster: &Cluster<'_>,
    (up, all): (usize, usize),
    need: &Need,
    nodes: u32,
    sets: impl FnOnce() -> Sets<'s>,
) -> Option<PendingReason> {
    let nodes = nodes as usize;
    if nodes == 0 {
        return Some(PendingReason::PartitionConfig);
    }
    if up >= nodes {
        return None;
    }
    if all >= nodes {
        return Some(PendingReason::ReqNodeNotAvail);
    }
    let sets = sets();
    let count = |set: &[usize], need: &Need| {
        set.iter()
            .filter(|&&node| cluster.capacity_fits(node, need))
            .count()
    };
    let plain = Need {
        per_node: need.per_node,
        ..Need::default()
    };
    if count(sets.partition, &plain) < nodes {
        Some(PendingReason::PartitionConfig)
    } else if sets.names_reservation && count(sets.without_reservation, need) >= nodes {
        Some(PendingReason::Reservation)
    } else if sets.has_constraints {
        Some(PendingReason::BadConstraints)
    } else {
        Some(PendingReason::PartitionConfig)
    }
}

/// Why a job with required nodes (`--nodelist`) cannot start whatever runs now, if it cannot:
/// `BadConstraints` when a required node does not exist (`unknown`), is outside the nodes the job
/// may use (`set`: partition, constraint, reservation, exclusions) or too small for it, or when it
/// requires more nodes than it asks for; `ReqNodeNotAvail` when a required node is drained or down.
pub(crate) fn required_problem(
    cluster: &Cluster<'_>,
    set: &NodeSet,
    required: &[usize],
    unknown: bool,
    nodes: u32,
    need: &Need,
) -> Option<PendingReason> {
    if required.is_empty() && !unknown {
        return None;
    }
    if unknown
        || required.len() > nodes as usize
        || required
            .iter()
            .any(|&node| !set.mask[node] || !cluster.capacity_fits(node, need))
    {
        return Some(PendingReason::BadConstraints);
    }
    required
        .iter()
        .any(|&node| cluster.availability[node] != NodeAvailability::Up)
        .then_some(PendingReason::ReqNodeNotAvail)
}
