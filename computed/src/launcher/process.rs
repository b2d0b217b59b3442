//! The real launcher: posix_spawn-style clone/exec (`spawn`), cgroups for limits and race-free kills.

use super::cgroup::{self, Cgroups, Layout};
use super::child::{ChildSetup, Stage};
use super::cpus::{TaskCpus, cpu_list};
use super::spawn::{self, Exec};
use super::{
    JobLimits, LaunchError, Launcher, StartedTask, TaskExit, TaskLaunch, TaskOutput, TaskPipes,
};
use beowulf_types::{RunKey, TaskKey};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::mpsc::UnboundedSender;

/// `PATH` used to find `argv[0]` when the task's environment has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Starts tasks as real processes, each job run in its own cgroup (v1 or v2) under
/// `<agent's own cgroup>/beowulf/<node>/job_<id>.<run>`. Without writable cgroups it warns once and
/// falls back to process groups (every task is a session leader) for kills.
#[derive(Debug)]
pub struct ProcessLauncher {
    node: String,
    pub(super) cgroups: Option<Cgroups>,
    jobs: Mutex<HashMap<RunKey, JobEntry>>,
    leftovers: Vec<RunKey>,
    agent_uid: u32,
    agent_gid: u32,
    /// The CPUs tasks run on, when the node keeps some for itself (`reserved_cpus`).
    task_cpus: Option<TaskCpus>,
}

/// What we know about a prepared job run.
#[derive(Debug, Default)]
struct JobEntry {
    /// Task sessions (the task's pid, which is also its session and process group id), with the
    /// leader's start time to recognise a recycled pid.
    sessions: Vec<Session>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    sid: i32,
    start_time: Option<u64>,
}

impl ProcessLauncher {
    /// A launcher for the agent of `node_name`, with cgroups when they are writable.
    pub fn new(node_name: &str) -> Result<Self, LaunchError> {
        validate_node_name(node_name)?;
        let cgroups = match cgroup::detect_system_layout() {
            Ok(layout) => Self::init_cgroups(layout, node_name),
            Err(reason) => {
                tracing::warn!(node = node_name, %reason, "no usable cgroups; running tasks without limits, killing by process group");
                None
            }
        };
        Ok(Self::build(node_name, cgroups))
    }

    /// A launcher that never uses cgroups (no limits; kills by process group).
    pub fn without_cgroups(node_name: &str) -> Result<Self, LaunchError> {
        validate_node_name(node_name)?;
        Ok(Self::build(node_name, None))
    }

    /// A launcher on an explicit cgroup layout (tests use the hybrid setup's unified mount).
    #[cfg(test)]
    pub(crate) fn with_layout(node_name: &str, layout: Layout) -> Result<Self, LaunchError> {
        validate_node_name(node_name)?;
        let cgroups = Self::init_cgroups(layout, node_name);
        Ok(Self::build(node_name, cgroups))
    }

    fn init_cgroups(layout: Layout, node: &str) -> Option<Cgroups> {
        match Cgroups::init(layout, node) {
            Ok((cgroups, warnings)) => {
                for warning in warnings {
                    tracing::warn!(node, %warning, "cgroup setup incomplete");
                }
                Some(cgroups)
            }
            Err(reason) => {
                tracing::warn!(node, %reason, "cgroups are not writable; running tasks without limits, killing by process group");
                None
            }
        }
    }

    fn build(node_name: &str, cgroups: Option<Cgroups>) -> Self {
        let leftovers = cgroups
            .as_ref()
            .map(Cgroups::existing_jobs)
            .unwrap_or_default();
        if !leftovers.is_empty() {
            tracing::info!(
                node = node_name,
                ?leftovers,
                "found job cgroups of an earlier computed"
            );
        }
        ProcessLauncher {
            node: node_name.to_string(),
            cgroups,
            jobs: Mutex::new(HashMap::new()),
            leftovers,
            agent_uid: nix::unistd::geteuid().as_raw(),
            agent_gid: nix::unistd::getegid().as_raw(),
            task_cpus: None,
        }
    }

    /// Runs every task on `cpus` (the node's CPUs but its `reserved_cpus`); `None`: tasks keep
    /// the agent's affinity.
    /// With cgroups, the node's tasks are also confined to them by cpuset, so that no task can
    /// widen its affinity onto the reserved CPUs; where that fails (no cpuset controller), a
    /// warning says the mask is all that keeps them.
    pub fn with_task_cpus(mut self, cpus: Option<TaskCpus>) -> Self {
        if let (Some(cgroups), Some(cpus)) = (self.cgroups.as_mut(), cpus.as_ref()) {
            match cgroups.confine_cpus(&cpus.cpus()) {
                Ok(()) => {
                    tracing::info!(node = %self.node, cpus = %cpu_list(&cpus.cpus()), "tasks are confined to their CPUs by cpuset")
                }
                Err(error) => {
                    tracing::warn!(node = %self.node, %error, "tasks' CPUs are only an affinity mask, which a task can widen onto the reserved CPUs")
                }
            }
        }
        self.task_cpus = cpus;
        self
    }

    /// The node name this launcher was created for.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// True when tasks run in cgroups (limits enforced, race-free kills).
    pub fn cgroups_enabled(&self) -> bool {
        self.cgroups.is_some()
    }

    /// The job run's cgroup directories (one per v1 hierarchy, one on v2; none without cgroups).
    pub fn cgroup_dirs(&self, key: RunKey) -> Vec<PathBuf> {
        self.cgroups
            .as_ref()
            .map(|c| c.job_dirs(key))
            .unwrap_or_default()
    }

    pub(crate) fn remove_node_dirs(&self) {
        if let Some(c) = &self.cgroups {
            c.remove_node_dirs();
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<RunKey, JobEntry>> {
        // A panic while holding the lock leaves the map consistent enough: keep going.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sessions(&self, key: RunKey) -> Vec<Session> {
        self.jobs()
            .get(&key)
            .map(|e| e.sessions.clone())
            .unwrap_or_default()
    }
}

fn validate_node_name(name: &str) -> Result<(), LaunchError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative directory name")
    } else if name.contains('/') || name.contains('\0') {
        Some("it contains '/' or a NUL byte")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LaunchError::InvalidNodeName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The start time (clock ticks since boot) of a process, from /proc/<pid>/stat field 22.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

impl Session {
    /// False when the session's pid now belongs to a different process: then the session's
    /// processes are all gone (a pid used as a process group id is not recycled while in use).
    fn not_recycled(&self) -> bool {
        match (start_time(self.sid), self.start_time) {
            (Some(now), Some(then)) => now == then,
            _ => true,
        }
    }

    fn alive(&self) -> bool {
        if !self.not_recycled() {
            return false;
        }
        matches!(
            killpg(Pid::from_raw(self.sid), None),
            Ok(()) | Err(Errno::EPERM)
        )
    }

    fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    fn signal(&self, signal: Signal) {
        if self.not_recycled() {
            let _ = killpg(Pid::from_raw(self.sid), signal);
        }
    }
}

/// [`resolve_program`] with the task user's filesystem identity and groups: the agent (root) must
/// not look into directories the user cannot search, which would tell the user what exists there.
fn resolve_program_as_user(task: &TaskLaunch, agent_uid: u32) -> Result<PathBuf, LaunchError> {
    if agent_uid != 0 || task.uid == 0 || task.argv[0].contains('/') {
        return resolve_program(task);
    }
    let mut groups = vec![task.gid];
    groups.extend(task.groups.iter().filter(|g| **g != task.gid));
    let user = beowulf_as_user::UserCredentials {
        uid: task.uid,
        gid: task.gid,
        groups,
    };
    let lookup = TaskLaunch {
        container: None,
        ..task.clone()
    };
    beowulf_as_user::with_identity(&user, move || Ok(resolve_program(&lookup))).map_err(
        |source| LaunchError::Exec {
            task: task.key,
            program: PathBuf::from(&task.argv[0]),
            source,
        },
    )?
}

/// Finds `argv[0]` like execvp, but in the task's own `PATH`; relative results are relative to
/// the working directory.
fn resolve_program(task: &TaskLaunch) -> Result<PathBuf, LaunchError> {
    let program = &task.argv[0];
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let search_path = task
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    if !program.is_empty() {
        for dir in search_path.split(':') {
            let dir = if dir.is_empty() { "." } else { dir };
            let candidate = Path::new(dir).join(program);
            let on_disk = if candidate.is_absolute() {
                candidate.clone()
            } else {
                task.workdir.join(&candidate)
            };
            let executable = fs::metadata(&on_disk)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                return Ok(candidate);
            }
        }
    }
    Err(LaunchError::ProgramNotFound {
        task: task.key,
        program: program.clone(),
        search_path: search_path.to_string(),
    })
}

fn cstring(task: &TaskLaunch, bytes: &[u8], what: &str) -> Result<CString, LaunchError> {
    CString::new(bytes).map_err(|_| LaunchError::NulByte {
        task: task.key,
        what: what.to_string(),
    })
}

/// The child's stdout and stderr as pipes (the write ends, to hand to the child), and the read
/// ends for the agent: one each when `separate`, else one for both.
fn output_pipes(
    task: &TaskLaunch,
    separate: bool,
) -> Result<(OwnedFd, Option<OwnedFd>, TaskPipes), LaunchError> {
    let pipe = || {
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| LaunchError::OutputPipe {
            task: task.key,
            source: e.into(),
        })
    };
    let (out_read, out_write) = pipe()?;
    if !separate {
        let pipes = TaskPipes {
            stdout: out_read,
            stderr: None,
        };
        return Ok((out_write, None, pipes));
    }
    let (err_read, err_write) = pipe()?;
    let pipes = TaskPipes {
        stdout: out_read,
        stderr: Some(err_read),
    };
    Ok((out_write, Some(err_write), pipes))
}

/// A new pseudo-terminal of `size` for `task` (`srun --pty`): its master side for the agent,
/// its slave side for the task. The slave belongs to the task's user with mode 0620, as a login
/// gives its terminal (`ssh`, `login`), when the agent may change its owner.
fn open_terminal(
    task: &TaskLaunch,
    size: super::TerminalSize,
    chown: bool,
) -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let failed = |source: io::Error| LaunchError::Terminal {
        task: task.key,
        source,
    };
    let winsize = size.winsize();
    let pty = nix::pty::openpty(Some(&winsize), None).map_err(|e| failed(e.into()))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| failed(e.into()))?;
    }
    if chown {
        nix::unistd::fchown(
            &pty.slave,
            Some(nix::unistd::Uid::from_raw(task.uid)),
            Some(nix::unistd::Gid::from_raw(task.gid)),
        )
        .map_err(|e| failed(e.into()))?;
        nix::sys::stat::fchmod(&pty.slave, nix::sys::stat::Mode::from_bits_truncate(0o620))
            .map_err(|e| failed(e.into()))?;
    }
    Ok((pty.master, pty.slave))
}

/// Turns the spawn error (and the stage the child reported, if any) into a LaunchError.
fn spawn_error(
    task: &TaskLaunch,
    program: &Path,
    cgroup_procs: &[PathBuf],
    task_cpus: Option<&TaskCpus>,
    stage: Option<(Stage, usize)>,
    source: io::Error,
) -> LaunchError {
    let key = task.key;
    match stage {
        Some((Stage::JoinCgroup, index)) => LaunchError::JoinCgroup {
            task: key,
            path: cgroup_procs.get(index).cloned().unwrap_or_default(),
            source,
        },
        Some((Stage::Affinity, _)) => LaunchError::Affinity {
            task: key,
            cpus: task_cpus.map(|c| cpu_list(&c.cpus())).unwrap_or_default(),
            source,
        },
        Some((Stage::NewSession, _)) => LaunchError::NewSession { task: key, source },
        Some((Stage::ControllingTerminal, _)) => {
            LaunchError::ControllingTerminal { task: key, source }
        }
        Some((Stage::SwitchUser, _)) => LaunchError::SwitchUser {
            task: key,
            uid: task.uid,
            gid: task.gid,
            source,
        },
        Some((Stage::Workdir, _)) => LaunchError::Workdir {
            task: key,
            path: task.workdir.clone(),
            uid: task.uid,
            source,
        },
        Some((Stage::Stdout, _)) => LaunchError::OutputFile {
            task: key,
            path: task.workdir.join(&task.stdout),
            uid: task.uid,
            source,
        },
        Some((Stage::Stderr, _)) => LaunchError::OutputFile {
            task: key,
            path: task.workdir.join(&task.stderr),
            uid: task.uid,
            source,
        },
        Some((Stage::Redirect, _)) => LaunchError::Redirect { task: key, source },
        None => LaunchError::Exec {
            task: key,
            program: program.to_path_buf(),
            source,
        },
    }
}

/// The TaskExit for a finished child.
fn task_exit(key: TaskKey, status: io::Result<ExitStatus>) -> TaskExit {
    let (code, detail) = match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => (code, format!("exited with code {code}")),
            (None, Some(sig)) => {
                let name = Signal::try_from(sig).map_or("unknown signal", |s| s.as_str());
                let core = if status.core_dumped() {
                    ", core dumped"
                } else {
                    ""
                };
                (128 + sig, format!("killed by signal {sig} ({name}{core})"))
            }
            (None, None) => (255, format!("ended with unrecognised status {status:?}")),
        },
        Err(e) => (255, format!("waiting for the task failed: {e}")),
    };
    TaskExit { key, code, detail }
}

impl Launcher for ProcessLauncher {
    fn prepare_job(&self, key: RunKey, limits: &JobLimits) -> Result<(), LaunchError> {
        if let Some(cgroups) = &self.cgroups {
            cgroups.prepare(key, limits)?;
        }
        self.jobs().entry(key).or_default();
        Ok(())
    }

    fn start_task(
        &self,
        task: TaskLaunch,
        exits: UnboundedSender<TaskExit>,
    ) -> Result<StartedTask, LaunchError> {
        let key = task.key;
        let run = key.run;
        if !self.jobs().contains_key(&run) {
            return Err(LaunchError::NotPrepared { run });
        }
        if task.argv.is_empty() {
            return Err(LaunchError::EmptyArgv { task: key });
        }
        let in_container = task.container.is_some();
        let other_user = task.uid != self.agent_uid || task.gid != self.agent_gid;
        let switch_user = other_user && !in_container;
        if (other_user || in_container) && self.agent_uid != 0 {
            return Err(LaunchError::UserSwitchNotPermitted {
                task: key,
                uid: task.uid,
                gid: task.gid,
                agent_uid: self.agent_uid,
            });
        }
        for (i, arg) in task.argv.iter().enumerate() {
            if arg.contains('\0') {
                return Err(LaunchError::NulByte {
                    task: key,
                    what: format!("argv[{i}]"),
                });
            }
        }
        for (key, value) in &task.env {
            if key.contains('\0') || value.contains('\0') || key.contains('=') || key.is_empty() {
                return Err(LaunchError::NulByte {
                    task: task.key,
                    what: format!("environment variable {key:?} (NUL byte, '=' or empty name)"),
                });
            }
        }
        let (program, argv, env) = match &task.container {
            None => (
                resolve_program_as_user(&task, self.agent_uid)?,
                task.argv.clone(),
                task.env.clone(),
            ),
            Some(c) => (
                c.runtime.clone(),
                vec![
                    c.runtime.display().to_string(),
                    "run".to_string(),
                    "--bundle".to_string(),
                    c.bundle.display().to_string(),
                    c.id.clone(),
                ],
                vec![("PATH".to_string(), DEFAULT_PATH.to_string())],
            ),
        };
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| LaunchError::NoRuntime { task: key })?;

        // Everything the child needs is allocated here, before the clone.
        let cgroup_procs = self
            .cgroups
            .as_ref()
            .map(|c| c.join_files(run))
            .unwrap_or_default();
        if let Some(cgroups) = &self.cgroups
            && !cgroups.exists(run)
        {
            // Released, or removed behind our back: do not run it outside its cgroup.
            return Err(LaunchError::NotPrepared { run });
        }
        let setup = ChildSetup {
            cgroup_procs: cgroup_procs
                .iter()
                .map(|p| cstring(&task, p.as_os_str().as_bytes(), "cgroup path"))
                .collect::<Result<_, _>>()?,
            switch_user,
            cpus: self.task_cpus.as_ref().map(TaskCpus::mask),
            fs_user_only: in_container && other_user,
            set_groups: self.agent_uid == 0,
            groups: {
                let mut groups = vec![task.gid];
                groups.extend(task.groups.iter().filter(|g| **g != task.gid));
                groups
            },
            umask: task.umask & 0o777,
            uid: task.uid,
            gid: task.gid,
            workdir: cstring(&task, task.workdir.as_os_str().as_bytes(), "workdir")?,
            stdout: match task.output {
                TaskOutput::Files => Some(cstring(
                    &task,
                    task.stdout.as_os_str().as_bytes(),
                    "stdout path",
                )?),
                TaskOutput::Pipes | TaskOutput::Streams | TaskOutput::Terminal(_) => None,
            },
            stderr: if task.stderr == task.stdout || matches!(task.output, TaskOutput::Terminal(_))
            {
                None
            } else {
                Some(cstring(
                    &task,
                    task.stderr.as_os_str().as_bytes(),
                    "stderr path",
                )?)
            },
            controlling_terminal: matches!(task.output, TaskOutput::Terminal(_)),
        };
        let exec = Exec::new(
            cstring(&task, program.as_os_str().as_bytes(), "program path")?,
            argv.iter()
                .map(|a| cstring(&task, a.as_bytes(), "argv"))
                .collect::<Result<_, _>>()?,
            env.iter()
                .map(|(k, v)| cstring(&task, format!("{k}={v}").as_bytes(), "environment"))
                .collect::<Result<_, _>>()?,
        );
        let dev_null = fs::File::open("/dev/null").map_err(|source| LaunchError::Exec {
            task: key,
            program: program.clone(),
            source,
        })?;
        // The child's ends of the output pipes are dropped when this function returns: only the
        // child may hold them, or the reader never sees the end of the output.
        let mut terminal_side = None;
        let (out_write, err_write, pipes) = match task.output {
            TaskOutput::Files => (None, None, None),
            TaskOutput::Terminal(size) => {
                let (master, slave) = open_terminal(&task, size, self.agent_uid == 0)?;
                let for_child = slave
                    .try_clone()
                    .map_err(|source| LaunchError::Terminal { task: key, source })?;
                terminal_side = Some(slave);
                let pipes = TaskPipes {
                    stdout: master,
                    stderr: None,
                };
                (Some(for_child), None, Some(pipes))
            }
            TaskOutput::Pipes | TaskOutput::Streams => {
                let separate = task.output == TaskOutput::Streams || task.stderr != task.stdout;
                let (out, err, pipes) = output_pipes(&task, separate)?;
                (Some(out), err, Some(pipes))
            }
        };
        let stdio = spawn::Stdio {
            stdin: terminal_side
                .as_ref()
                .map_or(dev_null.as_raw_fd(), AsRawFd::as_raw_fd),
            stdout: out_write.as_ref().map(AsRawFd::as_raw_fd),
            stderr: err_write
                .as_ref()
                .or(out_write.as_ref())
                .map(AsRawFd::as_raw_fd),
        };
        let child = spawn::spawn(&exec, &setup, stdio).map_err(|e| {
            spawn_error(
                &task,
                &program,
                &cgroup_procs,
                self.task_cpus.as_ref(),
                e.stage,
                e.source,
            )
        })?;
        let pid = child.pid;
        let sid = i32::try_from(pid).unwrap_or_default();
        if sid > 0
            && let Some(entry) = self.jobs().get_mut(&run)
        {
            entry.sessions.retain(Session::alive);
            entry.sessions.push(Session {
                sid,
                start_time: start_time(sid),
            });
        }
        let (job, run, rank) = (key.run.job, key.run.run, key.rank);
        tracing::debug!(job = %job, run, rank, pid, program = %program.display(), "task started");
        handle.spawn(async move {
            let status = spawn::wait(child.pidfd).await;
            let exit = task_exit(key, status);
            tracing::debug!(job = %job, run, rank, pid, code = exit.code, detail = %exit.detail, "task ended");
            let _ = exits.send(exit);
        });
        Ok(StartedTask { pid, pipes })
    }

    fn kill_job(&self, key: RunKey) -> Result<(), LaunchError> {
        match &self.cgroups {
            Some(cgroups) => cgroups.kill(key),
            None => {
                for session in self.sessions(key) {
                    session.kill();
                }
                Ok(())
            }
        }
    }

    fn signal_job(&self, key: RunKey, signal: Signal) -> Result<(), LaunchError> {
        match &self.cgroups {
            Some(cgroups) => {
                for pid in cgroups.live_pids(key) {
                    // A process that ended since it was listed is fine.
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
                }
            }
            None => {
                for session in self.sessions(key) {
                    session.signal(signal);
                }
            }
        }
        Ok(())
    }

    fn signal_task(&self, task: TaskKey, pid: u32, signal: Signal, session: bool) {
        let Ok(sid) = i32::try_from(pid) else {
            return;
        };
        // Only a session this launcher started for the task's run: a pid the task no longer
        // has (it ended, the pid was given to another process) is not signalled.
        let found = self
            .jobs()
            .get(&task.run)
            .and_then(|entry| entry.sessions.iter().find(|s| s.sid == sid).copied());
        match found {
            Some(found) if session => found.signal(signal),
            Some(found) if found.not_recycled() => {
                let _ = nix::sys::signal::kill(Pid::from_raw(found.sid), signal);
            }
            _ => {}
        }
    }

    fn oom_kills(&self, key: RunKey) -> u64 {
        self.cgroups.as_ref().map_or(0, |c| c.oom_kills(key))
    }

    fn job_alive(&self, key: RunKey) -> bool {
        match &self.cgroups {
            Some(cgroups) => !cgroups.live_pids(key).is_empty(),
            None => self.sessions(key).iter().any(Session::alive),
        }
    }

    fn release_job(&self, key: RunKey) -> Result<(), LaunchError> {
        if let Some(cgroups) = &self.cgroups
            && cgroups.remove_if_empty(key)
        {
            self.jobs().remove(&key);
            return Ok(());
        }
        if self.job_alive(key) {
            return Err(LaunchError::StillRunning { run: key });
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove(key)?;
        }
        self.jobs().remove(&key);
        Ok(())
    }

    fn shut_down(&self) {
        let prepared: Vec<RunKey> = self.jobs().keys().copied().collect();
        for key in prepared.into_iter().chain(self.leftover_jobs()) {
            if let Err(e) = self.release_job(key) {
                tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot release a run's cgroups at shutdown");
            }
        }
        self.remove_node_dirs();
    }

    fn leftover_jobs(&self) -> Vec<RunKey> {
        // Those released since start-up are no longer left over.
        self.leftovers
            .iter()
            .copied()
            .filter(|&key| {
                self.cgroups
                    .as_ref()
                    .is_some_and(|c| c.job_dirs(key).iter().any(|d| d.is_dir()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;

    fn task(argv: &[&str], env: &[(&str, &str)], workdir: &Path) -> TaskLaunch {
        TaskLaunch {
            key: TaskKey {
                run: RunKey {
                    job: JobId(1),
                    run: 0,
                },
                rank: 0,
            },
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workdir: workdir.to_path_buf(),
            stdout: "out".into(),
            stderr: "out".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            umask: 0o022,
            container: None,
            output: TaskOutput::Files,
        }
    }

    #[test]
    fn program_lookup_uses_the_task_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o644)).unwrap();
        let path = format!("/nonexistent:{}", bin.display());
        let t = task(&["tool"], &[("PATH", &path)], dir.path());
        // Not executable: not found.
        let err = resolve_program(&t).unwrap_err();
        assert_eq!(err.exit_code(), 127);
        assert!(err.to_string().contains("\"tool\""), "{err}");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_program(&t).unwrap(), tool);
        // Relative PATH entries are relative to the workdir.
        let t = task(&["tool"], &[("PATH", "bin")], dir.path());
        assert_eq!(resolve_program(&t).unwrap(), PathBuf::from("bin/tool"));
        // With a slash: taken as is.
        let t = task(&["./x"], &[], dir.path());
        assert_eq!(resolve_program(&t).unwrap(), PathBuf::from("./x"));
        // No PATH: the default one.
        let t = task(&["sh"], &[], dir.path());
        assert!(resolve_program(&t).unwrap().is_absolute());
    }

    #[test]
    fn node_names_are_checked() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                ProcessLauncher::without_cgroups(bad),
                Err(LaunchError::InvalidNodeName { .. })
            ));
        }
        assert_eq!(
            ProcessLauncher::without_cgroups("node1")
                .unwrap()
                .node_name(),
            "node1"
        );
    }

    #[test]
    fn exit_statuses_map_to_codes() {
        let key = TaskKey {
            run: RunKey {
                job: JobId(1),
                run: 0,
            },
            rank: 0,
        };
        let exit = task_exit(key, Ok(ExitStatus::from_raw(7 << 8)));
        assert_eq!((exit.code, exit.detail.as_str()), (7, "exited with code 7"));
        let exit = task_exit(key, Ok(ExitStatus::from_raw(9)));
        assert_eq!(exit.code, 137);
        assert_eq!(exit.detail, "killed by signal 9 (SIGKILL)");
    }
}
