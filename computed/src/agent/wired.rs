//! Container and MPI runs on this node ("wired" runs): staging the image, starting the job's
//! containers — one per local task (directly launched MPI ranks too, see `direct`), or on the
//! first node of an mpirun-launched job the one that runs `mpirun` — and starting MPI daemons
//! when the job's `mpirun` asks for them (AgentLaunch).
//!
//! ```text
//!  assignment ─▶ prepare cgroup ─▶ stage image (unpack once per digest) ─▶ progress report
//!                                        │
//!        still desired? ── no ─▶ tasks end as not started
//!                                        │ yes
//!                                        ▼
//!        node 0 of an mpirun job: mpirun in a container  │  other jobs (and direct MPI
//!        other nodes of an mpirun job: nothing until a   │  ranks): one container per task
//!        launch request with the job's credential        │
//!                                        ▼
//!                    containers started ─▶ progress report ─▶ exits as usual
//! ```

use super::{Agent, DEFAULT_PATH, now_ms};
use crate::assignment::{Assignment, MpiLaunch};
use crate::container::{ContainerError, TarballSource, bundle, find_runtime};
use crate::launcher::{ContainerRun, LaunchError, Launcher, TaskExit, TaskLaunch};
use crate::mpi;
use beowulf_proto::v1::{self, agent_message::Body};
use beowulf_types::{MpiFlavor, NodeName, RunKey, TaskKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Daemons started on request get "ranks" from here up, apart from the job's real ranks (they
/// only name containers and log lines; the ledger does not track them).
const DAEMON_RANK_BASE: u32 = 1 << 30;
/// Where `beowulf-rsh` appears inside a container.
const RSH_IN_CONTAINER: &str = "/.beowulf/beowulf-rsh";
/// Where the agent's local launch socket appears inside a container.
const LAUNCH_SOCKET_IN_CONTAINER: &str = "/.beowulf/launch.sock";

/// What the agent keeps about a wired run.
#[derive(Debug, Default)]
pub(super) struct WiredRun {
    /// Containers created for the run (removed from the runtime's state when the run is forgotten).
    containers: Vec<String>,
    image_staged_ms: u64,
    container_started_ms: u64,
    next_daemon: u32,
    /// The run's private TMPDIR on this node (MPI without a container; see [`Agent::host_tmpdir`]).
    tmpdir: Option<PathBuf>,
    /// Direct MPI launch: the run's namespace is registered with the node's PMIx server.
    pub(super) pmix_registered: bool,
    /// Direct MPI launch: fences the local ranks have reached so far.
    pub(super) fences: u32,
}

/// True for runs that need more than plain processes: an image to stage, or MPI wiring.
pub(super) fn is_wired(a: &Assignment) -> bool {
    a.image.is_some() || a.mpi.is_some()
}

impl<L: Launcher> Agent<L> {
    /// Starts a wired run in the background (called with the agent's state locked).
    pub(super) fn start_wired_run(&self, state: &mut super::State, key: RunKey, a: Assignment) {
        state.wired.entry(key).or_default();
        let Some(agent) = self.me.upgrade() else {
            return;
        };
        tracing::info!(job = %key.job, run = key.run, tasks = a.local_tasks(), image = ?a.image.as_ref().map(|i| &i.reference), mpi = a.mpi.is_some(), "starting container/MPI run");
        tokio::spawn(async move { agent.run_wired(key, a).await });
    }

    async fn run_wired(self: Arc<Self>, key: RunKey, a: Assignment) {
        let ranks = a.ranks.clone();
        let not_started = |detail: String| {
            for rank in ranks.clone() {
                let _ = self.exits.send(TaskExit {
                    key: key.task(rank),
                    code: 126,
                    detail: detail.clone(),
                });
            }
        };
        if let Err(e) = self.launcher.prepare_job(key, &self.job_limits(&a)) {
            not_started(e.to_string());
            return;
        }
        let rootfs = match self.stage(key, &a).await {
            Ok(rootfs) => rootfs,
            Err(e) => {
                tracing::warn!(job = %key.job, error = %e, "cannot stage the job's image");
                not_started(e.to_string());
                return;
            }
        };
        if !self.lock().desired.contains_key(&key) {
            not_started("the job ended while its image was being staged".into());
            return;
        }
        if a.ranks.is_empty() {
            return;
        }
        if let Some(launch) = a.direct_mpi().cloned() {
            // Registration waits on libpmix's thread: not on one of the runtime's.
            let agent = Arc::clone(&self);
            let assignment = a.clone();
            let registered = tokio::task::spawn_blocking(move || {
                agent.host_tmpdir(key, &assignment).and_then(|tmpdir| {
                    Ok(agent.register_direct(key, &assignment, &launch, tmpdir)?)
                })
            })
            .await
            .unwrap_or_else(|source| Err(WiredError::RegistrationPanicked { run: key, source }));
            if let Err(e) = registered {
                tracing::warn!(job = %key.job, error = %e, "cannot launch the MPI ranks");
                not_started(e.to_string());
                return;
            }
        }
        let forward = self.begin_forwarding(&mut self.lock(), key, &a);
        for rank in ranks.clone() {
            let started = self
                .wired_task(key, &a, rank, rootfs.as_deref())
                .and_then(|task| Ok(self.start_task(task, forward.as_ref())?));
            if let Err(e) = started {
                tracing::warn!(job = %key.job, rank, error = %e, "task did not start");
                let _ = self.exits.send(TaskExit {
                    key: key.task(rank),
                    code: 126,
                    detail: e.to_string(),
                });
            }
        }
        if rootfs.is_some() {
            self.mark_started(key);
        }
    }

    /// Unpacks the run's image into the node-local cache (once per digest) and returns its rootfs;
    /// `None` for runs without a container.
    async fn stage(&self, key: RunKey, a: &Assignment) -> Result<Option<PathBuf>, WiredError> {
        let Some(image) = a.image.clone() else {
            return Ok(None);
        };
        let Some(agent) = self.me.upgrade() else {
            return Err(WiredError::ShuttingDown);
        };
        let user = super::credentials_of(a);
        // The head names stored images by name, tarballs of users by absolute path.
        let source = if image.reference.starts_with('/') {
            TarballSource::UserPath
        } else {
            TarballSource::ImageStore
        };
        let rootfs = tokio::task::spawn_blocking(move || {
            agent
                .images
                .rootfs(&image.digest, &image.tar_path, source, &user)
        })
        .await
        .map_err(|source| WiredError::StagingPanicked { run: key, source })??;
        self.stamp_phase(key, |run| &mut run.image_staged_ms);
        Ok(Some(rootfs))
    }

    /// The task for `rank` of a wired run: in a container when the run has an image, under
    /// mpirun on the first node of an MPI job.
    fn wired_task(
        &self,
        key: RunKey,
        a: &Assignment,
        rank: u32,
        rootfs: Option<&Path>,
    ) -> Result<TaskLaunch, WiredError> {
        let mut task = self.task_launch(a, key, rank);
        let mut env = self.task_env(a, rank);
        let ib_device = || {
            self.inventory()
                .ib_ports
                .iter()
                .find(|p| p.state == beowulf_types::IbPortState::Active)
                .map(|p| format!("{}:{}", p.device, p.port))
        };
        if let Some(launch) = a.direct_mpi() {
            env.extend(self.direct_env(key, launch, rank, ib_device().as_deref())?);
            // MPICH's shared-memory segments have unique names, and its ranks yield the CPU
            // in every progress wait (ch4): only Open MPI needs these.
            if self.config.shares_machine() && launch.flavor == MpiFlavor::Openmpi {
                // Open MPI names its shared-memory segments after the host, the job and the
                // local rank, in /dev/shm: the nodes' ranks would collide (measured: SIGSEGV in
                // MPI_Init). Each node's go in its run's own TMPDIR.
                env.entry("OMPI_MCA_btl_vader_backing_directory".into())
                    .or_insert(self.host_tmpdir(key, a)?);
                // Every node's ranks take each node's cores to be theirs and busy-poll on all of
                // them; waiting ranks then starved the kernel's own threads on this 2-core
                // machine (RCU and workqueue stalls, agents silent for a minute, measured).
                // Ranks that wait yield the CPU to the other ranks of their node. That was not
                // enough (a yield does not reach other nodes' cgroups): what ended the stalls is
                // the CPU `cluster init --local` reserves for the daemons (`reserved_cpus`).
                env.entry("OMPI_MCA_mpi_yield_when_idle".into())
                    .or_insert("1".into());
            }
        } else if let Some(launch) = &a.mpi {
            let rsh = match rootfs {
                Some(_) => RSH_IN_CONTAINER.to_string(),
                None => rsh_on_host()?.display().to_string(),
            };
            let ib_device = ib_device();
            task.argv = mpi::mpirun_argv(&mpi::MpirunInput {
                mpi: launch,
                nodelist: &a.nodelist,
                command: &a.argv,
                rsh_agent: &rsh,
                tcp_include: self.config.mpi_tcp_include.as_deref(),
                ib_device: ib_device.as_deref(),
            });
            let socket = self.launch_socket_seen(rootfs.is_some());
            env.extend(launch_env(a, launch, &socket));
        }
        // MPI runs get a private TMPDIR on the node (mounted into containers of direct runs:
        // the ranks' session files are there, and PMIx removes it with the namespace).
        if a.mpi.is_some() && (a.direct_mpi().is_some() || rootfs.is_none()) {
            env.insert("TMPDIR".into(), self.host_tmpdir(key, a)?);
        }
        match rootfs {
            None => {
                task.env = env.into_iter().collect();
                Ok(task)
            }
            Some(rootfs) => {
                let name = format!("r{rank}");
                task.container = Some(self.container(key, a, &name, rootfs, &task.argv, env)?);
                task.env = Vec::new();
                Ok(task)
            }
        }
    }

    /// Writes the bundle of one container of the run and records it.
    fn container(
        &self,
        key: RunKey,
        a: &Assignment,
        name: &str,
        rootfs: &Path,
        args: &[String],
        env: BTreeMap<String, String>,
    ) -> Result<ContainerRun, WiredError> {
        let runtime = find_runtime(self.config.container_runtime.as_deref())?;
        let owner = self
            .config
            .cgroup_name
            .as_deref()
            .unwrap_or(&self.config.node_name);
        let id = format!("bw-{owner}-{}-{}-{name}", key.job, key.run);
        let dir = self.config.state_dir.join("bundles").join(&id);
        let workdir = a.workdir.clone();
        let mut binds = vec![bundle::Bind {
            source: workdir.clone(),
            destination: workdir.clone(),
            read_only: false,
        }];
        if let Some(home) = home_of(a.uid)
            && !workdir.starts_with(&home)
        {
            binds.push(bundle::Bind {
                source: home.clone(),
                destination: home,
                read_only: false,
            });
        }
        // The job's user and groups resolve inside the container as on the node (MPI looks the
        // user up; images do not know the cluster's users).
        for file in ["/etc/passwd", "/etc/group"] {
            binds.push(bundle::Bind {
                source: file.into(),
                destination: file.into(),
                read_only: true,
            });
        }
        // Names resolve as on the node, whose network the container shares: libfabric's verbs
        // provider looks the node's own name up, and without it every MPICH rank failed over
        // soft-RoCE (rdma_getaddrinfo: EAGAIN; measured in the lab). Docker and Pyxis do the same.
        for file in ["/etc/hosts", "/etc/resolv.conf"] {
            if Path::new(file).is_file() {
                binds.push(bundle::Bind {
                    source: file.into(),
                    destination: file.into(),
                    read_only: true,
                });
            }
        }
        match &a.mpi {
            // Directly launched ranks reach the node's PMIx server over loopback (host network)
            // and read its shared-memory store in its directory; their TMPDIR is the run's.
            Some(launch) if launch.direct => {
                for dir in [
                    self.pmix_server()?.dir().to_path_buf(),
                    PathBuf::from(self.host_tmpdir(key, a)?),
                ] {
                    binds.push(bundle::Bind {
                        source: dir.clone(),
                        destination: dir,
                        read_only: false,
                    });
                }
            }
            Some(_) => {
                binds.push(bundle::Bind {
                    source: rsh_on_host()?,
                    destination: RSH_IN_CONTAINER.into(),
                    read_only: true,
                });
                binds.push(bundle::Bind {
                    source: self.config.launch_socket_path(),
                    destination: LAUNCH_SOCKET_IN_CONTAINER.into(),
                    read_only: false,
                });
            }
            None => {}
        }
        let config = bundle::ContainerConfig {
            rootfs: rootfs.to_path_buf(),
            hostname: self.config.node_name.clone(),
            args: args.to_vec(),
            env: env.into_iter().collect(),
            cwd: workdir,
            uid: a.uid,
            gid: a.gid,
            additional_gids: if a.gids.is_empty() {
                vec![a.gid]
            } else {
                a.gids.clone()
            },
            umask: a.umask,
            binds,
            devices: bundle::infiniband_devices(),
            memlock: bundle::memlock_limit(),
            nofile: bundle::nofile_limit(),
            cgroups_path: id.clone(),
        };
        bundle::write(&dir, &config)?;
        self.lock()
            .wired
            .entry(key)
            .or_default()
            .containers
            .push(id.clone());
        Ok(ContainerRun {
            runtime,
            bundle: dir,
            id,
        })
    }

    /// A private TMPDIR for an MPI run (outside containers, or mounted into those of a direct
    /// run): Open MPI keeps its session directory
    /// under `$TMPDIR/ompi.<hostname>.<uid>`, and several agents of one machine (a local
    /// cluster) would otherwise race to create the same one. Created for the job's user, removed
    /// when the run is forgotten.
    fn host_tmpdir(&self, key: RunKey, a: &Assignment) -> Result<String, WiredError> {
        let owner = self
            .config
            .cgroup_name
            .as_deref()
            .unwrap_or(&self.config.node_name);
        let dir = std::env::temp_dir().join(format!("beowulf-{owner}-{}-{}", key.job, key.run));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let owned =
                    std::os::unix::fs::chown(&dir, Some(a.uid), Some(a.gid)).and_then(|()| {
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    });
                owned.map_err(|source| WiredError::OwnTmpdir {
                    path: dir.clone(),
                    run: key,
                    uid: a.uid,
                    source,
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(WiredError::CreateTmpdir {
                    path: dir,
                    run: key,
                    source,
                });
            }
        }
        self.lock().wired.entry(key).or_default().tmpdir = Some(dir.clone());
        Ok(dir.display().to_string())
    }

    fn mark_started(&self, key: RunKey) {
        self.stamp_phase(key, |run| &mut run.container_started_ms);
    }

    /// Stamps a phase's time the first time it is reached and tells the head.
    fn stamp_phase(&self, key: RunKey, phase: impl FnOnce(&mut WiredRun) -> &mut u64) {
        let first = {
            let mut state = self.lock();
            let stamp = phase(state.wired.entry(key).or_default());
            let first = *stamp == 0;
            if first {
                *stamp = now_ms();
            }
            first
        };
        if first {
            self.progress(key);
        }
    }

    /// Tells the head the phase times of a run still going.
    fn progress(&self, key: RunKey) {
        let state = self.lock();
        let (Some(run), Some(out)) = (state.wired.get(&key), &state.outgoing) else {
            return;
        };
        let report = v1::RunReport {
            job_id: key.job.0,
            run: key.run,
            finished: false,
            image_staged_ms: run.image_staged_ms,
            container_started_ms: run.container_started_ms,
            ..Default::default()
        };
        let _ = out.send(v1::AgentMessage {
            body: Some(Body::Report(report)),
        });
    }

    /// The MPI run a request of another node names, when it runs here and the request carries
    /// its credential.
    pub(super) fn mpi_run(
        &self,
        key: RunKey,
        token: &str,
        peer: &LaunchPeer,
        claimed_index: Option<u32>,
    ) -> Result<(RunKey, Assignment, MpiLaunch), LaunchRefusal> {
        let node = &self.config.node_name;
        let a =
            self.lock().desired.get(&key).cloned().ok_or_else(|| {
                LaunchRefusal::NotHere(format!("job {key} is not running on {node}"))
            })?;
        let Some(launch) = a.mpi.clone() else {
            return Err(LaunchRefusal::NotMpi(format!(
                "job {} is not an MPI job",
                key.job
            )));
        };
        if !same_secret(token, &launch.token) {
            return Err(LaunchRefusal::BadCredential(format!(
                "the launch credential does not match job {key} on {node}"
            )));
        }
        peer.may_act_for(&a, claimed_index)?;
        Ok((key, a, launch))
    }

    /// A launch request of `beowulf-rsh` on this node (the local socket): checked here (the
    /// caller's uid, the credential, the target one of the run's nodes), then started here or
    /// forwarded to the target node's agent, over mutual TLS when the cluster has certificates.
    pub async fn launch_from_here(
        &self,
        uid: u32,
        request: v1::LaunchRequest,
    ) -> Result<v1::LaunchReply, LaunchRefusal> {
        let peer = LaunchPeer::Local { uid };
        let (_, a, launch) = self
            .wait_for_run(|| self.mpi_run(request.run_key(), &request.token, &peer, None))
            .await?;
        let target = NodeName::new(request.node.clone());
        if target.as_str() == self.config.node_name {
            return self.launch(&peer, request).await;
        }
        if !a.nodelist.contains(&target) {
            return Err(LaunchRefusal::NotAllowed(format!(
                "node {:?} is not one of job {}'s nodes",
                target.as_str(),
                request.job_id
            )));
        }
        let endpoint = mpi::endpoint_of(&launch, &target).ok_or_else(|| {
            LaunchRefusal::Failed(format!("no launch endpoint for node {target}"))
        })?;
        let tls = self
            .launch_client_tls()
            .map_err(|e| LaunchRefusal::Failed(e.to_string()))?;
        let mut client = mpi::connect_launch(endpoint, target.as_str(), tls.as_ref())
            .await
            .map_err(|e| LaunchRefusal::Failed(e.to_string()))?;
        client
            .launch(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                LaunchRefusal::Failed(format!("{target} refused the launch: {}", status.message()))
            })
    }

    /// The agent's local launch socket as a task sees it: in its container, or on the host.
    fn launch_socket_seen(&self, in_container: bool) -> String {
        if in_container {
            LAUNCH_SOCKET_IN_CONTAINER.to_string()
        } else {
            self.config.launch_socket_path().display().to_string()
        }
    }

    /// Starts an MPI daemon for the job's mpirun (AgentLaunch) and waits for it to end.
    pub async fn launch(
        &self,
        peer: &LaunchPeer,
        request: v1::LaunchRequest,
    ) -> Result<v1::LaunchReply, LaunchRefusal> {
        let (key, a, launch) = self
            .wait_for_run(|| self.mpi_run(request.run_key(), &request.token, peer, None))
            .await?;
        self.launcher
            .prepare_job(key, &self.job_limits(&a))
            .map_err(|e| LaunchRefusal::Failed(e.to_string()))?;
        let rootfs = self.stage(key, &a).await?;
        let daemon = {
            let mut state = self.lock();
            let run = state.wired.entry(key).or_default();
            run.next_daemon += 1;
            run.next_daemon - 1
        };
        let rank = DAEMON_RANK_BASE + daemon;
        let mut env = self.task_env(&a, a.ranks.start);
        let socket = self.launch_socket_seen(rootfs.is_some());
        env.extend(launch_env(&a, &launch, &socket));
        env.extend(request.env);
        let command = request.argv.join(" ");
        tracing::debug!(job = %key.job, %command, "launch request");
        let mut task = self.task_launch(&a, key, rank);
        task.argv = vec!["/bin/sh".into(), "-c".into(), command];
        match rootfs.as_deref() {
            Some(rootfs) => {
                let name = format!("d{daemon}");
                task.container = Some(self.container(key, &a, &name, rootfs, &task.argv, env)?);
                task.env = Vec::new();
            }
            None => {
                env.insert("TMPDIR".into(), self.host_tmpdir(key, &a)?);
                task.env = env.into_iter().collect();
            }
        }
        let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
        self.launcher
            .start_task(task, exit_tx)
            .map_err(|e: LaunchError| LaunchRefusal::Failed(e.to_string()))?;
        tracing::info!(job = %key.job, run = key.run, daemon, "started an MPI daemon on request");
        if rootfs.is_some() {
            self.mark_started(key);
        }
        let exit = exit_rx
            .recv()
            .await
            .ok_or_else(|| LaunchRefusal::Failed("lost track of the daemon".into()))?;
        tracing::info!(job = %key.job, run = key.run, daemon, code = exit.code, detail = %exit.detail, "MPI daemon ended");
        Ok(v1::LaunchReply {
            exit_code: exit.code,
            detail: exit.detail,
        })
    }

    /// Forgets a wired run's containers: the runtime's state of each, and its bundle.
    pub(super) fn cleanup_wired(&self, state: &mut super::State, key: RunKey) {
        let Some(run) = state.wired.remove(&key) else {
            return;
        };
        self.forget_direct(key, run.pmix_registered);
        // PMIx removes a direct run's TMPDIR itself when the namespace goes.
        if let Some(dir) = &run.tmpdir
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job = %key.job, dir = %dir.display(), error = %e, "cannot remove the run's TMPDIR");
        }
        if run.containers.is_empty() {
            return;
        }
        let Ok(runtime) = find_runtime(self.config.container_runtime.as_deref()) else {
            return;
        };
        let bundles = self.config.state_dir.join("bundles");
        // `runtime delete` takes a few ms per container: not on the agent's lock.
        std::thread::spawn(move || {
            for id in run.containers {
                let _ = std::process::Command::new(&runtime)
                    .args(["delete", "--force", &id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(bundles.join(&id));
            }
        });
    }
}

/// Why a launch request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchRefusal {
    #[error("{0}")]
    NotHere(String),
    #[error("{0}")]
    NotMpi(String),
    /// Output sent to a node that does not write the job's files.
    #[error("{0}")]
    NotWriter(String),
    #[error("{0}")]
    BadCredential(String),
    /// The caller may not act for this run (another user, a node not in the run).
    #[error("{0}")]
    NotAllowed(String),
    /// The request cannot be carried out as given (a job step beyond the job's nodes or CPUs).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

impl From<WiredError> for LaunchRefusal {
    fn from(error: WiredError) -> Self {
        LaunchRefusal::Failed(error.to_string())
    }
}

/// Why a container or MPI run, or one of its tasks or daemons, could not be set up on this node.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WiredError {
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("staging the image of job {run} panicked: {source}")]
    StagingPanicked {
        run: RunKey,
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    Direct(#[from] DirectError),
    #[error("the PMIx registration of job {run} panicked: {source}")]
    RegistrationPanicked {
        run: RunKey,
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot find computed's binary: {source}")]
    CurrentExe { source: std::io::Error },
    #[error("{} is missing: install beowulf-rsh beside computed", path.display())]
    RshMissing { path: PathBuf },
    #[error("cannot create the TMPDIR {} of job {run}: {source}", path.display())]
    CreateTmpdir {
        path: PathBuf,
        run: RunKey,
        source: std::io::Error,
    },
    #[error("cannot give the TMPDIR {} of job {run} to uid {uid}: {source}", path.display())]
    OwnTmpdir {
        path: PathBuf,
        run: RunKey,
        uid: u32,
        source: std::io::Error,
    },
}

/// Why this node cannot start its ranks of a direct MPI run (`direct`): its PMIx server or the
/// job's rank map.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectError {
    /// The binary has not handed the agent a PMIx server (yet).
    #[error("{node} has no PMIx server for direct MPI launch")]
    NoPmixServer { node: String },
    #[error("{node} has no PMIx server for direct MPI launch: {source}")]
    PmixFailed {
        node: String,
        source: Arc<crate::pmix::PmixError>,
    },
    #[error("{node} has no ranks of job {run}")]
    NoRanks { node: String, run: RunKey },
    #[error(
        "the head gave {node} ranks {}..{} of job {run}, but the job's rank map puts {mapped:?} here",
        given.start,
        given.end
    )]
    RankMismatch {
        node: String,
        run: RunKey,
        given: std::ops::Range<u32>,
        mapped: std::ops::Range<u32>,
    },
    #[error("cannot register job {run} with the PMIx server: {source}")]
    Register {
        run: RunKey,
        source: crate::pmix::PmixError,
    },
    #[error(
        "cannot set rank {} of job {} up with the PMIx server: {source}",
        task.rank,
        task.run
    )]
    RankEnv {
        task: TaskKey,
        source: crate::pmix::PmixError,
    },
}

/// Who sent a request to an agent's launch service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchPeer {
    /// Another node's agent, by the names its certificate (signed by the cluster CA) vouches
    /// for.
    Node(Vec<String>),
    /// A plaintext connection (no TLS configured on this agent): only the credential is checked.
    Unauthenticated,
    /// A process on this node, through the agent's local socket, by its uid.
    Local { uid: u32 },
    /// The head (its certificate names [`beowulf_types::HEAD_TLS_NAME`], which no node may
    /// take): it relays job steps from outside the job's nodes (`srun` in a `salloc` shell),
    /// having checked that its caller is the job's user or root.
    Head,
}

impl LaunchPeer {
    /// Whether this peer may act for the run of `a`: a node of the run (the one at
    /// `claimed_index` when the request says which node it speaks for), or the run's own user
    /// (or root) on this node.
    pub fn may_act_for(
        &self,
        a: &Assignment,
        claimed_index: Option<u32>,
    ) -> Result<(), LaunchRefusal> {
        match self {
            LaunchPeer::Unauthenticated => Ok(()),
            LaunchPeer::Head if claimed_index.is_none() => Ok(()),
            LaunchPeer::Head => Err(LaunchRefusal::NotAllowed(format!(
                "the head does not speak for a node of job {}",
                a.key.job
            ))),
            LaunchPeer::Local { uid } if *uid == a.uid || *uid == 0 => Ok(()),
            LaunchPeer::Local { uid } => Err(LaunchRefusal::NotAllowed(format!(
                "uid {uid} may not act for job {} of uid {}",
                a.key.job, a.uid
            ))),
            LaunchPeer::Node(names) => {
                let allowed: Vec<&NodeName> = match claimed_index {
                    Some(i) => a.nodelist.get(i as usize).into_iter().collect(),
                    None => a.nodelist.iter().collect(),
                };
                if names
                    .iter()
                    .any(|n| allowed.iter().any(|node| node.as_str() == n))
                {
                    Ok(())
                } else {
                    Err(LaunchRefusal::NotAllowed(format!(
                        "the certificate of {names:?} does not name {} of job {}",
                        match claimed_index {
                            Some(i) => format!("node index {i}"),
                            None => "a node".to_string(),
                        },
                        a.key.job
                    )))
                }
            }
        }
    }
}

/// What `beowulf-rsh` needs: the job, its credential and where this node's agent takes launch
/// requests (`socket`, as the process sees it); Open MPI refuses root unless told twice (a
/// root-submitted job is the admin's explicit choice).
fn launch_env(a: &Assignment, launch: &MpiLaunch, socket: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (mpi::ENV_TOKEN.to_string(), launch.token.clone()),
        (mpi::ENV_LAUNCH_SOCKET.to_string(), socket.to_string()),
        (mpi::ENV_JOB.to_string(), a.key.job.to_string()),
        (mpi::ENV_RUN.to_string(), a.key.run.to_string()),
    ];
    if a.uid == 0 {
        env.push(("OMPI_ALLOW_RUN_AS_ROOT".into(), "1".into()));
        env.push(("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM".into(), "1".into()));
    }
    env.push(("PATH".into(), path_of(a)));
    env
}

fn path_of(a: &Assignment) -> String {
    a.env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

/// `beowulf-rsh`, installed beside `computed`.
fn rsh_on_host() -> Result<PathBuf, WiredError> {
    let exe = std::env::current_exe().map_err(|source| WiredError::CurrentExe { source })?;
    let rsh = exe.with_file_name("beowulf-rsh");
    if rsh.is_file() {
        Ok(rsh)
    } else {
        Err(WiredError::RshMissing { path: rsh })
    }
}

/// The user's home directory, when it exists.
fn home_of(uid: u32) -> Option<PathBuf> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    (user.dir.is_dir() && user.dir != Path::new("/")).then_some(user.dir)
}

/// Compares credentials without an early exit on the first differing byte.
pub(super) fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len()
        && !expected.is_empty()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_must_match_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", ""));
    }
}
