//! The snapshot a scheduling pass reads: nodes, running jobs, pending jobs, weights, and the site's
//! policy (partitions, QOS, advance reservations, fair-share usage).
//!
//! Every field added after the first version has a neutral default meaning "no constraint", and every
//! struct implements `Default`, so callers write `PendingJob { id, nodes, .., ..Default::default() }`.

use crate::advance::AdvanceReservation;
use crate::array::ArrayMember;
use crate::constraint::Constraint;
use crate::dependency::{Dependency, JobOutcome};
use crate::fairshare::{Association, ShareTable};
use crate::partition::Partition;
use crate::qos::Qos;
use beowulf_types::{JobHold, JobId, Millis, NodeName, Resources, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// Everything one scheduling pass may look at.
#[derive(Debug, Clone, Default)]
pub struct SchedulerInput {
    pub nodes: BTreeMap<NodeName, NodeView>,
    /// Jobs that hold resources now (running, or ended but not yet cleaned up on some node).
    pub running: Vec<RunningJob>,
    /// Jobs waiting to start, in any order; the scheduler orders them by priority.
    pub pending: Vec<PendingJob>,
    pub weights: PriorityWeights,
    /// Partitions by name. Empty: the whole cluster is one implicit partition without limits.
    pub partitions: BTreeMap<String, Partition>,
    /// QOS definitions by name. A job naming a QOS missing here gets no QOS priority and preempts
    /// nothing.
    pub qos: BTreeMap<String, Qos>,
    /// Advance reservations by name.
    pub reservations: BTreeMap<String, AdvanceReservation>,
    /// Decayed usage (CPU-milliseconds, already decayed to `now` by the head with
    /// [`crate::fairshare::decay`]) per user and per account. Missing: no usage.
    pub usage: BTreeMap<Association, f64>,
    /// Raw fair-share shares per user and per account. Missing: 1 share (everyone equal).
    pub shares: BTreeMap<Association, u32>,
    /// What became of jobs that dependencies name. Jobs in `pending` count as pending and jobs in
    /// `running` as running unless listed here; an ID found nowhere can never satisfy a dependency
    /// (the head refuses unknown IDs at submit, and keeps outcomes of jobs still depended upon).
    pub job_outcomes: BTreeMap<JobId, JobOutcome>,
}

impl SchedulerInput {
    /// The fair-share table a pass over this input uses: the users and accounts with shares or
    /// usage in it, and those of its pending jobs.
    pub fn share_table(&self) -> ShareTable {
        ShareTable::new(
            &self.usage,
            &self.shares,
            self.pending.iter().map(|job| job.user.as_str()),
            self.pending.iter().map(|job| job.account.as_str()),
        )
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// What the node has in total.
    pub capacity: Resources,
    pub availability: NodeAvailability,
    /// Features a job's constraint can ask for (Slurm's node `Features`), e.g. `avx512`, `ib`.
    pub features: BTreeSet<String>,
    /// Generic resources the node has in total, by name (e.g. `gpu` -> 4).
    pub gres: BTreeMap<String, u32>,
}

/// Whether new work may be placed on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeAvailability {
    /// Healthy and accepting jobs.
    #[default]
    Up,
    /// Healthy, but an admin drained it: running jobs finish, nothing new starts.
    Drain,
    /// Missed its heartbeats: nothing starts, and its jobs have been dealt with by the head.
    Down,
}

/// A job holding resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub id: JobId,
    /// Resources the job holds on each of its nodes.
    pub allocation: BTreeMap<NodeName, Resources>,
    /// When the job will have released its resources at the latest (start + time limit).
    pub expected_end: Timestamp,
    /// Generic resources the job holds on each of its nodes (the same on every node of
    /// `allocation`). Empty: none.
    pub gres_per_node: BTreeMap<String, u32>,
    pub user: String,
    /// The job's name, for `singleton` dependencies.
    pub name: String,
    /// The job's QOS; `None` is never preempted.
    pub qos: Option<String>,
    /// The job's priority when it started: among preemptable jobs, the lowest go first.
    pub priority: u64,
    /// Set when the job is an element of a job array, so the array's throttle counts it.
    pub array: Option<ArrayMember>,
    /// The job has its nodes alone (`--exclusive`): nothing else starts there while it holds them.
    pub exclusive: bool,
}

impl Default for RunningJob {
    fn default() -> Self {
        RunningJob {
            id: JobId(0),
            allocation: BTreeMap::new(),
            expected_end: Timestamp(0),
            gres_per_node: BTreeMap::new(),
            user: String::new(),
            name: String::new(),
            qos: None,
            priority: 0,
            array: None,
            exclusive: false,
        }
    }
}

/// A job waiting to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    pub id: JobId,
    pub submitted: Timestamp,
    /// Number of distinct nodes the job needs.
    pub nodes: u32,
    /// What the job needs on each of those nodes.
    pub per_node: Resources,
    pub time_limit: Millis,
    /// Partition by name; `None`: the default partition (or the whole cluster when the input has
    /// no partitions).
    pub partition: Option<String>,
    /// User and groups by name (names, not uids: partitions and reservations are configured with
    /// names, and names read well in explanations). Empty user: anonymous, allowed only where
    /// partitions allow everyone.
    pub user: String,
    pub groups: BTreeSet<String>,
    /// Fair-share account; empty: none (only the user's fair-share counts).
    pub account: String,
    pub qos: Option<String>,
    /// The job's name, for `singleton` dependencies.
    pub name: String,
    /// All must hold (Slurm's `,`-separated list).
    pub dependencies: Vec<Dependency>,
    /// Required node features (`--constraint`); `None`: any node.
    pub constraint: Option<Constraint>,
    /// Generic resources needed on each node (`--gres gpu:2`). Empty: none.
    pub gres_per_node: BTreeMap<String, u32>,
    /// The advance reservation the job runs in (`--reservation`); `None`: none.
    pub reservation: Option<String>,
    /// Set when the job is an element of a job array.
    pub array: Option<ArrayMember>,
    /// Set while the job is held (`scontrol hold`, `sbatch --hold`): it is not considered, and
    /// waits with the hold's reason.
    pub held: Option<JobHold>,
    /// Nodes the job must get, every one of them (`--nodelist`); it may get others beside them when
    /// it asks for more nodes. Empty: any.
    pub required_nodes: BTreeSet<NodeName>,
    /// Nodes the job never runs on (`--exclude`).
    pub excluded_nodes: BTreeSet<NodeName>,
    /// The job wants its nodes alone (`--exclusive`): it starts only on nodes that run nothing,
    /// and nothing else starts there while it runs.
    pub exclusive: bool,
    /// The job is not eligible before this time (`--begin`); `None`: at once.
    pub begin: Option<Timestamp>,
}

impl Default for PendingJob {
    fn default() -> Self {
        PendingJob {
            id: JobId(0),
            submitted: Timestamp(0),
            nodes: 1,
            per_node: Resources::ZERO,
            time_limit: 0,
            partition: None,
            user: String::new(),
            groups: BTreeSet::new(),
            account: String::new(),
            qos: None,
            name: String::new(),
            dependencies: Vec::new(),
            constraint: None,
            gres_per_node: BTreeMap::new(),
            reservation: None,
            array: None,
            held: None,
            required_nodes: BTreeSet::new(),
            excluded_nodes: BTreeSet::new(),
            exclusive: false,
            begin: None,
        }
    }
}

/// Weights of the multifactor priority, each factor in 0.0..=1.0 as in Slurm's
/// priority/multifactor: `age_weight * age + size_weight * size + fairshare_weight * fairshare +
/// partition_weight * partition + qos_weight * qos`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityWeights {
    /// Weight of waiting time; the age factor reaches 1.0 at `max_age`.
    pub age_weight: u32,
    pub max_age: Millis,
    /// Weight of job size (share of the cluster's CPUs the job asks for: larger jobs first, as Slurm
    /// does by default, so they are not starved by a stream of small ones).
    pub size_weight: u32,
    /// Weight of the fair-share factor ([`crate::fairshare`]). Default 0.
    pub fairshare_weight: u32,
    /// Weight of the partition's `priority_factor` normalised by the largest one. Default 0.
    pub partition_weight: u32,
    /// Weight of the QOS `priority` normalised by the largest one. Default 0.
    pub qos_weight: u32,
}

impl Default for PriorityWeights {
    /// Age dominates (first come, first served within a week), size breaks near-ties; the newer
    /// factors are off until the head's config turns them on, so old behaviour is unchanged.
    fn default() -> Self {
        PriorityWeights {
            age_weight: 1000,
            max_age: 7 * 24 * 60 * 60 * 1000,
            size_weight: 100,
            fairshare_weight: 0,
            partition_weight: 0,
            qos_weight: 0,
        }
    }
}
