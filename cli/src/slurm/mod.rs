//! Slurm's command names over the same client: `squeue`, `scancel`, `sacct`, `sinfo`,
//! `scontrol`, `sprio` and `sshare`; `salloc` for an allocation held while a command runs; and
//! `srun` for job steps (through the job's agents: its own node's inside a batch script, the
//! head's relay elsewhere), with the options and output formats that scripts and tools parse.
//! The `cluster` program runs as one of them when it is called by that name (an install links
//! each name to it), as `submit` runs as `sbatch`.
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
mod sprio;
mod squeue;
mod srun;
mod sshare;
mod terminal;

pub use sacct::FIELDS as SACCT_FIELDS;
pub use scontrol::{SUBCOMMANDS as SCONTROL_SUBCOMMANDS, UPDATE_FIELDS as SCONTROL_UPDATE_FIELDS};
pub use sprio::FIELDS as SPRIO_FIELDS;
pub use squeue::FIELDS as SQUEUE_FIELDS;
pub use srun::option_rows as srun_option_rows;
pub use sshare::{ABSENT_FIELDS as SSHARE_ABSENT_FIELDS, FIELDS as SSHARE_FIELDS};

use crate::{DEFAULT_STATE_DIR, Global};
use std::ffi::OsString;
use std::path::PathBuf;

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
    Sprio,
    Sshare,
}

impl SlurmCommand {
    pub const ALL: [SlurmCommand; 9] = [
        SlurmCommand::Squeue,
        SlurmCommand::Scancel,
        SlurmCommand::Sacct,
        SlurmCommand::Sinfo,
        SlurmCommand::Scontrol,
        SlurmCommand::Srun,
        SlurmCommand::Salloc,
        SlurmCommand::Sprio,
        SlurmCommand::Sshare,
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
            SlurmCommand::Sprio => "sprio",
            SlurmCommand::Sshare => "sshare",
        }
    }

    /// The command a program called `arg0` (a path, or a bare name) stands for.
    pub fn from_program_name(arg0: &std::ffi::OsStr) -> Option<SlurmCommand> {
        let name = std::path::Path::new(arg0).file_name()?.to_str()?;
        SlurmCommand::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// sprio's options as `(names, what they do here)`, from its own definition: for the docs.
pub fn sprio_option_rows() -> Vec<(String, String)> {
    sprio::option_rows()
}

/// salloc's options as `(names, what they do here)`, from its own definition: for the docs.
pub fn salloc_option_rows() -> Vec<(String, String)> {
    salloc::option_rows()
}

/// sshare's options as `(names, what they do here)`, from its own definition: for the docs.
pub fn sshare_option_rows() -> Vec<(String, String)> {
    sshare::option_rows()
}

/// A command's options as `(names, what they do here)`, from its clap definition (help and
/// version aside): for the docs.
fn option_rows(command: clap::Command) -> Vec<(String, String)> {
    command
        .get_arguments()
        .filter(|arg| {
            arg.get_long()
                .is_some_and(|l| l != "help" && l != "version")
        })
        .map(|arg| {
            let long = format!("`--{}`", arg.get_long().unwrap_or_default());
            let names = match arg.get_short() {
                Some(short) => format!("{long}, `-{short}`"),
                None => long,
            };
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            (names, help.replace('|', "\\|"))
        })
        .collect()
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
        SlurmCommand::Sprio => sprio::run(&socket, args).await,
        SlurmCommand::Sshare => sshare::run(&socket, args).await,
        // Inside a batch script: talks to its node's agent; elsewhere to the head.
        SlurmCommand::Srun => srun::run(&socket, args).await,
        SlurmCommand::Salloc => salloc::run(&socket, args).await,
    }
}
