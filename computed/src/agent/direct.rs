//! Direct MPI launch: this node's ranks of an Open MPI job, started by the agent as plain tasks
//! and wired up by the node's PMIx server, as `srun --mpi=pmix` does — no `mpirun`, no daemon.
//!
//! ```text
//!  assignment (mpi.direct) ─▶ register the run's namespace with the PMIx server
//!        ─▶ start the ranks (PMIx's environment + the fabric's OMPI_MCA_* settings)
//!
//!  every local rank at a fence ─▶ PMIx fence_nb ─▶ Fence(sequence, data) to the job's first
//!        node with ranks ─▶ it answers every node with all nodes' data once all contributed
//!        ─▶ the local ranks go on
//!
//!  a rank exits non-zero or calls MPI_Abort ─▶ the run's other ranks here are killed; the
//!        head ends the job and the other nodes kill theirs
//! ```

use super::wired::DirectError;
use super::{Agent, LaunchPeer, LaunchRefusal, kill};
use crate::assignment::{Assignment, MpiLaunch};
use crate::mpi;
use crate::pmix::{FenceRequest, JobMap, PmixError, PmixEvent, PmixServer, nspace_of};
use crate::tls::TlsError;
use beowulf_proto::v1;
use beowulf_types::{JobId, NodeName, RunKey};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a node keeps asking the first node for a fence it does not know yet: the head sends
/// a job's desired state to every agent at once, but one may act on it some milliseconds later.
const FENCE_NOT_YET_KNOWN_FOR: Duration = Duration::from_secs(10);
const FENCE_RETRY: Duration = Duration::from_millis(20);
/// After MPI_Abort, the time the aborting rank has to exit with its own code before the agent
/// kills the run (Open MPI exits at once once the server has answered).
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// Why this node's part of a fence got no answer (the ranks here see an error).
#[derive(Debug, thiserror::Error)]
enum FenceError {
    /// This node gathers the fence, and refused its own part.
    #[error(transparent)]
    Here(#[from] LaunchRefusal),
    #[error(transparent)]
    TlsFiles(#[from] TlsError),
    #[error(transparent)]
    Connect(#[from] mpi::ConnectError),
    #[error("{node} refused fence {sequence} of job {run}: {message}")]
    Refused {
        node: String,
        run: RunKey,
        sequence: u32,
        message: String,
    },
}

/// Fences being gathered on this node for the jobs it is the first node of.
#[derive(Debug, Default)]
pub(super) struct FenceBoard {
    rounds: BTreeMap<(RunKey, u32), Round>,
}

#[derive(Debug, Default)]
struct Round {
    /// Node index → that node's data.
    data: BTreeMap<u32, Vec<u8>>,
    waiting: Vec<oneshot::Sender<Arc<Vec<u8>>>>,
}

impl FenceBoard {
    /// Adds one node's part; when all `nodes` have given theirs, answers every waiter.
    fn contribute(
        &mut self,
        key: RunKey,
        sequence: u32,
        node: u32,
        data: Vec<u8>,
        nodes: usize,
    ) -> oneshot::Receiver<Arc<Vec<u8>>> {
        let (tx, rx) = oneshot::channel();
        let round = self.rounds.entry((key, sequence)).or_default();
        round.data.insert(node, data);
        round.waiting.push(tx);
        if round.data.len() >= nodes {
            let round = self.rounds.remove(&(key, sequence)).expect("just used");
            let all = Arc::new(round.data.into_values().flatten().collect::<Vec<u8>>());
            for waiter in round.waiting {
                let _ = waiter.send(Arc::clone(&all));
            }
        }
        rx
    }

    /// Drops a run's fences (it ended): their waiters get an error.
    pub(super) fn forget(&mut self, key: RunKey) {
        self.rounds.retain(|(k, _), _| *k != key);
    }
}

/// The nodes of a job that run ranks, with their counts, in nodelist order.
fn nodes_with_ranks(a: &Assignment, launch: &MpiLaunch) -> Vec<(u32, NodeName, u32)> {
    a.nodelist
        .iter()
        .zip(&launch.tasks_per_node)
        .enumerate()
        .filter(|(_, (_, tasks))| **tasks > 0)
        .map(|(index, (node, tasks))| (index as u32, node.clone(), *tasks))
        .collect()
}

/// Parses [`nspace_of`] back.
fn run_of(nspace: &str) -> Option<RunKey> {
    let rest = nspace.strip_prefix("beowulf.")?;
    let (job, run) = rest.split_once('.')?;
    Some(RunKey {
        job: JobId(job.parse().ok()?),
        run: run.parse().ok()?,
    })
}

impl<L: crate::launcher::Launcher> Agent<L> {
    /// Hands the agent the node's PMIx server (or why there is none) and its events.
    pub fn set_pmix(
        self: &Arc<Self>,
        server: Result<(&'static PmixServer, mpsc::UnboundedReceiver<PmixEvent>), PmixError>,
    ) {
        match server {
            Ok((server, mut events)) => {
                let _ = self.pmix.set(Ok(server));
                let agent = Arc::downgrade(self);
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        let Some(agent) = agent.upgrade() else { return };
                        agent.on_pmix_event(event);
                    }
                });
            }
            Err(why) => {
                tracing::warn!(%why, "no PMIx server: Open MPI jobs cannot start here");
                let _ = self.pmix.set(Err(Arc::new(why)));
            }
        }
    }

    pub(super) fn pmix_server(&self) -> Result<&'static PmixServer, DirectError> {
        let node = self.config.node_name.clone();
        match self.pmix.get() {
            Some(Ok(server)) => Ok(server),
            Some(Err(why)) => Err(DirectError::PmixFailed {
                node,
                source: Arc::clone(why),
            }),
            None => Err(DirectError::NoPmixServer { node }),
        }
    }

    /// Registers the run's namespace with this node's PMIx server (before its ranks start).
    pub(super) fn register_direct(
        &self,
        key: RunKey,
        a: &Assignment,
        launch: &MpiLaunch,
        tmpdir: String,
    ) -> Result<(), DirectError> {
        let server = self.pmix_server()?;
        let nodes = nodes_with_ranks(a, launch);
        let node_index = nodes
            .iter()
            .position(|(index, _, _)| *index == a.node_index)
            .ok_or_else(|| DirectError::NoRanks {
                node: self.config.node_name.clone(),
                run: key,
            })?;
        let map = JobMap {
            nspace: nspace_of(key),
            job_id: key.job.0.to_string(),
            tmpdir,
            nodes: nodes.into_iter().map(|(_, n, t)| (n.0, t)).collect(),
            node_index: node_index as u32,
            uid: a.uid,
            gid: a.gid,
        };
        let given = a.ranks.clone();
        let mapped = map.ranks_of(node_index);
        if mapped != given {
            return Err(DirectError::RankMismatch {
                node: self.config.node_name.clone(),
                run: key,
                given,
                mapped,
            });
        }
        server
            .register(&map)
            .map_err(|source| DirectError::Register { run: key, source })?;
        self.lock().wired.entry(key).or_default().pmix_registered = true;
        Ok(())
    }

    /// The environment of rank `rank` of a direct run, beside the task's own.
    pub(super) fn direct_env(
        &self,
        key: RunKey,
        launch: &MpiLaunch,
        rank: u32,
        ib_device: Option<&str>,
    ) -> Result<Vec<(String, String)>, DirectError> {
        let server = self.pmix_server()?;
        let mut env = mpi::direct_env(launch, self.config.mpi_tcp_include.as_deref(), ib_device);
        env.extend(server.fork_env(&nspace_of(key), rank).map_err(|source| {
            DirectError::RankEnv {
                task: key.task(rank),
                source,
            }
        })?);
        Ok(env)
    }

    /// Forgets a run's namespace and fences (it ended here).
    pub(super) fn forget_direct(&self, key: RunKey, registered: bool) {
        self.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(key);
        // Deregistration waits on libpmix's thread: not here, under the agent's lock.
        if registered && let Ok(server) = self.pmix_server() {
            let nspace = nspace_of(key);
            std::thread::spawn(move || server.deregister(&nspace));
        }
    }

    fn on_pmix_event(self: Arc<Self>, event: PmixEvent) {
        match event {
            PmixEvent::Fence(request) => {
                tokio::spawn(async move { self.local_fence(request).await });
            }
            PmixEvent::Abort {
                nspace,
                rank,
                status,
                message,
            } => {
                let Some(key) = run_of(&nspace) else { return };
                tracing::warn!(job = %key.job, run = key.run, rank, status, %message, "a rank called MPI_Abort: ending the run");
                self.set_cause(key, rank);
                let agent = Arc::clone(&self);
                tokio::spawn(async move {
                    tokio::time::sleep(ABORT_GRACE).await;
                    if agent.launcher.job_alive(key) {
                        kill(&*agent.launcher, key);
                    }
                });
            }
        }
    }

    /// Records the first rank whose end ends the run here (its exit code becomes the run's).
    pub(super) fn set_cause(&self, key: RunKey, rank: u32) {
        let mut state = self.lock();
        if let Some(entry) = state.ledger.data.runs.get_mut(&key)
            && entry.cause.is_none()
        {
            entry.cause = Some(rank);
        }
    }

    /// Every local rank of a run reached a fence: gathers all nodes' parts through the job's
    /// first node and releases the ranks with them.
    async fn local_fence(self: Arc<Self>, request: FenceRequest) {
        let Some(key) = run_of(&request.nspace) else {
            tracing::warn!(nspace = %request.nspace, "fence of an unknown namespace");
            return;
        };
        let found = {
            let mut state = self.lock();
            let a = state.desired.get(&key).cloned();
            let sequence = state.wired.get_mut(&key).map(|run| {
                run.fences += 1;
                run.fences - 1
            });
            a.zip(sequence)
        };
        let Some((a, sequence)) = found else {
            tracing::warn!(job = %key.job, run = key.run, "fence of a run that is not running here");
            return;
        };
        let Some(launch) = a.mpi.clone() else { return };
        let nodes = nodes_with_ranks(&a, &launch);
        let Some((first, first_node, _)) = nodes.first().cloned() else {
            return;
        };
        let fence = v1::FenceRequest {
            job_id: key.job.0,
            run: key.run,
            token: launch.token.clone(),
            node_index: a.node_index,
            sequence,
            data: request.data.clone(),
        };
        let started = std::time::Instant::now();
        let result = if first == a.node_index {
            let here = LaunchPeer::Node(vec![self.config.node_name.clone()]);
            self.fence(&here, fence).await.map_err(FenceError::from)
        } else {
            let endpoint = launch
                .endpoints
                .get(&first_node)
                .cloned()
                .unwrap_or_default();
            match self.launch_client_tls() {
                Ok(tls) => send_fence(&endpoint, first_node.as_str(), tls.as_ref(), fence).await,
                Err(e) => Err(e.into()),
            }
        };
        tracing::debug!(job = %key.job, run = key.run, sequence, took = ?started.elapsed(), ok = result.is_ok(), "fence");
        match result {
            Ok(reply) => request.complete(Ok(&reply.data)),
            Err(e) => {
                tracing::warn!(job = %key.job, run = key.run, sequence, error = %e, "fence failed: the ranks here see an error");
                request.complete(Err(()));
            }
        }
    }

    /// One node's part of a fence of a job this node is the first node of (AgentLaunch): answers
    /// once every node with ranks has given its part.
    pub async fn fence(
        &self,
        peer: &LaunchPeer,
        request: v1::FenceRequest,
    ) -> Result<v1::FenceReply, LaunchRefusal> {
        // Each node gives its own part of a fence: a node may not speak for another.
        let (key, a, launch) = self
            .wait_for_run(|| {
                self.mpi_run(
                    request.run_key(),
                    &request.token,
                    peer,
                    Some(request.node_index),
                )
            })
            .await?;
        let nodes = nodes_with_ranks(&a, &launch).len();
        let rx = self
            .fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contribute(
                key,
                request.sequence,
                request.node_index,
                request.data,
                nodes,
            );
        let all = rx.await.map_err(|_| {
            LaunchRefusal::Failed(format!(
                "job {key} ended before fence {} completed",
                request.sequence
            ))
        })?;
        Ok(v1::FenceReply {
            data: all.as_ref().clone(),
        })
    }
}

/// Sends this node's part of a fence to the job's first node and waits for everyone's.
async fn send_fence(
    endpoint: &str,
    node: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
    request: v1::FenceRequest,
) -> Result<v1::FenceReply, FenceError> {
    let mut client = mpi::connect_launch(endpoint, node, tls).await?;
    let deadline = tokio::time::Instant::now() + FENCE_NOT_YET_KNOWN_FOR;
    loop {
        match client.fence(request.clone()).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if status.code() == tonic::Code::NotFound
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(%node, message = status.message(), "fence not known there yet: asking again");
                tokio::time::sleep(FENCE_RETRY).await;
            }
            Err(status) => {
                return Err(FenceError::Refused {
                    node: node.to_string(),
                    run: request.run_key(),
                    sequence: request.sequence,
                    message: status.message().to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RunKey {
        RunKey {
            job: JobId(4),
            run: 1,
        }
    }

    #[test]
    fn a_fence_answers_everyone_with_all_parts_in_node_order_once_all_came() {
        let mut board = FenceBoard::default();
        let mut second = board.contribute(key(), 0, 2, b"cc".to_vec(), 3);
        let mut first = board.contribute(key(), 0, 0, b"a".to_vec(), 3);
        assert!(first.try_recv().is_err(), "answered before every node came");
        // Another fence of the same run does not mix in.
        let _other = board.contribute(key(), 1, 0, b"zz".to_vec(), 3);
        let mut third = board.contribute(key(), 0, 1, b"b".to_vec(), 3);
        for rx in [&mut first, &mut second, &mut third] {
            assert_eq!(rx.try_recv().unwrap().as_slice(), b"abcc");
        }
        board.forget(key());
        assert!(board.rounds.is_empty());
    }

    #[test]
    fn a_rank_map_that_disagrees_with_the_head_names_both() {
        let error = DirectError::RankMismatch {
            node: "node2".into(),
            run: key(),
            given: 0..2,
            mapped: 2..4,
        };
        assert_eq!(
            error.to_string(),
            "the head gave node2 ranks 0..2 of job 4.1, but the job's rank map puts 2..4 here"
        );
    }

    #[test]
    fn namespaces_name_their_run() {
        assert_eq!(run_of(&nspace_of(key())), Some(key()));
        assert_eq!(run_of("other.4.1"), None);
    }
}
