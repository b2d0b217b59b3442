//! computed's configuration file (`computed.toml`), parsed strictly.

use beowulf_types::Millis;
use beowulf_types::config::{self, ConfigError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Agents beat every second: cheap (no disk write on the head) and well inside the head's timeout.
const DEFAULT_HEARTBEAT_INTERVAL_MS: Millis = 1_000;

/// Where agents keep what users' processes reach: their local launch sockets.
const RUN_DIR: &str = "/run/beowulf";

/// The lowest `job_pids_max` accepted: runc and a shell with a few children need about 30.
const MIN_JOB_PIDS_MAX: u32 = 64;
/// See `AgentConfig::job_pids_max`.
const DEFAULT_JOB_PIDS_MAX: u32 = 8192;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name in the cluster (`node1`).
    pub node_name: String,
    /// What computed logs: `error`, `warn`, `info` (the default), `debug`, `trace`, or a filter
    /// per module (`info,beowulf_computed::agent::steps=debug`). `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where the head's agent API listens, as `host:port`.
    #[serde(default)]
    pub head: Option<String>,
    /// A file holding `host:port` of the head (headnoded writes `agent.addr` in its state directory);
    /// read again at every reconnect, so a restarted head on a new port is found.
    #[serde(default)]
    pub head_addr_file: Option<PathBuf>,
    /// The ledger and logs of this agent.
    pub state_dir: PathBuf,
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_ms: Millis,
    /// Name of this agent's cgroup subtree (`beowulf/<name>/job_<id>.<run>`); defaults to the node
    /// name. Several agents on one machine (a local cluster, or two clusters' tests side by side)
    /// need distinct names, or one would kill the other's tasks as leftovers.
    #[serde(default)]
    pub cgroup_name: Option<String>,
    /// Switch the kernel's cgroup core to `favordynmods` at start (see `launcher::dynmods`): task
    /// starts stop waiting for an RCU grace period (7–14 ms each) at a small cost to fork/exit.
    /// On by default because starting tasks is what a compute node does most.
    #[serde(default = "default_true")]
    pub cgroup_favor_dynamic_moves: bool,
    /// OCI runtime for container jobs (default: runc, else crun, from the system paths).
    #[serde(default)]
    pub container_runtime: Option<PathBuf>,
    /// Node-local cache of unpacked images (default `<state_dir>/images`).
    #[serde(default)]
    pub image_cache: Option<PathBuf>,
    /// Where the MPI launch service (AgentLaunch) listens; port 0 picks a free port.
    #[serde(default = "default_launch_listen")]
    pub launch_listen: String,
    /// The `host:port` other nodes reach the launch service at; default: the listen address,
    /// with an unspecified host (0.0.0.0) replaced by the node name.
    #[serde(default)]
    pub launch_advertise: Option<String>,
    /// The unix socket where `beowulf-rsh` of this node's MPI jobs asks for launches (mode 0666:
    /// the agent knows each caller by its uid); default
    /// `/run/beowulf/<cgroup_name or node_name>/launch.sock`, in directories every user can
    /// reach (a state directory may be private).
    #[serde(default)]
    pub launch_socket: Option<PathBuf>,
    /// Interface or CIDR Open MPI uses for TCP (`btl_tcp_if_include`, `oob_tcp_if_include`):
    /// the gigabit network on real nodes, `lo` on a local cluster; absent: Open MPI picks.
    #[serde(default)]
    pub mpi_tcp_include: Option<String>,
    /// Mutual TLS to the head: the cluster CA (the head's certificate must be signed by it, for
    /// the name `beowulf-head`) and this node's certificate and key. Absent: plaintext.
    #[serde(default)]
    pub tls: Option<config::TlsFiles>,
    /// CPUs kept for the node's daemons and the kernel (Slurm's `CpuSpecList`): tasks never run
    /// on them, and the node offers that many CPUs fewer. `cluster init --local` reserves CPU 0:
    /// its agents share one machine, and ranks busy-polling on every core starved the daemons and
    /// the kernel's own threads for seconds (once for 45 s; see docs/decisions.md).
    #[serde(default)]
    pub reserved_cpus: Vec<u32>,
    /// How long a run told to stop (cancelled, past its time limit, preempted) has between
    /// SIGTERM and SIGKILL, in ms (Slurm's `KillWait`); 0 kills at once.
    #[serde(default = "default_kill_wait")]
    pub kill_wait_ms: Millis,
    /// Processes and threads one run may have on this node (the pids cgroup controller): a fork
    /// loop stops there instead of filling the kernel's process table. The default, 8192, is far
    /// above what a node's ranks and their threads need (64 ranks × 64 OpenMP threads is 4096)
    /// and far below the kernel's pid_max (4 million on 64-bit).
    #[serde(default = "default_job_pids_max")]
    pub job_pids_max: u32,
    /// What the node offers to jobs, when it should differ from what is detected (a local test
    /// cluster of several agents on one machine gives each a share).
    #[serde(default)]
    pub offer: Option<Offer>,
    /// Where the node's GPU device files are (`nvidia0`, ...; or `kfd` and `dri/renderD128`,
    /// ... for AMD GPUs): they are the GPUs runs get as `CUDA_VISIBLE_DEVICES` (or
    /// `ROCR_VISIBLE_DEVICES`), and their count is offered as `gres gpu` unless the offer names
    /// one.
    #[serde(default = "default_gpu_devices")]
    pub gpu_devices: PathBuf,
}

fn default_log_level() -> String {
    beowulf_logging::DEFAULT_LEVEL.to_string()
}

fn default_gpu_devices() -> PathBuf {
    PathBuf::from("/dev")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    /// Node features for job constraints (Slurm's node `Features`).
    #[serde(default)]
    pub features: Vec<String>,
    /// Generic resources (`gres = { gpu = 4 }`).
    #[serde(default)]
    pub gres: std::collections::BTreeMap<String, u32>,
}

impl AgentConfig {
    /// True when other agents share this machine (a local cluster: `cgroup_name` is set to keep
    /// them apart), so its "nodes" share the same cores and /dev/shm.
    pub fn shares_machine(&self) -> bool {
        self.cgroup_name.is_some()
    }

    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        config::load(path, Self::parse)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let invalid = |message: String| ConfigError::invalid(path, message);
        let config: AgentConfig = config::from_toml(path, text)?;
        beowulf_logging::check_level(&config.log_level)
            .map_err(|message| invalid(format!("field log_level: {message}")))?;
        if config.head.is_none() && config.head_addr_file.is_none() {
            return Err(invalid(
                "give `head = \"host:port\"` or `head_addr_file`".into(),
            ));
        }
        if config.job_pids_max < MIN_JOB_PIDS_MAX {
            return Err(invalid(format!(
                "field job_pids_max: {} is too low for any job (a container runtime alone starts ~10 threads); give at least {MIN_JOB_PIDS_MAX}",
                config.job_pids_max
            )));
        }
        if config.node_name.is_empty() {
            return Err(invalid("`node_name` is empty".into()));
        }
        Ok(config)
    }

    /// Where the local launch socket is.
    pub fn launch_socket_path(&self) -> PathBuf {
        self.launch_socket.clone().unwrap_or_else(|| {
            Path::new(RUN_DIR)
                .join(self.cgroup_name.as_deref().unwrap_or(&self.node_name))
                .join("launch.sock")
        })
    }

    /// The head's agent API address, read now.
    pub fn head_address(&self) -> Result<String, HeadAddressError> {
        if let Some(head) = &self.head {
            return Ok(head.clone());
        }
        let file = self.head_addr_file.as_ref().expect("checked at parse");
        std::fs::read_to_string(file)
            .map(|s| s.trim().to_string())
            .map_err(|source| HeadAddressError::Read {
                path: file.clone(),
                source,
            })
    }
}

/// Why the head's agent API address is not known.
#[derive(Debug, thiserror::Error)]
pub enum HeadAddressError {
    #[error("cannot read the head's address from {}: {source}", path.display())]
    Read {
        /// `head_addr_file`.
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The port beside the head's agent port (7090).
fn default_launch_listen() -> String {
    "0.0.0.0:7091".to_string()
}

fn default_job_pids_max() -> u32 {
    DEFAULT_JOB_PIDS_MAX
}

fn default_true() -> bool {
    true
}

fn default_heartbeat_interval() -> Millis {
    DEFAULT_HEARTBEAT_INTERVAL_MS
}

/// Slurm's default `KillWait`: 30 s for a job to write a checkpoint after SIGTERM, long enough
/// for most, short enough that a cancelled job's nodes are free again soon.
fn default_kill_wait() -> Millis {
    30_000
}
