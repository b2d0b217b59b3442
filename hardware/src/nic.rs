//! Network interfaces: name, MAC, state and speed from `/sys/class/net`, addresses from the OS on the host.

use std::collections::HashMap;
use std::net::IpAddr;

use beowulf_types::Nic;

use crate::sysroot::{DetectError, SysRoot};

const NET: &str = "sys/class/net";

/// Every interface but the loopback, sorted by name. Addresses are filled only on the host:
/// sysfs has none, so a fixture's NICs have empty `addresses`.
pub fn nics(root: &SysRoot) -> Result<Vec<Nic>, DetectError> {
    let mut addresses = if root.is_host() {
        host_addresses(root)?
    } else {
        HashMap::new()
    };
    let nics = root
        .list(NET)?
        .into_iter()
        .filter(|name| name != "lo")
        .map(|name| {
            let dir = format!("{NET}/{name}");
            Nic {
                mac: root.attr(format!("{dir}/address")).unwrap_or_default(),
                up: root.attr(format!("{dir}/operstate")).as_deref() == Some("up"),
                speed_mbps: root
                    .attr(format!("{dir}/speed"))
                    .as_deref()
                    .and_then(parse_speed),
                addresses: addresses.remove(&name).unwrap_or_default(),
                name,
            }
        })
        .collect();
    Ok(nics)
}

/// sysfs `speed` in Mb/s; the kernel prints -1 (SPEED_UNKNOWN) when the link has none.
fn parse_speed(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok().filter(|&mbps| mbps > 0)
}

/// "addr/prefix" strings per interface from the OS (netlink via sysinfo), IPv4 first.
fn host_addresses(root: &SysRoot) -> Result<HashMap<String, Vec<String>>, DetectError> {
    let networks =
        sysinfo::Networks::new_with_refreshed_list().map_err(|source| DetectError::Addresses {
            path: root.path(NET),
            source,
        })?;
    let mut by_name = HashMap::new();
    for (name, data) in networks.iter() {
        let mut nets = data.ip_networks().to_vec();
        nets.sort_by_key(|n| matches!(n.addr, IpAddr::V6(_)));
        let list: Vec<String> = nets.iter().map(ToString::to_string).collect();
        by_name.insert(name.to_string_lossy().into_owned(), list);
    }
    Ok(by_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_values() {
        assert_eq!(parse_speed("1000\n"), Some(1000));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("0"), None);
    }
}
