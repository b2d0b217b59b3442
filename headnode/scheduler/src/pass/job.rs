//! A job as one pass sees it once admitted: where it may run, what it needs per node, and its node
//! sets (static, and for a start now).

use crate::PendingJob;
use crate::cluster::Cluster;
use crate::eligibility::{Eligibility, Place};
use crate::feasibility::Sets;
use crate::gres::Need;
use beowulf_types::Timestamp;

#[derive(Debug)]
pub(crate) struct JobContext<'a> {
    pub job: &'a PendingJob,
    pub place: Place<'a>,
    pub need: Need,
    /// Nodes of its partition matching its constraint, inside the reservation it names.
    pub static_set: usize,
    /// The static set minus nodes advance reservations keep from a start now.
    pub now_set: usize,
    /// Indices of the nodes it requires (`--nodelist`) that exist, ascending.
    pub required: Vec<usize>,
    /// Whether it requires a node the cluster does not have.
    pub required_unknown: bool,
}

impl<'a> JobContext<'a> {
    pub fn new(
        job: &'a PendingJob,
        partition: Option<&str>,
        cluster: &Cluster<'a>,
        eligibility: &mut Eligibility<'a>,
        now: Timestamp,
    ) -> JobContext<'a> {
        let place = Place {
            partition: partition.and_then(|name| eligibility.partition_index(name)),
            constraint: job.constraint.as_ref(),
            reservation: job
                .reservation
                .as_deref()
                .and_then(|name| eligibility.reservation_index(name)),
            excluded: (!job.excluded_nodes.is_empty()).then_some(&job.excluded_nodes),
            time_limit: job.time_limit,
        };
        let need = Need {
            per_node: job.per_node,
            gres: cluster.gres_kinds.need(&job.gres_per_node),
            exclusive: job.exclusive,
        };
        // Names ascend and index order is name order, so the indices ascend too.
        let required: Vec<usize> = job
            .required_nodes
            .iter()
            .filter_map(|name| cluster.names.binary_search(&name).ok())
            .collect();
        let required_unknown = required.len() < job.required_nodes.len();
        let static_set = eligibility.static_set(cluster, &place);
        let now_set = eligibility.window_set(cluster, static_set, &place, now);
        JobContext {
            job,
            place,
            need,
            static_set,
            now_set,
            required,
            required_unknown,
        }
    }

    /// The node sets feasibility is judged on; `ids` from [`JobContext::feasibility_ids`].
    pub fn feasibility_sets<'e>(
        &self,
        eligibility: &'e Eligibility<'a>,
        (partition, without_reservation): (usize, usize),
    ) -> Sets<'e> {
        Sets {
            partition: &eligibility.set(partition).all,
            without_reservation: &eligibility.set(without_reservation).all,
            names_reservation: self.job.reservation.is_some(),
            has_constraints: self.place.constraint.is_some()
                || !self.need.gres.is_empty()
                || self.place.excluded.is_some(),
        }
    }

    /// IDs of the partition's node set and of the partition-and-constraint set.
    pub fn feasibility_ids(
        &self,
        eligibility: &mut Eligibility<'a>,
        cluster: &Cluster<'a>,
    ) -> (usize, usize) {
        let partition_only = Place {
            constraint: None,
            reservation: None,
            excluded: None,
            ..self.place
        };
        let without_reservation = Place {
            reservation: None,
            ..self.place
        };
        (
            eligibility.static_set(cluster, &partition_only),
            eligibility.static_set(cluster, &without_reservation),
        )
    }
}
