//! The `cluster.toml` inventory: the nodes a cluster is provisioned onto, their addresses, fabrics and SSH
//! access. The lab writes it; an admin writes the same format for real hosts.

use crate::LabError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A whole inventory file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInventory {
    /// How to reach the nodes over SSH.
    pub ssh: SshAccess,
    /// The head node's addresses on each fabric.
    pub head: HeadAddresses,
    /// The compute nodes, in order.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// The cluster's users and groups, for provisioning: `beowulf-provision` parses and checks this
    /// table (its `Users`); the lab writes a demo user and otherwise keeps the table as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<toml::Table>,
}

/// The lab's demo users: one group and one user the directory serves and jobs run as, with ids
/// above every distribution's system range and far from Debian's first user (1000).
pub const DEMO_USERS: &str = r#"[[group]]
name = "hpc"
gid = 10000
members = ["alice"]

[[user]]
name = "alice"
uid = 10001
gid = 10000
"#;

/// SSH access shared by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    pub user: String,
    /// Private key used to log in.
    pub key: PathBuf,
    /// known_hosts holding every node's host key: connections are verified against it.
    pub known_hosts: PathBuf,
    /// Network namespace to run `ssh` in (the lab's); absent for real hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// The head's addresses, which nodes use to reach its services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadAddresses {
    pub gige: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ib: Option<Ipv4Addr>,
    /// Prefix length of both fabrics' subnets.
    pub prefix: u8,
}

/// One compute node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub name: String,
    /// The gigabit NIC: SSH and TCP jobs go over it.
    pub gige: GigeNic,
    /// The InfiniBand (or soft-RoCE) fabric, when the node has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ib: Option<IbFabric>,
    /// The node's SSH host key (`ssh-ed25519 AAAA...`), as also written to known_hosts.
    pub host_key: String,
}

/// A node's gigabit NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GigeNic {
    pub address: Ipv4Addr,
    pub netdev: String,
}

/// A node's verbs fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IbFabric {
    pub kind: IbKind,
    /// The netdev carrying it (the Ethernet NIC for soft-RoCE, ib0 for IPoIB).
    pub netdev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

/// What kind of verbs fabric a node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IbKind {
    /// A real InfiniBand HCA.
    Infiniband,
    /// `rdma_rxe` over an Ethernet NIC, configured by the InfiniBand provisioning step.
    SoftRoce,
}

impl ClusterInventory {
    /// Parses and checks an inventory; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LabError> {
        let inv: Self = toml::from_str(text).map_err(|e| LabError::Inventory {
            path: path.to_path_buf(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        inv.check().map_err(|reason| LabError::Inventory {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(inv)
    }

    /// Reads and checks the inventory file at `path`.
    pub fn load(path: &Path) -> Result<Self, LabError> {
        let text = std::fs::read_to_string(path).map_err(LabError::io("read", path))?;
        Self::parse(&text, path)
    }

    /// The inventory as TOML text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize: {e}\n"));
        format!("# Beowulf cluster inventory (written by `cluster lab up`)\n{body}")
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("the inventory lists no nodes; add at least one [[node]]".into());
        }
        if self.head.prefix == 0 || self.head.prefix > 32 {
            return Err(format!(
                "head.prefix must be 1..=32, not {}",
                self.head.prefix
            ));
        }
        let mut names = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for n in &self.nodes {
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(format!(
                    "node name `{}` must be non-empty letters, digits and dashes",
                    n.name
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(format!("node `{}` is listed twice", n.name));
            }
            let ib = n.ib.as_ref().and_then(|ib| ib.address);
            for addr in std::iter::once(n.gige.address).chain(ib) {
                if !addresses.insert(addr) || Some(addr) == self.head.ib || addr == self.head.gige {
                    return Err(format!("address {addr} of node `{}` is used twice", n.name));
                }
            }
            if !n.host_key.starts_with("ssh-") && !n.host_key.starts_with("ecdsa-") {
                return Err(format!(
                    "node `{}`: host_key must be an OpenSSH public key (`ssh-ed25519 AAAA...`)",
                    n.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[ssh]
user = "root"
key = "/var/lib/beowulf/lab/ssh/id_ed25519"
known_hosts = "/var/lib/beowulf/lab/known_hosts"
netns = "beowulf-lab-0123abcd"

[head]
gige = "10.77.0.254"
ib = "10.78.0.254"
prefix = 24

[[node]]
name = "node1"
gige = { address = "10.77.0.1", netdev = "eth0" }
ib = { kind = "soft-roce", netdev = "eth1", address = "10.78.0.1" }
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"

[[node]]
name = "node2"
gige = { address = "10.77.0.2", netdev = "eth0" }
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC"
"#;

    #[test]
    fn parses_a_lab_inventory_and_round_trips() {
        let inv = ClusterInventory::parse(SAMPLE, Path::new("cluster.toml")).unwrap();
        assert_eq!(inv.nodes.len(), 2);
        let ib = inv.nodes[0].ib.as_ref().unwrap();
        assert_eq!(ib.kind, IbKind::SoftRoce);
        assert_eq!(ib.netdev, "eth1");
        assert!(inv.nodes[1].ib.is_none());
        assert_eq!(inv.ssh.netns.as_deref(), Some("beowulf-lab-0123abcd"));
        let again = ClusterInventory::parse(&inv.to_toml(), Path::new("x")).unwrap();
        assert_eq!(again, inv);
    }

    #[test]
    fn unknown_fields_are_refused_with_the_file_name() {
        let text = SAMPLE.replace("prefix = 24", "prefix = 24\ncolour = \"blue\"");
        let err = ClusterInventory::parse(&text, Path::new("cluster.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cluster.toml:"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn unknown_ib_kind_is_refused() {
        let text = SAMPLE.replace("soft-roce", "carrier-pigeon");
        assert!(ClusterInventory::parse(&text, Path::new("c")).is_err());
    }

    #[test]
    fn duplicate_names_and_addresses_are_refused() {
        let dup_name = SAMPLE.replace("name = \"node2\"", "name = \"node1\"");
        let msg = ClusterInventory::parse(&dup_name, Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("listed twice"), "{msg}");
        let dup_addr = SAMPLE.replace("10.77.0.2", "10.77.0.1");
        let msg = ClusterInventory::parse(&dup_addr, Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("used twice"), "{msg}");
    }

    #[test]
    fn a_host_key_must_look_like_one() {
        let text = SAMPLE.replace("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC", "trust me");
        let msg = ClusterInventory::parse(&text, Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("host_key"), "{msg}");
    }
}
