//! The variables templates see for one node: `node`, `head`, `nodes`, `cluster`, `users`, `nfs`, `vars`.
//!
//! `node` has the same shape for the head and for compute nodes: `name`, `address` (gigabit),
//! `gige.address`, `gige.netdev`, `ib.kind` (`soft-roce` | `hca` | `none`), `ib.netdev`, `ib.address`,
//! `roles`, `is_head`.

use crate::inventory::{ClusterInventory, IbKind, Node};
use beowulf_types::NodeName;
use minijinja::Value;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;

/// Variables every playbook may use, with their values for a real head; `[provision] vars` in
/// headnoded.toml overrides them (lab mode points them at the lab head's own services).
pub const DEFAULT_VARS: [(&str, &str); 9] = [
    // Who runs the head's slapd and NFS server: `systemd` on a real head, `lab` when the lab runs
    // them as children in its namespace.
    ("head_services", "systemd"),
    // Where root on the head reaches slapd (SASL EXTERNAL needs the unix socket).
    ("ldap_uri", "ldapi:///"),
    // Debian's slapd package owns this directory and its AppArmor profile allows it.
    ("ldap_db_dir", "/var/lib/ldap"),
    // The head's directories behind the exports nodes mount on /home and /srv/beowulf.
    ("head_home", "/home"),
    ("head_shared", "/srv/beowulf"),
    // computed's state directory on every node (its ledger, image cache and the fabric marker the
    // infiniband playbook's pair probe leaves for it).
    ("agent_state_dir", "/var/lib/beowulf-agent"),
    // ypserv's map directory: compiled into Debian's ypserv (the lab binds its own over it).
    ("nis_dir", "/var/yp"),
    // The passwd and group files the NIS maps are built from: the cluster's users and groups only,
    // so the head's system accounts are never served to the nodes.
    ("nis_source_dir", "/etc/beowulf/nis"),
    // The CPUs every agent keeps for the node's daemons and the kernel (computed's
    // `reserved_cpus`, a comma-separated list): none unless the admin says so.
    ("agent_reserved_cpus", ""),
];

/// The template context for `node` (the head's name or a compute node's).
pub fn node_context(
    inventory: &ClusterInventory,
    node: &NodeName,
    vars: &BTreeMap<String, String>,
) -> Value {
    Value::from(minijinja::value::Serde(node_json(inventory, node, vars)))
}

/// The same context as JSON (for builtins that read it).
pub fn node_json(
    inventory: &ClusterInventory,
    node: &NodeName,
    vars: &BTreeMap<String, String>,
) -> Json {
    let head = head_view(inventory);
    let this = if *node == inventory.head.name {
        head.clone()
    } else {
        inventory.node(node).map_or(Json::Null, node_view)
    };
    let users = &inventory.users;
    json!({
        "node": this,
        "head": head,
        "nodes": inventory.nodes.iter().map(node_view).collect::<Vec<_>>(),
        "cluster": { "name": inventory.cluster.name, "domain": inventory.cluster.domain },
        "users": {
            "backend": users.backend,
            "base_dn": users.base_dn,
            "nis_domain": users.nis_domain,
            "users": users.users.iter().map(|u| json!({
                "name": u.name, "uid": u.uid, "gid": u.gid, "home": u.home_dir(), "shell": u.shell,
            })).collect::<Vec<_>>(),
            "groups": users.groups,
        },
        "nfs": { "server": inventory.nfs.server },
        "vars": DEFAULT_VARS
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .chain(vars.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn head_view(inventory: &ClusterInventory) -> Json {
    let h = &inventory.head;
    let mask = u32::MAX.checked_shl(32 - u32::from(h.prefix)).unwrap_or(0);
    let network = std::net::Ipv4Addr::from(u32::from(h.gige) & mask);
    json!({
        "name": h.name,
        "address": h.gige.to_string(),
        // The gigabit subnet, `10.77.0.0/24` (for access lists).
        "network": format!("{network}/{}", h.prefix),
        "gige": { "address": h.gige.to_string(), "netdev": Json::Null },
        "ib": { "kind": "none", "netdev": Json::Null, "address": h.ib.map(|a| a.to_string()) },
        "prefix": h.prefix,
        "roles": ["head"],
        "is_head": true,
    })
}

fn node_view(n: &Node) -> Json {
    let (kind, netdev, address) = match &n.ib {
        Some(ib) => (
            ib.kind,
            ib.netdev.clone(),
            ib.address.map(|a| a.to_string()),
        ),
        None => (IbKind::None, None, None),
    };
    json!({
        "name": n.name,
        "address": n.gige.address.to_string(),
        "gige": { "address": n.gige.address.to_string(), "netdev": n.gige.netdev },
        "ib": { "kind": kind, "netdev": netdev, "address": address },
        "roles": n.roles,
        "is_head": false,
    })
}
