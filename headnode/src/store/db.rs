//! The redb file: transactions that reopen it after a failure, and its `meta` counters.
//!
//! After an I/O error inside a commit (ENOSPC, EIO), redb refuses every later transaction of that
//! `Database` (`PreviousIo`) until it is opened again: a head whose disk filled up once stayed
//! unable to write until a restart, even with space back. [`Db`] drops the `Database` after any
//! failed transaction and opens it again (redb repairs it to its last commit) at the next one, so
//! writes work again as soon as the cause is gone. Nothing is lost meanwhile: a failed
//! transaction was never acknowledged, and the changes the flusher could not move are still in
//! the log and in its memory (it retries them).

use super::StoreError;
use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How long opening the store waits for another process to let go of it. A headnoded killed a
/// moment ago holds the file's lock until its last thread has exited, which on a loaded machine
/// was after its replacement had started (measured: the restart then failed); a second
/// headnoded running on the same state directory keeps it, and is reported after this.
#[cfg(not(test))]
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Shorter in unit tests, which wait it out once.
#[cfg(test)]
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const LOCK_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(20);
const LOCK_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(500);

/// What failed inside a transaction.
#[derive(Debug)]
pub(super) enum TxError {
    Redb(redb::Error),
    /// A record (or the meta counters) failed its check; the transaction's store names the path.
    Damaged {
        table: String,
        key: String,
        problem: String,
    },
    Store(StoreError),
}

macro_rules! redb_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for TxError {
            fn from(e: $error) -> TxError {
                TxError::Redb(e.into())
            }
        }
    )*};
}
redb_errors!(
    redb::Error,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::TransactionError
);

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Store(e)
    }
}

/// The open redb file, or nothing after a failed transaction (reopened by the next one).
#[derive(Debug)]
pub(super) struct Db {
    path: PathBuf,
    current: Mutex<Option<Database>>,
    #[cfg(test)]
    faults: Option<std::sync::Arc<faults::Faults>>,
}

impl Db {
    /// Opens the store at `path`; creates a new one only with `create` (then the file must be
    /// missing or empty: the caller checked).
    pub fn open(
        path: &Path,
        create: bool,
        #[cfg(test)] faults: Option<std::sync::Arc<faults::Faults>>,
    ) -> Result<Db, DatabaseError> {
        let db = Db {
            path: path.to_path_buf(),
            current: Mutex::new(None),
            #[cfg(test)]
            faults,
        };
        let database = db.open_database(create)?;
        *db.lock() = Some(database);
        Ok(db)
    }

    /// Opens the database file; while another process holds its lock, tries again for up to
    /// [`LOCK_WAIT`].
    fn open_database(&self, create: bool) -> Result<Database, DatabaseError> {
        #[cfg(test)]
        if let Some(faults) = &self.faults {
            return faults::open(&self.path, faults.clone());
        }
        let started = std::time::Instant::now();
        let mut pause = LOCK_RETRY_FIRST;
        loop {
            let opened = if create {
                Database::create(&self.path)
            } else {
                // Never initializes: an empty file is an error here, not a new store.
                Database::open(&self.path)
            };
            match opened {
                Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < LOCK_WAIT => {
                    if pause == LOCK_RETRY_FIRST {
                        tracing::warn!(store = %self.path.display(), "the store is locked by another process (a headnoded still exiting?): waiting for it");
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(LOCK_RETRY_MAX);
                }
                other => return other,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Database>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open database, reopened first if a failed transaction dropped it.
    fn database<'a>(&self, current: &'a mut Option<Database>) -> Result<&'a Database, StoreError> {
        if current.is_none() {
            let database = self
                .open_database(false)
                .map_err(|source| StoreError::Reopen {
                    path: self.path.clone(),
                    source,
                })?;
            tracing::info!(store = %self.path.display(), "reopened the state store after a failed write");
            *current = Some(database);
        }
        Ok(current.as_ref().expect("just opened"))
    }

    /// Runs `body` in one write transaction and commits it (durably: redb fsyncs). After any
    /// failure the database is closed, and the next transaction opens it again.
    pub fn write<R>(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<R, TxError>,
    ) -> Result<R, StoreError> {
        let mut current = self.lock();
        let database = self.database(&mut current)?;
        let result = (|| {
            let txn = database.begin_write()?;
            let value = body(&txn)?;
            txn.commit()?;
            Ok(value)
        })();
        if let Err(e) = &result {
            if matches!(e, TxError::Redb(_)) {
                tracing::warn!(store = %self.path.display(), error = ?e, "a state store transaction failed; the store is reopened at the next one");
            }
            *current = None;
        }
        result.map_err(|e| self.error(e))
    }

    /// Runs `body` in one read transaction.
    pub fn read<R>(
        &self,
        body: impl FnOnce(&ReadTransaction) -> Result<R, TxError>,
    ) -> Result<R, StoreError> {
        let mut current = self.lock();
        let database = self.database(&mut current)?;
        (|| body(&database.begin_read()?))().map_err(|e| self.error(e))
    }

    fn error(&self, e: TxError) -> StoreError {
        match e {
            TxError::Redb(source) => StoreError::Io {
                path: self.path.clone(),
                source,
            },
            TxError::Damaged {
                table,
                key,
                problem,
            } => StoreError::Damaged {
                path: self.path.clone(),
                table,
                key,
                problem,
            },
            TxError::Store(e) => e,
        }
    }
}

/// The store's counters and identity, kept in the `meta` table with a checksum over all of them
/// (`meta_check`): a flipped bit in `next_job_id` would hand out job IDs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Meta {
    /// The next job ID to hand out (0: none yet, the first is 1).
    pub next_job_id: u64,
    pub generation: u64,
    /// The sequence number of the last log record moved into redb.
    pub wal_seq: u64,
    /// Above every job ID any acknowledged change handed out, including changes only in the log:
    /// raised (durably) before a change with a higher `next_job_id` is appended to the log. A
    /// start that could not replay all of the log continues from here.
    pub job_ids_reserved: u64,
    /// The store's identity, also in its marker (0 in a store older than markers).
    pub store_id: u64,
    /// [`FORMAT`] once the records are sealed and the counters checked (0 before).
    pub format: u64,
}

/// The format whose records all carry checksums (`envelope`) and whose counters are checked.
pub(super) const FORMAT: u64 = 2;

const FIELDS: [&str; 6] = [
    "next_job_id",
    "generation",
    "wal_seq",
    "job_ids_reserved",
    "store_id",
    "record_format",
];
const CHECK: &str = "meta_check";

impl Meta {
    fn fields(&self) -> [u64; 6] {
        [
            self.next_job_id,
            self.generation,
            self.wal_seq,
            self.job_ids_reserved,
            self.store_id,
            self.format,
        ]
    }

    fn check(&self) -> u64 {
        let mut crc = crc32fast::Hasher::new();
        for (name, value) in FIELDS.iter().zip(self.fields()) {
            crc.update(name.as_bytes());
            crc.update(&value.to_le_bytes());
        }
        u64::from(crc.finalize())
    }

    /// Reads the counters, checking them when the store has a check (every store of [`FORMAT`]).
    pub fn read(table: &impl ReadableTable<&'static str, u64>) -> Result<Meta, TxError> {
        let mut values = [0; 6];
        for (name, value) in FIELDS.iter().zip(&mut values) {
            *value = table.get(*name)?.map_or(0, |v| v.value());
        }
        let [
            next_job_id,
            generation,
            wal_seq,
            job_ids_reserved,
            store_id,
            format,
        ] = values;
        let meta = Meta {
            next_job_id,
            generation,
            wal_seq,
            job_ids_reserved,
            store_id,
            format,
        };
        let damaged = |problem: String| TxError::Damaged {
            table: "meta".into(),
            key: CHECK.into(),
            problem,
        };
        match table.get(CHECK)?.map(|v| v.value()) {
            Some(stored) if stored != meta.check() => Err(damaged(format!(
                "the counters {meta:?} do not match their checksum (stored {stored:08x}, \
                 computed {:08x}): one was changed or damaged after headnoded wrote it",
                meta.check()
            ))),
            None if meta.format >= FORMAT => Err(damaged(
                "the counters' checksum is missing from a store that has one".into(),
            )),
            _ => Ok(meta),
        }
    }

    /// Reads the counters inside a write transaction.
    pub fn read_in(txn: &WriteTransaction) -> Result<Meta, TxError> {
        Meta::read(&txn.open_table(META)?)
    }

    /// Writes every counter and their checksum.
    pub fn write(&self, table: &mut Table<'_, &'static str, u64>) -> Result<(), TxError> {
        for (name, value) in FIELDS.iter().zip(self.fields()) {
            table.insert(*name, value)?;
        }
        table.insert(CHECK, self.check())?;
        Ok(())
    }

    /// Writes the counters inside a write transaction.
    pub fn write_in(&self, txn: &WriteTransaction) -> Result<(), TxError> {
        self.write(&mut txn.open_table(META)?)
    }

    /// Whether the store has ever counted anything (a store that never did holds no cluster).
    pub fn counted_anything(&self) -> bool {
        self.next_job_id > 0 || self.generation > 0 || self.wal_seq > 0
    }
}

/// A storage backend for unit tests that fails writes on demand, as a full or broken disk does.
#[cfg(test)]
pub(super) mod faults {
    use redb::backends::FileBackend;
    use redb::{Database, DatabaseError, StorageBackend};
    use std::ops::Bound;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Switches shared by a test and the backends of the store it opened.
    #[derive(Debug, Default)]
    pub struct Faults {
        /// Every write and sync of the redb file fails with ENOSPC.
        pub disk_full: AtomicBool,
    }

    #[derive(Debug)]
    struct Faulty {
        inner: FileBackend,
        faults: Arc<Faults>,
    }

    impl Faulty {
        fn check(&self) -> std::io::Result<()> {
            if self.faults.disk_full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(
                    nix::errno::Errno::ENOSPC as i32,
                ));
            }
            Ok(())
        }
    }

    pub fn open(path: &Path, faults: Arc<Faults>) -> Result<Database, DatabaseError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        redb::Builder::new().create_with_backend(Faulty {
            inner: FileBackend::new(file)?,
            faults,
        })
    }

    impl StorageBackend for Faulty {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
        fn try_lock_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.try_lock_shared_range(start, end)
        }
        fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
            self.inner.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.inner.lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.inner.unlock_range(start, end)
        }
        fn query_lock_range(
            &self,
            start: Bound<u64>,
            end: Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.query_lock_range(start, end)
        }
    }
}
