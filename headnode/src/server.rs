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
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// Name of the file in the state directory that holds the agent API's address (`host:port`).
pub const AGENT_ADDR_FILE: &str = "agent.addr";

pub async fn run(config: HeadConfig) -> anyhow::Result<()> {
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

    tracing::info!(socket = %config.socket.display(), agents = %agent_addr, "headnoded ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    tokio::spawn(tasks::scheduling_loop(head.clone()));
    tokio::spawn(tasks::health_loop(head.clone()));
    head.wake_scheduler.notify_one();

    let mut agents = Server::builder();
    if let Some(tls) = &config.tls {
        let (ca, cert, key) = tls.read().map_err(anyhow::Error::msg)?;
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
    let clients = Server::builder()
        .add_service(ClusterServer::new(ClusterApi::new(
            head.clone(),
            Arc::new(Provisioner::new(
                config.provision.clone(),
                &config.state_dir,
                Arc::new(HeadRegistrations(head.clone())),
            )),
        )))
        .serve_with_incoming(UnixListenerStream::new(socket));
    let submits = submit_socket::serve(submit_socket, head.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = agents => r.context("agent API failed")?,
        r = clients => r.context("client API failed")?,
        r = submits => r.context("submit socket failed")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
        _ = terminate.recv() => tracing::info!("terminated, stopping"),
    }
    Ok(())
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
