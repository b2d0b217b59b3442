//! The seam between the lab's logic and the OS: commands as data, run by a `Host`; process checks by PID.

use crate::LabError;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A command to run: program, arguments, optional working directory. Built by pure code, run by a `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: Option<PathBuf>,
}

impl Cmd {
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn path_arg(self, p: &Path) -> Self {
        self.arg(p.to_string_lossy())
    }

    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// The same command run inside network namespace `ns` (`ip netns exec NS ...`).
    pub fn in_netns(self, ns: &str) -> Self {
        let mut wrapped = Cmd::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.program);
        wrapped.args.extend(self.args);
        wrapped.cwd = self.cwd;
        wrapped
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for a in &self.args {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                write!(f, " '{}'", a.replace('\'', "'\\''"))?;
            } else {
                write!(f, " {a}")?;
            }
        }
        Ok(())
    }
}

/// What runs the lab's commands. `System` runs them for real; tests can record them.
pub trait Host: fmt::Debug + Sync {
    /// Runs `cmd` to completion; returns its stdout, or an error carrying the tail of its stderr.
    fn run(&self, cmd: &Cmd) -> Result<String, LabError>;
    /// Runs `cmd` with stdout and stderr appended to `log`; fails when it exits non-zero.
    fn run_logged(&self, cmd: &Cmd, log: &Path) -> Result<(), LabError>;
    /// Runs `cmd` on the caller's terminal; returns its exit code.
    fn run_interactive(&self, cmd: &Cmd) -> Result<i32, LabError>;
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct System;

fn command(cmd: &Cmd) -> Command {
    let mut c = Command::new(&cmd.program);
    c.args(&cmd.args);
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    c
}

fn spawn_error(cmd: &Cmd) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Spawn {
        program: cmd.program.clone(),
        source,
    }
}

/// The last few lines of a command's output, for error messages.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Host for System {
    fn run(&self, cmd: &Cmd) -> Result<String, LabError> {
        let out = command(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(spawn_error(cmd))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(LabError::Command {
            command: cmd.to_string(),
            status: out.status.to_string(),
            detail: match tail(&stderr, 5) {
                t if t.is_empty() => String::new(),
                t => format!(": {t}"),
            },
        })
    }

    fn run_logged(&self, cmd: &Cmd, log: &Path) -> Result<(), LabError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(LabError::io("open", log))?;
        writeln!(file, "$ {cmd}").map_err(LabError::io("write", log))?;
        let err = file.try_clone().map_err(LabError::io("open", log))?;
        let status = command(cmd)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .status()
            .map_err(spawn_error(cmd))?;
        if status.success() {
            return Ok(());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        Err(LabError::Command {
            command: cmd.to_string(),
            status: status.to_string(),
            detail: format!(" (log {}):\n{}", log.display(), tail(&text, 8)),
        })
    }

    fn run_interactive(&self, cmd: &Cmd) -> Result<i32, LabError> {
        let status = command(cmd).status().map_err(spawn_error(cmd))?;
        Ok(status.code().unwrap_or(255))
    }
}

/// Whether `program` is on PATH (or is an existing path).
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
}

/// Whether a process with `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The command line of process `pid`, arguments joined by spaces (empty if it is gone).
pub fn pid_cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Resident memory of process `pid` in KiB.
pub fn pid_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Sends `signal` to process `pid`. Returns false when the process is gone.
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; pid > 0 so it targets exactly
    // one process, never a process group.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_wrapping_keeps_the_arguments() {
        let c = Cmd::new("ssh")
            .args(["-i", "k", "root@10.77.0.1", "echo hi"])
            .in_netns("lab");
        assert_eq!(c.program, "ip");
        assert_eq!(
            c.args,
            [
                "netns",
                "exec",
                "lab",
                "ssh",
                "-i",
                "k",
                "root@10.77.0.1",
                "echo hi"
            ]
        );
        assert_eq!(
            c.to_string(),
            "ip netns exec lab ssh -i k root@10.77.0.1 'echo hi'"
        );
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 2), "");
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not_signalled() {
        assert!(pid_alive(std::process::id()));
        assert!(pid_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(!signal(0, 0));
    }
}
