//! The `cluster` and `submit` commands: a thin client of headnoded's unix socket, plus the local
//! cluster launcher.

pub mod client;
pub mod image;
pub mod lab;
pub mod lab_head;
pub mod local;
pub mod output;
pub mod provision;

use anyhow::{Context, bail};
use beowulf_proto::{submit_socket, v1};
use beowulf_types::JobState;
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
    /// Why a job waits: what blocks it, and when it should start.
    Why {
        job: u64,
        #[arg(long)]
        json: bool,
    },
    /// Advance reservations: nodes set aside for some users, or for maintenance.
    #[command(subcommand)]
    Reserve(ReserveCommand),
    /// Container images for jobs: `import NAME SOURCE`, `list`.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The VM lab: `up --nodes N`, `status`, `ssh NODE [CMD]`, `down`.
    Lab(lab::LabArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Put an image into the cluster's image store, addressed by digest. SOURCE is a rootfs
    /// tarball (plain or gzip), a rootfs directory, or an OCI image layout directory; it is read
    /// as you, and re-importing a NAME replaces it.
    Import { name: String, source: PathBuf },
    /// The images in the store.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReserveCommand {
    /// Set nodes aside: `cluster reserve create maint --nodes node[1-2] --start +10m --duration 2h --maintenance`.
    Create {
        name: String,
        /// A host list (`node[1-2]`); absent: every node.
        #[arg(long)]
        nodes: Option<String>,
        /// `now`, `+30m`, `+2h`, or Unix seconds.
        #[arg(long, default_value = "now")]
        start: String,
        /// Slurm's time syntax (`2:00:00`, `1-00:00:00`) or minutes.
        #[arg(long)]
        duration: String,
        /// Users allowed to run in it (comma-separated); absent: anyone who names it.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        /// Nobody runs there: a maintenance window.
        #[arg(long)]
        maintenance: bool,
    },
    /// Reservations that have not ended.
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of compute nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Run every daemon on this machine, with no provisioning.
    #[arg(long)]
    pub local: bool,
    /// Provision the hosts of this inventory (cluster.toml) through the running headnoded.
    #[arg(long, conflicts_with = "local")]
    pub inventory: Option<PathBuf>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Skip the steps an earlier run completed.
    #[arg(long, conflicts_with = "from")]
    pub resume: bool,
    /// Start at this step (`playbook/step`).
    #[arg(long)]
    pub from: Option<String>,
    /// Run only this playbook (repeatable; e.g. `--playbook agent` after replacing computed).
    #[arg(long = "playbook")]
    pub playbooks: Vec<String>,
    /// Follow the current (or show the last) provisioning run.
    #[arg(long, conflicts_with_all = ["local", "inventory"])]
    pub watch: bool,
    /// CPUs each local node offers.
    #[arg(long, default_value_t = 2)]
    pub cpus_per_node: u32,
    /// Memory each local node offers, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory_per_node: u64,
    /// Seconds without a heartbeat before a node is DOWN.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_timeout: u64,
    /// Scheduling policy for headnoded (`[[partition]]`, `[qos.NAME]`, `[priority]`, `[shares]`
    /// sections of headnoded.toml), added to the generated configuration.
    #[arg(long)]
    pub policy: Option<PathBuf>,
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

/// `cluster init --nodes N` without an inventory: the lab's VMs as the nodes (booted unless they
/// are up), headnoded in the lab's namespace, then the same provisioning as for real hosts.
async fn lab_init(state_dir: &Path, socket: &Path, args: &InitArgs) -> anyhow::Result<i32> {
    let lab_dir = state_dir.join("lab");
    let status = beowulf_lab::status(&beowulf_lab::host::System, &lab_dir);
    let up = status
        .as_ref()
        .is_ok_and(|s| s.namespace_exists && s.nodes.len() == args.nodes as usize);
    if !up {
        let code = lab::run(
            state_dir,
            lab::LabArgs {
                command: lab::LabCommand::Up {
                    nodes: args.nodes,
                    memory: beowulf_lab::DEFAULT_MEMORY_MIB,
                    timeout: beowulf_lab::DEFAULT_BOOT_TIMEOUT.as_secs(),
                },
            },
        )?;
        if code != 0 {
            return Ok(code);
        }
    }
    let inventory_path = lab_dir.join("cluster.toml");
    let inventory = beowulf_provision::ClusterInventory::load(&inventory_path)?;
    let netns = inventory
        .ssh
        .netns
        .clone()
        .context("the lab's inventory names no network namespace")?;
    local::start_lab_head(state_dir, socket, &netns, inventory.head.gige).await?;
    let options = provision::InitOptions {
        inventory: &inventory_path,
        plan: args.plan,
        resume: args.resume,
        from: args.from.as_deref(),
        playbooks: &args.playbooks,
    };
    provision::init(socket, &options).await
}

/// Runs a `cluster` command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let socket = cli.global.socket();
    match cli.command {
        Commands::Init(args) => {
            if args.watch {
                return provision::watch(&socket).await;
            }
            if let Some(inventory) = &args.inventory {
                let options = provision::InitOptions {
                    inventory,
                    plan: args.plan,
                    resume: args.resume,
                    from: args.from.as_deref(),
                    playbooks: &args.playbooks,
                };
                return provision::init(&socket, &options).await;
            }
            if args.nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            if !args.local {
                return lab_init(&cli.global.state_dir, &socket, &args).await;
            }
            if args.local && (args.plan || args.resume || args.from.is_some()) {
                bail!(
                    "--plan, --resume and --from provision hosts: use them with --inventory or without --local (the lab)"
                );
            }
            if args.nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            let opts =
                local::LocalOptions {
                    state_dir: cli.global.state_dir.clone(),
                    socket,
                    nodes: args.nodes,
                    cpus_per_node: args.cpus_per_node,
                    memory_per_node_mb: args.memory_per_node,
                    heartbeat_timeout_ms: args.heartbeat_timeout * 1000,
                    policy: match &args.policy {
                        Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                            format!("cannot read the policy {}", path.display())
                        })?),
                        None => None,
                    },
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
            let mut jobs = Vec::new();
            loop {
                let page = c
                    .list_jobs(v1::ListJobsRequest {
                        all,
                        after_job_id: jobs.last().map_or(0, |j: &v1::JobInfo| j.id),
                        limit: 0,
                    })
                    .await
                    .map_err(client::status_error)?
                    .into_inner();
                jobs.extend(page.jobs);
                if !page.more {
                    break;
                }
            }
            if json {
                let list: Vec<_> = jobs.iter().map(output::job_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{}",
                    output::printable(&output::queue_table(&jobs, local::now_ms()))
                );
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
                println!("{}", output::printable(&output::nodes_table(&nodes)));
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
                print!("{}", output::printable(&output::job_details(&info)));
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
        Commands::Why { job, json } => {
            let mut c = client::connect(&socket).await?;
            let why = c
                .why(v1::ShowJobRequest { job_id: job })
                .await
                .map_err(client::status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "id": why.job_id,
                        "state": why.state,
                        "reason": why.reason,
                        "starts_now": why.starts_now,
                        "priority": why.priority,
                        "estimated_start_ms": why.estimated_start_ms,
                        "blockers": why.blockers,
                    }))?
                );
            } else if why.job_state() != Some(JobState::Pending) {
                println!("job {job} is {}, not waiting", why.state);
            } else {
                print!("{}", why.text);
                if let Some(t) = why.estimated_start_ms {
                    println!(
                        "expected to start in ~{}",
                        output::duration(t.saturating_sub(local::now_ms()))
                    );
                }
            }
            Ok(0)
        }
        Commands::Reserve(command) => reserve(&socket, command).await,
        Commands::Image(ImageCommand::Import { name, source }) => {
            let info = image::import(&socket, &name, &source).await?;
            println!(
                "imported {} {} ({})",
                info.name,
                info.digest,
                output::mib(info.size_bytes)
            );
            Ok(0)
        }
        Commands::Image(ImageCommand::List { json }) => {
            let images = image::list(&socket).await?;
            if json {
                let list: Vec<_> = images.iter().map(output::image_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{}",
                    output::printable(&output::images_table(&images, local::now_ms()))
                );
            }
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

/// `cluster reserve create|list|delete`.
async fn reserve(socket: &Path, command: ReserveCommand) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    match command {
        ReserveCommand::Create {
            name,
            nodes,
            start,
            duration,
            users,
            maintenance,
        } => {
            let start_ms = parse_start(&start)?;
            let duration_ms = beowulf_types::jobfile::parse_time_limit(&toml_value(&duration))
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let nodes = match nodes {
                Some(list) => beowulf_types::hostlist::expand(&list)
                    .map_err(|e| anyhow::anyhow!("--nodes: {e}"))?,
                None => Vec::new(),
            };
            let r = c
                .create_reservation(v1::Reservation {
                    name,
                    nodes,
                    start_ms,
                    end_ms: start_ms + duration_ms,
                    users,
                    maintenance,
                    created_by: String::new(),
                })
                .await
                .map_err(client::status_error)?
                .into_inner();
            println!("reservation {} created", r.name);
        }
        ReserveCommand::List { json } => {
            let list = c
                .list_reservations(v1::ListReservationsRequest {})
                .await
                .map_err(client::status_error)?
                .into_inner()
                .reservations;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "nodes": r.nodes, "start_ms": r.start_ms, "end_ms": r.end_ms, "users": r.users, "maintenance": r.maintenance}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{}",
                    output::printable(&output::reservations_table(&list, local::now_ms()))
                );
            }
        }
        ReserveCommand::Delete { name } => {
            c.delete_reservation(v1::DeleteReservationRequest { name: name.clone() })
                .await
                .map_err(client::status_error)?;
            println!("reservation {name} deleted");
        }
    }
    Ok(0)
}

/// A duration given on the command line: integer minutes or Slurm's time syntax.
fn toml_value(text: &str) -> toml::Value {
    match text.trim().parse::<i64>() {
        Ok(minutes) => toml::Value::Integer(minutes),
        Err(_) => toml::Value::String(text.trim().to_string()),
    }
}

/// `now`, `+30m` / `+2h` / `+1d` / `+90s`, or Unix seconds → Unix milliseconds.
fn parse_start(text: &str) -> anyhow::Result<u64> {
    let now = local::now_ms();
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(rel) = text.strip_prefix('+') {
        let (n, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("--start: `{text}` is not like +30m"))?;
        let ms = match unit {
            "s" => 1000,
            "" | "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => bail!("--start: unknown unit `{unit}` (use s, m, h or d)"),
        };
        return Ok(now + n * ms);
    }
    let secs: u64 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("--start: `{text}` is not now, +30m or Unix seconds"))?;
    Ok(secs * 1000)
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

/// Writing to a closed pipe (`cluster queue --all | head`) ends the command quietly, as it
/// does every Unix tool, instead of a panic in `println!`.
pub fn die_quietly_on_closed_pipes() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code; it only restores the default
    // disposition Rust's runtime changed to "ignore" before main.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
