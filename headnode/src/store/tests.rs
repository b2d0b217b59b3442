//! The store's integrity: the marker, record checksums, damage in the log, job IDs after a loss,
//! and recovery after a failed write.

use super::db::faults::Faults;
use super::*;
use crate::model::{RunPhases, User};
use beowulf_types::{JobState, Timestamp, parse_job_file};
use redb::ReadableDatabase;
use std::sync::atomic::Ordering;

fn image(name: &str, digest: &str) -> ImageRecord {
    ImageRecord {
        name: name.into(),
        digest: digest.into(),
        size_bytes: 10240,
        owner: user("alice"),
        created: Timestamp(1_700_000_000_000),
        tar_path: PathBuf::from("/srv/beowulf/shared/images/blobs/sha256-ab.tar"),
    }
}

fn user(name: &str) -> User {
    User {
        uid: 1000,
        gid: 1000,
        name: name.into(),
    }
}

fn job(id: u64, owner: &str) -> JobRecord {
    JobRecord {
        id: JobId(id),
        spec: parse_job_file("job.toml", "command = [\"true\"]\n").unwrap(),
        user: user(owner),
        submit_cwd: "/home".into(),
        submit_env: BTreeMap::new(),
        state: JobState::Pending,
        end_reason: String::new(),
        submit_time: Timestamp(1_700_000_000_000),
        start_time: None,
        end_time: None,
        exit_code: None,
        nodes: Vec::new(),
        run: 0,
        node_results: BTreeMap::new(),
        cleanup: BTreeMap::new(),
        restarts: 0,
        events: Vec::new(),
        groups: Vec::new(),
        gids: Vec::new(),
        umask: None,
        partition: None,
        array: None,
        start_priority: 0,
        image: None,
        launch: None,
        phases: RunPhases::default(),
        hold: None,
        signals: Vec::new(),
    }
}

/// The change that submits job `id` (the next ID is `id + 1`).
fn submitted(id: u64, owner: &str) -> EncodedChange {
    EncodedChange::new([&job(id, owner)], [], id + 1, Generation(id))
}

/// With changes moved into redb within `flush_delay_ms`.
fn config(flush_delay_ms: Millis) -> StoreConfig {
    StoreConfig {
        acknowledge: Acknowledge::Fsync,
        flush_delay_ms: Some(flush_delay_ms),
    }
}

/// A flush an hour away: every change stays only in the log while a test runs.
const NEVER: Millis = 3_600_000;

fn job_ids(snapshot: &Snapshot) -> Vec<u64> {
    snapshot.jobs.keys().map(|id| id.0).collect()
}

/// What a crash of headnoded leaves on disk now: the state directory's files as they are (the
/// kernel has them), copied, as the store holding them is still open.
fn crash_image(dir: &Path) -> tempfile::TempDir {
    let image = tempfile::tempdir().unwrap();
    for file in ["headnoded.redb", "headnoded.redb.marker", "headnoded.wal"] {
        std::fs::copy(dir.join(file), image.path().join(file)).unwrap();
    }
    image
}

/// Waits until the flusher moved everything into redb and emptied the log.
fn wait_flushed(store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let state = store.log.lock();
            if state.pending.is_empty() && state.bytes == 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the log was not flushed");
        std::thread::sleep(Duration::from_millis(5));
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

#[test]
fn a_missing_store_is_refused_when_its_marker_says_one_existed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    let marker = dir.path().join("headnoded.redb.marker");
    {
        let store = Store::open(&path, &config(1)).unwrap();
        store.commit(vec![submitted(1, "alice")]).unwrap();
    }
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(
        text.contains("store = \"headnoded.redb\"") && text.contains("origin = \"created\""),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();

    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    let message = err.to_string();
    for expected in [
        &format!("{} does not exist", path.display()),
        &marker.display().to_string(),
        "Restore",
        "to deliberately start a new, empty cluster, remove",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!path.exists(), "nothing was created in its place");

    // Removing the marker is how a new, empty cluster is started on purpose.
    std::fs::remove_file(&marker).unwrap();
    let store = Store::open(&path, &config(1)).unwrap();
    let snapshot = store.load().unwrap();
    assert!(snapshot.jobs.is_empty());
    assert_eq!(snapshot.next_job_id, 1);
    assert!(marker.exists(), "the new store has its marker");
}

#[test]
fn an_empty_store_is_refused_when_its_marker_says_one_existed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    {
        let store = Store::open(&path, &config(1)).unwrap();
        store.commit(vec![submitted(1, "alice")]).unwrap();
    }
    File::create(&path).unwrap(); // truncated to 0 bytes

    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("{} is empty (0 bytes)", path.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "no new store was written into it"
    );

    std::fs::write(&path, [0x5a; 8192]).unwrap();
    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("Restore"), "{err}");
}

#[test]
fn another_store_or_a_blank_database_in_its_place_is_refused() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = ours.path().join("headnoded.redb");
    for dir in [&ours, &theirs] {
        let store = Store::open(&dir.path().join("headnoded.redb"), &config(1)).unwrap();
        store.commit(vec![submitted(1, "alice")]).unwrap();
    }
    std::fs::copy(theirs.path().join("headnoded.redb"), &path).unwrap();
    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(matches!(err, StoreError::NotThisStore { .. }), "{err:?}");

    std::fs::remove_file(&path).unwrap();
    drop(redb::Database::create(&path).unwrap());
    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(
        matches!(&err, StoreError::Missing { problem, .. } if problem.contains("no records")),
        "{err:?}"
    );
}

/// A store as headnoded wrote it before markers and checksums: plain JSON records, unchecked
/// counters.
fn write_old_store(path: &Path, jobs: &[JobRecord]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(JOBS).unwrap();
        for job in jobs {
            let json = serde_json::to_vec(job).unwrap();
            table.insert(job.id.0, json.as_slice()).unwrap();
        }
        let mut images = txn.open_table(IMAGES).unwrap();
        let json = serde_json::to_vec(&image("mpi", "sha256:ab")).unwrap();
        images.insert("mpi", json.as_slice()).unwrap();
        txn.open_table(NODES).unwrap();
        txn.open_table(RESERVATIONS).unwrap();
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("next_job_id", 8).unwrap();
        meta.insert("generation", 5).unwrap();
    }
    txn.commit().unwrap();
}

/// The stored bytes of job `id`, read with redb alone.
fn raw_job(path: &Path, id: u64) -> Vec<u8> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(JOBS).unwrap();
    table.get(id).unwrap().unwrap().value().to_vec()
}

#[test]
fn a_store_from_before_markers_and_checksums_is_accepted_converted_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    write_old_store(&path, &[job(7, "alice")]);
    assert_eq!(raw_job(&path, 7).first(), Some(&b'{'));

    {
        let store = Store::open(&path, &config(1)).unwrap();
        let snapshot = store.load().unwrap();
        assert_eq!(snapshot.jobs[&JobId(7)], job(7, "alice"));
        assert_eq!(snapshot.images["mpi"], image("mpi", "sha256:ab"));
        assert_eq!(snapshot.next_job_id, 8);
        assert_eq!(snapshot.generation, Generation(5));
    }
    let text = std::fs::read_to_string(dir.path().join("headnoded.redb.marker")).unwrap();
    assert!(text.contains("origin = \"existing store\""), "{text}");
    let sealed = raw_job(&path, 7);
    assert_eq!(
        envelope::unseal("jobs", "7", &sealed),
        Ok(Unsealed::Sealed(
            serde_json::to_vec(&job(7, "alice")).unwrap().as_slice()
        )),
        "the record now carries its checksum"
    );
    // Opened again: the marker and the store agree.
    let snapshot = Store::open(&path, &config(1)).unwrap().load().unwrap();
    assert_eq!(job_ids(&snapshot), [7]);
}

#[test]
fn a_flipped_byte_inside_a_stored_job_record_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    {
        let store = Store::open(&path, &config(1)).unwrap();
        store.commit(vec![submitted(1, "alice")]).unwrap();
        store.commit(vec![submitted(2, "mallory")]).unwrap();
    } // closing moves the log into redb
    let mut bytes = std::fs::read(&path).unwrap();
    let owner = b"\"name\":\"mallory\"";
    let mut flipped = 0;
    for at in 0..bytes.len() - owner.len() {
        if bytes[at..].starts_with(owner) {
            bytes[at + 8] ^= 0x0c; // mallory -> aallory: another user
            flipped += 1;
        }
    }
    assert!(flipped > 0, "the record is in the file");
    std::fs::write(&path, bytes).unwrap();

    let store = Store::open(&path, &config(1)).unwrap();
    let err = store.load().unwrap_err();
    assert!(
        matches!(&err, StoreError::Damaged { table, key, .. } if table == "jobs" && key == "2"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("table `jobs`, key 2") && message.contains("checksum"),
        "{message}"
    );
}

#[test]
fn damage_in_the_middle_of_the_log_is_moved_aside_and_refused_and_no_job_id_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("headnoded.redb"), &config(NEVER)).unwrap();
    for id in 1..=4 {
        store.commit(vec![submitted(id, "alice")]).unwrap();
    }
    let image = crash_image(dir.path());
    drop(store);
    let path = image.path().join("headnoded.redb");
    let log = image.path().join("headnoded.wal");
    let mut bytes = std::fs::read(&log).unwrap();
    let second = wal::decode(&bytes).records[1].bytes.clone();
    bytes[(second.start + second.end) / 2] ^= 0x20;
    std::fs::write(&log, &bytes).unwrap();

    let err = Store::open(&path, &config(1)).unwrap_err();
    let StoreError::LogDamaged { moved, report } = &err else {
        panic!("{err:?}");
    };
    let moved_name = moved.file_name().unwrap().to_string_lossy();
    assert!(
        moved_name.starts_with("headnoded.wal.damaged-"),
        "{moved_name}"
    );
    assert_eq!(std::fs::read(moved).unwrap(), bytes, "the evidence is kept");
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        0,
        "a new, empty log is in its place"
    );
    for expected in [
        format!("bytes {}..{}", second.start, second.end),
        "the change numbered 2".into(),
        "numbered 3..=4".into(),
        "every change up to number 1 is in the store".into(),
        moved.display().to_string(),
        "Job IDs continue from".into(),
    ] {
        assert!(report.contains(&expected), "{expected:?} in {report}");
    }
    let mut description = moved.clone().into_os_string();
    description.push(".txt");
    assert!(
        std::fs::read_to_string(&description)
            .unwrap()
            .contains(report.as_str())
    );

    // Refused while the damaged log is in the state directory, every time.
    let again = Store::open(&path, &config(1)).unwrap_err();
    assert!(
        matches!(&again, StoreError::DamagedLogKept { report: kept, .. } if kept == report),
        "{again:?}"
    );

    // The operator takes it out: the start goes on without changes 2..=4, and the IDs they
    // handed out are not handed out again.
    let evidence = tempfile::tempdir().unwrap();
    std::fs::rename(moved, evidence.path().join(moved.file_name().unwrap())).unwrap();
    let store = Store::open(&path, &config(1)).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(job_ids(&snapshot), [1]);
    assert!(snapshot.next_job_id > 4, "{}", snapshot.next_job_id);
    store
        .commit(vec![submitted(snapshot.next_job_id, "alice")])
        .unwrap();
    drop(store);
    let snapshot = Store::open(&path, &config(1)).unwrap().load().unwrap();
    assert_eq!(
        job_ids(&snapshot).len(),
        2,
        "later changes are logged and kept"
    );
}

#[test]
fn a_torn_last_record_is_still_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("headnoded.redb"), &config(NEVER)).unwrap();
    for id in 1..=3 {
        store.commit(vec![submitted(id, "alice")]).unwrap();
    }
    let image = crash_image(dir.path());
    drop(store);
    let path = image.path().join("headnoded.redb");
    let log = image.path().join("headnoded.wal");
    let bytes = std::fs::read(&log).unwrap();
    let third = wal::decode(&bytes).records[2].bytes.clone();
    std::fs::write(&log, &bytes[..third.start + third.len() / 2]).unwrap();

    let store = Store::open(&path, &config(1)).unwrap();
    let snapshot = store.load().unwrap();
    assert_eq!(job_ids(&snapshot), [1, 2]);
    assert!(
        snapshot.next_job_id > 3,
        "whatever the torn append handed out is not handed out again: {}",
        snapshot.next_job_id
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        0,
        "the log is emptied"
    );
}

#[test]
fn after_a_failed_write_the_store_recovers_without_being_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    let faults = Arc::new(Faults::default());
    let store = Store::open_with_faults(&path, &config(1), faults.clone()).unwrap();
    store.commit(vec![submitted(1, "alice")]).unwrap();
    wait_flushed(&store);

    faults.disk_full.store(true, Ordering::SeqCst);
    let err = store
        .put_image("mpi", Some(&image("mpi", "sha256:ab")))
        .unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    // The log still takes changes (it is durable there), and the flusher keeps them pending.
    store.commit(vec![submitted(2, "bob")]).unwrap();
    // A change that needs more job IDs reserved needs redb: it is not acknowledged.
    let many = EncodedChange::new([&job(4999, "carol")], [], 5000, Generation(3));
    assert!(store.commit(vec![many.clone()]).is_err());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        store.log.lock().bytes > 0,
        "the flusher could not move job 2: the log keeps it"
    );
    assert!(
        store
            .put_image("mpi", Some(&image("mpi", "sha256:ab")))
            .is_err()
    );

    // Space is back: the next writes work on the same Store.
    faults.disk_full.store(false, Ordering::SeqCst);
    store
        .put_image("mpi", Some(&image("mpi", "sha256:ab")))
        .unwrap();
    store.commit(vec![many]).unwrap();
    wait_flushed(&store);
    drop(store);

    let snapshot = Store::open(&path, &config(1)).unwrap().load().unwrap();
    assert_eq!(job_ids(&snapshot), [1, 2, 4999]);
    assert_eq!(snapshot.next_job_id, 5000);
    assert_eq!(snapshot.images["mpi"], image("mpi", "sha256:ab"));
}

#[test]
fn the_store_and_its_log_are_readable_by_root_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    drop(Store::open(&path, &config(1)).unwrap());
    // An earlier version left them readable to every user: opening closes them again.
    for file in ["headnoded.redb", "headnoded.wal"] {
        std::fs::set_permissions(
            dir.path().join(file),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let store = Store::open(&path, &config(1)).unwrap();
    store.commit(vec![submitted(1, "alice")]).unwrap();
    for file in ["headnoded.redb", "headnoded.wal"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
}

#[test]
fn a_store_another_process_still_holds_is_waited_for_then_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headnoded.redb");
    drop(Store::open(&path, &config(1)).unwrap());
    // A dying headnoded lets go a moment later: opening waits for it.
    let holder = redb::Database::open(&path).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
    });
    let store = Store::open(&path, &config(1)).expect("opened once the other holder let go");
    release.join().unwrap();
    drop(store);
    // One that keeps it: said so, and not called damaged.
    let _holder = redb::Database::open(&path).unwrap();
    let err = Store::open(&path, &config(1)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("another process holds it"),
        "{err}"
    );
}
