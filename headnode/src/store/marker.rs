//! The store's marker (`headnoded.redb.marker`): a small file beside the store, written once when
//! the store is created (or first opened by a headnoded that knows about markers), that says this
//! state directory holds a cluster store, which one (`store_id`, also kept inside the store) and
//! since when.
//!
//! Without it a missing or 0-byte `headnoded.redb` looked like a first start: headnoded silently
//! began an empty cluster, with job IDs back at 1. With it, that is refused with an error that says
//! what to do: restore the file, or remove the marker to start a new cluster deliberately.

use super::StoreError;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Marker {
    /// The store's identity, also kept in its `meta` table (`store_id`).
    pub store_id: u64,
    /// Unix seconds: when the store was created, or, for a store older than markers, when the
    /// marker was written.
    pub created: u64,
    /// Whether the store was created along with the marker (else it existed before it).
    pub new_store: bool,
}

#[derive(Deserialize)]
struct MarkerFile {
    store_id: String,
    created: u64,
    #[serde(default)]
    origin: String,
}

/// The marker of the store at `store`: `<store>.marker`.
pub(super) fn path_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".marker");
    store.with_file_name(name)
}

/// The marker at `path`, if there is one.
pub(super) fn read(path: &Path) -> Result<Option<Marker>, StoreError> {
    let problem = |problem: String| StoreError::Marker {
        path: path.to_path_buf(),
        problem,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(problem(format!("cannot read it: {e}"))),
    };
    let file: MarkerFile = toml::from_str(&text).map_err(|e| {
        problem(format!(
            "it is not a marker headnoded wrote ({e}); it should name the cluster store of this \
             state directory: restore it from a backup, or remove it to deliberately start a new, \
             empty cluster"
        ))
    })?;
    let store_id = u64::from_str_radix(&file.store_id, 16)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            problem(format!(
                "`store_id = {:?}` is not a store id",
                file.store_id
            ))
        })?;
    Ok(Some(Marker {
        store_id,
        created: file.created,
        new_store: file.origin == "created",
    }))
}

/// Writes the marker of `store` atomically and durably: a temporary file, fsynced, renamed over
/// `path`, then the directory fsynced.
pub(super) fn write(path: &Path, store: &Path, marker: &Marker) -> Result<(), StoreError> {
    let store_name = store.file_name().unwrap_or_default().to_string_lossy();
    let origin = if marker.new_store {
        "created"
    } else {
        "existing store"
    };
    let text = format!(
        "# Written by headnoded beside the cluster store {store_name}. While this file is here,\n\
         # headnoded refuses to start if {store_name} is missing, empty or another store: that is a\n\
         # lost store, not a new cluster. Restore {store_name} from a backup; remove this file only\n\
         # to deliberately start a new, empty cluster.\n\
         store = \"{store_name}\"\n\
         store_id = \"{:016x}\"\n\
         # Unix seconds ({}).\n\
         created = {}\n\
         origin = \"{origin}\"\n",
        marker.store_id,
        describe_time(marker.created),
        marker.created,
    );
    let error = |e: std::io::Error| StoreError::Marker {
        path: path.to_path_buf(),
        problem: format!("cannot write it: {e}"),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)?;
    sync_dir(path).map_err(error)
}

/// Fsyncs the directory holding `path`, so that a rename or a new file in it is durable.
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Unix seconds as `2026-01-31 23:59:59 UTC`.
pub(super) fn describe_time(unix: u64) -> String {
    beowulf_types::UtcTime::from_unix_seconds(unix).to_string()
}

/// Now, in unix seconds.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_times_read_as_dates() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("headnoded.redb");
        let path = path_for(&store);
        assert_eq!(path, dir.path().join("headnoded.redb.marker"));
        assert_eq!(read(&path).unwrap(), None);
        let marker = Marker {
            store_id: 0xfeed_beef_0000_0001,
            created: 1_700_000_000,
            new_store: true,
        };
        write(&path, &store, &marker).unwrap();
        assert_eq!(read(&path).unwrap(), Some(marker));
        assert_eq!(describe_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(describe_time(951_782_400), "2000-02-29 00:00:00 UTC");
        std::fs::write(&path, "store_id = 12\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("headnoded.redb.marker"), "{err}");
    }
}
