//! The gRPC client socket's limits and timeouts, with the real server on a unix socket.

use super::connections::test_support::{charged, eventually};
use super::connections::{ClientSockets, ConnectionLimits, Timeouts};
use super::serve_clients;
use crate::api::ClusterApi;
use crate::config::HeadConfig;
use crate::head::Head;
use crate::init::{HeadRegistrations, Provisioner};
use beowulf_proto::v1::{self, cluster_client::ClusterClient};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixListener;
use tonic::transport::{Channel, Endpoint};

/// Long enough that connections a test holds are not closed under it.
const PATIENT: Timeouts = Timeouts {
    preface: Duration::from_secs(60),
    idle: Duration::from_secs(60),
};

fn head(dir: &Path) -> Arc<Head> {
    let config = HeadConfig::parse(
        &dir.join("headnoded.toml"),
        &format!("state_dir = {:?}\nsocket = {:?}\n", dir, dir.join("sock")),
    )
    .unwrap();
    Arc::new(Head::open(config).unwrap())
}

/// Serves the client API on a socket in `dir`; returns its path.
fn start(dir: &Path, head: &Arc<Head>, sockets: ClientSockets) -> PathBuf {
    let path = dir.join("headnoded.sock");
    let provisioner = Provisioner::new(
        head.config.provision.clone(),
        dir,
        Arc::new(HeadRegistrations(head.clone())),
    );
    let api = ClusterApi::new(head.clone(), Arc::new(provisioner), None);
    tokio::spawn(serve_clients(
        UnixListener::bind(&path).unwrap(),
        api,
        sockets,
    ));
    path
}

async fn client(path: &Path) -> ClusterClient<Channel> {
    let channel = Endpoint::try_from(format!("unix:{}", path.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ClusterClient::new(channel)
}

/// Connects without sending anything; the connection stays open while the value lives.
fn silent(path: &Path) -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect(path).unwrap()
}

/// Reads `stream` until the head closes it (or 10 s pass): what it read, and how long it waited.
async fn until_closed(mut stream: std::os::unix::net::UnixStream) -> (usize, Duration) {
    tokio::task::spawn_blocking(move || {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut bytes = Vec::new();
        // A reset counts as closed too.
        let _ = stream.read_to_end(&mut bytes);
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(10), "the head never closed it");
        (bytes.len(), waited)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_uid_beyond_its_cap_is_closed_while_another_uid_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path());
    let limits = ConnectionLimits::new(3, 1024, 32);
    let sockets = ClientSockets::new(limits.clone())
        .with_timeouts(PATIENT)
        .charging(charged(&[1000, 1000, 1000, 1000, 1000, 1001]));
    let path = start(dir.path(), &head, sockets);
    let held: Vec<_> = (0..3).map(|_| silent(&path)).collect();
    eventually(|| limits.open() == 3).await;

    // uid 1000's fourth and fifth connections are closed at once, unanswered.
    for _ in 0..2 {
        let (read, waited) = until_closed(silent(&path)).await;
        assert_eq!(read, 0);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
    assert_eq!(limits.open(), 3);

    // Another user is served meanwhile.
    let mut c = client(&path).await;
    c.list_jobs(v1::ListJobsRequest {
        all: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(limits.open(), 4);
    drop(c);
    drop(held);
    eventually(|| limits.open() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_request_is_closed_after_the_preface_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path());
    let limits = ConnectionLimits::new(64, 1024, 32);
    let preface = Duration::from_millis(500);
    let sockets = ClientSockets::new(limits.clone()).with_timeouts(Timeouts {
        preface,
        idle: Duration::from_secs(60),
    });
    let path = start(dir.path(), &head, sockets);

    // Silent from the start.
    let (_, waited) = until_closed(silent(&path)).await;
    assert!(waited >= preface - Duration::from_millis(50), "{waited:?}");
    // The HTTP/2 preface alone is no request either.
    let mut preface_only = silent(&path);
    std::io::Write::write_all(&mut preface_only, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let (_, waited) = until_closed(preface_only).await;
    assert!(waited >= preface - Duration::from_millis(50), "{waited:?}");
    eventually(|| limits.open() == 0).await;

    // A client that asks at once is served.
    let mut c = client(&path).await;
    c.list_jobs(v1::ListJobsRequest {
        all: true,
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_gets_in_when_users_hold_every_slot_but_the_reserved_ones() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path());
    // Four slots, two of them root's.
    let limits = ConnectionLimits::new(64, 4, 2);
    let sockets = ClientSockets::new(limits.clone())
        .with_timeouts(PATIENT)
        .charging(charged(&[1000, 1001, 1002]));
    let path = start(dir.path(), &head, sockets);
    let held: Vec<_> = (0..2).map(|_| silent(&path)).collect();
    eventually(|| limits.open() == 2).await;
    // A third user finds no slot.
    let (read, _) = until_closed(silent(&path)).await;
    assert_eq!(read, 0);
    assert_eq!(limits.open(), 2);

    // Root (every connection from here on) takes the reserved ones.
    let mut first = client(&path).await;
    let mut second = client(&path).await;
    first
        .list_jobs(v1::ListJobsRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    second.list_nodes(v1::ListNodesRequest {}).await.unwrap();
    assert_eq!(limits.open(), 4);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_spares_a_quiet_stream_and_closes_the_connection_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let head = head(dir.path());
    let (agent, _desired) = tokio::sync::mpsc::unbounded_channel();
    let inventory = beowulf_types::Inventory {
        cpus: 2,
        memory_mb: 1024,
        ..Default::default()
    };
    let node = v1::Register {
        node: "node1".into(),
        inventory: Some(v1::Inventory::from(&inventory)),
        runs: vec![],
        generation: 0,
        launch_endpoint: "127.0.0.1:7000".into(),
    };
    head.register(&node, agent).unwrap();
    let limits = ConnectionLimits::new(64, 1024, 32);
    let idle = Duration::from_millis(300);
    let sockets = ClientSockets::new(limits.clone()).with_timeouts(Timeouts {
        preface: Duration::from_secs(5),
        idle,
    });
    let path = start(dir.path(), &head, sockets);

    // `submit --wait`: a submit, then a WatchJob stream on the same connection.
    let mut c = client(&path).await;
    let reply = c
        .submit(v1::SubmitRequest {
            file_name: "job.toml".into(),
            file_text: "command = [\"a\"]\n".into(),
            cwd: "/tmp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = c
        .watch_job(v1::ShowJobRequest {
            job_id: reply.job_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.message().await.unwrap().unwrap().state, "PENDING");
    // The job stays pending, the stream silent, well past the idle timeout.
    tokio::time::sleep(idle * 5).await;
    assert_eq!(limits.open(), 1, "the stream's connection was closed");
    // A request on the same connection, while the stream goes on.
    c.cancel(v1::CancelRequest {
        whole_array: false,
        job_id: reply.job_id,
    })
    .await
    .unwrap();
    assert_eq!(limits.open(), 1);
    assert_eq!(events.message().await.unwrap().unwrap().state, "CANCELLED");
    assert!(events.message().await.unwrap().is_none());
    drop(events);

    // With nothing in flight any more, the connection is closed after the idle timeout...
    let ended = Instant::now();
    eventually(|| limits.open() == 0).await;
    assert!(ended.elapsed() >= idle - Duration::from_millis(100));
    // ...and the client, once it has seen the close, reconnects for its next request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.list_jobs(v1::ListJobsRequest {
        all: true,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(limits.open(), 1);
}
