//! The narrow OS boundary of provisioning: run a command, put a file, read a file, on one node.
//!
//! Implementations: [`LocalTransport`] (the head's own steps), [`SshTransport`] (compute nodes, russh,
//! host keys pinned), [`RecordingTransport`] (a scripted fake for tests). A [`Connector`] turns an
//! inventory entry into a transport, so the engine never knows which kind it holds.

mod connector;
mod host_key;
mod local;
mod recording;
mod ssh;

pub use connector::{Connector, InventoryConnector, RecordingConnector};
pub use host_key::{HostKeyPolicy, KnownHosts};
pub use local::LocalTransport;
pub use recording::{Call, FakeState, RecordingTransport};
pub use ssh::{SshTarget, SshTransport};

use async_trait::async_trait;
use beowulf_types::NodeName;
use std::path::PathBuf;

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; `128 + signal` when a signal ended it, -1 when none was reported.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// A successful command printing `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Self {
            status: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// A command exiting with `status` and printing `stderr`.
    pub fn fail(status: i32, stderr: impl Into<String>) -> Self {
        Self {
            status,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
}

/// One node, reachable for commands and files.
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The node's name (for errors).
    fn node(&self) -> &NodeName;

    /// Runs `command` with `sh -c` semantics and waits for it.
    async fn exec(&self, command: &str) -> Result<ExecOutput, TransportError>;

    /// Writes `bytes` to `path` atomically (temp file + rename), creating parent directories.
    async fn put_file(&self, path: &str, bytes: &[u8], mode: u32) -> Result<(), TransportError>;

    /// Reads `path`; `None` when it does not exist.
    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, TransportError>;
}

/// A transport that cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error(
        "cannot connect to {node} at {address}: {reason}; check that the node is up, reachable from the head and runs sshd"
    )]
    Connect {
        node: NodeName,
        address: String,
        reason: String,
    },
    #[error(
        "host key of {node} ({address}) is not known: it offered {offered}, and {known_hosts} has no key for it; if this is the right machine, add its key to known_hosts (or `host_key` in cluster.toml)"
    )]
    UnknownHostKey {
        node: NodeName,
        address: String,
        offered: String,
        known_hosts: PathBuf,
    },
    #[error(
        "host key of {node} ({address}) CHANGED: it offered {offered}, but the recorded key is {expected}; someone may be impersonating the node, or it was reinstalled: check, then update known_hosts (or `host_key` in cluster.toml)"
    )]
    HostKeyChanged {
        node: NodeName,
        address: String,
        offered: String,
        expected: String,
    },
    #[error(
        "{node} refused the SSH key {key} for user {user}: add its public key to ~{user}/.ssh/authorized_keys on the node"
    )]
    AuthRejected {
        node: NodeName,
        user: String,
        key: PathBuf,
    },
    #[error("cannot use the SSH key {path}: {reason}; check `ssh.key` in cluster.toml")]
    Key { path: PathBuf, reason: String },
    #[error("cannot read known_hosts {path}: {reason}; check `ssh.known_hosts` in cluster.toml")]
    KnownHosts { path: PathBuf, reason: String },
    #[error("on {node}: {operation} failed: {reason}")]
    Io {
        node: NodeName,
        operation: String,
        reason: String,
    },
}

/// Shell-quotes `s` for a POSIX shell (single quotes, `'` escaped).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting_keeps_plain_words_and_escapes_quotes() {
        assert_eq!(shell_quote("/etc/nslcd.conf"), "/etc/nslcd.conf");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
