//! Builtin steps: the escape hatch for logic that is not a shell one-liner (`builtin = "ldap-users"`).
//! Playbooks name them; the registry resolves the names to trait objects, so the engine stays generic
//! and the head daemon can swap one in (`agent-register` asks the daemon whether an agent registered).

mod agent_register;
mod clock_skew;
mod ib_pair_probe;
mod ib_probe;
mod ldap_users;
mod nfs3_export;
mod uid_conflicts;

pub use agent_register::{AgentRegister, FixedProbe, RegistrationProbe};
pub use clock_skew::{ClockSkew, MAX_CLOCK_SKEW};
pub use ib_pair_probe::IbPairProbe;
pub use ib_probe::IbProbe;
pub use ldap_users::LdapUsers;
pub use nfs3_export::Nfs3Export;
pub use uid_conflicts::UidConflicts;

use crate::check::Check;
use crate::error::StepError;
use crate::inventory::ClusterInventory;
use crate::transport::Transport;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a builtin gets to work with on one node.
#[derive(Debug, Clone)]
pub struct BuiltinCx<'a> {
    pub node: &'a str,
    pub transport: &'a dyn Transport,
    pub inventory: &'a ClusterInventory,
    /// The action's `args`, rendered.
    pub args: BTreeMap<String, String>,
    /// The run's variables.
    pub vars: &'a BTreeMap<String, String>,
    /// The run's other nodes, for steps that drive both ends of something (a pair probe).
    pub peers: &'a dyn Peers,
}

/// Reaches other nodes of the run by name, over the run's cached connections.
#[async_trait]
pub trait Peers: Send + Sync + std::fmt::Debug {
    async fn transport(&self, node: &str) -> Result<Arc<dyn Transport>, StepError>;
}

/// A step implemented in Rust.
#[async_trait]
pub trait Builtin: Send + Sync + std::fmt::Debug {
    /// The name playbooks use (`builtin = "..."`).
    fn name(&self) -> &'static str;
    /// Is it already done on this node?
    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError>;
    /// Make it so (called only when the check said no).
    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError>;
}

/// Builtins by name.
#[derive(Debug, Clone, Default)]
pub struct BuiltinRegistry {
    map: BTreeMap<&'static str, Arc<dyn Builtin>>,
}

impl BuiltinRegistry {
    /// No builtins.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The builtins the shipped playbooks use. `agent-register` has no probe here: the head daemon
    /// replaces it with one that asks its agent hub (see [`AgentRegister::new`]).
    pub fn standard() -> Self {
        Self::empty()
            .with(Arc::new(ClockSkew))
            .with(Arc::new(UidConflicts))
            .with(Arc::new(LdapUsers))
            .with(Arc::new(IbProbe))
            .with(Arc::new(IbPairProbe::default()))
            .with(Arc::new(Nfs3Export))
            .with(Arc::new(AgentRegister::without_probe()))
    }

    /// Adds `builtin`, replacing one of the same name.
    pub fn with(mut self, builtin: Arc<dyn Builtin>) -> Self {
        self.map.insert(builtin.name(), builtin);
        self
    }

    /// The builtin called `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Builtin>, StepError> {
        self.map.get(name).ok_or_else(|| {
            StepError::failed(
                format!(
                    "no builtin step called `{name}` (known: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                ),
                "fix the playbook",
            )
        })
    }

    /// Whether a builtin called `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The registered names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.map.keys().copied()
    }
}
