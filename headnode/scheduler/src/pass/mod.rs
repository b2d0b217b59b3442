//! One scheduling pass: walks the queue in priority order, holds jobs their partition, reservation,
//! dependencies or array keep back, starts what fits, preempts for QOS that may, holds the EASY
//! reservation for the top job, backfills around it, and gives every waiting job its reason.

mod fit;
pub(crate) mod job;

use crate::admission::{self, JobStates};
use crate::array::ArrayCounts;
use crate::backfill::Reservation;
use crate::backfill::timeline::{Target, earliest_start};
use crate::cluster::Cluster;
use crate::eligibility::Eligibility;
use crate::feasibility::{Feasibility, never_fits, required_problem};
use crate::placement::{FitCounts, NoFitMemo};
use crate::preemption::{self, Preemption};
use crate::priority::{PolicyFactors, PriorityFactors, factors, queue_order};
use crate::{Pending, PendingJob, Plan, SchedulerInput, Start, TopJob};
use beowulf_types::{JobId, PendingReason, Timestamp};
use job::JobContext;
use rand::Rng;
use std::collections::BTreeSet;

/// Plans one pass. Pure: the same input, `now` and rng state give the same plan.
///
/// Jobs are walked in priority order ([`crate::priority`]); each starts now on best-fit nodes if it
/// can. The first one that cannot becomes the top job and holds the one EASY reservation; later jobs
/// start only where they do not delay it. A job ID listed twice in `input.pending` is planned once,
/// from its first entry.
///
/// The rng is not drawn from today: best fit ordered by node name is already a total order, so no
/// exact tie is left to break. It stays in the signature so a future policy (spreading, random
/// tie-breaks) does not change the daemon's call.
pub fn plan(input: &SchedulerInput, now: Timestamp, rng: &mut impl Rng) -> Plan {
    let _ = rng;
    Pass::new(input, now).run()
}

#[derive(Debug)]
pub(crate) struct Pass<'a> {
    input: &'a SchedulerInput,
    now: Timestamp,
    pub(crate) cluster: Cluster<'a>,
    pub(crate) eligibility: Eligibility<'a>,
    feasibility: Feasibility,
    /// Shapes that did not fit now, ignoring the reservation.
    no_fit_now: NoFitMemo,
    /// Shapes that, running past the shadow time, found no nodes outside the reservation's needs.
    no_backfill: NoFitMemo,
    /// Up nodes that can hold a shape now, valid until the next start.
    fit_counts: FitCounts,
    /// The top job's reservation, once there is a top job.
    reservation: Option<Reservation>,
    states: JobStates<'a>,
    arrays: ArrayCounts,
    /// Running jobs already chosen as victims in this pass.
    victims: BTreeSet<JobId>,
    plan: Plan,
}

impl<'a> Pass<'a> {
    pub fn new(input: &'a SchedulerInput, now: Timestamp) -> Self {
        let cluster = Cluster::new(input, now);
        let eligibility = Eligibility::new(input, &cluster);
        Pass {
            input,
            now,
            cluster,
            eligibility,
            feasibility: Feasibility::default(),
            no_fit_now: NoFitMemo::default(),
            no_backfill: NoFitMemo::default(),
            fit_counts: FitCounts::default(),
            reservation: None,
            states: JobStates::default(),
            arrays: ArrayCounts::new(input.running.iter().filter_map(|job| job.array.as_ref())),
            victims: BTreeSet::new(),
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
        let factors = self.priorities(&jobs);
        let priorities: Vec<u64> = factors.iter().map(PriorityFactors::priority).collect();
        for index in queue_order(&jobs, &priorities) {
            self.consider(jobs[index], factors[index]);
        }
        self.plan
    }

    /// Every job's multifactor priority, factor by factor; the policy factors are computed only
    /// when weighted.
    fn priorities(&self, jobs: &[&'a PendingJob]) -> Vec<PriorityFactors> {
        let input = self.input;
        let weights = &input.weights;
        let fairshare = (weights.fairshare_weight > 0).then(|| input.share_table());
        let max_partition = input
            .partitions
            .values()
            .map(|p| p.priority_factor)
            .max()
            .unwrap_or(0);
        let max_qos = input.qos.values().map(|q| q.priority).max().unwrap_or(0);
        let ratio = |value: u32, max: u32| {
            if max == 0 {
                0.0
            } else {
                f64::from(value) / f64::from(max)
            }
        };
        jobs.iter()
            .map(|job| {
                let mut policy = PolicyFactors::default();
                if let Some(fairshare) = &fairshare {
                    policy.fairshare = fairshare.of(&job.user, &job.account);
                }
                if weights.partition_weight > 0
                    && let Ok(Some((_, partition))) = crate::partition::of_job(input, job)
                {
                    policy.partition = ratio(partition.priority_factor, max_partition);
                }
                if weights.qos_weight > 0
                    && let Some(qos) = job.qos.as_ref().and_then(|q| input.qos.get(q))
                {
                    policy.qos = ratio(qos.priority, max_qos);
                }
                factors(job, weights, self.cluster.total_cpus, self.now, &policy)
            })
            .collect()
    }

    fn consider(&mut self, job: &'a PendingJob, factors: PriorityFactors) {
        let priority = factors.priority();
        let context = match self.admit(job) {
            Ok(context) => context,
            Err((reason, eligible)) => {
                self.wait(job.id, reason, factors, eligible);
                return;
            }
        };
        let end = self.now.plus(job.time_limit);
        match &self.reservation {
            None => {
                if let Some(nodes) = self.place_now(&context) {
                    self.start(&context, nodes, priority, end);
                    return;
                }
                if self.try_preemption(&context) {
                    self.wait(job.id, PendingReason::Preempting, factors, Some(self.now));
                    return;
                }
                let reason = self.reason_for_no_room(&context);
                let target = Target {
                    static_set: context.static_set,
                    place: &context.place,
                    need: &context.need,
                    count: job.nodes as usize,
                    required: &context.required,
                };
                match earliest_start(&self.cluster, &mut self.eligibility, target, self.now) {
                    Some(reservation) => {
                        let at = reservation.start;
                        self.plan.top_job = Some(TopJob {
                            job: job.id,
                            start: at,
                            nodes: reservation
                                .nodes
                                .iter()
                                .map(|&n| self.cluster.names[n].clone())
                                .collect(),
                        });
                        self.reservation = Some(reservation);
                        self.wait(job.id, reason, factors, Some(at));
                    }
                    // Only when advance reservations keep the job off its nodes for good (its own
                    // window closes first): it waits without blocking anyone.
                    None => self.wait(job.id, PendingReason::Reservation, factors, None),
                }
            }
            // Ends by the shadow time: whatever it takes is back before the top job needs it.
            Some(reservation) if end <= reservation.start => match self.place_now(&context) {
                Some(nodes) => self.start(&context, nodes, priority, end),
                None => {
                    let reason = self.reason_for_no_room(&context);
                    self.wait(job.id, reason, factors, None);
                }
            },
            // Runs past the shadow time: only on resources the reservation does not need.
            Some(_) => match self.place_around_reservation(&context) {
                Some(nodes) => {
                    if let Some(reservation) = &mut self.reservation {
                        for &node in &nodes {
                            reservation.consume(node, &context.need);
                        }
                    }
                    self.start(&context, nodes, priority, end);
                }
                None => {
                    let reason = if self.fits_now(&context, context.now_set) {
                        PendingReason::Priority
                    } else {
                        self.reason_for_no_room(&context)
                    };
                    self.wait(job.id, reason, factors, None);
                }
            },
        }
    }

    /// Why a job that does not fit now waits: `Reservation` when advance reservations are what
    /// keeps it off nodes that have room, `Resources` otherwise.
    fn reason_for_no_room(&mut self, context: &JobContext<'a>) -> PendingReason {
        if context.now_set != context.static_set && self.fits_now(context, context.static_set) {
            PendingReason::Reservation
        } else {
            PendingReason::Resources
        }
    }

    /// Chooses victims for a job whose QOS preempts others; on success records the preemptions,
    /// holds the nodes, and returns true.
    fn try_preemption(&mut self, context: &JobContext<'a>) -> bool {
        let job = context.job;
        let preempts_any = job
            .qos
            .as_ref()
            .and_then(|name| self.input.qos.get(name))
            .is_some_and(|qos| !qos.preempts.is_empty());
        if !preempts_any {
            return false;
        }
        let set = self.eligibility.set(context.now_set);
        let Some((victims, nodes)) = preemption::choose(
            self.input,
            &self.cluster,
            set,
            job,
            &context.need,
            &context.required,
            &self.victims,
        ) else {
            return false;
        };
        for victim in victims {
            let running = &self.input.running[victim];
            let mode = preemption::mode(self.input, job.qos.as_deref(), running.qos.as_deref())
                .expect("choose only returns preemptable victims");
            self.victims.insert(running.id);
            self.plan.preemptions.push(Preemption {
                victim: running.id,
                by: job.id,
                mode,
            });
        }
        self.cluster.claim(&nodes);
        self.fit_counts.forget();
        self.plan.held_for_preemptors.insert(
            job.id,
            nodes
                .iter()
                .map(|&n| self.cluster.names[n].clone())
                .collect(),
        );
        true
    }

    fn start(
        &mut self,
        context: &JobContext<'a>,
        nodes: Vec<usize>,
        priority: u64,
        end: Timestamp,
    ) {
        let job = context.job;
        self.cluster.allocate(&nodes, &context.need, end);
        self.fit_counts.forget();
        if let Some(member) = &job.array {
            self.arrays.started(member);
        }
        self.states.started(job);
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
        factors: PriorityFactors,
        estimated_start: Option<Timestamp>,
    ) {
        self.plan.pending.insert(
            job,
            Pending {
                reason,
                priority: factors.priority(),
                estimated_start,
                factors,
            },
        );
    }

    /// Admission, feasibility and the array throttle; `Err` is the reason the job waits without
    /// being placed, and when it becomes eligible if that is known (its begin time).
    fn admit(
        &mut self,
        job: &'a PendingJob,
    ) -> Result<JobContext<'a>, (PendingReason, Option<Timestamp>)> {
        let partition = admission::admit(self.input, job, &mut self.states, self.now)
            .map_err(|hold| (hold.reason(), hold.eligible()))?;
        let context = JobContext::new(
            job,
            partition,
            &self.cluster,
            &mut self.eligibility,
            self.now,
        );
        let counts = self.feasibility.counts(
            &self.cluster,
            context.static_set,
            &self.eligibility.set(context.static_set).all,
            &context.need,
        );
        if counts.0 < job.nodes as usize || job.nodes == 0 {
            let ids = context.feasibility_ids(&mut self.eligibility, &self.cluster);
            let eligibility = &self.eligibility;
            if let Some(reason) =
                never_fits(&self.cluster, counts, &context.need, job.nodes, || {
                    context.feasibility_sets(eligibility, ids)
                })
            {
                return Err((reason, None));
            }
        }
        if let Some(reason) = required_problem(
            &self.cluster,
            self.eligibility.set(context.static_set),
            &context.required,
            context.required_unknown,
            job.nodes,
            &context.need,
        ) {
            return Err((reason, None));
        }
        admission::array_limit(job, &self.arrays).map_err(|hold| (hold.reason(), None))?;
        Ok(context)
    }
}
