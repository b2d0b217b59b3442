//! The `cluster` and `submit` commands: a thin client of headnoded's unix socket, plus the local
//! cluster launcher.

pub mod client;
pub mod image;
pub mod jobs;
pub mod lab;
pub mod lab_head;
pub mod lifecycle;
pub mod local;
pub mod nodes;
pub mod output;
pub mod provision;
pub mod reserve;
pub mod slurm;
pub mod submit;

pub use image::ImageCommand;
pub use lifecycle::InitArgs;
pub use reserve::ReserveCommand;
pub use submit::{SubmitArgs, submit_over_grpc, submit_quick};

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
    Submit(Box<SubmitArgs>),
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
    /// Hold pending jobs: they wait (JobHeldUser; JobHeldAdmin when root holds) until released.
    Hold {
        #[arg(required = true)]
        jobs: Vec<u64>,
    },
    /// Release held jobs: they are considered again.
    Release {
        #[arg(required = true)]
        jobs: Vec<u64>,
    },
    /// Stop running jobs and queue them again (jobs submitted with --requeue); their restart
    /// count goes up.
    Requeue {
        #[arg(required = true)]
        jobs: Vec<u64>,
    },
    /// Change a job: its time limit and name; while it is pending, its partition, nodes, tasks.
    Update(UpdateArgs),
    /// Stop placing jobs on nodes (a host list: `node[1-4]`); their running jobs finish.
    Drain {
        nodes: String,
        #[arg(long)]
        reason: String,
    },
    /// Let drained (or recovered) nodes take jobs again (a host list: `node[1-4]`).
    Resume { nodes: String },
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

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub job: u64,
    /// Time limit: minutes, `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS` (a user may only lower a running
    /// job's).
    #[arg(long, short = 't')]
    pub time: Option<String>,
    #[arg(long, short = 'p')]
    pub partition: Option<String>,
    /// The job's name.
    #[arg(long, short = 'J')]
    pub name: Option<String>,
    #[arg(long, short = 'N')]
    pub nodes: Option<u32>,
    #[arg(long, short = 'n')]
    pub ntasks: Option<u32>,
}

impl UpdateArgs {
    fn request(self) -> anyhow::Result<beowulf_proto::v1::UpdateJobRequest> {
        Ok(beowulf_proto::v1::UpdateJobRequest {
            job_id: self.job,
            time_limit_ms: self
                .time
                .as_deref()
                .map(jobs::parse_time_limit)
                .transpose()?,
            partition: self.partition,
            name: self.name,
            num_nodes: self.nodes,
            num_tasks: self.ntasks,
        })
    }
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

/// Runs a `cluster` command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let socket = cli.global.socket();
    match cli.command {
        Commands::Init(args) => lifecycle::init(&cli.global.state_dir, &socket, args).await,
        Commands::Down => lifecycle::down(&cli.global.state_dir).await,
        Commands::Lab(args) => lab::run(&cli.global.state_dir, args),
        Commands::Submit(args) => submit::submit(&socket, &args).await,
        Commands::Queue { all, json } => jobs::queue(&socket, all, json).await,
        Commands::Show { job, json } => jobs::show(&socket, job, json).await,
        Commands::Cancel { jobs } => jobs::cancel(&socket, jobs).await,
        Commands::Why { job, json } => jobs::why(&socket, job, json).await,
        Commands::Hold { jobs } => {
            jobs::control(&socket, jobs::Control::Hold { user: false }, jobs).await
        }
        Commands::Release { jobs } => jobs::control(&socket, jobs::Control::Release, jobs).await,
        Commands::Requeue { jobs } => jobs::control(&socket, jobs::Control::Requeue, jobs).await,
        Commands::Update(args) => jobs::update(&socket, args.request()?).await,
        Commands::Nodes { json } => nodes::list(&socket, json).await,
        Commands::Drain { nodes, reason } => nodes::drain(&socket, nodes, reason).await,
        Commands::Resume { nodes } => nodes::resume(&socket, nodes).await,
        Commands::Reserve(command) => reserve::run(&socket, command).await,
        Commands::Image(command) => image::run(&socket, command).await,
    }
}
