//! What a builtin step is ([`Builtin`]) and what it is given on a node ([`BuiltinCx`]): the contract
//! between the engine and every builtin.

use crate::check::Check;
use crate::error::StepError;
use crate::inventory::ClusterInventory;
use crate::transport::Transport;
use async_trait::async_trait;
use beowulf_types::NodeName;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a builtin gets to work with on one node.
#[derive(Debug, Clone)]
pub struct BuiltinCx<'a> {
    pub node: &'a NodeName,
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
    async fn transport(&self, node: &NodeName) -> Result<Arc<dyn Transport>, StepError>;
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
