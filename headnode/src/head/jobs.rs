//! Job operations: submit, cancel, run reports from agents, and time limits.

use super::{Head, HeadError, Tx, now};
use crate::model::{JobRecord, User};
use beowulf_proto::v1;
use beowulf_types::{
    JobFileError, JobId, JobSpec, JobState, NodeName, Resources, Timestamp, line_of_field,
    parse_job_file,
};
use std::collections::BTreeMap;

/// Who is asking: the unix socket peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The only partition until partitions are configurable: every node.
pub const DEFAULT_PARTITION: &str = "all";

impl Head {
    /// Parses, validates and durably queues a job. Returns only after the job is committed.
    pub fn submit(&self, caller: &Caller, request: v1::SubmitRequest) -> Result<JobId, HeadError> {
        let file = request.file_name.as_str();
        let text = request.file_text.as_str();
        let spec = parse_job_file(file, text)?;
        let id = self.mutate(|tx| {
            check_fits_cluster(tx, file, text, &spec)?;
            let id = tx.allocate_job_id();
            let now = now();
            let mut job = JobRecord {
                id,
                spec,
                user: user_of(caller),
                submit_cwd: request.cwd,
                submit_env: request.env.into_iter().collect(),
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
            };
            job.log(
                now,
                format!("submitted by {} (uid {})", job.user.name, job.user.uid),
            );
            tx.insert_job(job);
            Ok(id)
        })?;
        self.wake_scheduler.notify_one();
        Ok(id)
    }

    /// Cancels a pending or running job; its tasks are killed on every node.
    pub fn cancel(&self, caller: &Caller, id: JobId) -> Result<JobState, HeadError> {
        let state = self.mutate(|tx| {
            let job = tx.job(id).ok_or(HeadError::NoSuchJob(id))?;
            if !caller.is_root() && caller.uid != job.user.uid {
                return Err(HeadError::PermissionDenied(format!(
                    "job {id} belongs to {} (uid {}); you (uid {}) may cancel only your own jobs",
                    job.user.name, job.user.uid, caller.uid
                )));
            }
            if job.state.is_terminal() {
                return Err(HeadError::AlreadyEnded {
                    job: id,
                    state: job.state,
                });
            }
            let job = tx.job_mut(id).expect("checked above");
            job.end(
                JobState::Cancelled,
                now(),
                format!("cancelled by uid {}", caller.uid),
            );
            Ok(job.state)
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
                        JobState::Timeout,
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
    let id = JobId(report.job_id);
    let Some(job) = tx.job(id) else { return };
    // A run that is over on this node releases the node's cleanup hold.
    if report.finished && job.cleanup.get(node) == Some(&report.run) {
        tx.job_mut(id).expect("exists").cleanup.remove(node);
    }
    let job = tx.job(id).expect("exists");
    let current =
        job.state == JobState::Running && job.run == report.run && job.nodes.contains(node);
    if !current || !report.finished || job.node_results.contains_key(node) {
        return;
    }
    if report.lost {
        let detail = format!("node {node} lost the job's tasks: {}", report.detail);
        fail_on_node(tx, id, now, &detail);
        return;
    }
    let job = tx.job_mut(id).expect("exists");
    job.node_results.insert(node.clone(), report.exit_code);
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
            JobState::Failed,
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
        job.end(JobState::Completed, now, "");
    }
}

/// Handles the loss of a running job's node: requeue when the job allows it, else NODE_FAIL.
pub(super) fn fail_on_node(tx: &mut Tx<'_>, id: JobId, now: Timestamp, why: &str) {
    let Some(job) = tx.job_mut(id) else { return };
    if job.state != JobState::Running {
        return;
    }
    if job.spec.requeue {
        for node in &job.nodes {
            if !job.node_results.contains_key(node) {
                job.cleanup.insert(node.clone(), job.run);
            }
        }
        job.state = JobState::Pending;
        job.start_time = None;
        job.node_results.clear();
        job.restarts += 1;
        job.log(now, format!("requeued: {why}"));
    } else {
        job.end(JobState::NodeFail, now, why.to_string());
    }
}

fn user_of(caller: &Caller) -> User {
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(caller.uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| caller.uid.to_string());
    User {
        uid: caller.uid,
        gid: caller.gid,
        name,
    }
}

/// Refuses requests the cluster can never satisfy, naming the line and field of the job file.
fn check_fits_cluster(
    tx: &Tx<'_>,
    file: &str,
    text: &str,
    spec: &JobSpec,
) -> Result<(), HeadError> {
    let refuse = |field: &str, message: String| {
        HeadError::JobFile(JobFileError {
            file: file.to_string(),
            line: line_of_field(text, field),
            field: Some(field.to_string()),
            message,
        })
    };
    if let Some(partition) = &spec.partition
        && partition != DEFAULT_PARTITION
    {
        return Err(refuse(
            "partition",
            format!(
                "no partition `{partition}`; this cluster has one partition, `{DEFAULT_PARTITION}`"
            ),
        ));
    }
    let capacities: Vec<Resources> = tx.nodes().map(|n| n.capacity()).collect();
    let total = capacities.len() as u32;
    if spec.nodes > total {
        return Err(refuse(
            "nodes",
            format!("asks for {} nodes but the cluster has {total}", spec.nodes),
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
    Ok(())
}
