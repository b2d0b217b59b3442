//! The agent's MPI launch service (AgentLaunch over gRPC), on two sockets:
//!
//! ```text
//!   beowulf-rsh (the job's user) ──unix socket, peer uid──▶ this node's agent ─┐ checks uid,
//!                                                                             │ credential, node
//!   other nodes' agents ──TCP, mutual TLS (node certificates)──▶ agent ◀──────┘ forwards
//! ```
//!
//! - **Between agents** (TCP, mutual TLS with the certificates the cluster CA gave each node):
//!   the launch of an MPI daemon that a job's `mpirun` asked its own node's agent for, the parts
//!   of directly launched ranks' fences, and the output of jobs whose tasks write on several
//!   nodes. A request names its run and carries the run's credential; the certificate must name
//!   a node of that run (for fences and output, the node the request speaks for).
//! - **From the node's own jobs** (the local unix socket, mode 0666): `beowulf-rsh`, the remote
//!   launcher of a job's `mpirun`, asks for a daemon on one of the job's nodes. The agent checks
//!   the caller's uid (the run's user, or root) and the credential, then starts the daemon here
//!   or forwards the request to the named node's agent. No user process ever talks to another
//!   node's agent, and no user holds a node's key.
//!
//! Without `[tls]` in computed.toml (a test cluster) the TCP service is plaintext and checks only
//! the credential.

use crate::agent::{Agent, LaunchPeer, LaunchRefusal, StepEvents};
use crate::launcher::Launcher;
use crate::tls::TlsError;
use beowulf_proto::peer::certificate_names;
use beowulf_proto::v1::{
    self,
    agent_launch_server::{AgentLaunch, AgentLaunchServer},
};
use beowulf_types::config::TlsFiles;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

pub struct LaunchService<L: Launcher> {
    agent: Arc<Agent<L>>,
    failures: CredentialFailures,
    /// Whether connections are mutual TLS (peers are then known by their certificates).
    tls: bool,
}

/// First delay of an answer to a peer whose credential was wrong; it doubles with each further
/// failure. A right credential is never delayed, and 128-bit credentials are not guessable at any
/// rate: this only makes a guessing peer slow and loud (the issue's attack ran 40 guesses in 0.2 s).
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

    /// Logs a refused credential of `peer` (shown as `shown`) at WARN and waits before the
    /// refusal is answered.
    async fn slow_down_peer(&self, shown: &str, peer: IpAddr, what: &str, refusal: &LaunchRefusal) {
        let (count, delay) = self.record(peer, Instant::now());
        tracing::warn!(
            peer = %shown,
            failures = count,
            delay_ms = delay.as_millis() as u64,
            %refusal,
            "{what} refused: wrong credential or not the run's"
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
        let peer = self.peer(&request);
        let result = self.agent.launch(&peer, request.into_inner()).await;
        self.answer(from, "launch", result).await
    }

    async fn fence(
        &self,
        request: Request<v1::FenceRequest>,
    ) -> Result<Response<v1::FenceReply>, Status> {
        let from = request.remote_addr();
        let peer = self.peer(&request);
        let result = self.agent.fence(&peer, request.into_inner()).await;
        self.answer(from, "fence", result).await
    }

    async fn output(
        &self,
        request: Request<v1::OutputRequest>,
    ) -> Result<Response<v1::OutputReply>, Status> {
        let from = request.remote_addr();
        let peer = self.peer(&request);
        let result = self.agent.output(&peer, request.into_inner()).await;
        self.answer(from, "output", result).await
    }

    type StepStream = StepEvents;

    async fn step(
        &self,
        request: Request<Streaming<v1::StepInput>>,
    ) -> Result<Response<StepEvents>, Status> {
        let from = request.remote_addr();
        let peer = self.peer(&request);
        let mut inputs = request.into_inner();
        let start = first_step_request(&mut inputs).await?;
        // A step for no node in particular comes from outside the job's nodes, relayed by the
        // head: this agent (the job's first node's) runs it as srun's own node would.
        let result = if start.node.is_empty()
            && matches!(peer, LaunchPeer::Head | LaunchPeer::Unauthenticated)
        {
            self.agent.step_from_here(peer, start, inputs).await
        } else {
            self.agent.step_for_node(&peer, start, inputs).await
        };
        self.answer(from, "step", result).await
    }
}

/// The launch service on the node's local socket: `beowulf-rsh` of the node's own jobs.
pub struct LocalLaunchService<L: Launcher> {
    agent: Arc<Agent<L>>,
    failures: CredentialFailures,
}

impl<L: Launcher> std::fmt::Debug for LocalLaunchService<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLaunchService").finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<L: Launcher> AgentLaunch for LocalLaunchService<L> {
    async fn launch(
        &self,
        request: Request<v1::LaunchRequest>,
    ) -> Result<Response<v1::LaunchReply>, Status> {
        let uid = caller_uid(&request)?;
        let result = self.agent.launch_from_here(uid, request.into_inner()).await;
        self.local_answer(uid, "launch", result).await
    }

    type StepStream = StepEvents;

    async fn step(
        &self,
        request: Request<Streaming<v1::StepInput>>,
    ) -> Result<Response<StepEvents>, Status> {
        let uid = caller_uid(&request)?;
        let mut inputs = request.into_inner();
        let start = first_step_request(&mut inputs).await?;
        let result = self
            .agent
            .step_from_here(LaunchPeer::Local { uid }, start, inputs)
            .await;
        self.local_answer(uid, "step", result).await
    }

    async fn fence(
        &self,
        _request: Request<v1::FenceRequest>,
    ) -> Result<Response<v1::FenceReply>, Status> {
        Err(Status::unimplemented(
            "fences are taken from other nodes' agents only",
        ))
    }

    async fn output(
        &self,
        _request: Request<v1::OutputRequest>,
    ) -> Result<Response<v1::OutputReply>, Status> {
        Err(Status::unimplemented(
            "output is taken from other nodes' agents only",
        ))
    }
}

impl<L: Launcher> LocalLaunchService<L> {
    /// The answer to a local request: a wrong credential or another user's run is answered only
    /// after a delay that grows with the caller's failures.
    async fn local_answer<T>(
        &self,
        uid: u32,
        what: &str,
        result: Result<T, LaunchRefusal>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(reply) => Ok(Response::new(reply)),
            Err(refusal) => {
                if matches!(
                    refusal,
                    LaunchRefusal::BadCredential(_) | LaunchRefusal::NotAllowed(_)
                ) {
                    // Local callers are told apart by uid (they share no address).
                    let peer = IpAddr::from(uid.to_be_bytes());
                    self.failures
                        .slow_down_peer(
                            &format!("uid {uid}"),
                            peer,
                            &format!("local {what}"),
                            &refusal,
                        )
                        .await;
                } else {
                    tracing::warn!(uid, %refusal, "local {what} refused");
                }
                Err(status(refusal))
            }
        }
    }
}

/// The uid of the process at the other end of a local-socket request.
fn caller_uid<T>(request: &Request<T>) -> Result<u32, Status> {
    request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
        .ok_or_else(|| Status::unauthenticated("the caller's uid is unknown"))
}

/// The step a Step stream starts with (its first input must be one).
async fn first_step_request(
    inputs: &mut Streaming<v1::StepInput>,
) -> Result<v1::StepRequest, Status> {
    match inputs.message().await? {
        Some(v1::StepInput {
            body: Some(v1::step_input::Body::Start(request)),
        }) => Ok(request),
        _ => Err(Status::invalid_argument(
            "a step stream must start with the step's request",
        )),
    }
}

impl<L: Launcher> LaunchService<L> {
    /// Who sent `request`: the node names of its TLS certificate (signed by the cluster CA, or
    /// the handshake would have failed), or unauthenticated on a plaintext service.
    fn peer<T>(&self, request: &Request<T>) -> LaunchPeer {
        if !self.tls {
            return LaunchPeer::Unauthenticated;
        }
        let names = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| certificate_names(c.as_ref())))
            .unwrap_or_default();
        if names.iter().any(|n| n == beowulf_types::HEAD_TLS_NAME) {
            return LaunchPeer::Head;
        }
        LaunchPeer::Node(names)
    }

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
                    LaunchRefusal::BadCredential(_) | LaunchRefusal::NotAllowed(_) => {
                        let peer = from.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                        self.failures
                            .slow_down_peer(&peer.to_string(), peer, what, &refusal)
                            .await;
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
        LaunchRefusal::BadCredential(m) | LaunchRefusal::NotAllowed(m) => {
            Status::permission_denied(m)
        }
        LaunchRefusal::Invalid(m) => Status::invalid_argument(m),
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

/// The server side of mutual TLS between agents: this node's certificate, and only clients with
/// a certificate of the cluster CA.
pub fn server_tls(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
    let pem = crate::tls::read(files)?;
    Ok(tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(pem.cert, pem.key))
        .client_ca_root(tonic::transport::Certificate::from_pem(pem.ca)))
}

/// Serves `beowulf-rsh` of this node's jobs on the unix socket `path` (replacing a stale one,
/// mode 0666: the agent knows each caller by its uid) until the process ends.
pub fn bind_local(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves local launch requests on `listener` until the process ends.
pub async fn serve_local<L: Launcher>(agent: Arc<Agent<L>>, listener: UnixListener) {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .add_service(AgentLaunchServer::new(LocalLaunchService {
            agent,
            failures: CredentialFailures::default(),
        }))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the local launch service stopped");
    }
}

/// Serves launch requests of other nodes' agents on `listener` (mutual TLS when `tls` is given)
/// until the process ends.
pub async fn serve<L: Launcher>(
    agent: Arc<Agent<L>>,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
) {
    // TCP_NODELAY: a fence answer is a few small HTTP/2 frames; with Nagle the last one waited
    // for the peer's delayed ACK — on a machine busy with spinning ranks, for seconds (measured).
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        stream.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY on a launch connection");
            }
        })
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = match builder.tls_config(tls.clone()) {
            Ok(builder) => builder,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up TLS for the MPI launch service");
                return;
            }
        };
    }
    let result = builder
        .add_service(AgentLaunchServer::new(LaunchService {
            agent,
            failures: CredentialFailures::default(),
            tls: tls.is_some(),
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
