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
    /// The job file (job.toml).
    pub file: PathBuf,
    /// Follow the job until it ends and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// Print the job as JSON (with --wait: when it has ended).
    #[arg(long)]
    pub json: bool,
    /// Run the job as an array: `1-100`, `1,3,5`, `0-15:4`, with `%N` to run at most N at once.
    #[arg(long)]
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
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect()
    }
}

/// What `submit` sends: the job file's text, where and from what environment it was submitted,
/// and the options that override the file.
fn submit_request(args: &SubmitArgs) -> anyhow::Result<v1::SubmitRequest> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the job file {}", args.file.display()))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(v1::SubmitRequest {
        file_name: args.file.display().to_string(),
        file_text: text,
        cwd: cwd.display().to_string(),
        env: std::env::vars().collect(),
        overrides: args.overrides(),
        umask: Some(current_umask()),
    })
}

/// This process's umask (read by setting it and back: the only interface, and this is a single
/// thread at this point).
fn current_umask() -> u32 {
    let current = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(current);
    current.bits()
}

/// sbatch's answer line.
fn submitted_line(reply: &v1::SubmitReply) -> String {
    let id = reply.job_id;
    if reply.count > 1 {
        format!(
            "Submitted job array {id} ({} jobs: {id}-{})",
            reply.count,
            id + u64::from(reply.count) - 1
        )
    } else {
        format!("Submitted job {id}")
    }
}

fn print_submitted(reply: &v1::SubmitReply, args: &SubmitArgs) {
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "id": reply.job_id, "count": reply.count })
        );
    } else {
        println!("{}", submitted_line(reply));
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
    let submitted = submitted_line(&reply);
    if !args.wait {
        print_submitted(&reply, args);
        return Ok(0);
    }
    if reply.count > 1 {
        bail!("{submitted}; --wait follows one job: use `cluster queue` for arrays");
    }
    if !args.json {
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
