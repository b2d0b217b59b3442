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
            time_limit: job.time_limit,
        };
        let need = Need {
            per_node: job.per_node,
            gres: cluster.gres_kinds.need(&job.gres_per_node),
        };
        let static_set = eligibility.static_set(cluster, &place);
        let now_set = eligibility.window_set(cluster, static_set, &place, now);
        JobContext {
            job,
            place,
            need,
            static_set,
            now_set,
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
            has_constraints: self.place.constraint.is_some() || !self.need.gres.is_empty(),
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
