//! What a started child does before `execve`: join its cgroups, take its CPUs, switch to the
//! user, enter the working directory and open its output files ([`ChildSetup`]), and which step
//! failed when one does ([`ChildFailure`]). Prepared by the launcher (`process`), run by `spawn` in
//! the child, under the rules of `spawn`'s documentation.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// Why a child did not reach `execve`'s success: the stage (None for `execve` itself), the index
/// within the stage (which cgroup), and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChildFailure {
    pub stage: Option<Stage>,
    pub index: usize,
    pub errno: i32,
}

/// Which step of the child's set-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    JoinCgroup,
    Affinity,
    NewSession,
    ControllingTerminal,
    SwitchUser,
    Workdir,
    Stdout,
    Stderr,
    Redirect,
}

/// Everything the child needs, allocated before the clone (see `spawn` for the child's rules).
#[derive(Debug)]
pub(super) struct ChildSetup {
    /// cgroup.procs files to write "0" (= the writer) into.
    pub(super) cgroup_procs: Vec<CString>,
    pub(super) switch_user: bool,
    /// The task's CPU affinity, when the node keeps CPUs for itself.
    pub(super) cpus: Option<libc::cpu_set_t>,
    /// Container tasks: the runtime stays root, but the working directory and output files are
    /// entered and opened with the user's filesystem identity (setfsuid), as for other tasks.
    pub(super) fs_user_only: bool,
    /// setgroups needs CAP_SETGID; only done when the agent is root.
    pub(super) set_groups: bool,
    /// The user's groups, primary first (never empty).
    pub(super) groups: Vec<libc::gid_t>,
    /// The task's umask (its output files are created with it).
    pub(super) umask: libc::mode_t,
    pub(super) uid: libc::uid_t,
    pub(super) gid: libc::gid_t,
    pub(super) workdir: CString,
    /// `None` when the spawner already gave the child its stdout and stderr (pipes).
    pub(super) stdout: Option<CString>,
    /// `None` when stderr is the same file as stdout.
    pub(super) stderr: Option<CString>,
    /// stdin is a pseudo-terminal to make the new session's controlling terminal (`--pty`).
    pub(super) controlling_terminal: bool,
}

/// `Err(errno)` when a libc call or raw syscall returned -1.
fn check<T: From<i8> + PartialEq>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl ChildSetup {
    /// Runs in the child before exec: only raw syscalls and async-signal-safe libc calls, no
    /// allocation (`io::Error::last_os_error` does not allocate).
    pub(super) fn run(&self) -> Result<(), ChildFailure> {
        for (index, path) in self.cgroup_procs.iter().enumerate() {
            step(Stage::JoinCgroup, index, join_cgroup(path))?;
        }
        if let Some(cpus) = &self.cpus {
            // SAFETY: the kernel reads size_of::<cpu_set_t>() bytes of the mask owned by self;
            // pid 0 is this child (a raw syscall changes only the calling task).
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_sched_setaffinity,
                    0,
                    size_of::<libc::cpu_set_t>(),
                    std::ptr::from_ref(cpus),
                )
            };
            step(Stage::Affinity, 0, check(ret))?;
        }
        // SAFETY: setsid takes no arguments and has no memory-safety preconditions.
        let ret = unsafe { libc::syscall(libc::SYS_setsid) };
        step(Stage::NewSession, 0, check(ret))?;
        if self.controlling_terminal {
            // SAFETY: TIOCSCTTY on the standard input, which the spawner made the terminal; the
            // argument 0 means "do not steal it from another session".
            let ret = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) };
            step(Stage::ControllingTerminal, 0, check(ret))?;
        }
        if self.switch_user {
            // Raw syscalls: glibc's wrappers would broadcast the change to the threads of the
            // agent, whose memory this child shares.
            if self.set_groups {
                // SAFETY: the pointer is to `groups.len()` gid_t values owned by self, alive
                // during the call.
                let ret = unsafe {
                    libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr())
                };
                step(Stage::SwitchUser, 0, check(ret))?;
            }
            // SAFETY: setgid takes a plain integer.
            let ret = unsafe { libc::syscall(libc::SYS_setgid, self.gid) };
            step(Stage::SwitchUser, 0, check(ret))?;
            // SAFETY: setuid takes a plain integer.
            let ret = unsafe { libc::syscall(libc::SYS_setuid, self.uid) };
            step(Stage::SwitchUser, 0, check(ret))?;
        }
        if self.fs_user_only {
            // SAFETY: setfsgid/setfsuid take plain integers and change only the calling task;
            // they cannot fail in a way that matters here (the following open/chdir report any
            // permission problem).
            unsafe {
                libc::syscall(libc::SYS_setfsgid, self.gid);
                libc::syscall(libc::SYS_setfsuid, self.uid);
            }
        }
        // SAFETY: umask takes a plain integer and cannot fail.
        unsafe { libc::syscall(libc::SYS_umask, self.umask) };
        // SAFETY: workdir is a NUL-terminated string owned by self, alive during the call.
        let ret = unsafe { libc::chdir(self.workdir.as_ptr()) };
        step(Stage::Workdir, 0, check(ret))?;
        if let Some(stdout) = &self.stdout {
            self.redirect_to_files(stdout)?;
        }
        if self.fs_user_only {
            // SAFETY: as above; back to root's filesystem identity and the usual umask for the
            // runtime (the container's process gets the user's umask from its bundle).
            unsafe {
                libc::syscall(libc::SYS_setfsuid, 0);
                libc::syscall(libc::SYS_setfsgid, 0);
                libc::syscall(libc::SYS_umask, RUNTIME_UMASK);
            }
        }
        Ok(())
    }

    /// Opens the output files (as the user already switched to) onto stdout and stderr.
    fn redirect_to_files(&self, stdout: &CString) -> Result<(), ChildFailure> {
        let out = step(Stage::Stdout, 0, open_output(stdout))?;
        let err = match &self.stderr {
            Some(path) => step(Stage::Stderr, 0, open_output(path))?,
            None => out,
        };
        // SAFETY: dup2 on descriptors we just opened onto the standard ones; no memory involved.
        let ret = unsafe { libc::dup2(out, libc::STDOUT_FILENO) };
        step(Stage::Redirect, 0, check(ret))?;
        // SAFETY: as above.
        let ret = unsafe { libc::dup2(err, libc::STDERR_FILENO) };
        step(Stage::Redirect, 0, check(ret))?;
        for fd in [out, err] {
            if fd > libc::STDERR_FILENO {
                // SAFETY: closing a descriptor this child opened and no longer needs (twice is
                // harmless: the second close just fails with EBADF).
                unsafe { libc::close(fd) };
            }
        }
        Ok(())
    }
}

/// Which step of the child's set-up failed, for the parent's error.
fn step<T>(stage: Stage, index: usize, result: io::Result<T>) -> Result<T, ChildFailure> {
    result.map_err(|e| ChildFailure {
        stage: Some(stage),
        index,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })
}

/// Moves the calling process into a cgroup by writing "0" to its cgroup.procs (v1 and v2).
fn join_cgroup(procs: &CString) -> io::Result<()> {
    // SAFETY: procs is a NUL-terminated path alive during the call.
    let fd = check(unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: writes one byte from a static buffer to the descriptor just opened.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    result
}

/// The umask a container runtime runs with (its own state files are root's).
const RUNTIME_UMASK: libc::mode_t = 0o022;

/// Opens an output file for appending as the current (already switched) user; created with
/// 0666 less the task's umask, as a shell's `>` would.
fn open_output(path: &CString) -> io::Result<RawFd> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    let mode: libc::c_uint = 0o666;
    // SAFETY: path is a NUL-terminated string alive during the call; the mode argument is passed
    // as the promoted integer the variadic open expects.
    check(unsafe { libc::open(path.as_ptr(), flags, mode) })
}
