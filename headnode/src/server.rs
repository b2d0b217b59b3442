//! Starts headnoded: opens the store, binds the unix sockets and the agent port, runs the loops.

use crate::agent_hub::AgentHubService;
use crate::api::ClusterApi;
use crate::config::HeadConfig;
use crate::head::Head;
use crate::init::{HeadRegistrations, Provisioner};
use crate::submit_socket;
use crate::tasks;
use anyhow::Context;
use beowulf_proto::v1::{agent_hub_server::AgentHubServer, cluster_server::ClusterServer};
use client_conn::TrackRequests;
use connections::{ClientSockets, ConnectionLimits};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

pub mod client_conn;
pub mod connections;
#[cfg(test)]
mod tests;

/// Name of the file in the state directory that holds the agent API's address (`host:port`).
pub const AGENT_ADDR_FILE: &str = "agent.addr";

/// How often the client API pings a connection's peer (HTTP/2 PING); one that does not answer
/// within hyper's 20 s is closed. It notices a dead or stuck client under a long stream
/// (`submit --wait`), which the idle timeout leaves alone while a request is in flight.
const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Requests in flight at once on one client connection (tonic leaves HTTP/2's unlimited): a
/// command has one or two (`submit --wait`'s stream and a cancel), and each stream holds a task
/// in the head, so a user's 64 connections must not carry an unbounded number. 100 is the
/// HTTP/2 specification's suggested minimum.
const CLIENT_MAX_CONCURRENT_STREAMS: u32 = 100;

pub async fn run(config: HeadConfig) -> anyhow::Result<()> {
    // Before anything opens descriptors: the client connections' cap is half of this limit.
    let open_files = connections::raise_open_files_limit();
    let limits = ConnectionLimits::for_config(&config.api, open_files);
    tracing::info!(
        open_files,
        max_connections = limits.total(),
        max_connections_per_user = config.api.max_connections_per_user,
        "client socket limits"
    );
    let sockets = ClientSockets::new(limits);
    let head = Arc::new(Head::open(config.clone()).context("cannot open the head's state")?);

    let agent_listener = tokio::net::TcpListener::bind(&config.agent_listen)
        .await
        .with_context(|| format!("cannot listen for agents on {}", config.agent_listen))?;
    let agent_addr = agent_listener.local_addr()?;
    let addr_file = config.state_dir.join(AGENT_ADDR_FILE);
    write_atomically(&addr_file, &agent_addr.to_string())?;

    if config.socket.exists() {
        std::fs::remove_file(&config.socket).with_context(|| {
            format!("cannot remove the stale socket {}", config.socket.display())
        })?;
    }
    let socket = tokio::net::UnixListener::bind(&config.socket)
        .with_context(|| format!("cannot bind the client socket {}", config.socket.display()))?;
    // Any local user may connect; the peer uid decides what they may do.
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o666))?;
    let submit_path = beowulf_proto::submit_socket::path_beside(&config.socket);
    if submit_path.exists() {
        std::fs::remove_file(&submit_path)
            .with_context(|| format!("cannot remove the stale socket {}", submit_path.display()))?;
    }
    let submit_socket = tokio::net::UnixListener::bind(&submit_path)
        .with_context(|| format!("cannot bind the submit socket {}", submit_path.display()))?;
    std::fs::set_permissions(&submit_path, std::fs::Permissions::from_mode(0o666))?;

    let mut agents = Server::builder();
    let mut launch_tls = None;
    if let Some(tls) = &config.tls {
        let (ca, cert, key) = tls.read().map_err(anyhow::Error::msg)?;
        // The same certificate opens the agents' launch services, for the job steps the head
        // relays (srun from outside a job's nodes).
        launch_tls = Some(
            ClientTlsConfig::new()
                .identity(Identity::from_pem(&cert, &key))
                .ca_certificate(Certificate::from_pem(&ca)),
        );
        agents = agents
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(cert, key))
                    .client_ca_root(Certificate::from_pem(ca)),
            )
            .context("cannot set up mutual TLS on the agent API")?;
        tracing::info!("agent API requires client certificates from the cluster CA");
    }
    let agents = agents
        .add_service(AgentHubServer::new(AgentHubService::new(head.clone())))
        .serve_with_incoming(TcpListenerStream::new(agent_listener).map(no_delay));
    let api = ClusterApi::new(
        head.clone(),
        Arc::new(Provisioner::new(
            config.provision.clone(),
            &config.state_dir,
            Arc::new(HeadRegistrations(head.clone())),
        )),
        launch_tls,
    );
    // Ready only now: the sockets are bound and the TLS files read (a head that cannot read its
    // certificate said "ready" and then exited, and systemd believed the first).
    tracing::info!(socket = %config.socket.display(), agents = %agent_addr, "headnoded ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tokio::spawn(tasks::scheduling_loop(head.clone()));
    tokio::spawn(tasks::health_loop(head.clone()));
    head.wake_scheduler.notify_one();
    let clients = serve_clients(socket, api, sockets.clone());
    let submits = submit_socket::serve(submit_socket, head.clone(), sockets);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = agents => r.context("agent API failed")?,
        r = clients => r?,
        r = submits => r.context("submit socket failed")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = terminate.recv() => tracing::info!("terminated, stopping"),
    }
    Ok(())
}

/// Serves the client API on `listener` (the gRPC socket) within the limits and timeouts of
/// `sockets` (`connections`), until the listener fails.
pub async fn serve_clients(
    listener: tokio::net::UnixListener,
    api: ClusterApi,
    sockets: ClientSockets,
) -> anyhow::Result<()> {
    let (to_tonic, incoming) = tokio::sync::mpsc::channel(16);
    let accepting = client_conn::accept_loop(listener, sockets, to_tonic);
    let serving = Server::builder()
        .http2_keepalive_interval(Some(CLIENT_KEEPALIVE_INTERVAL))
        .max_concurrent_streams(CLIENT_MAX_CONCURRENT_STREAMS)
        .add_service(TrackRequests::new(ClusterServer::new(api)))
        .serve_with_incoming(ReceiverStream::new(incoming));
    tokio::select! {
        r = accepting => r.context("cannot accept on the client socket"),
        r = serving => r.context("client API failed"),
    }
}

/// Writes a small file so readers never see it half-written.
pub fn write_atomically(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Agent connections carry small messages that must go out at once: with Nagle's algorithm a
/// desired state written right after another waits for the agent's delayed ACK (40 ms on Linux),
/// which was most of a job's submit-to-start time.
fn no_delay(
    stream: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = stream?;
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(error = %e, "cannot set TCP_NODELAY on an agent connection");
    }
    Ok(stream)
}
