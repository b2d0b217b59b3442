//! The durable store (redb): jobs, nodes and counters. A change is acknowledged only after `commit`.
//!
//! Records are encoded by the caller ([`EncodedChange`]) so that the head can queue a change under
//! its lock and write it after releasing it, several changes per transaction (`head::commit`).
//!
//! Every change is first appended to a write-ahead log (`headnoded.wal`), and a flusher thread
//! moves the log into redb in batches. When `commit` returns depends on `[store] acknowledge`
//! ([`Acknowledge`]):
//!
//! ```text
//!   fsync (default)  commit ──▶ one write(2) to headnoded.wal + fdatasync ──▶ return
//!   write            commit ──▶ one write(2) to headnoded.wal ──▶ return
//!                      flusher thread, within flush_delay_ms of the first pending change:
//!                      redb transaction + fsync (many changes) ──▶ log emptied
//!   open             replay the log's records newer than redb's `wal_seq` into redb, empty it
//! ```
//!
//! Both survive a crash of headnoded at any moment: a returned `write(2)` is in the page cache.
//! Only `fsync` survives a power cut; `write` can lose the last `flush_delay_ms` of changes then.
//!
//! Why a log in front of redb even when every change is fsynced: a redb commit writes its B-tree
//! pages and header (about eight `pwrite`s) before its fsync, an append is one `write` of a few
//! hundred bytes; the job start and end commits that follow every submit made redb's commits the
//! head's largest cost in a run of short jobs (issue 7).

mod wal;

use crate::model::{ImageRecord, JobRecord, NodeRecord, ReservationRecord};
use beowulf_types::{Generation, JobId, Millis, NodeName};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("reservations");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const NEXT_JOB_ID: &str = "next_job_id";
const GENERATION: &str = "generation";
/// The sequence number of the last log record moved into redb.
const WAL_SEQ: &str = "wal_seq";

/// With `acknowledge = "write"`, an acknowledged change stays only in the log (not fsynced) at most
/// this long by default: long enough that a burst of submits shares one fsync (one costs 1–7 ms on
/// this disk), short enough that a power cut loses little.
const DEFAULT_WRITE_FLUSH_DELAY_MS: Millis = 5;

/// With `acknowledge = "fsync"` the log itself is durable, so the delay only bounds the log's
/// length and the replay at start; 100 ms lets a busy head move ~100 changes per redb transaction
/// instead of ~5 (the redb commits were an eighth of the head's CPU time in a run of short jobs).
const DEFAULT_FSYNC_FLUSH_DELAY_MS: Millis = 100;

/// Above this size the flusher empties the log while holding it (appends wait for one fsync), so a
/// never-idle head cannot grow it without bound; below, appends never wait for the disk.
const WAL_COMPACT_BYTES: u64 = 8 << 20;

/// After a failed move into redb the flusher retries after this long (the changes stay in the log).
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// When a change counts as written, and so when its caller is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledge {
    /// After the log's fdatasync: survives a crash of headnoded and a power cut.
    #[default]
    Fsync,
    /// After one `write(2)` to the write-ahead log: survives a crash of headnoded (the kernel holds
    /// the write); a power cut can lose the changes of the last `flush_delay_ms`. Slurm's
    /// slurmctld answers sbatch before writing anything.
    Write,
}

/// `[store]` in headnoded.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub acknowledge: Acknowledge,
    /// How long a change may stay only in the log before the flusher moves it into redb (default:
    /// 100 ms with `fsync`, 5 ms with `write`).
    #[serde(default)]
    pub flush_delay_ms: Option<Millis>,
}

impl StoreConfig {
    fn flush_delay(&self) -> Duration {
        let default = match self.acknowledge {
            Acknowledge::Fsync => DEFAULT_FSYNC_FLUSH_DELAY_MS,
            Acknowledge::Write => DEFAULT_WRITE_FLUSH_DELAY_MS,
        };
        Duration::from_millis(self.flush_delay_ms.unwrap_or(default))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    /// A change that was queued behind (or together with) a change whose write failed.
    #[error("state store {path}: the change was not written: {message}")]
    NotWritten { path: PathBuf, message: String },
    #[error("state store log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store {path}: record {key} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Everything the store holds, as loaded at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub jobs: BTreeMap<JobId, JobRecord>,
    pub nodes: BTreeMap<NodeName, NodeRecord>,
    pub next_job_id: u64,
    pub generation: Generation,
    pub reservations: BTreeMap<String, ReservationRecord>,
    pub images: BTreeMap<String, ImageRecord>,
}

/// One atomic change, encoded: the records to write and the counters after it.
#[derive(Debug, Default, Clone)]
pub struct EncodedChange {
    jobs: Vec<(u64, Vec<u8>)>,
    nodes: Vec<(String, Vec<u8>)>,
    next_job_id: u64,
    generation: Generation,
}

impl EncodedChange {
    pub fn new<'a>(
        jobs: impl IntoIterator<Item = &'a JobRecord>,
        nodes: impl IntoIterator<Item = &'a NodeRecord>,
        next_job_id: u64,
        generation: Generation,
    ) -> EncodedChange {
        EncodedChange {
            jobs: jobs
                .into_iter()
                .map(|j| {
                    (
                        j.id.0,
                        serde_json::to_vec(j).expect("job records serialize"),
                    )
                })
                .collect(),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let bytes = serde_json::to_vec(n).expect("node records serialize");
                    (n.name.as_str().to_string(), bytes)
                })
                .collect(),
            next_job_id,
            generation,
        }
    }
}

#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// The write-ahead log, shared with its flusher thread.
    log: Arc<Log>,
    /// `None` until the store is open, and again once it is closing.
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Unit tests of the head make the next commits fail, as a full or broken disk would.
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicBool,
}

/// The open write-ahead log, shared by committers and the flusher.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    state: Mutex<LogState>,
    /// Signalled on the first pending change and on close.
    wake: Condvar,
    flush_delay: Duration,
    /// `acknowledge = "fsync"`: an append returns only after its fdatasync.
    sync_appends: bool,
}

#[derive(Debug)]
struct LogState {
    /// Opened with `O_APPEND`.
    file: File,
    /// The log's length: everything in it is whole records (it is empty when the store opens).
    bytes: u64,
    next_seq: u64,
    /// Changes in the log and not yet in redb, in order.
    pending: Vec<(u64, EncodedChange)>,
    closing: bool,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits `timeout` with the lock released, or less if the store closes meanwhile.
    fn wait_unless_closing<'a>(
        &self,
        mut state: MutexGuard<'a, LogState>,
        timeout: Duration,
    ) -> MutexGuard<'a, LogState> {
        let deadline = Instant::now() + timeout;
        while !state.closing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        state
    }
}

impl Store {
    /// Opens (or creates) the store at `path`; first moves into it whatever its log
    /// (`<path>.wal`) holds that it does not, whatever `config` says now.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let log_path = path.with_extension("wal");
        // O_APPEND: appends land at the end even after `replay` or the flusher emptied the file.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| StoreError::Log {
                path: log_path.clone(),
                source,
            })?;
        let log = Arc::new(Log {
            path: log_path,
            state: Mutex::new(LogState {
                file,
                bytes: 0,
                next_seq: 1,
                pending: Vec::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            flush_delay: config.flush_delay(),
            sync_appends: config.acknowledge == Acknowledge::Fsync,
        });
        let mut store = Store {
            db: Arc::new(db),
            path: path.to_path_buf(),
            log,
            flusher: None,
            #[cfg(test)]
            fail_commits: Default::default(),
        };
        // Create the tables so that a first read finds them.
        store.write(|txn| {
            txn.open_table(JOBS)?;
            txn.open_table(NODES)?;
            txn.open_table(META)?;
            txn.open_table(RESERVATIONS)?;
            txn.open_table(IMAGES)?;
            Ok(())
        })?;
        let last_seq = store.replay()?;
        store.log.lock().next_seq = last_seq + 1;
        let (db, flushed) = (store.db.clone(), store.log.clone());
        let flusher = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || run_flusher(&db, &flushed))
            .map_err(|source| StoreError::Log {
                path: store.log.path.clone(),
                source,
            })?;
        store.flusher = Some(flusher);
        Ok(store)
    }

    /// Moves the log's records newer than redb's `wal_seq` into redb (one transaction) and empties
    /// the log; returns the last sequence number used.
    fn replay(&self) -> Result<u64, StoreError> {
        let log_path = self.log.path.as_path();
        let log_error = |source| StoreError::Log {
            path: log_path.to_path_buf(),
            source,
        };
        let bytes = match std::fs::read(log_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(log_error(e)),
        };
        let decoded = wal::decode(&bytes);
        if decoded.valid_bytes < bytes.len() {
            // A crash during the last append (its caller was never answered), or damage.
            tracing::warn!(
                log = %log_path.display(),
                ignored_bytes = bytes.len() - decoded.valid_bytes,
                "the state store's log ends with a torn or corrupt record; ignoring it"
            );
        }
        let stored = self.wal_seq()?;
        let newer: Vec<(u64, EncodedChange)> = decoded
            .records
            .into_iter()
            .filter(|(seq, _)| *seq > stored)
            .collect();
        let last = newer.last().map_or(stored, |(seq, _)| *seq);
        if !newer.is_empty() {
            tracing::info!(changes = newer.len(), "replaying the state store's log");
            write_changes(&self.db, &self.path, &newer)?;
        }
        if !bytes.is_empty() {
            File::options()
                .write(true)
                .open(log_path)
                .and_then(|f| f.set_len(0))
                .map_err(log_error)?;
        }
        Ok(last)
    }

    fn wal_seq(&self) -> Result<u64, StoreError> {
        let io = |e: redb::Error| StoreError::Io {
            path: self.path.clone(),
            source: e,
        };
        let txn = self.db.begin_read().map_err(|e| io(e.into()))?;
        let meta = txn.open_table(META).map_err(|e| io(e.into()))?;
        Ok(meta
            .get(WAL_SEQ)
            .map_err(|e| io(e.into()))?
            .map_or(0, |v| v.value()))
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let io = |e: redb::Error| StoreError::Io {
            path: self.path.clone(),
            source: e,
        };
        let txn = self.db.begin_read().map_err(|e| io(e.into()))?;
        let mut snapshot = Snapshot {
            next_job_id: 1,
            ..Snapshot::default()
        };
        let jobs = txn.open_table(JOBS).map_err(|e| io(e.into()))?;
        for entry in jobs.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let job: JobRecord = self.decode(&format!("job {}", key.value()), value.value())?;
            snapshot.jobs.insert(job.id, job);
        }
        let nodes = txn.open_table(NODES).map_err(|e| io(e.into()))?;
        for entry in nodes.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let node: NodeRecord = self.decode(&format!("node {}", key.value()), value.value())?;
            snapshot.nodes.insert(node.name.clone(), node);
        }
        let reservations = txn.open_table(RESERVATIONS).map_err(|e| io(e.into()))?;
        for entry in reservations.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let r: ReservationRecord =
                self.decode(&format!("reservation {}", key.value()), value.value())?;
            snapshot.reservations.insert(r.name.clone(), r);
        }
        let images = txn.open_table(IMAGES).map_err(|e| io(e.into()))?;
        for entry in images.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let image: ImageRecord =
                self.decode(&format!("image {}", key.value()), value.value())?;
            snapshot.images.insert(image.name.clone(), image);
        }
        let meta = txn.open_table(META).map_err(|e| io(e.into()))?;
        if let Some(v) = meta.get(NEXT_JOB_ID).map_err(|e| io(e.into()))? {
            snapshot.next_job_id = v.value();
        }
        if let Some(v) = meta.get(GENERATION).map_err(|e| io(e.into()))? {
            snapshot.generation = Generation(v.value());
        }
        Ok(snapshot)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes changes, in order and atomically, as one append to the log (fdatasynced with
    /// `acknowledge = "fsync"`).
    pub fn commit(&self, changes: Vec<EncodedChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        #[cfg(test)]
        if self.fail_commits.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: redb::Error::Io(std::io::Error::other("injected by a test")),
            });
        }
        let log = &self.log;
        let mut state = log.lock();
        let first = state.next_seq;
        let mut records = Vec::new();
        for (seq, change) in (first..).zip(&changes) {
            records.extend(wal::encode(seq, change));
        }
        // One write(2): a crash leaves the whole batch or a torn tail that replay ignores. The
        // fdatasync runs under the log's lock (committers are serialised by the head's group
        // commit anyway), so that a failed one can take the batch back out of the log.
        let written = state.file.write_all(&records).and_then(|()| {
            if log.sync_appends {
                state.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(source) = written {
            // A partial write (a full disk) must not stay in front of later records: replay stops
            // at the first torn record. The batch fails; its callers get the error.
            let _ = state.file.set_len(state.bytes);
            return Err(StoreError::Log {
                path: log.path.clone(),
                source,
            });
        }
        state.bytes += records.len() as u64;
        state.next_seq = first + changes.len() as u64;
        let was_idle = state.pending.is_empty();
        state.pending.extend((first..).zip(changes));
        if was_idle {
            log.wake.notify_one();
        }
        Ok(())
    }

    /// Writes (`Some`) or deletes (`None`) one reservation, durably.
    pub fn put_reservation(
        &self,
        name: &str,
        record: Option<&ReservationRecord>,
    ) -> Result<(), StoreError> {
        self.put_named(RESERVATIONS, name, record)
    }

    /// Writes (`Some`) or deletes (`None`) one image record, durably.
    pub fn put_image(&self, name: &str, record: Option<&ImageRecord>) -> Result<(), StoreError> {
        self.put_named(IMAGES, name, record)
    }

    /// Writes (`Some`) or deletes (`None`) one record of a table keyed by name, durably.
    fn put_named<T: serde::Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        name: &str,
        record: Option<&T>,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(table)?;
            match record {
                Some(r) => {
                    let bytes = serde_json::to_vec(r).expect("store records serialize");
                    table.insert(name, bytes.as_slice())?;
                }
                None => {
                    table.remove(name)?;
                }
            }
            Ok(())
        })
    }

    fn write(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        transact(&self.db, &self.path, body)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            key: key.to_string(),
            source,
        })
    }
}

impl Drop for Store {
    /// Moves what the log still holds into redb before the store closes.
    fn drop(&mut self) {
        self.log.lock().closing = true;
        self.log.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// Writes numbered changes, in order, in one redb transaction (one fsync); records the last
/// number as `wal_seq` when the changes came from the log (numbers above 0).
fn write_changes(
    db: &Database,
    path: &Path,
    changes: &[(u64, EncodedChange)],
) -> Result<(), StoreError> {
    let Some((last_seq, last)) = changes.last() else {
        return Ok(());
    };
    transact(db, path, |txn| {
        let mut jobs = txn.open_table(JOBS)?;
        let mut nodes = txn.open_table(NODES)?;
        for (_, change) in changes {
            for (id, bytes) in &change.jobs {
                jobs.insert(*id, bytes.as_slice())?;
            }
            for (name, bytes) in &change.nodes {
                nodes.insert(name.as_str(), bytes.as_slice())?;
            }
        }
        let mut meta = txn.open_table(META)?;
        meta.insert(NEXT_JOB_ID, last.next_job_id)?;
        meta.insert(GENERATION, last.generation.0)?;
        if *last_seq > 0 {
            meta.insert(WAL_SEQ, *last_seq)?;
        }
        Ok(())
    })
}

/// Runs `body` in one write transaction and commits it (durably: redb fsyncs).
fn transact(
    db: &Database,
    path: &Path,
    body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), StoreError> {
    let io = |e: redb::Error| StoreError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let txn = db.begin_write().map_err(|e| io(e.into()))?;
    body(&txn).map_err(io)?;
    txn.commit().map_err(|e| io(e.into()))
}

/// The flusher thread: once changes are pending, waits `flush_delay` (so a burst shares one
/// fsync), moves them into redb in one transaction and, when nothing new arrived meanwhile, empties
/// the log. A large log is emptied while the flusher holds it (committers wait for that one fsync).
/// A failed move keeps the changes pending (and in the log) and is retried.
fn run_flusher(db: &Database, log: &Log) {
    loop {
        let mut state = log.lock();
        while state.pending.is_empty() && !state.closing {
            state = log
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.pending.is_empty() {
            return; // closing, and everything is in redb
        }
        state = log.wait_unless_closing(state, log.flush_delay);
        let batch = std::mem::take(&mut state.pending);
        let (mut state, written) = if state.bytes > WAL_COMPACT_BYTES {
            let written = write_changes(db, &log.path, &batch);
            (state, written)
        } else {
            drop(state);
            let written = write_changes(db, &log.path, &batch);
            (log.lock(), written)
        };
        match written {
            Ok(()) if state.pending.is_empty() => {
                match state.file.set_len(0) {
                    Ok(()) => state.bytes = 0,
                    // Harmless: replay skips what redb already has; the next flush tries again.
                    Err(e) => {
                        tracing::warn!(log = %log.path.display(), error = %e, "cannot empty the state store's log")
                    }
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot move the state store's log into the store; retrying");
                let newer = std::mem::replace(&mut state.pending, batch);
                state.pending.extend(newer);
                if state.closing {
                    return; // the log keeps them; the next start replays them
                }
                drop(log.wait_unless_closing(state, FLUSH_RETRY));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::User;
    use beowulf_types::Timestamp;

    fn image(name: &str, digest: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            digest: digest.into(),
            size_bytes: 10240,
            owner: User {
                uid: 1000,
                gid: 1000,
                name: "alice".into(),
            },
            created: Timestamp(1_700_000_000_000),
            tar_path: PathBuf::from("/srv/beowulf/shared/images/blobs/sha256-ab.tar"),
        }
    }

    #[test]
    fn image_records_round_trip_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("headnoded.redb");
        {
            let store = Store::open(&path, &StoreConfig::default()).unwrap();
            store
                .put_image("mpi", Some(&image("mpi", "sha256:ab")))
                .unwrap();
            store
                .put_image("old", Some(&image("old", "sha256:cd")))
                .unwrap();
            store
                .put_image("mpi", Some(&image("mpi", "sha256:ef")))
                .unwrap();
            store.put_image("old", None).unwrap();
        }
        let snapshot = Store::open(&path, &StoreConfig::default())
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(
            snapshot.images.into_iter().collect::<Vec<_>>(),
            vec![("mpi".to_string(), image("mpi", "sha256:ef"))]
        );
    }
}
