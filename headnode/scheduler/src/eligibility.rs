//! Which nodes a job may use: its partition's, matching its constraint, inside the reservation it
//! names, and, at a given start time, outside advance reservations that would overlap its run.
//!
//! Node sets are interned per pass: the many jobs that share a partition, constraint and reservation
//! situation share one set, so the pass's per-shape memos keep working across a big queue.

use crate::advance::AdvanceReservation;
use crate::cluster::Cluster;
use crate::constraint::Constraint;
use crate::partition::{self, Partition};
use crate::{NodeAvailability, SchedulerInput};
use beowulf_types::{Millis, NodeName, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// A set of nodes: membership by index, and its Up members ascending.
#[derive(Debug)]
pub(crate) struct NodeSet {
    pub mask: Vec<bool>,
    pub up: Vec<usize>,
    /// Every member, any availability, ascending.
    pub all: Vec<usize>,
}

/// The static part of a job's eligibility: partition index, constraint, named reservation index,
/// excluded nodes.
type StaticKey<'a> = (
    Option<usize>,
    Option<&'a Constraint>,
    Option<usize>,
    Option<&'a BTreeSet<NodeName>>,
);

/// Set ID of the empty set: a job in a reservation before or after its window.
pub(crate) const EMPTY: usize = 0;

#[derive(Debug)]
pub(crate) struct Eligibility<'a> {
    input: &'a SchedulerInput,
    partitions: Vec<&'a Partition>,
    pub reservations: Vec<(&'a str, &'a AdvanceReservation)>,
    /// Per reservation, the node indices it covers.
    reservation_nodes: Vec<Vec<usize>>,
    sets: Vec<NodeSet>,
    static_ids: BTreeMap<StaticKey<'a>, usize>,
    window_ids: BTreeMap<(usize, Vec<usize>), usize>,
}

/// Where a job may run, resolved once per job: indices of its partition and named reservation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub partition: Option<usize>,
    pub constraint: Option<&'a Constraint>,
    pub reservation: Option<usize>,
    /// Nodes the job never runs on (`--exclude`); `None`: none.
    pub excluded: Option<&'a BTreeSet<NodeName>>,
    pub time_limit: Millis,
}

impl<'a> Eligibility<'a> {
    pub fn new(input: &'a SchedulerInput, cluster: &Cluster<'a>) -> Eligibility<'a> {
        let count = cluster.names.len();
        let reservations: Vec<(&str, &AdvanceReservation)> = input
            .reservations
            .iter()
            .map(|(name, r)| (name.as_str(), r))
            .collect();
        let reservation_nodes = reservations
            .iter()
            .map(|(_, r)| {
                (0..count)
                    .filter(|&node| r.covers(cluster.names[node]))
                    .collect()
            })
            .collect();
        let empty = NodeSet {
            mask: vec![false; count],
            up: Vec::new(),
            all: Vec::new(),
        };
        Eligibility {
            input,
            partitions: input.partitions.values().collect(),
            reservations,
            reservation_nodes,
            sets: vec![empty],
            static_ids: BTreeMap::new(),
            window_ids: BTreeMap::new(),
        }
    }

    /// Index of a partition by name.
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.input.partitions.keys().position(|n| n == name)
    }

    pub fn reservation_index(&self, name: &str) -> Option<usize> {
        self.reservations.iter().position(|(n, _)| *n == name)
    }

    pub fn set(&self, id: usize) -> &NodeSet {
        &self.sets[id]
    }

    /// The job's nodes before time is considered: partition, constraint, named reservation,
    /// exclusions.
    pub fn static_set(&mut self, cluster: &Cluster<'_>, place: &Place<'a>) -> usize {
        let key = (
            place.partition,
            place.constraint,
            place.reservation,
            place.excluded,
        );
        if let Some(&id) = self.static_ids.get(&key) {
            return id;
        }
        let partition = place.partition.map(|p| self.partitions[p]);
        let reservation = place.reservation.map(|r| self.reservations[r].1);
        let member = |node: usize| {
            let name = cluster.names[node];
            partition.is_none_or(|p| partition::contains(p, name))
                && reservation.is_none_or(|r| r.covers(name))
                && place
                    .constraint
                    .is_none_or(|c| c.matches(&self.input.nodes[name].features))
                && place
                    .excluded
                    .is_none_or(|excluded| !excluded.contains(name))
        };
        let mask: Vec<bool> = (0..cluster.names.len()).map(member).collect();
        let id = self.push(cluster, mask);
        self.static_ids.insert(key, id);
        id
    }

    /// The job's nodes for a start at `at`: the static set, minus nodes of reservations that would
    /// overlap its run; empty when it runs in a reservation that does not admit it at `at`.
    pub fn window_set(
        &mut self,
        cluster: &Cluster<'_>,
        static_id: usize,
        place: &Place<'a>,
        at: Timestamp,
    ) -> usize {
        if self.reservations.is_empty() {
            return static_id;
        }
        if let Some(own) = place.reservation
            && !self.reservations[own].1.admits(at, place.time_limit)
        {
            return EMPTY;
        }
        let blocked: Vec<usize> = (0..self.reservations.len())
            .filter(|&r| {
                let reservation = self.reservations[r].1;
                (Some(r) != place.reservation || reservation.maintenance)
                    && reservation.blocks(at, place.time_limit)
            })
            .collect();
        if blocked.is_empty() {
            return static_id;
        }
        let key = (static_id, blocked);
        if let Some(&id) = self.window_ids.get(&key) {
            return id;
        }
        let mut mask = self.sets[static_id].mask.clone();
        for &r in &key.1 {
            for &node in &self.reservation_nodes[r] {
                mask[node] = false;
            }
        }
        let id = self.push(cluster, mask);
        self.window_ids.insert(key, id);
        id
    }

    /// Times after `now` at which a job's window set may grow: reservation ends, and the start of
    /// the reservation it names.
    pub fn window_changes(&self, place: &Place<'_>, now: Timestamp) -> Vec<Timestamp> {
        let mut times: Vec<Timestamp> = self
            .reservations
            .iter()
            .enumerate()
            .flat_map(|(r, (_, res))| {
                let own_start = (Some(r) == place.reservation).then_some(res.start);
                [Some(res.end), own_start]
            })
            .flatten()
            .filter(|&t| t > now)
            .collect();
        times.sort_unstable();
        times.dedup();
        times
    }

    /// Names of the reservations that keep a job off its static nodes for a start at `at`.
    pub fn blocking(&self, static_id: usize, place: &Place<'_>, at: Timestamp) -> Vec<&'a str> {
        let set = &self.sets[static_id];
        self.reservations
            .iter()
            .enumerate()
            .filter(|&(r, (_, reservation))| {
                (Some(r) != place.reservation || reservation.maintenance)
                    && reservation.blocks(at, place.time_limit)
                    && self.reservation_nodes[r].iter().any(|&n| set.mask[n])
            })
            .map(|(_, (name, _))| *name)
            .collect()
    }

    fn push(&mut self, cluster: &Cluster<'_>, mask: Vec<bool>) -> usize {
        let all: Vec<usize> = (0..mask.len()).filter(|&n| mask[n]).collect();
        let up = all
            .iter()
            .copied()
            .filter(|&n| cluster.availability[n] == NodeAvailability::Up)
            .collect();
        self.sets.push(NodeSet { mask, up, all });
        self.sets.len() - 1
    }
}
