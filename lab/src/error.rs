//! The lab's error type: every variant says what failed, where, and what to do.

use beowulf_provision::NodeName;
use std::path::PathBuf;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespace, taps, bridges); run it with sudo")]
    NotRoot,
    #[error(
        "the lab needs host tools that are missing: {missing}; install them with `sudo scripts/lab-deps.sh` from the Beowulf source tree"
    )]
    MissingTools { missing: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot start `{program}`: {source}; run `sudo scripts/lab-deps.sh` if it is not installed"
    )]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}){detail}")]
    Command {
        command: String,
        status: String,
        detail: String,
    },
    #[error("image build step `{step}` failed: {reason}; see the log {log}")]
    BuildStep {
        step: &'static str,
        reason: String,
        log: PathBuf,
    },
    #[error(
        "cannot find the Debian kernel version: {reason}; run `apt-get update` and check that linux-image-amd64 is known to apt"
    )]
    KernelVersion { reason: String },
    #[error(transparent)]
    Inventory(#[from] beowulf_provision::SourceError),
    #[error(
        "{path}: cannot parse the lab state: {reason}; if the lab is gone, run `cluster lab down` to clean up"
    )]
    State { path: PathBuf, reason: String },
    #[error("--nodes must be between 1 and {max}, not {nodes}")]
    NodeCount { nodes: u32, max: u32 },
    #[error(
        "a lab is already up in {dir} ({alive} of {nodes} VMs running); run `cluster lab down` first"
    )]
    AlreadyUp {
        dir: PathBuf,
        alive: usize,
        nodes: u32,
    },
    #[error("no lab is up in {dir}; start one with `cluster lab up --nodes 5`")]
    NotUp { dir: PathBuf },
    #[error("the lab has no node `{node}`; its nodes are {known}")]
    UnknownNode { node: NodeName, known: String },
    #[error(
        "{node} did not {what} within {seconds} s{detail}; its serial console is logged in {log}; run `cluster lab down` to clean up"
    )]
    BootTimeout {
        node: String,
        what: &'static str,
        seconds: u64,
        log: PathBuf,
        /// The last failure seen while waiting (`: ...`), or empty.
        detail: String,
    },
    #[error(
        "{node} failed to boot: {reason}; its serial console is logged in {log}; run `cluster lab down` to clean up"
    )]
    GuestFailed {
        node: String,
        reason: String,
        log: PathBuf,
    },
    #[error("qemu for {node} exited during boot; its serial console is logged in {log}")]
    VmDied { node: String, log: PathBuf },
    #[error("BEOWULF_LAB_ACCEL must be `kvm`, `tcg` or `auto`, not `{value}`")]
    Accel { value: String },
}

impl LabError {
    /// An I/O error on `path` while trying to `action` it.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
