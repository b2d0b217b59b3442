//! One scheduling pass: walks the queue in priority order, starts what fits, holds the EASY
//! reservation for the top job, backfills around it, and gives every waiting job its reason.

use crate::backfill::Reservation;
use crate::backfill::timeline::earliest_start;
use crate::cluster::Cluster;
use crate::feasibility::Feasibility;
use crate::placement::{FitCounts, NoFitMemo, best_fit, count_fitting};
use crate::priority::{priority, queue_order};
use crate::{Pending, PendingJob, Plan, SchedulerInput, Start};
use beowulf_types::{JobId, PendingReason, Timestamp};
use std::collections::BTreeSet;

#[derive(Debug)]
pub(crate) struct Pass<'a> {
    input: &'a SchedulerInput,
    now: Timestamp,
    cluster: Cluster<'a>,
    feasibility: Feasibility,
    /// Shapes that did not fit now, ignoring the reservation.
    no_fit_now: NoFitMemo,
    /// Shapes that, running past the shadow time, found no nodes outside the reservation's needs.
    no_backfill: NoFitMemo,
    /// Up nodes that can hold a shape now, valid until the next start.
    fit_counts: FitCounts,
    /// The top job's reservation, once there is a top job.
    reservation: Option<Reservation>,
    plan: Plan,
}

impl<'a> Pass<'a> {
    pub fn new(input: &'a SchedulerInput, now: Timestamp) -> Self {
        Pass {
            input,
            now,
            cluster: Cluster::new(input, now),
            feasibility: Feasibility::default(),
            no_fit_now: NoFitMemo::default(),
            no_backfill: NoFitMemo::default(),
            fit_counts: FitCounts::default(),
            reservation: None,
            plan: Plan::default(),
        }
    }

    pub fn run(mut self) -> Plan {
        let mut seen = BTreeSet::new();
        let jobs: Vec<&PendingJob> = self
            .input
            .pending
            .iter()
            .filter(|job| seen.insert(job.id))
            .collect();
        let priorities: Vec<u64> = jobs
            .iter()
            .map(|job| priority(job, &self.input.weights, self.cluster.total_cpus, self.now))
            .collect();
        for index in queue_order(&jobs, &priorities) {
            self.consider(jobs[index], priorities[index]);
        }
        self.plan
    }

    fn consider(&mut self, job: &PendingJob, priority: u64) {
        if let Some(reason) = self
            .feasibility
            .never_fits(&self.cluster, &job.per_node, job.nodes)
        {
            // Never becomes the top job: a reservation it cannot use would only block others.
            self.wait(job.id, reason, priority, None);
            return;
        }
        let end = self.now.plus(job.time_limit);
        match &self.reservation {
            None => {
                if let Some(nodes) = self.place_now(job) {
                    self.start(job, nodes, priority, end);
                    return;
                }
                let count = job.nodes as usize;
                match earliest_start(&self.cluster, &job.per_node, count, self.now) {
                    Some(reservation) => {
                        let at = reservation.start;
                        self.reservation = Some(reservation);
                        self.wait(job.id, PendingReason::Resources, priority, Some(at));
                    }
                    // Unreachable while the job fits the Up nodes' capacity (everything ends at
                    // some point); if it happens, the job waits without blocking anyone.
                    None => self.wait(job.id, PendingReason::Resources, priority, None),
                }
            }
            // Ends by the shadow time: whatever it takes is back before the top job needs it.
            Some(reservation) if end <= reservation.start => match self.place_now(job) {
                Some(nodes) => self.start(job, nodes, priority, end),
                None => self.wait(job.id, PendingReason::Resources, priority, None),
            },
            // Runs past the shadow time: only on resources the reservation does not need.
            Some(_) => match self.place_around_reservation(job) {
                Some(nodes) => {
                    if let Some(reservation) = &mut self.reservation {
                        for &node in &nodes {
                            reservation.consume(node, &job.per_node);
                        }
                    }
                    self.start(job, nodes, priority, end);
                }
                None => {
                    let reason = if self.fits_now(job) {
                        PendingReason::Priority
                    } else {
                        PendingReason::Resources
                    };
                    self.wait(job.id, reason, priority, None);
                }
            },
        }
    }

    /// Best-fit nodes for `job` among the Up nodes' free resources, if it fits now.
    fn place_now(&mut self, job: &PendingJob) -> Option<Vec<usize>> {
        if self.cannot_fit_now(job) {
            return None;
        }
        let count = job.nodes as usize;
        let cluster = &self.cluster;
        let nodes = best_fit(
            cluster.up.iter().map(|&node| (node, cluster.free[node])),
            &job.per_node,
            count,
        );
        if nodes.is_none() {
            self.no_fit_now.record(&job.per_node, count);
        }
        nodes
    }

    /// Best-fit nodes for a job running past the shadow time: free now, and outside what the
    /// reservation needs at the shadow time.
    fn place_around_reservation(&mut self, job: &PendingJob) -> Option<Vec<usize>> {
        let count = job.nodes as usize;
        if self.cannot_fit_now(job) || self.no_backfill.known_to_fail(&job.per_node, count) {
            return None;
        }
        let reservation = self.reservation.as_ref()?;
        let cluster = &self.cluster;
        let nodes = best_fit(
            cluster
                .up
                .iter()
                .filter(|&&node| reservation.allows(node, &job.per_node))
                .map(|&node| (node, cluster.free[node])),
            &job.per_node,
            count,
        );
        if nodes.is_none() {
            self.no_backfill.record(&job.per_node, count);
        }
        nodes
    }

    /// Whether `job` fits the Up nodes' free resources now, ignoring the reservation.
    fn fits_now(&mut self, job: &PendingJob) -> bool {
        if self.cannot_fit_now(job) {
            return false;
        }
        let count = job.nodes as usize;
        let cluster = &self.cluster;
        let fitting = self.fit_counts.get_or_count(&job.per_node, || {
            count_fitting(
                cluster.up.iter().map(|&node| (node, cluster.free[node])),
                &job.per_node,
            )
        });
        if fitting < count {
            self.no_fit_now.record(&job.per_node, count);
        }
        fitting >= count
    }

    /// Cheap early answers: the cluster has no free CPU left, or this shape already failed.
    fn cannot_fit_now(&self, job: &PendingJob) -> bool {
        (job.per_node.cpus > 0 && self.cluster.no_free_cpu())
            || self
                .no_fit_now
                .known_to_fail(&job.per_node, job.nodes as usize)
    }

    fn start(&mut self, job: &PendingJob, nodes: Vec<usize>, priority: u64, end: Timestamp) {
        self.cluster.allocate(&nodes, &job.per_node, end);
        self.fit_counts.forget();
        self.plan.starts.push(Start {
            job: job.id,
            // Indices ascend, and index order is name order.
            nodes: nodes
                .iter()
                .map(|&node| self.cluster.names[node].clone())
                .collect(),
            per_node: job.per_node,
            priority,
        });
    }

    fn wait(
        &mut self,
        job: JobId,
        reason: PendingReason,
        priority: u64,
        estimated_start: Option<Timestamp>,
    ) {
        self.plan.pending.insert(
            job,
            Pending {
                reason,
                priority,
                estimated_start,
            },
        );
    }
}
