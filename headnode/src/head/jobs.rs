//! Job operations: submit, cancel, run reports from agents, and time limits.

use super::identity::{Caller, Identity};
use super::{Head, HeadError, Tx, now};
use crate::config::HeadConfig;
use crate::model::{ArrayElement, DEFAULT_PARTITION, ImageRef, JobRecord, NodeRecord, RunPhases};
use beowulf_as_user::UserCredentials;
use beowulf_proto::v1;
use beowulf_scheduler::{Constraint, Partition};
use beowulf_types::jobfile::{
    is_batch_script, option_for_field, parse_batch_script, parse_with_overrides,
};
use beowulf_types::{
    DependencySpec, JobHold, JobId, JobSpec, JobState, JobTransition, NodeName, Resources,
    SourceError, Timestamp, line_of_field,
};
use std::collections::BTreeMap;

impl Head {
    /// Parses, validates and durably queues a job. Returns only after the job is committed.
    pub fn submit(&self, caller: &Caller, request: v1::SubmitRequest) -> Result<JobId, HeadError> {
        self.submit_jobs(caller, request).map(|s| s.first)
    }

    /// Like [`Head::submit`]; a job array becomes one job per index, with consecutive IDs, all
    /// committed together. The file is a job file, or a batch script (it starts with `#!`) whose
    /// `#SBATCH` lines set the job; command-line options override either.
    pub fn submit_jobs(
        &self,
        caller: &Caller,
        request: v1::SubmitRequest,
    ) -> Result<Submitted, HeadError> {
        let test_only = request.test_only;
        let file = request.file_name.as_str();
        let text = request.file_text.as_str();
        let overrides: BTreeMap<String, String> = request.overrides.into_iter().collect();
        let (spec, warnings, lines) = if is_batch_script(text) {
            let batch = parse_batch_script(file, text, &overrides)?;
            (batch.spec, batch.warnings, batch.lines)
        } else {
            let spec = parse_with_overrides(file, text, &overrides)?;
            (spec, Vec::new(), BTreeMap::new())
        };
        let source = Source {
            file,
            text,
            overrides: &overrides,
            lines: &lines,
        };
        let Identity { user, groups, gids } = self.identities.of(caller);
        let umask = request.umask.map(|m| m & 0o777);
        let submit_env: BTreeMap<String, String> = request.env.into_iter().collect();
        // sbatch's --export: the job keeps only what it asked for of the submitter's environment.
        let submit_env = match &spec.export {
            Some(export) => export.apply(&submit_env),
            None => submit_env,
        };
        beowulf_types::jobfile::validate_submission(file, &request.cwd, &submit_env, &spec)?;
        // Resolved before the mutation: hashing a tarball named by path may take a moment.
        let image = match &spec.container {
            Some(container) => {
                let reader = UserCredentials::of_user(&user.name, caller.uid, caller.gid);
                let resolved = self
                    .resolve_image(&container.image, &reader)
                    .map_err(|e| source.refusal("container.image", e.to_string()))?;
                Some(ImageRef {
                    reference: resolved.reference,
                    digest: resolved.digest,
                    tar_path: resolved.tar_path,
                })
            }
            None => None,
        };
        if test_only {
            // The same checks as a submit's, in a mutation that changes nothing (so nothing is
            // written and no job ID is used).
            let partition = self.mutate(|tx| {
                let partition = check_fits_cluster(tx, &self.config, &source, &spec)?;
                check_policy(tx, &self.config, &source, &spec)?;
                Ok(partition)
            })?;
            let jobs = spec.array.as_ref().map_or(1, |a| a.indices.len());
            return Ok(Submitted {
                first: JobId(0),
                count: 0,
                warnings,
                test_only: Some(format!(
                    "{jobs} job(s) would be queued: {} node(s), {} task(s) of {} CPU(s), {} MiB per \
                     node, in partition {}; nothing was queued (--test-only)",
                    spec.nodes,
                    spec.ntasks,
                    spec.cpus_per_task,
                    spec.memory_mb,
                    partition.as_deref().unwrap_or("all")
                )),
            });
        }
        let submitted = self.mutate(|tx| {
            let partition = check_fits_cluster(tx, &self.config, &source, &spec)?;
            check_policy(tx, &self.config, &source, &spec)?;
            let now = now();
            let indices: Vec<Option<u32>> = match &spec.array {
                None => vec![None],
                Some(a) => a.indices.iter().copied().map(Some).collect(),
            };
            let count = indices.len() as u32;
            let mut first = None;
            for index in indices {
                let id = tx.allocate_job_id();
                let array_id = *first.get_or_insert(id);
                let array = match (index, &spec.array) {
                    (Some(index), Some(a)) => Some(ArrayElement {
                        array: array_id,
                        index,
                        count,
                        min_index: a.indices[0],
                        max_index: *a.indices.last().expect("arrays have an index"),
                        max_running: a.max_running,
                    }),
                    _ => None,
                };
                let mut job = JobRecord {
                    id,
                    spec: spec.clone(),
                    user: user.clone(),
                    submit_cwd: request.cwd.clone(),
                    submit_env: submit_env.clone(),
                    state: JobState::Pending,
                    end_reason: String::new(),
                    submit_time: now,
                    start_time: None,
                    end_time: None,
                    exit_code: None,
                    nodes: Vec::new(),
                    run: 0,
                    node_results: BTreeMap::new(),
                    cleanup: BTreeMap::new(),
                    restarts: 0,
                    events: Vec::new(),
                    groups: groups.clone(),
                    gids: gids.clone(),
                    umask,
                    partition: partition.clone(),
                    array,
                    start_priority: 0,
                    image: image.clone(),
                    launch: None,
                    phases: RunPhases::default(),
                    hold: spec.hold.then_some(JobHold::User),
                    signals: Vec::new(),
                };
                let of_array = match array {
                    Some(a) => format!(" as element {} of array {}", a.index, a.array),
                    None => String::new(),
                };
                let held = if job.hold.is_some() { ", held" } else { "" };
                job.log(
                    now,
                    format!(
                        "submitted by {} (uid {}){of_array}{held}",
                        job.user.name, job.user.uid
                    ),
                );
                tx.insert_job(job);
            }
            Ok((first.expect("at least one job"), count))
        })?;
        self.wake_scheduler.notify_one();
        Ok(Submitted {
            first: submitted.0,
            count: submitted.1,
            warnings,
            test_only: None,
        })
    }

    /// Cancels a pending or running job; its tasks are killed on every node.
    pub fn cancel(&self, caller: &Caller, id: JobId) -> Result<JobState, HeadError> {
        self.cancel_jobs(caller, id, false)
    }

    /// Like [`Head::cancel`]; with `whole_array`, an array's ID (its first element's) cancels
    /// every element that has not ended, as Slurm's scancel does.
    pub fn cancel_jobs(
        &self,
        caller: &Caller,
        id: JobId,
        whole_array: bool,
    ) -> Result<JobState, HeadError> {
        let state = self.mutate(|tx| {
            let job = tx.job(id).ok_or(HeadError::NoSuchJob(id))?;
            authorize(caller, job, "cancel")?;
            // The elements of an array share its user: the check above covers them all.
            let targets: Vec<JobId> = array_elements(job)
                .filter(|_| whole_array)
                .unwrap_or_else(|| vec![id]);
            let live: Vec<JobId> = targets
                .into_iter()
                .filter(|t| tx.job(*t).is_some_and(|j| !j.state.is_terminal()))
                .collect();
            if live.is_empty() {
                return Err(HeadError::AlreadyEnded {
                    job: id,
                    state: job.state,
                });
            }
            let now = now();
            for target in live {
                let job = tx.job_mut(target).expect("listed above");
                job.end(
                    JobTransition::Cancel,
                    now,
                    format!("cancelled by uid {}", caller.uid),
                );
            }
            Ok(JobState::Cancelled)
        })?;
        self.wake_scheduler.notify_one();
        Ok(state)
    }

    /// Ends running jobs whose time limit has passed. Returns how many ended.
    pub fn enforce_time_limits(&self) -> Result<usize, HeadError> {
        let now = now();
        let ended = self.mutate(|tx| {
            let mut ended = 0;
            for id in tx.active_ids() {
                let job = tx.job(id).expect("active jobs exist");
                let Some(start) = job.start_time else {
                    continue;
                };
                if job.state == JobState::Running && now >= start.plus(job.spec.time_limit_ms) {
                    let limit = job.spec.time_limit_ms / 1000;
                    let job = tx.job_mut(id).expect("exists");
                    job.end(
                        JobTransition::TimeOut,
                        now,
                        format!("time limit of {limit} s reached"),
                    );
                    ended += 1;
                }
            }
            Ok(ended)
        })?;
        if ended > 0 {
            self.wake_scheduler.notify_one();
        }
        Ok(ended)
    }
}

/// Applies one node's report about one job run, inside a mutation.
pub(super) fn apply_run_report(
    tx: &mut Tx<'_>,
    node: &NodeName,
    report: &v1::RunReport,
    now: Timestamp,
) {
    let key = report.run_key();
    let id = key.job;
    let Some(job) = tx.job(id) else { return };
    // A run that is over on this node releases the node's cleanup hold.
    if report.finished && job.cleanup_hold(node) == Some(key) {
        tx.job_mut(id).expect("exists").cleanup.remove(node);
    }
    let job = tx.job(id).expect("exists");
    let current =
        job.state == JobState::Running && job.run_key() == key && job.nodes.contains(node);
    if current {
        record_phases(tx.job_mut(id).expect("exists"), report);
    }
    let job = tx.job(id).expect("exists");
    if !current || !report.finished || job.node_results.contains_key(node) {
        return;
    }
    // An allocation's nodes run no task of the job's own: it ends when its submitter, its time
    // limit or a cancel ends it, unless a node lost it.
    if job.spec.is_allocation() && !report.lost {
        return;
    }
    if report.lost {
        let detail = format!("node {node} lost the job's tasks: {}", report.detail);
        fail_on_node(tx, id, now, &detail);
        return;
    }
    let job = tx.job_mut(id).expect("exists");
    job.node_results.insert(node.clone(), report.exit_code);
    if report.out_of_memory {
        job.exit_code = Some(report.exit_code);
        job.end(
            JobTransition::OutOfMemory,
            now,
            format!(
                "the OOM killer ended a process on {node}: the job used more than its {} MiB of memory per node; ask for more with `memory` (--mem)",
                job.spec.memory_mb
            ),
        );
        return;
    }
    let detail = if report.detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", report.detail)
    };
    job.log(
        now,
        format!(
            "tasks on {node} ended with exit code {}{detail}",
            report.exit_code
        ),
    );
    if report.exit_code != 0 {
        job.exit_code = Some(report.exit_code);
        job.end(
            JobTransition::Fail,
            now,
            format!(
                "a task on {node} exited with code {}{detail}",
                report.exit_code
            ),
        );
        return;
    }
    let all_done = (0..job.nodes.len())
        .filter(|&i| job.node_runs_tasks(i))
        .all(|i| job.node_results.contains_key(&job.nodes[i]));
    if all_done {
        job.exit_code = Some(0);
        job.end(JobTransition::Complete, now, "");
    }
}

/// Keeps the latest time any node reported for each container phase of the current run.
fn record_phases(job: &mut JobRecord, report: &v1::RunReport) {
    let latest = |slot: &mut Option<Timestamp>, ms: u64| {
        if ms > 0 && slot.is_none_or(|t| t.0 < ms) {
            *slot = Some(Timestamp(ms));
        }
    };
    latest(&mut job.phases.image_staged, report.image_staged_ms);
    latest(
        &mut job.phases.containers_started,
        report.container_started_ms,
    );
}

/// Handles the loss of a running job's node: requeue when the job allows it, else NODE_FAIL.
pub(super) fn fail_on_node(tx: &mut Tx<'_>, id: JobId, now: Timestamp, why: &str) {
    let Some(job) = tx.job_mut(id) else { return };
    if job.state != JobState::Running {
        return;
    }
    if job.spec.requeue {
        job.requeue(now, why);
    } else {
        job.end(JobTransition::NodeFail, now, why.to_string());
    }
}

/// The partition a job that names `named` (or none) is queued in: `Ok(None)` when the cluster
/// has no partitions (or names no default), else the partition; `Err` says why `named` is none.
pub(super) fn resolve_partition<'a>(
    partitions: &'a BTreeMap<String, Partition>,
    named: Option<&str>,
) -> Result<Option<(String, &'a Partition)>, String> {
    match (named, partitions.is_empty()) {
        (None, true) => Ok(None),
        (Some(name), true) if name == DEFAULT_PARTITION => Ok(None),
        (Some(name), true) => Err(format!(
            "no partition `{name}`; this cluster has one partition, `{DEFAULT_PARTITION}`"
        )),
        (Some(name), false) => match partitions.get(name) {
            Some(p) => Ok(Some((name.to_string(), p))),
            None => {
                let names: Vec<&str> = partitions.keys().map(String::as_str).collect();
                Err(format!(
                    "no partition `{name}`; partitions: {}",
                    names.join(", ")
                ))
            }
        },
        (None, false) => Ok(partitions
            .iter()
            .find(|(_, p)| p.default)
            .map(|(n, p)| (n.clone(), p))),
    }
}

/// Refuses requests the cluster can never satisfy, naming the line and field of the job file;
/// returns the job's partition ([`resolve_partition`]).
fn check_fits_cluster(
    tx: &Tx<'_>,
    config: &HeadConfig,
    source: &Source<'_>,
    spec: &JobSpec,
) -> Result<Option<String>, HeadError> {
    let refuse = |field: &str, message: String| source.refusal(field, message);
    let partitions = config.partitions();
    let partition = resolve_partition(partitions, spec.partition.as_deref())
        .map_err(|message| refuse("partition", message))?;
    let in_partition = |name: &NodeName| {
        partition
            .as_ref()
            .is_none_or(|(_, p)| p.nodes.is_empty() || p.nodes.contains(name))
    };
    // Slurm refuses a node list or exclusion naming a node it does not have ("Invalid node name
    // specified"), and a listed node outside the job's partition.
    let known: std::collections::BTreeSet<&NodeName> = tx.nodes().map(|n| &n.name).collect();
    for (field, names) in [("nodelist", &spec.nodelist), ("exclude", &spec.exclude)] {
        if let Some(unknown) = names.iter().find(|n| !known.contains(n)) {
            return Err(refuse(
                field,
                format!("invalid node name specified: `{unknown}` is not a node of this cluster"),
            ));
        }
    }
    if let (Some((name, _)), Some(outside)) =
        (&partition, spec.nodelist.iter().find(|n| !in_partition(n)))
    {
        return Err(refuse(
            "nodelist",
            format!("`{outside}` is not a node of partition `{name}`, where the job runs"),
        ));
    }
    let candidates: Vec<&NodeRecord> = tx
        .nodes()
        .filter(|n| in_partition(&n.name) && !spec.exclude.contains(&n.name))
        .collect();
    let whose = || match &partition {
        Some((name, _)) => format!("partition `{name}`"),
        None => "the cluster".to_string(),
    };
    // Slurm refuses what no node could ever give ("Requested node configuration is not
    // available") instead of queueing a job that would wait forever.
    if let Some(text) = &spec.constraint
        && let Ok(constraint) = Constraint::parse(text)
    {
        let matching = candidates
            .iter()
            .filter(|n| constraint.matches(&possible_features(n)))
            .count() as u32;
        if matching < spec.nodes {
            let mut features: Vec<String> = candidates
                .iter()
                .flat_map(|n| possible_features(n))
                .collect();
            features.sort_unstable();
            features.dedup();
            return Err(refuse(
                "constraint",
                format!(
                    "requested node configuration is not available: {matching} nodes of {} have \
                     the features `{text}`, and the job needs {}; their features are: {}",
                    whose(),
                    spec.nodes,
                    if features.is_empty() {
                        "none".to_string()
                    } else {
                        features.join(", ")
                    }
                ),
            ));
        }
    }
    for (name, &count) in &spec.gres {
        let having = candidates
            .iter()
            .filter(|n| n.inventory.gres.get(name).copied().unwrap_or(0) >= count)
            .count() as u32;
        if having < spec.nodes {
            let most = candidates
                .iter()
                .map(|n| n.inventory.gres.get(name).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            return Err(refuse(
                "gres",
                format!(
                    "requested node configuration is not available: {having} nodes of {} have \
                     {count} `{name}` each, and the job needs {} (most on one node: {most})",
                    whose(),
                    spec.nodes
                ),
            ));
        }
    }
    let capacities: Vec<Resources> = candidates.iter().map(|n| n.capacity()).collect();
    let total = capacities.len() as u32;
    if spec.nodes > total {
        return Err(refuse(
            "nodes",
            format!("asks for {} nodes but {} has {total}", spec.nodes, whose()),
        ));
    }
    let need = Resources::new(spec.cpus_per_node(), spec.memory_mb);
    let fitting = capacities.iter().filter(|c| c.fits(&need)).count() as u32;
    if fitting < spec.nodes {
        let max_cpus = capacities.iter().map(|c| c.cpus).max().unwrap_or(0);
        let max_mem = capacities.iter().map(|c| c.memory_mb).max().unwrap_or(0);
        if need.cpus > max_cpus
            || capacities.iter().filter(|c| c.cpus >= need.cpus).count() < spec.nodes as usize
        {
            let field = if spec.cpus_per_task > 1 {
                "cpus_per_task"
            } else {
                "tasks_per_node"
            };
            return Err(refuse(
                field,
                format!(
                    "needs {} CPUs on each of {} nodes; only {} nodes have that many (largest: {max_cpus} CPUs)",
                    need.cpus,
                    spec.nodes,
                    capacities.iter().filter(|c| c.cpus >= need.cpus).count()
                ),
            ));
        }
        return Err(refuse(
            "memory",
            format!(
                "needs {} MiB on each of {} nodes; only {fitting} nodes can give that (largest: {max_mem} MiB)",
                need.memory_mb, spec.nodes
            ),
        ));
    }
    Ok(partition.map(|(name, _)| name))
}

/// The features a node may offer a job: its configured ones, and `ib` when it has verbs ports
/// at all (a port that is down now may come up; the scheduler asks for it active).
fn possible_features(node: &NodeRecord) -> std::collections::BTreeSet<String> {
    node.inventory
        .features
        .iter()
        .cloned()
        .chain((!node.inventory.ib_ports.is_empty()).then(|| super::fabric::IB_FEATURE.to_string()))
        .collect()
}

/// Only the job's owner and root may act on it (`verb` it): the caller is the unix socket peer.
pub(super) fn authorize(caller: &Caller, job: &JobRecord, verb: &str) -> Result<(), HeadError> {
    if caller.is_root() || caller.uid == job.user.uid {
        return Ok(());
    }
    Err(HeadError::PermissionDenied(format!(
        "job {} belongs to {} (uid {}); you (uid {}) may {verb} only your own jobs",
        job.id, job.user.name, job.user.uid, caller.uid
    )))
}

/// Whether `spec` fits the cluster as a submit requires ([`check_fits_cluster`]), for a job
/// changed after submit; returns its partition, or what does not fit.
pub(super) fn fits_cluster(
    tx: &Tx<'_>,
    config: &HeadConfig,
    spec: &JobSpec,
) -> Result<Option<String>, String> {
    let (no_overrides, no_lines) = (BTreeMap::new(), BTreeMap::new());
    let source = Source {
        file: "",
        text: "",
        overrides: &no_overrides,
        lines: &no_lines,
    };
    check_fits_cluster(tx, config, &source, spec).map_err(|e| match e {
        HeadError::JobFile(e) => e.message,
        other => other.to_string(),
    })
}

/// The element of array `array` with index `index` (`ARRAY_INDEX`), if there is one; `job`
/// looks a job up.
pub(super) fn array_element<'a>(
    job: impl Fn(JobId) -> Option<&'a JobRecord>,
    array: JobId,
    index: u32,
) -> Option<JobId> {
    array_elements(job(array)?)?.into_iter().find(|id| {
        job(*id)
            .and_then(|j| j.array)
            .is_some_and(|a| a.index == index)
    })
}

/// The job IDs of the array whose ID is `job`'s (its first element's), or `None` when `job` is
/// not an array's first element. The elements of an array have consecutive IDs from the array's.
pub(super) fn array_elements(job: &JobRecord) -> Option<Vec<JobId>> {
    let array = job.array.filter(|a| a.array == job.id)?;
    Some(
        (0..u64::from(array.count))
            .map(|offset| JobId(job.id.0 + offset))
            .collect(),
    )
}

/// What a submit queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The job's ID; for an array, its first element's (the array's ID).
    pub first: JobId,
    /// Jobs queued: 1, or the array's elements.
    pub count: u32,
    /// Directives accepted without effect, for the user to see.
    pub warnings: Vec<String>,
    /// For a `--test-only` request (nothing queued): what the job would have been given.
    pub test_only: Option<String>,
}

/// Where a submitted job's fields came from: the file, or command-line options that override it.
struct Source<'a> {
    file: &'a str,
    text: &'a str,
    overrides: &'a BTreeMap<String, String>,
    /// For a batch script: the line of the directive that set each field.
    lines: &'a BTreeMap<String, usize>,
}

impl Source<'_> {
    /// An error naming the option (`--dependency: ...`) or the file, line and field.
    fn refusal(&self, field: &str, message: String) -> HeadError {
        if self.overrides.contains_key(field) {
            return HeadError::JobFile(SourceError {
                file: format!("--{}", field.replace('_', "-")),
                line: 0,
                field: None,
                message,
            });
        }
        if let Some(line) = self.lines.get(field.split('.').next().unwrap_or(field)) {
            return HeadError::JobFile(SourceError {
                file: self.file.to_string(),
                line: *line,
                field: Some(format!("#SBATCH {}", option_for_field(field))),
                message,
            });
        }
        HeadError::JobFile(SourceError {
            file: self.file.to_string(),
            line: line_of_field(self.text, field),
            field: Some(field.to_string()),
            message,
        })
    }
}

/// Refuses names that do not exist (QOS, reservation, dependency targets) and constraints that do
/// not parse; Slurm refuses these at submit too.
fn check_policy(
    tx: &Tx<'_>,
    config: &HeadConfig,
    source: &Source<'_>,
    spec: &JobSpec,
) -> Result<(), HeadError> {
    let refuse = |field: &str, message: String| source.refusal(field, message);
    if let Some(qos) = &spec.qos
        && !config.qos.contains_key(qos)
    {
        let names: Vec<&str> = config.qos.keys().map(String::as_str).collect();
        let known = if names.is_empty() {
            "none is configured".to_string()
        } else {
            names.join(", ")
        };
        return Err(refuse("qos", format!("no QOS `{qos}` ({known})")));
    }
    if let Some(constraint) = &spec.constraint
        && let Err(e) = Constraint::parse(constraint)
    {
        return Err(refuse("constraint", format!("`{constraint}`: {e}")));
    }
    if let Some(name) = &spec.reservation
        && !tx.reservation_exists(name)
    {
        return Err(refuse(
            "reservation",
            format!("no reservation `{name}` (see cluster reserve list)"),
        ));
    }
    for dependency in &spec.dependencies {
        let ids = match dependency {
            DependencySpec::AfterOk(ids)
            | DependencySpec::AfterAny(ids)
            | DependencySpec::AfterNotOk(ids) => ids,
            DependencySpec::Singleton => continue,
            DependencySpec::OnElement { array, index, .. } => {
                if array_element(|id| tx.job(id), JobId(*array), *index).is_none() {
                    return Err(refuse(
                        "dependency",
                        format!(
                            "job {array} has no array element {index} (`{array}_{index}`): \
                             name an element of an array by the array's job ID and its index"
                        ),
                    ));
                }
                continue;
            }
        };
        for id in ids {
            if tx.job(JobId(*id)).is_none() {
                return Err(refuse("dependency", format!("job {id} does not exist")));
            }
        }
    }
    Ok(())
}
