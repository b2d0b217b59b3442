//! `agent-register`: the node's `computed` has registered with the head over mutual TLS. Only the head
//! daemon knows, so it supplies a [`RegistrationProbe`]; without one the step says so instead of guessing.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use async_trait::async_trait;
use beowulf_types::NodeName;
use std::sync::Arc;
use std::time::Duration;

/// How often apply asks again while waiting for the agent (a TCG lab VM starts computed in seconds).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Answers "has this node's agent registered?" (implemented by headnoded's agent hub).
#[async_trait]
pub trait RegistrationProbe: Send + Sync + std::fmt::Debug {
    async fn registered(&self, node: &NodeName) -> Result<bool, ProbeError>;
}

/// Why a [`RegistrationProbe`] could not tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Whoever keeps the agents' sessions could not be asked (a probe reaching a head daemon that
    /// stopped or cannot be reached).
    #[error("the head daemon cannot be asked: {reason}")]
    Unreachable { reason: String },
}

/// Waits for the agent's registration.
#[derive(Debug, Clone)]
pub struct AgentRegister {
    probe: Option<Arc<dyn RegistrationProbe>>,
}

impl AgentRegister {
    /// With the head daemon's probe.
    pub fn new(probe: Arc<dyn RegistrationProbe>) -> Self {
        Self { probe: Some(probe) }
    }

    /// Without a probe: checks report unsatisfied and apply fails, naming what is missing.
    pub fn without_probe() -> Self {
        Self { probe: None }
    }

    async fn registered(&self, node: &NodeName) -> Result<bool, StepError> {
        let Some(probe) = &self.probe else {
            return Err(StepError::failed(
                format!(
                    "cannot tell whether {node}'s agent registered: no head daemon in this run"
                ),
                "run provisioning through `cluster init`, which asks headnoded",
            ));
        };
        probe.registered(node).await.map_err(|e| {
            StepError::failed(
                format!("asking the head whether {node}'s agent registered: {e}"),
                "check that headnoded runs",
            )
        })
    }
}

#[async_trait]
impl Builtin for AgentRegister {
    fn name(&self) -> &'static str {
        "agent-register"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        Ok(if self.registered(cx.node).await? {
            Check::Satisfied
        } else {
            Check::Unsatisfied(format!(
                "{}'s agent has not registered with the head",
                cx.node
            ))
        })
    }

    /// Waits (the step's timeout bounds it) until the agent registers.
    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        while !self.registered(cx.node).await? {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }
}

/// A probe with fixed answers: these nodes are registered, others are not (tests, dry runs).
#[derive(Debug, Clone, Default)]
pub struct FixedProbe {
    pub registered: std::collections::BTreeSet<NodeName>,
}

#[async_trait]
impl RegistrationProbe for FixedProbe {
    async fn registered(&self, node: &NodeName) -> Result<bool, ProbeError> {
        Ok(self.registered.contains(node))
    }
}
