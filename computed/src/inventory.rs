//! What the agent tells the head it has: the detected hardware, the admin's offer from
//! computed.toml, and provisioning's verdict on the verbs fabric.

use crate::config::Offer;
use beowulf_types::Inventory;
use std::path::{Path, PathBuf};

/// The marker the infiniband playbook's pair probe writes into the agent's state directory when
/// verbs traffic does not flow from this node to any peer (and removes when it does). Its text is
/// the reason; while it exists the node offers only `tcp`, even with an ACTIVE port.
pub const FABRIC_PROBLEM_FILE: &str = "fabric-problem";

/// Reads the node's inventory: hardware detection, then the offer and the fabric marker on top.
#[derive(Debug, Clone)]
pub struct InventorySource {
    offer: Option<Offer>,
    fabric_problem: PathBuf,
    /// CPUs the node keeps for itself (`reserved_cpus`), not offered to jobs.
    withheld_cpus: u32,
    /// GPUs found on the node (their device files).
    gpus: u32,
}

impl InventorySource {
    /// For an agent whose state directory is `state_dir`.
    pub fn new(offer: Option<Offer>, state_dir: &Path) -> Self {
        Self {
            offer,
            fabric_problem: state_dir.join(FABRIC_PROBLEM_FILE),
            withheld_cpus: 0,
            gpus: 0,
        }
    }

    /// Offers `gpus` GPUs as `gres gpu`, unless the offer names a GPU count itself.
    pub fn with_gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    /// Offers `cpus` fewer CPUs than detected: the node keeps them (`reserved_cpus`).
    pub fn withholding_cpus(mut self, cpus: u32) -> Self {
        self.withheld_cpus = cpus;
        self
    }

    /// Detects the running machine.
    pub fn detect(&self) -> Result<Inventory, beowulf_hardware::DetectError> {
        Ok(self.complete(beowulf_hardware::detect_host()?))
    }

    /// Applies the offer and the fabric marker to a detected inventory.
    pub fn complete(&self, mut inventory: Inventory) -> Inventory {
        inventory.cpus = inventory.cpus.saturating_sub(self.withheld_cpus).max(1);
        if let Some(offer) = &self.offer {
            inventory.cpus = offer.cpus.unwrap_or(inventory.cpus);
            inventory.memory_mb = offer.memory_mb.unwrap_or(inventory.memory_mb);
            inventory.features = offer.features.clone();
            inventory.gres = offer.gres.clone();
        }
        if self.gpus > 0 {
            inventory.gres.entry("gpu".to_string()).or_insert(self.gpus);
        }
        inventory.fabric_problem = read_fabric_problem(&self.fabric_problem);
        inventory
    }
}

/// The marker's reason; an unreadable marker still counts against the fabric.
fn read_fabric_problem(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            Some(format!("{} marks the verbs fabric broken", path.display()))
        }
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("{} is unreadable ({e})", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::{IbPort, IbPortState};

    fn active() -> Inventory {
        Inventory {
            cpus: 8,
            ib_ports: vec![IbPort {
                device: "rxe0".into(),
                port: 1,
                state: IbPortState::Active,
                phys_state: "5: LinkUp".into(),
                rate: String::new(),
                link_layer: "Ethernet".into(),
                netdev: Some("eth1".into()),
            }],
            ..Inventory::default()
        }
    }

    #[test]
    fn the_marker_makes_an_active_port_unusable_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let source = InventorySource::new(None, dir.path());
        assert!(source.complete(active()).has_active_ib());

        let marker = dir.path().join(FABRIC_PROBLEM_FILE);
        std::fs::write(&marker, "pair probe failed with node2, node5\n").unwrap();
        let inv = source.complete(active());
        assert!(!inv.has_active_ib());
        assert_eq!(
            inv.fabric_problem.as_deref(),
            Some("pair probe failed with node2, node5")
        );

        std::fs::remove_file(&marker).unwrap();
        assert!(source.complete(active()).has_active_ib());
    }

    #[test]
    fn the_offer_overrides_what_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let offer = Offer {
            cpus: Some(2),
            memory_mb: None,
            features: vec!["big".into()],
            gres: Default::default(),
        };
        let inv = InventorySource::new(Some(offer), dir.path()).complete(active());
        assert_eq!(
            (inv.cpus, inv.features.as_slice()),
            (2, &["big".to_string()][..])
        );
    }

    #[test]
    fn reserved_cpus_are_not_offered_unless_the_offer_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let source = InventorySource::new(None, dir.path()).withholding_cpus(2);
        assert_eq!(source.complete(active()).cpus, 6);
        let offer = Offer {
            cpus: Some(3),
            memory_mb: None,
            features: vec![],
            gres: Default::default(),
        };
        let explicit = InventorySource::new(Some(offer), dir.path()).withholding_cpus(2);
        assert_eq!(explicit.complete(active()).cpus, 3);
    }
}
