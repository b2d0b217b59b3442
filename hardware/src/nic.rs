//! Network interfaces: name, MAC, state and speed from `/sys/class/net`, addresses from the OS on the host.

use std::collections::HashMap;

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

/// "addr/prefix" strings per interface from the OS (netlink via sysinfo), in canonical order.
fn host_addresses(root: &SysRoot) -> Result<HashMap<String, Vec<String>>, DetectError> {
    let networks =
        sysinfo::Networks::new_with_refreshed_list().map_err(|source| DetectError::Addresses {
            path: root.path(NET),
            source,
        })?;
    let mut by_name = HashMap::new();
    for (name, data) in networks.iter() {
        by_name.insert(
            name.to_string_lossy().into_owned(),
            canonical(data.ip_networks().to_vec()),
        );
    }
    Ok(by_name)
}

/// An interface's addresses in one order whatever order the OS gave them in: IPv4 first, then
/// by address and prefix, each once. The OS lists an interface's IPv6 addresses in a varying
/// order; compared as given, every detection looked like a change, which the agent reported
/// and the head committed to its store and logged about every 5 s per node.
fn canonical(mut nets: Vec<sysinfo::IpNetwork>) -> Vec<String> {
    nets.sort_unstable();
    nets.dedup();
    nets.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_in_one_order_whatever_the_os_order() {
        let net = |text: &str| text.parse::<sysinfo::IpNetwork>().unwrap();
        let one = vec![
            net("fe80::fc:ff:fe00:1/64"),
            net("192.0.2.2/24"),
            net("fd00::2/64"),
        ];
        let other = vec![
            net("fd00::2/64"),
            net("fe80::fc:ff:fe00:1/64"),
            net("192.0.2.2/24"),
        ];
        assert_eq!(canonical(one.clone()), canonical(other));
        assert_eq!(
            canonical(one),
            ["192.0.2.2/24", "fd00::2/64", "fe80::fc:ff:fe00:1/64"]
        );
        assert_eq!(
            canonical(vec![net("10.0.0.1/8"), net("10.0.0.1/8")]),
            ["10.0.0.1/8"]
        );
    }

    #[test]
    fn speed_values() {
        assert_eq!(parse_speed("1000\n"), Some(1000));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("0"), None);
    }
}
