//! `srun`: runs a job step on a job's nodes through their agents and prints its tasks' output
//! as it comes, with Slurm's options for the step's shape, labels, output files, environment,
//! time limit and ends. Inside a batch script it asks its own node's agent; in a `salloc` shell
//! (or with `--jobid`) the head relays the step; outside any job it allocates one first, as
//! Slurm's srun does. `--pty` gives the task a terminal connected to srun's.
//!
//! ```text
//!  options + the job's environment (SLURM_JOB_NODELIST, SLURM_NTASKS, ...) ─▶ layout: nodes and
//!  tasks per node ─▶ Step stream on this node's agent (its local socket, BEOWULF_LAUNCH_*) ─▶
//!  Started(step) ─▶ output (to stdout/stderr or -o/-e files) ... task ends ─▶ exit code
//!  SIGINT, SIGTERM, ... ─▶ forwarded to every task; -t, -K, -W ─▶ srun ends the step
//! ```
//!
//! `--mpi=pmix`, `--input` other than `none` (without `--pty`) and `--exact` are refused with
//! what to do instead.

use super::allocate::{self, allocation_env};
use super::terminal;
use crate::client;
use beowulf_proto::local_socket::{connect_unix, launch_env};
use beowulf_proto::v1::{self, agent_launch_client::AgentLaunchClient, step_event, step_input};
use beowulf_types::{hostlist, output_pattern};
use clap::{ArgAction, Parser};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the step's tasks have between SIGTERM and SIGKILL when its time limit (`-t`) or
/// `-W` ends it: Slurm's default `KillWait`.
const STEP_KILL_WAIT: Duration = Duration::from_secs(30);
/// Signals srun passes on to the step's tasks, as Slurm's does.
const FORWARDED_SIGNALS: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// Exit code when the step could not be run at all (Slurm's srun uses 1 for its own errors).
const SRUN_FAILED: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "srun",
    version,
    about = "Run a job step on the nodes of the job (Slurm's srun, inside a batch script)"
)]
struct Args {
    /// Nodes of the step: N (or N-M, taken as N); default: the job's.
    #[arg(short = 'N', long = "nodes")]
    nodes: Option<String>,
    /// Tasks of the step; default: the job's (SLURM_NTASKS).
    #[arg(short = 'n', long = "ntasks")]
    ntasks: Option<u32>,
    /// Tasks on each node of the step.
    #[arg(long = "ntasks-per-node")]
    ntasks_per_node: Option<u32>,
    /// CPUs of each task; default: the job's (SLURM_CPUS_PER_TASK).
    #[arg(short = 'c', long = "cpus-per-task")]
    cpus_per_task: Option<u32>,
    /// Run on these of the job's nodes (a host list: node[1-2]).
    #[arg(short = 'w', long = "nodelist")]
    nodelist: Option<String>,
    /// Not on these of the job's nodes.
    #[arg(short = 'x', long = "exclude")]
    exclude: Option<String>,
    /// Prefix each line of output with its task's number.
    #[arg(short = 'l', long = "label")]
    label: bool,
    /// Working directory of the tasks; default: srun's.
    #[arg(short = 'D', long = "chdir")]
    chdir: Option<PathBuf>,
    /// Environment of the tasks: ALL (default), NONE (only SLURM_* variables), or a list of
    /// NAME or NAME=value, with ALL to add them to srun's whole environment.
    #[arg(long = "export")]
    export: Option<String>,
    /// Write the tasks' stdout to this file (%j %J %s %t %n %N %u %x %A %a %% expand).
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Write the tasks' stderr to this file (patterns as for --output).
    #[arg(short = 'e', long = "error")]
    error: Option<String>,
    /// Standard input of the tasks: only `none` (they read /dev/null).
    #[arg(short = 'i', long = "input")]
    input: Option<String>,
    /// Name of the step (in --verbose messages, and %x of output patterns).
    #[arg(short = 'J', long = "job-name")]
    job_name: Option<String>,
    /// Time limit of the step (minutes, MM:SS, HH:MM:SS, D-HH...): then SIGTERM, and SIGKILL
    /// 30 s later.
    #[arg(short = 't', long = "time")]
    time: Option<String>,
    /// End the whole step when a task exits with a code other than 0 (`-K0` turns it off).
    #[arg(short = 'K', long = "kill-on-bad-exit", num_args = 0..=1, default_missing_value = "1")]
    kill_on_bad_exit: Option<u8>,
    /// End the step this many seconds after its first task ended.
    #[arg(short = 'W', long = "wait")]
    wait: Option<u64>,
    /// MPI wiring: only `none` here (see `srun --help`).
    #[arg(long = "mpi")]
    mpi: Option<String>,
    /// Output as it comes: srun forwards each task's output by whole lines (a long line in
    /// pieces), so this changes nothing for line-oriented output.
    #[arg(short = 'u', long = "unbuffered")]
    unbuffered: bool,
    /// Share the job's CPUs with other steps running at once: what steps always do here.
    #[arg(long = "overlap")]
    overlap: bool,
    /// Refused: steps here always share the job's CPUs (as with --overlap).
    #[arg(long = "exact")]
    exact: bool,
    /// Outside a job: the job srun allocates has its nodes alone. Refused for a step (steps
    /// here always share the job's CPUs, as with --overlap).
    #[arg(long = "exclusive")]
    exclusive: bool,
    /// Run the task on a terminal of its own, connected to yours (an interactive shell:
    /// `srun --pty bash`); one task (-n1) unless -n says otherwise.
    #[arg(long = "pty")]
    pty: bool,
    /// Run the step in this running job of yours (from outside it; inside a `salloc` shell
    /// SLURM_JOB_ID says which).
    #[arg(long = "jobid")]
    jobid: Option<u64>,
    #[command(flatten)]
    placement: super::salloc::PlacementArgs,
    /// Print no informational messages.
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    /// Say which step runs where.
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count)]
    verbose: u8,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

/// Where a step runs: its nodes, in the job's order, and the tasks on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayout {
    pub nodes: Vec<String>,
    pub tasks_per_node: Vec<u32>,
    pub cpus_per_task: u32,
}

impl StepLayout {
    fn tasks(&self) -> u32 {
        self.tasks_per_node.iter().sum()
    }

    /// The node (index and name) that runs task `rank`.
    fn node_of(&self, rank: u32) -> (usize, &str) {
        let mut first = 0;
        for (i, (node, tasks)) in self.nodes.iter().zip(&self.tasks_per_node).enumerate() {
            if rank < first + tasks {
                return (i, node);
            }
            first += tasks;
        }
        (0, self.nodes.first().map_or("", String::as_str))
    }
}

/// The step's layout from srun's options and the job's environment (`env`), as Slurm's srun
/// reads them: `-N`/`-n`/`--ntasks-per-node`/`-c` on the command line win over the job's
/// SLURM_NNODES, SLURM_NTASKS and SLURM_CPUS_PER_TASK; nodes chosen by `-N`, `-w` or `-x` run
/// one task each unless `-n` or `--ntasks-per-node` says otherwise; fewer
/// tasks than nodes use fewer nodes; tasks are spread in blocks, the first nodes taking one more.
fn step_layout(
    args: &Args,
    env: &HashMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<StepLayout, String> {
    let job_list = env
        .get("SLURM_JOB_NODELIST")
        .or_else(|| env.get("SLURM_NODELIST"))
        .ok_or("SLURM_JOB_NODELIST is not set: srun runs steps inside a job")?;
    let job_nodes =
        hostlist::expand(job_list).map_err(|e| format!("SLURM_JOB_NODELIST {job_list:?}: {e}"))?;
    let named = |list: &Option<String>, what: &str| -> Result<Option<Vec<String>>, String> {
        let Some(list) = list else { return Ok(None) };
        let nodes = hostlist::expand(list).map_err(|e| format!("--{what} {list:?}: {e}"))?;
        if let Some(stranger) = nodes.iter().find(|n| !job_nodes.contains(n)) {
            return Err(format!(
                "--{what}: node {stranger} is not one of the job's nodes ({job_list})"
            ));
        }
        Ok(Some(nodes))
    };
    let include = named(&args.nodelist, "nodelist")?;
    let exclude = named(&args.exclude, "exclude")?.unwrap_or_default();
    let mut candidates: Vec<String> = job_nodes
        .iter()
        .filter(|n| !exclude.contains(n))
        .cloned()
        .collect();
    let number = |name: &str, text: &str| -> Result<u32, String> {
        text.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} {text:?} is not a positive whole number"))
    };
    let env_number = |name: &str| env.get(name).and_then(|v| v.parse::<u32>().ok());
    let nodes_given = match &args.nodes {
        Some(text) => {
            // N-M: a step takes the nodes it is given; the smallest count is what it needs.
            let min = text.split('-').next().unwrap_or(text);
            Some(number("--nodes", min)?)
        }
        None => None,
    };
    let cpus_per_task = match args.cpus_per_task {
        Some(0) => return Err("--cpus-per-task must be at least 1".into()),
        Some(c) => c,
        None => env_number("SLURM_CPUS_PER_TASK").unwrap_or(1).max(1),
    };
    if let Some(include) = &include {
        // The named nodes first (in the job's order), then others if -N asks for more.
        candidates.sort_by_key(|n| !include.contains(n));
        if let Some(stranger) = include.iter().find(|n| exclude.contains(n)) {
            return Err(format!(
                "node {stranger} is both in --nodelist and --exclude"
            ));
        }
    }
    // The job's shape is the default only when no option chose the nodes.
    let shaped = nodes_given.is_some() || include.is_some() || !exclude.is_empty();
    let mut nodes = nodes_given
        .or_else(|| include.as_ref().map(|i| i.len() as u32))
        .or_else(|| {
            (!shaped)
                .then(|| env_number("SLURM_NNODES").or_else(|| env_number("SLURM_JOB_NUM_NODES")))
                .flatten()
        })
        .unwrap_or(candidates.len() as u32);
    if let Some(include) = &include
        && (nodes as usize) < include.len()
    {
        return Err(format!(
            "--nodelist names {} nodes, more than the {nodes} the step is to have",
            include.len()
        ));
    }
    if nodes as usize > candidates.len() {
        return Err(format!(
            "the step asks for {nodes} nodes, and the job has {} to give it ({})",
            candidates.len(),
            hostlist::compress(&candidates)
        ));
    }
    let tasks = match (args.ntasks, args.ntasks_per_node) {
        (Some(0), _) => return Err("--ntasks must be at least 1".into()),
        (Some(n), _) => n,
        (None, Some(per_node)) if per_node > 0 => per_node
            .checked_mul(nodes)
            .ok_or("--ntasks-per-node times --nodes overflows")?,
        (None, Some(_)) => return Err("--ntasks-per-node must be at least 1".into()),
        (None, None) if shaped => nodes,
        (None, None) => env_number("SLURM_NTASKS").unwrap_or(nodes).max(1),
    };
    if tasks < nodes {
        warnings.push(format!(
            "can't run {tasks} processes on {nodes} nodes, setting nnodes to {tasks}"
        ));
        nodes = tasks;
    }
    let mut chosen: Vec<String> = candidates.into_iter().take(nodes as usize).collect();
    // Tasks are numbered in the job's node order, whichever nodes were named first.
    chosen.sort_by_key(|n| job_nodes.iter().position(|j| j == n));
    let tasks_per_node: Vec<u32> = match args.ntasks_per_node {
        Some(per_node) if args.ntasks.is_none() => vec![per_node; chosen.len()],
        _ => {
            let (each, extra) = (tasks / nodes, tasks % nodes);
            (0..nodes).map(|i| each + u32::from(i < extra)).collect()
        }
    };
    Ok(StepLayout {
        nodes: chosen,
        tasks_per_node,
        cpus_per_task,
    })
}

/// The tasks' environment by `--export`: srun's whole environment (ALL), only its SLURM_*
/// variables (NONE), or those with the listed variables (NAME takes srun's value, NAME=value
/// sets it).
fn step_environment(
    export: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let slurm_only = || -> BTreeMap<String, String> {
        env.iter()
            .filter(|(k, _)| k.starts_with("SLURM_") || k.starts_with("BEOWULF_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let everything = || -> BTreeMap<String, String> {
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let Some(export) = export else {
        return Ok(everything());
    };
    match export {
        "ALL" => return Ok(everything()),
        "NONE" => return Ok(slurm_only()),
        _ => {}
    }
    let items: Vec<&str> = export.split(',').filter(|i| !i.is_empty()).collect();
    let mut out = if items.contains(&"ALL") {
        everything()
    } else {
        slurm_only()
    };
    for item in items.into_iter().filter(|i| *i != "ALL") {
        match item.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                out.insert(name.to_string(), value.to_string());
            }
            Some(_) => return Err(format!("--export item {item:?} has no variable name")),
            None => {
                if let Some(value) = env.get(item) {
                    out.insert(item.to_string(), value.clone());
                }
            }
        }
    }
    Ok(out)
}

/// What `run` needs from the job's environment to reach this node's agent.
#[derive(Debug)]
struct LaunchContext {
    socket: PathBuf,
    token: String,
    job: u64,
    run: u32,
}

fn launch_context(env: &HashMap<String, String>) -> Result<LaunchContext, String> {
    let get = |name: &str| env.get(name).cloned();
    let (Some(socket), Some(token)) = (get(launch_env::SOCKET), get(launch_env::TOKEN)) else {
        return Err(format!(
            "{} and {} are both needed to reach this node's agent: they come with the batch \
             script's environment; do not unset them (or give --jobid to go through the head)",
            launch_env::SOCKET,
            launch_env::TOKEN
        ));
    };
    let job = get(launch_env::JOB)
        .and_then(|j| j.parse().ok())
        .ok_or_else(|| format!("{} is not a job ID", launch_env::JOB))?;
    let run = get(launch_env::RUN)
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("{} is not a run number", launch_env::RUN))?;
    Ok(LaunchContext {
        socket: PathBuf::from(socket),
        token,
        job,
        run,
    })
}

/// Options refused with what to do instead (never accepted and ignored).
fn refuse_unsupported(args: &Args, allocating: bool) -> Result<(), String> {
    if args.pty && (args.output.is_some() || args.error.is_some() || args.label) {
        return Err(
            "--pty sends the task's terminal to yours: --output, --error and --label do not \
             apply; drop them, or run without --pty"
                .into(),
        );
    }
    if let Some(mpi) = args.mpi.as_deref().filter(|m| *m != "none") {
        return Err(format!(
            "--mpi={mpi} is not supported yet: the step's ranks would each start alone; submit the \
             MPI program as the job's command with an [mpi] section (its agents wire the ranks up \
             through PMIx), or use --mpi=none"
        ));
    }
    if let Some(input) = args.input.as_deref().filter(|i| *i != "none") {
        return Err(format!(
            "--input={input} is not supported yet: the step's tasks read /dev/null (--input=none)"
        ));
    }
    if args.exact || (args.exclusive && !allocating) {
        return Err(
            "--exact and --exclusive are not supported: steps here always share the job's CPUs \
             (as with --overlap); drop the option, or give each step its tasks with -n and -c"
                .into(),
        );
    }
    Ok(())
}

/// srun's options as `(names, what they do here)`, from its own definition: for the docs.
pub fn option_rows() -> Vec<(String, String)> {
    use clap::CommandFactory;
    super::option_rows(Args::command())
}

/// How srun reaches the job's nodes.
#[derive(Debug)]
enum Route {
    /// Inside a batch script on one of the job's nodes: that node's agent (its local socket).
    Agent(LaunchContext),
    /// From outside the job's nodes (a `salloc` shell, `--jobid`): the head relays the step.
    Head { job: u64 },
    /// Outside any job: srun allocates one first, and ends it when the step ends.
    Allocate,
}

/// Where srun's step goes: `--jobid` names a job (through the head); else the launch
/// variables of a batch script mean this node's agent; else `SLURM_JOB_ID` (a `salloc` shell)
/// means that job, through the head; else srun allocates a job of its own.
fn route(args: &Args, env: &HashMap<String, String>) -> Result<Route, String> {
    if let Some(job) = args.jobid {
        return Ok(Route::Head { job });
    }
    if env.contains_key(launch_env::SOCKET) {
        return launch_context(env).map(Route::Agent);
    }
    match env.get("SLURM_JOB_ID") {
        Some(id) => id
            .parse()
            .map(|job| Route::Head { job })
            .map_err(|_| format!("SLURM_JOB_ID {id:?} is not a job ID")),
        None => Ok(Route::Allocate),
    }
}

/// Runs `srun` with `args` (argv, the program name first); returns the exit code.
pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let mut args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let mut env: HashMap<String, String> = std::env::vars().collect();
    let fail = |message: String| {
        eprintln!("srun: error: {message}");
        Ok(SRUN_FAILED)
    };
    let route = match route(&args, &env) {
        Ok(route) => route,
        Err(message) => return fail(message),
    };
    if let Err(message) = refuse_unsupported(&args, matches!(route, Route::Allocate)) {
        return fail(message);
    }
    if args.pty && args.ntasks.is_none() && args.ntasks_per_node.is_none() {
        // One shell on one terminal, whatever the job's own task count.
        args.ntasks = Some(1);
    }
    let mut head = None;
    let mut allocated = None;
    match &route {
        Route::Agent(_) => {}
        Route::Head { job } => {
            let mut client = client::connect(socket).await?;
            let info = match client.show_job(v1::ShowJobRequest { job_id: *job }).await {
                Ok(info) => info.into_inner(),
                Err(status) => return fail(client::status_error(status).to_string()),
            };
            if env
                .get("SLURM_JOB_ID")
                .is_none_or(|id| *id != job.to_string())
            {
                // `--jobid` from elsewhere: the job's own variables, not the caller's.
                let submit_dir = std::env::current_dir()?.display().to_string();
                env.extend(allocation_env(&info, &submit_dir));
            }
            head = Some(client);
        }
        Route::Allocate => {
            let mut client = client::connect(socket).await?;
            let overrides = allocation_overrides(&args);
            let info = match allocate::allocate(&mut client, "srun", overrides, args.quiet).await? {
                Ok(info) => info,
                Err(code) => return Ok(code),
            };
            let submit_dir = std::env::current_dir()?.display().to_string();
            env.extend(allocation_env(&info, &submit_dir));
            allocated = Some(info.id);
            head = Some(client);
        }
    }
    let code = run_step(&args, &route, &env, head.as_mut()).await;
    if let (Some(id), Some(client)) = (allocated, head.as_mut()) {
        let exit = *code.as_ref().unwrap_or(&SRUN_FAILED);
        allocate::end(client, id, exit).await?;
    }
    code
}

/// The job an allocating srun submits: its shape from srun's own options (`-N -n
/// --ntasks-per-node -c -t -w -x -J --exclusive`) and the placement ones, named after the
/// command.
fn allocation_overrides(args: &Args) -> HashMap<String, String> {
    super::salloc::allocation_fields(
        [
            ("nodes", args.nodes.clone()),
            ("ntasks", args.ntasks.map(|n| n.to_string())),
            (
                "tasks_per_node",
                args.ntasks_per_node.map(|n| n.to_string()),
            ),
            ("cpus_per_task", args.cpus_per_task.map(|n| n.to_string())),
            ("time_limit", args.time.clone()),
            ("nodelist", args.nodelist.clone()),
            ("exclude", args.exclude.clone()),
        ],
        &args.placement,
        args.exclusive,
        args.job_name
            .clone()
            .unwrap_or_else(|| super::salloc::name_of(&args.command)),
    )
}

/// Runs the step on the job's nodes and returns srun's exit code.
async fn run_step(
    args: &Args,
    route: &Route,
    env: &HashMap<String, String>,
    head: Option<&mut client::Client>,
) -> anyhow::Result<i32> {
    let fail = |message: String| {
        eprintln!("srun: error: {message}");
        Ok(SRUN_FAILED)
    };
    let mut warnings = Vec::new();
    let layout = match step_layout(args, env, &mut warnings) {
        Ok(layout) => layout,
        Err(message) => return fail(message),
    };
    if !args.quiet {
        for warning in &warnings {
            eprintln!("srun: warning: {warning}");
        }
    }
    let step_env = match step_environment(args.export.as_deref(), env) {
        Ok(step_env) => step_env,
        Err(message) => return fail(message),
    };
    let workdir = match &args.chdir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => std::env::current_dir()?.join(dir),
        None => std::env::current_dir()?,
    };
    let time_limit = match args.time.as_deref().map(parse_time_limit).transpose() {
        Ok(limit) => limit,
        Err(message) => return fail(message),
    };
    let terminal = args.pty.then(terminal::Raw::size_of_stdin);
    let (job, run, token) = match route {
        Route::Agent(context) => (context.job, context.run, context.token.clone()),
        // The head fills in the run and its credential.
        Route::Head { job } => (*job, 0, String::new()),
        Route::Allocate => (
            env.get("SLURM_JOB_ID")
                .and_then(|j| j.parse().ok())
                .unwrap_or_default(),
            0,
            String::new(),
        ),
    };
    let request = v1::StepRequest {
        job_id: job,
        run,
        token,
        step_id: 0,
        argv: args.command.clone(),
        env: step_env.into_iter().collect(),
        workdir: workdir.display().to_string(),
        nodes: layout.nodes.clone(),
        tasks_per_node: layout.tasks_per_node.clone(),
        cpus_per_task: layout.cpus_per_task,
        node: String::new(),
        terminal,
    };
    let (inputs, inputs_rx) = mpsc::channel(64);
    inputs
        .send(v1::StepInput {
            body: Some(step_input::Body::Start(request)),
        })
        .await?;
    let outbound = tokio_stream::wrappers::ReceiverStream::new(inputs_rx);
    let stream = match (route, head) {
        (Route::Agent(context), _) => {
            let channel = match connect_unix(&context.socket, "http://computed").await {
                Ok(channel) => channel,
                Err(e) => {
                    return fail(format!(
                        "cannot reach this node's agent at {}: {e}",
                        context.socket.display()
                    ));
                }
            };
            AgentLaunchClient::new(channel).step(outbound).await
        }
        (_, Some(head)) => head.step(outbound).await,
        (_, None) => return fail("no connection to the head".into()),
    };
    let mut stream = match stream {
        Ok(stream) => stream.into_inner(),
        Err(status) => return fail(format!("the step was refused: {}", status.message())),
    };
    // From here on the user's terminal is the task's (raw: keys go through as typed).
    let raw = terminal.and_then(|_| terminal::Raw::enter());
    let mut keys = terminal.is_some().then(terminal::read_stdin);
    let mut resizes = match &raw {
        Some(_) => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::window_change(),
        )?),
        None => None,
    };
    let mut step = Step::new(args, &layout, env, &workdir);
    let mut signals = Signals::new()?;
    let mut deadline: Option<tokio::time::Instant> =
        time_limit.map(|limit| tokio::time::Instant::now() + limit);
    let mut ending = false;
    loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let key = async {
            match keys.as_mut() {
                Some(keys) => keys.recv().await,
                None => std::future::pending().await,
            }
        };
        let resized = async {
            match resizes.as_mut() {
                Some(resizes) => resizes.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = stream.message() => match event {
                Ok(Some(event)) => {
                    if let Some(why) = step.on_event(event)?
                        && !ending
                    {
                        // A -K failure or -W's first end: the step ends as at its limit.
                        eprintln!("srun: {why}");
                        deadline = Some(tokio::time::Instant::now());
                    }
                    if step.done() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!("srun: error: the step's stream broke: {}", status.message());
                    break;
                }
            },
            number = signals.next() => {
                let _ = inputs.send(v1::StepInput { body: Some(step_input::Body::Signal(number)) }).await;
            }
            typed = key => match typed {
                Some(data) => {
                    let _ = inputs.send(v1::StepInput { body: Some(step_input::Body::Stdin(data)) }).await;
                }
                // The end of srun's input: the terminal's end-of-file key (^D) is for the task.
                None => keys = None,
            },
            Some(()) = resized => {
                let size = terminal::Raw::size_of_stdin();
                let _ = inputs.send(v1::StepInput { body: Some(step_input::Body::Resize(size)) }).await;
            }
            () = timer => {
                if ending {
                    // SIGKILL: the agents kill what is left of the step when srun's input ends.
                    eprintln!("srun: error: the step's tasks outlived the kill wait; killing them");
                    break;
                }
                if let Some(limit) = time_limit.filter(|_| step.ended.is_empty()) {
                    eprintln!("srun: error: step {} reached its time limit ({}s): terminating its tasks", step.id_text(), limit.as_secs());
                }
                ending = true;
                let _ = inputs.send(v1::StepInput { body: Some(step_input::Body::Signal(libc::SIGTERM)) }).await;
                deadline = Some(tokio::time::Instant::now() + STEP_KILL_WAIT);
            }
        }
    }
    drop(raw);
    drop(inputs);
    step.flush();
    Ok(step.exit_code())
}

/// srun's `-t`: Slurm's time forms, as the job file's `time_limit` reads them.
fn parse_time_limit(text: &str) -> Result<Duration, String> {
    let value = toml::Value::String(text.to_string());
    beowulf_types::jobfile::parse_time_limit(&value)
        .map(Duration::from_millis)
        .map_err(|e| format!("--time {text:?}: {e}"))
}

/// The signals srun forwards, as a stream of their numbers.
struct Signals {
    streams: Vec<(libc::c_int, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        let streams = FORWARDED_SIGNALS
            .into_iter()
            .map(|number| {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(number))
                    .map(|s| (number, s))
            })
            .collect::<Result<_, _>>()?;
        Ok(Signals { streams })
    }

    async fn next(&mut self) -> i32 {
        let waits = self.streams.iter_mut().map(|(number, stream)| {
            let number = *number;
            Box::pin(async move {
                stream.recv().await;
                number
            })
        });
        futures_select_all(waits).await
    }
}

/// The first of several futures to finish.
async fn futures_select_all<F>(futures: impl Iterator<Item = F>) -> i32
where
    F: Future<Output = i32> + Unpin,
{
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(move |cx| {
        for future in &mut futures {
            if let std::task::Poll::Ready(n) = std::pin::Pin::new(future).poll(cx) {
                return std::task::Poll::Ready(n);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Where one stream of the step's output goes.
#[derive(Debug)]
enum Sink {
    /// srun's own stdout or stderr.
    Terminal { stderr: bool },
    /// A file per pattern expansion (one for all tasks, or one per task with %t, %n, %N).
    Files { pattern: String },
}

/// What srun knows about the running step.
struct Step {
    id: Option<u32>,
    layout: StepLayout,
    label_width: usize,
    label: bool,
    stdout: Sink,
    stderr: Sink,
    /// Open output files by path.
    files: BTreeMap<PathBuf, File>,
    workdir: PathBuf,
    env: HashMap<String, String>,
    name: Option<String>,
    /// Exit code of each task that ended.
    ended: BTreeMap<u32, i32>,
    kill_on_bad_exit: bool,
    wait_after_first_end: Option<Duration>,
    verbose: bool,
}

impl Step {
    fn new(
        args: &Args,
        layout: &StepLayout,
        env: &HashMap<String, String>,
        workdir: &Path,
    ) -> Step {
        let tasks = layout.tasks();
        let sink = |pattern: &Option<String>, stderr: bool| match pattern {
            Some(p) if p != "-" => Sink::Files { pattern: p.clone() },
            _ => Sink::Terminal { stderr },
        };
        let stdout = sink(&args.output, false);
        // Slurm: --output alone takes stderr too.
        let stderr = match (&args.error, &args.output) {
            (Some(_), _) => sink(&args.error, true),
            (None, Some(_)) => sink(&args.output, true),
            (None, None) => Sink::Terminal { stderr: true },
        };
        Step {
            id: None,
            layout: layout.clone(),
            label_width: tasks.saturating_sub(1).to_string().len(),
            label: args.label,
            stdout,
            stderr,
            files: BTreeMap::new(),
            workdir: workdir.to_path_buf(),
            env: env.clone(),
            name: args.job_name.clone(),
            ended: BTreeMap::new(),
            kill_on_bad_exit: args.kill_on_bad_exit.is_some_and(|k| k != 0),
            wait_after_first_end: args.wait.filter(|w| *w > 0).map(Duration::from_secs),
            verbose: args.verbose > 0,
        }
    }

    /// `JOB.STEP` as Slurm names steps.
    fn id_text(&self) -> String {
        let job = self.env.get("SLURM_JOB_ID").map_or("?", String::as_str);
        match self.id {
            Some(id) => format!("{job}.{id}"),
            None => job.to_string(),
        }
    }

    fn done(&self) -> bool {
        self.ended.len() as u32 >= self.layout.tasks()
    }

    /// Takes one event of the step; `Some(why)` when the step must now end (-K, -W).
    fn on_event(&mut self, event: v1::StepEvent) -> anyhow::Result<Option<String>> {
        match event.body {
            Some(step_event::Body::Started(id)) => {
                self.id = Some(id);
                if self.verbose {
                    eprintln!(
                        "srun: step {}{}: {} tasks on {}",
                        self.id_text(),
                        self.name
                            .as_ref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default(),
                        self.layout.tasks(),
                        hostlist::compress(&self.layout.nodes)
                    );
                }
            }
            Some(step_event::Body::Output(output)) => self.write(&output)?,
            Some(step_event::Body::End(end)) => {
                if self.ended.contains_key(&end.rank) {
                    return Ok(None);
                }
                self.ended.insert(end.rank, end.exit_code);
                if end.exit_code != 0 {
                    let (_, node) = self.layout.node_of(end.rank);
                    let what = match end.exit_code {
                        code if code > 128 && end.detail.contains("signal") => {
                            format!("Killed by signal {}", code - 128)
                        }
                        code => format!("Exited with exit code {code}"),
                    };
                    eprintln!("srun: error: {node}: task {}: {what}", end.rank);
                    if end.exit_code >= 126 && !end.detail.is_empty() {
                        eprintln!("srun: error: {node}: task {}: {}", end.rank, end.detail);
                    }
                    if self.kill_on_bad_exit && !self.done() {
                        return Ok(Some(format!(
                            "error: task {} failed and --kill-on-bad-exit is set: terminating step {}",
                            end.rank,
                            self.id_text()
                        )));
                    }
                }
                if self.ended.len() == 1
                    && let Some(wait) = self.wait_after_first_end
                    && !self.done()
                {
                    return Ok(Some(format!(
                        "warning: first task of step {} ended; the others have {} s (--wait)",
                        self.id_text(),
                        wait.as_secs()
                    )));
                }
            }
            None => {}
        }
        Ok(None)
    }

    fn write(&mut self, output: &v1::StepOutput) -> anyhow::Result<()> {
        let data = if self.label {
            let prefix = format!("{:>width$}: ", output.rank, width = self.label_width);
            let mut labelled = Vec::with_capacity(output.data.len() + prefix.len());
            for line in output.data.split_inclusive(|b| *b == b'\n') {
                labelled.extend_from_slice(prefix.as_bytes());
                labelled.extend_from_slice(line);
            }
            labelled
        } else {
            output.data.clone()
        };
        let sink = if output.stderr {
            &self.stderr
        } else {
            &self.stdout
        };
        match sink {
            Sink::Terminal { stderr: false } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            Sink::Terminal { stderr: true } => std::io::stderr().lock().write_all(&data)?,
            Sink::Files { pattern } => {
                let path = self.workdir.join(self.expand(pattern, output.rank));
                let file = match self.files.entry(path.clone()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let file = File::create(&path).map_err(|err| {
                            anyhow::anyhow!("cannot create output file {}: {err}", path.display())
                        })?;
                        e.insert(file)
                    }
                };
                file.write_all(&data)?;
            }
        }
        Ok(())
    }

    /// An output pattern for task `rank` of the step.
    fn expand(&self, pattern: &str, rank: u32) -> String {
        let (node_index, node) = self.layout.node_of(rank);
        let var = |name: &str| self.env.get(name).cloned();
        let step = self.id.map(|s| s.to_string()).unwrap_or_default();
        output_pattern::expand(pattern, |letter| match letter {
            'j' => var("SLURM_JOB_ID"),
            'J' => var("SLURM_JOB_ID").map(|job| format!("{job}.{step}")),
            's' => Some(step.clone()),
            't' => Some(rank.to_string()),
            'n' => Some(node_index.to_string()),
            'N' => Some(node.to_string()),
            'u' => var("SLURM_JOB_USER").or_else(|| var("USER")),
            'x' => self.name.clone().or_else(|| var("SLURM_JOB_NAME")),
            'A' => var("SLURM_ARRAY_JOB_ID").or_else(|| var("SLURM_JOB_ID")),
            'a' => var("SLURM_ARRAY_TASK_ID"),
            _ => None,
        })
    }

    fn flush(&mut self) {
        for file in self.files.values_mut() {
            let _ = file.flush();
        }
        let _ = std::io::stdout().flush();
    }

    /// srun's exit code: the highest of its tasks' (128 + signal for a signal), or 1 when a
    /// task's end never came.
    fn exit_code(&self) -> i32 {
        if !self.done() {
            return SRUN_FAILED.max(self.ended.values().copied().max().unwrap_or(0));
        }
        self.ended.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(options: &[&str]) -> Args {
        let mut argv = vec!["srun"];
        argv.extend(options);
        argv.push("hostname");
        Args::try_parse_from(argv).unwrap()
    }

    fn job_env(nodes: &str, nnodes: u32, ntasks: u32) -> HashMap<String, String> {
        [
            ("SLURM_JOB_NODELIST", nodes.to_string()),
            ("SLURM_NNODES", nnodes.to_string()),
            ("SLURM_NTASKS", ntasks.to_string()),
            ("HOME", "/home/ada".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn layout(options: &[&str], env: &HashMap<String, String>) -> Result<StepLayout, String> {
        step_layout(&args(options), env, &mut Vec::new())
    }

    #[test]
    fn the_job_shape_is_the_default_and_options_win_over_it() {
        let env = job_env("node[1-3]", 3, 6);
        let all = layout(&[], &env).unwrap();
        assert_eq!(all.nodes, ["node1", "node2", "node3"]);
        assert_eq!(all.tasks_per_node, [2, 2, 2]);
        // -N alone: one task per node.
        assert_eq!(layout(&["-N", "2"], &env).unwrap().tasks_per_node, [1, 1]);
        // -n 4 over the job's 3 nodes: blocks, the first node one more.
        assert_eq!(layout(&["-n4"], &env).unwrap().tasks_per_node, [2, 1, 1]);
        // Fewer tasks than nodes use fewer nodes.
        let one = layout(&["-n", "1"], &env).unwrap();
        assert_eq!((one.nodes.len(), one.tasks()), (1, 1));
        assert_eq!(
            layout(&["-N3", "--ntasks-per-node=2"], &env)
                .unwrap()
                .tasks_per_node,
            [2, 2, 2]
        );
    }

    #[test]
    fn options_end_at_the_command() {
        let a = Args::try_parse_from(["srun", "-N2", "-l", "bash", "-c", "echo -n x"]).unwrap();
        assert_eq!(a.nodes.as_deref(), Some("2"));
        assert!(a.label);
        assert_eq!(a.command, ["bash", "-c", "echo -n x"]);
    }

    #[test]
    fn nodes_are_chosen_from_the_job_with_nodelist_and_exclude() {
        let env = job_env("node[1-3]", 3, 3);
        let only = layout(&["-w", "node3"], &env).unwrap();
        assert_eq!(only.nodes, ["node3"]);
        let named_first = layout(&["-w", "node3", "-N2"], &env).unwrap();
        assert_eq!(named_first.nodes, ["node1", "node3"]);
        let without = layout(&["-x", "node1", "-N2"], &env).unwrap();
        assert_eq!(without.nodes, ["node2", "node3"]);
        let excluded = layout(&["-x", "node[1,3]"], &env).unwrap();
        assert_eq!((excluded.nodes.len(), excluded.tasks()), (1, 1));
        let e = layout(&["-w", "node9"], &env).unwrap_err();
        assert!(e.contains("node9 is not one of the job's nodes"), "{e}");
        let e = layout(&["-N", "4"], &env).unwrap_err();
        assert!(e.contains("asks for 4 nodes"), "{e}");
        let e = layout(&["-n", "0"], &env).unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
    }

    #[test]
    fn export_takes_all_none_or_a_list() {
        let env = job_env("node1", 1, 1);
        let all = step_environment(None, &env).unwrap();
        assert!(all.contains_key("HOME"));
        let none = step_environment(Some("NONE"), &env).unwrap();
        assert!(!none.contains_key("HOME") && none.contains_key("SLURM_NTASKS"));
        let list = step_environment(Some("HOME,EXTRA=1"), &env).unwrap();
        assert_eq!(list["HOME"], "/home/ada");
        assert_eq!(list["EXTRA"], "1");
        let with_all = step_environment(Some("ALL,EXTRA=2"), &env).unwrap();
        assert_eq!(
            (with_all["EXTRA"].as_str(), with_all.contains_key("HOME")),
            ("2", true)
        );
    }

    #[test]
    fn unsupported_options_are_refused_not_ignored() {
        assert!(refuse_unsupported(&args(&["--pty"]), false).is_ok());
        assert!(refuse_unsupported(&args(&["--pty", "-l"]), false).is_err());
        assert!(refuse_unsupported(&args(&["--pty", "-o", "out"]), true).is_err());
        assert!(refuse_unsupported(&args(&["--mpi=pmix"]), false).is_err());
        assert!(refuse_unsupported(&args(&["--mpi=none"]), false).is_ok());
        assert!(refuse_unsupported(&args(&["--exclusive"]), false).is_err());
        assert!(refuse_unsupported(&args(&["--exclusive"]), true).is_ok());
        let mut env = job_env("node1", 1, 1);
        env.insert(launch_env::SOCKET.into(), "/run/beowulf/launch.sock".into());
        let e = launch_context(&env).unwrap_err();
        assert!(e.contains("are both needed"), "{e}");
    }

    #[test]
    fn srun_goes_to_the_agent_the_head_or_allocates() {
        let mut env = job_env("node1", 1, 1);
        assert!(matches!(route(&args(&[]), &env), Ok(Route::Allocate)));
        env.insert("SLURM_JOB_ID".into(), "12".into());
        assert!(matches!(
            route(&args(&[]), &env),
            Ok(Route::Head { job: 12 })
        ));
        assert!(matches!(
            route(&args(&["--jobid", "7"]), &env),
            Ok(Route::Head { job: 7 })
        ));
        for (name, value) in [
            (launch_env::SOCKET, "/s"),
            (launch_env::TOKEN, "t"),
            (launch_env::JOB, "12"),
            (launch_env::RUN, "1"),
        ] {
            env.insert(name.into(), value.into());
        }
        match route(&args(&[]), &env) {
            Ok(Route::Agent(context)) => assert_eq!((context.job, context.run), (12, 1)),
            other => panic!("not the agent: {other:?}"),
        }
        env.insert("SLURM_JOB_ID".into(), "x".into());
        env.remove(launch_env::SOCKET);
        assert!(
            route(&args(&[]), &env)
                .unwrap_err()
                .contains("not a job ID")
        );
    }

    #[test]
    fn an_allocating_srun_asks_for_the_steps_shape() {
        let fields = allocation_overrides(&args(&[
            "-N2",
            "-n4",
            "-p",
            "short",
            "-t",
            "5",
            "--exclusive",
        ]));
        assert_eq!(fields["nodes"], "2");
        assert_eq!(fields["ntasks"], "4");
        assert_eq!(fields["partition"], "short");
        assert_eq!(fields["time_limit"], "5");
        assert_eq!(fields["exclusive"], "true");
        assert_eq!(fields["name"], "hostname");
    }

    #[test]
    fn output_patterns_name_the_step_and_task() {
        let env = job_env("node[1-2]", 2, 2);
        let l = layout(&[], &env).unwrap();
        let mut step = Step::new(&args(&["-o", "out-%j.%s-%t-%N"]), &l, &env, Path::new("/w"));
        step.env.insert("SLURM_JOB_ID".into(), "42".into());
        step.id = Some(3);
        assert_eq!(step.expand("out-%j.%s-%t-%N", 1), "out-42.3-1-node2");
        assert_eq!(step.expand("%J", 0), "42.3");
    }
}
