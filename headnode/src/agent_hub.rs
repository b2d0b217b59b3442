//! The agent API: one bidirectional stream per agent (register, heartbeats, run reports in; whole
//! desired state out).

use crate::head::Head;
use beowulf_proto::peer::certificate_names;
use beowulf_proto::v1::{self, agent_hub_server::AgentHub, agent_message::Body};
use beowulf_types::NodeName;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct AgentHubService {
    head: Arc<Head>,
}

impl AgentHubService {
    pub fn new(head: Arc<Head>) -> Self {
        AgentHubService { head }
    }
}

type HeadStream = Pin<Box<dyn Stream<Item = Result<v1::HeadMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentHub for AgentHubService {
    type SessionStream = HeadStream;

    async fn session(
        &self,
        request: Request<Streaming<v1::AgentMessage>>,
    ) -> Result<Response<HeadStream>, Status> {
        // Over mutual TLS, the names the agent's certificate vouches for.
        let vouched = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| certificate_names(c.as_ref())));
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("agent stream closed before it registered"))?;
        let Some(Body::Register(register)) = first.body else {
            return Err(Status::invalid_argument(
                "the first message of an agent session must be Register",
            ));
        };
        if register.node.is_empty() {
            return Err(Status::invalid_argument("register: the node name is empty"));
        }
        if let Some(names) = vouched
            && !names.contains(&register.node)
        {
            tracing::warn!(node = %register.node, certificate = ?names, "refused an agent registering under another node's name");
            return Err(Status::permission_denied(format!(
                "register: this agent's certificate is for {}, not for node `{}`; install the node's own \
                 certificate (`cluster init` makes one per node) or fix node_name in computed.toml",
                if names.is_empty() {
                    "no node".to_string()
                } else {
                    names.join(", ")
                },
                register.node
            )));
        }
        let node = NodeName::new(register.node.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let head = self.head.clone();
        let session = {
            let head = head.clone();
            tokio::task::spawn_blocking(move || head.register(&register, tx))
                .await
                .map_err(|e| Status::internal(format!("register task failed: {e}")))??
        };
        tracing::info!(node = %node, "agent registered");
        tokio::spawn(async move {
            while let Some(message) = incoming.next().await {
                let body = match message {
                    Ok(v1::AgentMessage { body: Some(body) }) => body,
                    Ok(_) => continue,
                    Err(status) => {
                        tracing::debug!(node = %node, %status, "agent stream error");
                        break;
                    }
                };
                match body {
                    Body::Heartbeat(beat) => {
                        if let Err(e) = head.heartbeat(&node, &beat) {
                            tracing::error!(node = %node, error = %e, "cannot release the holds of runs the node never had");
                        }
                        if let Some(inventory) = &beat.inventory
                            && let Err(e) = head.update_inventory(&node, inventory)
                        {
                            tracing::warn!(node = %node, error = %e, "cannot record the node's new inventory");
                        }
                    }
                    Body::Report(report) => {
                        let head = head.clone();
                        let node = node.clone();
                        let result =
                            tokio::task::spawn_blocking(move || head.run_report(&node, &report))
                                .await;
                        if let Ok(Err(e)) = result {
                            tracing::error!(error = %e, "cannot record a run report");
                        }
                    }
                    Body::Register(_) => {
                        tracing::warn!(node = %node, "ignoring a second Register on one session");
                    }
                }
            }
            head.disconnect(&node, session);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }
}
