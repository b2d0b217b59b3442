//! SSH for the lab: the per-lab client key, per-node host keys, the known_hosts file that makes every
//! connection verified, and the `ssh` command run inside the lab's namespace.

use crate::addressing::NodePlan;
use crate::host::Cmd;
use std::fmt::Write;
use std::path::Path;

/// The login user on lab nodes: provisioning needs root, as on real hosts.
pub const USER: &str = "root";

/// Seconds `ssh` waits for a TCP connection: a booted VM answers in well under a second even under TCG,
/// so a longer wait only delays `lab status` on a dead VM.
pub const CONNECT_TIMEOUT_S: u32 = 5;

/// `ssh-keygen` for a new ed25519 key without passphrase at `path` (`path.pub` holds the public half).
pub fn keygen_command(path: &Path, comment: &str) -> Cmd {
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .path_arg(path)
}

/// The public key without its comment (`ssh-ed25519 AAAA...`).
pub fn public_key_of(pub_line: &str) -> String {
    pub_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// known_hosts: one line per node naming it and both its addresses, with its host key.
pub fn known_hosts(entries: &[(&NodePlan, String)]) -> String {
    let mut s = String::new();
    for (n, key) in entries {
        let _ = writeln!(s, "{},{},{} {}", n.name, n.gige, n.ib, public_key_of(key));
    }
    s
}

/// Options that make `ssh` non-interactive and strictly verified against the lab's known_hosts.
pub fn ssh_options(key: &Path, known_hosts: &Path) -> Vec<String> {
    [
        "-i".to_string(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
    .into()
}

/// `ssh` to `address` inside namespace `ns`, running `command` (a login shell when empty).
pub fn ssh_command(
    ns: &str,
    key: &Path,
    known_hosts: &Path,
    address: &str,
    tty: bool,
    command: &[String],
) -> Cmd {
    let mut c = Cmd::new("ssh").args(ssh_options(key, known_hosts));
    if tty {
        c = c.arg("-t");
    }
    c.arg(format!("{USER}@{address}"))
        .args(command)
        .in_netns(ns)
}

/// The per-node `node.env` on the seed disk, read by the guest's `beowulf-lab-node` script.
pub fn node_env(n: &NodePlan, prefix: u8) -> String {
    format!(
        "NODE={}\nGIGE_ADDR={}\nIB_ADDR={}\nPREFIX={prefix}\n",
        n.name, n.gige, n.ib
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addressing::plan;

    #[test]
    fn known_hosts_lists_name_and_both_addresses() {
        let p = plan(2).unwrap();
        let kh = known_hosts(&[
            (&p[0], "ssh-ed25519 AAAA1 root@node1\n".to_string()),
            (&p[1], "ssh-ed25519 AAAA2".to_string()),
        ]);
        assert_eq!(
            kh,
            "node1,10.77.0.1,10.78.0.1 ssh-ed25519 AAAA1\nnode2,10.77.0.2,10.78.0.2 ssh-ed25519 AAAA2\n"
        );
    }

    #[test]
    fn ssh_is_strict_and_runs_in_the_namespace() {
        let c = ssh_command(
            "lab",
            Path::new("/l/ssh/id_ed25519"),
            Path::new("/l/known_hosts"),
            "10.77.0.1",
            false,
            &["uname".into(), "-r".into()],
        );
        let s = c.to_string();
        assert!(
            s.starts_with("ip netns exec lab ssh -i /l/ssh/id_ed25519"),
            "{s}"
        );
        assert!(s.contains("StrictHostKeyChecking=yes"), "{s}");
        assert!(s.contains("UserKnownHostsFile=/l/known_hosts"), "{s}");
        assert!(!s.contains("StrictHostKeyChecking=no"));
        assert!(s.ends_with("root@10.77.0.1 uname -r"), "{s}");
    }

    #[test]
    fn node_env_carries_the_addresses() {
        let p = plan(1).unwrap();
        assert_eq!(
            node_env(&p[0], 24),
            "NODE=node1\nGIGE_ADDR=10.77.0.1\nIB_ADDR=10.78.0.1\nPREFIX=24\n"
        );
    }
}
