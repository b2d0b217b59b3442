//! Builtin steps: the escape hatch for logic that is not a shell one-liner (`builtin = "ldap-users"`).
//! Playbooks name them; the registry resolves the names to trait objects, so the engine stays generic
//! and the head daemon can swap one in (`agent-register` asks the daemon whether an agent registered).

mod agent_register;
mod clock_skew;
mod contract;
mod ib_pair_probe;
mod ib_probe;
mod ldap_users;
mod nfs3_export;
mod uid_conflicts;

pub use agent_register::{AgentRegister, FixedProbe, ProbeError, RegistrationProbe};
pub use clock_skew::{ClockSkew, MAX_CLOCK_SKEW};
pub use contract::{Builtin, BuiltinCx, Peers};
pub use ib_pair_probe::IbPairProbe;
pub use ib_probe::IbProbe;
pub use ldap_users::LdapUsers;
pub use nfs3_export::Nfs3Export;
pub use uid_conflicts::UidConflicts;

use crate::error::StepError;
use std::collections::BTreeMap;
use std::sync::Arc;

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
