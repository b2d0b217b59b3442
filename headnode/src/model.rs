//! The head's records: jobs and nodes as stored, and what is derived from them (node state, usage).

use beowulf_types::{
    Inventory, JobHold, JobId, JobSignal, JobSpec, JobState, JobTransition, NodeName, NodeState,
    Program, Resources, RunFabric, RunKey, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The partition of a cluster that configures none: every node (Slurm's usual single
/// partition's name on small clusters).
pub const DEFAULT_PARTITION: &str = "all";

/// The user a job belongs to and runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// One line of a job's history, shown by `cluster show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEvent {
    pub time: Timestamp,
    pub message: String,
}

/// A job as the head stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub spec: JobSpec,
    pub user: User,
    pub submit_cwd: String,
    pub submit_env: BTreeMap<String, String>,
    pub state: JobState,
    /// For an ended job: why it ended the way it did (empty when it simply completed).
    pub end_reason: String,
    pub submit_time: Timestamp,
    pub start_time: Option<Timestamp>,
    pub end_time: Option<Timestamp>,
    pub exit_code: Option<i32>,
    /// The nodes of the current (or last) run; index 0 runs rank 0.
    pub nodes: Vec<NodeName>,
    /// Number of the current run: 0 before the first start, +1 at every start. Agents key their
    /// tasks by (job, run), so a requeued job's new run is never confused with its old one.
    pub run: u32,
    /// Exit codes reported by the nodes of the current run.
    pub node_results: BTreeMap<NodeName, i32>,
    /// Nodes that may still hold processes of an ended run (run number as value, stored as is;
    /// [`JobRecord::cleanup_hold`] gives the run); their resources stay allocated until the agent
    /// reports the run gone.
    pub cleanup: BTreeMap<NodeName, u32>,
    pub restarts: u32,
    pub events: Vec<JobEvent>,
    /// The user's groups by name at submit (partitions and reservations allow groups by name).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The same groups by ID, the primary one included: the job's tasks run with all of them.
    #[serde(default)]
    pub gids: Vec<u32>,
    /// The submitter's umask (absent for jobs of older clients: 022).
    #[serde(default)]
    pub umask: Option<u32>,
    /// The partition the job was queued in, resolved once at submit: the one it named or the
    /// cluster's default (Slurm's rule: later changes of the default do not move queued jobs).
    /// `None` when the cluster has no partitions (shown as `all`) or names no default. Records
    /// from before this field get it when the head loads them.
    #[serde(default)]
    pub partition: Option<String>,
    /// Set when the job is an element of a job array.
    #[serde(default)]
    pub array: Option<ArrayElement>,
    /// The priority the job had when it last started (preemption takes the lowest first).
    #[serde(default)]
    pub start_priority: u64,
    /// Container jobs: the image, resolved to a digest at submit (later imports under the same
    /// name do not change what an accepted job runs).
    #[serde(default)]
    pub image: Option<ImageRef>,
    /// MPI jobs: what the current run was given at its start.
    #[serde(default)]
    pub launch: Option<RunLaunch>,
    /// Phase times of the current run reported by the agents.
    #[serde(default)]
    pub phases: RunPhases,
    /// Set while a pending job is held (`scontrol hold`, `sbatch --hold`), and by whom; records
    /// from before holds load as not held.
    #[serde(default)]
    pub hold: Option<JobHold>,
    /// Signals users sent to the current run (`scancel --signal`), the last
    /// [`beowulf_types::MAX_KEPT_SIGNALS`]; a new run starts with none.
    #[serde(default)]
    pub signals: Vec<JobSignal>,
}

/// A container image as a job uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub reference: String,
    pub digest: String,
    pub tar_path: std::path::PathBuf,
}

/// The wiring of a run whose nodes talk to each other (MPI jobs, jobs whose tasks write on
/// several nodes, and batch scripts, whose `srun` starts steps on the job's nodes): its credential, and for MPI jobs the fabric chosen for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLaunch {
    /// Random per run; agents start MPI daemons and job steps, gather fences and take forwarded
    /// output only for requests that carry it.
    pub token: String,
    /// The fabric chosen for an MPI job's run; `None` for jobs that are not MPI jobs. Stored
    /// as `"ib"`/`"tcp"`; records from before it was typed have `""` for none.
    #[serde(default, deserialize_with = "fabric_of_record")]
    pub fabric: Option<RunFabric>,
    #[serde(default)]
    pub fabric_reason: String,
}

/// Reads a stored fabric: `null`, `""` (records from before it was typed) or a fabric's word.
fn fabric_of_record<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RunFabric>, D::Error> {
    match Option::<String>::deserialize(deserializer)?.as_deref() {
        None | Some("") => Ok(None),
        Some(word) => RunFabric::parse(word)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown fabric `{word}`"))),
    }
}

/// When the agents reported a run's container phases (the latest node counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPhases {
    pub image_staged: Option<Timestamp>,
    pub containers_started: Option<Timestamp>,
}

/// A job's place in its array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayElement {
    /// The array's ID: its first element's job ID (Slurm's `SLURM_ARRAY_JOB_ID`).
    pub array: JobId,
    pub index: u32,
    /// Elements in the array, and its throttle (`%N`).
    pub count: u32,
    pub min_index: u32,
    pub max_index: u32,
    pub max_running: Option<u32>,
}

/// An advance reservation (`cluster reserve`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub name: String,
    /// Empty with `all_nodes`: the whole cluster.
    pub nodes: Vec<NodeName>,
    pub all_nodes: bool,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Users allowed to run in it by name; empty: anyone who names it.
    pub users: Vec<String>,
    /// Nobody runs there (maintenance window).
    pub maintenance: bool,
    pub created_by: String,
}

/// An image in the image store: a name bound to a rootfs tar addressed by its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// `sha256:<hex>` of the tar.
    pub digest: String,
    pub size_bytes: u64,
    /// Who imported it: only they or root may replace it.
    pub owner: User,
    pub created: Timestamp,
    /// The blob in the image store (`<image_store>/blobs/sha256-<hex>.tar`).
    pub tar_path: std::path::PathBuf,
}

impl JobRecord {
    /// The job's current (or last) run.
    pub fn run_key(&self) -> RunKey {
        RunKey {
            job: self.id,
            run: self.run,
        }
    }

    /// The run whose processes `node` may still hold, when the job has a cleanup hold there.
    pub fn cleanup_hold(&self, node: &NodeName) -> Option<RunKey> {
        self.cleanup
            .get(node)
            .map(|&run| RunKey { job: self.id, run })
    }

    /// The partition name users see: the resolved one, else `all` (the whole cluster).
    pub fn partition_name(&self) -> &str {
        self.partition.as_deref().unwrap_or(DEFAULT_PARTITION)
    }

    /// What the job holds on each node that has any of its processes.
    pub fn per_node(&self) -> Resources {
        Resources::new(self.spec.cpus_per_node(), self.spec.memory_mb)
    }

    /// Nodes where this job currently holds resources.
    pub fn held_nodes(&self) -> impl Iterator<Item = &NodeName> {
        let running = (self.state == JobState::Running).then_some(self.nodes.iter());
        running.into_iter().flatten().chain(
            self.cleanup
                .keys()
                .filter(move |n| !(self.state == JobState::Running && self.nodes.contains(n))),
        )
    }

    /// Whether node `index` of the allocation runs tasks (a batch script runs on node 0 only).
    pub fn node_runs_tasks(&self, index: usize) -> bool {
        if self.spec.launches_mpirun() {
            // mpirun runs on node 0 and starts the other nodes' daemons itself.
            return index == 0;
        }
        match self.spec.program {
            Program::Script(_) => index == 0,
            // Its steps come and go; the job ends when its submitter (or its limit) ends it.
            Program::Allocation => false,
            Program::Command(_) => !self.spec.ranks_on_node(index as u32).is_empty(),
        }
    }

    pub fn log(&mut self, time: Timestamp, message: impl Into<String>) {
        self.events.push(JobEvent {
            time,
            message: message.into(),
        });
    }

    /// Moves the job along `transition` of the diagram on [`JobState`]; `false` (and nothing
    /// changed) when the diagram has no such arrow from its state.
    fn transition(&mut self, transition: JobTransition) -> bool {
        match self.state.after(transition) {
            Some(next) => {
                self.state = next;
                true
            }
            None => {
                debug_assert!(
                    false,
                    "job {} has no {transition:?} out of {}",
                    self.id, self.state
                );
                false
            }
        }
    }

    /// Starts a new run of a pending job on `nodes`: the run number goes up and the last run's
    /// results are forgotten.
    pub fn start(&mut self, nodes: Vec<NodeName>, now: Timestamp, priority: u64) -> bool {
        if !self.transition(JobTransition::Start) {
            return false;
        }
        self.nodes = nodes;
        self.run += 1;
        self.start_time = Some(now);
        self.start_priority = priority;
        self.node_results.clear();
        self.phases = RunPhases::default();
        self.signals.clear();
        true
    }

    /// Puts a running job back in the queue; nodes that have not reported keep a cleanup hold.
    pub fn requeue(&mut self, now: Timestamp, why: &str) {
        self.hold_unreported_nodes();
        if !self.transition(JobTransition::Requeue) {
            return;
        }
        self.start_time = None;
        self.node_results.clear();
        self.restarts += 1;
        self.log(now, format!("requeued: {why}"));
    }

    /// Fails a run that was started in this very mutation but cannot be delivered to its nodes:
    /// no node has it yet, so none keeps a cleanup hold.
    pub fn fail_undelivered(&mut self, now: Timestamp, reason: impl Into<String>) {
        self.state = JobState::Pending;
        self.end(JobTransition::Fail, now, reason);
    }

    /// Ends the current run (`transition` leads to a terminal state): state, time, reason, and
    /// cleanup of every node that has not reported.
    pub fn end(&mut self, transition: JobTransition, now: Timestamp, reason: impl Into<String>) {
        let reason = reason.into();
        if self.state == JobState::Running {
            self.hold_unreported_nodes();
        }
        if !self.transition(transition) {
            return;
        }
        let state = self.state;
        debug_assert!(state.is_terminal());
        self.end_time = Some(now);
        let line = if reason.is_empty() {
            format!("ended {state}")
        } else {
            format!("ended {state}: {reason}")
        };
        self.end_reason = reason;
        self.log(now, line);
    }

    /// Every node of the run that has not reported keeps a cleanup hold on it.
    fn hold_unreported_nodes(&mut self) {
        for node in &self.nodes {
            if !self.node_results.contains_key(node) {
                self.cleanup.insert(node.clone(), self.run);
            }
        }
    }
}

/// A compute node as the head stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: NodeName,
    pub inventory: Inventory,
    /// Set by `cluster drain`: running jobs finish, nothing new starts.
    pub drain_reason: Option<String>,
    /// Set when heartbeats stop; cleared when the agent registers again.
    pub down_reason: Option<String>,
    /// Where the agent serves MPI launches (host:port), as it said at registration.
    #[serde(default)]
    pub launch_endpoint: String,
}

impl NodeRecord {
    pub fn capacity(&self) -> Resources {
        Resources::new(self.inventory.cpus, self.inventory.memory_mb)
    }

    /// The state users see, from health, the drain flag and what is allocated.
    pub fn state(&self, allocated: Resources) -> NodeState {
        if self.down_reason.is_some() {
            NodeState::Down
        } else if self.drain_reason.is_some() {
            if allocated.cpus > 0 {
                NodeState::Draining
            } else {
                NodeState::Drained
            }
        } else if allocated.cpus == 0 {
            NodeState::Idle
        } else if allocated.cpus >= self.inventory.cpus {
            NodeState::Allocated
        } else {
            NodeState::Mixed
        }
    }

    pub fn reason(&self) -> &str {
        self.down_reason
            .as_deref()
            .or(self.drain_reason.as_deref())
            .unwrap_or("")
    }
}
