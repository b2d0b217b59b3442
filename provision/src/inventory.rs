//! The `cluster.toml` inventory: the head and the compute nodes, their addresses per network, fabrics and
//! SSH access, and the users and groups the cluster's directory holds.
//!
//! One schema for the file, whoever writes it: an admin for real hosts, or the lab (`beowulf-lab`
//! builds this type and writes it with [`ClusterInventory::to_toml`]). `[cluster]`, `[users]`, `[nfs]`,
//! `roles` and per-node `ssh` have defaults.
//!
//! ```toml
//! [ssh]
//! user = "root"
//! key = "/var/lib/beowulf/ssh/id_ed25519"
//! known_hosts = "/var/lib/beowulf/ssh/known_hosts"
//!
//! [head]
//! gige = "10.77.0.254"
//! ib = "10.78.0.254"
//! prefix = 24
//!
//! [[node]]
//! name = "node1"
//! gige = { address = "10.77.0.1", netdev = "eth0" }
//! ib = { kind = "soft-roce", netdev = "eth1", address = "10.78.0.1" }
//! host_key = "ssh-ed25519 AAAA..."
//!
//! [users]
//! backend = "ldap"
//! [[users.group]]
//! name = "hpc"
//! gid = 10000
//! [[users.user]]
//! name = "alice"
//! uid = 10001
//! gid = 10000
//! ```

use beowulf_types::NodeName;
use beowulf_types::located::{SourceError, from_toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The lowest uid/gid the cluster's directory may hand out. Debian and Rocky reserve ids below 1000 for
/// system accounts and packages (`/etc/login.defs` `UID_MIN`), so a cluster user below it would collide
/// with whatever a package creates later on some node.
pub const MIN_CLUSTER_ID: u32 = 1000;

/// A whole inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInventory {
    #[serde(default)]
    pub cluster: ClusterInfo,
    /// How to reach the nodes over SSH (a node may override it).
    pub ssh: SshAccess,
    pub head: Head,
    /// The compute nodes, in order.
    #[serde(rename = "node")]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub users: Users,
    #[serde(default)]
    pub nfs: Nfs,
}

/// Names the cluster as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterInfo {
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// DNS domain of the cluster's names (`node1.cluster.local`).
    #[serde(default = "default_domain")]
    pub domain: String,
}

impl Default for ClusterInfo {
    fn default() -> Self {
        Self {
            name: default_cluster_name(),
            domain: default_domain(),
        }
    }
}

/// SSH access shared by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshAccess {
    pub user: String,
    /// Private key used to log in.
    pub key: PathBuf,
    /// known_hosts holding every node's host key: connections are verified against it.
    pub known_hosts: PathBuf,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Network namespace the nodes are reachable from (the lab's); absent for real hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// Per-node overrides of [`SshAccess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSsh {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Address to connect to when it is not the gigabit address (a management network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The head node: where `headnoded` and the cluster's services run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    #[serde(default = "default_head_name")]
    pub name: NodeName,
    /// Address on the gigabit network, which nodes use to reach the head's services.
    pub gige: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ib: Option<Ipv4Addr>,
    /// Prefix length of both networks' subnets.
    pub prefix: u8,
}

/// One compute node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: NodeName,
    /// The gigabit NIC: SSH and TCP jobs go over it.
    pub gige: GigeNic,
    /// The InfiniBand (or soft-RoCE) fabric; absent means `kind = "none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ib: Option<IbFabric>,
    /// The node's SSH host key (`ssh-ed25519 AAAA...`); when absent, `ssh.known_hosts` must list it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<NodeSsh>,
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
    /// The netdev carrying it: the Ethernet NIC for soft-RoCE, the IPoIB netdev (`ib0`) for an HCA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netdev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

/// What kind of verbs fabric a node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IbKind {
    /// `rdma_rxe` over an Ethernet NIC (the lab).
    SoftRoce,
    /// A real InfiniBand HCA (the lab's inventory calls it `infiniband`).
    #[serde(alias = "infiniband")]
    Hca,
    /// No verbs fabric: jobs use TCP over the gigabit network.
    None,
}

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs `computed` and jobs.
    Compute,
    /// Users log in here to submit (gets the users and NFS, no agent).
    Login,
}

/// The cluster's users and how nodes resolve them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    pub backend: UsersBackend,
    /// The LDAP directory's base DN.
    #[serde(default = "default_base_dn")]
    pub base_dn: String,
    /// The NIS domain (backend `nis`).
    #[serde(default = "default_nis_domain")]
    pub nis_domain: String,
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
}

impl Default for Users {
    fn default() -> Self {
        Self {
            backend: UsersBackend::default(),
            base_dn: default_base_dn(),
            nis_domain: default_nis_domain(),
            users: Vec::new(),
            groups: Vec::new(),
        }
    }
}

/// Where the cluster's identities live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsersBackend {
    /// slapd on the head, nslcd on the nodes.
    #[default]
    Ldap,
    /// ypserv on the head, ypbind on the nodes (legacy).
    Nis,
}

/// A cluster user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Primary group: must be one of `[[users.group]]`.
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default = "default_shell")]
    pub shell: String,
}

impl User {
    /// The home directory: `/home/NAME` unless given.
    pub fn home_dir(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// A cluster group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    #[serde(default)]
    pub members: Vec<String>,
}

/// The shared file systems.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    #[serde(default)]
    pub server: NfsServer,
}

/// Which NFS server the head runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NfsServer {
    /// nfs-ganesha, the userspace server: works on a head whose kernel has no NFS server (the lab's host).
    #[default]
    Ganesha,
    /// The kernel server (`nfs-kernel-server`).
    Kernel,
}

fn default_cluster_name() -> String {
    "beowulf".into()
}
fn default_domain() -> String {
    "cluster.local".into()
}
fn default_ssh_port() -> u16 {
    22
}
fn default_head_name() -> NodeName {
    NodeName::new("head")
}
fn default_roles() -> Vec<Role> {
    vec![Role::Compute]
}
fn default_base_dn() -> String {
    "dc=cluster,dc=local".into()
}
fn default_nis_domain() -> String {
    "beowulf".into()
}
fn default_shell() -> String {
    "/bin/bash".into()
}

impl ClusterInventory {
    /// Parses and checks an inventory; `file` only names the file in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Self, SourceError> {
        let inv: Self = from_toml(file.display(), text)?;
        inv.check(file, text)?;
        Ok(inv)
    }

    /// Reads and checks the inventory file at `file`.
    pub fn load(file: &Path) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(file).map_err(|e| SourceError::unreadable(file, &e))?;
        Self::parse(file, &text)
    }

    /// The inventory as TOML text, which [`ClusterInventory::parse`] reads back unchanged.
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, address, path or table of them: serializing cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialize the inventory: {e}\n"))
    }

    /// The compute node called `name`.
    pub fn node(&self, name: &NodeName) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == *name)
    }

    fn check(&self, file: &Path, text: &str) -> Result<(), SourceError> {
        let fail = |needle: &str, nth: usize, field: &str, message: String| {
            SourceError::near(file, text, needle, nth, field, message)
        };
        if self.nodes.is_empty() {
            return Err(fail(
                "",
                0,
                "node",
                "the inventory lists no nodes; add at least one [[node]]".into(),
            ));
        }
        if self.head.prefix == 0 || self.head.prefix > 32 {
            return Err(fail(
                "prefix",
                0,
                "head.prefix",
                format!("must be 1..=32, not {}", self.head.prefix),
            ));
        }
        let mut names = BTreeSet::from([self.head.name.as_str()]);
        let mut addresses = BTreeSet::from([self.head.gige]);
        addresses.extend(self.head.ib);
        for n in &self.nodes {
            let name_needle = format!("\"{}\"", n.name);
            if n.name.as_str().is_empty()
                || !n
                    .name
                    .as_str()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                return Err(fail(
                    &name_needle,
                    0,
                    "node.name",
                    format!("`{}` must be non-empty letters, digits and dashes", n.name),
                ));
            }
            if n.name.as_str() == crate::ca::HEAD_TLS_NAME {
                // The CA would give the node the head's certificate name: agents would take it
                // for the head (as the server they register with, and as a relay of job steps).
                return Err(fail(
                    &name_needle,
                    0,
                    "node.name",
                    format!(
                        "`{}` is the name of the head's certificate; call the node otherwise",
                        n.name
                    ),
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(fail(
                    &name_needle,
                    1,
                    "node.name",
                    format!("node `{}` is listed twice (or is the head's name)", n.name),
                ));
            }
            let ib_addr = n.ib.as_ref().and_then(|ib| ib.address);
            for addr in std::iter::once(n.gige.address).chain(ib_addr) {
                if !addresses.insert(addr) {
                    return Err(fail(
                        &format!("\"{addr}\""),
                        1,
                        "node.gige.address",
                        format!("address {addr} of node `{}` is used twice", n.name),
                    ));
                }
            }
            if let Some(key) = &n.host_key
                && !key.starts_with("ssh-")
                && !key.starts_with("ecdsa-")
            {
                return Err(fail(
                    &name_needle,
                    0,
                    "node.host_key",
                    format!(
                        "node `{}`: must be an OpenSSH public key (`ssh-ed25519 AAAA...`)",
                        n.name
                    ),
                ));
            }
            if let Some(ib) = &n.ib
                && ib.kind != IbKind::None
                && ib.netdev.is_none()
            {
                return Err(fail(
                    &name_needle,
                    0,
                    "node.ib.netdev",
                    format!(
                        "node `{}`: a {:?} fabric needs the netdev carrying it (`netdev = \"eth1\"` for soft-RoCE, `ib0` for an HCA)",
                        n.name, ib.kind
                    ),
                ));
            }
        }
        self.check_users(&fail)
    }

    fn check_users(
        &self,
        fail: &dyn Fn(&str, usize, &str, String) -> SourceError,
    ) -> Result<(), SourceError> {
        let mut gids = BTreeSet::new();
        let mut group_names = BTreeSet::new();
        for g in &self.users.groups {
            let needle = format!("\"{}\"", g.name);
            if g.gid < MIN_CLUSTER_ID {
                return Err(fail(
                    &needle,
                    0,
                    "users.group.gid",
                    format!(
                        "group `{}`: gid {} is below {MIN_CLUSTER_ID}, the range of system groups; pick {MIN_CLUSTER_ID} or more",
                        g.name, g.gid
                    ),
                ));
            }
            if !gids.insert(g.gid) || !group_names.insert(g.name.as_str()) {
                return Err(fail(
                    &needle,
                    0,
                    "users.group",
                    format!("group `{}` (gid {}) repeats a name or gid", g.name, g.gid),
                ));
            }
        }
        let mut uids = BTreeSet::new();
        let mut user_names = BTreeSet::new();
        for u in &self.users.users {
            let needle = format!("\"{}\"", u.name);
            if u.uid < MIN_CLUSTER_ID {
                return Err(fail(
                    &needle,
                    0,
                    "users.user.uid",
                    format!(
                        "user `{}`: uid {} is below {MIN_CLUSTER_ID}, the range of system accounts; pick {MIN_CLUSTER_ID} or more",
                        u.name, u.uid
                    ),
                ));
            }
            if !uids.insert(u.uid) || !user_names.insert(u.name.as_str()) {
                return Err(fail(
                    &needle,
                    0,
                    "users.user",
                    format!("user `{}` (uid {}) repeats a name or uid", u.name, u.uid),
                ));
            }
            if !gids.contains(&u.gid) {
                return Err(fail(
                    &needle,
                    0,
                    "users.user.gid",
                    format!(
                        "user `{}`: gid {} is not one of the [[users.group]]; add that group",
                        u.name, u.gid
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the lab wrote before it wrote this type (older labs' files): must parse unchanged.
    const LAB: &str = r#"
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

    const USERS: &str = r#"
[users]
backend = "nis"
[[users.group]]
name = "hpc"
gid = 10000
[[users.user]]
name = "alice"
uid = 10001
gid = 10000
"#;

    #[test]
    fn a_lab_inventory_parses_with_defaults() {
        let inv = ClusterInventory::parse(Path::new("cluster.toml"), LAB).unwrap();
        assert_eq!(inv.nodes.len(), 2);
        assert_eq!(inv.head.name, "head");
        assert_eq!(inv.users.backend, UsersBackend::Ldap);
        assert_eq!(inv.nodes[0].ib.as_ref().unwrap().kind, IbKind::SoftRoce);
        assert_eq!(inv.nodes[1].roles, vec![Role::Compute]);
        assert_eq!(inv.ssh.port, 22);
    }

    #[test]
    fn an_inventory_round_trips_through_its_text() {
        let text = format!("{LAB}{USERS}");
        let inv = ClusterInventory::parse(Path::new("c.toml"), &text).unwrap();
        let again = ClusterInventory::parse(Path::new("again.toml"), &inv.to_toml()).unwrap();
        assert_eq!(again, inv);
    }

    #[test]
    fn users_parse_and_the_lab_kind_name_is_accepted() {
        let text = format!("{LAB}{USERS}").replace("soft-roce", "infiniband");
        let inv = ClusterInventory::parse(Path::new("c.toml"), &text).unwrap();
        assert_eq!(inv.users.backend, UsersBackend::Nis);
        assert_eq!(inv.users.users[0].home_dir(), "/home/alice");
        assert_eq!(inv.nodes[0].ib.as_ref().unwrap().kind, IbKind::Hca);
    }

    #[test]
    fn unknown_fields_name_file_line_and_field() {
        let text = LAB.replace("prefix = 24", "prefix = 24\ncolour = \"blue\"");
        let err = ClusterInventory::parse(Path::new("cluster.toml"), &text).unwrap_err();
        assert_eq!(err.line, 12, "{err}");
        assert!(err.to_string().starts_with("cluster.toml:12:"), "{err}");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn duplicates_are_refused_at_the_second_occurrence() {
        let text = LAB.replace("name = \"node2\"", "name = \"node1\"");
        let err = ClusterInventory::parse(Path::new("c"), &text).unwrap_err();
        assert!(err.message.contains("listed twice"), "{err}");
        assert_eq!(err.line, 20, "{err}");
        let text = LAB.replace("10.77.0.2", "10.77.0.1");
        let err = ClusterInventory::parse(Path::new("c"), &text).unwrap_err();
        assert!(err.message.contains("used twice"), "{err}");
    }

    #[test]
    fn a_node_cannot_take_the_heads_certificate_name() {
        let text = LAB.replace("name = \"node2\"", "name = \"beowulf-head\"");
        let err = ClusterInventory::parse(Path::new("c"), &text).unwrap_err();
        assert!(err.message.contains("head's certificate"), "{err}");
        assert_eq!(err.field.as_deref(), Some("node.name"), "{err}");
    }

    #[test]
    fn user_problems_are_refused_naming_the_user() {
        let bad_gid = format!("{LAB}{USERS}").replace("gid = 10000\n\n", "gid = 10000\n");
        let bad_gid = bad_gid.replace("uid = 10001\ngid = 10000", "uid = 10001\ngid = 4242");
        let err = ClusterInventory::parse(Path::new("c"), &bad_gid).unwrap_err();
        assert!(
            err.message.contains("alice") && err.message.contains("4242"),
            "{err}"
        );
        assert_eq!(err.field.as_deref(), Some("users.user.gid"));
        let low = format!("{LAB}{USERS}").replace("uid = 10001", "uid = 7");
        let err = ClusterInventory::parse(Path::new("c"), &low).unwrap_err();
        assert!(err.message.contains("below 1000"), "{err}");
    }

    #[test]
    fn a_fabric_needs_its_netdev() {
        let text = LAB.replace("netdev = \"eth1\", ", "");
        let err = ClusterInventory::parse(Path::new("c"), &text).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("node.ib.netdev"), "{err}");
    }
}
