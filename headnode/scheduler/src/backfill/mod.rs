//! EASY backfill: the single reservation held by the top job (the highest-priority job that cannot
//! start now), and the rule that decides whether a later job may start without delaying it.

pub(crate) mod timeline;

use beowulf_types::{Resources, Timestamp};

/// The top job's reservation: where and when it will start (the shadow time), and, per reserved node,
/// what is left over at the shadow time once the top job has what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The shadow time: the earliest time the top job fits, given everything running and started.
    pub start: Timestamp,
    /// The nodes the top job would use at `start`, ascending.
    pub nodes: Vec<usize>,
    /// Per node index: `Some(spare)` on a reserved node (free at `start` minus the top job's need),
    /// `None` on a node the reservation does not need.
    spare: Vec<Option<Resources>>,
}

impl Reservation {
    pub fn new(start: Timestamp, node_count: usize, reserved: Vec<(usize, Resources)>) -> Self {
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
    /// unreserved node (the "extra nodes" of EASY), and on a reserved node only out of its spare.
    pub fn allows(&self, node: usize, need: &Resources) -> bool {
        self.spare[node].is_none_or(|spare| spare.fits(need))
    }

    /// Records that a job running past the shadow time took `need` on `node`.
    pub fn consume(&mut self, node: usize, need: &Resources) {
        if let Some(spare) = &mut self.spare[node] {
            *spare = spare.saturating_sub(need);
        }
    }
}
