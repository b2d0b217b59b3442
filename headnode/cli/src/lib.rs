//! The `cluster` and `submit` commands: a thin client of headnoded's unix socket, plus the local
//! cluster launcher.

pub mod client;
pub mod lab;
pub mod local;
pub mod output;

use anyhow::{Context, bail};
use beowulf_proto::v1;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// Where a cluster keeps its state when no directory is named: the admin's usual place.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/beowulf";

#[derive(Debug, Parser)]
#[command(name = "cluster", version, about = "Run and use a Beowulf HPC cluster")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The cluster's state directory.
    #[arg(long, global = true, env = "BEOWULF_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// headnoded's socket (default: headnoded.sock in the state directory).
    #[arg(long, global = true, env = "BEOWULF_SOCKET")]
    pub socket: Option<PathBuf>,
}

impl Global {
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| self.state_dir.join("headnoded.sock"))
    }
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Bring up a cluster: `--local` runs headnoded and N agents on this machine.
    Init(InitArgs),
    /// Stop the daemons `init --local` started.
    Down,
    /// Queue a job described by a job file.
    Submit(SubmitArgs),
    /// Pending and running jobs (like squeue); `--all` adds ended ones.
    Queue {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The nodes and their state (like sinfo -N).
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// One job in detail, with its history.
    Show {
        job: u64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel jobs: running tasks are killed on every node.
    Cancel {
        #[arg(required = true)]
        jobs: Vec<u64>,
    },
    /// Stop placing jobs on a node; its running jobs finish.
    Drain {
        node: String,
        #[arg(long)]
        reason: String,
    },
    /// Let a drained (or recovered) node take jobs again.
    Resume { node: String },
    /// The VM lab: `up --nodes N`, `status`, `ssh NODE [CMD]`, `down`.
    Lab(lab::LabArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of compute nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Run every daemon on this machine, with no provisioning.
    #[arg(long)]
    pub local: bool,
    /// CPUs each local node offers.
    #[arg(long, default_value_t = 2)]
    pub cpus_per_node: u32,
    /// Memory each local node offers, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory_per_node: u64,
    /// Seconds without a heartbeat before a node is DOWN.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_timeout: u64,
}

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
}

/// Runs a `cluster` command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let socket = cli.global.socket();
    match cli.command {
        Commands::Init(args) => {
            if !args.local {
                bail!(
                    "provisioning real hosts and the VM lab is not available yet; use `cluster init --nodes {} --local` \
                     to run a local cluster on this machine",
                    args.nodes
                );
            }
            if args.nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            let opts = local::LocalOptions {
                state_dir: cli.global.state_dir.clone(),
                socket,
                nodes: args.nodes,
                cpus_per_node: args.cpus_per_node,
                memory_per_node_mb: args.memory_per_node,
                heartbeat_timeout_ms: args.heartbeat_timeout * 1000,
            };
            local::init(&opts).await?;
            Ok(0)
        }
        Commands::Down => {
            local::down(&cli.global.state_dir).await?;
            Ok(0)
        }
        Commands::Submit(args) => submit(&socket, &args).await,
        Commands::Queue { all, json } => {
            let mut c = client::connect(&socket).await?;
            let jobs = c
                .list_jobs(v1::ListJobsRequest { all })
                .await
                .map_err(client::status_error)?
                .into_inner()
                .jobs;
            if json {
                let list: Vec<_> = jobs.iter().map(output::job_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", output::queue_table(&jobs, local::now_ms()));
            }
            Ok(0)
        }
        Commands::Nodes { json } => {
            let mut c = client::connect(&socket).await?;
            let nodes = c
                .list_nodes(v1::ListNodesRequest {})
                .await
                .map_err(client::status_error)?
                .into_inner()
                .nodes;
            if json {
                let list: Vec<_> = nodes.iter().map(output::node_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{}", output::nodes_table(&nodes));
            }
            Ok(0)
        }
        Commands::Show { job, json } => {
            let mut c = client::connect(&socket).await?;
            let info = c
                .show_job(v1::ShowJobRequest { job_id: job })
                .await
                .map_err(client::status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output::job_json(&info))?
                );
            } else {
                print!("{}", output::job_details(&info));
            }
            Ok(0)
        }
        Commands::Cancel { jobs } => {
            let mut c = client::connect(&socket).await?;
            let mut failed = 0;
            for job in jobs {
                match c.cancel(v1::CancelRequest { job_id: job }).await {
                    Ok(_) => println!("cancelled job {job}"),
                    Err(status) => {
                        eprintln!("error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        Commands::Drain { node, reason } => {
            let mut c = client::connect(&socket).await?;
            let info = c
                .drain(v1::DrainRequest { node, reason })
                .await
                .map_err(client::status_error)?
                .into_inner();
            println!("{} is {}", info.name, info.state);
            Ok(0)
        }
        Commands::Lab(args) => lab::run(&cli.global.state_dir, args),
        Commands::Resume { node } => {
            let mut c = client::connect(&socket).await?;
            let info = c
                .resume(v1::ResumeRequest { node })
                .await
                .map_err(client::status_error)?
                .into_inner();
            println!("{} is {}", info.name, info.state);
            Ok(0)
        }
    }
}

/// `submit job.toml [--wait]`.
pub async fn submit(socket: &Path, args: &SubmitArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the job file {}", args.file.display()))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut c = client::connect(socket).await?;
    let reply = c
        .submit(v1::SubmitRequest {
            file_name: args.file.display().to_string(),
            file_text: text,
            cwd: cwd.display().to_string(),
            env: std::env::vars().collect(),
        })
        .await
        .map_err(client::status_error)?
        .into_inner();
    let id = reply.job_id;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::json!({ "id": id }));
        } else {
            println!("Submitted job {id}");
        }
        return Ok(0);
    }
    if !args.json {
        println!("Submitted job {id}");
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
            let detail = match info.state.as_str() {
                "PENDING" => format!(" ({})", info.reason),
                "RUNNING" => format!(" on {}", info.nodes.join(",")),
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
    Ok(match (info.state.as_str(), info.exit_code) {
        ("COMPLETED", _) => 0,
        (_, Some(code)) if (1..=255).contains(&code) => code,
        _ => 1,
    })
}
