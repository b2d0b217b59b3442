//! Conversions between the wire messages and the plain domain types of `beowulf-types`.

use crate::v1;
use beowulf_types::{IbPort, IbPortState, Inventory, Nic};

impl From<&Inventory> for v1::Inventory {
    fn from(inv: &Inventory) -> Self {
        v1::Inventory {
            hostname: inv.hostname.clone(),
            cpus: inv.cpus,
            memory_mb: inv.memory_mb,
            os: inv.os.clone(),
            kernel: inv.kernel.clone(),
            arch: inv.arch.clone(),
            nics: inv
                .nics
                .iter()
                .map(|n| v1::Nic {
                    name: n.name.clone(),
                    mac: n.mac.clone(),
                    addresses: n.addresses.clone(),
                    up: n.up,
                    speed_mbps: n.speed_mbps,
                })
                .collect(),
            ib_ports: inv
                .ib_ports
                .iter()
                .map(|p| v1::IbPort {
                    device: p.device.clone(),
                    port: p.port,
                    state: p.state.as_str().to_string(),
                    phys_state: p.phys_state.clone(),
                    rate: p.rate.clone(),
                    link_layer: p.link_layer.clone(),
                    netdev: p.netdev.clone(),
                })
                .collect(),
            features: inv.features.clone(),
            gres: inv.gres.clone().into_iter().collect(),
            fabric_problem: inv.fabric_problem.clone(),
        }
    }
}

impl From<&v1::Inventory> for Inventory {
    fn from(inv: &v1::Inventory) -> Self {
        Inventory {
            hostname: inv.hostname.clone(),
            cpus: inv.cpus,
            memory_mb: inv.memory_mb,
            os: inv.os.clone(),
            kernel: inv.kernel.clone(),
            arch: inv.arch.clone(),
            nics: inv
                .nics
                .iter()
                .map(|n| Nic {
                    name: n.name.clone(),
                    mac: n.mac.clone(),
                    addresses: n.addresses.clone(),
                    up: n.up,
                    speed_mbps: n.speed_mbps,
                })
                .collect(),
            ib_ports: inv
                .ib_ports
                .iter()
                .map(|p| IbPort {
                    device: p.device.clone(),
                    port: p.port,
                    state: IbPortState::from_sysfs(&p.state),
                    phys_state: p.phys_state.clone(),
                    rate: p.rate.clone(),
                    link_layer: p.link_layer.clone(),
                    netdev: p.netdev.clone(),
                })
                .collect(),
            features: inv.features.clone(),
            gres: inv.gres.clone().into_iter().collect(),
            fabric_problem: inv.fabric_problem.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_survives_the_wire() {
        let inv = Inventory {
            hostname: "node1".into(),
            cpus: 2,
            memory_mb: 4096,
            os: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            nics: vec![Nic {
                name: "eth0".into(),
                mac: "52:54:00:00:00:01".into(),
                addresses: vec!["10.77.0.11/24".into()],
                up: true,
                speed_mbps: Some(1000),
            }],
            ib_ports: vec![IbPort {
                device: "rxe0".into(),
                port: 1,
                state: IbPortState::Active,
                phys_state: "5: LinkUp".into(),
                rate: "10 Gb/sec (1X QDR)".into(),
                link_layer: "Ethernet".into(),
                netdev: Some("eth1".into()),
            }],
            features: vec!["ib".into()],
            gres: [("gpu".to_string(), 2)].into(),
            fabric_problem: Some("pair probe to node2 failed".into()),
        };
        let wire = v1::Inventory::from(&inv);
        assert_eq!(Inventory::from(&wire), inv);
    }
}
