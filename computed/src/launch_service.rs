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
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

pub struct LaunchService<L: Launcher> {
    agent: Arc<Agent<L>>,
    failures: CredentialFailures,
}

/// First delay of an answer to a peer whose credential was wrong; it doubles with each further
/// failure. A right credential is never delayed, and 128-bit credentials are not guessable at any
/// rate: this only makes a guessing peer slow and loud (the attack ran 40 guesses in 0.2 s).
const FIRST_FAILURE_DELAY: Duration = Duration::from_millis(100);
/// The longest delay: long enough to make guessing pointless, short enough that a job that
/// mistyped its node list still gets its error in seconds.
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
/// A peer with no failure for this long starts again from no delay.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Peers remembered at most; beyond it the oldest are forgotten, so a flood of source addresses
/// cannot grow the agent's memory.
const MAX_REMEMBERED_PEERS: usize = 4096;

/// Wrong credentials per peer address, to slow down and report a peer that keeps failing.
#[derive(Debug, Default)]
struct CredentialFailures {
    peers: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl CredentialFailures {
    /// Records a failure of `peer` at `now`; returns how many in a row and how long to wait
    /// before answering.
    fn record(&self, peer: IpAddr, now: Instant) -> (u32, Duration) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= MAX_REMEMBERED_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_MEMORY);
            if peers.len() >= MAX_REMEMBERED_PEERS
                && let Some(oldest) = peers.iter().min_by_key(|(_, (_, t))| *t).map(|(p, _)| *p)
            {
                peers.remove(&oldest);
            }
        }
        let entry = peers.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let count = entry.0;
        let delay = FIRST_FAILURE_DELAY
            .saturating_mul(1u32.checked_shl(count - 1).unwrap_or(u32::MAX))
            .min(MAX_FAILURE_DELAY);
        (count, delay)
    }

    /// Logs a wrong credential of `from` at WARN and waits before the refusal is answered.
    async fn slow_down(&self, from: Option<SocketAddr>, what: &str, refusal: &LaunchRefusal) {
        let peer = from.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let (count, delay) = self.record(peer, Instant::now());
        tracing::warn!(
            %peer,
            failures = count,
            delay_ms = delay.as_millis() as u64,
            %refusal,
            "{what} with a wrong launch credential refused"
        );
        tokio::time::sleep(delay).await;
    }
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
        let result = self.agent.launch(request.into_inner()).await;
        self.answer(from, "launch", result).await
    }

    async fn fence(
        &self,
        request: Request<v1::FenceRequest>,
    ) -> Result<Response<v1::FenceReply>, Status> {
        let from = request.remote_addr();
        let result = self.agent.fence(request.into_inner()).await;
        self.answer(from, "fence", result).await
    }

    async fn output(
        &self,
        request: Request<v1::OutputRequest>,
    ) -> Result<Response<v1::OutputReply>, Status> {
        let from = request.remote_addr();
        let result = self.agent.output(request.into_inner()).await;
        self.answer(from, "output", result).await
    }
}

impl<L: Launcher> LaunchService<L> {
    /// The answer to a request (a launch, a fence, output): a refusal is logged, as a warning
    /// unless the run is not known here yet (the other node asks again); a wrong credential is
    /// answered only after a delay that grows with the peer's failures.
    async fn answer<T>(
        &self,
        from: Option<SocketAddr>,
        what: &str,
        result: Result<T, LaunchRefusal>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(reply) => Ok(Response::new(reply)),
            Err(refusal) => {
                match refusal {
                    LaunchRefusal::NotHere(_) => {
                        tracing::debug!(?from, %refusal, "{what} of a run not known here yet");
                    }
                    LaunchRefusal::BadCredential(_) => {
                        self.failures.slow_down(from, what, &refusal).await;
                    }
                    _ => tracing::warn!(?from, %refusal, "{what} refused"),
                }
                Err(status(refusal))
            }
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
        .add_service(AgentLaunchServer::new(LaunchService {
            agent,
            failures: CredentialFailures::default(),
        }))
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
    fn a_peer_that_keeps_failing_waits_longer_each_time_and_is_forgiven_later() {
        let failures = CredentialFailures::default();
        let (peer, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        let delays: Vec<_> = (0..8).map(|_| failures.record(peer, start).1).collect();
        assert_eq!(delays[0], FIRST_FAILURE_DELAY);
        assert_eq!(delays[1], FIRST_FAILURE_DELAY * 2);
        assert_eq!(delays[7], MAX_FAILURE_DELAY);
        // Another peer is not punished for the first one's failures.
        assert_eq!(failures.record(other, start), (1, FIRST_FAILURE_DELAY));
        // A minute later the first peer starts again from the first delay.
        let later = start + FAILURE_MEMORY;
        assert_eq!(failures.record(peer, later), (1, FIRST_FAILURE_DELAY));
    }

    #[test]
    fn remembered_peers_are_bounded() {
        let failures = CredentialFailures::default();
        let now = Instant::now();
        for i in 0..(MAX_REMEMBERED_PEERS as u32 + 10) {
            failures.record(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(failures.peers.lock().unwrap().len() <= MAX_REMEMBERED_PEERS);
    }

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
