//! Daemons started in the background and found again: a process started in its own process group
//! (in a network namespace when given) with its output in a log, and whether a recorded PID still
//! runs the program it was. Used for the local cluster's daemons and the lab head's services.

use anyhow::Context;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `program args`, in network namespace `netns` when given (`ip netns exec` execs it, so
/// the PID is the program's), in its own process group (a Ctrl-C in the user's shell does not
/// reach it), stdout and stderr appended to `log`.
pub(crate) fn spawn_in(
    netns: Option<&str>,
    program: &Path,
    args: &[String],
    log: &Path,
) -> anyhow::Result<u32> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open the log {}", log.display()))?;
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => Command::new(program),
    };
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(child.id())
}

/// True when the daemon recorded as `name` in `pids` still runs `program`.
pub(crate) fn alive(pids: &BTreeMap<String, u32>, name: &str, program: &str) -> bool {
    pids.get(name)
        .is_some_and(|&pid| is_our_process(pid, program))
}

/// True when the process we just started is gone or a zombie (its program is not checked: under
/// `ip netns exec` it is `ip` until the exec).
pub(crate) fn has_exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// True when `pid` runs `program` (not some other process that reused the PID) and is not a zombie.
pub(crate) fn is_our_process(pid: u32, program: &str) -> bool {
    if has_exited(pid) {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(argv0).ends_with(program)
}
