//! The changes on their way to the store: their sequence numbers ([`Seq`]), what each replaced
//! ([`Undo`]), and the queue a flush takes them from ([`CommitQueue`]). How they are written, and
//! undone when a write fails: `commit`.

use crate::model::{JobRecord, NodeRecord};
use crate::store::EncodedChange;
use beowulf_types::{Generation, JobId, NodeName};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Sequence number of a queued change (1, 2, …; 0 means none).
pub(super) type Seq = u64;

/// What one change replaced, so that a failed flush can put it back.
#[derive(Debug)]
pub(super) struct Undo {
    pub seq: Seq,
    pub jobs: Vec<(JobId, Option<JobRecord>)>,
    pub nodes: Vec<(NodeName, Option<NodeRecord>)>,
    pub next_job_id: u64,
    pub generation: Generation,
    /// The generation this change made (sent to agents once it is durable).
    pub new_generation: Generation,
    /// Nodes whose desired state this change may alter.
    pub touched: BTreeSet<NodeName>,
}

/// The queued changes and the flush in progress, under the queue's mutex.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    pub queued: Vec<(Seq, EncodedChange)>,
    pub flushing: bool,
    /// Every change up to this one is durable or failed.
    pub resolved: Seq,
    /// Failed changes whose callers have not yet collected the error.
    pub failed: BTreeMap<Seq, String>,
}

/// The changes waiting for a flush, and who is flushing.
#[derive(Debug, Default)]
pub(super) struct CommitQueue {
    state: Mutex<QueueState>,
    /// Notified when a flush ends.
    pub flushed: Condvar,
}

impl CommitQueue {
    /// The queue's state (lock order: the head's lock first, then this one).
    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a change; called with the head's lock held, so queue order is apply order.
    pub fn push(&self, seq: Seq, change: EncodedChange) {
        self.lock().queued.push((seq, change));
    }
}
