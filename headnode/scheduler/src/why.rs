//! `cluster why JOB`: a pending job's reason, what blocks it (which nodes lack what, which limit,
//! which dependency, which job holds the backfill reservation, which advance reservation), and an
//! estimated start from the backfill timeline, even for jobs behind the top job.

use crate::admission::{self, Hold, JobStates};
use crate::array::ArrayCounts;
use crate::backfill::timeline::{Target, earliest_start};
use crate::cluster::Cluster;
use crate::eligibility::Eligibility;
use crate::pass::job::JobContext;
use crate::{NodeAvailability, PendingJob, RunningJob, SchedulerInput, plan};
use beowulf_types::{JobHold, JobId, NodeName, PendingReason, Timestamp};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::BTreeMap;
use std::fmt;

/// Why a job waits, as data; `Display` renders it for `cluster why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub job: JobId,
    pub now: Timestamp,
    /// `None` when the job is not pending in the input, or when this pass would start it.
    pub reason: Option<PendingReason>,
    /// True when a pass now would start it.
    pub starts_now: bool,
    pub priority: u64,
    pub estimated_start: Option<Timestamp>,
    pub blockers: Vec<Blocker>,
}

/// One thing that keeps the job from starting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The job is not pending (unknown, running or ended).
    NotPending,
    /// Partition, reservation, dependency or array throttle.
    Held(Hold),
    /// Nodes of its partition, grouped by the first thing each lacks.
    Nodes {
        lack: NodeLack,
        nodes: Vec<NodeName>,
    },
    /// The top job holds the backfill reservation: nothing that would delay it starts.
    TopJob {
        job: JobId,
        start: Timestamp,
        nodes: Vec<NodeName>,
    },
    /// Running jobs being preempted for this job.
    Preempting { victims: Vec<JobId> },
}

/// What a node lacks for the job, checked in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeLack {
    /// Not a node of the reservation the job names.
    OutsideReservation(String),
    /// One of the nodes the job excludes (`--exclude`).
    Excluded,
    /// Does not have the features its constraint asks for.
    Features(String),
    /// Too small: its capacity (CPUs, memory or GRES) cannot hold the job's per-node request.
    Capacity,
    Unavailable(NodeAvailability),
    /// An advance reservation keeps it from the job's run.
    Reserved(String),
    /// Held for a job that preempts.
    HeldForPreemptor,
    /// Runs other jobs, and the job wants its nodes alone (`--exclusive`).
    NotAlone,
    /// Runs a job that has it alone (`--exclusive`).
    HeldExclusively,
    /// Busy: not enough free CPUs, memory or GRES now.
    Cpus,
    Memory,
    Gres(String),
}

/// Explains `job` against the plan a pass over `input` at `now` makes.
pub fn why(input: &SchedulerInput, now: Timestamp, job: JobId) -> Explanation {
    let mut explanation = Explanation {
        job,
        now,
        reason: None,
        starts_now: false,
        priority: 0,
        estimated_start: None,
        blockers: Vec::new(),
    };
    let Some(pending) = input.pending.iter().find(|p| p.id == job) else {
        explanation.blockers.push(Blocker::NotPending);
        return explanation;
    };
    // The same seed as any: the pass does not draw from the rng.
    let plan = plan(input, now, &mut StdRng::seed_from_u64(0));
    if let Some(start) = plan.starts.iter().find(|s| s.job == job) {
        explanation.starts_now = true;
        explanation.priority = start.priority;
        explanation.estimated_start = Some(now);
        return explanation;
    }
    let Some(waiting) = plan.pending.get(&job) else {
        return explanation;
    };
    explanation.reason = Some(waiting.reason);
    explanation.priority = waiting.priority;
    explanation.estimated_start = waiting.estimated_start;

    // The cluster after this pass: its starts (and preemptors) hold their nodes.
    let mut after = input.clone();
    let jobs: BTreeMap<JobId, &PendingJob> = input.pending.iter().map(|j| (j.id, j)).collect();
    for start in &plan.starts {
        let started = jobs[&start.job];
        after.running.push(as_running(
            started,
            &start.nodes,
            now.plus(started.time_limit),
        ));
    }
    for (preemptor, nodes) in &plan.held_for_preemptors {
        let holder = jobs[preemptor];
        after
            .running
            .push(as_running(holder, nodes, now.plus(holder.time_limit)));
    }

    let mut states = JobStates::default();
    let arrays = ArrayCounts::new(after.running.iter().filter_map(|r| r.array.as_ref()));
    let partition = match admission::admit(input, pending, &mut states, now)
        .and_then(|p| admission::array_limit(pending, &arrays).map(|()| p))
    {
        Ok(partition) => partition,
        Err(hold) => {
            explanation.blockers.push(Blocker::Held(hold));
            return explanation;
        }
    };
    let victims: Vec<JobId> = plan
        .preemptions
        .iter()
        .filter(|p| p.by == job)
        .map(|p| p.victim)
        .collect();
    if !victims.is_empty() {
        explanation.blockers.push(Blocker::Preempting { victims });
        return explanation;
    }

    let cluster = Cluster::new(&after, now);
    let mut eligibility = Eligibility::new(&after, &cluster);
    let context = JobContext::new(pending, partition, &cluster, &mut eligibility, now);
    explanation.blockers.extend(node_blockers(
        &after,
        &cluster,
        &eligibility,
        &context,
        &plan,
        now,
    ));
    if let Some(top) = &plan.top_job
        && top.job != job
    {
        explanation.blockers.push(Blocker::TopJob {
            job: top.job,
            start: top.start,
            nodes: top.nodes.clone(),
        });
    }

    if explanation.estimated_start.is_none()
        && matches!(
            waiting.reason,
            PendingReason::Priority | PendingReason::Resources | PendingReason::Reservation
        )
    {
        explanation.estimated_start = estimate(&after, &plan, &jobs, pending, partition, now);
    }
    explanation
}

/// The earliest start on the timeline once this pass's starts run and the top job holds its nodes
/// from now to the end of its run (pessimistic: backfill before the shadow time is not counted).
fn estimate(
    after: &SchedulerInput,
    plan: &crate::Plan,
    jobs: &BTreeMap<JobId, &PendingJob>,
    job: &PendingJob,
    partition: Option<&str>,
    now: Timestamp,
) -> Option<Timestamp> {
    let mut timeline = after.clone();
    if let Some(top) = &plan.top_job
        && top.job != job.id
    {
        let holder = jobs[&top.job];
        timeline.running.push(as_running(
            holder,
            &top.nodes,
            top.start.plus(holder.time_limit),
        ));
    }
    let cluster = Cluster::new(&timeline, now);
    let mut eligibility = Eligibility::new(&timeline, &cluster);
    let context = JobContext::new(job, partition, &cluster, &mut eligibility, now);
    let target = Target {
        static_set: context.static_set,
        place: &context.place,
        need: &context.need,
        count: job.nodes as usize,
        required: &context.required,
    };
    earliest_start(&cluster, &mut eligibility, target, now).map(|r| r.start)
}

fn as_running(job: &PendingJob, nodes: &[NodeName], end: Timestamp) -> RunningJob {
    RunningJob {
        id: job.id,
        allocation: nodes.iter().map(|n| (n.clone(), job.per_node)).collect(),
        expected_end: end,
        gres_per_node: job.gres_per_node.clone(),
        user: job.user.clone(),
        name: job.name.clone(),
        qos: job.qos.clone(),
        priority: 0,
        array: job.array,
        exclusive: job.exclusive,
    }
}

/// The job's partition's nodes grouped by the first thing each lacks; nodes that could take the job
/// now are left out.
fn node_blockers(
    input: &SchedulerInput,
    cluster: &Cluster<'_>,
    eligibility: &Eligibility<'_>,
    context: &JobContext<'_>,
    plan: &crate::Plan,
    now: Timestamp,
) -> Vec<Blocker> {
    let job = context.job;
    let partition = partition_of(input, job);
    let partition_nodes: Vec<usize> = (0..cluster.names.len())
        .filter(|&n| partition.is_none_or(|p| crate::partition::contains(p, cluster.names[n])))
        .collect();
    let held: Vec<&NodeName> = plan.held_for_preemptors.values().flatten().collect();
    let blocking = eligibility.blocking(context.static_set, &context.place, now);
    let mut groups: BTreeMap<NodeLack, Vec<NodeName>> = BTreeMap::new();
    for node in partition_nodes {
        let name = cluster.names[node];
        let view = &input.nodes[name];
        let lack = if let Some(r) = &job.reservation
            && !input
                .reservations
                .get(r)
                .is_some_and(|res| res.covers(name))
        {
            Some(NodeLack::OutsideReservation(r.clone()))
        } else if job.excluded_nodes.contains(name) {
            Some(NodeLack::Excluded)
        } else if let Some(c) = &job.constraint
            && !c.matches(&view.features)
        {
            Some(NodeLack::Features(c.to_string()))
        } else if !cluster.capacity_fits(node, &context.need) {
            Some(NodeLack::Capacity)
        } else if view.availability != NodeAvailability::Up {
            Some(NodeLack::Unavailable(view.availability))
        } else if let Some(r) = blocking
            .iter()
            .find(|r| input.reservations[**r].covers(name))
        {
            Some(NodeLack::Reserved(r.to_string()))
        } else if held.contains(&name) {
            Some(NodeLack::HeldForPreemptor)
        } else if !cluster.used[node].admits(&context.need) {
            Some(if job.exclusive {
                NodeLack::NotAlone
            } else {
                NodeLack::HeldExclusively
            })
        } else if cluster.free[node].cpus < job.per_node.cpus {
            Some(NodeLack::Cpus)
        } else if cluster.free[node].memory_mb < job.per_node.memory_mb {
            Some(NodeLack::Memory)
        } else if !cluster.gres_fit(&cluster.gres_used, node, &context.need) {
            let free = cluster.gres_free(&cluster.gres_used, node);
            let short: Vec<&str> = job
                .gres_per_node
                .iter()
                .filter(|(name, need)| {
                    cluster
                        .gres_kinds
                        .kind(name)
                        .is_none_or(|kind| free[kind] < **need)
                })
                .map(|(name, _)| name.as_str())
                .collect();
            Some(NodeLack::Gres(short.join(",")))
        } else {
            None
        };
        if let Some(lack) = lack {
            groups.entry(lack).or_default().push(name.clone());
        }
    }
    groups
        .into_iter()
        .map(|(lack, nodes)| Blocker::Nodes { lack, nodes })
        .collect()
}

fn partition_of<'a>(input: &'a SchedulerInput, job: &PendingJob) -> Option<&'a crate::Partition> {
    crate::partition::of_job(input, job)
        .ok()
        .flatten()
        .map(|(_, p)| p)
}

/// Nodes listed in full up to this many, then "and N more": `cluster why` stays one screen on
/// big clusters.
const NODES_SHOWN: usize = 8;

fn node_list(nodes: &[NodeName]) -> String {
    let shown: Vec<&str> = nodes.iter().take(NODES_SHOWN).map(|n| n.as_str()).collect();
    let mut text = shown.join(",");
    if nodes.len() > NODES_SHOWN {
        text.push_str(&format!(" and {} more", nodes.len() - NODES_SHOWN));
    }
    text
}

/// A span in the largest whole units that read well: `90s`, `12m`, `3h05m`, `2d04h`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: Timestamp| {
            if t <= self.now {
                "now".to_string()
            } else {
                format!("in {} (at {})", span(t.since(self.now)), t.utc())
            }
        };
        if self.starts_now {
            return writeln!(
                f,
                "Job {} would start now (priority {}).",
                self.job, self.priority
            );
        }
        match self.reason {
            Some(reason) => writeln!(
                f,
                "Job {} is pending: {} (priority {}).",
                self.job, reason, self.priority
            )?,
            None => writeln!(f, "Job {} is not pending.", self.job)?,
        }
        for blocker in &self.blockers {
            match blocker {
                Blocker::NotPending => {}
                Blocker::Held(hold) => writeln!(f, "  {}", HoldText(hold))?,
                Blocker::Nodes { lack, nodes } => {
                    let what = match lack {
                        NodeLack::OutsideReservation(r) => format!("not in reservation {r}"),
                        NodeLack::Excluded => "are excluded by the job".to_string(),
                        NodeLack::NotAlone => {
                            "run other jobs (it wants its nodes alone)".to_string()
                        }
                        NodeLack::HeldExclusively => "run a job that has them alone".to_string(),
                        NodeLack::Features(c) => format!("lack features {c}"),
                        NodeLack::Capacity => "are too small for it".to_string(),
                        NodeLack::Unavailable(NodeAvailability::Drain) => "are drained".to_string(),
                        NodeLack::Unavailable(_) => "are down".to_string(),
                        NodeLack::Reserved(r) => format!("are reserved ({r}) during its run"),
                        NodeLack::HeldForPreemptor => "are held for a preempting job".to_string(),
                        NodeLack::Cpus => "have too few free CPUs".to_string(),
                        NodeLack::Memory => "have too little free memory".to_string(),
                        NodeLack::Gres(g) => format!("have too few free {g}"),
                    };
                    writeln!(f, "  {} node(s) {what}: {}", nodes.len(), node_list(nodes))?;
                }
                Blocker::TopJob { job, start, nodes } => writeln!(
                    f,
                    "  Job {job} holds the backfill reservation: it starts {} on {}; nothing that \
                     would delay it starts first.",
                    at(*start),
                    node_list(nodes)
                )?,
                Blocker::Preempting { victims } => {
                    let ids: Vec<String> = victims.iter().map(|v| v.to_string()).collect();
                    writeln!(f, "  Preempting job(s) {} to make room.", ids.join(","))?
                }
            }
        }
        match self.estimated_start {
            Some(t) => writeln!(f, "  Estimated start: {}.", at(t)),
            None if self.reason.is_some() => writeln!(f, "  Estimated start: unknown."),
            None => Ok(()),
        }
    }
}

struct HoldText<'a>(&'a Hold);

impl fmt::Display for HoldText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::partition::PartitionProblem as P;
        match self.0 {
            Hold::Partition(P::Unknown(name)) => write!(f, "Partition {name} does not exist."),
            Hold::Partition(P::NoDefault) => {
                write!(
                    f,
                    "The job names no partition and there is no default partition."
                )
            }
            Hold::Partition(P::TimeLimit {
                partition,
                max_time,
            }) => write!(
                f,
                "Its time limit is longer than partition {partition}'s limit of {}.",
                span(*max_time)
            ),
            Hold::Partition(P::NodeLimit {
                partition,
                max_nodes,
            }) => write!(
                f,
                "It asks for more nodes than partition {partition}'s limit of {max_nodes}."
            ),
            Hold::Partition(P::AccountNotAllowed { partition }) => {
                write!(f, "Its account may not use partition {partition}.")
            }
            Hold::Partition(P::UserNotAllowed { partition }) => {
                write!(f, "Its user and groups may not use partition {partition}.")
            }
            Hold::Held(JobHold::User) => write!(
                f,
                "Held by its owner: it is not considered until released (scontrol release, cluster release)."
            ),
            Hold::Held(JobHold::Admin) => write!(
                f,
                "Held by root: it is not considered until root releases it."
            ),
            Hold::Reservation { name, problem } => write!(f, "Reservation {name} {problem}."),
            Hold::Dependency {
                dependency,
                outcome,
                never,
            } => {
                let state = match outcome {
                    Some(outcome) => format!("{outcome:?}").to_lowercase(),
                    None => "unknown".to_string(),
                };
                if *never {
                    write!(
                        f,
                        "Dependency {dependency} can never be satisfied (that job is {state})."
                    )
                } else {
                    write!(
                        f,
                        "Waits for dependency {dependency} (that job is {state})."
                    )
                }
            }
            Hold::Singleton { holder } => write!(
                f,
                "Singleton: job {holder} of the same user and name runs or waits ahead."
            ),
            Hold::ArrayLimit {
                array,
                running,
                max_running,
            } => write!(
                f,
                "Array {array} already runs {running} element(s), its limit is {max_running}."
            ),
            Hold::BeginTime { at } => {
                write!(f, "Not eligible before its begin time, {}.", at.utc())
            }
        }
    }
}
