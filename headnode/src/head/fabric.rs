//! Which interconnect an MPI job's run uses: InfiniBand verbs when every node of the allocation
//! has an ACTIVE port, TCP over the gigabit network otherwise, with the reason either way.

use beowulf_types::{Fabric, Inventory, NodeName, RunFabric};

/// The node feature the head gives every node with an ACTIVE verbs port. `fabric = "ib"` jobs are
/// constrained to it, so they wait (with the constraint as the reason) rather than fall back. The
/// colon keeps it apart from admin-defined features, which cannot contain one.
pub const IB_FEATURE: &str = "fabric:ib";

/// The fabric of one run and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricChoice {
    pub fabric: RunFabric,
    pub reason: String,
}

/// Chooses the fabric for a run on `nodes` (in allocation order).
pub fn choose(wanted: Fabric, nodes: &[(&NodeName, &Inventory)]) -> FabricChoice {
    // Nodes grouped by reason, in allocation order within a group: five nodes without a device
    // read as one clause, not five.
    let mut by_reason: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, inventory) in nodes {
        if let Some(reason) = inventory.ib_unusable_reason() {
            match by_reason.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, names)) => names.push(name.as_str()),
                None => by_reason.push((reason, vec![name.as_str()])),
            }
        }
    }
    let without = by_reason
        .iter()
        .map(|(reason, names)| format!("{} ({reason})", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    match wanted {
        Fabric::Tcp => FabricChoice {
            fabric: RunFabric::Tcp,
            reason: "the job asks for fabric = \"tcp\"".into(),
        },
        Fabric::Ib if without.is_empty() => FabricChoice {
            fabric: RunFabric::Ib,
            reason: "the job asks for fabric = \"ib\"; every node has an ACTIVE verbs port".into(),
        },
        // Placement keeps this from happening; say so if a node lost its fabric since.
        Fabric::Ib => FabricChoice {
            fabric: RunFabric::Ib,
            reason: format!(
                "the job asks for fabric = \"ib\", but at start these nodes could not use it: {without}"
            ),
        },
        Fabric::Auto if without.is_empty() => FabricChoice {
            fabric: RunFabric::Ib,
            reason: "auto: every node has an ACTIVE verbs port".into(),
        },
        Fabric::Auto => FabricChoice {
            fabric: RunFabric::Tcp,
            reason: format!("auto: using TCP, the verbs fabric is unusable on {without}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::{IbPort, IbPortState};

    fn node(active: bool) -> Inventory {
        Inventory {
            ib_ports: vec![IbPort {
                device: "rxe0".into(),
                port: 1,
                state: if active {
                    IbPortState::Active
                } else {
                    IbPortState::Down
                },
                phys_state: String::new(),
                rate: String::new(),
                link_layer: "Ethernet".into(),
                netdev: None,
            }],
            ..Inventory::default()
        }
    }

    #[test]
    fn auto_uses_ib_only_when_every_node_has_an_active_port() {
        let (a, b) = (NodeName::new("node1"), NodeName::new("node2"));
        let (up, down) = (node(true), node(false));
        let both = choose(Fabric::Auto, &[(&a, &up), (&b, &up)]);
        assert_eq!(both.fabric, RunFabric::Ib);
        let one = choose(Fabric::Auto, &[(&a, &up), (&b, &down)]);
        assert_eq!(one.fabric, RunFabric::Tcp);
        assert!(
            one.reason.contains("node2 (no ACTIVE verbs port"),
            "{}",
            one.reason
        );
        assert!(!one.reason.contains("node1"), "{}", one.reason);
        assert_eq!(choose(Fabric::Tcp, &[(&a, &up)]).fabric, RunFabric::Tcp);
    }

    #[test]
    fn a_failed_pair_probe_makes_an_active_port_unusable() {
        let a = NodeName::new("node1");
        let probed = Inventory {
            fabric_problem: Some("pair probe failed with node2, node5".into()),
            ..node(true)
        };
        let choice = choose(Fabric::Auto, &[(&a, &probed)]);
        assert_eq!(choice.fabric, RunFabric::Tcp);
        assert!(
            choice
                .reason
                .contains("node1 (pair probe failed with node2, node5)"),
            "{}",
            choice.reason
        );
    }
}
