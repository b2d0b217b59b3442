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
//!
//! Integrity (docs/decisions.md, "Store integrity"):
//!
//! - a marker beside the store (`headnoded.redb.marker`, `marker.rs`) makes a missing, empty or
//!   swapped store an error instead of a new, empty cluster;
//! - every record in redb carries a checksum over its table, key and JSON (`envelope.rs`), and the
//!   counters one over all of them (`db.rs`, `Meta`), checked when the store is loaded;
//! - damage in the middle of the log is told apart from a torn last append (`wal.rs`): the
//!   log is moved aside and the start refused, naming what could not be replayed;
//! - job IDs are reserved ahead, durably (`job_ids_reserved`), so that no start hands one out
//!   twice, whatever part of the log it could not read;
//! - after a failed redb transaction the database is reopened at the next one (`db.rs`, `Db`).

mod change;
mod db;
mod envelope;
mod error;
mod marker;
mod wal;

#[cfg(test)]
mod tests;

pub use change::EncodedChange;
pub use error::StoreError;

use crate::model::{ImageRecord, JobRecord, NodeRecord, ReservationRecord};
use beowulf_types::{Generation, JobId, Millis, NodeName};
use db::{Db, FORMAT, META, Meta, TxError};
use envelope::Unsealed;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("reservations");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// The tables keyed by name.
const NAMED: [TableDefinition<&str, &[u8]>; 3] = [NODES, RESERVATIONS, IMAGES];

/// The store's files are readable by root alone (see `Store::open`).
const PRIVATE_FILE_MODE: u32 = 0o600;

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

/// How many job IDs a reservation covers beyond the change that needed it: one redb commit per
/// this many IDs, and at most this many IDs skipped by a start that could not replay all of the log.
const JOB_ID_RESERVE: u64 = 1000;

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

#[derive(Debug)]
pub struct Store {
    db: Arc<Db>,
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
    /// A failed append could not be cut off the end: cut it before the next one.
    cut_pending: bool,
    next_seq: u64,
    /// Changes in the log and not yet in redb, in order.
    pending: Vec<(u64, EncodedChange)>,
    /// The store's `job_ids_reserved`: no change with a higher `next_job_id` is appended before
    /// it is raised.
    reserved: u64,
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
    ///
    /// Refuses (with an error that says what to do) a missing, empty or other store where the
    /// marker beside it says there was one, a record or counter that fails its checksum, a log
    /// damaged in the middle, and a damaged log an earlier start moved aside.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        Store::open_inner(
            path,
            config,
            #[cfg(test)]
            None,
        )
    }

    /// [`Store::open`] over a redb file whose writes fail on demand.
    #[cfg(test)]
    fn open_with_faults(
        path: &Path,
        config: &StoreConfig,
        faults: Arc<db::faults::Faults>,
    ) -> Result<Store, StoreError> {
        Store::open_inner(path, config, Some(faults))
    }

    fn open_inner(
        path: &Path,
        config: &StoreConfig,
        #[cfg(test)] faults: Option<Arc<db::faults::Faults>>,
    ) -> Result<Store, StoreError> {
        let log_path = path.with_extension("wal");
        refuse_while_a_damaged_log_is_kept(&log_path)?;
        let (db, marked) = open_db(
            path,
            #[cfg(test)]
            faults,
        )?;
        // Every store opened since markers exist has its log (it is created here): one missing
        // beside a marked store was lost. An older store may never have had one.
        let log_lost = marked && !log_path.exists();
        // O_APPEND: appends land at the end even after `replay` or the flusher emptied the file.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&log_path)
            .map_err(|source| StoreError::Log {
                path: log_path.clone(),
                source,
            })?;
        // Jobs hold their users' environments and their runs' launch credentials: the store is
        // root's alone, whatever mode an earlier version or the umask gave it.
        for private in [path, log_path.as_path()] {
            std::fs::set_permissions(private, std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
                .map_err(|source| StoreError::Log {
                path: private.to_path_buf(),
                source,
            })?;
        }
        let log = Arc::new(Log {
            path: log_path,
            state: Mutex::new(LogState {
                file,
                bytes: 0,
                cut_pending: false,
                next_seq: 1,
                pending: Vec::new(),
                reserved: 0,
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
        if log_lost {
            tracing::warn!(
                log = %store.log.path.display(),
                "the state store's log is missing: changes acknowledged but not yet moved into the \
                 store are lost; job IDs continue from the reservation"
            );
        }
        let last_seq = store.replay(log_lost)?;
        let reserved = store
            .db
            .read(|txn| Meta::read(&txn.open_table(META)?))?
            .job_ids_reserved;
        {
            let mut state = store.log.lock();
            state.next_seq = last_seq + 1;
            state.reserved = reserved;
        }
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
    ///
    /// A torn last append is ignored. Damage that may hide changes the store lacks moves the log
    /// aside and fails, after moving in what came before it. Whenever something of the log was
    /// not replayed (or `log_lost`), job IDs continue from the reservation, above any ID an
    /// acknowledged change can have handed out.
    fn replay(&self, log_lost: bool) -> Result<u64, StoreError> {
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
        let before = self.db.read(|txn| Meta::read(&txn.open_table(META)?))?;
        let plan = wal::plan(&decoded, before.wal_seq);
        for range in &plan.harmless {
            tracing::warn!(
                log = %log_path.display(),
                bytes = ?range,
                "bytes of the state store's log are no whole record, but nothing the store lacks \
                 can be in them (the records around them are numbered consecutively or already in \
                 the store); going on"
            );
        }
        if let Some(tail) = decoded.tail.as_ref().filter(|t| t.torn) {
            tracing::warn!(
                log = %log_path.display(),
                bytes = ?tail.bytes,
                "the state store's log ends with a torn record (an append interrupted by a crash; \
                 its caller was never answered); ignoring it, job IDs continue from the reservation"
            );
        }
        let changes: Vec<(u64, EncodedChange)> = plan
            .apply
            .iter()
            .map(|&i| {
                let record = &decoded.records[i];
                let mut change = record.change.clone();
                change.seal_old_records();
                (record.seq, change)
            })
            .collect();
        let last_seen = decoded
            .records
            .iter()
            .map(|r| r.seq)
            .fold(before.wal_seq, u64::max);
        // Not everything the log held was replayed: continue above every ID it can have handed
        // out. A store from before reservations has none: guess generously above what is known.
        let id_floor = (decoded.tail.is_some() || plan.loss.is_some() || log_lost).then(|| {
            let in_log = decoded.records.iter().map(|r| r.change.next_job_id);
            let known = in_log.fold(before.next_job_id, u64::max);
            match before.job_ids_reserved {
                0 => known + JOB_ID_RESERVE,
                reserved => reserved.max(known),
            }
        });
        if !changes.is_empty() {
            tracing::info!(changes = changes.len(), "replaying the state store's log");
        }
        if !changes.is_empty() || id_floor.is_some() || last_seen != before.wal_seq {
            // After a loss only up to what was replayed: should moving the log aside fail, the
            // next start finds the same loss again rather than records it takes as stored.
            let replayed_up_to = if plan.loss.is_some() {
                changes.last().map_or(before.wal_seq, |(seq, _)| *seq)
            } else {
                last_seen
            };
            write_changes(&self.db, &changes, |meta| {
                meta.wal_seq = meta.wal_seq.max(replayed_up_to);
                if let Some(floor) = id_floor {
                    meta.next_job_id = meta.next_job_id.max(floor);
                    meta.job_ids_reserved = meta.job_ids_reserved.max(floor);
                }
            })?;
        }
        if let Some(loss) = &plan.loss {
            let next_job_id = id_floor.expect("a loss sets the floor");
            return Err(self.move_damaged_log_aside(&decoded, loss, before.wal_seq, next_job_id));
        }
        if !bytes.is_empty() {
            File::options()
                .write(true)
                .open(log_path)
                .and_then(|f| f.set_len(0))
                .map_err(log_error)?;
        }
        Ok(last_seen)
    }

    /// Renames the damaged log to `<log>.damaged-<unix time>` (keeping the evidence), writes what
    /// was lost beside it (`.txt`) and returns the error that refuses the start.
    fn move_damaged_log_aside(
        &self,
        decoded: &wal::Decoded,
        loss: &wal::Loss,
        stored: u64,
        next_job_id: u64,
    ) -> StoreError {
        let log = self.log.path.as_path();
        let now = marker::unix_now();
        let moved = (0..)
            .map(|n| damaged_name(log, now, n))
            .find(|p| !p.exists())
            .expect("some name is free");
        let report = describe_loss(log, &moved, &self.path, decoded, loss, stored, next_job_id);
        // A new, empty log in its place: the next start must not take it for a lost one.
        let renamed = std::fs::rename(log, &moved)
            .and_then(|()| File::create(log))
            .and_then(|_| marker::sync_dir(log));
        if let Err(source) = renamed {
            tracing::error!("{report}");
            return StoreError::Log {
                path: log.to_path_buf(),
                source: std::io::Error::new(
                    source.kind(),
                    format!("cannot move the damaged log aside ({source}): {report}"),
                ),
            };
        }
        let mut description = moved.clone().into_os_string();
        description.push(".txt");
        if let Err(e) = std::fs::write(&description, format!("{report}\n")) {
            tracing::warn!(error = %e, "cannot write the description of the damaged log");
        }
        tracing::error!("{report}");
        StoreError::LogDamaged { moved, report }
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let path = self.path.as_path();
        self.db.read(|txn| {
            let mut snapshot = Snapshot::default();
            let jobs = txn.open_table(JOBS)?;
            for entry in jobs.iter()? {
                let (key, value) = entry?;
                let job: JobRecord =
                    open_record(path, JOBS.name(), &key.value().to_string(), value.value())?;
                snapshot.jobs.insert(job.id, job);
            }
            let nodes = txn.open_table(NODES)?;
            for entry in nodes.iter()? {
                let (key, value) = entry?;
                let node: NodeRecord = open_record(path, NODES.name(), key.value(), value.value())?;
                snapshot.nodes.insert(node.name.clone(), node);
            }
            let reservations = txn.open_table(RESERVATIONS)?;
            for entry in reservations.iter()? {
                let (key, value) = entry?;
                let r: ReservationRecord =
                    open_record(path, RESERVATIONS.name(), key.value(), value.value())?;
                snapshot.reservations.insert(r.name.clone(), r);
            }
            let images = txn.open_table(IMAGES)?;
            for entry in images.iter()? {
                let (key, value) = entry?;
                let image: ImageRecord =
                    open_record(path, IMAGES.name(), key.value(), value.value())?;
                snapshot.images.insert(image.name.clone(), image);
            }
            let meta = Meta::read(&txn.open_table(META)?)?;
            // Never below a stored job: the counter is checked, this costs nothing on top.
            let past_jobs = snapshot.jobs.keys().next_back().map_or(0, |id| id.0 + 1);
            snapshot.next_job_id = meta.next_job_id.max(past_jobs).max(1);
            snapshot.generation = Generation(meta.generation);
            Ok(snapshot)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes changes, in order and atomically, as one append to the log (fdatasynced with
    /// `acknowledge = "fsync"`). Job IDs they hand out are reserved in redb first.
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
        let log_error = |source| StoreError::Log {
            path: log.path.clone(),
            source,
        };
        let mut state = log.lock();
        if state.cut_pending {
            // What a failed append left must not stay in front of later records.
            let bytes = state.bytes;
            state.file.set_len(bytes).map_err(log_error)?;
            state.cut_pending = false;
        }
        let highest = changes.iter().map(|c| c.next_job_id).max().unwrap_or(0);
        if highest > state.reserved {
            // Durable before any caller hears of an ID: a start that cannot read this change
            // still continues above it.
            let reserved = highest + JOB_ID_RESERVE;
            self.db.write(|txn| {
                let mut meta = Meta::read_in(txn)?;
                meta.job_ids_reserved = meta.job_ids_reserved.max(reserved);
                meta.write_in(txn)
            })?;
            state.reserved = reserved;
        }
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
            // A partial write (a full disk) must not stay in front of later records. The batch
            // fails; its callers get the error.
            let bytes = state.bytes;
            if state.file.set_len(bytes).is_err() {
                state.cut_pending = true;
            }
            return Err(log_error(source));
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
        self.db.write(|txn| {
            let mut open = txn.open_table(table)?;
            match record {
                Some(r) => {
                    let json = serde_json::to_vec(r).expect("store records serialize");
                    let sealed = envelope::seal(table.name(), name, &json);
                    open.insert(name, sealed.as_slice())?;
                }
                None => {
                    open.remove(name)?;
                }
            }
            Ok(())
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

/// Opens the redb file at `path` as its marker says it should be, or creates a new store (and
/// its marker) where there is neither; returns it and whether it had a marker. Converts a store older than checksums, and writes a marker for a store older than
/// markers.
fn open_db(
    path: &Path,
    #[cfg(test)] faults: Option<Arc<db::faults::Faults>>,
) -> Result<(Db, bool), StoreError> {
    let marker_path = marker::path_for(path);
    let marker = marker::read(&marker_path)?;
    let created_at = |m: &marker::Marker| marker::describe_time(m.created);
    let size = match std::fs::metadata(path) {
        Ok(metadata) => Some(metadata.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                source: e.into(),
            });
        }
    };
    let missing = |m: &marker::Marker, problem: &str| StoreError::Missing {
        path: path.to_path_buf(),
        marker: marker_path.clone(),
        created: created_at(m),
        problem: problem.into(),
    };
    let create = match (&marker, size) {
        (Some(m), None) => return Err(missing(m, "does not exist")),
        (Some(m), Some(0)) => return Err(missing(m, "is empty (0 bytes)")),
        (None, None | Some(0)) => {
            tracing::info!(
                "creating a new cluster store at {} (there was no store and no marker {})",
                path.display(),
                marker_path.display()
            );
            true
        }
        (_, Some(_)) => false,
    };
    let db = Db::open(
        path,
        create,
        #[cfg(test)]
        faults,
    )
    .map_err(|source| match &marker {
        _ if matches!(source, redb::DatabaseError::DatabaseAlreadyOpen) => StoreError::Locked {
            path: path.to_path_buf(),
        },
        Some(m) => StoreError::Unreadable {
            path: path.to_path_buf(),
            marker: marker_path.clone(),
            created: created_at(m),
            source,
        },
        None => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let meta = db.write(|txn| {
        // Create the tables so that a first read finds them.
        txn.open_table(JOBS)?;
        for table in NAMED {
            txn.open_table(table)?;
        }
        let mut meta = Meta::read_in(txn)?;
        if create {
            meta.store_id = new_store_id();
            meta.format = FORMAT;
        } else if let Some(m) = &marker
            && meta.store_id != m.store_id
        {
            if meta.store_id != 0 {
                return Err(StoreError::NotThisStore {
                    path: path.to_path_buf(),
                    marker: marker_path.clone(),
                    expected: format!("{:016x}", m.store_id),
                    created: created_at(m),
                    found: format!("{:016x}", meta.store_id),
                }
                .into());
            }
            // No identity: a store older than markers (a backup from before them), or a new
            // database someone put in the store's place.
            if !meta.counted_anything() && !holds_records(txn)? {
                return Err(missing(
                    m,
                    "is a database with no records, no counters and no store id, not the cluster's",
                )
                .into());
            }
            meta.store_id = m.store_id;
        }
        if meta.format < FORMAT {
            let sealed = seal_old_records(txn)?;
            tracing::info!(
                records = sealed,
                "added checksums to the records of the state store"
            );
            meta.format = FORMAT;
        }
        if meta.store_id == 0 {
            meta.store_id = new_store_id();
        }
        meta.write_in(txn)?;
        Ok(meta)
    })?;
    if marker.is_none() {
        let written = marker::Marker {
            store_id: meta.store_id,
            created: marker::unix_now(),
            new_store: create,
        };
        marker::write(&marker_path, path, &written)?;
        if !create {
            tracing::info!(
                "wrote the marker {} for the existing cluster store {}",
                marker_path.display(),
                path.display()
            );
        }
    }
    Ok((db, marker.is_some()))
}

fn new_store_id() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// Whether any table of records holds one.
fn holds_records(txn: &WriteTransaction) -> Result<bool, TxError> {
    if !txn.open_table(JOBS)?.is_empty()? {
        return Ok(true);
    }
    for table in NAMED {
        if !txn.open_table(table)?.is_empty()? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Seals every record written before checksums existed; fails on one that is neither format.
fn seal_old_records(txn: &WriteTransaction) -> Result<usize, TxError> {
    let mut sealed = 0;
    let damaged = |table: &str, key: String, problem| TxError::Damaged {
        table: table.to_string(),
        key,
        problem,
    };
    let mut jobs = txn.open_table(JOBS)?;
    let mut old = Vec::new();
    for entry in jobs.iter()? {
        let (key, value) = entry?;
        let (id, key) = (key.value(), key.value().to_string());
        match envelope::unseal(JOBS.name(), &key, value.value()) {
            Ok(Unsealed::Old(json)) => old.push((id, envelope::seal(JOBS.name(), &key, json))),
            Ok(Unsealed::Sealed(_)) => {}
            Err(problem) => return Err(damaged(JOBS.name(), key, problem)),
        }
    }
    sealed += old.len();
    for (id, bytes) in old {
        jobs.insert(id, bytes.as_slice())?;
    }
    for definition in NAMED {
        let mut table = txn.open_table(definition)?;
        let mut old = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let key = key.value().to_string();
            match envelope::unseal(definition.name(), &key, value.value()) {
                Ok(Unsealed::Old(json)) => {
                    let bytes = envelope::seal(definition.name(), &key, json);
                    old.push((key, bytes));
                }
                Ok(Unsealed::Sealed(_)) => {}
                Err(problem) => return Err(damaged(definition.name(), key, problem)),
            }
        }
        sealed += old.len();
        for (key, bytes) in old {
            table.insert(key.as_str(), bytes.as_slice())?;
        }
    }
    Ok(sealed)
}

/// The JSON record stored under `table` and `key`, checked and decoded.
fn open_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    table: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, TxError> {
    let damaged = |problem: String| TxError::Damaged {
        table: table.to_string(),
        key: key.to_string(),
        problem,
    };
    match envelope::unseal(table, key, bytes).map_err(damaged)? {
        Unsealed::Sealed(json) => serde_json::from_slice(json).map_err(|source| {
            TxError::Store(StoreError::Corrupt {
                path: path.to_path_buf(),
                key: format!("{table} {key}"),
                source,
            })
        }),
        Unsealed::Old(_) => Err(damaged(
            "the record has no checksum, in a store whose records all have one: it was not \
             written by headnoded"
                .into(),
        )),
    }
}

/// `<log>.damaged-<unix time>`, then `-1`, `-2`... should that name be taken.
fn damaged_name(log: &Path, unix: u64, n: u32) -> PathBuf {
    let mut name = damaged_prefix(log);
    name.push_str(&unix.to_string());
    if n > 0 {
        name.push_str(&format!("-{n}"));
    }
    log.with_file_name(name)
}

/// `<log file name>.damaged-`.
fn damaged_prefix(log: &Path) -> String {
    format!(
        "{}.damaged-",
        log.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Refuses to start while a damaged log that an earlier start moved aside is in the state
/// directory: the operator decides what becomes of the changes it lost (see [`describe_loss`]).
fn refuse_while_a_damaged_log_is_kept(log: &Path) -> Result<(), StoreError> {
    let prefix = damaged_prefix(log);
    let dir = match log.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Log {
                path: log.to_path_buf(),
                source,
            });
        }
    };
    let mut kept: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && !name.ends_with(".txt")
        })
        .collect();
    kept.sort();
    let Some(moved) = kept.into_iter().next() else {
        return Ok(());
    };
    let mut description = moved.clone().into_os_string();
    description.push(".txt");
    let report = std::fs::read_to_string(&description).map_or_else(
        |_| {
            format!(
                "(its description, {}, is missing). Decide what becomes of the changes it held, \
                 then move {} out of the state directory and start again",
                Path::new(&description).display(),
                moved.display()
            )
        },
        |text| text.trim_end().to_string(),
    );
    Err(StoreError::DamagedLogKept { moved, report })
}

/// What a damaged log lost, and what to do, in words.
fn describe_loss(
    log: &Path,
    moved: &Path,
    store: &Path,
    decoded: &wal::Decoded,
    loss: &wal::Loss,
    stored: u64,
    next_job_id: u64,
) -> String {
    let dir = log.parent().unwrap_or(Path::new("."));
    let replayed_up_to = loss.before.unwrap_or(0).max(stored);
    let unreadable = match loss.after {
        Some(after) if after > replayed_up_to + 2 => {
            format!(
                "the changes numbered {}..={}",
                replayed_up_to + 1,
                after - 1
            )
        }
        Some(after) => format!("the change numbered {}", after - 1),
        None => format!(
            "the changes numbered above {replayed_up_to} (how many, nobody can tell: nothing \
             readable follows)"
        ),
    };
    let skipped = &decoded.records[loss.first_skipped..];
    let not_replayed = match (skipped.first(), skipped.last()) {
        (Some(first), Some(last)) => format!(
            " The {} whole records after them, numbered {}..={} at bytes {}..{}, were not \
             replayed either: each rewrites whole job and node records, so applying them over a \
             missing change would leave jobs in states no answer ever described.",
            skipped.len(),
            first.seq,
            last.seq,
            first.bytes.start,
            last.bytes.end
        ),
        _ => String::new(),
    };
    let followed_by = match loss.after {
        Some(_) => "whole records",
        None => "more data, not what an interrupted append leaves",
    };
    format!(
        "the state store's log {log} is damaged: bytes {start}..{end} (of {len}) are no whole \
         record and are followed by {followed_by}. They held {unreadable}; every change up to \
         number {replayed_up_to} is in the store {store}.{not_replayed} The log was moved to \
         {moved} (the evidence; this text is beside it, in {moved}.txt). Job IDs continue from \
         {next_job_id}, above every ID the log can have handed out, so none is handed out twice. \
         headnoded does not start while {moved} is in {dir}. To keep the lost changes: put an \
         undamaged copy of the log (from a snapshot or replica of {dir}) back as {log}, move \
         {moved} out of {dir} and start headnoded: it replays what the store lacks. To go on \
         without them: move {moved} out of {dir} and start headnoded; jobs those changes \
         submitted are unknown to the head, and jobs they started, ended or cancelled show their \
         earlier state (compare `cluster queue --all` with what users and the nodes report).",
        log = log.display(),
        start = loss.bytes.start,
        end = loss.bytes.end,
        len = decoded.len,
        store = store.display(),
        moved = moved.display(),
        dir = dir.display(),
    )
}

/// Writes numbered changes, in order, in one redb transaction (one fsync); records the last
/// number as `wal_seq` when the changes came from the log (numbers above 0), then lets `adjust`
/// change the counters.
fn write_changes(
    db: &Db,
    changes: &[(u64, EncodedChange)],
    adjust: impl FnOnce(&mut Meta),
) -> Result<(), StoreError> {
    db.write(|txn| {
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
        let mut meta = Meta::read_in(txn)?;
        if let Some((last_seq, last)) = changes.last() {
            meta.next_job_id = meta.next_job_id.max(last.next_job_id);
            meta.generation = last.generation.0;
            if *last_seq > 0 {
                meta.wal_seq = *last_seq;
            }
        }
        adjust(&mut meta);
        meta.write_in(txn)
    })
}

/// The flusher thread: once changes are pending, waits `flush_delay` (so a burst shares one
/// fsync), moves them into redb in one transaction and, when nothing new arrived meanwhile, empties
/// the log. A large log is emptied while the flusher holds it (committers wait for that one fsync).
/// A failed move keeps the changes pending (and in the log) and is retried, on a reopened database.
fn run_flusher(db: &Db, log: &Log) {
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
            let written = write_changes(db, &batch, |_| {});
            (state, written)
        } else {
            drop(state);
            let written = write_changes(db, &batch, |_| {});
            (log.lock(), written)
        };
        match written {
            Ok(()) if state.pending.is_empty() => {
                match state.file.set_len(0) {
                    Ok(()) => {
                        state.bytes = 0;
                        state.cut_pending = false;
                    }
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
