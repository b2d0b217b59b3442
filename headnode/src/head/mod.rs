//! The head's state machine: in-memory records, written through to the store in atomic changes.
//!
//! Every mutation runs inside [`Head::mutate`]: it stages copies of the records it touches, applies
//! them in memory and queues them for the store under the head's lock, then waits, without the lock,
//! until they are durable (group commit, [`commit`]). Only then is its caller answered, watchers
//! woken and each touched node sent its new desired state. A failed write undoes the change.

mod allocations;
mod commit;
mod commit_queue;
mod control;
mod credential;
mod desired;
mod fabric;
mod identity;
mod images;
mod jobs;
mod nodes;
mod reservations;
mod schedule;
mod views;

use crate::config::HeadConfig;
use crate::model::{ImageRecord, JobRecord, NodeRecord, ReservationRecord};
use crate::store::{EncodedChange, Store, StoreError};
use beowulf_proto::v1;
use beowulf_scheduler::Pending;
use beowulf_types::{Generation, JobId, JobState, NodeName, RunKey, SourceError, Timestamp};
use commit_queue::{CommitQueue, Seq, Undo};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc, watch};

pub use allocations::StepTarget;
pub use control::JobUpdate;
pub use identity::Caller;
pub use images::{ImageUpload, ResolvedImage, validate_image_name};
pub use jobs::Submitted;
pub use views::DEFAULT_PAGE_JOBS;

/// What went wrong with a request to the head.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("{0}")]
    JobFile(#[from] SourceError),
    #[error("no job {0}")]
    NoSuchJob(JobId),
    #[error("no node {0}")]
    NoSuchNode(NodeName),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("job {job} has already ended ({state})")]
    AlreadyEnded { job: JobId, state: JobState },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "image {0:?}: no such image; import it with `cluster image import {0} PATH` or give an absolute path to a rootfs tarball"
    )]
    NoSuchImage(String),
    /// Reading or writing the image store (or a tarball named by path) failed.
    #[error("{0}")]
    ImageIo(String),
    /// The OS random source failed; no run is started without a credential.
    #[error("cannot draw a launch credential from the OS random source: {0}")]
    Entropy(String),
}

/// A connected agent's outgoing stream.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<v1::HeadMessage>,
    /// Runs whose argv and environment this session has carried: later desired states leave
    /// them out (`Assignment.payload_omitted`). A new session starts empty, so an agent that
    /// reconnects or restarts gets them again.
    pub payloads_sent: BTreeSet<RunKey>,
}

#[derive(Debug)]
struct Inner {
    jobs: BTreeMap<JobId, JobRecord>,
    /// Jobs that are pending, running, or still being cleaned up on some node.
    active: BTreeSet<JobId>,
    nodes: BTreeMap<NodeName, NodeRecord>,
    next_job_id: u64,
    /// The generation of the newest change applied in memory (durable or not).
    generation: Generation,
    /// The generation of the newest durable change: the one agents are sent.
    durable_generation: Generation,
    /// The newest change applied in memory, and the newest durable one.
    applied_seq: Seq,
    durable_seq: Seq,
    /// What each change not yet durable replaced, oldest first.
    unsynced: Vec<Undo>,
    /// Nodes touched by a change not yet durable, with the newest such change: their desired
    /// state is held back until it is durable.
    unflushed_nodes: BTreeMap<NodeName, Seq>,
    /// The last plan's verdict on each pending job (memory only: recomputed at every pass).
    pending: BTreeMap<JobId, Pending>,
    /// Last heartbeat (or registration) of each node (memory only).
    last_seen: BTreeMap<NodeName, Timestamp>,
    sessions: BTreeMap<NodeName, Session>,
    next_session_id: u64,
    reservations: BTreeMap<String, ReservationRecord>,
    images: BTreeMap<String, ImageRecord>,
    /// Digests of tarballs named by path, so each is hashed once (memory only).
    image_digests: std::collections::HashMap<images::FileKey, String>,
    /// Jobs given cleanup holds since this head started, with the generation of the change that
    /// gave them: an agent that acted on that generation and does not know the run has nothing
    /// of it left (memory only; after a restart, registrations settle older holds).
    hold_generation: BTreeMap<JobId, Generation>,
}

/// The head-node daemon's shared state.
#[derive(Debug)]
pub struct Head {
    inner: Mutex<Inner>,
    store: Store,
    commits: CommitQueue,
    pub config: HeadConfig,
    /// Wakes the scheduling loop (submit, job end, node change).
    pub wake_scheduler: Notify,
    /// Bumped after every committed change; `WatchJob` streams follow it.
    revision: watch::Sender<u64>,
    /// Callers' user names and groups, from NSS.
    identities: identity::Identities,
}

/// Records staged by one mutation, committed together.
#[derive(Debug)]
pub(crate) struct Tx<'a> {
    inner: &'a mut Inner,
    jobs: BTreeMap<JobId, JobRecord>,
    nodes: BTreeMap<NodeName, NodeRecord>,
    /// Nodes whose desired state must be re-sent even if no job record of theirs changed.
    resend: BTreeSet<NodeName>,
}

impl Tx<'_> {
    pub fn job(&self, id: JobId) -> Option<&JobRecord> {
        self.jobs.get(&id).or_else(|| self.inner.jobs.get(&id))
    }

    pub fn job_mut(&mut self, id: JobId) -> Option<&mut JobRecord> {
        if !self.jobs.contains_key(&id) {
            let job = self.inner.jobs.get(&id)?.clone();
            self.jobs.insert(id, job);
        }
        self.jobs.get_mut(&id)
    }

    pub fn insert_job(&mut self, job: JobRecord) {
        self.jobs.insert(job.id, job);
    }

    pub fn node_mut(&mut self, name: &NodeName) -> Option<&mut NodeRecord> {
        if !self.nodes.contains_key(name) {
            let node = self.inner.nodes.get(name)?.clone();
            self.nodes.insert(name.clone(), node);
        }
        self.nodes.get_mut(name)
    }

    pub fn insert_node(&mut self, node: NodeRecord) {
        self.nodes.insert(node.name.clone(), node);
    }

    /// Active job IDs as of the start of this mutation.
    pub fn active_ids(&self) -> Vec<JobId> {
        self.inner.active.iter().copied().collect()
    }

    pub fn resend(&mut self, node: NodeName) {
        self.resend.insert(node);
    }

    pub fn reservation_exists(&self, name: &str) -> bool {
        self.inner.reservations.contains_key(name)
    }

    pub fn allocate_job_id(&mut self) -> JobId {
        let id = JobId(self.inner.next_job_id);
        self.inner.next_job_id += 1;
        id
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        // Staged records shadow committed ones.
        self.inner
            .nodes
            .values()
            .map(|n| self.nodes.get(&n.name).unwrap_or(n))
            .chain(
                self.nodes
                    .values()
                    .filter(|n| !self.inner.nodes.contains_key(&n.name)),
            )
    }
}

/// Gives jobs stored before partitions were resolved at submit the partition they would have
/// been given then; a name the configuration no longer has is kept, and the scheduler says so.
fn resolve_stored_partitions(jobs: &mut BTreeMap<JobId, JobRecord>, config: &HeadConfig) {
    let partitions = config.partitions();
    for job in jobs.values_mut().filter(|j| j.partition.is_none()) {
        job.partition = match jobs::resolve_partition(partitions, job.spec.partition.as_deref()) {
            Ok(resolved) => resolved.map(|(name, _)| name),
            Err(_) => job.spec.partition.clone(),
        };
    }
}

impl Head {
    /// Opens the store and loads every record.
    pub fn open(config: HeadConfig) -> Result<Head, StoreError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| StoreError::Io {
            path: config.state_dir.clone(),
            source: redb::Error::Io(e),
        })?;
        let store = Store::open(&config.state_dir.join("headnoded.redb"), &config.store)?;
        let mut snapshot = store.load()?;
        resolve_stored_partitions(&mut snapshot.jobs, &config);
        let active = snapshot
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal() || !j.cleanup.is_empty())
            .map(|j| j.id)
            .collect();
        // Every known node gets a full heartbeat timeout to reconnect after a head restart.
        let now = now();
        let last_seen = snapshot.nodes.keys().map(|n| (n.clone(), now)).collect();
        let inner = Inner {
            jobs: snapshot.jobs,
            active,
            nodes: snapshot.nodes,
            next_job_id: snapshot.next_job_id,
            generation: snapshot.generation,
            durable_generation: snapshot.generation,
            applied_seq: 0,
            durable_seq: 0,
            unsynced: Vec::new(),
            unflushed_nodes: BTreeMap::new(),
            pending: BTreeMap::new(),
            last_seen,
            sessions: BTreeMap::new(),
            next_session_id: 1,
            reservations: snapshot.reservations,
            images: snapshot.images,
            image_digests: Default::default(),
            hold_generation: BTreeMap::new(),
        };
        images::remove_stale_uploads(&config.image_store());
        Ok(Head {
            inner: Mutex::new(inner),
            store,
            commits: CommitQueue::default(),
            config,
            wake_scheduler: Notify::new(),
            revision: watch::Sender::new(0),
            identities: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `body` over staged copies, applies what it staged and returns once that is durable.
    pub(crate) fn mutate<R>(
        &self,
        body: impl FnOnce(&mut Tx<'_>) -> Result<R, HeadError>,
    ) -> Result<R, HeadError> {
        let mut inner = self.lock();
        let next_job_id_before = inner.next_job_id;
        let mut tx = Tx {
            inner: &mut inner,
            jobs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            resend: BTreeSet::new(),
        };
        let result = body(&mut tx);
        let Tx {
            jobs,
            nodes,
            resend,
            ..
        } = tx;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                inner.next_job_id = next_job_id_before;
                return Err(e);
            }
        };
        if jobs.is_empty() && nodes.is_empty() {
            inner.next_job_id = next_job_id_before;
            self.send_desired(&mut inner, &resend);
            return Ok(result);
        }
        let generation = inner.generation.next();
        let seq = inner.applied_seq + 1;
        self.commits.push(
            seq,
            EncodedChange::new(jobs.values(), nodes.values(), inner.next_job_id, generation),
        );
        let mut touched = resend;
        for job in jobs.values() {
            if let Some(old) = inner.jobs.get(&job.id) {
                touched.extend(old.nodes.iter().cloned());
            }
            touched.extend(job.nodes.iter().cloned());
            touched.extend(job.cleanup.keys().cloned());
        }
        touched.extend(nodes.keys().cloned());
        for node in &touched {
            inner.unflushed_nodes.insert(node.clone(), seq);
        }
        let mut undo = Undo {
            seq,
            jobs: Vec::with_capacity(jobs.len()),
            nodes: Vec::with_capacity(nodes.len()),
            next_job_id: next_job_id_before,
            generation: inner.generation,
            new_generation: generation,
            touched,
        };
        for (id, job) in jobs {
            let old_holds = inner.jobs.get(&id).map(|old| &old.cleanup);
            let new_hold = job
                .cleanup
                .iter()
                .any(|(node, run)| old_holds.and_then(|h| h.get(node)) != Some(run));
            if new_hold {
                inner.hold_generation.insert(id, generation);
            }
            if !job.state.is_terminal() || !job.cleanup.is_empty() {
                inner.active.insert(id);
            } else {
                inner.active.remove(&id);
                inner.pending.remove(&id);
            }
            undo.jobs.push((id, inner.jobs.insert(id, job)));
        }
        for (name, node) in nodes {
            undo.nodes
                .push((name.clone(), inner.nodes.insert(name, node)));
        }
        inner.generation = generation;
        inner.applied_seq = seq;
        inner.unsynced.push(undo);
        drop(inner);
        self.wait_durable(seq)?;
        Ok(result)
    }

    /// Read-only access to the committed records.
    fn read<R>(&self, body: impl FnOnce(&Inner) -> R) -> R {
        body(&self.lock())
    }

    /// Whether `node`'s agent has a session with this head (it registered, over mutual TLS when
    /// the agent API requires it).
    pub fn agent_connected(&self, node: &NodeName) -> bool {
        self.lock().sessions.contains_key(node)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    pub fn generation(&self) -> Generation {
        self.lock().generation
    }
}

/// The wall clock, read only at the edges (never inside the scheduler).
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(since_epoch.as_millis() as u64)
}

#[cfg(test)]
mod tests;
