//! EASY backfill: the single reservation held by the top job (the highest-priority job that cannot
//! start now), and the rule that decides whether a later job may start without delaying it.

pub(crate) mod timeline;

use crate::cluster::sub_gres;
use crate::gres::{self, Need};
use beowulf_types::{Resources, Timestamp};

/// What a reserved node has left at the shadow time once the top job has what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spare {
    pub resources: Resources,
    /// By GRES kind.
    pub gres: Vec<u32>,
    /// Whether the top job shares the node at all: false when it runs exclusive.
    pub shared: bool,
}

/// The top job's reservation: where and when it will start (the shadow time), and, per reserved node,
/// what is left over at the shadow time once the top job has what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The shadow time: the earliest time the top job fits, given everything running and started.
    pub start: Timestamp,
    /// The nodes the top job would use at `start`, ascending.
    pub nodes: Vec<usize>,
    /// Per node index: `Some(spare)` on a reserved node, `None` on a node the reservation does not
    /// need.
    spare: Vec<Option<Spare>>,
}

impl Reservation {
    pub fn new(start: Timestamp, node_count: usize, reserved: Vec<(usize, Spare)>) -> Self {
        let mut spare = vec![None; node_count];
        let mut nodes = Vec::with_capacity(reserved.len());
        for (node, left) in reserved {
            spare[node] = Some(left);
            nodes.push(node);
        }
        nodes.sort_unstable();
        Reservation {
            start,
            nodes,
            spare,
        }
    }

    /// Whether a job that is still running at the shadow time may hold `need` on `node`: always on an
    /// unreserved node (the "extra nodes" of EASY), and on a reserved node only out of its spare,
    /// and never when either job wants the node alone.
    #[inline]
    pub fn allows(&self, node: usize, need: &Need) -> bool {
        self.spare[node].as_ref().is_none_or(|spare| {
            spare.shared
                && !need.exclusive
                && spare.resources.fits(&need.per_node)
                && gres::fits(&spare.gres, &need.gres)
        })
    }

    /// Records that a job running past the shadow time took `need` on `node`.
    pub fn consume(&mut self, node: usize, need: &Need) {
        if let Some(spare) = &mut self.spare[node] {
            spare.resources = spare.resources.saturating_sub(&need.per_node);
            sub_gres(&mut spare.gres, &need.gres);
        }
    }
}
