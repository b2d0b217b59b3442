//! The agent's MPI launch service (AgentLaunch over gRPC): the remote launcher of a job's
//! `mpirun` (`beowulf-rsh`) asks it to start the MPI daemon in the job's container on this node,
//! for directly launched ranks the other nodes send it their parts of the job's fences, and for
//! jobs whose tasks write on several nodes, their output for the job's files.

use crate::agent::{Agent, LaunchRefusal};
use crate::launcher::Launcher;
use beowulf_proto::v1::{
    self,
    agent_launch_server::{AgentLaunch, AgentLaunchServer},
};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

pub struct LaunchService<L: Launcher> {
    agent: Arc<Agent<L>>,
}

impl<L: Launcher> std::fmt::Debug for LaunchService<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<L: Launcher> AgentLaunch for LaunchService<L> {
    async fn launch(
        &self,
        request: Request<v1::LaunchRequest>,
    ) -> Result<Response<v1::LaunchReply>, Status> {
        let from = request.remote_addr();
        let request = request.into_inner();
        match self.agent.launch(request).await {
            Ok(reply) => Ok(Response::new(reply)),
            Err(refusal) => {
                tracing::warn!(?from, %refusal, "launch request refused");
                Err(status(refusal))
            }
        }
    }

    async fn fence(
        &self,
        request: Request<v1::FenceRequest>,
    ) -> Result<Response<v1::FenceReply>, Status> {
        let from = request.remote_addr();
        answer(from, "fence", self.agent.fence(request.into_inner()).await)
    }

    async fn output(
        &self,
        request: Request<v1::OutputRequest>,
    ) -> Result<Response<v1::OutputReply>, Status> {
        let from = request.remote_addr();
        answer(
            from,
            "output",
            self.agent.output(request.into_inner()).await,
        )
    }
}

/// The answer to a request of another node's agent (a fence, output): a refusal is logged, as a
/// warning unless the run is not known here yet (that node asks again).
fn answer<T>(
    from: Option<SocketAddr>,
    what: &str,
    result: Result<T, LaunchRefusal>,
) -> Result<Response<T>, Status> {
    match result {
        Ok(reply) => Ok(Response::new(reply)),
        Err(refusal) => {
            if matches!(refusal, LaunchRefusal::NotHere(_)) {
                tracing::debug!(?from, %refusal, "{what} of a run not known here yet");
            } else {
                tracing::warn!(?from, %refusal, "{what} refused");
            }
            Err(status(refusal))
        }
    }
}

fn status(refusal: LaunchRefusal) -> Status {
    match refusal {
        LaunchRefusal::NotHere(m) => Status::not_found(m),
        LaunchRefusal::NotMpi(m) | LaunchRefusal::NotWriter(m) => Status::failed_precondition(m),
        LaunchRefusal::BadCredential(m) => Status::permission_denied(m),
        LaunchRefusal::Failed(m) => Status::internal(m),
    }
}

/// The address other nodes reach the service at: `advertise` if given, else the bound address
/// with an unspecified host replaced by `node`.
pub fn endpoint(bound: SocketAddr, advertise: Option<&str>, node: &str) -> String {
    match advertise {
        Some(a) => a.to_string(),
        None if bound.ip().is_unspecified() => format!("{node}:{}", bound.port()),
        None => bound.to_string(),
    }
}

/// Serves launch requests on `listener` until the process ends.
pub async fn serve<L: Launcher>(agent: Arc<Agent<L>>, listener: TcpListener) {
    // TCP_NODELAY: a fence answer is a few small HTTP/2 frames; with Nagle the last one waited
    // for the peer's delayed ACK — on a machine busy with spinning ranks, for seconds (measured).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a launch connection");
            }
        })
    });
    let result = tonic::transport::Server::builder()
        .add_service(AgentLaunchServer::new(LaunchService { agent }))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the MPI launch service stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_the_node_when_listening_everywhere() {
        let any: SocketAddr = "0.0.0.0:7091".parse().unwrap();
        assert_eq!(endpoint(any, None, "node3"), "node3:7091");
        let lo: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(endpoint(lo, None, "node3"), "127.0.0.1:4000");
        assert_eq!(
            endpoint(any, Some("10.77.0.13:7091"), "node3"),
            "10.77.0.13:7091"
        );
    }
}
