//! What a node reports it has: CPUs, memory, NICs, InfiniBand ports and their state.

use serde::{Deserialize, Serialize};

// Inventory gained `features` and `gres` after the first release; records written before
// deserialize with both empty.

/// A node's hardware and OS, as detected by `hardware::detect()` on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub hostname: String,
    /// Logical CPUs usable by jobs.
    pub cpus: u32,
    pub memory_mb: u64,
    /// Distribution and version, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub nics: Vec<Nic>,
    /// Verbs ports (InfiniBand or RoCE); empty on a node without RDMA, which is a normal answer.
    pub ib_ports: Vec<IbPort>,
    /// Features jobs can ask for with `constraint` (set by the admin in computed.toml).
    #[serde(default)]
    pub features: Vec<String>,
    /// Generic resources by name and count (`gpu = 4`), set by the admin in computed.toml.
    #[serde(default)]
    pub gres: std::collections::BTreeMap<String, u32>,
    /// Why the verbs fabric must not be used although a port may be ACTIVE: provisioning's pair
    /// probe found that verbs traffic does not flow to any peer (read by the agent from the marker
    /// file the infiniband playbook writes). `None` when nothing is known against the fabric.
    #[serde(default)]
    pub fabric_problem: Option<String>,
}

impl Inventory {
    /// True when the node can use the `ib` fabric: a verbs port is ACTIVE and no probe found the
    /// fabric broken.
    pub fn has_active_ib(&self) -> bool {
        self.ib_unusable_reason().is_none()
    }

    /// Why the node cannot use the `ib` fabric, or `None` when it can.
    pub fn ib_unusable_reason(&self) -> Option<String> {
        if let Some(problem) = &self.fabric_problem {
            return Some(problem.clone());
        }
        if self.ib_ports.iter().any(|p| p.state == IbPortState::Active) {
            return None;
        }
        Some(match self.ib_ports.first() {
            Some(port) => format!(
                "no ACTIVE verbs port ({} port {} is {})",
                port.device,
                port.port,
                port.state.as_str()
            ),
            None => "no InfiniBand or RoCE device".to_string(),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// Addresses with prefix length, e.g. "10.77.0.11/24".
    pub addresses: Vec<String>,
    pub up: bool,
    /// Link speed in Mb/s when the driver reports one.
    pub speed_mbps: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IbPort {
    /// Verbs device, e.g. "mlx5_0" or "rxe0".
    pub device: String,
    pub port: u32,
    pub state: IbPortState,
    /// Physical state as sysfs prints it, e.g. "5: LinkUp".
    pub phys_state: String,
    /// Rate as sysfs prints it, e.g. "100 Gb/sec (4X EDR)".
    pub rate: String,
    /// "InfiniBand" or "Ethernet" (RoCE).
    pub link_layer: String,
    /// The netdev carrying the port (IPoIB interface, or the Ethernet NIC under RoCE), if any.
    pub netdev: Option<String>,
}

/// Logical port state, from `/sys/class/infiniband/<dev>/ports/<n>/state` ("4: ACTIVE").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IbPortState {
    Down,
    Init,
    Armed,
    Active,
    ActiveDefer,
    Unknown,
}

impl IbPortState {
    /// Parses sysfs's "4: ACTIVE" form (or the bare name).
    pub fn from_sysfs(text: &str) -> IbPortState {
        let name = text.trim().rsplit(':').next().unwrap_or("").trim();
        match name {
            "DOWN" => IbPortState::Down,
            "INIT" => IbPortState::Init,
            "ARMED" => IbPortState::Armed,
            "ACTIVE" => IbPortState::Active,
            "ACTIVE_DEFER" => IbPortState::ActiveDefer,
            _ => IbPortState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IbPortState::Down => "DOWN",
            IbPortState::Init => "INIT",
            IbPortState::Armed => "ARMED",
            IbPortState::Active => "ACTIVE",
            IbPortState::ActiveDefer => "ACTIVE_DEFER",
            IbPortState::Unknown => "UNKNOWN",
        }
    }
}
