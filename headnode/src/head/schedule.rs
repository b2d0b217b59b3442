//! One scheduling pass: snapshot the records, call the pure scheduler, apply the plan it returns
//! (preemptions first, then starts). `why` answers from the same snapshot.

use super::fabric::{self, IB_FEATURE};
use super::{Head, HeadError, Inner, now};
use crate::config::HeadConfig;
use crate::model::{ArrayElement, JobRecord, RunLaunch};
use beowulf_scheduler::{
    AdvanceReservation, ArrayMember, Association, Constraint, Dependency, Explanation, JobOutcome,
    NodeAvailability, NodeView, PendingJob, PreemptMode, RunningJob, SchedulerInput, ShareTable,
    fairshare, plan, why,
};
use beowulf_types::{
    DependencySpec, ElementAfter, Fabric, JobId, JobState, JobTransition, NodeName, Resources,
    Timestamp,
};
use std::collections::BTreeMap;

impl Head {
    /// Runs one pass; returns how many jobs it started.
    pub fn schedule_pass(&self, rng: &mut impl rand::Rng) -> Result<usize, HeadError> {
        let now = now();
        let plan = {
            let inner = self.lock();
            let input = snapshot(&inner, &self.config, now);
            plan(&input, now, rng)
        };
        // Cancels, drains and node failures may land here, between the snapshot and the change.
        self.apply_plan(plan, now)
    }

    /// Applies a plan made from an earlier snapshot, skipping what changed since; returns how
    /// many jobs it started.
    pub(super) fn apply_plan(
        &self,
        plan: beowulf_scheduler::Plan,
        now: Timestamp,
    ) -> Result<usize, HeadError> {
        let mut started = 0;
        if !plan.starts.is_empty() || !plan.preemptions.is_empty() {
            // Drawn before the mutation: a failing random source starts nothing.
            let mut credentials = plan
                .starts
                .iter()
                .map(|_| super::credential::new_launch_credential())
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            self.mutate(|tx| {
                let mut budget = super::desired::DesiredStateBudget::default();
                // Victims first: their runs leave the desired state now, and the preemptor starts at
                // a later pass, once their nodes report the tasks gone.
                for p in &plan.preemptions {
                    let Some(victim) = tx.job_mut(p.victim) else {
                        continue;
                    };
                    if victim.state != JobState::Running {
                        continue;
                    }
                    let why = format!("preempted by job {}", p.by);
                    match p.mode {
                        PreemptMode::Requeue => {
                            victim.requeue(now, &why);
                        }
                        PreemptMode::Cancel | PreemptMode::Off => {
                            victim.end(JobTransition::Cancel, now, why);
                        }
                    }
                }
                // Nodes down or drained now (the loop below changes no node), looked up once.
                let unusable: std::collections::BTreeSet<NodeName> = tx
                    .nodes()
                    .filter(|n| n.down_reason.is_some() || n.drain_reason.is_some())
                    .map(|n| n.name.clone())
                    .collect();
                for start in &plan.starts {
                    let credential = credentials.next().unwrap_or_default();
                    // The plan was made from a snapshot outside this change: a job cancelled
                    // since, or a node that went down or was drained since, is not started (the
                    // next pass plans again). Starting it anyway revived a cancelled job as
                    // RUNNING, its nodes held forever (found by the cancel-race stress test).
                    let still_pending = tx
                        .job(start.job)
                        .is_some_and(|j| j.state == JobState::Pending);
                    let nodes_usable = start.nodes.iter().all(|n| !unusable.contains(n));
                    if !still_pending || !nodes_usable {
                        continue;
                    }
                    started += 1;
                    let job = tx.job_mut(start.job).expect("planned jobs exist");
                    job.start(start.nodes.clone(), now, start.priority);
                    let mpi = job
                        .spec
                        .launches_mpi()
                        .then(|| job.spec.mpi.clone())
                        .flatten();
                    if let Some(mpi) = mpi {
                        let nodes: Vec<_> = tx
                            .nodes()
                            .filter(|r| start.nodes.contains(&r.name))
                            .map(|r| (&r.name, r.inventory.clone()))
                            .collect();
                        let view: Vec<_> = nodes.iter().map(|(n, i)| (*n, i)).collect();
                        let choice = fabric::choose(mpi.fabric, &view);
                        let job = tx.job_mut(start.job).expect("planned jobs exist");
                        job.log(now, format!("fabric {}: {}", choice.fabric, choice.reason));
                        job.launch = Some(RunLaunch {
                            token: credential,
                            fabric: Some(choice.fabric),
                            fabric_reason: choice.reason,
                        });
                    } else if job.spec.writes_on_several_nodes() || job.spec.takes_steps() {
                        job.launch = Some(RunLaunch {
                            token: credential,
                            fabric: None,
                            fabric_reason: String::new(),
                        });
                    } else {
                        job.launch = None;
                    }
                    let job = tx.job(start.job).expect("planned jobs exist").clone();
                    if let Err((node, bytes)) = budget.admit(tx.inner, &job, &self.config) {
                        // Started, every run on that node would wait behind a state its agent
                        // cannot take: the job fails, and says why.
                        let job = tx.job_mut(start.job).expect("planned jobs exist");
                        job.launch = None;
                        job.fail_undelivered(
                            now,
                            format!(
                                "not started: node {node}'s desired state would be {} MiB with it, over the {} MiB an agent takes; \
                                 export less environment to the job (its exported environment and [env] travel with each of its tasks)",
                                bytes >> 20,
                                super::desired::budget_bytes() >> 20
                            ),
                        );
                        continue;
                    }
                    let job = tx.job_mut(start.job).expect("planned jobs exist");
                    let list: Vec<&str> = start.nodes.iter().map(|n| n.as_str()).collect();
                    job.log(
                        now,
                        format!("started on {} (run {})", list.join(","), job.run),
                    );
                }
                Ok(())
            })?;
        }
        self.lock().pending = plan.pending;
        Ok(started)
    }

    /// The fair-share table as a pass now would compute it (what `sshare` shows), with usage
    /// counted even when the fair-share weight is 0 (the pass then skips it).
    pub fn shares(&self) -> ShareTable {
        let now = now();
        let inner = self.lock();
        let mut input = snapshot(&inner, &self.config, now);
        if self.config.priority.fairshare_weight == 0 {
            input.usage = usage(&inner, &self.config, now);
        }
        drop(inner);
        input.share_table()
    }

    /// Why a job waits: what blocks it and when it is expected to start.
    pub fn why(&self, id: JobId) -> Result<Explanation, HeadError> {
        let now = now();
        let inner = self.lock();
        if !inner.jobs.contains_key(&id) {
            return Err(HeadError::NoSuchJob(id));
        }
        let input = snapshot(&inner, &self.config, now);
        Ok(why(&input, now, id))
    }
}

/// The scheduler's view of the committed records.
/// The job's constraint, with the `ib` fabric added as one for MPI jobs that insist on it.
fn constraint(job: &JobRecord) -> Option<Constraint> {
    // Checked at submit; a constraint that no longer parses constrains to nothing.
    let written = job
        .spec
        .constraint
        .as_deref()
        .and_then(|c| Constraint::parse(c).ok());
    let wants_ib = job.spec.launches_mpi()
        && job
            .spec
            .mpi
            .as_ref()
            .is_some_and(|m| m.fabric == Fabric::Ib);
    if !wants_ib {
        return written;
    }
    let ib = Constraint::Feature(IB_FEATURE.to_string());
    Some(match written {
        Some(c) => Constraint::And(vec![c, ib]),
        None => ib,
    })
}

pub(super) fn snapshot(inner: &Inner, config: &HeadConfig, now: Timestamp) -> SchedulerInput {
    let nodes = inner
        .nodes
        .values()
        .map(|n| {
            // A node whose agent has not connected to this head process (just restarted) gets
            // nothing new until it does: its agent may have restarted too, with a new launch
            // endpoint, and nothing is known about its health yet.
            let availability = if n.down_reason.is_some() || !inner.sessions.contains_key(&n.name) {
                NodeAvailability::Down
            } else if n.drain_reason.is_some() {
                NodeAvailability::Drain
            } else {
                NodeAvailability::Up
            };
            let view = NodeView {
                capacity: n.capacity(),
                availability,
                features: n
                    .inventory
                    .features
                    .iter()
                    .cloned()
                    .chain(n.inventory.has_active_ib().then(|| IB_FEATURE.to_string()))
                    .collect(),
                gres: n.inventory.gres.clone(),
            };
            (n.name.clone(), view)
        })
        .collect();
    let mut running = Vec::new();
    let mut pending = Vec::new();
    let mut job_outcomes = BTreeMap::new();
    for id in &inner.active {
        let job = &inner.jobs[id];
        let per_node = job.per_node();
        let allocation: BTreeMap<_, Resources> =
            job.held_nodes().map(|n| (n.clone(), per_node)).collect();
        if !allocation.is_empty() {
            let expected_end = match (job.state, job.start_time) {
                (JobState::Running, Some(start)) => start.plus(job.spec.time_limit_ms),
                // Cleanup of an ended run takes moments.
                _ => now,
            };
            running.push(RunningJob {
                id: job.id,
                allocation,
                expected_end,
                gres_per_node: job.spec.gres.clone(),
                user: job.user.name.clone(),
                name: job.spec.name.clone(),
                // Only running jobs can be preempted; a run being cleaned up is already ending.
                qos: (job.state == JobState::Running)
                    .then(|| job.spec.qos.clone())
                    .flatten(),
                priority: job.start_priority,
                array: job.array.map(array_member),
                exclusive: job.spec.exclusive,
            });
        }
        // A requeued job runs again only once every process of its last run is gone (its nodes
        // reported the run over, or went DOWN), as Slurm starts a requeued job only once it has
        // completed: two runs of one job never overlap (a run stopped by `scontrol requeue`
        // may be writing its checkpoint until SIGKILL). Meanwhile it shows as `Requeued`.
        if job.state == JobState::Pending && job.cleanup.is_empty() {
            let dependencies = dependencies(inner, job);
            for d in &dependencies {
                let target = match d {
                    Dependency::AfterOk(t)
                    | Dependency::AfterAny(t)
                    | Dependency::AfterNotOk(t) => Some(*t),
                    Dependency::Singleton => None,
                };
                if let Some(target) = target
                    && let Some(outcome) = outcome(inner, target)
                {
                    job_outcomes.insert(target, outcome);
                }
            }
            pending.push(PendingJob {
                id: job.id,
                submitted: job.submit_time,
                nodes: job.spec.nodes,
                per_node,
                time_limit: job.spec.time_limit_ms,
                partition: job.partition.clone(),
                user: job.user.name.clone(),
                groups: job.groups.iter().cloned().collect(),
                account: job.spec.account.clone().unwrap_or_default(),
                qos: job.spec.qos.clone(),
                name: job.spec.name.clone(),
                dependencies,
                // Checked at submit; a constraint that no longer parses constrains to nothing.
                constraint: constraint(job),
                gres_per_node: job.spec.gres.clone(),
                reservation: job.spec.reservation.clone(),
                array: job.array.map(array_member),
                held: job.hold,
                required_nodes: job.spec.nodelist.iter().cloned().collect(),
                excluded_nodes: job.spec.exclude.iter().cloned().collect(),
                exclusive: job.spec.exclusive,
                begin: job.spec.begin.map(|b| b.resolve(job.submit_time)),
            });
        }
    }
    let reservations = inner
        .reservations
        .values()
        .map(|r| {
            let reservation = AdvanceReservation {
                nodes: r.nodes.iter().cloned().collect(),
                all_nodes: r.all_nodes,
                start: r.start,
                end: r.end,
                users: r.users.iter().cloned().collect(),
                maintenance: r.maintenance,
            };
            (r.name.clone(), reservation)
        })
        .collect();
    SchedulerInput {
        nodes,
        running,
        pending,
        weights: config.priority_weights(),
        partitions: config.partitions().clone(),
        qos: config.qos_definitions().clone(),
        reservations,
        usage: if config.priority.fairshare_weight > 0 {
            usage(inner, config, now)
        } else {
            BTreeMap::new()
        },
        shares: config.shares(),
        job_outcomes,
    }
}

fn array_member(a: ArrayElement) -> ArrayMember {
    ArrayMember {
        array: a.array,
        index: a.index,
        max_running: a.max_running,
    }
}

/// The job's dependencies, with an array's ID standing for every element of the array (Slurm's
/// `afterok:ARRAY` waits for all of them).
fn dependencies(inner: &Inner, job: &JobRecord) -> Vec<Dependency> {
    let targets = |ids: &[u64]| -> Vec<JobId> {
        ids.iter()
            .flat_map(|id| {
                let id = JobId(*id);
                inner
                    .jobs
                    .get(&id)
                    .and_then(super::jobs::array_elements)
                    .unwrap_or_else(|| vec![id])
            })
            .collect()
    };
    let mut out = Vec::new();
    for d in &job.spec.dependencies {
        match d {
            DependencySpec::AfterOk(ids) => {
                out.extend(targets(ids).into_iter().map(Dependency::AfterOk))
            }
            DependencySpec::AfterAny(ids) => {
                out.extend(targets(ids).into_iter().map(Dependency::AfterAny))
            }
            DependencySpec::AfterNotOk(ids) => {
                out.extend(targets(ids).into_iter().map(Dependency::AfterNotOk))
            }
            DependencySpec::Singleton => out.push(Dependency::Singleton),
            DependencySpec::OnElement {
                after,
                array,
                index,
            } => {
                // Checked at submit; an element is never removed while its array is known.
                let Some(id) =
                    super::jobs::array_element(|id| inner.jobs.get(&id), JobId(*array), *index)
                else {
                    continue;
                };
                out.push(match after {
                    ElementAfter::Ok => Dependency::AfterOk(id),
                    ElementAfter::Any => Dependency::AfterAny(id),
                    ElementAfter::NotOk => Dependency::AfterNotOk(id),
                });
            }
        }
    }
    out
}

fn outcome(inner: &Inner, id: JobId) -> Option<JobOutcome> {
    let job = inner.jobs.get(&id)?;
    Some(match job.state {
        JobState::Pending => JobOutcome::Pending,
        JobState::Running => JobOutcome::Running,
        JobState::Completed => JobOutcome::Completed,
        _ => JobOutcome::Failed,
    })
}

/// Fair-share usage: CPU-milliseconds of every run, decayed by the configured half-life from when
/// it ended (or now, for running jobs), per user and per account.
fn usage(inner: &Inner, config: &HeadConfig, now: Timestamp) -> BTreeMap<Association, f64> {
    let half_life = config.priority.fairshare_half_life_ms;
    let mut usage: BTreeMap<Association, f64> = BTreeMap::new();
    for job in inner.jobs.values() {
        let Some(start) = job
            .start_time
            .or(job.end_time.filter(|_| job.start_time.is_some()))
        else {
            continue;
        };
        let end = job.end_time.unwrap_or(now);
        let cpu_ms =
            end.since(start) as f64 * f64::from(job.spec.cpus_per_node()) * job.nodes.len() as f64;
        let decayed = fairshare::decay(cpu_ms, now.since(end), half_life);
        *usage
            .entry(Association::User(job.user.name.clone()))
            .or_default() += decayed;
        if let Some(account) = &job.spec.account {
            *usage
                .entry(Association::Account(account.clone()))
                .or_default() += decayed;
        }
    }
    usage
}
