//! Connectors turn a node of the inventory into a transport: the head gets a local one, compute nodes SSH.

use super::host_key::{HostKeyPolicy, KnownHosts};
use super::ssh::{SshTarget, SshTransport};
use super::{LocalTransport, RecordingTransport, Transport, TransportError};
use crate::inventory::ClusterInventory;
use async_trait::async_trait;
use beowulf_types::NodeName;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Opens a transport to a node by name (the head's name or a compute node's).
#[async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    async fn connect(&self, node: &NodeName) -> Result<Arc<dyn Transport>, TransportError>;
}

/// The real connector: the head is this machine, compute nodes are reached over SSH as the inventory says.
#[derive(Debug)]
pub struct InventoryConnector {
    inventory: ClusterInventory,
    known_hosts: KnownHosts,
}

impl InventoryConnector {
    /// Reads the inventory's known_hosts file once, up front.
    pub fn new(inventory: ClusterInventory) -> Result<Self, TransportError> {
        let known_hosts = KnownHosts::load(&inventory.ssh.known_hosts)?;
        Ok(Self {
            inventory,
            known_hosts,
        })
    }

    /// How to reach `node` over SSH.
    pub fn target(&self, node: &NodeName) -> Result<SshTarget, TransportError> {
        let n = self
            .inventory
            .node(node)
            .ok_or_else(|| TransportError::Connect {
                node: node.clone(),
                address: "?".into(),
                reason: "the node is not in the inventory".into(),
            })?;
        let ssh = &self.inventory.ssh;
        let over = n.ssh.clone().unwrap_or(crate::inventory::NodeSsh {
            user: None,
            key: None,
            port: None,
            address: None,
        });
        let address = over.address.unwrap_or_else(|| n.gige.address.to_string());
        let port = over.port.unwrap_or(ssh.port);
        let host_keys = HostKeyPolicy::for_node(
            &n.name,
            &address,
            port,
            n.host_key.as_deref(),
            &self.known_hosts,
        )?;
        Ok(SshTarget {
            node: n.name.clone(),
            address,
            port,
            user: over.user.unwrap_or_else(|| ssh.user.clone()),
            key: over.key.unwrap_or_else(|| ssh.key.clone()),
            host_keys,
        })
    }
}

#[async_trait]
impl Connector for InventoryConnector {
    async fn connect(&self, node: &NodeName) -> Result<Arc<dyn Transport>, TransportError> {
        if *node == self.inventory.head.name {
            return Ok(Arc::new(LocalTransport::new(node.clone())));
        }
        let target = self.target(node)?;
        Ok(Arc::new(SshTransport::connect(&target).await?))
    }
}

/// A connector over fake nodes, for tests; nodes in `unreachable` fail to connect.
#[derive(Debug, Default, Clone)]
pub struct RecordingConnector {
    pub nodes: BTreeMap<NodeName, RecordingTransport>,
    pub unreachable: BTreeSet<NodeName>,
}

impl RecordingConnector {
    /// Adds a fake node.
    pub fn with(mut self, transport: RecordingTransport) -> Self {
        self.nodes.insert(transport.node().clone(), transport);
        self
    }
}

#[async_trait]
impl Connector for RecordingConnector {
    async fn connect(&self, node: &NodeName) -> Result<Arc<dyn Transport>, TransportError> {
        match self.nodes.get(node) {
            Some(t) if !self.unreachable.contains(node) => Ok(Arc::new(t.clone())),
            _ => Err(TransportError::Connect {
                node: node.clone(),
                address: "fake".into(),
                reason: "connection refused".into(),
            }),
        }
    }
}
