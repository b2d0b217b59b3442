//! The discrete-event loop: a virtual clock in milliseconds, jobs submitted and ended by events, node
//! events, and a scheduling pass after every batch of events at the same instant (as the head schedules
//! on every submit and finish), plus optional periodic passes.
//!
//! A started job ends at start + min(runtime, time limit): COMPLETED, or TIMEOUT when its runtime is
//! longer than its limit. The loop stops when no event is left; jobs still waiting then never started.
//! Deterministic: events are ordered by time, kind and insertion, and state lives in ordered maps.

use crate::allocation::Allocation;
use crate::cluster::Cluster;
use crate::error::SimError;
use crate::event::{Event, EventQueue, NodeChange, NodeEvent};
use crate::job::{Job, JobOutcome};
use crate::policy::{PassRunner, PassStats, Placement, Policy};
use beowulf_scheduler::NodeAvailability;
use beowulf_types::{JobId, JobState, Millis, NodeName, RunKey, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// How to run a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    pub policy: Policy,
    /// Run `invariants::check` after every scheduler call and fail on the first violation.
    pub check: bool,
    /// Seed of the rng handed to the scheduler.
    pub seed: u64,
    /// Also pass every this many ms (from the first event), besides after every event batch.
    pub interval: Option<Millis>,
}

impl SimConfig {
    pub fn new(policy: Policy) -> Self {
        SimConfig {
            policy,
            check: true,
            seed: 1,
            interval: None,
        }
    }
}

/// Everything a finished simulation knows.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub policy: Policy,
    /// By job ID.
    pub jobs: Vec<JobOutcome>,
    pub stats: PassStats,
    /// CPUs of the cluster.
    pub total_cpus: u64,
    /// Sum over every run of CPUs held times run length (runs cut by a node failure included).
    pub allocated_cpu_ms: u128,
}

#[derive(Debug)]
struct Record {
    job: Job,
    state: JobState,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    nodes: Vec<NodeName>,
    runs: u32,
}

/// Runs `jobs` on `cluster` under `config`, with `node_events` applied at their times.
pub fn simulate(
    cluster: Cluster,
    jobs: Vec<Job>,
    node_events: Vec<NodeEvent>,
    config: &SimConfig,
) -> Result<Outcome, SimError> {
    Simulation::new(cluster, jobs, node_events, config)?.run()
}

#[derive(Debug)]
struct Simulation {
    cluster: Cluster,
    records: BTreeMap<JobId, Record>,
    events: EventQueue,
    /// Waiting jobs in queue order: (submit, ID).
    pending: BTreeSet<(Timestamp, JobId)>,
    running: BTreeMap<JobId, Allocation>,
    runner: PassRunner,
    policy: Policy,
    interval: Option<Millis>,
    allocated_cpu_ms: u128,
}

impl Simulation {
    fn new(
        cluster: Cluster,
        jobs: Vec<Job>,
        node_events: Vec<NodeEvent>,
        config: &SimConfig,
    ) -> Result<Self, SimError> {
        let mut events = EventQueue::default();
        let mut records = BTreeMap::new();
        for job in jobs {
            let id = job.id;
            events.push(job.submit, Event::Submit(id));
            let record = Record {
                job,
                state: JobState::Pending,
                start: None,
                end: None,
                nodes: Vec::new(),
                runs: 0,
            };
            if records.insert(id, record).is_some() {
                return Err(SimError::DuplicateJob(id));
            }
        }
        for NodeEvent { at, node, change } in node_events {
            if !cluster.nodes.contains_key(&node) {
                return Err(SimError::UnknownNode { at, node });
            }
            events.push(at, Event::Node { node, change });
        }
        if let (Some(interval), Some(first)) = (config.interval, events.next_time()) {
            events.push(first.plus(interval.max(1)), Event::Tick);
        }
        Ok(Simulation {
            cluster,
            records,
            events,
            pending: BTreeSet::new(),
            running: BTreeMap::new(),
            runner: PassRunner::new(config.policy, config.check, config.seed),
            policy: config.policy,
            interval: config.interval.map(|interval| interval.max(1)),
            allocated_cpu_ms: 0,
        })
    }

    fn run(mut self) -> Result<Outcome, SimError> {
        while let Some(now) = self.events.next_time() {
            while let Some(event) = self.events.pop_at(now) {
                self.apply(now, event);
            }
            if !self.pending.is_empty() {
                self.pass(now)?;
            }
        }
        let total_cpus = self.cluster.total_cpus();
        let jobs = self
            .records
            .into_values()
            .map(|record| JobOutcome {
                id: record.job.id,
                submit: record.job.submit,
                state: record.state,
                start: record.start,
                end: record.end,
                nodes: record.nodes,
                cpus: record.job.cpus(),
                runs: record.runs,
            })
            .collect();
        Ok(Outcome {
            policy: self.policy,
            jobs,
            stats: self.runner.stats,
            total_cpus,
            allocated_cpu_ms: self.allocated_cpu_ms,
        })
    }

    fn apply(&mut self, now: Timestamp, event: Event) {
        match event {
            Event::Submit(id) => {
                let record = &self.records[&id];
                self.pending.insert((record.job.submit, id));
            }
            Event::End(RunKey { job, run }) => {
                let current = self.records[&job].runs == run && self.running.contains_key(&job);
                if current {
                    let state = self.records[&job].job.run_end().1;
                    self.release(now, job, state);
                }
            }
            Event::Node { node, change } => self.change_node(now, &node, change),
            Event::Tick => {
                // Keep ticking while anything else can still happen.
                if let Some(interval) = self.interval
                    && !self.events.is_empty()
                {
                    self.events.push(now.plus(interval), Event::Tick);
                }
            }
        }
    }

    fn change_node(&mut self, now: Timestamp, node: &NodeName, change: NodeChange) {
        let Some(sim_node) = self.cluster.nodes.get_mut(node) else {
            return;
        };
        sim_node.availability = match change {
            NodeChange::Down => NodeAvailability::Down,
            NodeChange::Up => NodeAvailability::Up,
            NodeChange::Drain => NodeAvailability::Drain,
        };
        if change != NodeChange::Down {
            return;
        }
        let hit: Vec<JobId> = self
            .running
            .values()
            .filter(|allocation| allocation.nodes.contains(node))
            .map(|allocation| allocation.job)
            .collect();
        for job in hit {
            if self.records[&job].job.requeue {
                self.release(now, job, JobState::Pending);
                let record = &self.records[&job];
                self.pending.insert((record.job.submit, job));
            } else {
                self.release(now, job, JobState::NodeFail);
            }
        }
    }

    /// Ends the current run of `job` at `now`, leaving it in `state`.
    fn release(&mut self, now: Timestamp, job: JobId, state: JobState) {
        let Some(allocation) = self.running.remove(&job) else {
            return;
        };
        self.allocated_cpu_ms +=
            u128::from(allocation.cpus()) * u128::from(now.since(allocation.start));
        let record = self
            .records
            .get_mut(&job)
            .expect("a running job has a record");
        record.state = state;
        if state == JobState::Pending {
            // Requeued: back to waiting, as if it had not run.
            record.start = None;
            record.end = None;
            record.nodes.clear();
        } else {
            record.end = Some(now);
        }
    }

    fn pass(&mut self, now: Timestamp) -> Result<(), SimError> {
        let queue: Vec<&Job> = self
            .pending
            .iter()
            .map(|(_, id)| &self.records[id].job)
            .collect();
        let placements = self
            .runner
            .pass(now, &self.cluster, &self.running, &queue)?;
        for Placement { job, nodes } in placements {
            self.start(now, job, nodes);
        }
        Ok(())
    }

    fn start(&mut self, now: Timestamp, id: JobId, nodes: Vec<NodeName>) {
        let record = self
            .records
            .get_mut(&id)
            .expect("a placed job has a record");
        self.pending.remove(&(record.job.submit, id));
        record.state = JobState::Running;
        record.start = Some(now);
        record.end = None;
        record.nodes.clone_from(&nodes);
        record.runs += 1;
        let (length, _) = record.job.run_end();
        self.events.push(
            now.plus(length),
            Event::End(RunKey {
                job: id,
                run: record.runs,
            }),
        );
        self.running.insert(
            id,
            Allocation {
                job: id,
                nodes,
                per_node: record.job.per_node,
                start: now,
                expected_end: now.plus(record.job.time_limit),
            },
        );
    }
}
