//! The launcher: starts a job's tasks on this node, each job run in its own cgroup, and kills and
//! cleans them up again (docs/design.md §3, "launcher").
//!
//! The reconciler talks to the [`Launcher`] trait only. [`ProcessLauncher`] is the real one (cgroup v1
//! or v2, falling back to process groups when cgroups are not writable); [`RecordingLauncher`] is a
//! recording fake for tests of the code above it.

mod cgroup;
pub(crate) use cgroup::parse_mountinfo;
mod child;
mod cpus;
mod cpuset;
mod dynmods;
mod fake;
mod process;
mod spawn;
#[cfg(test)]
mod tests;

pub use cpus::{CpuError, TaskCpus, cpu_list};
pub use dynmods::{FavorError, FavorOutcome, V1_FAVOR_MOUNT, favor_dynamic_moves};
pub use fake::{LauncherCall, RecordingLauncher};
pub use process::ProcessLauncher;

use beowulf_as_user::UserCredentials;
use beowulf_types::{RunKey, TaskKey};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

/// Limits for a job's cgroup on this node. `cpus == 0` and `memory_mb == 0` mean "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobLimits {
    pub cpus: u32,
    pub memory_mb: u64,
    /// Processes and threads of the run on this node at most (the pids controller); `None`: no
    /// limit.
    pub pids_max: Option<u32>,
}

/// One task (rank) to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLaunch {
    pub key: TaskKey,
    /// `argv[0]` is looked up in the `PATH` of `env` if it has no '/' (a relative `PATH` entry or a
    /// relative `argv[0]` is relative to `workdir`).
    pub argv: Vec<String>,
    /// The complete environment: the child's environment is cleared first.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    /// May be the same path as `stderr`. Created (mode 0644) or appended to as the task's user; a
    /// relative path is relative to `workdir`.
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Every group of the user, the primary one included (Slurm's send_gids).
    pub groups: Vec<u32>,
    /// The submitter's umask: the task's and its output files'.
    pub umask: u32,
    /// Run the task in a container: the launcher starts the OCI runtime (as root, in the job's
    /// cgroup, with the output files opened as the user) on a bundle whose config.json already
    /// holds `argv`, `env`, the working directory and the user.
    pub container: Option<ContainerRun>,
    /// Where stdout and stderr go.
    pub output: TaskOutput,
}

/// Where a task's stdout and stderr go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TaskOutput {
    /// Appended to the `stdout` and `stderr` files, opened as the task's user.
    #[default]
    Files,
    /// Into pipes whose read ends [`Launcher::start_task`] returns, for the agent to forward to
    /// the node that writes the job's files: one pipe when stdout and stderr name the same file
    /// (their lines stay in order, as in the file), else one each.
    Pipes,
    /// Into two pipes, stdout and stderr apart whatever the paths say: a job step's output,
    /// which the agent streams back to the step's `srun`.
    Streams,
    /// On a new pseudo-terminal of this size (`srun --pty`): it is the task's controlling
    /// terminal, stdin, stdout and stderr; [`StartedTask::pipes`] holds its master side, for the
    /// agent to read the output from and write the user's keys into.
    Terminal(TerminalSize),
}

/// Rows and columns of a task's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

impl TerminalSize {
    pub fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// A task that started.
#[derive(Debug)]
pub struct StartedTask {
    pub pid: u32,
    /// The read ends of its output pipes ([`TaskOutput::Pipes`]).
    pub pipes: Option<TaskPipes>,
}

/// The read ends of a task's output pipes.
#[derive(Debug)]
pub struct TaskPipes {
    pub stdout: OwnedFd,
    /// `None` when stderr goes into the stdout pipe.
    pub stderr: Option<OwnedFd>,
}

/// A container to run with an OCI runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRun {
    /// runc or crun.
    pub runtime: PathBuf,
    /// The bundle directory (holds config.json).
    pub bundle: PathBuf,
    /// The container ID, unique on this host.
    pub id: String,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub key: TaskKey,
    /// The exit status, or 128 + signal number when the task was killed by a signal; 127 or 126
    /// when it could not be started (see [`LaunchError::exit_code`]).
    pub code: i32,
    /// Human-readable: "exited with code 7", "killed by signal 9 (SIGKILL)", or why it did not start.
    pub detail: String,
}

impl TaskExit {
    /// The exit to report for a task whose [`Launcher::start_task`] failed.
    pub fn not_started(key: TaskKey, error: &LaunchError) -> TaskExit {
        TaskExit {
            key,
            code: error.exit_code(),
            detail: error.to_string(),
        }
    }
}

/// Starts, kills and cleans up a job's tasks on this node.
pub trait Launcher: Send + Sync + 'static {
    /// Creates the job run's cgroup(s) with these limits; idempotent. Must precede `start_task`.
    fn prepare_job(&self, key: RunKey, limits: &JobLimits) -> Result<(), LaunchError>;
    /// Starts one task in the job's cgroup; its TaskExit is sent on `exits` when it ends.
    fn start_task(
        &self,
        task: TaskLaunch,
        exits: UnboundedSender<TaskExit>,
    ) -> Result<StartedTask, LaunchError>;
    /// Kills every process of the job on this node (whole cgroup, including grandchildren), idempotent.
    fn kill_job(&self, key: RunKey) -> Result<(), LaunchError>;
    /// Sends `signal` to every process of the job on this node (its whole cgroup), as a first,
    /// catchable request to stop; idempotent, and a job with no process left is fine.
    fn signal_job(&self, key: RunKey, signal: nix::sys::signal::Signal) -> Result<(), LaunchError>;
    /// Sends `signal` to one task the launcher started (pid `pid`; with `session`, every process
    /// of its session too): a job step's task, or a batch script's shell alone (`--signal=B:`).
    /// Nothing happens when the task is gone.
    fn signal_task(&self, task: TaskKey, pid: u32, signal: nix::sys::signal::Signal, session: bool);
    /// How many of the job's processes on this node the kernel's OOM killer ended (0 when the
    /// node cannot tell).
    fn oom_kills(&self, key: RunKey) -> u64;
    /// True while any process of the job is alive on this node.
    fn job_alive(&self, key: RunKey) -> bool;
    /// Removes the job's cgroup(s) once its processes are gone; idempotent.
    fn release_job(&self, key: RunKey) -> Result<(), LaunchError>;
    /// Job runs whose cgroups exist from an earlier computed process (found at start-up), so the agent can kill them.
    fn leftover_jobs(&self) -> Vec<RunKey>;
    /// The agent is stopping, its runs killed: releases every run with no process left and
    /// removes what the launcher made on the host (the node's cgroup directories) if empty.
    /// Without it every agent that ever ran left its node's directories behind, and thousands of
    /// empty cgroups make every cgroup created after them dearer (the CPU controller walks all of
    /// its groups when a quota is set).
    fn shut_down(&self);
}

/// Opens an output file of a task of `user` for appending (created with 0666 less the task's
/// `umask`), with that user's filesystem identity, as the task itself would: the agent writes
/// output forwarded from other nodes into it, and on NFS with root squashed only the user may.
pub fn open_output_as(
    path: &Path,
    user: &UserCredentials,
    umask: u32,
) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true).mode(0o666 & !umask);
    beowulf_as_user::open_as(user, path, &options)
}

/// Why the launcher could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid node name {name:?} for the launcher: {reason}")]
    InvalidNodeName { name: String, reason: &'static str },

    #[error(
        "job {run} is not prepared on this node (prepare_job was not called, or the job was released)"
    )]
    NotPrepared { run: RunKey },

    #[error("job {run} still has live processes on this node")]
    StillRunning { run: RunKey },

    #[error("{task} has an empty argv")]
    EmptyArgv { task: TaskKey },

    #[error("{task}: program {program:?} not found in PATH {search_path:?}")]
    ProgramNotFound {
        task: TaskKey,
        program: String,
        search_path: String,
    },

    #[error(
        "{task}: cannot run as uid {uid} gid {gid} because the agent runs as uid {agent_uid}, not root"
    )]
    UserSwitchNotPermitted {
        task: TaskKey,
        uid: u32,
        gid: u32,
        agent_uid: u32,
    },

    #[error("{task}: start_task was called outside a tokio runtime")]
    NoRuntime { task: TaskKey },

    #[error("{task}: cannot create its output pipe: {source}")]
    OutputPipe { task: TaskKey, source: io::Error },

    #[error("{task}: a path or argument contains a NUL byte: {what}")]
    NulByte { task: TaskKey, what: String },

    #[error("{task}: cannot join cgroup {}: {source}", path.display())]
    JoinCgroup {
        task: TaskKey,
        path: PathBuf,
        source: io::Error,
    },

    #[error(
        "{task}: cannot run it on CPUs {cpus} (the node's reserved_cpus keep the others): {source}"
    )]
    Affinity {
        task: TaskKey,
        cpus: String,
        source: io::Error,
    },

    #[error("{task}: cannot start a new session: {source}")]
    NewSession { task: TaskKey, source: io::Error },

    #[error("{task}: cannot make the new terminal the controlling one: {source}")]
    ControllingTerminal { task: TaskKey, source: io::Error },

    #[error("{task}: cannot open a pseudo-terminal: {source}")]
    Terminal { task: TaskKey, source: io::Error },

    #[error("{task}: cannot switch to uid {uid} gid {gid}: {source}")]
    SwitchUser {
        task: TaskKey,
        uid: u32,
        gid: u32,
        source: io::Error,
    },

    #[error("{task}: cannot enter working directory {} as uid {uid}: {source}", path.display())]
    Workdir {
        task: TaskKey,
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },

    #[error("{task}: cannot open output file {} as uid {uid}: {source}", path.display())]
    OutputFile {
        task: TaskKey,
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },

    #[error("{task}: cannot redirect stdout/stderr: {source}")]
    Redirect { task: TaskKey, source: io::Error },

    #[error("{task}: cannot execute {}: {source}", program.display())]
    Exec {
        task: TaskKey,
        program: PathBuf,
        source: io::Error,
    },

    #[error("job {run}: cannot create cgroup {}: {source}", path.display())]
    CreateCgroup {
        run: RunKey,
        path: PathBuf,
        source: io::Error,
    },

    #[error("job {run}: cannot write {value:?} to {}: {source}", path.display())]
    WriteCgroup {
        run: RunKey,
        path: PathBuf,
        value: String,
        source: io::Error,
    },

    #[error("job {run}: cannot kill the processes of cgroup {}: {source}", path.display())]
    KillCgroup {
        run: RunKey,
        path: PathBuf,
        source: io::Error,
    },

    #[error("job {run}: cannot remove cgroup {}: {source}", path.display())]
    RemoveCgroup {
        run: RunKey,
        path: PathBuf,
        source: io::Error,
    },

    /// Only produced by [`RecordingLauncher`] when a test injects a failure.
    #[error("injected failure: {0}")]
    Injected(String),
}

impl LaunchError {
    /// The exit code to report for a task that could not be started because of this error:
    /// 127 when the program was not found, 126 otherwise (shell conventions).
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::ProgramNotFound { .. } => 127,
            LaunchError::Exec { source, .. } if source.kind() == io::ErrorKind::NotFound => 127,
            _ => 126,
        }
    }
}
