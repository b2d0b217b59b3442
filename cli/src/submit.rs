//! `submit job.toml` (and `cluster submit`): the job file and the environment it was submitted
//! from, sent over headnoded's submit socket, or its gRPC API to follow the job with `--wait`.

use crate::{client, output};
use anyhow::{Context, bail};
use beowulf_proto::{submit_socket, v1};
use beowulf_types::JobState;
use clap::Args;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file (job.toml), or a batch script whose `#SBATCH` lines set the job.
    /// Without a file or --wrap, the script is read from standard input, as sbatch does.
    pub file: Option<PathBuf>,
    /// Run this shell command as the job's script (sbatch --wrap), instead of a file.
    #[arg(long, conflicts_with = "file")]
    pub wrap: Option<String>,
    /// Print only the job's ID (sbatch --parsable).
    #[arg(long)]
    pub parsable: bool,
    /// Answer as sbatch does (`Submitted batch job N`); set when the program runs as `sbatch`.
    #[arg(skip)]
    pub as_sbatch: bool,
    /// Nodes: overrides the file's `nodes` (sbatch -N).
    #[arg(long, short = 'N')]
    pub nodes: Option<String>,
    /// Tasks in all (sbatch -n).
    #[arg(long, short = 'n')]
    pub ntasks: Option<String>,
    /// Tasks on each node.
    #[arg(long, alias = "tasks-per-node")]
    pub ntasks_per_node: Option<String>,
    /// CPUs of each task (sbatch -c).
    #[arg(long, short = 'c')]
    pub cpus_per_task: Option<String>,
    /// Memory per node: `512M`, `4G`, or MiB.
    #[arg(long)]
    pub mem: Option<String>,
    /// Time limit: minutes, `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`.
    #[arg(long, short = 't')]
    pub time: Option<String>,
    /// Standard output file (`%j` job ID, `%x` name, `%u` user, `%A`/`%a` array, `%N` node).
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Standard error file (default: with the output).
    #[arg(long, short = 'e')]
    pub error: Option<String>,
    /// Working directory of the job (default: where you submit from).
    #[arg(long, short = 'D', alias = "workdir")]
    pub chdir: Option<String>,
    /// Requeue the job when one of its nodes fails.
    #[arg(long, conflicts_with = "no_requeue")]
    pub requeue: bool,
    /// Never requeue the job.
    #[arg(long)]
    pub no_requeue: bool,
    /// Queue the job held: it waits until `cluster release` (scontrol release).
    #[arg(long, short = 'H')]
    pub hold: bool,
    /// Follow the job until it ends and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// Print the job as JSON (with --wait: when it has ended).
    #[arg(long)]
    pub json: bool,
    /// Run the job as an array: `1-100`, `1,3,5`, `0-15:4`, with `%N` to run at most N at once.
    #[arg(long, short = 'a')]
    pub array: Option<String>,
    /// Start after other jobs: `afterok:12:13`, `afterany:14`, `afternotok:9`, `singleton`.
    #[arg(long, short = 'd')]
    pub dependency: Option<String>,
    #[arg(long, short = 'p')]
    pub partition: Option<String>,
    #[arg(long, short = 'q')]
    pub qos: Option<String>,
    #[arg(long, short = 'A')]
    pub account: Option<String>,
    /// Run inside an advance reservation.
    #[arg(long)]
    pub reservation: Option<String>,
    /// Node features the job needs: `ib&bigmem`, `a|b`.
    #[arg(long, short = 'C')]
    pub constraint: Option<String>,
    /// Generic resources per node: `gpu:2`.
    #[arg(long)]
    pub gres: Option<String>,
    /// The job's name.
    #[arg(long, short = 'J')]
    pub job_name: Option<String>,
    /// Nodes the job must get, every one of them: a host list like `node[1-3],node7`.
    #[arg(long, short = 'w')]
    pub nodelist: Option<String>,
    /// Nodes the job never runs on: a host list.
    #[arg(long, short = 'x')]
    pub exclude: Option<String>,
    /// Have the job's nodes alone: no other job runs on them while it does.
    #[arg(long)]
    pub exclusive: bool,
    /// Not eligible before this time (UTC): `now+60`, `now+10minutes`, `16:00`,
    /// `2026-05-01T12:00`, `midnight`, `noon`, `teatime`, `tomorrow`.
    #[arg(long, short = 'b')]
    pub begin: Option<String>,
    /// A signal before the time limit: `[B:]SIG[@SECONDS]` (`B:USR1@90`: USR1 to the batch
    /// shell 90 s before the end; without `B:` to the job's steps' tasks; 60 s by default).
    #[arg(long)]
    pub signal: Option<String>,
    /// Which of this environment the job gets: ALL (default), NONE (only SLURM_* variables), or
    /// a list of NAME and NAME=value (with ALL: everything, those set).
    #[arg(long)]
    pub export: Option<String>,
    /// Check the job as a submit would (file, options, partition, limits) and queue nothing.
    #[arg(long)]
    pub test_only: bool,
}

impl SubmitArgs {
    /// Options that override the job file, by job-file field name.
    fn overrides(&self) -> std::collections::HashMap<String, String> {
        [
            ("array", &self.array),
            ("dependency", &self.dependency),
            ("partition", &self.partition),
            ("qos", &self.qos),
            ("account", &self.account),
            ("reservation", &self.reservation),
            ("constraint", &self.constraint),
            ("gres", &self.gres),
            ("name", &self.job_name),
            ("nodes", &self.nodes),
            ("ntasks", &self.ntasks),
            ("tasks_per_node", &self.ntasks_per_node),
            ("cpus_per_task", &self.cpus_per_task),
            ("memory", &self.mem),
            ("time_limit", &self.time),
            ("output", &self.output),
            ("error", &self.error),
            ("workdir", &self.chdir),
            ("requeue", &self.requeue_override()),
            ("hold", &self.hold.then(|| "true".to_string())),
            ("nodelist", &self.nodelist),
            ("exclude", &self.exclude),
            ("exclusive", &self.exclusive.then(|| "true".to_string())),
            ("begin", &self.begin),
            ("signal", &self.signal),
            ("export", &self.export),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect()
    }

    fn requeue_override(&self) -> Option<String> {
        match (self.requeue, self.no_requeue) {
            (true, _) => Some("true".into()),
            (_, true) => Some("false".into()),
            _ => None,
        }
    }

    /// The file's name and text: the file as written, or the script `--wrap` makes.
    fn job_text(&self) -> anyhow::Result<(String, String)> {
        if let Some(command) = &self.wrap {
            let script = format!("#!/bin/sh\n# This script was created by --wrap.\n\n{command}\n");
            return Ok(("wrap".into(), script));
        }
        let Some(file) = self.file.as_ref() else {
            // sbatch reads the script from standard input when it is given no file.
            use std::io::{IsTerminal, Read};
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("give a job file, a command with --wrap, or a script on standard input");
            }
            let mut text = String::new();
            stdin
                .lock()
                .take(beowulf_types::jobfile::MAX_JOB_FILE_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .context("cannot read the job script from standard input")?;
            return Ok(("stdin".into(), text));
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the job file {}", file.display()))?;
        Ok((file.display().to_string(), text))
    }
}

/// What `submit` sends: the job file's text, where and from what environment it was submitted,
/// and the options that override the file.
fn submit_request(args: &SubmitArgs) -> anyhow::Result<v1::SubmitRequest> {
    let (file_name, text) = args.job_text()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(v1::SubmitRequest {
        file_name,
        file_text: text,
        cwd: cwd.display().to_string(),
        env: std::env::vars().collect(),
        overrides: args.overrides(),
        umask: Some(current_umask()),
        test_only: args.test_only,
    })
}

/// This process's umask (read by setting it and back: the only interface, and this is a single
/// thread at this point).
pub(crate) fn current_umask() -> u32 {
    let current = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(current);
    current.bits()
}

/// The answer line: sbatch's own when run as `sbatch` (tools parse `Submitted batch job N`), ours
/// (which says how many jobs an array queued) otherwise.
fn submitted_line(reply: &v1::SubmitReply, args: &SubmitArgs) -> String {
    let id = reply.job_id;
    if args.as_sbatch {
        format!("Submitted batch job {id}")
    } else if reply.count > 1 {
        format!(
            "Submitted job array {id} ({} jobs: {id}-{})",
            reply.count,
            id.saturating_add(u64::from(reply.count) - 1)
        )
    } else {
        format!("Submitted job {id}")
    }
}

/// The head's warnings about the script's directives, on stderr.
fn print_warnings(reply: &v1::SubmitReply) {
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
}

fn print_submitted(reply: &v1::SubmitReply, args: &SubmitArgs) {
    print_warnings(reply);
    if !reply.test_only.is_empty() {
        // sbatch says it on stderr, and prints no job ID.
        let who = if args.as_sbatch { "sbatch" } else { "submit" };
        eprintln!("{who}: {}", reply.test_only);
        return;
    }
    if args.parsable {
        println!("{}", reply.job_id);
    } else if args.json {
        println!(
            "{}",
            serde_json::json!({ "id": reply.job_id, "count": reply.count })
        );
    } else {
        println!("{}", submitted_line(reply, args));
    }
}

/// `submit job.toml` (without `--wait`) over headnoded's submit socket, blocking and without an
/// async runtime: the path a shell loop of submits takes (`beowulf_proto::submit_socket`).
/// `Ok(None)` when there is no submit socket to use: the gRPC API then takes the request.
pub fn submit_quick(socket: &Path, args: &SubmitArgs) -> anyhow::Result<Option<i32>> {
    if args.wait {
        return Ok(None);
    }
    let request = submit_request(args)?;
    let path = submit_socket::path_beside(socket);
    let mut stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot connect to headnoded's submit socket {}",
                    path.display()
                )
            });
        }
    };
    let answer: v1::SubmitAnswer =
        submit_socket::exchange(&mut stream, &request).with_context(|| {
            format!(
                "no answer on headnoded's submit socket {}: the job may or may not have been queued; \
                 look for it with `cluster queue` before submitting it again",
                path.display()
            )
        })?;
    match answer.result {
        Some(v1::submit_answer::Result::Reply(reply)) => {
            print_submitted(&reply, args);
            Ok(Some(0))
        }
        Some(v1::submit_answer::Result::Failure(failure)) => bail!("{}", failure.message),
        None => bail!(
            "headnoded's submit socket {} sent an empty answer",
            path.display()
        ),
    }
}

/// `submit job.toml [--wait]`: over the submit socket when it can, else the gRPC API.
pub async fn submit(socket: &Path, args: &SubmitArgs) -> anyhow::Result<i32> {
    match submit_quick(socket, args)? {
        Some(code) => Ok(code),
        None => submit_over_grpc(socket, args).await,
    }
}

/// `submit job.toml [--wait]` through the gRPC API (the only way to follow the job).
pub async fn submit_over_grpc(socket: &Path, args: &SubmitArgs) -> anyhow::Result<i32> {
    let request = submit_request(args)?;
    let mut c = client::connect(socket).await?;
    let reply = c
        .submit(request)
        .await
        .map_err(|status| {
            let lost = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            );
            let error = client::status_error(status);
            if lost {
                error.context(
                    "the answer was lost: the job may or may not have been queued; look for it \
                     with `cluster queue` before submitting it again",
                )
            } else {
                error
            }
        })?
        .into_inner();
    let id = reply.job_id;
    let submitted = submitted_line(&reply, args);
    if !args.wait || !reply.test_only.is_empty() {
        print_submitted(&reply, args);
        return Ok(0);
    }
    print_warnings(&reply);
    if reply.count > 1 {
        bail!("{submitted}; --wait follows one job: use `cluster queue` for arrays");
    }
    if args.parsable {
        println!("{id}");
    } else if !args.json {
        println!("{submitted}");
    }
    let mut events = c
        .watch_job(v1::ShowJobRequest { job_id: id })
        .await
        .map_err(client::status_error)?
        .into_inner();
    let mut last: Option<v1::JobInfo> = None;
    while let Some(info) = events.next().await {
        let info = info.map_err(client::status_error)?;
        if !args.json && last.as_ref().is_none_or(|l| l.state != info.state) {
            let detail = match info.job_state() {
                Some(JobState::Pending) => format!(" ({})", info.reason),
                Some(JobState::Running) => format!(" on {}", info.nodes.join(",")),
                _ if !info.reason.is_empty() => format!(": {}", info.reason),
                _ => String::new(),
            };
            eprintln!("job {id}: {}{detail}", info.state);
        }
        last = Some(info);
    }
    let info = last.context("the head sent no job state")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::job_json(&info))?
        );
    }
    Ok(match (info.job_state(), info.exit_code) {
        (Some(JobState::Completed), _) => 0,
        (_, Some(code)) if (1..=255).contains(&code) => code,
        _ => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::{Read, Write};

    #[derive(Debug, Parser)]
    struct SubmitOnly {
        #[command(flatten)]
        args: SubmitArgs,
    }

    fn args(argv: &[&str]) -> SubmitArgs {
        SubmitOnly::parse_from(std::iter::once("submit").chain(argv.iter().copied())).args
    }

    /// A head's submit socket at `socket`'s side that answers one request with `answer`; returns
    /// the request it got.
    fn answer_once(
        socket: &Path,
        answer: v1::SubmitAnswer,
    ) -> std::thread::JoinHandle<v1::SubmitRequest> {
        let listener =
            std::os::unix::net::UnixListener::bind(submit_socket::path_beside(socket)).unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut header = [0; submit_socket::HEADER_BYTES];
            stream.read_exact(&mut header).unwrap();
            let mut body = vec![0; submit_socket::announced_len(header).unwrap()];
            stream.read_exact(&mut body).unwrap();
            stream.write_all(&submit_socket::frame(&answer)).unwrap();
            submit_socket::decode(&body).unwrap()
        })
    }

    #[test]
    fn a_plain_submit_goes_over_the_submit_socket_and_reports_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("headnoded.sock");
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "command = [\"true\"]\n").unwrap();
        let job_arg = job.to_str().unwrap();

        let server = answer_once(
            &socket,
            v1::SubmitAnswer {
                result: Some(v1::submit_answer::Result::Reply(v1::SubmitReply {
                    job_id: 41,
                    count: 1,
                    warnings: Vec::new(),
                    test_only: String::new(),
                })),
            },
        );
        let code = submit_quick(&socket, &args(&[job_arg, "--array", "1-3"])).unwrap();
        assert_eq!(code, Some(0));
        let request = server.join().unwrap();
        assert_eq!(request.file_text, "command = [\"true\"]\n");
        assert_eq!(
            request.overrides.get("array").map(String::as_str),
            Some("1-3")
        );
        assert!(
            request.env.contains_key("PATH"),
            "the environment goes with the job"
        );

        std::fs::remove_file(submit_socket::path_beside(&socket)).unwrap();
        let server = answer_once(
            &socket,
            v1::SubmitAnswer {
                result: Some(v1::submit_answer::Result::Failure(v1::SubmitFailure {
                    code: 3,
                    message: "job.toml:1: field `cpus`: must be a number".into(),
                })),
            },
        );
        let err = submit_quick(&socket, &args(&[job_arg])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "job.toml:1: field `cpus`: must be a number"
        );
        server.join().unwrap();
    }

    #[test]
    fn placement_options_go_to_the_head_as_job_file_fields() {
        let overrides = args(&[
            "job.sh",
            "-w",
            "node[1-2]",
            "--exclude=node3",
            "--exclusive",
            "-b",
            "now+1hour",
        ])
        .overrides();
        let field = |name: &str| overrides.get(name).map(String::as_str);
        assert_eq!(field("nodelist"), Some("node[1-2]"));
        assert_eq!(field("exclude"), Some("node3"));
        assert_eq!(field("exclusive"), Some("true"));
        assert_eq!(field("begin"), Some("now+1hour"));
        let none = args(&["job.sh"]).overrides();
        assert!(!none.contains_key("exclusive"), "{none:?}");
    }

    #[test]
    fn without_a_submit_socket_or_with_wait_the_grpc_api_takes_the_submit() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("headnoded.sock");
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "command = [\"true\"]\n").unwrap();
        let job_arg = job.to_str().unwrap();
        assert_eq!(submit_quick(&socket, &args(&[job_arg])).unwrap(), None);
        // A socket file left by a head that stopped: refused, so the gRPC API is tried.
        drop(std::os::unix::net::UnixListener::bind(submit_socket::path_beside(&socket)).unwrap());
        assert_eq!(submit_quick(&socket, &args(&[job_arg])).unwrap(), None);
        assert_eq!(
            submit_quick(&socket, &args(&[job_arg, "--wait"])).unwrap(),
            None
        );
        // A missing job file is an error before any connection.
        let err = submit_quick(&socket, &args(&["/nonexistent/job.toml"])).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/job.toml"), "{err}");
    }
}
