//! Inventory detection: what a node has (CPUs, memory, OS, NICs, verbs ports), read under a `SysRoot`.
//!
//! Everything is read with plain file reads under the root's prefix, so a fixture tree captured from
//! a machine drives the same code as the host. Only NIC addresses, which sysfs does not hold, come
//! from the OS, and only when the root is the host's `/`.

#![forbid(unsafe_code)]

mod cpu;
mod infiniband;
mod memory;
mod nic;
mod os;
mod sysroot;

pub use beowulf_types::{IbPort, IbPortState, Inventory, Nic};
pub use sysroot::{DetectError, SysRoot};

/// Detects the inventory of the machine (or fixture) at `root`.
///
/// A machine without `/sys/class/infiniband` has empty `ib_ports`; a missing `/proc` file is an error.
pub fn detect(root: &SysRoot) -> Result<Inventory, DetectError> {
    Ok(Inventory {
        hostname: os::hostname(root)?,
        cpus: cpu::cpus(root)?,
        memory_mb: memory::memory_mb(root)?,
        os: os::os(root)?,
        kernel: os::kernel(root)?,
        arch: os::arch(root)?,
        nics: nic::nics(root)?,
        ib_ports: infiniband::ib_ports(root)?,
        // Features and generic resources are the admin's word (computed.toml), not detected.
        features: Vec::new(),
        gres: Default::default(),
        // Provisioning's verdict on the fabric, not hardware: the agent adds it.
        fabric_problem: None,
    })
}

/// Detects the inventory of the running machine.
pub fn detect_host() -> Result<Inventory, DetectError> {
    detect(&SysRoot::host())
}
