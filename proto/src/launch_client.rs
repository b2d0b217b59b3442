//! Clients of an agent's launch service (AgentLaunch over TCP): agents reach each other's, and
//! the head reaches a job's first node's to relay a job step from outside the job.

use crate::v1;

/// Why an agent's launch service could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad endpoint {endpoint} for {node}: {source}")]
    BadEndpoint {
        endpoint: String,
        node: String,
        source: tonic::transport::Error,
    },
    #[error("cannot set up TLS to the agent of {node}: {source}")]
    Tls {
        node: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach the agent of {node} at {endpoint}: {source}")]
    Unreachable {
        node: String,
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot reach this node's agent at {}: {source}", socket.display())]
    LocalUnreachable {
        socket: std::path::PathBuf,
        source: tonic::transport::Error,
    },
}

/// A client of `node`'s launch service at `endpoint` (TCP_NODELAY: requests and answers are
/// small and must not wait for delayed ACKs).
pub async fn connect_launch(
    endpoint: &str,
    node: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<v1::agent_launch_client::AgentLaunchClient<tonic::transport::Channel>, ConnectError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut target = tonic::transport::Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .map_err(|source| ConnectError::BadEndpoint {
            endpoint: endpoint.to_string(),
            node: node.to_string(),
            source,
        })?
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        // The node's certificate names the node, whatever address it is reached at.
        target = target
            .tls_config(tls.clone().domain_name(node))
            .map_err(|source| ConnectError::Tls {
                node: node.to_string(),
                source,
            })?;
    }
    let channel = target
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            node: node.to_string(),
            endpoint: endpoint.to_string(),
            source,
        })?;
    Ok(v1::agent_launch_client::AgentLaunchClient::new(channel))
}
