//! Verbs ports (InfiniBand or RoCE) from `/sys/class/infiniband`; no such directory means no RDMA, not an error.

use beowulf_types::{IbPort, IbPortState};

use crate::sysroot::{DetectError, SysRoot};

const INFINIBAND: &str = "sys/class/infiniband";

/// Every port of every verbs device, sorted by device then port number.
pub fn ib_ports(root: &SysRoot) -> Result<Vec<IbPort>, DetectError> {
    let Some(devices) = root.list_if_exists(INFINIBAND)? else {
        return Ok(Vec::new());
    };
    let mut ports = Vec::new();
    for device in devices {
        let ports_dir = format!("{INFINIBAND}/{device}/ports");
        let mut numbers: Vec<u32> = root
            .list_if_exists(&ports_dir)?
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        numbers.sort_unstable();
        for port in numbers {
            ports.push(read_port(root, &device, port)?);
        }
    }
    Ok(ports)
}

fn read_port(root: &SysRoot, device: &str, port: u32) -> Result<IbPort, DetectError> {
    let dir = format!("{INFINIBAND}/{device}/ports/{port}");
    let state = IbPortState::from_sysfs(&root.read(format!("{dir}/state"))?);
    Ok(IbPort {
        device: device.to_string(),
        port,
        state,
        phys_state: root.attr(format!("{dir}/phys_state")).unwrap_or_default(),
        // Some drivers fail the read (EINVAL) while the link is down.
        rate: root.attr(format!("{dir}/rate")).unwrap_or_default(),
        // Kernels before link_layer existed knew only InfiniBand.
        link_layer: root
            .attr(format!("{dir}/link_layer"))
            .unwrap_or_else(|| "InfiniBand".to_string()),
        netdev: netdev(root, device, port),
    })
}

/// The netdev carrying the port: the RoCE GID table's netdev, else the device's own netdevs (IPoIB),
/// choosing the one whose `dev_port` (0-based) matches the port when there are several.
fn netdev(root: &SysRoot, device: &str, port: u32) -> Option<String> {
    let dev_dir = format!("{INFINIBAND}/{device}");
    if let Some(name) = root.attr(format!("{dev_dir}/ports/{port}/gid_attrs/ndevs/0")) {
        return Some(name);
    }
    let net_dir = format!("{dev_dir}/device/net");
    let candidates = root.list_if_exists(&net_dir).ok().flatten()?;
    let wanted = port.saturating_sub(1).to_string();
    candidates
        .iter()
        .find(|name| root.attr(format!("{net_dir}/{name}/dev_port")).as_deref() == Some(&wanted))
        .or_else(|| candidates.first())
        .cloned()
}
