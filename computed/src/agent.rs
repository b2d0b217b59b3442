//! The agent: keeps one session with the head, applies desired state through the launcher, and
//! reports how runs end.
//!
//! ```text
//!  start ─▶ load ledger, kill what an earlier agent left running (reported as lost)
//!    │
//!    ▼
//!  connect ─▶ Register(inventory, every run in the ledger) ─▶ heartbeats every interval
//!    ▲            │
//!    │            ▼ DesiredState(generation) ── older than the ledger's? ignore
//!    │          assignments off the wire (`assignment`) ── one refused? end the session
//!    │          reconcile(desired, ledger) ─▶ Start / Kill / Forget   (ledger saved before acting)
//!    │            │
//!    │            ▼ task exits ─▶ ledger ─▶ RunReport when a run's last task ended
//!    └── stream broken: back off, reconnect (tasks keep running meanwhile)
//! ```

mod direct;
mod output;
mod signals;
mod steps;
mod terminal;
mod wired;

pub use steps::StepEvents;
pub use wired::{LaunchPeer, LaunchRefusal};

use crate::assignment::{Assignment, AssignmentError};
use crate::config::{AgentConfig, HeadAddressError};
use crate::container::ImageCache;
use crate::launcher::{JobLimits, LaunchError, Launcher, TaskExit, TaskLaunch, TaskOutput};
use crate::ledger::{Ledger, LedgerError, RunEntry, TaskEnd};
use crate::mpi;
use crate::pmix::{PmixError, PmixServer};
use crate::reconcile::{Action, reconcile};
use crate::tls::TlsError;
use beowulf_proto::v1::{self, agent_hub_client::AgentHubClient, agent_message::Body};
use beowulf_types::{Generation, Inventory, RunKey, TaskKey};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a session with the head ended or never began.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The head is not there (yet): routine while it restarts.
    #[error(transparent)]
    Unreachable(#[from] HeadUnreachable),
    /// The head answered and said no (a wrong certificate, another node's name): needs the admin.
    #[error("the head refused the session: {0}")]
    Refused(tonic::Status),
    /// An established session failed (an undecodable message, a reset stream).
    #[error("the session with the head broke: {0}")]
    Broke(tonic::Status),
    /// The head left out a run's argv and environment as already sent, and this agent does not
    /// have them: a new session carries the whole state.
    #[error(
        "the head left out the argv and environment of job {} run {}, which this agent never received; reconnecting for the whole desired state",
        run.job,
        run.run
    )]
    MissingPayload { run: RunKey },
    /// The head sent an assignment the agent cannot carry out as given (see
    /// [`crate::assignment`]): nothing of that desired state is applied, and a new session
    /// carries the whole state again.
    #[error("refusing the head's desired state: {0}; reconnecting for the whole desired state")]
    BadAssignment(#[from] AssignmentError),
}

/// Why the head could not be reached: routine while it restarts (or a local problem: its address
/// file, this node's TLS files).
#[derive(Debug, thiserror::Error)]
enum HeadUnreachable {
    #[error(transparent)]
    Address(#[from] HeadAddressError),
    #[error("invalid head address {address}: {source}")]
    BadAddress {
        address: String,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    TlsFiles(#[from] TlsError),
    #[error("cannot set up TLS to the head at {address}: {source}")]
    Tls {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the head at {address}: {source}")]
    Connect {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("the session channel to the head at {address} closed before registering")]
    ChannelClosed { address: String },
}

/// Reconnect back-off: start fast (a head restart takes well under a second), cap low enough that a
/// returning head sees every agent within a couple of seconds.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Detects this node's inventory now (`None` when detection failed).
pub struct Redetect(pub Box<dyn Fn() -> Option<Inventory> + Send + Sync>);

impl std::fmt::Debug for Redetect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redetect")
    }
}

/// Heartbeats between two inventory detections: a port that goes down shows within ~5 s at the
/// default 1 s heartbeat, for a few sysfs reads.
const REDETECT_EVERY: u64 = 5;

/// How long a request of another node waits for a run to start here: far longer than the
/// milliseconds between two agents acting on the same desired state, short enough that a node
/// asking about a run that ended here long ago hears so soon.
const WAIT_FOR_RUN: Duration = Duration::from_secs(2);

/// PATH for tasks whose submit environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long the agent keeps killing a run's leftover processes before it reports the run's end
/// anyway: Slurm's `UnkillableStepTimeout` default. A process in uninterruptible sleep (a hung NFS
/// server) dies only when its I/O returns; until then the node must not look free.
const UNKILLABLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two rounds of killing a run's leftovers.
const LEFTOVER_RETRY: Duration = Duration::from_millis(50);

/// The bulky part of an assignment, which the head sends once per session and run.
#[derive(Debug, Clone)]
struct RunPayload {
    argv: Vec<String>,
    env: std::collections::HashMap<String, String>,
}

/// Fills in the argv and environment of the assignments that leave them out from `kept` (on the
/// wire, before the assignments are converted: an [`Assignment`] always has them), and keeps
/// those of every run of `desired` (older generations included: they carry payloads the head
/// will not send again); `Err` names a run whose payload this agent never received.
fn fill_payloads(
    desired: &mut v1::DesiredState,
    kept: &mut BTreeMap<RunKey, RunPayload>,
) -> Result<(), SessionError> {
    let mut now = BTreeMap::new();
    for a in &mut desired.assignments {
        let key = a.run_key();
        let payload = if a.payload_omitted {
            // Moved, not copied: what is not carried over is dropped below.
            let payload = kept
                .remove(&key)
                .ok_or(SessionError::MissingPayload { run: key })?;
            a.argv.clone_from(&payload.argv);
            a.env.clone_from(&payload.env);
            a.payload_omitted = false;
            payload
        } else {
            RunPayload {
                argv: a.argv.clone(),
                env: a.env.clone(),
            }
        };
        now.insert(key, payload);
    }
    *kept = now;
    Ok(())
}

#[derive(Debug)]
struct State {
    ledger: Ledger,
    desired: BTreeMap<RunKey, Assignment>,
    /// Each desired run's argv and environment, for desired states that leave them out
    /// (`v1::Assignment.payload_omitted`); kept for the runs of the last desired state received.
    payloads: BTreeMap<RunKey, RunPayload>,
    outgoing: Option<mpsc::UnboundedSender<v1::AgentMessage>>,
    /// Container and MPI runs: their containers and phase times (memory only).
    wired: BTreeMap<RunKey, wired::WiredRun>,
    /// Runs whose output this node forwards to their writer: true once all of it was written.
    forwarding: BTreeMap<RunKey, tokio::sync::watch::Receiver<bool>>,
    /// Runs told to stop (SIGTERM) and not yet killed: their `kill_wait_ms` is running.
    terminating: BTreeSet<RunKey>,
    /// Batch-script runs whose srun asked this node for job steps: the next step's number.
    next_step: BTreeMap<RunKey, u32>,
    /// Job step tasks started here so far (they name log lines).
    step_tasks: u32,
    /// The running tasks of job steps here, by run (for `--signal`).
    step_tasks_running: BTreeMap<RunKey, BTreeMap<TaskKey, u32>>,
    /// The batch shell of each batch-script run whose script runs here (for `--signal=B:`).
    batch_tasks: BTreeMap<RunKey, (TaskKey, u32)>,
    /// Per run, the last user signal (`scancel --signal`) delivered here.
    signals_delivered: BTreeMap<RunKey, u32>,
}

#[derive(Debug)]
pub struct Agent<L: Launcher> {
    config: AgentConfig,
    /// What the node has, as last told to the head.
    inventory: Mutex<Inventory>,
    /// Detects the inventory again (InfiniBand ports go down and up); set by the binary.
    redetect: Mutex<Option<Arc<Redetect>>>,
    launcher: Arc<L>,
    state: Mutex<State>,
    exits: mpsc::UnboundedSender<TaskExit>,
    images: ImageCache,
    /// Where this agent serves MPI launches (`host:port`), once the service listens.
    launch_endpoint: Mutex<String>,
    /// TLS for requests to other nodes' launch services (`None`: plaintext), made once from the
    /// `[tls]` files.
    launch_tls: std::sync::OnceLock<Option<tonic::transport::ClientTlsConfig>>,
    /// The node's PMIx server for direct MPI launch (or why there is none); set by the binary.
    pmix: std::sync::OnceLock<Result<&'static PmixServer, Arc<PmixError>>>,
    /// Fences gathered here for direct MPI runs whose first node this is.
    fences: Mutex<direct::FenceBoard>,
    /// Runs whose output files this node writes for the other nodes.
    outputs: Mutex<BTreeMap<RunKey, Arc<output::WriterRun>>>,
    /// Woken after each desired state is applied: requests of other nodes for a run this node
    /// has not started yet wait on it (see [`Agent::wait_for_run`]).
    runs_changed: tokio::sync::Notify,
    /// This agent, for the tasks it spawns (container runs stage images asynchronously).
    me: Weak<Agent<L>>,
    /// The node's GPUs and the runs holding them.
    gpus: Mutex<crate::gpus::GpuBoard>,
}

impl<L: Launcher> Agent<L> {
    /// Opens the ledger and deals with runs an earlier agent process left behind.
    pub fn start(
        config: AgentConfig,
        inventory: Inventory,
        launcher: L,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<TaskExit>), LedgerError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| LedgerError::Write {
            path: config.state_dir.clone(),
            source,
        })?;
        let mut ledger = Ledger::open(&ledger_path(&config))?;
        let known: BTreeSet<RunKey> = ledger.data.runs.keys().copied().collect();
        for entry in ledger.data.runs.values_mut().filter(|e| !e.finished()) {
            tracing::warn!(job = %entry.key.job, run = entry.key.run, "killing a run left by an earlier agent");
            kill(&launcher, entry.key);
            entry.lost = true;
        }
        for key in launcher.leftover_jobs() {
            if !known.contains(&key) {
                kill(&launcher, key);
                if let Err(e) = launcher.release_job(key) {
                    tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot release a leftover cgroup");
                }
            }
        }
        ledger.save()?;
        let (exits, exit_rx) = mpsc::unbounded_channel();
        let images = ImageCache::new(
            config
                .image_cache
                .clone()
                .unwrap_or_else(|| config.state_dir.join("images")),
        );
        let gpus = crate::gpus::GpuBoard::new(node_gpus(&config));
        let agent = Arc::new_cyclic(|me| Agent {
            config,
            inventory: Mutex::new(inventory),
            redetect: Mutex::new(None),
            launcher: Arc::new(launcher),
            state: Mutex::new(State {
                ledger,
                desired: BTreeMap::new(),
                payloads: BTreeMap::new(),
                outgoing: None,
                wired: BTreeMap::new(),
                forwarding: BTreeMap::new(),
                terminating: BTreeSet::new(),
                next_step: BTreeMap::new(),
                step_tasks: 0,
                step_tasks_running: BTreeMap::new(),
                batch_tasks: BTreeMap::new(),
                signals_delivered: BTreeMap::new(),
            }),
            exits,
            images,
            launch_endpoint: Mutex::new(String::new()),
            launch_tls: std::sync::OnceLock::new(),
            pmix: std::sync::OnceLock::new(),
            fences: Mutex::new(direct::FenceBoard::default()),
            outputs: Mutex::new(BTreeMap::new()),
            runs_changed: tokio::sync::Notify::new(),
            me: me.clone(),
            gpus: Mutex::new(gpus),
        });
        Ok((agent, exit_rx))
    }

    /// Stops every run still going on this node (the agent is shutting down, and a new agent
    /// process cannot adopt them). Their ends are reported as lost at the next registration.
    /// Stops every run (`stop_all`), then lets the launcher release what it holds on the host.
    pub fn shut_down(&self) {
        self.stop_all();
        self.launcher.shut_down();
    }

    pub fn stop_all(&self) {
        let mut state = self.lock();
        for entry in state
            .ledger
            .data
            .runs
            .values_mut()
            .filter(|e| !e.finished())
        {
            tracing::info!(job = %entry.key.job, run = entry.key.run, "stopping run: agent shutting down");
            kill(&*self.launcher, entry.key);
            entry.lost = true;
        }
        if let Err(e) = state.ledger.save() {
            tracing::error!(error = %e, "cannot save the ledger");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs forever: follows task exits and keeps a session with the head.
    pub async fn run(self: Arc<Self>, mut exit_rx: mpsc::UnboundedReceiver<TaskExit>) {
        let agent = self.clone();
        tokio::spawn(async move {
            while let Some(exit) = exit_rx.recv().await {
                agent.on_task_exit(exit);
            }
        });
        let mut backoff = RECONNECT_MIN;
        loop {
            match self.session().await {
                Ok(()) => {
                    tracing::warn!("head closed the session; reconnecting");
                    backoff = RECONNECT_MIN;
                }
                // A refusal (wrong certificate, wrong name) needs the admin; an unreachable head
                // is routine while it restarts.
                Err(
                    e @ (SessionError::Refused(_)
                    | SessionError::Broke(_)
                    | SessionError::MissingPayload { .. }
                    | SessionError::BadAssignment(_)),
                ) => {
                    tracing::warn!(error = %e, "no session with the head");
                }
                Err(e @ SessionError::Unreachable(_)) => {
                    tracing::debug!(error = %e, "no session with the head")
                }
            }
            self.lock().outgoing = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    /// One session: register, then heartbeat and apply desired states until the stream breaks.
    async fn session(self: &Arc<Self>) -> Result<(), SessionError> {
        let address = self.config.head_address().map_err(HeadUnreachable::from)?;
        // TCP_NODELAY: reports and heartbeats are small and must not wait for delayed ACKs.
        let scheme = if self.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|source| HeadUnreachable::BadAddress {
                address: address.clone(),
                source,
            })?
            .tcp_nodelay(true);
        if let Some(tls) = &self.config.tls {
            let pem = crate::tls::read(tls).map_err(HeadUnreachable::from)?;
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem.ca))
                        .identity(tonic::transport::Identity::from_pem(pem.cert, pem.key))
                        .domain_name(beowulf_types::HEAD_TLS_NAME),
                )
                .map_err(|source| HeadUnreachable::Tls {
                    address: address.clone(),
                    source,
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| HeadUnreachable::Connect {
                address: address.clone(),
                source,
            })?;
        let mut client = AgentHubClient::new(channel)
            .max_decoding_message_size(beowulf_proto::MAX_DESIRED_STATE_BYTES);
        let (tx, rx) = mpsc::unbounded_channel();
        let register = self.register_message();
        tx.send(register)
            .map_err(|_| HeadUnreachable::ChannelClosed {
                address: address.clone(),
            })?;
        let response = client
            .session(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .map_err(SessionError::Refused)?;
        let mut incoming = response.into_inner();
        self.lock().outgoing = Some(tx.clone());
        tracing::info!(head = %address, "registered with the head");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        let agent = self.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            let mut beats: u64 = 0;
            loop {
                tick.tick().await;
                beats += 1;
                let inventory = if beats.is_multiple_of(REDETECT_EVERY) {
                    agent.changed_inventory().await
                } else {
                    None
                };
                let (generation, runs) = {
                    let state = agent.lock();
                    let known: BTreeSet<RunKey> = state
                        .ledger
                        .data
                        .runs
                        .keys()
                        .chain(state.desired.keys())
                        .chain(state.wired.keys())
                        .copied()
                        .collect();
                    (state.ledger.data.generation.0, known)
                };
                let beat = v1::AgentMessage {
                    body: Some(Body::Heartbeat(v1::Heartbeat {
                        generation,
                        inventory: inventory.as_ref().map(v1::Inventory::from),
                        runs: runs.into_iter().map(v1::RunRef::from).collect(),
                    })),
                };
                if tx.send(beat).is_err() {
                    return;
                }
            }
        });
        let result = loop {
            match incoming.message().await {
                Ok(Some(v1::HeadMessage {
                    body: Some(v1::head_message::Body::Desired(desired)),
                })) => {
                    if let Err(e) = self.on_desired(desired) {
                        break Err(e);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(status) => break Err(SessionError::Broke(status)),
            }
        };
        heartbeat.abort();
        result
    }

    fn register_message(&self) -> v1::AgentMessage {
        let state = self.lock();
        v1::AgentMessage {
            body: Some(Body::Register(v1::Register {
                node: self.config.node_name.clone(),
                inventory: Some(v1::Inventory::from(&self.inventory())),
                runs: state.ledger.data.runs.values().map(run_report).collect(),
                generation: state.ledger.data.generation.0,
                launch_endpoint: self.launch_endpoint(),
            })),
        }
    }

    /// Kills what a run left behind until nothing is left, or [`UNKILLABLE_TIMEOUT`] passed:
    /// one round of the launcher's kill gives up after a second, and thousands of processes (a
    /// fork loop at its `pids.max`) can take longer to die than that.
    async fn kill_leftovers(self: &Arc<Self>, key: RunKey) {
        let deadline = std::time::Instant::now() + UNKILLABLE_TIMEOUT;
        loop {
            let killer = self.clone();
            let alive = tokio::task::spawn_blocking(move || {
                kill(&*killer.launcher, key);
                killer.launcher.job_alive(key)
            })
            .await;
            match alive {
                Ok(false) => return,
                Ok(true) if std::time::Instant::now() >= deadline => {
                    tracing::warn!(job = %key.job, run = key.run, timeout = ?UNKILLABLE_TIMEOUT, "processes of the run survive SIGKILL (uninterruptible, e.g. on a hung file server): reporting its end anyway");
                    return;
                }
                Ok(true) => tokio::time::sleep(LEFTOVER_RETRY).await,
                Err(e) => {
                    tracing::error!(job = %key.job, error = %e, "killing a run's leftovers panicked");
                    return;
                }
            }
        }
    }

    /// Applies a whole desired state (ignored if older than what was already applied); `Err`
    /// when it leaves out a payload this agent does not have, or carries an assignment the agent
    /// refuses (the session must start again; nothing of the state is applied).
    fn on_desired(&self, mut desired: v1::DesiredState) -> Result<(), SessionError> {
        let mut state = self.lock();
        fill_payloads(&mut desired, &mut state.payloads)?;
        let generation = Generation(desired.generation);
        if generation < state.ledger.data.generation {
            tracing::debug!(%generation, "ignoring an older desired state");
            return Ok(());
        }
        let assignments: BTreeMap<RunKey, Assignment> = desired
            .assignments
            .into_iter()
            .map(|a| Assignment::try_from(a).map(|a| (a.key, a)))
            .collect::<Result<_, AssignmentError>>()?;
        self.apply_desired(state, generation, assignments);
        Ok(())
    }

    /// Applies the assignments of a desired state of `generation`: starts what is new, kills
    /// what is no longer desired.
    fn apply_desired(
        &self,
        mut state: MutexGuard<'_, State>,
        generation: Generation,
        assignments: BTreeMap<RunKey, Assignment>,
    ) {
        state.ledger.data.generation = generation;
        state.desired = assignments;
        let keys: BTreeSet<RunKey> = state.desired.keys().copied().collect();
        let actions = reconcile(&keys, &state.ledger.data);
        // Durable before acting: record every run about to start.
        for action in &actions {
            if let Action::Start(key) = action {
                let tasks = state.desired[key]
                    .ranks
                    .clone()
                    .map(|r| (r, None))
                    .collect();
                state.ledger.data.runs.insert(
                    *key,
                    RunEntry {
                        key: *key,
                        tasks,
                        lost: false,
                        cause: None,
                        out_of_memory: false,
                    },
                );
            }
        }
        if let Err(e) = state.ledger.save() {
            tracing::error!(error = %e, "cannot save the ledger; not acting on the desired state");
            return;
        }
        for action in actions {
            match action {
                Action::Start(key) => self.start_run(&mut state, key),
                Action::Kill(key) => self.stop_run(&mut state, key),
                Action::Forget(key) => self.forget(&mut state, key),
            }
        }
        self.deliver_user_signals(&mut state);
        drop(state);
        self.runs_changed.notify_waiters();
    }

    /// Answers a request of another node about a run (`find`): when the run is not here yet,
    /// waits for it to start, up to [`WAIT_FOR_RUN`]. The head sends a job's desired state to
    /// every node at once, but a node whose task ended within a millisecond may ask before this
    /// one has acted on it; asking again after a pause cost a 5-node `hostname` launch ~10 ms.
    async fn wait_for_run<T>(
        &self,
        mut find: impl FnMut() -> Result<T, LaunchRefusal>,
    ) -> Result<T, LaunchRefusal> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_RUN;
        loop {
            let changed = self.runs_changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so a desired state applied meanwhile is not missed.
            changed.as_mut().enable();
            match find() {
                Err(LaunchRefusal::NotHere(why)) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(LaunchRefusal::NotHere(why));
                    }
                }
                found => return found,
            }
        }
    }

    /// Stops a run the head no longer wants (cancelled, past its time limit, preempted) as Slurm
    /// does: SIGTERM to every process of the run (its cgroup and the cgroups under it: a
    /// container's processes too), then, `kill_wait_ms` later (Slurm's `KillWait`), SIGKILL to
    /// whatever is left. A job can save its state in between. A container's first process is
    /// its PID namespace's init and gets the SIGTERM only if it handles it (as under `docker
    /// stop`); one that does not waits for the SIGKILL. With no wait configured, or outside a
    /// runtime, the run is killed at once.
    fn stop_run(&self, state: &mut State, key: RunKey) {
        let wait = Duration::from_millis(self.config.kill_wait_ms);
        let agent = self.me.upgrade();
        let runtime = tokio::runtime::Handle::try_current();
        let (Some(agent), Ok(runtime)) = (agent, runtime) else {
            kill(&*self.launcher, key);
            return;
        };
        if wait.is_zero() {
            kill(&*self.launcher, key);
            return;
        }
        if !state.terminating.insert(key) {
            // Already told to stop; its kill is on its way.
            return;
        }
        tracing::info!(job = %key.job, run = key.run, kill_wait_ms = self.config.kill_wait_ms, "stopping the run: SIGTERM, then SIGKILL to what is left");
        if let Err(e) = self
            .launcher
            .signal_job(key, nix::sys::signal::Signal::SIGTERM)
        {
            tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot signal the run");
        }
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let running = {
                let mut state = agent.lock();
                state.terminating.remove(&key);
                state
                    .ledger
                    .data
                    .runs
                    .get(&key)
                    .is_some_and(|entry| !entry.finished())
            };
            if running {
                tracing::info!(job = %key.job, run = key.run, "the run outlived its kill wait: killing it");
                let killer = agent.clone();
                let _ = tokio::task::spawn_blocking(move || kill(&*killer.launcher, key)).await;
            }
        });
    }

    fn start_run(&self, state: &mut State, key: RunKey) {
        let mut a = state.desired[&key].clone();
        self.give_gpus(key, &mut a);
        // Before anything that takes time (staging an image): other nodes may be faster.
        self.begin_writing(state, key, &a);
        self.arm_warning(key, &a);
        if wired::is_wired(&a) {
            self.start_wired_run(state, key, a);
            return;
        }
        if a.ranks.is_empty() {
            return;
        }
        tracing::info!(job = %key.job, run = key.run, tasks = a.local_tasks(), "starting run");
        let limits = self.job_limits(&a);
        if let Err(e) = self.launcher.prepare_job(key, &limits) {
            for rank in a.ranks.clone() {
                let _ = self.exits.send(TaskExit::not_started(key.task(rank), &e));
            }
            return;
        }
        let forward = self.begin_forwarding(state, key, &a);
        for rank in a.ranks.clone() {
            let task = self.task_launch(&a, key, rank);
            match self.start_task(task, forward.as_ref()) {
                Ok(pid) if a.steps.is_some() => {
                    state.batch_tasks.insert(key, (key.task(rank), pid));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %key.job, rank, error = %e, "task did not start");
                    let _ = self.exits.send(TaskExit::not_started(key.task(rank), &e));
                }
            }
        }
    }

    /// Gives a run that asks for `gpu` GRES its GPUs here: their indices in its tasks'
    /// environment (`CUDA_VISIBLE_DEVICES`). A node that has fewer free than the head counted
    /// (its devices changed behind the head's back) starts the run without, and says so.
    fn give_gpus(&self, key: RunKey, a: &mut Assignment) {
        let wanted = a.gres.get("gpu").copied().unwrap_or(0);
        if wanted == 0 {
            return;
        }
        let (taken, environment) = {
            let mut board = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
            let taken = board.take(key, wanted);
            let environment = taken.as_deref().map(|indices| board.environment(indices));
            (taken, environment)
        };
        match (taken, environment) {
            (Some(indices), Some(environment)) => {
                tracing::info!(job = %key.job, run = key.run, ?indices, "the run's GPUs");
                a.env.extend(environment);
            }
            _ => {
                tracing::warn!(job = %key.job, run = key.run, wanted, "fewer GPUs free here than the run was given: it gets none")
            }
        }
    }

    /// Starts a task of a run, forwarding its output when the run's output goes to another node;
    /// returns its pid.
    fn start_task(
        &self,
        task: TaskLaunch,
        forward: Option<&mpsc::Sender<output::Piece>>,
    ) -> Result<u32, LaunchError> {
        let started = self.launcher.start_task(task, self.exits.clone())?;
        if let (Some(pipes), Some(queue)) = (started.pipes, forward) {
            output::attach_output(pipes, queue);
        }
        Ok(started.pid)
    }

    fn task_launch(&self, a: &Assignment, key: RunKey, rank: u32) -> TaskLaunch {
        TaskLaunch {
            key: key.task(rank),
            argv: a.argv.clone(),
            env: self.task_env(a, rank).into_iter().collect(),
            workdir: a.workdir.clone(),
            stdout: a.stdout_path.clone(),
            stderr: a.stderr_path.clone(),
            uid: a.uid,
            gid: a.gid,
            groups: a.gids.clone(),
            umask: a.umask,
            container: None,
            output: if output::forwards_output(a) {
                TaskOutput::Pipes
            } else {
                TaskOutput::Files
            },
        }
    }

    /// The environment of task `rank`: the job's, with the per-task Slurm variables.
    fn task_env(&self, a: &Assignment, rank: u32) -> BTreeMap<String, String> {
        let mut env = a.env.clone();
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.into());
        let node = &self.config.node_name;
        let per_task = [
            ("SLURM_PROCID", rank.to_string()),
            ("SLURM_LOCALID", (rank - a.ranks.start).to_string()),
            ("SLURM_NODEID", a.node_index.to_string()),
            ("SLURMD_NODENAME", node.clone()),
            ("SLURM_TASKS_PER_NODE", a.local_tasks().to_string()),
            ("BEOWULF_NODE", node.clone()),
        ];
        env.extend(per_task.into_iter().map(|(k, v)| (k.to_string(), v)));
        // A batch script's srun asks this node's agent for job steps (steps.rs); in a container
        // there is no srun yet.
        if let Some(steps) = &a.steps
            && !wired::is_wired(a)
        {
            let socket = self.config.launch_socket_path().display().to_string();
            let launch = [
                (mpi::ENV_TOKEN, steps.token.clone()),
                (mpi::ENV_LAUNCH_SOCKET, socket),
                (mpi::ENV_JOB, a.key.job.to_string()),
                (mpi::ENV_RUN, a.key.run.to_string()),
            ];
            env.extend(launch.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        env
    }

    /// The node's inventory as last told to the head.
    pub fn inventory(&self) -> Inventory {
        self.inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Lets the agent detect its inventory again while it runs.
    pub fn set_redetect(&self, redetect: Arc<Redetect>) {
        *self.redetect.lock().unwrap_or_else(|p| p.into_inner()) = Some(redetect);
    }

    /// Detects the inventory again; the new one when it differs from what the head was told.
    async fn changed_inventory(&self) -> Option<Inventory> {
        let redetect = self
            .redetect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let fresh = tokio::task::spawn_blocking(move || (redetect.0)())
            .await
            .ok()??;
        let mut current = self.inventory.lock().unwrap_or_else(|p| p.into_inner());
        if *current == fresh {
            return None;
        }
        tracing::info!(
            ib_active = fresh.has_active_ib(),
            "inventory changed; telling the head"
        );
        *current = fresh.clone();
        Some(fresh)
    }

    /// Where this agent serves MPI launches, empty until the service listens.
    pub fn launch_endpoint(&self) -> String {
        self.launch_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// TLS for requests to other nodes' launch services: this node's certificate as the client's,
    /// the cluster CA for theirs; `None` when the agent has no `[tls]` (plaintext).
    pub fn launch_client_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, TlsError> {
        if let Some(tls) = self.launch_tls.get() {
            return Ok(tls.clone());
        }
        let tls = match &self.config.tls {
            None => None,
            Some(files) => {
                let pem = crate::tls::read(files)?;
                Some(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem.ca))
                        .identity(tonic::transport::Identity::from_pem(pem.cert, pem.key)),
                )
            }
        };
        Ok(self.launch_tls.get_or_init(|| tls).clone())
    }

    /// Records where the launch service listens (before the first registration).
    pub fn set_launch_endpoint(&self, endpoint: String) {
        *self
            .launch_endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = endpoint;
    }

    /// The cgroup limits of a run of `a` on this node.
    pub(crate) fn job_limits(&self, a: &Assignment) -> JobLimits {
        JobLimits {
            cpus: a.cpus,
            memory_mb: a.memory_mb,
            pids_max: Some(self.config.job_pids_max),
        }
    }

    fn on_task_exit(&self, exit: TaskExit) {
        let mut state = self.lock();
        let key = exit.key.run;
        let Some(entry) = state.ledger.data.runs.get_mut(&key) else {
            return;
        };
        entry.tasks.insert(
            exit.key.rank,
            Some(TaskEnd {
                code: exit.code,
                detail: exit.detail,
            }),
        );
        if !entry.finished() {
            // A failed rank of a direct MPI run leaves the others waiting on it forever (under
            // mpirun, mpirun would end them): end the run here, as srun does; the head then
            // ends the job and the other nodes' ranks.
            let direct = state
                .desired
                .get(&key)
                .is_some_and(|a| a.direct_mpi().is_some());
            let entry = state.ledger.data.runs.get_mut(&key).expect("found above");
            if direct && exit.code != 0 && entry.cause.is_none() {
                entry.cause = Some(exit.key.rank);
                tracing::info!(job = %key.job, run = key.run, rank = exit.key.rank, code = exit.code, "an MPI rank failed: killing the run's other ranks");
                kill(&*self.launcher, key);
            }
            return;
        }
        // Read before the run's cgroup is released: did the OOM killer end any of its processes?
        let oom_kills = self.launcher.oom_kills(key);
        let entry = state.ledger.data.runs.get_mut(&key).expect("found above");
        if oom_kills > 0 {
            tracing::info!(job = %key.job, run = key.run, oom_kills, "the run ran out of memory");
            entry.out_of_memory = true;
        }
        let report = run_report(entry);
        if let Err(e) = state.ledger.save() {
            tracing::error!(error = %e, "cannot save the ledger");
        }
        tracing::info!(job = %key.job, run = key.run, code = report.exit_code, "run finished on this node");
        let forwarded = state.forwarding.remove(&key);
        // Whatever the tasks left behind (a daemon started with setsid, a background loop) dies
        // with the run, before the head hears that it ended and gives its CPUs to another job.
        let leftovers = self.launcher.job_alive(key);
        let agent = (forwarded.is_some() || leftovers)
            .then(|| self.me.upgrade())
            .flatten();
        match agent {
            Some(agent) => {
                tokio::spawn(async move {
                    if leftovers {
                        tracing::info!(job = %key.job, run = key.run, "the run's tasks left processes behind: killing them before reporting its end");
                        agent.kill_leftovers(key).await;
                    }
                    // The head ends the job when every node reported: its output must be
                    // written by then.
                    if let Some(mut forwarded) = forwarded {
                        let drained = tokio::time::timeout(
                            output::DRAIN_FOR,
                            forwarded.wait_for(|done| *done),
                        )
                        .await
                        .is_ok();
                        if !drained {
                            tracing::warn!(job = %key.job, run = key.run, "output still open after the run's tasks ended (a process they left holds it): reporting the end now");
                        }
                    }
                    agent.report(report);
                });
            }
            None => Self::send_report(&state, report),
        }
        if !state.desired.contains_key(&key) {
            self.forget(&mut state, key);
        }
    }

    fn report(&self, report: v1::RunReport) {
        Self::send_report(&self.lock(), report);
    }

    fn send_report(state: &State, report: v1::RunReport) {
        if let Some(out) = &state.outgoing {
            let _ = out.send(v1::AgentMessage {
                body: Some(Body::Report(report)),
            });
        }
    }

    fn forget(&self, state: &mut State, key: RunKey) {
        // MPI daemons started on request and job steps (srun, from the batch script or relayed
        // by the head for an allocation) are not tasks of the ledger: they may still be there.
        if self.launcher.job_alive(key) {
            kill(&*self.launcher, key);
        }
        if let Err(e) = self.launcher.release_job(key) {
            tracing::warn!(job = %key.job, error = %e, "cannot release the job's cgroup yet");
            return;
        }
        self.cleanup_wired(state, key);
        self.forget_output(state, key);
        state.next_step.remove(&key);
        state.step_tasks_running.remove(&key);
        state.batch_tasks.remove(&key);
        state.signals_delivered.remove(&key);
        self.gpus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .free(key);
        // A run without tasks here (a batch script's or MPI job's other nodes) never sent a
        // final report: send one, so the head releases the node.
        let taskless = state
            .ledger
            .data
            .runs
            .get(&key)
            .is_some_and(|e| e.tasks.is_empty());
        if taskless && let Some(out) = &state.outgoing {
            let report = v1::RunReport {
                job_id: key.job.0,
                run: key.run,
                finished: true,
                ..Default::default()
            };
            let _ = out.send(v1::AgentMessage {
                body: Some(Body::Report(report)),
            });
        }
        state.ledger.data.runs.remove(&key);
        if let Err(e) = state.ledger.save() {
            tracing::error!(error = %e, "cannot save the ledger");
        }
    }
}

/// The node's GPUs: its device files', or, where there are none, as many NVIDIA ones as the
/// offer names (0, 1, ...).
fn node_gpus(config: &AgentConfig) -> crate::gpus::NodeGpus {
    let detected = crate::gpus::detect(&config.gpu_devices);
    if !detected.indices.is_empty() {
        return detected;
    }
    let offered = config
        .offer
        .as_ref()
        .and_then(|o| o.gres.get("gpu").copied())
        .unwrap_or(0);
    crate::gpus::NodeGpus {
        indices: (0..offered).collect(),
        ..Default::default()
    }
}

fn kill(launcher: &impl Launcher, key: RunKey) {
    if let Err(e) = launcher.kill_job(key) {
        tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot kill the run");
    }
}

/// Whose filesystem identity the agent takes for a run's files (its image, forwarded output):
/// the user with every group the head sent, or looked up here for assignments without them.
pub(crate) fn credentials_of(a: &Assignment) -> beowulf_as_user::UserCredentials {
    if a.gids.is_empty() {
        beowulf_as_user::UserCredentials::of_user(&a.user, a.uid, a.gid)
    } else {
        beowulf_as_user::UserCredentials {
            uid: a.uid,
            gid: a.gid,
            groups: a.gids.clone(),
        }
    }
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn run_report(entry: &RunEntry) -> v1::RunReport {
    let finished = entry.finished();
    let (exit_code, detail) = if finished {
        entry.result()
    } else {
        (0, String::new())
    };
    v1::RunReport {
        job_id: entry.key.job.0,
        run: entry.key.run,
        finished,
        exit_code,
        detail,
        lost: entry.lost,
        image_staged_ms: 0,
        container_started_ms: 0,
        out_of_memory: entry.out_of_memory,
    }
}

fn ledger_path(config: &AgentConfig) -> PathBuf {
    config.state_dir.join("ledger.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::{LauncherCall, RecordingLauncher};
    use beowulf_types::JobId;

    fn config(dir: &std::path::Path) -> AgentConfig {
        AgentConfig::parse(
            &dir.join("computed.toml"),
            &format!(
                "node_name = \"node1\"\nhead = \"127.0.0.1:1\"\nstate_dir = {:?}\n",
                dir
            ),
        )
        .unwrap()
    }

    /// A 1-node run of `tasks` tasks on node1, as the head sends it.
    fn assignment(job: u64, run: u32, tasks: u32) -> v1::Assignment {
        v1::Assignment {
            job_id: job,
            run,
            nodelist: vec!["node1".into()],
            ntasks: tasks,
            local_tasks: tasks,
            first_rank: 0,
            argv: vec!["true".into()],
            cpus: 1,
            memory_mb: 64,
            ..Default::default()
        }
    }

    /// Node `node_index`'s part of a 2-node run whose output node1 writes into `dir`/out, as the
    /// test's own user, with credential `token`.
    fn forwarded(dir: &std::path::Path, job: u64, node_index: u32, token: &str) -> v1::Assignment {
        v1::Assignment {
            node_index,
            nodelist: vec!["node1".into(), "node2".into()],
            workdir: dir.display().to_string(),
            stdout_path: "out".into(),
            stderr_path: "out".into(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            output: Some(v1::OutputForward {
                writer_index: 0,
                writer_endpoint: "127.0.0.1:1".into(),
                token: token.into(),
            }),
            ..assignment(job, 1, 1)
        }
    }

    /// Node2's agent, as its certificate names it.
    fn node2() -> LaunchPeer {
        LaunchPeer::Node(vec!["node2".into()])
    }

    /// Node2's output batch `sequence` for run 1 of `job`: one line.
    fn output_batch(job: u64, token: &str, sequence: u64, line: &str) -> v1::OutputRequest {
        v1::OutputRequest {
            job_id: job,
            run: 1,
            token: token.into(),
            node_index: 1,
            sequence,
            chunks: vec![v1::OutputChunk {
                stderr: false,
                data: line.as_bytes().to_vec(),
            }],
        }
    }

    fn desired(generation: u64, assignments: Vec<v1::Assignment>) -> v1::DesiredState {
        v1::DesiredState {
            generation,
            assignments,
        }
    }

    /// An agent over a recording launcher, with its outgoing messages captured.
    fn agent(
        dir: &std::path::Path,
        launcher: RecordingLauncher,
    ) -> (
        Arc<Agent<RecordingLauncher>>,
        mpsc::UnboundedReceiver<TaskExit>,
        mpsc::UnboundedReceiver<v1::AgentMessage>,
    ) {
        let (agent, exits) = Agent::start(config(dir), Inventory::default(), launcher).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        agent.lock().outgoing = Some(tx);
        (agent, exits, rx)
    }

    #[test]
    fn runs_that_ask_for_gpus_get_disjoint_ones_from_the_nodes_device_files() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        for name in ["nvidia0", "nvidia2", "nvidiactl"] {
            std::fs::write(dev.join(name), "").unwrap();
        }
        let mut config = config(dir.path());
        config.gpu_devices = dev;
        let (agent, _exits) =
            Agent::start(config, Inventory::default(), RecordingLauncher::new()).unwrap();
        let with_gpus = |job: u64, gpus: u32| {
            let mut a = assignment(job, 1, 1);
            a.gres.insert("gpu".into(), gpus);
            a
        };
        agent
            .on_desired(desired(
                5,
                vec![with_gpus(7, 1), with_gpus(8, 1), assignment(9, 1, 1)],
            ))
            .unwrap();
        let visible = |job: u64| -> Option<String> {
            agent.launcher.calls().iter().find_map(|c| match c {
                LauncherCall::Start(t) if t.key.run.job == JobId(job) => Some(
                    t.env
                        .iter()
                        .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                        .map(|(_, v)| v.clone()),
                ),
                _ => None,
            })?
        };
        assert_eq!(visible(7).as_deref(), Some("0"));
        assert_eq!(visible(8).as_deref(), Some("2"));
        assert_eq!(visible(9), None, "a run without gpu GRES sees none");
        // Job 7 ends and is forgotten: its GPU goes to the next run that asks.
        agent.on_desired(desired(6, vec![with_gpus(8, 1)])).unwrap();
        agent.forget(
            &mut agent.lock(),
            RunKey {
                job: JobId(7),
                run: 1,
            },
        );
        agent
            .on_desired(desired(7, vec![with_gpus(8, 1), with_gpus(10, 1)]))
            .unwrap();
        assert_eq!(visible(10).as_deref(), Some("0"));
    }

    #[test]
    fn desired_runs_start_once_and_report_when_their_tasks_end() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, mut exits, mut out) = agent(dir.path(), RecordingLauncher::new());
        agent
            .on_desired(desired(5, vec![assignment(7, 1, 2)]))
            .unwrap();
        // The same desired state again (a resend after reconnect) starts nothing new.
        agent
            .on_desired(desired(6, vec![assignment(7, 1, 2)]))
            .unwrap();
        let starts = agent
            .launcher
            .calls()
            .iter()
            .filter(|c| matches!(c, LauncherCall::Start(_)))
            .count();
        assert_eq!(starts, 2, "{:?}", agent.launcher.calls());
        // The run was recorded durably before the tasks started.
        let on_disk = Ledger::open(&dir.path().join("ledger.json")).unwrap();
        assert!(on_disk.data.runs.contains_key(&RunKey {
            job: JobId(7),
            run: 1
        }));

        let run = RunKey {
            job: JobId(7),
            run: 1,
        };
        assert!(agent.launcher.finish(run.task(0), 0));
        agent.on_task_exit(exits.try_recv().unwrap());
        assert!(out.try_recv().is_err(), "no report until every task ended");
        assert!(agent.launcher.finish(run.task(1), 4));
        agent.on_task_exit(exits.try_recv().unwrap());
        let Some(Body::Report(report)) = out.try_recv().unwrap().body else {
            panic!("expected a report")
        };
        assert_eq!(
            (report.job_id, report.run, report.finished, report.exit_code),
            (7, 1, true, 4)
        );
    }

    /// The head sends a run's argv and environment once per session; later desired states
    /// leave them out and the agent uses the ones it kept, even from a state it otherwise
    /// ignored as older. One it never received ends the session instead of starting the run.
    #[test]
    fn payloads_left_out_as_already_sent_come_from_what_the_agent_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, _exits, _out) = agent(dir.path(), RecordingLauncher::new());
        agent.on_desired(desired(5, vec![])).unwrap();
        let mut whole = assignment(7, 1, 1);
        whole.argv = vec!["echo".into(), "kept".into()];
        whole.env.insert("MARK".into(), "kept".into());
        // Older than what was applied: ignored, but its payload is kept.
        agent.on_desired(desired(4, vec![whole.clone()])).unwrap();
        assert!(agent.launcher.calls().is_empty());
        let omitted = v1::Assignment {
            argv: Vec::new(),
            env: Default::default(),
            payload_omitted: true,
            ..whole.clone()
        };
        agent.on_desired(desired(6, vec![omitted])).unwrap();
        let started: Vec<TaskLaunch> = agent
            .launcher
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                LauncherCall::Start(task) => Some(*task),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 1, "{started:?}");
        assert_eq!(started[0].argv, whole.argv);
        assert!(
            started[0]
                .env
                .iter()
                .any(|(k, v)| k == "MARK" && v == "kept"),
            "{:?}",
            started[0].env
        );

        let never_sent = v1::Assignment {
            argv: Vec::new(),
            payload_omitted: true,
            ..assignment(9, 1, 1)
        };
        let error = agent.on_desired(desired(7, vec![never_sent])).unwrap_err();
        assert!(
            matches!(
                error,
                SessionError::MissingPayload {
                    run: RunKey {
                        job: JobId(9),
                        run: 1
                    }
                }
            ),
            "{error}"
        );
        assert!(
            !agent.launcher.calls().iter().any(|c| matches!(
                c,
                LauncherCall::Prepare {
                    run: RunKey { job: JobId(9), .. },
                    ..
                }
            )),
            "a run without its payload was started"
        );
    }

    /// A desired state carrying an assignment the agent refuses ends the session and applies
    /// nothing of it: no run starts, none is killed, the generation stays.
    #[test]
    fn a_desired_state_with_a_refused_assignment_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, _exits, _out) = agent(dir.path(), RecordingLauncher::new());
        agent
            .on_desired(desired(5, vec![assignment(1, 1, 1)]))
            .unwrap();
        let calls = agent.launcher.calls().len();
        let outside = v1::Assignment {
            node_index: 3,
            ..assignment(2, 1, 1)
        };
        let error = agent.on_desired(desired(6, vec![outside])).unwrap_err();
        assert!(
            matches!(
                error,
                SessionError::BadAssignment(AssignmentError::NodeIndex { .. })
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("job 2.1: node_index 3 is outside the nodelist of 1 nodes"),
            "{error}"
        );
        assert_eq!(
            agent.launcher.calls().len(),
            calls,
            "{:?}",
            agent.launcher.calls()
        );
        let state = agent.lock();
        assert_eq!(state.ledger.data.generation, Generation(5));
        assert!(state.desired.contains_key(&RunKey {
            job: JobId(1),
            run: 1
        }));
    }

    #[test]
    fn older_generations_are_ignored_and_undesired_runs_are_killed_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, mut exits, _out) = agent(dir.path(), RecordingLauncher::new());
        agent
            .on_desired(desired(10, vec![assignment(1, 1, 1)]))
            .unwrap();
        // A stale message that lacks the run must not kill it.
        agent.on_desired(desired(9, vec![])).unwrap();
        assert!(
            !agent
                .launcher
                .calls()
                .iter()
                .any(|c| matches!(c, LauncherCall::Kill { .. }))
        );
        agent.on_desired(desired(11, vec![])).unwrap();
        assert!(
            agent
                .launcher
                .calls()
                .iter()
                .any(|c| matches!(c, LauncherCall::Kill { .. }))
        );
        // The killed task's exit arrives; the run is released and forgotten.
        agent.on_task_exit(exits.try_recv().unwrap());
        assert!(
            agent
                .launcher
                .calls()
                .iter()
                .any(|c| matches!(c, LauncherCall::Release { .. }))
        );
        assert!(agent.lock().ledger.data.runs.is_empty());
    }

    /// An agent whose stopped runs get `kill_wait_ms` between SIGTERM and SIGKILL.
    fn agent_with_kill_wait(
        dir: &std::path::Path,
        launcher: RecordingLauncher,
        kill_wait_ms: u64,
    ) -> (
        Arc<Agent<RecordingLauncher>>,
        mpsc::UnboundedReceiver<TaskExit>,
    ) {
        let config = AgentConfig::parse(
            &dir.join("computed.toml"),
            &format!(
                "node_name = \"node1\"\nhead = \"127.0.0.1:1\"\nstate_dir = {dir:?}\nkill_wait_ms = {kill_wait_ms}\n"
            ),
        )
        .unwrap();
        let (agent, exits) = Agent::start(config, Inventory::default(), launcher).unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        agent.lock().outgoing = Some(tx);
        (agent, exits)
    }

    fn count(agent: &Agent<RecordingLauncher>, want: fn(&LauncherCall) -> bool) -> usize {
        agent.launcher.calls().iter().filter(|c| want(c)).count()
    }

    fn is_term(call: &LauncherCall) -> bool {
        matches!(
            call,
            LauncherCall::Signal {
                signal: nix::sys::signal::Signal::SIGTERM,
                ..
            }
        )
    }

    fn is_kill(call: &LauncherCall) -> bool {
        matches!(call, LauncherCall::Kill { .. })
    }

    #[tokio::test]
    async fn a_stopped_run_gets_sigterm_and_sigkill_only_after_its_kill_wait() {
        let dir = tempfile::tempdir().unwrap();
        let launcher = RecordingLauncher::new();
        launcher.trap_signals();
        let (agent, _exits) = agent_with_kill_wait(dir.path(), launcher, 300);
        agent
            .on_desired(desired(1, vec![assignment(1, 1, 1)]))
            .unwrap();
        agent.on_desired(desired(2, vec![])).unwrap();
        // Another state without the run while it winds down: no second SIGTERM, no kill yet.
        agent.on_desired(desired(3, vec![])).unwrap();
        assert_eq!((count(&agent, is_term), count(&agent, is_kill)), (1, 0));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count(&agent, is_kill), 0, "killed before its kill wait");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            count(&agent, is_kill),
            1,
            "the task trapped SIGTERM: it is killed"
        );
    }

    #[test]
    fn a_run_whose_process_the_oom_killer_ended_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, mut exits, mut out) = agent(dir.path(), RecordingLauncher::new());
        agent
            .on_desired(desired(1, vec![assignment(1, 1, 1)]))
            .unwrap();
        let key = RunKey {
            job: JobId(1),
            run: 1,
        };
        agent.launcher.oom_kill(key.task(0));
        agent.on_task_exit(exits.try_recv().unwrap());
        let mut reports = Vec::new();
        while let Ok(message) = out.try_recv() {
            if let Some(Body::Report(report)) = message.body {
                reports.push(report);
            }
        }
        let last = reports.last().expect("the run's end is reported");
        assert!(last.finished && last.out_of_memory, "{last:?}");
        assert_eq!(last.exit_code, 128 + 9);
        assert!(agent.lock().ledger.data.runs[&key].out_of_memory);
    }

    #[tokio::test]
    async fn a_run_that_ends_on_sigterm_is_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, mut exits) = agent_with_kill_wait(dir.path(), RecordingLauncher::new(), 100);
        agent
            .on_desired(desired(1, vec![assignment(1, 1, 1)]))
            .unwrap();
        agent.on_desired(desired(2, vec![])).unwrap();
        let exit = exits.try_recv().expect("SIGTERM ended the task");
        assert_eq!(exit.code, 128 + 15);
        agent.on_task_exit(exit);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count(&agent, is_kill), 0);
        assert!(
            agent.lock().ledger.data.runs.is_empty(),
            "ended and forgotten"
        );
    }

    #[tokio::test]
    async fn the_writer_takes_output_only_with_the_runs_credential_and_writes_each_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, mut exits, _out) = agent(dir.path(), RecordingLauncher::new());
        agent
            .on_desired(desired(1, vec![forwarded(dir.path(), 8, 0, "secret")]))
            .unwrap();
        let request = |token: &str, sequence, line: &str| output_batch(8, token, sequence, line);
        let refused = agent
            .output(&node2(), request("guess", 1, "x\n"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, LaunchRefusal::BadCredential(_)),
            "{refused}"
        );
        // With the credential, a node may still not send another node's output, and a node
        // outside the run none at all.
        // The head relays steps; it never speaks for a node.
        for impostor in [
            LaunchPeer::Node(vec!["node1".into()]),
            LaunchPeer::Node(vec!["node7".into()]),
            LaunchPeer::Head,
        ] {
            let refused = agent
                .output(&impostor, request("secret", 1, "forged\n"))
                .await
                .unwrap_err();
            assert!(matches!(refused, LaunchRefusal::NotAllowed(_)), "{refused}");
        }
        agent
            .output(&node2(), request("secret", 1, "one\n"))
            .await
            .unwrap();
        // The same batch again (its answer was lost) is not written twice.
        agent
            .output(&node2(), request("secret", 1, "one\n"))
            .await
            .unwrap();
        agent
            .output(&node2(), request("secret", 2, "two\n"))
            .await
            .unwrap();
        let written = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(written, "one\ntwo\n");
        // A run this node does not write, or does not know, takes none.
        agent
            .on_desired(desired(2, vec![forwarded(dir.path(), 9, 1, "secret")]))
            .unwrap();
        let to = |job| output_batch(job, "secret", 3, "x\n");
        let refused = agent.output(&node2(), to(9)).await.unwrap_err();
        assert!(matches!(refused, LaunchRefusal::NotWriter(_)), "{refused}");
        let refused = agent.output(&node2(), to(10)).await.unwrap_err();
        assert!(matches!(refused, LaunchRefusal::NotHere(_)), "{refused}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            written
        );
        // A run that ended here (the head dropped it: the job failed) still takes the other
        // nodes' last lines for a while.
        agent.on_task_exit(exits.recv().await.unwrap());
        assert!(!agent.lock().ledger.data.runs.contains_key(&RunKey {
            job: JobId(8),
            run: 1
        }));
        agent
            .output(&node2(), request("secret", 3, "last\n"))
            .await
            .unwrap();
        let written = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(written, "one\ntwo\nlast\n");
    }

    #[tokio::test]
    async fn output_for_a_run_not_started_here_yet_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, _exits, _out) = agent(dir.path(), RecordingLauncher::new());
        let early = {
            let agent = Arc::clone(&agent);
            tokio::spawn(async move {
                agent
                    .output(&node2(), output_batch(3, "t", 1, "early\n"))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "answered before the run started here");
        agent
            .on_desired(desired(1, vec![forwarded(dir.path(), 3, 0, "t")]))
            .unwrap();
        early.await.unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "early\n"
        );
    }

    #[test]
    fn runs_left_by_an_earlier_agent_are_killed_and_reported_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (agent, _exits, _out) = agent(dir.path(), RecordingLauncher::new());
            agent
                .on_desired(desired(3, vec![assignment(2, 1, 1)]))
                .unwrap();
        }
        // A new agent process starts over the same ledger.
        let (agent, _exits, _out) = agent(dir.path(), RecordingLauncher::new());
        assert!(agent.launcher.calls().iter().any(|c| matches!(
            c,
            LauncherCall::Kill {
                run: RunKey { job: JobId(2), .. }
            }
        )));
        let Some(Body::Register(register)) = agent.register_message().body else {
            panic!()
        };
        assert_eq!(register.runs.len(), 1);
        assert!(register.runs[0].lost && register.runs[0].finished);
        assert_eq!(register.generation, 3);
    }
}
