//! Starting a task's process the way posix_spawn does: `clone(CLONE_VM | CLONE_VFORK)` then
//! `execve`, so the agent's page tables are not copied for every task.
//!
//! A plain `fork` copies the agent's memory map (several hundred VMAs of a multi-threaded tokio
//! process), takes copy-on-write faults in the agent until the child execs, and tears the copy down
//! again in `execve`: on this 2-core machine that was ~10 % of all CPU time while 1000 trivial jobs
//! ran, more than the agent's own work. With `CLONE_VM` the child borrows the agent's memory until
//! `execve`, and `CLONE_VFORK` suspends the calling thread until then, as glibc's posix_spawn does.
//! posix_spawn itself cannot join a cgroup, switch user or open the output files as the user, hence
//! this module.
//!
//! Rules for the child, which shares memory with the agent's other, still running threads:
//! - no allocation, no locks, no panics: everything it reads is prepared before the clone;
//! - raw syscalls for credentials (`setgroups`, `setgid`, `setuid`): glibc's wrappers broadcast the
//!   change to every thread of the process, which in this child are the agent's threads;
//! - every signal is set to its default action and unblocked before `execve`, with all signals
//!   blocked in between, so none of the agent's handlers runs in the child;
//! - descriptors above 2 are closed, so the task inherits none of the agent's;
//! - its only output is a [`ChildFailure`] written into the shared [`ChildArgs`] before `_exit`.
//!
//! The parent gets a pidfd (`CLONE_PIDFD`) to wait on with epoll and to reap with
//! `waitid(P_PIDFD)`; nothing else in the agent reaps it (tokio reaps only its own children).
//!
//! ```text
//!   parent: block signals ─ clone(VM|VFORK|PIDFD) ······ (suspended) ······ ─ restore signals
//!   child:                   └ stdio ─ setup (cgroup, session, user, workdir, files) ─ close fds ─ signals ─ execve
//!                                           └ on failure: ChildArgs.failure = (stage, errno) ─ _exit(127)
//! ```

use super::child::{ChildFailure, ChildSetup, Stage};
use std::ffi::{CString, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// The child's stack: its set-up is a handful of syscalls in shallow frames. glibc's posix_spawn
/// uses about 32 KiB plus the argument strings; the strings here live in the parent's memory, so
/// 64 KiB leaves twice its margin.
const CHILD_STACK_BYTES: usize = 64 << 10;

/// Exit code of a child whose set-up or `execve` failed (the parent reports the reason itself).
const SETUP_FAILED_EXIT: libc::c_int = 127;

/// What the child needs: the program, argv and envp as NUL-terminated pointer arrays into
/// `strings`, and its standard descriptors.
#[derive(Debug)]
pub(super) struct Exec {
    program: CString,
    /// Keeps the strings that `argv` and `envp` point into.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into `_strings`, owned by the same value and never mutated, so
// moving an `Exec` to another thread keeps them valid.
unsafe impl Send for Exec {}

impl Exec {
    /// Prepares `execve(program, argv, env)`; the strings are already checked for NUL bytes.
    pub(super) fn new(program: CString, argv: Vec<CString>, env: Vec<CString>) -> Self {
        let argc = argv.len();
        let mut strings = argv;
        strings.extend(env);
        let pointers = |range: &[CString]| {
            range
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = pointers(&strings[..argc]);
        let envp = pointers(&strings[argc..]);
        Exec {
            program,
            _strings: strings,
            argv,
            envp,
        }
    }
}

/// The child's standard descriptors: `stdin` is always given (/dev/null); `stdout` and `stderr`
/// only when the output goes into pipes (else [`ChildSetup`] opens the files as the user).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stdio {
    pub stdin: RawFd,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
}

/// Shared between parent and child (CLONE_VM): the child only writes `failure`, and only before
/// it exits; the parent reads it after the clone returns, when the child has exec'd or exited.
struct ChildArgs<'a> {
    exec: &'a Exec,
    setup: &'a ChildSetup,
    stdio: Stdio,
    /// Written by the child when it fails before or in `execve`.
    failure: Option<ChildFailure>,
}

/// Why a spawn failed: the set-up stage and its index (`None`: the clone or `execve` itself), and
/// the error.
#[derive(Debug)]
pub(super) struct SpawnError {
    pub stage: Option<(Stage, usize)>,
    pub source: io::Error,
}

impl SpawnError {
    fn before_clone(source: io::Error) -> Self {
        SpawnError {
            stage: None,
            source,
        }
    }
}

/// A started child: its pid and a pidfd to wait on.
#[derive(Debug)]
pub(super) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Starts the child. On a failure before `execve` succeeded the child has been reaped and the
/// error says at which stage.
pub(super) fn spawn(exec: &Exec, setup: &ChildSetup, stdio: Stdio) -> Result<Spawned, SpawnError> {
    let stack = ChildStack::new().map_err(SpawnError::before_clone)?;
    let mut args = ChildArgs {
        exec,
        setup,
        stdio,
        failure: None,
    };
    let mut pidfd: libc::c_int = -1;
    let blocked = BlockedSignals::block_all();
    // SAFETY: `child_main` follows the rules in the module documentation; the stack is ours and
    // outlives the child's use of it (CLONE_VFORK returns only after execve or exit); `args` lives
    // on this frame, which the suspended parent does not leave; the pidfd slot is an int.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            ptr::from_mut(&mut args).cast::<c_void>(),
            ptr::from_mut(&mut pidfd),
        )
    };
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    drop(stack);
    if pid == -1 {
        return Err(SpawnError::before_clone(clone_error));
    }
    // SAFETY: CLONE_PIDFD stored a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the child has exec'd or exited, so it no longer writes `args`; the volatile read keeps
    // the compiler from assuming nothing changed it during the call.
    let failure = unsafe { ptr::read_volatile(&raw const args.failure) };
    match failure {
        None => Ok(Spawned {
            pid: u32::try_from(pid).unwrap_or_default(),
            pidfd,
        }),
        Some(failure) => {
            // Reap it: it has exited (with SETUP_FAILED_EXIT) or is about to.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(SpawnError {
                stage: failure.stage.map(|stage| (stage, failure.index)),
                source: io::Error::from_raw_os_error(failure.errno),
            })
        }
    }
}

/// The child: descriptors, set-up, signals, execve. Returns only through `_exit`.
extern "C" fn child_main(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and not touched by the (suspended) parent.
    let args = unsafe { &mut *arg.cast::<ChildArgs<'_>>() };
    let failure = match child_setup(args) {
        Err(failure) => failure,
        Ok(()) => {
            // SAFETY: program, argv and envp are NUL-terminated and point into `Exec`'s strings.
            unsafe {
                libc::execve(
                    args.exec.program.as_ptr(),
                    args.exec.argv.as_ptr(),
                    args.exec.envp.as_ptr(),
                );
            }
            ChildFailure {
                stage: None,
                index: 0,
                errno: errno(),
            }
        }
    };
    // SAFETY: a plain write into the shared struct, read by the parent only after we exit.
    unsafe { ptr::write_volatile(&raw mut args.failure, Some(failure)) };
    // SAFETY: _exit ends the child without running the parent's atexit handlers or flushing its
    // stdio buffers (which it shares).
    unsafe { libc::_exit(SETUP_FAILED_EXIT) }
}

fn child_setup(args: &ChildArgs<'_>) -> Result<(), ChildFailure> {
    let redirect = |from: RawFd, to: RawFd| -> Result<(), ChildFailure> {
        // SAFETY: dup2 onto a standard descriptor; no memory involved.
        if unsafe { libc::dup2(from, to) } == -1 {
            return Err(ChildFailure {
                stage: Some(Stage::Redirect),
                index: 0,
                errno: errno(),
            });
        }
        Ok(())
    };
    redirect(args.stdio.stdin, libc::STDIN_FILENO)?;
    if let Some(fd) = args.stdio.stdout {
        redirect(fd, libc::STDOUT_FILENO)?;
    }
    if let Some(fd) = args.stdio.stderr {
        redirect(fd, libc::STDERR_FILENO)?;
    }
    args.setup.run()?;
    close_agent_descriptors();
    default_signals();
    Ok(())
}

/// Every signal's action back to the default, then none blocked: the task starts as from a fresh
/// login (the agent ignores SIGPIPE, which `yes | head` in a job script relies on not inheriting).
/// Raw `rt_sigaction`: glibc's wrapper refuses the two real-time signals it reserves, which the
/// agent may have inherited as ignored.
fn default_signals() {
    /// The kernel's `struct sigaction`, all zero: SIG_DFL, no flags, no restorer, empty mask.
    const DEFAULT_ACTION: [u64; 4] = [0; 4];
    /// The kernel's sigset_t is 64 bits (`_NSIG / 8`).
    const KERNEL_SIGSET_BYTES: usize = 8;
    let empty: u64 = 0;
    // SAFETY: rt_sigaction and rt_sigprocmask read the structs on this stack and write nothing
    // (null old-value pointers). Errors (SIGKILL, SIGSTOP) leave those signals as exec would.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                DEFAULT_ACTION.as_ptr(),
                ptr::null_mut::<c_void>(),
                KERNEL_SIGSET_BYTES,
            );
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            ptr::null_mut::<c_void>(),
            KERNEL_SIGSET_BYTES,
        );
    }
}

/// Closes every descriptor above stderr: the task gets none of the agent's, even one that a
/// library or the agent's own parent left without close-on-exec. Before Linux 5.9 (no
/// close_range) they stay, as with a plain fork and exec.
fn close_agent_descriptors() {
    // SAFETY: close_range on descriptors this child does not use any more (everything it needs is
    // already on 0-2, and `execve` takes paths).
    unsafe { libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0) };
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An anonymous mapping for the child's stack, unmapped on drop.
struct ChildStack {
    base: *mut c_void,
}

impl ChildStack {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                CHILD_STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ChildStack { base })
    }

    /// The highest address: the stack grows down on every architecture Linux runs us on.
    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of our own mapping, as clone expects.
        unsafe { self.base.cast::<u8>().add(CHILD_STACK_BYTES).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which no one uses any more.
        unsafe { libc::munmap(self.base, CHILD_STACK_BYTES) };
    }
}

/// All signals blocked in the calling thread until dropped, so that no handler of the agent runs
/// in the child between the clone and its own reset of the signals.
struct BlockedSignals {
    previous: libc::sigset_t,
}

impl BlockedSignals {
    fn block_all() -> Self {
        // SAFETY: sigfillset and pthread_sigmask on sets that live on this stack.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            BlockedSignals { previous }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `block_all`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, ptr::null_mut()) };
    }
}

/// Waits for the child to exit and reaps it, returning its wait status as an `ExitStatus`.
pub(super) async fn wait(pidfd: OwnedFd) -> io::Result<std::process::ExitStatus> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;
    // SAFETY: the OwnedFd moved into the AsyncFd keeps the pidfd open, unchanged, for its lifetime.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)?;
    loop {
        let mut ready = fd.readable().await?;
        match waitid(
            Id::PIDFd(fd.get_ref().as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatusExt::from_raw(code << 8)),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let core = if core { 0x80 } else { 0 };
                return Ok(ExitStatusExt::from_raw(signal as i32 | core));
            }
            Ok(_) => ready.clear_ready(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
