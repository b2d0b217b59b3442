//! `job.toml`: the user's job request, parsed strictly, with errors that name the file, line and field.
//!
//! ```toml
//! name = "hello"
//! nodes = 5
//! tasks_per_node = 1          # or: ntasks = 10 (spread over the nodes, block-wise)
//! cpus_per_task = 1
//! memory = "256M"             # per node; integer = MiB; default 128 MiB per CPU
//! # memory_per_cpu = "1G"     # or per CPU (sbatch --mem-per-cpu), times the CPUs per node
//! # gpus_per_node = 2         # GPUs per node (sbatch --gpus-per-node), as gres = "gpu:2"
//! time_limit = "00:05:00"     # [D-]HH:MM:SS, MM:SS, or integer minutes; default 1 hour
//! command = ["hostname"]      # run as every task (srun semantics) ...
//! # script = "..."            # ... or a batch script run once, on the first node (sbatch semantics)
//! output = "hello-%j.out"     # %j = job ID; relative to workdir
//! requeue = true
//! nodelist = "node[1-2]"      # the job gets all of these nodes (sbatch --nodelist)
//! exclude = "node7"           # and never these (sbatch --exclude)
//! exclusive = true            # no other job shares its nodes (sbatch --exclusive)
//! begin = "now+10minutes"     # not eligible before (sbatch --begin; times in UTC)
//! signal = "B:USR1@90"        # USR1 to the batch shell 90 s before the time limit (sbatch --signal)
//! export = "NONE"             # only SLURM_* of the submitter's environment (sbatch --export)
//! [env]
//! GREETING = "hi"
//! ```
//!
//! Every value is treated as hostile: numbers are parsed and combined with checked arithmetic and
//! bounded, strings are bounded and refused when they hold bytes that cannot work where they go (the
//! `MAX_*` constants say why each bound has its value; `docs/decisions.md`, "Job file limits").

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

use crate::hostlist;
use crate::located::{SourceError, from_toml, line_of, line_of_field};
use crate::{Millis, NodeName};

mod batch;
mod begin;
mod export;
mod limits;
mod warn_signal;

pub use begin::{BeginTime, MAX_BEGIN_DELAY_SECONDS, parse_begin};
pub use export::{Export, parse_export};
pub use warn_signal::{WarnSignal, parse_warn_signal, signal_number};

pub use batch::{
    BatchJob, Effect, SBATCH_OPTIONS, SbatchOption, is_batch_script, option_for_field,
    parse_batch_script,
};

use limits::{BadNumber, Text, decimal, environment_problem, is_bidi_control, shown, text_problem};
pub use limits::{
    MAX_ARGV_BYTES, MAX_ARGV_ELEMENTS, MAX_ARRAY_ELEMENTS, MAX_CPUS_PER_NODE, MAX_CPUS_PER_TASK,
    MAX_ENV_BYTES, MAX_ENV_VARS, MAX_EXEC_STRING_BYTES, MAX_EXPRESSION_BYTES, MAX_GRES_COUNT,
    MAX_IDENTIFIER_BYTES, MAX_JOB_FILE_BYTES, MAX_MEMORY_MB, MAX_NAME_BYTES, MAX_NODE_NAME_BYTES,
    MAX_NODES, MAX_NTASKS, MAX_PATH_BYTES, MAX_SCRIPT_BYTES, MAX_TASKS_PER_NODE, MAX_TIME_LIMIT_MS,
};

/// Memory a job gets per CPU when it names none. Slurm's default is "the whole node"; a modest default
/// instead lets small jobs share nodes, and 128 MiB covers a shell, an MPI rank of a hello world and
/// the container runtime's overhead.
pub const DEFAULT_MEMORY_MB_PER_CPU: u64 = 128;

/// Time limit when a job names none: one hour, long enough for interactive trials, short enough that
/// a forgotten job does not hold nodes overnight (and backfill has a real limit to plan with).
pub const DEFAULT_TIME_LIMIT_MS: Millis = 60 * 60 * 1000;

/// A validated job request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub nodes: u32,
    /// Total number of tasks (ranks). Node `i` runs ranks `i*tasks_per_node ..` up to `ntasks`.
    pub ntasks: u32,
    pub tasks_per_node: u32,
    pub cpus_per_task: u32,
    /// Memory per node, in MiB.
    pub memory_mb: u64,
    pub time_limit_ms: Millis,
    pub partition: Option<String>,
    pub program: Program,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub requeue: bool,
    pub container: Option<ContainerSpec>,
    pub mpi: Option<MpiSpec>,
    /// `array = "1-100%10"`: the job is a template for one job per index.
    #[serde(default)]
    pub array: Option<ArraySpec>,
    /// `dependency = "afterok:12:13,afterany:14"` or `"singleton"`.
    #[serde(default)]
    pub dependencies: Vec<DependencySpec>,
    /// Node features the job needs, in Slurm's syntax (`ib&bigmem`, `a|b`); checked by the head.
    #[serde(default)]
    pub constraint: Option<String>,
    /// Generic resources per node: `gres = "gpu:2"` → {"gpu": 2}.
    #[serde(default)]
    pub gres: BTreeMap<String, u32>,
    #[serde(default)]
    pub qos: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub reservation: Option<String>,
    /// `hold = true` (sbatch `--hold`): the job is queued held, and waits until released.
    #[serde(default)]
    pub hold: bool,
    /// `nodelist = "node[1-3]"` (sbatch `--nodelist`): nodes the job must have, every one of them
    /// (more when `nodes` asks for more); expanded, sorted, without duplicates.
    #[serde(default)]
    pub nodelist: Vec<NodeName>,
    /// `exclude = "node[4-5]"` (sbatch `--exclude`): nodes the job never runs on; expanded, sorted.
    #[serde(default)]
    pub exclude: Vec<NodeName>,
    /// `exclusive = true` (sbatch `--exclusive`): no other job runs on the job's nodes while it
    /// does, and it starts only on nodes that run nothing.
    #[serde(default)]
    pub exclusive: bool,
    /// `begin = "now+1hour"` (sbatch `--begin`): the job is not eligible before this time,
    /// resolved against its submit time.
    #[serde(default)]
    pub begin: Option<BeginTime>,
    /// `signal = "B:USR1@90"` (sbatch `--signal`): a signal before the time limit.
    #[serde(default)]
    pub signal: Option<WarnSignal>,
    /// `export = "NONE"` (sbatch `--export`): which of the submitter's environment the job gets;
    /// `None`: all of it.
    #[serde(default)]
    pub export: Option<Export>,
}

/// A job array: which indices, and how many may run at once (`%N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    /// Sorted, without duplicates.
    pub indices: Vec<u32>,
    pub max_running: Option<u32>,
}

/// One clause of `dependency`. A job ID that is an array's names every element of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencySpec {
    AfterOk(Vec<u64>),
    AfterAny(Vec<u64>),
    AfterNotOk(Vec<u64>),
    Singleton,
    /// `afterok:12_3`: one element of an array, by the array's ID and the element's index.
    OnElement {
        after: ElementAfter,
        array: u64,
        index: u32,
    },
}

/// What an element dependency waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElementAfter {
    Ok,
    Any,
    NotOk,
}

impl ElementAfter {
    /// The clause's name in Slurm's syntax.
    pub fn keyword(self) -> &'static str {
        match self {
            ElementAfter::Ok => "afterok",
            ElementAfter::Any => "afterany",
            ElementAfter::NotOk => "afternotok",
        }
    }
}

impl JobSpec {
    /// True when the job is an MPI program (Open MPI or MPICH), started either way below.
    pub fn launches_mpi(&self) -> bool {
        matches!(
            (&self.program, &self.mpi),
            (
                Program::Command(_),
                Some(MpiSpec {
                    flavor: MpiFlavor::Openmpi | MpiFlavor::Mpich,
                    ..
                })
            )
        )
    }

    /// True for an MPI program with `launch = "direct"` (always so for MPICH): every node's
    /// agent starts its ranks itself (in containers when the job has an image) and wires them up
    /// through its PMIx server (as `srun --mpi=pmix`), with no `mpirun` and no daemon per node.
    pub fn launches_mpi_directly(&self) -> bool {
        self.launches_mpi()
            && self
                .mpi
                .as_ref()
                .is_some_and(|m| m.launch == MpiLaunchMode::Direct)
    }

    /// True for an MPI program the first node starts with `mpirun`, which then starts the other
    /// nodes' MPI daemons through their agents.
    pub fn launches_mpirun(&self) -> bool {
        self.launches_mpi() && !self.launches_mpi_directly()
    }

    /// True for a batch script (it runs on the job's first node; `srun` in it starts job steps
    /// on the job's nodes).
    pub fn runs_a_script(&self) -> bool {
        matches!(self.program, Program::Script(_))
    }

    /// True for an allocation (`salloc`): the job runs nothing itself, only job steps.
    pub fn is_allocation(&self) -> bool {
        matches!(self.program, Program::Allocation)
    }

    /// True when `srun` may start job steps on the job's nodes: from its batch script, or from
    /// outside for an allocation (and for a batch script, `srun --jobid`).
    pub fn takes_steps(&self) -> bool {
        matches!(self.program, Program::Script(_) | Program::Allocation)
    }

    /// True when tasks of the job run on more than one node, each node writing its own: their
    /// output goes through the first node (see the agents' output forwarding). A script runs on
    /// the first node only, and so does `mpirun`, which forwards its ranks' output itself.
    pub fn writes_on_several_nodes(&self) -> bool {
        matches!(self.program, Program::Command(_))
            && !self.launches_mpirun()
            && !self.ranks_on_node(1).is_empty()
    }

    /// CPUs the job needs on each of its nodes. The parser keeps this at most
    /// [`MAX_CPUS_PER_NODE`]; a spec built otherwise saturates, so it never wraps to a small number
    /// (or to 0, which the agents read as "no CPU limit").
    pub fn cpus_per_node(&self) -> u32 {
        self.tasks_per_node.saturating_mul(self.cpus_per_task)
    }

    /// Changes the node count, the task count or both (`scontrol update NumNodes= NumTasks=`)
    /// under the job file's rules: tasks spread over the nodes block-wise, every node runs at
    /// least one, and no node needs more than [`MAX_CPUS_PER_NODE`] CPUs. When only the node
    /// count changes, a job whose every node ran `tasks_per_node` tasks keeps that many per node
    /// (as the file's `tasks_per_node` would); otherwise the task count stays. Nothing changes
    /// when the result breaks a rule, and the error says which.
    pub fn set_layout(&mut self, nodes: Option<u32>, ntasks: Option<u32>) -> Result<(), String> {
        let new_nodes = nodes.unwrap_or(self.nodes);
        if !(1..=MAX_NODES).contains(&new_nodes) {
            return Err(format!(
                "nodes must be from 1 to {MAX_NODES}, got {new_nodes}"
            ));
        }
        let full = u64::from(self.ntasks) == u64::from(self.nodes) * u64::from(self.tasks_per_node);
        let new_ntasks = match ntasks {
            Some(n) => u64::from(n),
            None if full => u64::from(new_nodes) * u64::from(self.tasks_per_node),
            None => u64::from(self.ntasks),
        };
        if new_ntasks == 0 || new_ntasks > u64::from(MAX_NTASKS) {
            return Err(format!(
                "ntasks must be from 1 to {MAX_NTASKS}, got {new_ntasks}"
            ));
        }
        if new_ntasks < u64::from(new_nodes) {
            return Err(format!(
                "{new_ntasks} tasks cannot cover {new_nodes} nodes: every node runs at least one task"
            ));
        }
        // Both at most MAX_NTASKS, a u32: the casts cannot truncate.
        let new_ntasks = new_ntasks as u32;
        let tasks_per_node = new_ntasks.div_ceil(new_nodes);
        let cpus = u64::from(tasks_per_node) * u64::from(self.cpus_per_task);
        if tasks_per_node > MAX_TASKS_PER_NODE || cpus > u64::from(MAX_CPUS_PER_NODE) {
            return Err(format!(
                "{new_ntasks} tasks on {new_nodes} nodes need {cpus} CPUs on a node, more than the limit of {MAX_CPUS_PER_NODE}"
            ));
        }
        self.nodes = new_nodes;
        self.ntasks = new_ntasks;
        self.tasks_per_node = tasks_per_node;
        Ok(())
    }

    /// The ranks that run on the `node_index`-th node of the allocation: block distribution, with
    /// the remainder spread over the first nodes (7 tasks on 3 nodes: 3, 2, 2), as Slurm does, so no
    /// node of the allocation is left without a task.
    pub fn ranks_on_node(&self, node_index: u32) -> Range<u32> {
        if self.nodes == 0 || node_index >= self.nodes {
            return self.ntasks..self.ntasks;
        }
        let base = self.ntasks / self.nodes;
        let extra = self.ntasks % self.nodes;
        // At most `ntasks` for an index below `nodes`; saturating keeps a spec built by hand sane.
        let start = node_index
            .saturating_mul(base)
            .saturating_add(node_index.min(extra));
        let count = base + u32::from(node_index < extra);
        start.min(self.ntasks)..start.saturating_add(count).min(self.ntasks)
    }
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// An argv run as every task, like `srun`.
    Command(Vec<String>),
    /// A shell script run once as task 0 on the first node, like `sbatch`.
    Script(String),
    /// Nothing of its own (`allocation = true`, as `salloc` and `srun` outside a job submit):
    /// the job holds its nodes for job steps (`srun`) until its submitter ends it, its time
    /// limit passes or it is cancelled.
    Allocation,
}

/// Shells that run a script given as `-c SCRIPT NAME`, the way the agent hands a script over.
const SCRIPT_SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh"];

/// The argv that runs a job's script: its `#!` interpreter (with the interpreter's own argument,
/// and through `env` when the line says so) given the script with `-c`, or `/bin/sh` for a script
/// without a `#!` line. `name` becomes `$0`. Interpreters that do not take `-c` are refused: the
/// script travels as an argument, not as a file.
pub fn script_argv(script: &str, name: &str) -> Result<Vec<String>, String> {
    let mut argv: Vec<String> = match script.lines().next().and_then(|l| l.strip_prefix("#!")) {
        None => vec!["/bin/sh".into()],
        Some(line) => {
            let words: Vec<&str> = line.split_whitespace().collect();
            let shell = match words.as_slice() {
                [env, shell, ..] if env.ends_with("/env") => shell,
                [interpreter, ..] => interpreter,
                [] => return Err("the #! line names no interpreter".into()),
            };
            let base = shell.rsplit('/').next().unwrap_or(shell);
            if !SCRIPT_SHELLS.contains(&base) {
                return Err(format!(
                    "`#!{}` scripts are not supported yet: a script runs under a shell ({}); \
                     run `{base}` from a shell script instead",
                    shown(line.trim()),
                    SCRIPT_SHELLS.join(", ")
                ));
            }
            words.into_iter().map(str::to_string).collect()
        }
    };
    argv.extend(["-c".to_string(), script.to_string(), name.to_string()]);
    Ok(argv)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Path of the image on the shared area, or an image name from `cluster image list`.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpiSpec {
    pub flavor: MpiFlavor,
    pub fabric: Fabric,
    #[serde(default)]
    pub launch: MpiLaunchMode,
}

/// How an MPI job's ranks start (`mpirun` is for Open MPI only: MPICH is built without hydra).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MpiLaunchMode {
    /// Each node's agent starts its ranks and wires them up with its PMIx server (as
    /// `srun --mpi=pmix`): no mpirun, no daemons, about half of mpirun's start-up time. The other
    /// nodes' agents forward their ranks' output to the first node's, which writes the files.
    #[default]
    Direct,
    /// `mpirun` on the first node; its daemons on the others through their agents (for programs
    /// that rely on mpirun's own options or behaviour).
    Mpirun,
}

/// The MPI implementation of a job's program (`mpi.flavor`); `None`: not an MPI program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MpiFlavor {
    Openmpi,
    Mpich,
    None,
}

/// The interconnect a job asks for (`mpi.fabric`): the head resolves it to a [`RunFabric`] at
/// each start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    Auto,
    Ib,
    Tcp,
}

/// The interconnect the head chose for one run of an MPI job: InfiniBand verbs or TCP over the
/// gigabit network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunFabric {
    Ib,
    Tcp,
}

impl RunFabric {
    /// The word users see and job files use: `ib` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunFabric::Ib => "ib",
            RunFabric::Tcp => "tcp",
        }
    }

    /// The inverse of [`RunFabric::as_str`].
    pub fn parse(word: &str) -> Option<RunFabric> {
        match word {
            "ib" => Some(RunFabric::Ib),
            "tcp" => Some(RunFabric::Tcp),
            _ => None,
        }
    }
}

impl std::fmt::Display for RunFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The file as written, with the position of every value kept for error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<Spanned<String>>,
    nodes: Option<Spanned<i64>>,
    ntasks: Option<Spanned<i64>>,
    tasks_per_node: Option<Spanned<i64>>,
    cpus_per_task: Option<Spanned<i64>>,
    memory: Option<Spanned<toml::Value>>,
    memory_per_cpu: Option<Spanned<toml::Value>>,
    gpus_per_node: Option<Spanned<i64>>,
    gpus: Option<Spanned<i64>>,
    time_limit: Option<Spanned<toml::Value>>,
    partition: Option<Spanned<String>>,
    command: Option<Spanned<Vec<Spanned<String>>>>,
    script: Option<Spanned<String>>,
    allocation: Option<Spanned<bool>>,
    env: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    workdir: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    error: Option<Spanned<String>>,
    requeue: Option<bool>,
    container: Option<Spanned<RawContainer>>,
    mpi: Option<Spanned<RawMpi>>,
    array: Option<Spanned<String>>,
    dependency: Option<Spanned<String>>,
    constraint: Option<Spanned<String>>,
    gres: Option<Spanned<String>>,
    qos: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    reservation: Option<Spanned<String>>,
    hold: Option<bool>,
    nodelist: Option<Spanned<String>>,
    exclude: Option<Spanned<String>>,
    exclusive: Option<bool>,
    begin: Option<Spanned<String>>,
    signal: Option<Spanned<String>>,
    export: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    image: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMpi {
    flavor: Option<MpiFlavor>,
    fabric: Option<Fabric>,
    launch: Option<Spanned<MpiLaunchMode>>,
}

/// Parses and validates a job file's text. `file` is only used in error messages.
pub fn parse_job_file(file: &str, text: &str) -> Result<JobSpec, SourceError> {
    if text.len() > MAX_JOB_FILE_BYTES {
        return Err(SourceError {
            file: file.to_string(),
            line: 0,
            field: None,
            message: format!(
                "the job file is {} bytes, more than the limit of {MAX_JOB_FILE_BYTES} bytes (2 MiB); \
                 keep large data in files the job reads",
                text.len()
            ),
        });
    }
    let raw: RawJob = from_toml(file, text)?;
    let err = |span: Range<usize>, field: &str, message: String| SourceError {
        file: file.to_string(),
        line: line_of(text, span.start),
        field: Some(field.to_string()),
        message,
    };
    // Where an integer field is written; line 1 (as for any default) when it is not.
    let span_of = |v: &Option<Spanned<i64>>| v.as_ref().map_or(0..0, Spanned::span);
    let positive =
        |value: &Option<Spanned<i64>>, field: &str, max: u32| -> Result<Option<u32>, SourceError> {
            let Some(v) = value else {
                return Ok(None);
            };
            let n = *v.get_ref();
            if n < 1 {
                return Err(err(v.span(), field, format!("must be at least 1, got {n}")));
            }
            match u32::try_from(n) {
                Ok(n) if n <= max => Ok(Some(n)),
                _ => Err(err(
                    v.span(),
                    field,
                    format!("must be at most {max}, got {n}"),
                )),
            }
        };

    let node_list = |v: &Option<Spanned<String>>, field: &str| match v {
        None => Ok(Vec::new()),
        Some(v) => parse_node_list(v.get_ref()).map_err(|m| err(v.span(), field, m)),
    };
    let nodelist = node_list(&raw.nodelist, "nodelist")?;
    let exclude = node_list(&raw.exclude, "exclude")?;
    if let (Some(v), Some(both)) = (
        &raw.exclude,
        exclude.iter().find(|n| nodelist.binary_search(n).is_ok()),
    ) {
        return Err(err(
            v.span(),
            "exclude",
            format!(
                "excludes `{}`, which `nodelist` asks for; a node cannot be both",
                shown(both.as_str())
            ),
        ));
    }
    // As in Slurm, a node list alone sets the node count: the job gets the nodes it names.
    // `nodelist.len()` is at most MAX_NODES (parse_node_list), so the cast is lossless.
    let nodes = positive(&raw.nodes, "nodes", MAX_NODES)?.unwrap_or((nodelist.len() as u32).max(1));
    if let Some(v) = &raw.nodelist
        && nodelist.len() > nodes as usize
    {
        return Err(err(
            v.span(),
            "nodelist",
            format!(
                "names {} nodes but the job asks for {nodes} (`nodes`); a job gets every node of \
                 its list: ask for at least {} nodes, or name fewer",
                nodelist.len(),
                nodelist.len()
            ),
        ));
    }
    let begin = match &raw.begin {
        None => None,
        Some(v) => Some(parse_begin(v.get_ref()).map_err(|m| err(v.span(), "begin", m))?),
    };
    let signal = match &raw.signal {
        None => None,
        Some(v) => Some(parse_warn_signal(v.get_ref()).map_err(|m| err(v.span(), "signal", m))?),
    };
    let export = match &raw.export {
        None => None,
        Some(v) => Some(parse_export(v.get_ref()).map_err(|m| err(v.span(), "export", m))?),
    };
    let ntasks = positive(&raw.ntasks, "ntasks", MAX_NTASKS)?;
    let tasks_per_node = positive(&raw.tasks_per_node, "tasks_per_node", MAX_TASKS_PER_NODE)?;
    let cpus_per_task =
        positive(&raw.cpus_per_task, "cpus_per_task", MAX_CPUS_PER_TASK)?.unwrap_or(1);
    let (ntasks, tasks_per_node) = match (ntasks, tasks_per_node) {
        (None, None) => (nodes, 1),
        (None, Some(tpn)) => {
            let n = nodes
                .checked_mul(tpn)
                .filter(|n| *n <= MAX_NTASKS)
                .ok_or_else(|| {
                    err(
                        span_of(&raw.tasks_per_node),
                        "tasks_per_node",
                        format!(
                            "{nodes} nodes × {tpn} tasks_per_node is {} tasks, more than the limit of \
                             {MAX_NTASKS}; use fewer nodes or fewer tasks per node",
                            u64::from(nodes) * u64::from(tpn)
                        ),
                    )
                })?;
            (n, tpn)
        }
        (Some(n), None) => {
            if n < nodes {
                return Err(err(
                    span_of(&raw.ntasks),
                    "ntasks",
                    format!(
                        "{n} tasks cannot cover {nodes} nodes: every node runs at least one task"
                    ),
                ));
            }
            (n, n.div_ceil(nodes))
        }
        (Some(n), Some(tpn)) => {
            // Widened to u64, where the product of two u32 cannot overflow.
            let (n64, nodes64, tpn64) = (u64::from(n), u64::from(nodes), u64::from(tpn));
            if n64 > nodes64 * tpn64 || n64 <= (nodes64 - 1) * tpn64 {
                return Err(err(
                    span_of(&raw.ntasks),
                    "ntasks",
                    format!(
                        "{n} tasks do not match {nodes} nodes × {tpn} tasks_per_node; give only one of ntasks and tasks_per_node"
                    ),
                ));
            }
            (n, tpn)
        }
    };

    let Some(cpus_per_node) = tasks_per_node
        .checked_mul(cpus_per_task)
        .filter(|cpus| *cpus <= MAX_CPUS_PER_NODE)
    else {
        let given = |v: &Option<Spanned<i64>>| v.as_ref().map(|v| *v.get_ref());
        let field = if given(&raw.cpus_per_task).is_some_and(|c| c > 1) {
            "cpus_per_task"
        } else if raw.tasks_per_node.is_some() {
            "tasks_per_node"
        } else {
            "ntasks"
        };
        let span = match field {
            "cpus_per_task" => span_of(&raw.cpus_per_task),
            "tasks_per_node" => span_of(&raw.tasks_per_node),
            _ => span_of(&raw.ntasks),
        };
        return Err(err(
            span,
            field,
            format!(
                "{tasks_per_node} tasks per node × {cpus_per_task} cpus_per_task is {} CPUs on each \
                 node, more than the limit of {MAX_CPUS_PER_NODE} (the most CPUs Linux supports on \
                 one machine); use fewer tasks or CPUs per node, or more nodes",
                u64::from(tasks_per_node) * u64::from(cpus_per_task)
            ),
        ));
    };

    let memory_mb = match (&raw.memory, &raw.memory_per_cpu) {
        (Some(_), Some(per_cpu)) => {
            return Err(err(
                per_cpu.span(),
                "memory_per_cpu",
                "give either `memory` (per node) or `memory_per_cpu`, not both (sbatch's --mem \
                 and --mem-per-cpu exclude each other)"
                    .into(),
            ));
        }
        (None, Some(per_cpu)) => {
            let mb = parse_memory(per_cpu.get_ref())
                .map_err(|m| err(per_cpu.span(), "memory_per_cpu", m))?;
            mb.checked_mul(u64::from(cpus_per_node))
                .filter(|mb| *mb <= MAX_MEMORY_MB)
                .ok_or_else(|| {
                    err(
                        per_cpu.span(),
                        "memory_per_cpu",
                        format!(
                            "{mb} MiB for each of {cpus_per_node} CPUs is more than the limit of \
                             {MAX_MEMORY_MB} MiB on one node"
                        ),
                    )
                })?
        }
        (None, None) => DEFAULT_MEMORY_MB_PER_CPU
            .checked_mul(u64::from(cpus_per_node))
            .filter(|mb| *mb <= MAX_MEMORY_MB)
            .ok_or_else(|| {
                err(
                    0..0,
                    "memory",
                    format!(
                        "the default of {DEFAULT_MEMORY_MB_PER_CPU} MiB for each of {cpus_per_node} \
                         CPUs is more than the limit of {MAX_MEMORY_MB} MiB; give `memory`"
                    ),
                )
            })?,
        (Some(v), None) => parse_memory(v.get_ref()).map_err(|m| err(v.span(), "memory", m))?,
    };
    let time_limit_ms = match &raw.time_limit {
        None => DEFAULT_TIME_LIMIT_MS,
        Some(v) => parse_time_limit(v.get_ref()).map_err(|m| err(v.span(), "time_limit", m))?,
    };

    if let Some(allocation) = &raw.allocation {
        let other = if raw.command.is_some() {
            Some("command")
        } else if raw.script.is_some() {
            Some("script")
        } else {
            None
        };
        match (*allocation.get_ref(), other) {
            (true, Some(other)) => {
                return Err(err(
                    allocation.span(),
                    "allocation",
                    format!(
                        "an allocation runs no `{other}` of its own: give either `allocation = true` \
                         (then run steps in it with srun) or `{other}`"
                    ),
                ));
            }
            (false, None) => {
                return Err(err(
                    allocation.span(),
                    "allocation",
                    "is false, and the job has no `command` or `script` to run; give one".into(),
                ));
            }
            (true, None) if raw.container.is_some() || raw.mpi.is_some() => {
                return Err(err(
                    allocation.span(),
                    "allocation",
                    "an allocation's steps run on its nodes as they are: `[container]` and `[mpi]` \
                     belong to a job's own command; drop them, or submit the command"
                        .into(),
                ));
            }
            _ => {}
        }
    }
    let allocation = raw.allocation.as_ref().is_some_and(|a| *a.get_ref());
    let program = match (raw.command, raw.script) {
        (None, None) if allocation => Program::Allocation,
        (Some(c), None) => {
            let args = c.get_ref();
            if args.first().is_none_or(|a| a.get_ref().is_empty()) {
                return Err(err(
                    c.span(),
                    "command",
                    "must name a program, like [\"hostname\"]".into(),
                ));
            }
            if args.len() > MAX_ARGV_ELEMENTS {
                return Err(err(
                    c.span(),
                    "command",
                    format!(
                        "has {} arguments, more than the limit of {MAX_ARGV_ELEMENTS}; pass long \
                         lists in a file the program reads",
                        args.len()
                    ),
                ));
            }
            let mut total = 0usize;
            for (i, arg) in args.iter().enumerate() {
                if let Some(problem) =
                    text_problem(arg.get_ref(), Text::Exec, MAX_EXEC_STRING_BYTES)
                {
                    return Err(err(
                        arg.span(),
                        "command",
                        format!("argument {i} {problem}"),
                    ));
                }
                total = total.saturating_add(arg.get_ref().len());
            }
            if total > MAX_ARGV_BYTES {
                return Err(err(
                    c.span(),
                    "command",
                    format!(
                        "is {total} bytes of arguments, more than the limit of {MAX_ARGV_BYTES} \
                         bytes (256 KiB); pass long lists in a file the program reads"
                    ),
                ));
            }
            Program::Command(
                c.into_inner()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
            )
        }
        (None, Some(s)) => {
            if s.get_ref().trim().is_empty() {
                return Err(err(s.span(), "script", "is empty".into()));
            }
            if s.get_ref().len() > MAX_SCRIPT_BYTES {
                return Err(err(
                    s.span(),
                    "script",
                    format!(
                        "is {} bytes, more than the limit of {MAX_SCRIPT_BYTES} bytes (the agent \
                         passes the script to `sh -c` as one argument, which Linux caps at 128 KiB); \
                         move the bulk into a file the script runs",
                        s.get_ref().len()
                    ),
                ));
            }
            if let Some(problem) = text_problem(s.get_ref(), Text::Exec, MAX_SCRIPT_BYTES) {
                return Err(err(s.span(), "script", problem));
            }
            script_argv(s.get_ref(), "job").map_err(|m| err(s.span(), "script", m))?;
            Program::Script(s.into_inner())
        }
        (Some(_), Some(s)) => {
            return Err(err(
                s.span(),
                "script",
                "give either `command` or `script`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(SourceError {
                file: file.to_string(),
                line: 1,
                field: Some("command".into()),
                message: "missing: give `command = [\"prog\", \"arg\"]`, `script = \"...\"` or \
                          `allocation = true`"
                    .into(),
            });
        }
    };

    let env = match raw.env {
        None => BTreeMap::new(),
        Some(table) => {
            let table_span = table.span();
            let vars = table.into_inner();
            let problem = environment_problem(
                vars.iter()
                    .map(|(key, value)| (key.as_str(), value.get_ref().as_str())),
            );
            if let Some((key, message)) = problem {
                let at = key
                    .and_then(|key| vars.get(key))
                    .map_or(table_span, Spanned::span);
                return Err(err(at, "env", message));
            }
            vars.into_iter()
                .map(|(key, value)| (key, value.into_inner()))
                .collect()
        }
    };

    let mpi = match raw.mpi {
        None => None,
        Some(m) => {
            let m = m.into_inner();
            let flavor = m.flavor.unwrap_or(MpiFlavor::Openmpi);
            if flavor == MpiFlavor::Mpich
                && let Some(launch) = &m.launch
                && *launch.get_ref() == MpiLaunchMode::Mpirun
            {
                return Err(err(
                    launch.span(),
                    "mpi.launch",
                    "\"mpirun\" is Open MPI's launcher; MPICH ranks are started by the agents \
                     through PMIx: remove `launch` (or write launch = \"direct\")"
                        .into(),
                ));
            }
            Some(MpiSpec {
                flavor,
                fabric: m.fabric.unwrap_or(Fabric::Auto),
                launch: m.launch.map(Spanned::into_inner).unwrap_or_default(),
            })
        }
    };

    let array = match &raw.array {
        None => None,
        Some(a) => Some(parse_array(a.get_ref()).map_err(|m| err(a.span(), "array", m))?),
    };
    let dependencies = match &raw.dependency {
        None => Vec::new(),
        Some(d) => parse_dependencies(d.get_ref()).map_err(|m| err(d.span(), "dependency", m))?,
    };
    let mut gres = match &raw.gres {
        None => BTreeMap::new(),
        Some(g) => parse_gres(g.get_ref()).map_err(|m| err(g.span(), "gres", m))?,
    };
    // GPUs asked for as sbatch's --gpus-per-node and --gpus do: the `gpu` GRES per node.
    let gpus_per_node = positive(&raw.gpus_per_node, "gpus_per_node", MAX_GRES_COUNT)?;
    let gpus_total = positive(&raw.gpus, "gpus", MAX_GRES_COUNT)?;
    let gpus = match (gpus_per_node, gpus_total, &raw.gpus) {
        (Some(_), Some(_), Some(total)) => {
            return Err(err(
                total.span(),
                "gpus",
                "give either `gpus` (for the whole job) or `gpus_per_node`, not both".into(),
            ));
        }
        (Some(per_node), _, _) => Some((per_node, "gpus_per_node", raw.gpus_per_node.as_ref())),
        (None, Some(total), field) if total % nodes == 0 => {
            Some((total / nodes, "gpus", field.as_ref()))
        }
        (None, Some(total), Some(field)) => {
            return Err(err(
                field.span(),
                "gpus",
                format!(
                    "{total} GPUs do not divide evenly over {nodes} nodes; every node of a job \
                     has as many, so ask for a multiple of {nodes} (or use gpus_per_node)"
                ),
            ));
        }
        _ => None,
    };
    if let Some((count, field, Some(at))) = gpus {
        if gres.contains_key("gpu") {
            return Err(err(
                at.span(),
                field,
                "`gres` asks for GPUs already; give them one way only".into(),
            ));
        }
        gres.insert("gpu".to_string(), count);
    }
    // A string field: not blank, and within `max` bytes of what `rule` lets through.
    let text_field = |v: Option<Spanned<String>>,
                      field: &str,
                      rule: Text,
                      max: usize|
     -> Result<Option<String>, SourceError> {
        let Some(v) = v else {
            return Ok(None);
        };
        if v.get_ref().trim().is_empty() {
            return Err(err(
                v.span(),
                field,
                "is empty; write a value or leave the field out".into(),
            ));
        }
        if let Some(problem) = text_problem(v.get_ref(), rule, max) {
            return Err(err(v.span(), field, problem));
        }
        Ok(Some(v.into_inner()))
    };
    let name = text_field(raw.name, "name", Text::Shown, MAX_NAME_BYTES)?;
    let partition = text_field(
        raw.partition,
        "partition",
        Text::Shown,
        MAX_IDENTIFIER_BYTES,
    )?;
    let constraint = text_field(
        raw.constraint,
        "constraint",
        Text::Shown,
        MAX_EXPRESSION_BYTES,
    )?;
    let qos = text_field(raw.qos, "qos", Text::Shown, MAX_IDENTIFIER_BYTES)?;
    let account = text_field(raw.account, "account", Text::Shown, MAX_IDENTIFIER_BYTES)?;
    let reservation = text_field(
        raw.reservation,
        "reservation",
        Text::Shown,
        MAX_IDENTIFIER_BYTES,
    )?;
    let workdir = text_field(raw.workdir, "workdir", Text::Path, MAX_PATH_BYTES)?;
    let output = text_field(raw.output, "output", Text::Path, MAX_PATH_BYTES)?;
    let error = text_field(raw.error, "error", Text::Path, MAX_PATH_BYTES)?;
    let container = match raw.container {
        None => None,
        Some(c) => text_field(
            Some(c.into_inner().image),
            "container.image",
            Text::Path,
            MAX_PATH_BYTES,
        )?
        .map(|image| ContainerSpec { image }),
    };

    Ok(JobSpec {
        name: name.unwrap_or_else(|| default_name(file)),
        nodes,
        ntasks,
        tasks_per_node,
        cpus_per_task,
        memory_mb,
        time_limit_ms,
        partition,
        program,
        env,
        workdir,
        output,
        error,
        requeue: raw.requeue.unwrap_or(false),
        container,
        mpi,
        array,
        dependencies,
        constraint,
        gres,
        qos,
        account,
        reservation,
        hold: raw.hold.unwrap_or(false),
        nodelist,
        exclude,
        exclusive: raw.exclusive.unwrap_or(false),
        begin,
        signal,
        export,
    })
}

/// A host list (`node[1-3],gpu7`): expanded with the bounded [`hostlist::expand`], at most
/// [`MAX_NODES`] names (a job can have no more nodes, and no cluster has more), each a host name
/// (letters, digits, `-`, `_`, `.`; at most [`MAX_NODE_NAME_BYTES`]); sorted, without duplicates.
pub fn parse_node_list(text: &str) -> Result<Vec<NodeName>, String> {
    check_expression_length(text, "use ranges like node[1-100]")?;
    if let Some(problem) = text_problem(text, Text::Shown, MAX_EXPRESSION_BYTES) {
        return Err(problem);
    }
    let mut names = hostlist::expand(text)?;
    if names.is_empty() {
        return Err("names no node; write a list like node[1-3],node7".into());
    }
    if names.len() > MAX_NODES as usize {
        return Err(format!(
            "names {} nodes, more than the limit of {MAX_NODES}; give a shorter list",
            names.len()
        ));
    }
    if let Some(bad) = names.iter().find(|name| {
        name.len() > MAX_NODE_NAME_BYTES
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }) {
        return Err(format!(
            "`{}` is not a node name: node names are host names (letters, digits, `-`, `_`, \
             `.`; at most {MAX_NODE_NAME_BYTES} bytes)",
            shown(bad)
        ));
    }
    names.sort_unstable();
    names.dedup();
    Ok(names.into_iter().map(NodeName).collect())
}

/// Checks an environment a job would run with: every `NAME=value` must survive `execve` (a name not
/// empty, without `=` or NUL; a value without NUL; each at most [`MAX_EXEC_STRING_BYTES`]), and
/// there may be at most [`MAX_ENV_VARS`] variables of [`MAX_ENV_BYTES`] in all. The error names
/// the variable at fault.
pub fn validate_environment(env: &BTreeMap<String, String>) -> Result<(), String> {
    match environment_problem(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        None => Ok(()),
        Some((_, message)) => Err(message),
    }
}

/// Checks what `submit` sends beside the job file and the head keeps with the job: the directory
/// it was submitted from (absolute, at most [`MAX_PATH_BYTES`], no NUL) and the exported
/// environment. The job runs with the exported environment and the file's `[env]` over it, so the
/// two are checked together, by [`validate_environment`]. The head calls it at submit, after
/// [`parse_job_file`] and [`apply_overrides`]; `file` is only used in error messages.
pub fn validate_submission(
    file: &str,
    cwd: &str,
    submit_env: &BTreeMap<String, String>,
    spec: &JobSpec,
) -> Result<(), SourceError> {
    let fail = |field: Option<&str>, message: String| SourceError {
        file: file.to_string(),
        line: 0,
        field: field.map(str::to_string),
        message,
    };
    if let Some(problem) = text_problem(cwd, Text::Exec, MAX_PATH_BYTES) {
        return Err(fail(
            None,
            format!("the submit directory {problem}; submit from another directory"),
        ));
    }
    if !cwd.starts_with('/') {
        return Err(fail(
            None,
            format!(
                "the submit directory `{}` is not an absolute path; submit with `submit`, which sends the current directory",
                shown(cwd)
            ),
        ));
    }
    let mut merged: BTreeMap<&str, &str> = submit_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    merged.extend(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match environment_problem(merged) {
        None => Ok(()),
        Some((None, message)) => Err(fail(
            Some("env"),
            format!("the exported environment with `[env]` over it {message}"),
        )),
        Some((Some(_), message)) => Err(fail(
            Some("env"),
            format!("the exported environment: {message}"),
        )),
    }
}

/// Applies command-line overrides (`--array`, `--dependency`, ...) to a parsed job, by job-file
/// field name, with the same checks as in a file. Errors name the option.
/// Job-file fields that command-line options may set on a job file as well as on a batch script;
/// they are checked together with the file's other fields (a `--nodes` must agree with the file's
/// `ntasks`), so they are merged into the file and parsed again.
const MERGED_OVERRIDES: &[&str] = &[
    "nodes",
    "ntasks",
    "tasks_per_node",
    "cpus_per_task",
    "memory",
    "memory_per_cpu",
    "gpus_per_node",
    "gpus",
    "time_limit",
    "output",
    "error",
    "workdir",
    "requeue",
    "hold",
    // `nodelist` sets the node count when `nodes` is not given, and must not exceed it.
    "nodelist",
    "exclude",
    "exclusive",
    "begin",
    "signal",
    "export",
];

/// Parses a job file and applies command-line `overrides` (job-file field → value) over it: an
/// error in the file names its line, an error in an option names the option (`--nodes: ...`).
pub fn parse_with_overrides(
    file: &str,
    text: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<JobSpec, SourceError> {
    let mut spec = parse_job_file(file, text)?;
    let (merged, applied): (BTreeMap<String, String>, BTreeMap<String, String>) = overrides
        .clone()
        .into_iter()
        .partition(|(field, _)| MERGED_OVERRIDES.contains(&field.as_str()));
    if !merged.is_empty() {
        let mut table: toml::Table = from_toml(file, text)?;
        for (field, value) in &merged {
            table.insert(field.clone(), batch::typed_value(field, value));
        }
        let text_with_options = toml::to_string(&table).map_err(|e| SourceError {
            file: file.to_string(),
            line: 0,
            field: None,
            message: format!("cannot apply the command-line options: {e}"),
        })?;
        spec = parse_job_file(file, &text_with_options).map_err(|e| match e.field.as_deref() {
            Some(field) if merged.contains_key(field) => SourceError {
                file: option_for_field(field),
                line: 0,
                field: None,
                message: e.message,
            },
            Some(field) => SourceError {
                file: file.to_string(),
                line: line_of_field(text, field),
                field: Some(field.to_string()),
                message: format!("{} (with the command-line options)", e.message),
            },
            None => e,
        })?;
    }
    apply_overrides(&mut spec, &applied)?;
    Ok(spec)
}

pub fn apply_overrides(
    spec: &mut JobSpec,
    overrides: &BTreeMap<String, String>,
) -> Result<(), SourceError> {
    for (field, value) in overrides {
        let fail = |message: String| SourceError {
            file: format!("--{}", shown(&field.replace('_', "-"))),
            line: 0,
            field: None,
            message,
        };
        let text = |rule: Text, max: usize| -> Result<String, SourceError> {
            if value.trim().is_empty() {
                return Err(fail("is empty".into()));
            }
            match text_problem(value, rule, max) {
                Some(problem) => Err(fail(problem)),
                None => Ok(value.clone()),
            }
        };
        match field.as_str() {
            "array" => spec.array = Some(parse_array(value).map_err(fail)?),
            "dependency" => spec.dependencies = parse_dependencies(value).map_err(fail)?,
            "gres" => spec.gres = parse_gres(value).map_err(fail)?,
            "partition" => spec.partition = Some(text(Text::Shown, MAX_IDENTIFIER_BYTES)?),
            "qos" => spec.qos = Some(text(Text::Shown, MAX_IDENTIFIER_BYTES)?),
            "account" => spec.account = Some(text(Text::Shown, MAX_IDENTIFIER_BYTES)?),
            "reservation" => spec.reservation = Some(text(Text::Shown, MAX_IDENTIFIER_BYTES)?),
            "constraint" => spec.constraint = Some(text(Text::Shown, MAX_EXPRESSION_BYTES)?),
            "name" => spec.name = text(Text::Shown, MAX_NAME_BYTES)?,
            other => {
                return Err(fail(format!(
                    "`{}` cannot be given on the command line",
                    shown(other)
                )));
            }
        }
    }
    Ok(())
}

/// Refuses an expression (`array`, `dependency`, `gres`) longer than [`MAX_EXPRESSION_BYTES`].
fn check_expression_length(text: &str, hint: &str) -> Result<(), String> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "is {} bytes, more than the limit of {MAX_EXPRESSION_BYTES} bytes (64 KiB); {hint}",
            text.len()
        ));
    }
    Ok(())
}

/// Slurm's `--array` syntax: `1-100`, `1,3,7`, `0-15:4` (step), with an optional `%N` throttle.
pub fn parse_array(text: &str) -> Result<ArraySpec, String> {
    check_expression_length(text, "use ranges like 1-1000 or steps like 0-1000:10")?;
    let (list, throttle) = match text.trim().split_once('%') {
        Some((list, n)) => {
            let n: u32 = decimal(n.trim()).map_err(|e| match e {
                BadNumber::Invalid => format!("`%{}` is not a number of elements", shown(n)),
                BadNumber::TooLarge => format!(
                    "`%{}` is more than the largest throttle, %{}; leave the throttle out to run \
                     any number at once",
                    shown(n),
                    u32::MAX
                ),
            })?;
            if n == 0 {
                return Err("`%0` would never run anything; use at least %1".into());
            }
            (list, Some(n))
        }
        None => (text.trim(), None),
    };
    let number = |s: &str| {
        decimal::<u32>(s.trim()).map_err(|e| match e {
            BadNumber::Invalid => format!("`{}` is not an index", shown(s)),
            BadNumber::TooLarge => format!(
                "`{}` is more than the largest index, {}",
                shown(s),
                u32::MAX
            ),
        })
    };
    let mut indices: Vec<u32> = Vec::new();
    for part in list.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, step)) => (r, number(step)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("`{}`: the step must be at least 1", shown(part)));
        }
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(range)?, number(range)?),
        };
        if last < first {
            return Err(format!(
                "`{}` counts down; write it as {last}-{first}",
                shown(range)
            ));
        }
        // In u64, where neither the count of a u32 range nor the sum can overflow.
        let count = u64::from(last - first) / u64::from(step) + 1;
        let total = count.saturating_add(u64::try_from(indices.len()).unwrap_or(u64::MAX));
        if total > u64::try_from(MAX_ARRAY_ELEMENTS).unwrap_or(u64::MAX) {
            return Err(format!(
                "`{}` brings the array to {total} elements, more than the limit of \
                 {MAX_ARRAY_ELEMENTS}; split it into several arrays",
                shown(part)
            ));
        }
        let step =
            usize::try_from(step).map_err(|_| format!("`{}`: step too large", shown(part)))?;
        indices.extend((first..=last).step_by(step));
    }
    indices.sort_unstable();
    indices.dedup();
    Ok(ArraySpec {
        indices,
        max_running: throttle,
    })
}

/// Slurm's `--dependency` syntax: `afterok:12:13,afterany:14,afternotok:9,singleton`; a job
/// ID that is an array's names all its elements, `ARRAY_INDEX` (`12_3`) one of them.
pub fn parse_dependencies(text: &str) -> Result<Vec<DependencySpec>, String> {
    check_expression_length(
        text,
        "depend on fewer jobs, or on one job that waits for the rest",
    )?;
    let mut out = Vec::new();
    for clause in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let mut parts = clause.split(':');
        let kind = parts.next().unwrap_or_default();
        let after = match kind {
            "afterok" => Some(ElementAfter::Ok),
            "afterany" => Some(ElementAfter::Any),
            "afternotok" => Some(ElementAfter::NotOk),
            _ => None,
        };
        // `ARRAY_INDEX` names one element; the rest are job IDs.
        let mut elements = Vec::new();
        let parts: Vec<&str> = parts
            .filter(|j| match j.trim().split_once('_') {
                Some((array, index)) => {
                    elements.push((array.to_string(), index.to_string()));
                    false
                }
                None => true,
            })
            .collect();
        for (array, index) in &elements {
            let Some(after) = after else {
                return Err(format!("`{}` takes no array element", shown(kind)));
            };
            let array = match decimal::<u64>(array.trim()) {
                Ok(id) if id > 0 => id,
                _ => {
                    return Err(format!(
                        "`{}_{}` in `{}` is not ARRAY_INDEX: the array's job ID, `_`, an index",
                        shown(array),
                        shown(index),
                        shown(clause)
                    ));
                }
            };
            let index = decimal::<u32>(index.trim()).map_err(|_| {
                format!(
                    "`{}` in `{array}_{}` is not an array index",
                    shown(index),
                    shown(index)
                )
            })?;
            out.push(DependencySpec::OnElement {
                after,
                array,
                index,
            });
        }
        let jobs = parts
            .into_iter()
            .map(|j| match decimal::<u64>(j.trim()) {
                Ok(0) => Err(format!(
                    "`0` in `{}` is not a job ID: job IDs start at 1",
                    shown(clause)
                )),
                Ok(id) => Ok(id),
                Err(BadNumber::Invalid) => Err(format!(
                    "`{}` in `{}` is not a job ID",
                    shown(j),
                    shown(clause)
                )),
                Err(BadNumber::TooLarge) => Err(format!(
                    "`{}` in `{}` is more than the largest job ID, {}",
                    shown(j),
                    shown(clause),
                    u64::MAX
                )),
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if jobs.is_empty() && !elements.is_empty() {
            continue;
        }
        let needs_jobs = |spec: fn(Vec<u64>) -> DependencySpec| {
            if jobs.is_empty() {
                Err(format!(
                    "`{}` names no job: write `{}:JOBID`",
                    shown(clause),
                    shown(kind)
                ))
            } else {
                Ok(spec(jobs.clone()))
            }
        };
        out.push(match kind {
            "afterok" => needs_jobs(DependencySpec::AfterOk)?,
            "afterany" => needs_jobs(DependencySpec::AfterAny)?,
            "afternotok" => needs_jobs(DependencySpec::AfterNotOk)?,
            "singleton" if jobs.is_empty() => DependencySpec::Singleton,
            "singleton" => return Err("`singleton` takes no job IDs".into()),
            other => {
                return Err(format!(
                    "unknown dependency `{}`; use afterok, afterany, afternotok or singleton",
                    shown(other)
                ));
            }
        });
    }
    if out.is_empty() {
        return Err("is empty".into());
    }
    Ok(out)
}

/// `gpu:2,nvme:1` (a name alone means one); each count, and each resource's sum, is at most
/// [`MAX_GRES_COUNT`].
pub fn parse_gres(text: &str) -> Result<BTreeMap<String, u32>, String> {
    check_expression_length(text, "name each resource once, like gpu:2,nvme:1")?;
    let too_many = |name: &str, count: &str| {
        format!(
            "asks for {} of `{}` on one node, more than the limit of {MAX_GRES_COUNT}; ask for \
             what a node has",
            shown(count),
            shown(name)
        )
    };
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, count) = match item.split_once(':') {
            Some((n, c)) => (
                n.trim(),
                match decimal::<u32>(c.trim()) {
                    Ok(count) => count,
                    Err(BadNumber::TooLarge) => return Err(too_many(n.trim(), c.trim())),
                    Err(BadNumber::Invalid) => {
                        return Err(format!(
                            "`{}` in `{}` is not a count",
                            shown(c),
                            shown(item)
                        ));
                    }
                },
            ),
            None => (item, 1),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`{}` is not a resource name", shown(name)));
        }
        let sum = out.entry(name.to_string()).or_insert(0);
        // In u64, where the sum of two u32 cannot overflow.
        let total = u64::from(*sum) + u64::from(count);
        *sum = u32::try_from(total)
            .ok()
            .filter(|total| *total <= MAX_GRES_COUNT)
            .ok_or_else(|| too_many(name, &total.to_string()))?;
    }
    Ok(out)
}

/// The job's name when the file names none: the file's stem, as Slurm takes the script's name. The
/// file name comes from the client too, so control characters become `_` and the name is cut to
/// [`MAX_NAME_BYTES`].
fn default_name(file: &str) -> String {
    let stem = std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("job");
    let mut name = String::new();
    for c in stem.chars() {
        let c = if c.is_control() || is_bidi_control(c) {
            '_'
        } else {
            c
        };
        if name.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        name.push(c);
    }
    if name.trim().is_empty() {
        "job".to_string()
    } else {
        name
    }
}

/// `"512M"`, `"2G"`, `"1T"`, or an integer number of MiB; at most [`MAX_MEMORY_MB`].
fn parse_memory(value: &toml::Value) -> Result<u64, String> {
    let too_much = |what: String| {
        format!(
            "{what} is more than the limit of {MAX_MEMORY_MB} MiB (1 PiB) on one node; ask for what \
             a node has, like \"256G\""
        )
    };
    let mb = match value {
        toml::Value::Integer(n) if *n <= 0 => {
            return Err(format!("must be more than zero, got {n}"));
        }
        toml::Value::Integer(n) => u64::try_from(*n)
            .ok()
            .filter(|mb| *mb <= MAX_MEMORY_MB)
            .ok_or_else(|| too_much(format!("{n} MiB")))?,
        toml::Value::String(s) => {
            let s = s.trim();
            let not_a_size = || format!("`{}` is not a size like \"512M\" or \"2G\"", shown(s));
            let (digits, unit) =
                s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = decimal(digits).map_err(|e| match e {
                BadNumber::Invalid => not_a_size(),
                BadNumber::TooLarge => too_much(format!("`{}`", shown(s))),
            })?;
            // `G`, `GB`, `GiB`, `Gi` (any case) all mean GiB, as in Slurm.
            let upper = unit.trim().to_ascii_uppercase();
            let upper = upper.strip_suffix('B').unwrap_or(&upper);
            let mb = match upper.strip_suffix('I').unwrap_or(upper) {
                "" | "M" => Some(n),
                "K" => Some(n.div_ceil(1024)),
                "G" => n.checked_mul(1024),
                "T" => n.checked_mul(1024 * 1024),
                _ => {
                    return Err(format!(
                        "`{}`: unknown unit `{}`; use K, M, G or T",
                        shown(s),
                        shown(unit)
                    ));
                }
            };
            mb.filter(|mb| *mb <= MAX_MEMORY_MB)
                .ok_or_else(|| too_much(format!("`{}`", shown(s))))?
        }
        other => {
            return Err(format!(
                "expected a size like \"512M\" or an integer of MiB, got {}",
                shown(&other.to_string())
            ));
        }
    };
    nonzero(mb)
}

fn nonzero(mb: u64) -> Result<u64, String> {
    if mb == 0 {
        Err("must be more than zero".into())
    } else {
        Ok(mb)
    }
}

/// Slurm's time formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, or integer
/// minutes; more than zero and at most [`MAX_TIME_LIMIT_MS`].
pub fn parse_time_limit(value: &toml::Value) -> Result<Millis, String> {
    let too_long = |what: String| {
        format!(
            "{what} is longer than the limit of 365 days; ask for at most \"365-00:00:00\" \
             (525600 minutes)"
        )
    };
    let secs = match value {
        toml::Value::Integer(m) if *m <= 0 => {
            return Err(format!("must be more than zero, got {m}"));
        }
        toml::Value::Integer(m) => u64::try_from(*m)
            .ok()
            .and_then(|m| m.checked_mul(60))
            .ok_or_else(|| too_long(format!("{m} minutes")))?,
        toml::Value::String(s) => parse_slurm_duration(s.trim()).map_err(|e| match e {
            BadNumber::Invalid => format!(
                "`{}` is not a time like \"01:30:00\", \"2-00:00:00\" or \"45\" (minutes)",
                shown(s)
            ),
            BadNumber::TooLarge => too_long(format!("`{}`", shown(s))),
        })?,
        other => {
            return Err(format!(
                "expected a time like \"01:30:00\" or integer minutes, got {}",
                shown(&other.to_string())
            ));
        }
    };
    if secs == 0 {
        return Err("must be more than zero".into());
    }
    secs.checked_mul(1000)
        .filter(|ms| *ms <= MAX_TIME_LIMIT_MS)
        .ok_or_else(|| match value {
            toml::Value::Integer(m) => too_long(format!("{m} minutes")),
            other => too_long(format!("`{}`", shown(other.as_str().unwrap_or_default()))),
        })
}

/// Seconds of a Slurm duration, with checked arithmetic: `TooLarge` when a part or the sum does not
/// fit u64.
fn parse_slurm_duration(s: &str) -> Result<u64, BadNumber> {
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (decimal::<u64>(d)?, Some(rest)),
        None => (0, None),
    };
    let parts: Vec<u64> = rest
        .unwrap_or(s)
        .split(':')
        .map(decimal::<u64>)
        .collect::<Result<_, _>>()?;
    let (h, m, sec) = match (rest.is_some(), parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        (false, [h, m, s]) => (*h, *m, *s),
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        (true, [h, m, s]) => (*h, *m, *s),
        _ => return Err(BadNumber::Invalid),
    };
    [(days, 86_400), (h, 3600), (m, 60), (sec, 1)]
        .into_iter()
        .try_fold(0u64, |total, (n, unit)| {
            n.checked_mul(unit)?.checked_add(total)
        })
        .ok_or(BadNumber::TooLarge)
}

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobSpec, SourceError> {
        parse_job_file("job.toml", text)
    }

    #[test]
    fn a_job_may_be_queued_held() {
        assert!(parse("command = [\"a\"]\nhold = true\n").unwrap().hold);
        assert!(!parse("command = [\"a\"]\n").unwrap().hold);
    }

    #[test]
    fn a_new_layout_follows_the_job_file_rules_or_changes_nothing() {
        let mut spec = parse("command = [\"a\"]\nnodes = 2\ntasks_per_node = 2\n").unwrap();
        // Full nodes keep their tasks per node when only the node count changes.
        spec.set_layout(Some(3), None).unwrap();
        assert_eq!((spec.nodes, spec.ntasks, spec.tasks_per_node), (3, 6, 2));
        spec.set_layout(None, Some(7)).unwrap();
        assert_eq!((spec.nodes, spec.ntasks, spec.tasks_per_node), (3, 7, 3));
        // Not full any more: the task count stays.
        spec.set_layout(Some(4), None).unwrap();
        assert_eq!((spec.nodes, spec.ntasks, spec.tasks_per_node), (4, 7, 2));
        let before = spec.clone();
        let e = spec.set_layout(Some(4), Some(3)).unwrap_err();
        assert!(e.contains("3 tasks cannot cover 4 nodes"), "{e}");
        assert!(spec.set_layout(Some(0), None).is_err());
        assert!(spec.set_layout(None, Some(MAX_NTASKS + 1)).is_err());
        assert_eq!(spec, before);
    }

    #[test]
    fn mpich_is_launched_directly_and_refuses_mpirun_naming_the_line() {
        let base = "command = [\"./a\"]\nnodes = 2\nntasks = 2\n[mpi]\nflavor = \"mpich\"\n";
        let spec = parse_job_file("a.toml", base).unwrap();
        assert!(spec.launches_mpi_directly() && !spec.launches_mpirun());
        let e = parse_job_file("a.toml", &format!("{base}launch = \"mpirun\"\n")).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (6, Some("mpi.launch")), "{e}");
        assert!(e.message.contains("launch = \"direct\""), "{e}");
    }

    #[test]
    fn mpi_launch_is_direct_unless_mpirun_is_asked_for() {
        let base = "command = [\"./a\"]\nnodes = 2\nntasks = 2\n[mpi]\nflavor = \"openmpi\"\n";
        let spec = parse_job_file("a.toml", base).unwrap();
        assert!(spec.launches_mpi_directly() && !spec.launches_mpirun());
        // Every node's agent starts ranks, so every node has output to forward.
        assert!(spec.writes_on_several_nodes());
        let spec = parse_job_file("a.toml", &format!("{base}launch = \"mpirun\"\n")).unwrap();
        assert!(spec.launches_mpirun() && !spec.launches_mpi_directly());
        // mpirun gathers its ranks' output itself, on the first node.
        assert!(!spec.writes_on_several_nodes());
        let e = parse_job_file("a.toml", &format!("{base}launch = \"ssh\"\n")).unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (6, Some("launch")), "{e}");
    }

    #[test]
    fn only_commands_with_tasks_on_several_nodes_write_on_several_nodes() {
        let writes = |text: &str| parse(text).unwrap().writes_on_several_nodes();
        assert!(writes("command = [\"hostname\"]\nnodes = 2\n"));
        assert!(writes("command = [\"hostname\"]\nnodes = 5\nntasks = 7\n"));
        assert!(!writes("command = [\"hostname\"]\ntasks_per_node = 4\n"));
        assert!(!writes("script = \"hostname\"\nnodes = 5\n"));
    }

    #[test]
    fn a_full_job_file_parses() {
        let spec = parse(
            "name = \"hello\"\nnodes = 5\ntasks_per_node = 2\ncpus_per_task = 1\nmemory = \"1G\"\n\
             time_limit = \"00:05:00\"\ncommand = [\"hostname\"]\nrequeue = true\n[env]\nA = \"b\"\n",
        )
        .unwrap();
        assert_eq!(spec.nodes, 5);
        assert_eq!(spec.ntasks, 10);
        assert_eq!(spec.cpus_per_node(), 2);
        assert_eq!(spec.memory_mb, 1024);
        assert_eq!(spec.time_limit_ms, 300_000);
        assert!(spec.requeue);
        assert_eq!(spec.env["A"], "b");
        assert_eq!(spec.ranks_on_node(4), 8..10);
    }

    #[test]
    fn ntasks_spreads_block_wise() {
        let spec = parse("nodes = 3\nntasks = 7\ncommand = [\"true\"]\n").unwrap();
        assert_eq!(spec.tasks_per_node, 3);
        assert_eq!(spec.ranks_on_node(0), 0..3);
        assert_eq!(spec.ranks_on_node(1), 3..5);
        assert_eq!(spec.ranks_on_node(2), 5..7);
        let spec = parse("nodes = 3\nntasks = 4\ncommand = [\"true\"]\n").unwrap();
        let counts: Vec<u32> = (0..3).map(|i| spec.ranks_on_node(i).len() as u32).collect();
        assert_eq!(counts, [2, 1, 1]);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = parse("nodes = 1\ncommand = [\"true\"]\ncolour = \"red\"\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert_eq!(e.field.as_deref(), Some("colour"));
        assert!(
            e.to_string().starts_with("job.toml:3: field `colour`:"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let e = parse("command = [\"true\"]\nnodes = \"five\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.field.as_deref(), Some("nodes"));
    }

    #[test]
    fn zero_nodes_is_refused_with_its_line() {
        let e = parse("command = [\"true\"]\n\nnodes = 0\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (3, Some("nodes")));
        assert!(e.message.contains("at least 1"));
    }

    #[test]
    fn bad_toml_names_the_line() {
        let e = parse("nodes = 1\ncommand = [\"true\"\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }

    #[test]
    fn missing_program_is_refused() {
        let e = parse("nodes = 1\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command"));
    }

    #[test]
    fn time_formats_follow_slurm() {
        let t = |s: &str| parse_time_limit(&toml::Value::String(s.into()));
        assert_eq!(t("10"), Ok(600_000));
        assert_eq!(t("1:30"), Ok(90_000));
        assert_eq!(t("01:00:00"), Ok(3_600_000));
        assert_eq!(t("1-00"), Ok(86_400_000));
        assert_eq!(t("2-01:00:05"), Ok((2 * 86_400 + 3600 + 5) * 1000));
        assert!(t("soon").is_err());
        assert_eq!(parse_time_limit(&toml::Value::Integer(2)), Ok(120_000));
    }

    #[test]
    fn fields_are_located_at_top_level_only() {
        let text = "name = \"x\"\n\nnodes = 99\n[env]\nnodes = \"no\"\n";
        assert_eq!(line_of_field(text, "nodes"), 3);
        assert_eq!(line_of_field(text, "memory"), 1);
    }

    #[test]
    fn memory_units() {
        let m = |s: &str| parse_memory(&toml::Value::String(s.into()));
        assert_eq!(m("512M"), Ok(512));
        assert_eq!(m("2G"), Ok(2048));
        assert_eq!(m("2GiB"), Ok(2048));
        assert_eq!(m("1024K"), Ok(1));
        assert!(m("3X").is_err());
        assert!(m("0").is_err());
    }

    #[test]
    fn arrays_follow_slurm_syntax() {
        assert_eq!(
            parse_array("1-5%2").unwrap(),
            ArraySpec {
                indices: vec![1, 2, 3, 4, 5],
                max_running: Some(2)
            }
        );
        assert_eq!(parse_array("0-12:4,3").unwrap().indices, [0, 3, 4, 8, 12]);
        assert!(parse_array("5-1").is_err());
        assert!(parse_array("1-3%0").is_err());
        assert!(parse_array("0-99999999").is_err());
        let e = parse("command = [\"a\"]\narray = \"1-x\"\n").unwrap_err();
        assert_eq!((e.line, e.field.as_deref()), (2, Some("array")));
    }

    #[test]
    fn an_allocation_runs_nothing_of_its_own() {
        let spec = parse_job_file("j.toml", "nodes = 2\nallocation = true\n").unwrap();
        assert_eq!(spec.program, Program::Allocation);
        assert!(spec.is_allocation() && spec.takes_steps() && !spec.runs_a_script());
        let refused = |text: &str| parse_job_file("j.toml", text).unwrap_err();
        let both = refused("allocation = true\ncommand = [\"true\"]\n");
        assert_eq!(
            (both.line, both.field.as_deref()),
            (1, Some("allocation")),
            "{both}"
        );
        assert!(both.message.contains("runs no `command`"), "{both}");
        let nothing = refused("allocation = false\n");
        assert!(
            nothing.message.contains("no `command` or `script`"),
            "{nothing}"
        );
        let boxed = refused("allocation = true\n[container]\nimage = \"mpi\"\n");
        assert!(boxed.message.contains("[container]"), "{boxed}");
        assert!(
            refused("nodes = 1\n")
                .message
                .contains("`allocation = true`")
        );
    }

    #[test]
    fn dependencies_follow_slurm_syntax() {
        assert_eq!(
            parse_dependencies("afterok:12:13,afterany:14,singleton").unwrap(),
            [
                DependencySpec::AfterOk(vec![12, 13]),
                DependencySpec::AfterAny(vec![14]),
                DependencySpec::Singleton
            ]
        );
        assert!(parse_dependencies("afterok").is_err());
        assert!(parse_dependencies("after:3").is_err());
        assert!(parse_dependencies("afterok:x").is_err());
        assert_eq!(
            parse_dependencies("afterok:12_3:14,afterany:20_0").unwrap(),
            [
                DependencySpec::OnElement {
                    after: ElementAfter::Ok,
                    array: 12,
                    index: 3
                },
                DependencySpec::AfterOk(vec![14]),
                DependencySpec::OnElement {
                    after: ElementAfter::Any,
                    array: 20,
                    index: 0
                },
            ]
        );
        assert!(
            parse_dependencies("afterok:12_x")
                .unwrap_err()
                .contains("not an array index")
        );
        assert!(
            parse_dependencies("afterok:_3")
                .unwrap_err()
                .contains("not ARRAY_INDEX")
        );
        assert!(
            parse_dependencies("singleton:1_2")
                .unwrap_err()
                .contains("takes no array element")
        );
    }

    #[test]
    fn gres_counts_add_up() {
        let g = parse_gres("gpu:2, nvme, gpu:1").unwrap();
        assert_eq!((g["gpu"], g["nvme"]), (3, 1));
        assert!(parse_gres("gpu:many").is_err());
    }

    #[test]
    fn placement_fields_parse_and_are_checked_naming_line_and_field() {
        let spec = parse(
            "command = [\"a\"]\nnodelist = \"n[01-03],n02\"\nexclude = \"m1\"\nexclusive = true\n\
             begin = \"2026-05-01T12:00\"\n",
        )
        .unwrap();
        let names: Vec<&str> = spec.nodelist.iter().map(NodeName::as_str).collect();
        assert_eq!(
            names,
            ["n01", "n02", "n03"],
            "expanded, sorted, deduplicated"
        );
        assert_eq!((spec.nodes, spec.ntasks), (3, 3));
        assert_eq!(spec.exclude, [NodeName::new("m1")]);
        assert!(spec.exclusive);
        assert_eq!(
            spec.begin
                .map(|b| b.resolve(crate::Timestamp(0)).utc().to_string()),
            Some("2026-05-01 12:00:00 UTC".to_string())
        );
        for (text, line, field, words) in [
            (
                "nodes = 1\nnodelist = \"a,b\"\n",
                2,
                "nodelist",
                "names 2 nodes but the job asks for 1",
            ),
            ("nodelist = \"a[1-x]\"\n", 1, "nodelist", "is not a number"),
            (
                "\nexclude = \"a\\u001b\"\n",
                2,
                "exclude",
                "control character",
            ),
            (
                "nodelist = \"a\"\nexclude = \"a,b\"\n",
                2,
                "exclude",
                "excludes `a`",
            ),
            (
                "begin = \"2026-02-30\"\n",
                1,
                "begin",
                "not a date and time that exists",
            ),
            ("exclusive = \"yes\"\n", 1, "exclusive", "boolean"),
        ] {
            let e = parse(&format!("{text}command = [\"a\"]\n")).unwrap_err();
            assert_eq!(
                (e.line, e.field.as_deref()),
                (line, Some(field)),
                "{text}: {e}"
            );
            assert!(e.message.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn records_stored_before_the_placement_fields_still_load() {
        let spec = parse("command = [\"a\"]\n").unwrap();
        let mut json: serde_json::Value = serde_json::to_value(&spec).unwrap();
        for field in ["nodelist", "exclude", "exclusive", "begin"] {
            assert!(
                json.as_object_mut().unwrap().remove(field).is_some(),
                "{field}"
            );
        }
        let old: JobSpec = serde_json::from_value(json).unwrap();
        assert_eq!(old, spec);
    }

    #[test]
    fn container_and_mpi_tables_are_validated() {
        let spec = parse(
            "command = [\"a\"]\n[container]\nimage = \"/shared/img\"\n[mpi]\nfabric = \"ib\"\n",
        )
        .unwrap();
        assert_eq!(spec.mpi.unwrap().fabric, Fabric::Ib);
        let e = parse("command = [\"a\"]\n[mpi]\nfabric = \"carrier-pigeon\"\n").unwrap_err();
        assert_eq!(e.line, 3);
    }
}
