//! `salloc`: holds an allocation (a job that runs nothing itself) while a command runs here,
//! usually a shell, whose `srun` lines run job steps on the allocation's nodes (relayed by the
//! head); when the command ends the allocation ends, with its exit code.

use super::allocate::{self, allocation_env};
use crate::client;
use clap::{ArgAction, Args as ClapArgs, Parser};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// How long a command whose allocation was revoked has between SIGHUP and SIGKILL.
const REVOKED_KILL_WAIT: Duration = Duration::from_secs(10);

/// The job's shape and placement, as `sbatch` takes them; `srun` outside a job takes the same
/// (its own `-N -n -c -w -x -J -t` besides).
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct PlacementArgs {
    /// Partition of the job.
    #[arg(short = 'p', long = "partition")]
    pub partition: Option<String>,
    /// Quality of service.
    #[arg(short = 'q', long = "qos")]
    pub qos: Option<String>,
    /// Account charged.
    #[arg(short = 'A', long = "account")]
    pub account: Option<String>,
    /// Run inside an advance reservation.
    #[arg(long = "reservation")]
    pub reservation: Option<String>,
    /// Node features the job needs: `ib&bigmem`, `a|b`.
    #[arg(short = 'C', long = "constraint")]
    pub constraint: Option<String>,
    /// Generic resources per node: `gpu:2`.
    #[arg(long = "gres")]
    pub gres: Option<String>,
    /// Memory per node: `512M`, `4G`, or MiB.
    #[arg(long = "mem")]
    pub mem: Option<String>,
    /// Memory per CPU.
    #[arg(long = "mem-per-cpu")]
    pub mem_per_cpu: Option<String>,
    /// GPUs on each node.
    #[arg(long = "gpus-per-node")]
    pub gpus_per_node: Option<String>,
    /// GPUs in all, spread over the nodes.
    #[arg(short = 'G', long = "gpus")]
    pub gpus: Option<String>,
    /// Not before this time (`now+60`, `16:00`, `tomorrow`, ...).
    #[arg(short = 'b', long = "begin")]
    pub begin: Option<String>,
}

impl PlacementArgs {
    /// The job-file fields these options set.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        [
            ("partition", &self.partition),
            ("qos", &self.qos),
            ("account", &self.account),
            ("reservation", &self.reservation),
            ("constraint", &self.constraint),
            ("gres", &self.gres),
            ("memory", &self.mem),
            ("memory_per_cpu", &self.mem_per_cpu),
            ("gpus_per_node", &self.gpus_per_node),
            ("gpus", &self.gpus),
            ("begin", &self.begin),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.clone().map(|v| (field, v)))
        .collect()
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "salloc",
    version,
    about = "Hold an allocation of nodes while a command (a shell by default) runs here; its \
             srun lines run job steps on the allocation's nodes (Slurm's salloc)"
)]
struct Args {
    /// Nodes of the allocation.
    #[arg(short = 'N', long = "nodes")]
    nodes: Option<String>,
    /// Tasks in all.
    #[arg(short = 'n', long = "ntasks")]
    ntasks: Option<String>,
    /// Tasks on each node.
    #[arg(long = "ntasks-per-node")]
    ntasks_per_node: Option<String>,
    /// CPUs of each task.
    #[arg(short = 'c', long = "cpus-per-task")]
    cpus_per_task: Option<String>,
    /// Time limit (minutes, MM:SS, HH:MM:SS, D-HH...): then the allocation is revoked.
    #[arg(short = 't', long = "time")]
    time: Option<String>,
    /// Name of the job (default: the command's).
    #[arg(short = 'J', long = "job-name")]
    job_name: Option<String>,
    /// Nodes the allocation must get: a host list.
    #[arg(short = 'w', long = "nodelist")]
    nodelist: Option<String>,
    /// Nodes it never gets.
    #[arg(short = 'x', long = "exclude")]
    exclude: Option<String>,
    /// Have the nodes alone.
    #[arg(long = "exclusive")]
    exclusive: bool,
    #[command(flatten)]
    placement: PlacementArgs,
    /// Print no informational messages.
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    /// Say more (accepted: the messages are the same).
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// Refused: an allocation here always runs a command.
    #[arg(long = "no-shell")]
    no_shell: bool,
    /// Refused: an allocation waits in the queue like any job.
    #[arg(short = 'I', long = "immediate", num_args = 0..=1, default_missing_value = "0")]
    immediate: Option<String>,
    /// The command and its arguments (default: your $SHELL).
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

impl Args {
    fn overrides(&self, name: String) -> HashMap<String, String> {
        allocation_fields(
            [
                ("nodes", self.nodes.clone()),
                ("ntasks", self.ntasks.clone()),
                ("tasks_per_node", self.ntasks_per_node.clone()),
                ("cpus_per_task", self.cpus_per_task.clone()),
                ("time_limit", self.time.clone()),
                ("nodelist", self.nodelist.clone()),
                ("exclude", self.exclude.clone()),
            ],
            &self.placement,
            self.exclusive,
            self.job_name.clone().unwrap_or(name),
        )
    }
}

/// The job-file fields of an allocation (salloc's, or the one srun makes for its step): its
/// shape as given, the placement options, `--exclusive` and its name.
pub fn allocation_fields(
    shape: [(&'static str, Option<String>); 7],
    placement: &PlacementArgs,
    exclusive: bool,
    name: String,
) -> HashMap<String, String> {
    let mut fields: Vec<(&str, String)> = shape
        .into_iter()
        .filter_map(|(field, value)| value.map(|v| (field, v)))
        .collect();
    fields.extend(placement.overrides());
    if exclusive {
        fields.push(("exclusive", "true".into()));
    }
    fields.push(("name", name));
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// salloc's options as `(names, what they do here)`: for the docs.
pub fn option_rows() -> Vec<(String, String)> {
    use clap::CommandFactory;
    super::option_rows(Args::command())
}

/// The command salloc runs: the one given, or the user's shell.
fn command_of(args: &Args) -> Vec<String> {
    if !args.command.is_empty() {
        return args.command.clone();
    }
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    vec![shell]
}

/// The job's name from its command: the program's file name.
pub fn name_of(command: &[String]) -> String {
    command
        .first()
        .and_then(|c| Path::new(c).file_name())
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("interactive")
        .to_string()
}

/// Runs `salloc` with `args` (argv, the program name first); returns the exit code.
pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    if args.no_shell {
        eprintln!(
            "salloc: error: --no-shell is not supported: the allocation ends with salloc's \
             command; run `salloc sleep infinity &` to hold one, or submit a batch script"
        );
        return Ok(1);
    }
    if args.immediate.is_some() {
        eprintln!(
            "salloc: error: --immediate is not supported: an allocation waits in the queue like \
             any job; press Ctrl-C to give up waiting"
        );
        return Ok(1);
    }
    let command = command_of(&args);
    let mut client = client::connect(socket).await?;
    let info = match allocate::allocate(
        &mut client,
        "salloc",
        args.overrides(name_of(&command)),
        args.quiet,
    )
    .await?
    {
        Ok(info) => info,
        Err(code) => return Ok(code),
    };
    let id = info.id;
    let submit_dir = std::env::current_dir()?.display().to_string();
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(allocation_env(&info, &submit_dir))
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("salloc: error: cannot run {}: {e}", command[0]);
            allocate::end(&mut client, id, 127).await?;
            if !args.quiet {
                eprintln!("salloc: Relinquishing job allocation {id}");
            }
            return Ok(127);
        }
    };
    // The command's terminal signals are its own (a shell's Ctrl-C): salloc does not die of them.
    let _keep = super::IgnoredSignals::new()?;
    let mut watch = client
        .watch_job(beowulf_proto::v1::ShowJobRequest { job_id: id })
        .await
        .map_err(client::status_error)?
        .into_inner();
    let mut revoked = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            info = tokio_stream::StreamExt::next(&mut watch), if !revoked => {
                let ended = match info {
                    Some(Ok(info)) => info.job_state().is_some_and(|s| s.is_terminal()).then_some(info.reason),
                    _ => None,
                };
                if let Some(reason) = ended {
                    revoked = true;
                    eprintln!("salloc: Job allocation {id} has been revoked: {reason}");
                    hang_up(&mut child).await;
                }
            }
        }
    };
    let code = exit_code(status);
    if !revoked {
        allocate::end(&mut client, id, code).await?;
        if !args.quiet {
            eprintln!("salloc: Relinquishing job allocation {id}");
        }
    }
    Ok(code)
}

/// The revoked allocation's command gets SIGHUP, then SIGKILL if it is still there.
async fn hang_up(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        );
    }
    if tokio::time::timeout(REVOKED_KILL_WAIT, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
    }
}

/// A shell's exit code for a process status: its code, or 128 + the signal that ended it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("salloc").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn options_become_the_jobs_fields() {
        let args = parse(&[
            "-N2",
            "-n",
            "4",
            "-t",
            "10",
            "-p",
            "short",
            "--mem=1G",
            "--exclusive",
            "bash",
        ]);
        let fields = args.overrides(name_of(&args.command));
        assert_eq!(fields["nodes"], "2");
        assert_eq!(fields["ntasks"], "4");
        assert_eq!(fields["time_limit"], "10");
        assert_eq!(fields["partition"], "short");
        assert_eq!(fields["memory"], "1G");
        assert_eq!(fields["exclusive"], "true");
        assert_eq!(fields["name"], "bash");
        let named = parse(&["-J", "mine", "/usr/bin/env", "true"]);
        assert_eq!(named.overrides("env".into())["name"], "mine");
    }

    #[test]
    fn the_command_runs_with_its_arguments() {
        let args = parse(&["-N1", "srun", "-n2", "hostname"]);
        assert_eq!(args.command, ["srun", "-n2", "hostname"]);
        assert_eq!(name_of(&args.command), "srun");
        assert_eq!(name_of(&[]), "interactive");
    }
}
