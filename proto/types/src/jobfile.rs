//! `job.toml`: the user's job request, parsed strictly, with errors that name the file, line and field.
//!
//! ```toml
//! name = "hello"
//! nodes = 5
//! tasks_per_node = 1          # or: ntasks = 10 (spread over the nodes, block-wise)
//! cpus_per_task = 1
//! memory = "256M"             # per node; integer = MiB; default 128 MiB per CPU
//! time_limit = "00:05:00"     # [D-]HH:MM:SS, MM:SS, or integer minutes; default 1 hour
//! command = ["hostname"]      # run as every task (srun semantics) ...
//! # script = "..."            # ... or a batch script run once, on the first node (sbatch semantics)
//! output = "hello-%j.out"     # %j = job ID; relative to workdir
//! requeue = true
//! [env]
//! GREETING = "hi"
//! ```

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

use crate::Millis;

/// Memory a job gets per CPU when it names none. Slurm's default is "the whole node"; a modest default
/// instead lets small jobs share nodes, and 128 MiB covers a shell, an MPI rank of a hello world and
/// the container runtime's overhead.
pub const DEFAULT_MEMORY_MB_PER_CPU: u64 = 128;

/// Time limit when a job names none: one hour, long enough for interactive trials, short enough that
/// a forgotten job does not hold nodes overnight (and backfill has a real limit to plan with).
pub const DEFAULT_TIME_LIMIT_MS: Millis = 60 * 60 * 1000;

/// Upper bounds that catch typos (`nodes = 50000`) before the cluster sees them.
const MAX_NODES: u32 = 100_000;
const MAX_TASKS_PER_NODE: u32 = 100_000;

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
}

/// A job array: which indices, and how many may run at once (`%N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    /// Sorted, without duplicates.
    pub indices: Vec<u32>,
    pub max_running: Option<u32>,
}

/// Most elements one array may have: Slurm's default MaxArraySize is 1001; ours is larger, since an
/// element costs one small record, but a typo such as `1-10000000` is still caught.
pub const MAX_ARRAY_ELEMENTS: usize = 100_001;

/// One clause of `dependency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DependencySpec {
    AfterOk(Vec<u64>),
    AfterAny(Vec<u64>),
    AfterNotOk(Vec<u64>),
    Singleton,
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

    /// True when tasks of the job run on more than one node, each node writing its own: their
    /// output goes through the first node (see the agents' output forwarding). A script runs on
    /// the first node only, and so does `mpirun`, which forwards its ranks' output itself.
    pub fn writes_on_several_nodes(&self) -> bool {
        matches!(self.program, Program::Command(_))
            && !self.launches_mpirun()
            && !self.ranks_on_node(1).is_empty()
    }

    /// CPUs the job needs on each of its nodes.
    pub fn cpus_per_node(&self) -> u32 {
        self.tasks_per_node * self.cpus_per_task
    }

    /// The ranks that run on the `node_index`-th node of the allocation: block distribution, with
    /// the remainder spread over the first nodes (7 tasks on 3 nodes: 3, 2, 2), as Slurm does, so no
    /// node of the allocation is left without a task.
    pub fn ranks_on_node(&self, node_index: u32) -> Range<u32> {
        let base = self.ntasks / self.nodes;
        let extra = self.ntasks % self.nodes;
        let start = node_index * base + node_index.min(extra);
        let count = base + u32::from(node_index < extra);
        start.min(self.ntasks)..(start + count).min(self.ntasks)
    }
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Program {
    /// An argv run as every task, like `srun`.
    Command(Vec<String>),
    /// A shell script run once as task 0 on the first node, like `sbatch`.
    Script(String),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MpiFlavor {
    Openmpi,
    Mpich,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fabric {
    Auto,
    Ib,
    Tcp,
}

/// A job file that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {}{message}", if *line > 0 { format!(":{line}") } else { String::new() }, field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct JobFileError {
    pub file: String,
    /// 1-based line of the offending key or value.
    pub line: usize,
    pub field: Option<String>,
    pub message: String,
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
    time_limit: Option<Spanned<toml::Value>>,
    partition: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    script: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    error: Option<Spanned<String>>,
    requeue: Option<bool>,
    container: Option<Spanned<ContainerSpec>>,
    mpi: Option<Spanned<RawMpi>>,
    array: Option<Spanned<String>>,
    dependency: Option<Spanned<String>>,
    constraint: Option<Spanned<String>>,
    gres: Option<Spanned<String>>,
    qos: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    reservation: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMpi {
    flavor: Option<MpiFlavor>,
    fabric: Option<Fabric>,
    launch: Option<Spanned<MpiLaunchMode>>,
}

/// Parses and validates a job file's text. `file` is only used in error messages.
pub fn parse_job_file(file: &str, text: &str) -> Result<JobSpec, JobFileError> {
    let raw: RawJob = from_toml(file, text)?;
    let err = |span: Range<usize>, field: &str, message: String| JobFileError {
        file: file.to_string(),
        line: line_of(text, span.start),
        field: Some(field.to_string()),
        message,
    };
    let positive = |value: &Option<Spanned<i64>>,
                    field: &str,
                    max: u32|
     -> Result<Option<u32>, JobFileError> {
        match value {
            None => Ok(None),
            Some(v) if *v.get_ref() < 1 => Err(err(
                v.span(),
                field,
                format!("must be at least 1, got {}", v.get_ref()),
            )),
            Some(v) if *v.get_ref() > i64::from(max) => Err(err(
                v.span(),
                field,
                format!("must be at most {max}, got {}", v.get_ref()),
            )),
            Some(v) => Ok(Some(*v.get_ref() as u32)),
        }
    };

    let nodes = positive(&raw.nodes, "nodes", MAX_NODES)?.unwrap_or(1);
    let ntasks = positive(&raw.ntasks, "ntasks", MAX_NODES.saturating_mul(64))?;
    let tasks_per_node = positive(&raw.tasks_per_node, "tasks_per_node", MAX_TASKS_PER_NODE)?;
    let cpus_per_task = positive(&raw.cpus_per_task, "cpus_per_task", 100_000)?.unwrap_or(1);
    let (ntasks, tasks_per_node) = match (ntasks, tasks_per_node) {
        (None, None) => (nodes, 1),
        (None, Some(tpn)) => (nodes * tpn, tpn),
        (Some(n), None) => {
            if n < nodes {
                let span = raw.ntasks.as_ref().map(|s| s.span()).unwrap_or(0..0);
                return Err(err(
                    span,
                    "ntasks",
                    format!(
                        "{n} tasks cannot cover {nodes} nodes: every node runs at least one task"
                    ),
                ));
            }
            (n, n.div_ceil(nodes))
        }
        (Some(n), Some(tpn)) => {
            if n > nodes * tpn || n <= (nodes - 1) * tpn {
                let span = raw.ntasks.as_ref().map(|s| s.span()).unwrap_or(0..0);
                return Err(err(
                    span,
                    "ntasks",
                    format!(
                        "{n} tasks do not match {nodes} nodes × {tpn} tasks_per_node; give only one of ntasks and tasks_per_node"
                    ),
                ));
            }
            (n, tpn)
        }
    };

    let memory_mb = match &raw.memory {
        None => DEFAULT_MEMORY_MB_PER_CPU * u64::from(tasks_per_node * cpus_per_task),
        Some(v) => parse_memory(v.get_ref()).map_err(|m| err(v.span(), "memory", m))?,
    };
    let time_limit_ms = match &raw.time_limit {
        None => DEFAULT_TIME_LIMIT_MS,
        Some(v) => parse_time_limit(v.get_ref()).map_err(|m| err(v.span(), "time_limit", m))?,
    };

    let program = match (raw.command, raw.script) {
        (Some(c), None) => {
            if c.get_ref().is_empty() || c.get_ref()[0].is_empty() {
                return Err(err(
                    c.span(),
                    "command",
                    "must name a program, like [\"hostname\"]".into(),
                ));
            }
            Program::Command(c.into_inner())
        }
        (None, Some(s)) => {
            if s.get_ref().trim().is_empty() {
                return Err(err(s.span(), "script", "is empty".into()));
            }
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
            return Err(JobFileError {
                file: file.to_string(),
                line: 1,
                field: Some("command".into()),
                message: "missing: give `command = [\"prog\", \"arg\"]` or `script = \"...\"`"
                    .into(),
            });
        }
    };

    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            let at = text.find("[env]").unwrap_or(0);
            return Err(err(
                at..at,
                "env",
                format!("`{key}` is not a valid variable name"),
            ));
        }
    }

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
    if let Some(c) = &raw.container
        && c.get_ref().image.trim().is_empty()
    {
        return Err(err(c.span(), "container.image", "is empty".into()));
    }

    let array = match &raw.array {
        None => None,
        Some(a) => Some(parse_array(a.get_ref()).map_err(|m| err(a.span(), "array", m))?),
    };
    let dependencies = match &raw.dependency {
        None => Vec::new(),
        Some(d) => parse_dependencies(d.get_ref()).map_err(|m| err(d.span(), "dependency", m))?,
    };
    let gres = match &raw.gres {
        None => BTreeMap::new(),
        Some(g) => parse_gres(g.get_ref()).map_err(|m| err(g.span(), "gres", m))?,
    };
    let name_field =
        |v: Option<Spanned<String>>, field: &str| -> Result<Option<String>, JobFileError> {
            match v {
                Some(v) if v.get_ref().trim().is_empty() => {
                    Err(err(v.span(), field, "is empty".into()))
                }
                other => Ok(other.map(Spanned::into_inner)),
            }
        };
    let constraint = name_field(raw.constraint, "constraint")?;
    let qos = name_field(raw.qos, "qos")?;
    let account = name_field(raw.account, "account")?;
    let reservation = name_field(raw.reservation, "reservation")?;

    Ok(JobSpec {
        name: raw
            .name
            .map(Spanned::into_inner)
            .unwrap_or_else(|| default_name(file)),
        nodes,
        ntasks,
        tasks_per_node,
        cpus_per_task,
        memory_mb,
        time_limit_ms,
        partition: raw.partition.map(Spanned::into_inner),
        program,
        env: raw.env,
        workdir: raw.workdir.map(Spanned::into_inner),
        output: raw.output.map(Spanned::into_inner),
        error: raw.error.map(Spanned::into_inner),
        requeue: raw.requeue.unwrap_or(false),
        container: raw.container.map(Spanned::into_inner),
        mpi,
        array,
        dependencies,
        constraint,
        gres,
        qos,
        account,
        reservation,
    })
}

/// Applies command-line overrides (`--array`, `--dependency`, ...) to a parsed job, by job-file
/// field name. Errors name the option.
pub fn apply_overrides(
    spec: &mut JobSpec,
    overrides: &BTreeMap<String, String>,
) -> Result<(), JobFileError> {
    for (field, value) in overrides {
        let fail = |message: String| JobFileError {
            file: format!("--{}", field.replace('_', "-")),
            line: 0,
            field: None,
            message,
        };
        let text = || -> Result<Option<String>, JobFileError> {
            if value.trim().is_empty() {
                Err(fail("is empty".into()))
            } else {
                Ok(Some(value.clone()))
            }
        };
        match field.as_str() {
            "array" => spec.array = Some(parse_array(value).map_err(fail)?),
            "dependency" => spec.dependencies = parse_dependencies(value).map_err(fail)?,
            "gres" => spec.gres = parse_gres(value).map_err(fail)?,
            "partition" => spec.partition = text()?,
            "qos" => spec.qos = text()?,
            "account" => spec.account = text()?,
            "reservation" => spec.reservation = text()?,
            "constraint" => spec.constraint = text()?,
            "name" => spec.name = value.clone(),
            other => {
                return Err(fail(format!(
                    "`{other}` cannot be given on the command line"
                )));
            }
        }
    }
    Ok(())
}

/// Slurm's `--array` syntax: `1-100`, `1,3,7`, `0-15:4` (step), with an optional `%N` throttle.
pub fn parse_array(text: &str) -> Result<ArraySpec, String> {
    let (list, throttle) = match text.trim().split_once('%') {
        Some((list, n)) => {
            let n: u32 = n
                .trim()
                .parse()
                .map_err(|_| format!("`%{n}` is not a number of elements"))?;
            if n == 0 {
                return Err("`%0` would never run anything; use at least %1".into());
            }
            (list, Some(n))
        }
        None => (text.trim(), None),
    };
    let number = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}` is not an index"))
    };
    let mut indices = Vec::new();
    for part in list.split(',') {
        let (range, step) = match part.split_once(':') {
            Some((r, step)) => (r, number(step)?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("`{part}`: the step must be at least 1"));
        }
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(range)?, number(range)?),
        };
        if last < first {
            return Err(format!("`{range}` counts down; write it as {last}-{first}"));
        }
        if (last - first) as usize / step as usize + indices.len() >= MAX_ARRAY_ELEMENTS {
            return Err(format!("more than {} elements", MAX_ARRAY_ELEMENTS - 1));
        }
        indices.extend((first..=last).step_by(step as usize));
    }
    indices.sort_unstable();
    indices.dedup();
    Ok(ArraySpec {
        indices,
        max_running: throttle,
    })
}

/// Slurm's `--dependency` syntax: `afterok:12:13,afterany:14,afternotok:9,singleton`.
pub fn parse_dependencies(text: &str) -> Result<Vec<DependencySpec>, String> {
    let mut out = Vec::new();
    for clause in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let mut parts = clause.split(':');
        let kind = parts.next().unwrap_or_default();
        let jobs = parts
            .map(|j| {
                j.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("`{j}` in `{clause}` is not a job ID"))
            })
            .collect::<Result<Vec<u64>, String>>()?;
        let needs_jobs = |spec: fn(Vec<u64>) -> DependencySpec| {
            if jobs.is_empty() {
                Err(format!("`{clause}` names no job: write `{kind}:JOBID`"))
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
                    "unknown dependency `{other}`; use afterok, afterany, afternotok or singleton"
                ));
            }
        });
    }
    if out.is_empty() {
        return Err("is empty".into());
    }
    Ok(out)
}

/// `gpu:2,nvme:1` (a name alone means one).
pub fn parse_gres(text: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, count) = match item.split_once(':') {
            Some((n, c)) => (
                n.trim(),
                c.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("`{c}` in `{item}` is not a count"))?,
            ),
            None => (item, 1),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`{name}` is not a resource name"));
        }
        *out.entry(name.to_string()).or_insert(0) += count;
    }
    Ok(out)
}

/// Parses TOML into `T`, turning syntax, type and unknown-field errors into a `JobFileError`.
fn from_toml<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, JobFileError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let start = e.span().map(|s| s.start).unwrap_or(0);
        let field = e.span().and_then(|s| key_at(text, s.start));
        JobFileError {
            file: file.to_string(),
            line: line_of(text, start),
            field,
            message: e.message().trim().to_string(),
        }
    })
}

/// A TOML error as `line N: message`, for the daemons' config files.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let line = error.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    format!("line {line}: {}", error.message().trim())
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line where a top-level `field = ...` is written, for errors found after parsing (for
/// example a request larger than the cluster); line 1 when the field is absent (a default was used).
pub fn line_of_field(text: &str, field: &str) -> usize {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            break;
        }
        if let Some((key, _)) = line.split_once('=')
            && key.trim() == field
        {
            return index + 1;
        }
    }
    1
}

/// The key written on the line holding `offset`, if that line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

fn default_name(file: &str) -> String {
    std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("job")
        .to_string()
}

/// `"512M"`, `"2G"`, `"1T"`, or an integer number of MiB.
fn parse_memory(value: &toml::Value) -> Result<u64, String> {
    let mb = match value {
        toml::Value::Integer(n) if *n > 0 => *n as u64,
        toml::Value::String(s) => {
            let s = s.trim();
            let (digits, unit) =
                s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = digits
                .parse()
                .map_err(|_| format!("`{s}` is not a size like \"512M\" or \"2G\""))?;
            let factor = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
                "" | "M" => 1,
                "K" => return Ok(n.div_ceil(1024)).and_then(nonzero),
                "G" => 1024,
                "T" => 1024 * 1024,
                _ => return Err(format!("`{s}`: unknown unit `{unit}`; use K, M, G or T")),
            };
            n * factor
        }
        other => {
            return Err(format!(
                "expected a size like \"512M\" or an integer of MiB, got {other}"
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

/// Slurm's time formats: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`, or integer minutes.
pub fn parse_time_limit(value: &toml::Value) -> Result<Millis, String> {
    let secs = match value {
        toml::Value::Integer(m) if *m > 0 => (*m as u64) * 60,
        toml::Value::String(s) => parse_slurm_duration(s.trim()).ok_or_else(|| {
            format!("`{s}` is not a time like \"01:30:00\", \"2-00:00:00\" or \"45\" (minutes)")
        })?,
        other => {
            return Err(format!(
                "expected a time like \"01:30:00\" or integer minutes, got {other}"
            ));
        }
    };
    if secs == 0 {
        return Err("must be more than zero".into());
    }
    Ok(secs * 1000)
}

fn parse_slurm_duration(s: &str) -> Option<u64> {
    let num = |p: &str| p.parse::<u64>().ok();
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (num(d)?, Some(rest)),
        None => (0, None),
    };
    let parts: Vec<u64> = rest
        .unwrap_or(s)
        .split(':')
        .map(num)
        .collect::<Option<_>>()?;
    let secs = match (rest.is_some(), parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86_400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobSpec, JobFileError> {
        parse_job_file("job.toml", text)
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
    }

    #[test]
    fn gres_counts_add_up() {
        let g = parse_gres("gpu:2, nvme, gpu:1").unwrap();
        assert_eq!((g["gpu"], g["nvme"]), (3, 1));
        assert!(parse_gres("gpu:many").is_err());
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
