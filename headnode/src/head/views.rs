//! What `cluster queue`, `cluster show` and `cluster nodes` see: records turned into API messages.

use super::desired::job_paths;
use super::{Head, HeadError, Inner};
use crate::model::JobRecord;
use beowulf_proto::v1;
use beowulf_types::{
    DependencySpec, JobId, JobState, NodeName, PendingReason, Resources, Timestamp,
};

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(":")
}
use std::collections::BTreeMap;

/// Jobs in one page of a listing, unless the client asks for fewer.
pub const DEFAULT_PAGE_JOBS: usize = 5_000;
/// Bytes of job records in one page at most: well under gRPC's 4 MiB default message limit,
/// which every client keeps.
const MAX_PAGE_BYTES: usize = 1 << 20;

impl Head {
    pub fn show_job(&self, id: JobId) -> Result<v1::JobInfo, HeadError> {
        self.read(|inner| {
            let job = inner.jobs.get(&id).ok_or(HeadError::NoSuchJob(id))?;
            Ok(job_info(inner, job, true))
        })
    }

    /// One page of [`Head::list_jobs`]: the jobs with IDs above `after`, at most `limit` of them
    /// and at most [`MAX_PAGE_BYTES`] encoded; `true` when more follow. A listing is never one
    /// message of unbounded size (gRPC refuses messages over 4 MiB by default: `cluster queue
    /// --all` failed for everyone past about 22,500 jobs).
    pub fn list_jobs_page(
        &self,
        all: bool,
        after: JobId,
        limit: usize,
    ) -> (Vec<v1::JobInfo>, bool) {
        self.read(|inner| {
            let range = (std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded);
            let listed: Box<dyn Iterator<Item = &JobRecord>> = if all {
                Box::new(inner.jobs.range(range).map(|(_, j)| j))
            } else {
                Box::new(
                    inner
                        .active
                        .range(range)
                        .map(|id| &inner.jobs[id])
                        .filter(|j| !j.state.is_terminal()),
                )
            };
            let mut page = Vec::new();
            let mut bytes = 0;
            for job in listed {
                if page.len() >= limit.max(1) || bytes >= MAX_PAGE_BYTES {
                    return (page, true);
                }
                let info = job_info(inner, job, false);
                bytes += prost::Message::encoded_len(&info);
                page.push(info);
            }
            (page, false)
        })
    }

    /// Pending and running jobs (and, with `all`, ended ones), in ID order.
    pub fn list_jobs(&self, all: bool) -> Vec<v1::JobInfo> {
        self.read(|inner| {
            if all {
                inner
                    .jobs
                    .values()
                    .map(|j| job_info(inner, j, false))
                    .collect()
            } else {
                inner
                    .active
                    .iter()
                    .map(|id| &inner.jobs[id])
                    .filter(|j| !j.state.is_terminal())
                    .map(|j| job_info(inner, j, false))
                    .collect()
            }
        })
    }

    pub fn list_nodes(&self) -> Vec<v1::NodeInfo> {
        self.read(|inner| {
            let usage = usage(inner);
            inner
                .nodes
                .values()
                .map(|node| {
                    let (allocated, jobs) = usage.get(&node.name).cloned().unwrap_or_default();
                    v1::NodeInfo {
                        name: node.name.0.clone(),
                        state: node.state(allocated).as_str().to_string(),
                        reason: node.reason().to_string(),
                        cpus: node.inventory.cpus,
                        cpus_allocated: allocated.cpus,
                        memory_mb: node.inventory.memory_mb,
                        memory_allocated_mb: allocated.memory_mb,
                        jobs: jobs.iter().map(|j| j.0).collect(),
                        last_heartbeat_ms: inner.last_seen.get(&node.name).map(|t| t.0),
                        inventory: Some(v1::Inventory::from(&node.inventory)),
                    }
                })
                .collect()
        })
    }

    /// The partitions as configured, or one, `all`, of every node when none is.
    pub fn list_partitions(&self) -> Vec<v1::PartitionInfo> {
        let every_node: Vec<String> =
            self.read(|inner| inner.nodes.keys().map(|n| n.0.clone()).collect());
        let configured = self.config.partitions();
        if configured.is_empty() {
            return vec![v1::PartitionInfo {
                name: crate::model::DEFAULT_PARTITION.to_string(),
                nodes: every_node,
                default: true,
                max_time_ms: None,
                max_nodes: None,
            }];
        }
        configured
            .iter()
            .map(|(name, p)| v1::PartitionInfo {
                name: name.clone(),
                nodes: if p.nodes.is_empty() {
                    every_node.clone()
                } else {
                    p.nodes.iter().map(|n| n.0.clone()).collect()
                },
                default: p.default,
                max_time_ms: p.max_time,
                max_nodes: p.max_nodes,
            })
            .collect()
    }

    pub fn node_info(&self, name: &NodeName) -> Result<v1::NodeInfo, HeadError> {
        self.list_nodes()
            .into_iter()
            .find(|n| n.name == name.0)
            .ok_or_else(|| HeadError::NoSuchNode(name.clone()))
    }
}

/// Resources and jobs held on each node.
fn usage(inner: &Inner) -> BTreeMap<NodeName, (Resources, Vec<JobId>)> {
    let mut usage: BTreeMap<NodeName, (Resources, Vec<JobId>)> = BTreeMap::new();
    for id in &inner.active {
        let job = &inner.jobs[id];
        for node in job.held_nodes() {
            let entry = usage.entry(node.clone()).or_default();
            entry.0 = entry.0.add(&job.per_node());
            entry.1.push(job.id);
        }
    }
    usage
}

fn job_info(inner: &Inner, job: &JobRecord, with_events: bool) -> v1::JobInfo {
    let pending = inner.pending.get(&job.id);
    let reason = match job.state {
        // A hold's reason shows at once, before the next pass gives it.
        JobState::Pending => match (job.hold, pending) {
            (Some(hold), _) => hold.reason().as_str().to_string(),
            (None, Some(p)) => p.reason.as_str().to_string(),
            (None, None) if job.restarts > 0 => PendingReason::Requeued.as_str().to_string(),
            (None, None) => PendingReason::None.as_str().to_string(),
        },
        JobState::Running => "None".to_string(),
        _ => job.end_reason.clone(),
    };
    let paths = job_paths(job);
    v1::JobInfo {
        id: job.id.0,
        name: job.spec.name.clone(),
        user: job.user.name.clone(),
        uid: job.user.uid,
        state: job.state.as_str().to_string(),
        reason,
        exit_code: job.exit_code,
        nodes: job.nodes.iter().map(|n| n.0.clone()).collect(),
        submit_time_ms: job.submit_time.0,
        start_time_ms: job.start_time.map(|t| t.0),
        end_time_ms: job.end_time.map(|t| t.0),
        time_limit_ms: job.spec.time_limit_ms,
        num_nodes: job.spec.nodes,
        required_nodes: job.spec.nodelist.iter().map(|n| n.0.clone()).collect(),
        excluded_nodes: job.spec.exclude.iter().map(|n| n.0.clone()).collect(),
        exclusive: job.spec.exclusive,
        eligible_time_ms: job
            .spec
            .begin
            .map_or(job.submit_time, |b| b.resolve(job.submit_time))
            .0,
        ntasks: job.spec.ntasks,
        cpus_per_task: job.spec.cpus_per_task,
        memory_mb: job.spec.memory_mb,
        partition: job.partition_name().to_string(),
        priority: pending.map(|p| p.priority).unwrap_or(0),
        estimated_start_ms: pending.and_then(|p| p.estimated_start).map(|t| t.0),
        restarts: job.restarts,
        workdir: paths.workdir,
        stdout_path: paths.stdout,
        stderr_path: paths.stderr,
        array_job_id: job.array.map(|a| a.array.0),
        array_task_id: job.array.map(|a| a.index),
        qos: job.spec.qos.clone().unwrap_or_default(),
        account: job.spec.account.clone().unwrap_or_default(),
        dependencies: job
            .spec
            .dependencies
            .iter()
            .map(|d| match d {
                DependencySpec::AfterOk(ids) => format!("afterok:{}", join_ids(ids)),
                DependencySpec::AfterAny(ids) => format!("afterany:{}", join_ids(ids)),
                DependencySpec::AfterNotOk(ids) => format!("afternotok:{}", join_ids(ids)),
                DependencySpec::Singleton => "singleton".to_string(),
                DependencySpec::OnElement {
                    after,
                    array,
                    index,
                } => format!("{}:{array}_{index}", after.keyword()),
            })
            .collect(),
        events: if with_events {
            job.events
                .iter()
                .map(|e| v1::JobEvent {
                    time_ms: e.time.0,
                    message: e.message.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        fabric: job
            .launch
            .as_ref()
            .and_then(|l| l.fabric)
            .map(|f| f.as_str().to_string())
            .unwrap_or_default(),
        fabric_reason: job
            .launch
            .as_ref()
            .map(|l| l.fabric_reason.clone())
            .unwrap_or_default(),
        image: job
            .image
            .as_ref()
            .map(|i| i.reference.clone())
            .unwrap_or_default(),
        image_digest: job
            .image
            .as_ref()
            .map(|i| i.digest.clone())
            .unwrap_or_default(),
        phases: phases(job),
        priority_factors: pending
            .filter(|_| job.state == JobState::Pending)
            .map(|p| priority_factors(&p.factors)),
    }
}

/// A pending job's priority factors as the last pass computed them.
fn priority_factors(f: &beowulf_scheduler::PriorityFactors) -> v1::PriorityFactors {
    let factor = |f: beowulf_scheduler::Factor| {
        Some(v1::PriorityFactor {
            millionths: f.normalized,
            weighted: f.weighted,
        })
    };
    v1::PriorityFactors {
        age: factor(f.age),
        size: factor(f.size),
        fairshare: factor(f.fairshare),
        partition: factor(f.partition),
        qos: factor(f.qos),
    }
}

/// Per-phase durations of the current (or last) run, each from the end of the one before:
/// queued (submit to start), image staged, containers started, then the rest of the run.
fn phases(job: &JobRecord) -> Vec<v1::Phase> {
    let mut out = Vec::new();
    let Some(start) = job.start_time else {
        return out;
    };
    let mut push = |name: &str, from: Timestamp, to: Timestamp| {
        out.push(v1::Phase {
            name: name.to_string(),
            ms: to.0.saturating_sub(from.0),
        });
    };
    push("queued", job.submit_time, start);
    let mut last = start;
    if let Some(staged) = job.phases.image_staged {
        push("image_staged", last, staged);
        last = staged;
    }
    if let Some(started) = job.phases.containers_started {
        push("containers_started", last, started);
        last = started;
    }
    if let Some(end) = job.end_time {
        let name = if job.spec.launches_mpi() {
            "mpi_ran"
        } else {
            "ran"
        };
        push(name, last, end);
    }
    out
}
