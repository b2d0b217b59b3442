//! Group commit: mutations apply in memory under the head's lock and queue their records; whichever
//! caller finds no flush in progress writes every queued change in one store transaction (one
//! fsync) and answers all of them.
//!
//! Why: a durable store write costs 1–7 ms on this disk, and holding the head's lock across it made
//! every submit wait for the fsyncs of the job starts and ends committed just before it (issue 7).
//! Now a mutation holds the lock only for its in-memory work; the fsync runs outside it, and the
//! changes that arrive while one is in flight share the next one.
//!
//! What stays true:
//! - A caller is answered only after its change is durable, and a change is durable only together
//!   with every change queued before it (one writer, in sequence order).
//! - Nothing reaches an agent before it is durable: a node's desired state is sent only when no
//!   unflushed change touches that node, with the generation of the last durable change. Queries may
//!   show a change up to one flush before it is durable.
//! - A failed flush undoes, newest first, every change not yet durable (the failed ones and those
//!   queued behind them, which were built on top of them) and fails their callers: memory is again
//!   what the store holds.
//!
//! A change's life:
//! ```text
//!   mutate ──apply in memory + queue──▶ Queued ──flush Ok──▶ Durable ──▶ caller answered,
//!                                         │                              agents sent desired state
//!                                         └──flush Err──▶ Undone ──▶ caller gets the store error
//! ```

use super::commit_queue::{Seq, Undo};
use super::{Head, Inner};
use crate::store::{EncodedChange, StoreError};
use beowulf_types::NodeName;
use std::collections::BTreeSet;

impl Head {
    /// Returns once change `seq` is durable (flushing it, and whatever is queued, if nobody is).
    pub(super) fn wait_durable(&self, seq: Seq) -> Result<(), StoreError> {
        let mut queue = self.commits.lock();
        loop {
            if let Some(message) = queue.failed.remove(&seq) {
                return Err(StoreError::NotWritten {
                    path: self.store.path().to_path_buf(),
                    message,
                });
            }
            if queue.resolved >= seq {
                return Ok(());
            }
            if queue.flushing {
                queue = self
                    .commits
                    .flushed
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            queue.flushing = true;
            let batch = std::mem::take(&mut queue.queued);
            drop(queue);
            self.flush(batch);
            queue = self.commits.lock();
        }
    }

    /// Writes `batch` in one transaction, then publishes it (or undoes everything not durable).
    fn flush(&self, batch: Vec<(Seq, EncodedChange)>) {
        let Some(last) = batch.last().map(|(seq, _)| *seq) else {
            let mut queue = self.commits.lock();
            queue.flushing = false;
            self.commits.flushed.notify_all();
            return;
        };
        let written = self
            .store
            .commit(batch.into_iter().map(|(_, c)| c).collect());
        // Lock order: the head, then the queue.
        let mut inner = self.lock();
        match written {
            Ok(()) => {
                let durable: Vec<Undo> = {
                    let split = inner.unsynced.partition_point(|u| u.seq <= last);
                    inner.unsynced.drain(..split).collect()
                };
                if let Some(newest) = durable.last() {
                    inner.durable_generation = newest.new_generation;
                }
                inner.durable_seq = last;
                let touched: BTreeSet<NodeName> =
                    durable.into_iter().flat_map(|u| u.touched).collect();
                self.send_desired(&mut inner, &touched);
                let mut queue = self.commits.lock();
                queue.resolved = last;
                queue.flushing = false;
                drop(queue);
                drop(inner);
                self.revision.send_modify(|r| *r += 1);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the state store; undoing the changes not yet written");
                let message = e.to_string();
                let mut queue = self.commits.lock();
                let later = std::mem::take(&mut queue.queued);
                let mut undone = Vec::new();
                while let Some(undo) = inner.unsynced.pop() {
                    undone.push(undo.seq);
                    inner.undo(undo);
                }
                inner.unflushed_nodes.clear();
                for seq in undone {
                    queue.failed.insert(seq, message.clone());
                }
                queue.resolved = later.last().map_or(last, |(seq, _)| *seq).max(last);
                queue.flushing = false;
            }
        }
        self.commits.flushed.notify_all();
    }
}

impl Inner {
    /// Puts back what one change replaced.
    fn undo(&mut self, undo: Undo) {
        for (id, old) in undo.jobs {
            match old {
                Some(job) => {
                    if !job.state.is_terminal() || !job.cleanup.is_empty() {
                        self.active.insert(id);
                    } else {
                        self.active.remove(&id);
                    }
                    self.jobs.insert(id, job);
                }
                None => {
                    self.active.remove(&id);
                    self.pending.remove(&id);
                    self.jobs.remove(&id);
                }
            }
        }
        for (name, old) in undo.nodes {
            match old {
                Some(node) => self.nodes.insert(name, node),
                None => self.nodes.remove(&name),
            };
        }
        self.next_job_id = undo.next_job_id;
        self.generation = undo.generation;
    }
}
