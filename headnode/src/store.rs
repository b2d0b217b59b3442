//! The durable store (redb): jobs, nodes and counters. A change is acknowledged only after `commit`.
//!
//! Records are encoded by the caller ([`EncodedChange`]) so that the head can queue a change under
//! its lock and write it after releasing it, several changes per transaction (`head::commit`).

use crate::model::{ImageRecord, JobRecord, NodeRecord, ReservationRecord};
use beowulf_types::{Generation, JobId, NodeName};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RESERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("reservations");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const NEXT_JOB_ID: &str = "next_job_id";
const GENERATION: &str = "generation";

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
#[derive(Debug, Default)]
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
    db: Database,
    path: PathBuf,
    /// Unit tests of the head make the next commits fail, as a full or broken disk would.
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicBool,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Store {
            db,
            path: path.to_path_buf(),
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
        Ok(store)
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

    /// Writes changes, in order, in one transaction: atomically and durably (one fsync).
    pub fn commit(&self, changes: &[&EncodedChange]) -> Result<(), StoreError> {
        let Some(last) = changes.last() else {
            return Ok(());
        };
        #[cfg(test)]
        if self.fail_commits.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: redb::Error::Io(std::io::Error::other("injected by a test")),
            });
        }
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS)?;
            let mut nodes = txn.open_table(NODES)?;
            for change in changes {
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
            Ok(())
        })
    }

    /// Writes (`Some`) or deletes (`None`) one reservation, durably.
    pub fn put_reservation(
        &self,
        name: &str,
        record: Option<&ReservationRecord>,
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(RESERVATIONS)?;
            match record {
                Some(r) => {
                    let bytes = serde_json::to_vec(r).expect("reservations serialize");
                    table.insert(name, bytes.as_slice())?;
                }
                None => {
                    table.remove(name)?;
                }
            }
            Ok(())
        })
    }

    /// Writes (`Some`) or deletes (`None`) one image record, durably.
    pub fn put_image(&self, name: &str, record: Option<&ImageRecord>) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES)?;
            match record {
                Some(r) => {
                    let bytes = serde_json::to_vec(r).expect("image records serialize");
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
        let io = |e: redb::Error| StoreError::Io {
            path: self.path.clone(),
            source: e,
        };
        let txn = self.db.begin_write().map_err(|e| io(e.into()))?;
        body(&txn).map_err(io)?;
        txn.commit().map_err(|e| io(e.into()))
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
            let store = Store::open(&path).unwrap();
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
        let snapshot = Store::open(&path).unwrap().load().unwrap();
        assert_eq!(
            snapshot.images.into_iter().collect::<Vec<_>>(),
            vec![("mpi".to_string(), image("mpi", "sha256:ef"))]
        );
    }
}
