//! Whether a job can ever run: on the Up nodes once everything running has ended, or only if drained or
//! down nodes came back (`ReqNodeNotAvail`), or never on this cluster (`PartitionConfig`).

use crate::NodeAvailability;
use crate::cluster::Cluster;
use beowulf_types::{PendingReason, Resources};
use std::collections::BTreeMap;

/// Per-node request -> (Up nodes whose capacity holds it, all nodes whose capacity holds it). Capacity
/// does not change during a pass, so one scan per distinct request shape is enough.
#[derive(Debug, Default)]
pub(crate) struct Feasibility {
    counts: BTreeMap<Resources, (usize, usize)>,
}

impl Feasibility {
    /// `None` when the job fits the Up nodes' capacity (it can start once enough has ended), otherwise
    /// the reason it never can with the cluster as it is now. A job asking for zero nodes is a
    /// request no partition serves: `PartitionConfig`.
    pub fn never_fits(
        &mut self,
        cluster: &Cluster<'_>,
        per_node: &Resources,
        nodes: u32,
    ) -> Option<PendingReason> {
        if nodes == 0 {
            return Some(PendingReason::PartitionConfig);
        }
        let (up, all) = *self.counts.entry(*per_node).or_insert_with(|| {
            let mut up = 0;
            let mut all = 0;
            for (capacity, availability) in cluster.capacity.iter().zip(&cluster.availability) {
                if capacity.fits(per_node) {
                    all += 1;
                    if *availability == NodeAvailability::Up {
                        up += 1;
                    }
                }
            }
            (up, all)
        });
        let nodes = nodes as usize;
        if up >= nodes {
            None
        } else if all >= nodes {
            Some(PendingReason::ReqNodeNotAvail)
        } else {
            Some(PendingReason::PartitionConfig)
        }
    }
}
