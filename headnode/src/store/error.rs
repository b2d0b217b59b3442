//! Why the store cannot be opened, loaded or written ([`StoreError`]): the errors of the redb file
//! (`db.rs`), its marker (`marker.rs`) and its log (`wal.rs`), with what the administrator can do.

use std::path::PathBuf;

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
    /// The marker says a store existed, and the file is missing, empty or a new database.
    #[error(
        "the cluster store {path} {problem}, but {marker} records that this state directory has \
         held a cluster store since {created}. Refusing to start a new, empty cluster in its place \
         (every job would be forgotten and job IDs would start again at 1). Restore {path} from a \
         backup; or, to deliberately start a new, empty cluster, remove {marker}"
    )]
    Missing {
        path: PathBuf,
        marker: PathBuf,
        created: String,
        problem: String,
    },
    /// Another process holds the store's lock (and kept it while opening waited).
    #[error(
        "cannot open the cluster store {path}: another process holds it; is another headnoded \
         running on this state directory? Stop it first (the store is not damaged)"
    )]
    Locked { path: PathBuf },
    /// The marker says a store existed, and the file cannot be opened as one.
    #[error(
        "cannot open the cluster store {path}: {source}. {marker} records that this state \
         directory has held a cluster store since {created}, and this file is not readable as one. \
         Restore {path} from a backup; or, to deliberately start a new, empty cluster, move {path} \
         away and remove {marker}"
    )]
    Unreadable {
        path: PathBuf,
        marker: PathBuf,
        created: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(
        "the cluster store {path} is not the one this state directory was created with: {marker} \
         names store {expected} (since {created}), the file is store {found}. Restore the right \
         file from a backup; or, to deliberately run this store here, remove {marker}"
    )]
    NotThisStore {
        path: PathBuf,
        marker: PathBuf,
        expected: String,
        created: String,
        found: String,
    },
    /// A record or the counters failed their checksum.
    #[error(
        "the cluster store {path}: table `{table}`, key {key}: {problem}. Refusing to start rather \
         than trust it: restore {path} from a backup"
    )]
    Damaged {
        path: PathBuf,
        table: String,
        key: String,
        problem: String,
    },
    #[error("the cluster store's marker {path}: {problem}")]
    Marker { path: PathBuf, problem: String },
    /// The log is damaged in the middle: it was moved to `moved`, and `report` says what was lost.
    #[error("{report}")]
    LogDamaged { moved: PathBuf, report: String },
    /// An earlier start moved a damaged log aside, and it is still in the state directory.
    #[error(
        "{moved} is a damaged state store log that an earlier start moved aside; headnoded does \
         not start while it is in the state directory, so that the changes it lost are not \
         forgotten unnoticed. What that start found: {report}"
    )]
    DamagedLogKept { moved: PathBuf, report: String },
    #[error(
        "state store {path}: cannot reopen it after a failed write: {source}; nothing was written, \
         and the next write tries again"
    )]
    Reopen {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
}
