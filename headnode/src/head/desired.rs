//! Desired state per node: every job run that should be running there, sent whole with a generation.

use super::{Head, Inner};
use crate::config::HeadConfig;
use crate::model::{JobRecord, NodeRecord};
use beowulf_proto::v1;
use beowulf_types::{JobState, MpiFlavor, NodeName, Program, RunKey, hostlist};
use std::collections::{BTreeMap, BTreeSet};

impl Head {
    /// Sends the current desired state to each connected node in `nodes` whose records are all
    /// durable; a node touched by a change still being written gets it once that change is.
    pub(super) fn send_desired(&self, inner: &mut Inner, nodes: &BTreeSet<NodeName>) {
        for node in nodes {
            if let Some(&seq) = inner.unflushed_nodes.get(node) {
                if seq > inner.durable_seq {
                    continue;
                }
                inner.unflushed_nodes.remove(node);
            }
            let Some(session) = inner.sessions.get(node) else {
                continue;
            };
            let state = desired_state(inner, node, &self.config, &session.payloads_sent);
            let carried: BTreeSet<RunKey> = state
                .assignments
                .iter()
                .map(v1::Assignment::run_key)
                .collect();
            let message = v1::HeadMessage {
                body: Some(v1::head_message::Body::Desired(state)),
            };
            let Some(session) = inner.sessions.get_mut(node) else {
                continue;
            };
            if session.tx.send(message).is_err() {
                tracing::debug!(node = %node, "agent stream closed while sending desired state");
            }
            // Runs that left the node's state are dropped: a run number is never used twice.
            session.payloads_sent = carried;
        }
    }
}

/// The desired state of `node`, without the argv and environment of the runs in
/// `payloads_sent` (an empty set gives the whole state).
pub(super) fn desired_state(
    inner: &Inner,
    node: &NodeName,
    config: &HeadConfig,
    payloads_sent: &BTreeSet<RunKey>,
) -> v1::DesiredState {
    let assignments = inner
        .active
        .iter()
        .map(|id| &inner.jobs[id])
        .filter(|job| job.state == JobState::Running)
        .filter_map(|job| {
            let index = job.nodes.iter().position(|n| n == node)?;
            let payload = !payloads_sent.contains(&job.run_key());
            Some(assignment(job, index, &inner.nodes, config, payload))
        })
        .collect();
    v1::DesiredState {
        generation: inner.durable_generation.0,
        assignments,
    }
}

/// One node's desired state grows by less than this with any one assignment below it: only a
/// bigger one needs the node's whole state measured against the budget (a node has at most a few
/// hundred runs, so small ones cannot reach it together).
const SMALL_ASSIGNMENT_BYTES: usize = 64 << 10;

/// A smaller budget for tests (0: the real one); only assignments of 64 KiB or more are
/// measured, which no other test has.
#[cfg(test)]
pub(super) static TEST_BUDGET_BYTES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

pub(super) fn budget_bytes() -> usize {
    #[cfg(test)]
    {
        let test = TEST_BUDGET_BYTES.load(std::sync::atomic::Ordering::Relaxed);
        if test > 0 {
            return test;
        }
    }
    beowulf_proto::DESIRED_STATE_BUDGET
}

/// Desired-state bytes per node, for keeping every node's state deliverable while a pass starts
/// jobs ([`beowulf_proto::DESIRED_STATE_BUDGET`]).
#[derive(Debug, Default)]
pub(super) struct DesiredStateBudget {
    /// What the starts of this pass added to each node so far.
    added: BTreeMap<NodeName, usize>,
}

impl DesiredStateBudget {
    /// Takes `job` (its run just set up) into its nodes' budgets, or says which node's desired
    /// state it would make undeliverable and how large.
    pub(super) fn admit(
        &mut self,
        inner: &Inner,
        job: &JobRecord,
        config: &HeadConfig,
    ) -> Result<(), (NodeName, usize)> {
        let sizes: Vec<(NodeName, usize)> = job
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let bytes = prost::Message::encoded_len(&assignment(
                    job,
                    index,
                    &inner.nodes,
                    config,
                    true,
                ));
                (node.clone(), bytes)
            })
            .collect();
        if sizes
            .iter()
            .any(|(_, bytes)| *bytes >= SMALL_ASSIGNMENT_BYTES)
        {
            for (node, bytes) in &sizes {
                // Whole, as a new session gets it: that is what must stay deliverable.
                let whole = desired_state(inner, node, config, &BTreeSet::new());
                let now = prost::Message::encoded_len(&whole);
                let total = now + self.added.get(node).copied().unwrap_or(0) + bytes;
                if total > budget_bytes() {
                    return Err((node.clone(), total));
                }
            }
        }
        for (node, bytes) in sizes {
            *self.added.entry(node).or_default() += bytes;
        }
        Ok(())
    }
}

/// The part of a job run that node `index` of its allocation carries out; without its argv and
/// environment unless `payload` (the agent has them already).
fn assignment(
    job: &JobRecord,
    index: usize,
    nodes: &BTreeMap<NodeName, NodeRecord>,
    config: &HeadConfig,
    payload: bool,
) -> v1::Assignment {
    let (argv, env) = if payload {
        (assignment_argv(job), assignment_env(job))
    } else {
        (Vec::new(), BTreeMap::new())
    };
    let spec = &job.spec;
    // mpirun runs on the first node and starts the ranks there and, through the other agents,
    // the daemons that start the rest; a script runs on the first node only.
    let (first_rank, local_tasks) = match &spec.program {
        Program::Command(_) if spec.launches_mpirun() => (0, u32::from(index == 0)),
        Program::Command(_) => {
            let ranks = spec.ranks_on_node(index as u32);
            (ranks.start, ranks.len() as u32)
        }
        Program::Script(_) => (0, u32::from(index == 0)),
        Program::Allocation => (0, 0),
    };
    let nodelist: Vec<String> = job.nodes.iter().map(|n| n.0.clone()).collect();
    let paths = job_paths(job);
    let start = job.start_time.unwrap_or_default();
    v1::Assignment {
        job_id: job.id.0,
        run: job.run,
        job_name: spec.name.clone(),
        user: job.user.name.clone(),
        uid: job.user.uid,
        gid: job.user.gid,
        node_index: index as u32,
        nodelist,
        ntasks: spec.ntasks,
        first_rank,
        local_tasks,
        cpus_per_task: spec.cpus_per_task,
        cpus: spec.cpus_per_node(),
        memory_mb: spec.memory_mb,
        argv,
        env: env.into_iter().collect(),
        workdir: paths.workdir,
        stdout_path: paths.stdout,
        stderr_path: paths.stderr,
        deadline_ms: start.plus(spec.time_limit_ms).0,
        partition: job.partition_name().to_string(),
        image: job.image.as_ref().map(|i| v1::ContainerImage {
            reference: i.reference.clone(),
            digest: i.digest.clone(),
            tar_path: config
                .image_path_on_nodes(&i.tar_path)
                .display()
                .to_string(),
        }),
        mpi: mpi_launch(job, nodes),
        output: output_forward(job, nodes),
        steps: step_launch(job, nodes),
        warn_signal: spec.signal.map(|w| v1::WarnSignal {
            signal: w.signal,
            before_ms: u64::from(w.seconds_before) * 1000,
            batch_only: w.batch_only,
        }),
        signals: job
            .signals
            .iter()
            .copied()
            .map(v1::JobSignal::from)
            .collect(),
        gres: spec.gres.clone().into_iter().collect(),
        gids: job.gids.clone(),
        umask: job.umask,
        payload_omitted: !payload,
    }
}

/// The command the run's nodes run: the job's own (under mpirun on the first node, which the
/// agent adds; ranks launched directly are plain tasks of their nodes), or its script under its
/// `#!` shell with `-c` (on the first node only).
fn assignment_argv(job: &JobRecord) -> Vec<String> {
    match &job.spec.program {
        Program::Allocation => Vec::new(),
        Program::Command(argv) => argv.clone(),
        // Checked at submit; a script that no longer passes runs under /bin/sh, as before `#!`
        // lines were read.
        Program::Script(script) => beowulf_types::jobfile::script_argv(script, &job.spec.name)
            .unwrap_or_else(|_| {
                vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    script.clone(),
                    job.spec.name.clone(),
                ]
            }),
    }
}

/// The run's environment: the submitter's, the job file's over it, then Slurm's variables.
fn assignment_env(job: &JobRecord) -> BTreeMap<String, String> {
    let spec = &job.spec;
    let nodelist: Vec<String> = job.nodes.iter().map(|n| n.0.clone()).collect();
    let mut env: BTreeMap<String, String> = job.submit_env.clone();
    env.extend(spec.env.clone());
    let slurm = [
        ("SLURM_JOB_ID", job.id.to_string()),
        ("SLURM_JOBID", job.id.to_string()),
        ("SLURM_JOB_NAME", spec.name.clone()),
        ("SLURM_JOB_NODELIST", hostlist::compress(&nodelist)),
        ("SLURM_NODELIST", hostlist::compress(&nodelist)),
        ("SLURM_NNODES", job.nodes.len().to_string()),
        ("SLURM_JOB_NUM_NODES", job.nodes.len().to_string()),
        ("SLURM_NTASKS", spec.ntasks.to_string()),
        ("SLURM_NPROCS", spec.ntasks.to_string()),
        ("SLURM_NTASKS_PER_NODE", spec.tasks_per_node.to_string()),
        ("SLURM_CPUS_PER_TASK", spec.cpus_per_task.to_string()),
        ("SLURM_MEM_PER_NODE", spec.memory_mb.to_string()),
        ("SLURM_SUBMIT_DIR", job.submit_cwd.clone()),
        ("SLURM_JOB_USER", job.user.name.clone()),
        ("SLURM_JOB_UID", job.user.uid.to_string()),
        ("SLURM_JOB_GID", job.user.gid.to_string()),
        ("SLURM_JOB_PARTITION", job.partition_name().to_string()),
        ("SLURM_RESTART_COUNT", job.restarts.to_string()),
        ("BEOWULF_JOB_ID", job.id.to_string()),
        ("BEOWULF_RUN", job.run.to_string()),
    ];
    env.extend(slurm.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(a) = job.array {
        let array = [
            ("SLURM_ARRAY_JOB_ID", a.array.to_string()),
            ("SLURM_ARRAY_TASK_ID", a.index.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", a.count.to_string()),
            ("SLURM_ARRAY_TASK_MIN", a.min_index.to_string()),
            ("SLURM_ARRAY_TASK_MAX", a.max_index.to_string()),
        ];
        env.extend(array.into_iter().map(|(k, v)| (k.to_string(), v)));
    }
    env
}

/// Where the nodes of a job whose tasks write on several nodes send their output: the first
/// node's agent, which appends it to the job's files.
fn output_forward(
    job: &JobRecord,
    nodes: &BTreeMap<NodeName, NodeRecord>,
) -> Option<v1::OutputForward> {
    if !job.spec.writes_on_several_nodes() {
        return None;
    }
    let launch = job.launch.as_ref()?;
    let writer = job.nodes.first()?;
    Some(v1::OutputForward {
        writer_index: 0,
        writer_endpoint: nodes
            .get(writer)
            .map(|r| r.launch_endpoint.clone())
            .unwrap_or_default(),
        token: launch.token.clone(),
    })
}

/// What `srun` in a batch script needs on every node of the job: the run's credential and
/// where each node's agent takes step requests.
fn step_launch(job: &JobRecord, nodes: &BTreeMap<NodeName, NodeRecord>) -> Option<v1::StepLaunch> {
    if !job.spec.takes_steps() {
        return None;
    }
    let launch = job.launch.as_ref()?;
    Some(v1::StepLaunch {
        token: launch.token.clone(),
        endpoints: launch_endpoints(job, nodes),
    })
}

/// The launch endpoint (`host:port` of AgentLaunch) of each node of the job.
fn launch_endpoints(
    job: &JobRecord,
    nodes: &BTreeMap<NodeName, NodeRecord>,
) -> std::collections::HashMap<String, String> {
    job.nodes
        .iter()
        .map(|n| {
            let endpoint = nodes
                .get(n)
                .map(|r| r.launch_endpoint.clone())
                .unwrap_or_default();
            (n.0.clone(), endpoint)
        })
        .collect()
}

/// The MPI wiring every node of an MPI job gets: flavour, fabric, credential, where each node's
/// agent takes launch requests, and the ranks per node.
fn mpi_launch(job: &JobRecord, nodes: &BTreeMap<NodeName, NodeRecord>) -> Option<v1::MpiLaunch> {
    let launch = job.launch.as_ref()?;
    let mpi = job.spec.mpi.as_ref()?;
    if mpi.flavor == MpiFlavor::None {
        return None;
    }
    Some(v1::MpiLaunch {
        flavor: v1::MpiFlavor::from(mpi.flavor) as i32,
        fabric: launch
            .fabric
            .map_or(v1::RunFabric::Unspecified, v1::RunFabric::from) as i32,
        token: launch.token.clone(),
        endpoints: launch_endpoints(job, nodes),
        tasks_per_node: (0..job.nodes.len() as u32)
            .map(|i| job.spec.ranks_on_node(i).len() as u32)
            .collect(),
        direct: job.spec.launches_mpi_directly(),
    })
}

/// Where a job runs and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPaths {
    pub workdir: String,
    pub stdout: String,
    pub stderr: String,
}

/// Resolves workdir (relative to the submit directory) and output files (relative to the workdir,
/// with sbatch's patterns: [`expand_output_pattern`]), with Slurm's default `slurm-%j.out` renamed
/// to ours (`beowulf-%A_%a.out` for array elements).
pub fn job_paths(job: &JobRecord) -> JobPaths {
    let cwd = std::path::Path::new(&job.submit_cwd);
    let workdir = match &job.spec.workdir {
        Some(w) => cwd.join(w),
        None => cwd.to_path_buf(),
    };
    let expand = |pattern: &str| {
        workdir
            .join(expand_output_pattern(pattern, job))
            .to_string_lossy()
            .into_owned()
    };
    let default = if job.array.is_some() {
        "beowulf-%A_%a.out"
    } else {
        "beowulf-%j.out"
    };
    let stdout = expand(job.spec.output.as_deref().unwrap_or(default));
    let stderr = job
        .spec
        .error
        .as_deref()
        .map(expand)
        .unwrap_or_else(|| stdout.clone());
    JobPaths {
        workdir: workdir.to_string_lossy().into_owned(),
        stdout,
        stderr,
    }
}

/// sbatch's output file name patterns, in one pass: `%j` job ID (and `%J`, `jobid.stepid`, which
/// for the batch script is the job ID alone), `%x` job name, `%u` user, `%A`
/// array ID (the job's own ID outside an array), `%a` array index, `%N` the first node's name (the
/// batch script's node; left as is until the job has nodes), `%n` and `%t` 0 (node and task of
/// the batch script), `%s` `batch`, `%%` a `%`. A number between `%` and the letter pads with
/// zeros (`%4a` → `0007`). Anything else is kept as written.
pub fn expand_output_pattern(pattern: &str, job: &JobRecord) -> String {
    let (array_id, index) = match job.array {
        Some(a) => (a.array.to_string(), a.index.to_string()),
        None => (job.id.to_string(), String::new()),
    };
    beowulf_types::output_pattern::expand(pattern, |letter| match letter {
        'j' | 'J' => Some(job.id.to_string()),
        'x' => Some(job.spec.name.clone()),
        'u' => Some(job.user.name.clone()),
        'A' => Some(array_id.clone()),
        'a' => Some(index.clone()),
        'N' => job.nodes.first().map(|n| n.to_string()),
        'n' | 't' => Some("0".to_string()),
        's' => Some("batch".to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ArrayElement, RunPhases, User};
    use beowulf_types::{JobId, JobState, Timestamp, parse_job_file};

    fn job(name: &str) -> JobRecord {
        JobRecord {
            id: JobId(42),
            spec: parse_job_file(
                "job.toml",
                &format!("name = \"{name}\"\ncommand = [\"true\"]\n"),
            )
            .unwrap(),
            user: User {
                uid: 1000,
                gid: 1000,
                name: "ada".into(),
            },
            submit_cwd: "/home/ada".into(),
            submit_env: BTreeMap::new(),
            state: JobState::Pending,
            end_reason: String::new(),
            submit_time: Timestamp(1),
            start_time: None,
            end_time: None,
            exit_code: None,
            nodes: Vec::new(),
            run: 0,
            node_results: BTreeMap::new(),
            cleanup: BTreeMap::new(),
            restarts: 0,
            events: Vec::new(),
            groups: Vec::new(),
            gids: Vec::new(),
            umask: None,
            partition: None,
            array: None,
            start_priority: 0,
            image: None,
            launch: None,
            phases: RunPhases::default(),
            hold: None,
            signals: Vec::new(),
        }
    }

    #[test]
    fn output_patterns_expand_as_sbatch_expands_them() {
        let mut j = job("relax");
        assert_eq!(
            expand_output_pattern("%x-%j.%u.out", &j),
            "relax-42.ada.out"
        );
        // dask-jobqueue's pattern.
        assert_eq!(
            expand_output_pattern("dask-worker-%J.err", &j),
            "dask-worker-42.err"
        );
        assert_eq!(expand_output_pattern("100%%-%A_%a", &j), "100%-42_");
        assert_eq!(
            expand_output_pattern("on-%N-%n-%t-%s", &j),
            "on-%N-0-0-batch"
        );
        assert_eq!(expand_output_pattern("%q %5 %", &j), "%q %5 %");
        j.nodes = vec![NodeName::new("node3"), NodeName::new("node4")];
        j.array = Some(ArrayElement {
            array: JobId(40),
            index: 7,
            count: 10,
            min_index: 0,
            max_index: 9,
            max_running: None,
        });
        assert_eq!(
            expand_output_pattern("%A_%4a-%N.out", &j),
            "40_0007-node3.out"
        );
        // A job name holding a pattern is not expanded again.
        let j = job("%j");
        assert_eq!(expand_output_pattern("%x", &j), "%j");
    }
}
