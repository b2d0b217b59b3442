//! Address and name allocation for the lab: node names, IPv4 addresses on both fabrics, MACs, tap names
//! and the namespace name. Pure.

use crate::LabError;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::path::Path;

/// The gigabit fabric's /24. A private range unlikely to clash with a host's own networks (the lab's
/// namespace isolates it anyway).
pub const GIGE_NET: [u8; 3] = [10, 77, 0];
/// The soft-RoCE fabric's /24, the same host numbers as gige so `node3` is `.3` on both.
pub const IB_NET: [u8; 3] = [10, 78, 0];
/// Host number of the head on both fabrics: the top of the /24, away from node numbers.
pub const HEAD_HOST: u8 = 254;
/// Both fabrics are /24s.
pub const PREFIX: u8 = 24;
/// At most this many VMs: each costs ~800 MiB RSS and a share of 2 cores under TCG, so more than a few
/// dozen cannot boot within any timeout on the machines we run on; also keeps node numbers below HEAD_HOST.
pub const MAX_NODES: u32 = 64;
/// The gige bridge inside the lab's namespace (names are private to the namespace).
pub const GIGE_BRIDGE: &str = "br-gige";
/// The ib bridge inside the lab's namespace.
pub const IB_BRIDGE: &str = "br-ib";
/// Guest NIC names: `net.ifnames=0` on the kernel command line keeps them eth0/eth1.
pub const GIGE_NETDEV: &str = "eth0";
pub const IB_NETDEV: &str = "eth1";

/// Everything about one VM that follows from its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// 1-based node number.
    pub index: u8,
    pub name: String,
    pub gige: Ipv4Addr,
    pub ib: Ipv4Addr,
    pub gige_mac: String,
    pub ib_mac: String,
    pub gige_tap: String,
    pub ib_tap: String,
}

/// The head's addresses on gige and ib.
pub fn head() -> (Ipv4Addr, Ipv4Addr) {
    (addr(GIGE_NET, HEAD_HOST), addr(IB_NET, HEAD_HOST))
}

fn addr(net: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

/// Plans `nodes` VMs: node1..nodeN.
pub fn plan(nodes: u32) -> Result<Vec<NodePlan>, LabError> {
    if nodes == 0 || nodes > MAX_NODES {
        return Err(LabError::NodeCount {
            nodes,
            max: MAX_NODES,
        });
    }
    Ok((1..=nodes)
        .filter_map(|i| u8::try_from(i).ok())
        .map(|i| NodePlan {
            index: i,
            name: format!("node{i}"),
            gige: addr(GIGE_NET, i),
            ib: addr(IB_NET, i),
            // Locally administered QEMU prefix; the fabric's second octet and the node number follow.
            gige_mac: format!("52:54:00:{:02x}:00:{i:02x}", GIGE_NET[1]),
            ib_mac: format!("52:54:00:{:02x}:00:{i:02x}", IB_NET[1]),
            gige_tap: format!("gige{i}"),
            ib_tap: format!("ib{i}"),
        })
        .collect())
}

/// The lab's namespace name: fixed per lab directory, so two labs (two state dirs) never share one,
/// and `lab down` finds it even when the lab's state file is gone.
pub fn netns_name(lab_dir: &Path) -> String {
    let digest = Sha256::digest(lab_dir.to_string_lossy().as_bytes());
    let mut name = String::from("beowulf-lab-");
    for b in &digest[..4] {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// `/etc/hosts` for every node: the head and each node on both fabrics (`nodeN` is gige, `nodeN-ib` ib).
pub fn hosts_file(nodes: &[NodePlan]) -> String {
    let (hg, hi) = head();
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(s, "{hg}\thead");
    let _ = writeln!(s, "{hi}\thead-ib");
    for n in nodes {
        let _ = writeln!(s, "{}\t{}", n.gige, n.name);
        let _ = writeln!(s, "{}\t{}-ib", n.ib, n.name);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_nodes_get_matching_numbers_on_both_fabrics() {
        let p = plan(5).unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(p[0].name, "node1");
        assert_eq!(p[2].gige, Ipv4Addr::new(10, 77, 0, 3));
        assert_eq!(p[2].ib, Ipv4Addr::new(10, 78, 0, 3));
        assert_eq!(p[4].gige_mac, "52:54:00:4d:00:05");
        assert_eq!(p[4].ib_mac, "52:54:00:4e:00:05");
        assert_eq!(
            (p[1].gige_tap.as_str(), p[1].ib_tap.as_str()),
            ("gige2", "ib2")
        );
        assert_eq!(
            head(),
            (Ipv4Addr::new(10, 77, 0, 254), Ipv4Addr::new(10, 78, 0, 254))
        );
    }

    #[test]
    fn node_counts_are_bounded() {
        assert!(plan(0).is_err());
        assert!(plan(MAX_NODES).is_ok());
        let msg = plan(MAX_NODES + 1).unwrap_err().to_string();
        assert!(msg.contains("--nodes must be between 1 and 64"), "{msg}");
    }

    #[test]
    fn namespace_names_are_stable_short_and_per_directory() {
        let a = netns_name(Path::new("/var/lib/beowulf/lab"));
        assert_eq!(a, netns_name(Path::new("/var/lib/beowulf/lab")));
        assert_ne!(a, netns_name(Path::new("/tmp/other/lab")));
        assert_eq!(a.len(), "beowulf-lab-".len() + 8);
    }

    #[test]
    fn hosts_file_names_both_fabrics() {
        let h = hosts_file(&plan(2).unwrap());
        assert!(h.contains("10.77.0.254\thead\n"));
        assert!(h.contains("10.77.0.2\tnode2\n"));
        assert!(h.contains("10.78.0.2\tnode2-ib\n"));
    }
}
