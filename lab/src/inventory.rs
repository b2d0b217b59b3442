//! The lab's `cluster.toml`: its VMs described in provision's one inventory schema
//! ([`ClusterInventory`]), so `cluster init` reads the lab's file exactly as it reads an admin's.

use beowulf_provision::NodeName;
use beowulf_provision::inventory::{
    ClusterInfo, ClusterInventory, GigeNic, Group, Head, IbFabric, IbKind, Nfs, Node, Role,
    SshAccess, User, Users,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where the lab's nodes are reached and which keys they answer with.
#[derive(Debug, Clone)]
pub struct LabNetwork {
    /// The lab's SSH key, known_hosts and network namespace.
    pub ssh_key: PathBuf,
    pub known_hosts: PathBuf,
    pub netns: String,
    pub head_gige: Ipv4Addr,
    pub head_ib: Ipv4Addr,
    pub prefix: u8,
}

/// One lab VM as the inventory lists it.
#[derive(Debug, Clone)]
pub struct LabNode {
    pub name: String,
    pub gige: Ipv4Addr,
    pub ib: Ipv4Addr,
    /// The VM's SSH host key (`ssh-ed25519 AAAA...`), as also written to known_hosts.
    pub host_key: String,
}

/// The lab's demo group and user, whom the directory serves and jobs run as: ids above every
/// distribution's system range and far from Debian's first user (1000).
pub fn demo_users() -> Users {
    Users {
        groups: vec![Group {
            name: "hpc".into(),
            gid: 10000,
            members: vec!["alice".into()],
        }],
        users: vec![User {
            name: "alice".into(),
            uid: 10001,
            gid: 10000,
            home: None,
            shell: "/bin/bash".into(),
        }],
        ..Users::default()
    }
}

/// The inventory of a lab: root logs in with the lab's key inside its namespace; every node has a
/// gigabit NIC and a soft-RoCE fabric; the demo users.
pub fn lab_inventory(network: &LabNetwork, nodes: &[LabNode]) -> ClusterInventory {
    ClusterInventory {
        cluster: ClusterInfo::default(),
        ssh: SshAccess {
            user: crate::ssh::USER.into(),
            key: network.ssh_key.clone(),
            known_hosts: network.known_hosts.clone(),
            port: 22,
            netns: Some(network.netns.clone()),
        },
        head: Head {
            name: NodeName::new("head"),
            gige: network.head_gige,
            ib: Some(network.head_ib),
            prefix: network.prefix,
        },
        nodes: nodes
            .iter()
            .map(|n| Node {
                name: NodeName::new(n.name.clone()),
                gige: GigeNic {
                    address: n.gige,
                    netdev: crate::addressing::GIGE_NETDEV.into(),
                },
                ib: Some(IbFabric {
                    kind: IbKind::SoftRoce,
                    netdev: Some(crate::addressing::IB_NETDEV.into()),
                    address: Some(n.ib),
                }),
                host_key: Some(n.host_key.clone()),
                roles: vec![Role::Compute],
                ssh: None,
            })
            .collect(),
        users: demo_users(),
        nfs: Nfs::default(),
    }
}

/// The inventory as the lab writes it: a header saying who wrote it, then the TOML.
pub fn lab_inventory_text(inventory: &ClusterInventory) -> String {
    format!(
        "# Beowulf cluster inventory (written by `cluster lab up`)\n{}",
        inventory.to_toml()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample() -> ClusterInventory {
        let network = LabNetwork {
            ssh_key: "/var/lib/beowulf/lab/ssh/id_ed25519".into(),
            known_hosts: "/var/lib/beowulf/lab/known_hosts".into(),
            netns: "beowulf-lab-0123abcd".into(),
            head_gige: Ipv4Addr::new(10, 77, 0, 254),
            head_ib: Ipv4Addr::new(10, 78, 0, 254),
            prefix: 24,
        };
        let nodes: Vec<LabNode> = (1..=2)
            .map(|i| LabNode {
                name: format!("node{i}"),
                gige: Ipv4Addr::new(10, 77, 0, i),
                ib: Ipv4Addr::new(10, 78, 0, i),
                host_key: format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{i}"),
            })
            .collect();
        lab_inventory(&network, &nodes)
    }

    #[test]
    fn what_the_lab_writes_provision_reads_back_unchanged() {
        let inv = sample();
        let text = lab_inventory_text(&inv);
        assert!(text.starts_with("# Beowulf cluster inventory"), "{text}");
        let read = ClusterInventory::parse(Path::new("cluster.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(read, inv);
        assert_eq!(read.nodes[1].ib.as_ref().unwrap().kind, IbKind::SoftRoce);
        assert_eq!(read.ssh.netns.as_deref(), Some("beowulf-lab-0123abcd"));
        assert_eq!(read.users.users[0].name, "alice");
    }

    #[test]
    fn the_demo_user_is_outside_the_system_range_and_in_its_group() {
        let users = demo_users();
        let alice = &users.users[0];
        assert!(alice.uid >= beowulf_provision::inventory::MIN_CLUSTER_ID);
        assert_eq!(users.groups[0].gid, alice.gid);
    }
}
