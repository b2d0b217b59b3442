//! Host-key pinning: which SSH host keys a node may present, from the inventory's `host_key` and its
//! known_hosts file. Unknown and changed keys are refused; nothing is ever trusted on first use.

use super::TransportError;
use beowulf_types::NodeName;
use russh::keys::PublicKey;
use std::path::{Path, PathBuf};

/// The parsed lines of a known_hosts file (plain host names; hashed `|1|` entries are not matched).
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(Vec<String>, PublicKey)>,
}

impl KnownHosts {
    /// Reads a known_hosts file. A missing file is an error: the inventory names it on purpose.
    pub fn load(path: &Path) -> Result<Self, TransportError> {
        let text = std::fs::read_to_string(path).map_err(|e| TransportError::KnownHosts {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::parse(path, &text))
    }

    /// Parses known_hosts text; lines it cannot use (markers, hashed names, bad keys) are skipped.
    pub fn parse(path: &Path, text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
            .filter_map(|l| {
                let (hosts, key) = l.split_once(char::is_whitespace)?;
                let key = PublicKey::from_openssh(key.trim()).ok()?;
                let hosts = hosts.split(',').map(str::to_string).collect();
                Some((hosts, key))
            })
            .collect();
        Self {
            path: path.to_path_buf(),
            entries,
        }
    }

    /// Keys recorded for `host` on `port` (`host` for port 22, `[host]:port` otherwise).
    pub fn keys_for(&self, host: &str, port: u16) -> Vec<PublicKey> {
        let wanted = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        self.entries
            .iter()
            .filter(|(hosts, _)| hosts.contains(&wanted))
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The file these entries came from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The host keys one node may present.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    pub node: NodeName,
    pub address: String,
    pub expected: Vec<PublicKey>,
    /// Where the keys came from (named in errors).
    pub known_hosts: PathBuf,
}

impl HostKeyPolicy {
    /// Keys for a node: its inventory `host_key` (if any) plus known_hosts entries for its name and address.
    pub fn for_node(
        node: &NodeName,
        address: &str,
        port: u16,
        host_key: Option<&str>,
        known_hosts: &KnownHosts,
    ) -> Result<Self, TransportError> {
        let mut expected = Vec::new();
        if let Some(line) = host_key {
            expected.push(PublicKey::from_openssh(line.trim()).map_err(|e| {
                TransportError::KnownHosts {
                    path: known_hosts.path().to_path_buf(),
                    reason: format!(
                        "host_key of {node} in cluster.toml is not an OpenSSH public key: {e}"
                    ),
                }
            })?);
        }
        expected.extend(known_hosts.keys_for(address, port));
        expected.extend(known_hosts.keys_for(node.as_str(), port));
        Ok(Self {
            node: node.clone(),
            address: address.to_string(),
            expected,
            known_hosts: known_hosts.path().to_path_buf(),
        })
    }

    /// Accepts `offered` if it is one of the expected keys; otherwise says why not.
    pub fn verify(&self, offered: &PublicKey) -> Result<(), TransportError> {
        if self
            .expected
            .iter()
            .any(|k| k.key_data() == offered.key_data())
        {
            return Ok(());
        }
        let offered = offered
            .to_openssh()
            .unwrap_or_else(|_| offered.algorithm().to_string());
        match self.expected.first() {
            None => Err(TransportError::UnknownHostKey {
                node: self.node.clone(),
                address: self.address.clone(),
                offered,
                known_hosts: self.known_hosts.clone(),
            }),
            Some(k) => Err(TransportError::HostKeyChanged {
                node: self.node.clone(),
                address: self.address.clone(),
                offered,
                expected: k.to_openssh().unwrap_or_default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBo0AjD0u9b7d3Pp3NRrDlxGmvh0sEfGsm8KJsIlSDXA";

    #[test]
    fn known_hosts_match_by_address_and_port() {
        let kh = KnownHosts::parse(
            Path::new("kh"),
            &format!("# c\n10.0.0.1,node1 {A}\n[127.0.0.1]:2222 {B}\n|1|abc|def {A}\n"),
        );
        assert_eq!(kh.keys_for("10.0.0.1", 22).len(), 1);
        assert_eq!(kh.keys_for("node1", 22).len(), 1);
        assert_eq!(kh.keys_for("127.0.0.1", 2222).len(), 1);
        assert!(kh.keys_for("127.0.0.1", 22).is_empty());
    }

    #[test]
    fn unknown_and_changed_keys_are_refused_naming_the_node() {
        let a = PublicKey::from_openssh(A).unwrap();
        let b = PublicKey::from_openssh(B).unwrap();
        let empty = KnownHosts::parse(Path::new("/kh"), "");
        let node1 = NodeName::new("node1");
        let none = HostKeyPolicy::for_node(&node1, "10.0.0.1", 22, None, &empty).unwrap();
        let err = none.verify(&a).unwrap_err();
        assert!(
            matches!(err, TransportError::UnknownHostKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("node1"), "{err}");
        let pinned = HostKeyPolicy::for_node(&node1, "10.0.0.1", 22, Some(A), &empty).unwrap();
        pinned.verify(&a).unwrap();
        let err = pinned.verify(&b).unwrap_err();
        assert!(
            err.to_string().contains("CHANGED") && err.to_string().contains("node1"),
            "{err}"
        );
    }
}
