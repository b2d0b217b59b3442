//! The lab's private network: a namespace with one bridge per fabric, the head's addresses on both, a tap
//! per VM NIC, and no route out. Commands are built here (pure) and run by a `Host`.

use crate::addressing::{self, GIGE_BRIDGE, IB_BRIDGE, NodePlan, PREFIX};
use crate::host::Cmd;
use std::path::Path;

/// `ip netns add` keeps named namespaces here.
pub const NETNS_DIR: &str = "/run/netns";

pub fn exists(ns: &str) -> bool {
    Path::new(NETNS_DIR).join(ns).exists()
}

fn ip(ns: &str) -> Cmd {
    Cmd::new("ip").args(["-n", ns])
}

/// Creates the namespace, its bridges with the head's addresses, and two taps per node. No default route
/// and no link to the host: nothing in it can reach beyond the lab.
pub fn up_commands(ns: &str, nodes: &[NodePlan]) -> Vec<Cmd> {
    let (head_gige, head_ib) = addressing::head();
    let mut cmds = vec![
        Cmd::new("ip").args(["netns", "add", ns]),
        ip(ns).args(["link", "set", "lo", "up"]),
    ];
    for (bridge, addr) in [(GIGE_BRIDGE, head_gige), (IB_BRIDGE, head_ib)] {
        cmds.push(ip(ns).args(["link", "add", bridge, "type", "bridge"]));
        cmds.push(ip(ns).args(["addr", "add", &format!("{addr}/{PREFIX}"), "dev", bridge]));
        cmds.push(ip(ns).args(["link", "set", bridge, "up"]));
    }
    for n in nodes {
        for (tap, bridge) in [(&n.gige_tap, GIGE_BRIDGE), (&n.ib_tap, IB_BRIDGE)] {
            cmds.push(ip(ns).args(["tuntap", "add", tap, "mode", "tap"]));
            cmds.push(ip(ns).args(["link", "set", tap, "master", bridge]));
            cmds.push(ip(ns).args(["link", "set", tap, "up"]));
        }
    }
    cmds
}

/// Deletes the namespace; its bridges and taps go with it.
pub fn down_command(ns: &str) -> Cmd {
    Cmd::new("ip").args(["netns", "delete", ns])
}

/// Lists the links enslaved to `bridge` in `ns` (for status and checks).
pub fn bridge_members_command(ns: &str, bridge: &str) -> Cmd {
    ip(ns).args(["-o", "link", "show", "master", bridge])
}

/// Interface names from `ip -o link show` output ("7: gige1: <...> ...", possibly "gige1@if3").
pub fn parse_link_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addressing::plan;

    #[test]
    fn bridges_get_the_head_addresses_and_taps_their_bridge() {
        let cmds: Vec<String> = up_commands("lab", &plan(2).unwrap())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(cmds[0], "ip netns add lab");
        assert!(cmds.contains(&"ip -n lab addr add 10.77.0.254/24 dev br-gige".to_string()));
        assert!(cmds.contains(&"ip -n lab addr add 10.78.0.254/24 dev br-ib".to_string()));
        assert!(cmds.contains(&"ip -n lab link set ib2 master br-ib".to_string()));
        assert!(cmds.contains(&"ip -n lab link set gige1 master br-gige".to_string()));
        assert!(
            !cmds
                .iter()
                .any(|c| c.contains("route") || c.contains("veth")),
            "no way out"
        );
        assert_eq!(down_command("lab").to_string(), "ip netns delete lab");
    }

    #[test]
    fn link_names_are_parsed() {
        let out = "5: ib1: <BROADCAST,UP> mtu 1500 master br-ib state UP\n6: ib2@if9: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_names(out), ["ib1", "ib2"]);
    }
}
