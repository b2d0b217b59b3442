//! headnoded's configuration file (`headnoded.toml`), parsed strictly.

use beowulf_scheduler::PriorityWeights;
use beowulf_types::Millis;
use serde::Deserialize;
use std::path::{Path, PathBuf};

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
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_ms: Millis,
    #[serde(default = "default_schedule_interval")]
    pub schedule_interval_ms: Millis,
    #[serde(default)]
    pub priority: PriorityConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    pub age_weight: u32,
    pub max_age_ms: Millis,
    pub size_weight: u32,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        let w = PriorityWeights::default();
        PriorityConfig {
            age_weight: w.age_weight,
            max_age_ms: w.max_age,
            size_weight: w.size_weight,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl HeadConfig {
    pub fn load(path: &Path) -> Result<HeadConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<HeadConfig, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| beowulf_types::jobfile::line_of(text, s.start))
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("line {line}: {}", e.message().trim()),
            }
        })
    }

    pub fn priority_weights(&self) -> PriorityWeights {
        PriorityWeights {
            age_weight: self.priority.age_weight,
            max_age: self.priority.max_age_ms,
            size_weight: self.priority.size_weight,
            ..PriorityWeights::default()
        }
    }
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
