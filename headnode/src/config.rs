//! headnoded's configuration file (`headnoded.toml`), parsed strictly.

use beowulf_scheduler::{Association, Partition, PreemptMode, PriorityWeights, Qos};
use beowulf_types::config::{self, ConfigError};
use beowulf_types::{Millis, NodeName, hostlist};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Fair-share usage halves every week by default, as Slurm's `PriorityDecayHalfLife=7-0`: recent
/// use counts, last month's barely does.
const DEFAULT_FAIRSHARE_HALF_LIFE_MS: Millis = 7 * 24 * 60 * 60 * 1000;

/// How long a node may stay silent before it is marked DOWN and its jobs are requeued. Slurm's
/// SlurmdTimeout defaults to 300 s; agents here heartbeat every second, so 10 s tolerates several
/// lost beats and a loaded machine while still noticing a dead node quickly.
const DEFAULT_HEARTBEAT_TIMEOUT_MS: Millis = 10_000;

/// A scheduling pass runs on every submit, job end and node change; this periodic pass only catches
/// what no event announced (priorities that changed with age, estimated starts).
const DEFAULT_SCHEDULE_INTERVAL_MS: Millis = 1_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Where the store (`headnoded.redb`) and the agent address file live.
    pub state_dir: PathBuf,
    /// The client API's unix socket (mode 0666: the caller is identified by its peer uid).
    pub socket: PathBuf,
    /// Address the agent API listens on; port 0 picks a free port, written to `state_dir/agent.addr`.
    #[serde(default = "default_agent_listen")]
    pub agent_listen: String,
    /// What headnoded logs: `error`, `warn`, `info` (the default), `debug`, `trace`, or a filter
    /// per module (`info,beowulf_headnode::api=debug`). `RUST_LOG` overrides it when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Where imported images live (`blobs/sha256-<hex>.tar`); default `<state_dir>/images`. Agents
    /// read the blobs, so on a real cluster it belongs on the shared area exported to the nodes.
    #[serde(default)]
    pub image_store: Option<PathBuf>,
    /// Where the nodes see the image store, when their path differs from the head's (the lab's head
    /// keeps the shared area under its state directory; nodes mount it on /srv/beowulf); default:
    /// the same path.
    #[serde(default)]
    pub image_store_on_nodes: Option<PathBuf>,
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: Millis,
    #[serde(default = "default_schedule_interval")]
    pub schedule_interval_ms: Millis,
    #[serde(default)]
    pub priority: PriorityConfig,
    /// Partitions (`[[partition]]`); none: one partition, `all`, of every node, without limits.
    #[serde(default, rename = "partition")]
    pub partitions: Vec<PartitionConfig>,
    /// QOS definitions by name (`[qos.high]`).
    #[serde(default)]
    pub qos: BTreeMap<String, QosConfig>,
    /// Fair-share shares (`[shares] users = { alice = 2 }`, `accounts = { physics = 3 }`).
    #[serde(default)]
    pub shares: SharesConfig,
    /// Provisioning (`cluster init`): the playbooks and what they are given.
    #[serde(default)]
    pub provision: ProvisionConfig,
    /// When a change counts as written (`[store] acknowledge = "fsync" | "write"`).
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    /// Mutual TLS on the agent API: only agents with a certificate from `ca` are accepted. Absent:
    /// plaintext (a trusted, isolated network only).
    #[serde(default)]
    pub tls: Option<config::TlsFiles>,
    /// Connection limits of the client sockets (`[api]`).
    #[serde(default)]
    pub api: ApiConfig,
    /// The policy sections, parsed by [`HeadConfig::parse`].
    #[serde(skip)]
    policy: Policy,
}

/// `[api]`: how many connections the client sockets (the gRPC API's and the submit socket, mode
/// 0666) take; why and the timeouts: `crate::server::connections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Connections one user (not root) may hold over both sockets together; more are refused.
    #[serde(default = "default_max_connections_per_user")]
    pub max_connections_per_user: usize,
    /// Client connections in all, of which the last 32 only root may take; default 8192, never
    /// more than half the open-files limit.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_connections_per_user: default_max_connections_per_user(),
            max_connections: None,
        }
    }
}

fn default_max_connections_per_user() -> usize {
    MAX_CONNECTIONS_PER_USER
}

/// Connections one user (not root) may hold over both client sockets together, unless `[api]`
/// says otherwise (enforced by `crate::server::connections`). A user's real need is a handful: a
/// `cluster` command holds one for milliseconds, a plain `submit` one for a millisecond, and each
/// `submit --wait` or `cluster init --watch` one for as long as it follows. 64 lets a user follow
/// dozens of jobs at once and submit from a parallel loop, while a flood from one account takes
/// 64 descriptors instead of all of them.
pub const MAX_CONNECTIONS_PER_USER: usize = 64;

/// Where the installed playbooks live (the package puts the repository's `playbooks/` here).
const DEFAULT_PLAYBOOKS_DIR: &str = "/usr/share/beowulf/playbooks";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionConfig {
    /// The playbooks (`NAME.toml`) and their `templates/`.
    #[serde(default = "default_playbooks_dir")]
    pub playbooks: PathBuf,
    /// The playbooks `cluster init` runs, in order.
    #[serde(default = "default_init_playbooks")]
    pub run: Vec<String>,
    /// Run variables (`{{ vars.NAME }}` in playbooks and templates).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Nodes provisioned at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            playbooks: default_playbooks_dir(),
            run: default_init_playbooks(),
            vars: BTreeMap::new(),
            parallelism: default_parallelism(),
        }
    }
}

fn default_playbooks_dir() -> PathBuf {
    PathBuf::from(DEFAULT_PLAYBOOKS_DIR)
}

fn default_init_playbooks() -> Vec<String> {
    beowulf_provision::INIT_PLAYBOOKS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn default_parallelism() -> usize {
    beowulf_provision::DEFAULT_PARALLELISM
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub name: String,
    /// A host list (`node[1-4]`); absent: every node.
    #[serde(default)]
    pub nodes: Option<String>,
    /// Longest time limit, in Slurm's time syntax (`1-00:00:00`) or integer minutes.
    #[serde(default)]
    pub max_time: Option<toml::Value>,
    #[serde(default)]
    pub max_nodes: Option<u32>,
    #[serde(default)]
    pub allowed_users: Vec<String>,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allowed_accounts: Vec<String>,
    #[serde(default)]
    pub priority_factor: u32,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosConfig {
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub preempts: Vec<String>,
    /// What happens to this QOS's jobs when preempted: "off" (never), "requeue" or "cancel".
    #[serde(default)]
    pub preempt_mode: PreemptModeSetting,
}

/// `preempt_mode` as written in a `[qos.NAME]` section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreemptModeSetting {
    #[default]
    Off,
    Requeue,
    Cancel,
}

impl From<PreemptModeSetting> for PreemptMode {
    fn from(setting: PreemptModeSetting) -> PreemptMode {
        match setting {
            PreemptModeSetting::Off => PreemptMode::Off,
            PreemptModeSetting::Requeue => PreemptMode::Requeue,
            PreemptModeSetting::Cancel => PreemptMode::Cancel,
        }
    }
}

/// The scheduling policy of the config's sections, parsed and checked once when the config is
/// read, so every scheduling pass uses it as it is.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub partitions: BTreeMap<String, Partition>,
    pub qos: BTreeMap<String, Qos>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharesConfig {
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    #[serde(default)]
    pub accounts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    pub age_weight: u32,
    pub max_age_ms: Millis,
    pub size_weight: u32,
    #[serde(default)]
    pub fairshare_weight: u32,
    #[serde(default)]
    pub partition_weight: u32,
    #[serde(default)]
    pub qos_weight: u32,
    #[serde(default = "default_fairshare_half_life")]
    pub fairshare_half_life_ms: Millis,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        let w = PriorityWeights::default();
        PriorityConfig {
            age_weight: w.age_weight,
            max_age_ms: w.max_age,
            size_weight: w.size_weight,
            fairshare_weight: w.fairshare_weight,
            partition_weight: w.partition_weight,
            qos_weight: w.qos_weight,
            fairshare_half_life_ms: DEFAULT_FAIRSHARE_HALF_LIFE_MS,
        }
    }
}

impl HeadConfig {
    /// The image store's directory.
    pub fn image_store(&self) -> PathBuf {
        self.image_store
            .clone()
            .unwrap_or_else(|| self.state_dir.join("images"))
    }

    /// The path nodes open for a blob of the image store at `head_path` on the head.
    pub fn image_path_on_nodes(&self, head_path: &Path) -> PathBuf {
        match (
            &self.image_store_on_nodes,
            head_path.strip_prefix(self.image_store()),
        ) {
            (Some(on_nodes), Ok(rest)) => on_nodes.join(rest),
            _ => head_path.to_path_buf(),
        }
    }

    pub fn load(path: &Path) -> Result<HeadConfig, ConfigError> {
        config::load(path, Self::parse)
    }

    pub fn parse(path: &Path, text: &str) -> Result<HeadConfig, ConfigError> {
        let mut config: HeadConfig = config::from_toml(path, text)?;
        beowulf_logging::check_level(&config.log_level)
            .map_err(|message| ConfigError::invalid(path, format!("field log_level: {message}")))?;
        // The policy sections, parsed now: a bad config fails at start-up, not at the first pass.
        config.policy = Policy {
            partitions: config
                .parse_partitions()
                .map_err(|message| ConfigError::invalid(path, message))?,
            qos: config
                .parse_qos()
                .map_err(|message| ConfigError::invalid(path, message))?,
        };
        Ok(config)
    }

    /// The scheduler's partitions, keyed by name (parsed when the config was read).
    pub fn partitions(&self) -> &BTreeMap<String, Partition> {
        &self.policy.partitions
    }

    /// The scheduler's QOS definitions, keyed by name (parsed when the config was read).
    pub fn qos_definitions(&self) -> &BTreeMap<String, Qos> {
        &self.policy.qos
    }

    fn parse_partitions(&self) -> Result<BTreeMap<String, Partition>, String> {
        let mut out = BTreeMap::new();
        for p in &self.partitions {
            let nodes = match &p.nodes {
                None => BTreeSet::new(),
                Some(list) => hostlist::expand(list)
                    .map_err(|e| format!("partition {}: nodes: {e}", p.name))?
                    .into_iter()
                    .map(NodeName::new)
                    .collect(),
            };
            let max_time = match &p.max_time {
                None => None,
                Some(v) => Some(
                    beowulf_types::jobfile::parse_time_limit(v)
                        .map_err(|e| format!("partition {}: max_time: {e}", p.name))?,
                ),
            };
            let partition = Partition {
                nodes,
                max_time,
                max_nodes: p.max_nodes,
                allowed_users: p.allowed_users.iter().cloned().collect(),
                allowed_groups: p.allowed_groups.iter().cloned().collect(),
                allowed_accounts: p.allowed_accounts.iter().cloned().collect(),
                priority_factor: p.priority_factor,
                default: p.default,
            };
            if out.insert(p.name.clone(), partition).is_some() {
                return Err(format!("partition {} is defined twice", p.name));
            }
        }
        Ok(out)
    }

    fn parse_qos(&self) -> Result<BTreeMap<String, Qos>, String> {
        let mut out = BTreeMap::new();
        for (name, q) in &self.qos {
            let preempt_mode = PreemptMode::from(q.preempt_mode);
            for target in &q.preempts {
                if !self.qos.contains_key(target) {
                    return Err(format!(
                        "qos {name}: preempts `{target}`, which is not defined"
                    ));
                }
            }
            out.insert(
                name.clone(),
                Qos {
                    priority: q.priority,
                    preempts: q.preempts.iter().cloned().collect(),
                    preempt_mode,
                },
            );
        }
        Ok(out)
    }

    /// Fair-share shares per user and account.
    pub fn shares(&self) -> BTreeMap<Association, u32> {
        let users = self
            .shares
            .users
            .iter()
            .map(|(u, s)| (Association::User(u.clone()), *s));
        let accounts = self
            .shares
            .accounts
            .iter()
            .map(|(a, s)| (Association::Account(a.clone()), *s));
        users.chain(accounts).collect()
    }

    pub fn priority_weights(&self) -> PriorityWeights {
        PriorityWeights {
            age_weight: self.priority.age_weight,
            max_age: self.priority.max_age_ms,
            size_weight: self.priority.size_weight,
            fairshare_weight: self.priority.fairshare_weight,
            partition_weight: self.priority.partition_weight,
            qos_weight: self.priority.qos_weight,
        }
    }
}

fn default_fairshare_half_life() -> Millis {
    DEFAULT_FAIRSHARE_HALF_LIFE_MS
}

fn default_log_level() -> String {
    beowulf_logging::DEFAULT_LEVEL.to_string()
}

fn default_agent_listen() -> String {
    "127.0.0.1:0".into()
}

fn default_heartbeat_timeout() -> Millis {
    DEFAULT_HEARTBEAT_TIMEOUT_MS
}

fn default_schedule_interval() -> Millis {
    DEFAULT_SCHEDULE_INTERVAL_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_see_image_blobs_under_their_own_mount_of_the_store() {
        let text = "state_dir = \"/s\"\nsocket = \"/s/sock\"\nimage_store = \"/lab/srv/images\"\n\
                    image_store_on_nodes = \"/srv/beowulf/images\"\n";
        let config = HeadConfig::parse(Path::new("headnoded.toml"), text).unwrap();
        assert_eq!(
            config.image_path_on_nodes(Path::new("/lab/srv/images/blobs/sha256-ab.tar")),
            Path::new("/srv/beowulf/images/blobs/sha256-ab.tar")
        );
        // A path outside the store (a job naming a tarball) is left alone.
        assert_eq!(
            config.image_path_on_nodes(Path::new("/srv/other.tar")),
            Path::new("/srv/other.tar")
        );
    }

    #[test]
    fn the_policy_is_parsed_once_when_the_config_is_read() {
        let base = "state_dir = \"/s\"\nsocket = \"/s/sock\"\n";
        let text = format!(
            "{base}[[partition]]\nname = \"short\"\nnodes = \"node[1-2]\"\ndefault = true\n\
             [qos.high]\npriority = 10\npreempts = [\"low\"]\n[qos.low]\npreempt_mode = \"requeue\"\n"
        );
        let config = HeadConfig::parse(Path::new("headnoded.toml"), &text).unwrap();
        assert_eq!(config.partitions()["short"].nodes.len(), 2);
        assert_eq!(
            config.qos_definitions()["low"].preempt_mode,
            PreemptMode::Requeue
        );
        assert_eq!(
            config.qos_definitions()["high"].preempt_mode,
            PreemptMode::Off
        );
        let bad = format!("{base}[qos.low]\npreempt_mode = \"sometimes\"\n");
        let err = HeadConfig::parse(Path::new("headnoded.toml"), &bad).unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
        assert!(err.to_string().contains("sometimes"), "{err}");
    }
}
