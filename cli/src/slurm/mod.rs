//! Slurm's command names over the same client: `squeue`, `scancel`, `sacct`, `sinfo` and
//! `scontrol`, and `srun` for job steps inside a job (through the node's agent), with the options and output formats that scripts and tools parse. The `cluster`
//! program runs as one of them when it is called by that name (an install links each name to it),
//! as `submit` runs as `sbatch`.
//!
//! Every option each command takes is honoured or refused with a message; none is accepted and
//! ignored, except where Slurm's meaning is what happens here anyway (`squeue --all`).

mod allocate;
mod format;
mod jobs;
mod sacct;
mod salloc;
mod scancel;
mod scontrol;
mod sinfo;
mod squeue;
mod srun;
mod terminal;

pub use sacct::FIELDS as SACCT_FIELDS;
pub use scontrol::{SUBCOMMANDS as SCONTROL_SUBCOMMANDS, UPDATE_FIELDS as SCONTROL_UPDATE_FIELDS};
pub use squeue::FIELDS as SQUEUE_FIELDS;
pub use srun::option_rows as srun_option_rows;

use crate::{DEFAULT_STATE_DIR, Global};

/// Signals a Slurm command lets its child handle (a shell's Ctrl-C is the shell's): while this
/// lives, they do not end the command itself.
pub(crate) struct IgnoredSignals {
    _streams: Vec<tokio::signal::unix::Signal>,
}

impl IgnoredSignals {
    pub(crate) fn new() -> std::io::Result<IgnoredSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(IgnoredSignals {
            _streams: vec![
                signal(SignalKind::interrupt())?,
                signal(SignalKind::quit())?,
            ],
        })
    }
}
use std::ffi::OsString;
use std::path::PathBuf;

/// A Slurm command this program answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmCommand {
    Squeue,
    Scancel,
    Sacct,
    Sinfo,
    Scontrol,
    Srun,
    Salloc,
}

impl SlurmCommand {
    pub const ALL: [SlurmCommand; 7] = [
        SlurmCommand::Squeue,
        SlurmCommand::Scancel,
        SlurmCommand::Sacct,
        SlurmCommand::Sinfo,
        SlurmCommand::Scontrol,
        SlurmCommand::Srun,
        SlurmCommand::Salloc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SlurmCommand::Squeue => "squeue",
            SlurmCommand::Scancel => "scancel",
            SlurmCommand::Sacct => "sacct",
            SlurmCommand::Sinfo => "sinfo",
            SlurmCommand::Scontrol => "scontrol",
            SlurmCommand::Srun => "srun",
            SlurmCommand::Salloc => "salloc",
        }
    }

    /// The command a program called `arg0` (a path, or a bare name) stands for.
    pub fn from_program_name(arg0: &std::ffi::OsStr) -> Option<SlurmCommand> {
        let name = std::path::Path::new(arg0).file_name()?.to_str()?;
        SlurmCommand::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Where the cluster is, for commands that take no `--state-dir`: `BEOWULF_STATE_DIR` and
/// `BEOWULF_SOCKET`, as for `cluster`.
fn global_from_env() -> Global {
    Global {
        state_dir: std::env::var_os("BEOWULF_STATE_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), PathBuf::from),
        socket: std::env::var_os("BEOWULF_SOCKET").map(PathBuf::from),
    }
}

/// Runs `command` with `args` (argv, the program name first); returns the exit code.
pub async fn run(command: SlurmCommand, args: Vec<OsString>) -> anyhow::Result<i32> {
    let socket = global_from_env().socket();
    match command {
        SlurmCommand::Squeue => squeue::run(&socket, args).await,
        SlurmCommand::Scancel => scancel::run(&socket, args).await,
        SlurmCommand::Sacct => sacct::run(&socket, args).await,
        SlurmCommand::Sinfo => sinfo::run(&socket, args).await,
        SlurmCommand::Scontrol => scontrol::run(&socket, args).await,
        // Inside a batch script: talks to its node's agent; elsewhere to the head.
        SlurmCommand::Srun => srun::run(&socket, args).await,
        SlurmCommand::Salloc => salloc::run(&socket, args).await,
    }
}
