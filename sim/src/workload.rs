//! Maps SWF jobs to simulated jobs on a cluster of N nodes × C CPUs.
//!
//! - processors: the requested processors (field 8), or the allocated ones (field 5) when unknown;
//! - nodes = ceil(procs / C), and CPUs per node = ceil(procs / nodes), so a job of at most C processors
//!   takes one node, and a wider one spreads evenly (40 procs on 16-CPU nodes: 3 nodes × 14 CPUs);
//!   memory per node is [`MEMORY_PER_CPU_MB`] per CPU, as nodes have, so CPUs decide;
//! - submit time (field 2) and run time (field 4) in seconds become milliseconds on the virtual clock;
//! - time limit: the requested time (field 9); when unknown, the run time (a perfect estimate), at least
//!   one second. A run time above the limit makes the job end as TIMEOUT at its limit.
//!
//! Jobs with an unknown submit time, run time or size, and jobs wider than the cluster, are skipped
//! and counted.

use crate::job::{Job, MEMORY_PER_CPU_MB};
use crate::swf::SwfJob;
use beowulf_types::{JobId, Resources, Timestamp};

/// What was left out of a trace, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    pub unknown_submit: usize,
    pub unknown_run_time: usize,
    pub unknown_size: usize,
    pub wider_than_cluster: usize,
}

impl Skipped {
    pub fn total(&self) -> usize {
        self.unknown_submit + self.unknown_run_time + self.unknown_size + self.wider_than_cluster
    }
}

/// Simulated jobs for `trace` on `nodes` × `cpus`, and what was skipped.
pub fn jobs_from_swf(trace: &[SwfJob], nodes: u32, cpus: u32) -> (Vec<Job>, Skipped) {
    let mut skipped = Skipped::default();
    let mut jobs = Vec::with_capacity(trace.len());
    for record in trace {
        if record.submit < 0 {
            skipped.unknown_submit += 1;
            continue;
        }
        if record.run < 0 {
            skipped.unknown_run_time += 1;
            continue;
        }
        let procs = if record.requested_procs > 0 {
            record.requested_procs
        } else {
            record.allocated_procs
        };
        let Some((job_nodes, per_node)) = shape(procs, nodes, cpus) else {
            if procs <= 0 || cpus == 0 {
                skipped.unknown_size += 1;
            } else {
                skipped.wider_than_cluster += 1;
            }
            continue;
        };
        let runtime = record.run as u64 * 1000;
        let time_limit = if record.requested_time > 0 {
            record.requested_time as u64 * 1000
        } else {
            runtime.max(1000)
        };
        jobs.push(Job {
            id: JobId(record.number),
            submit: Timestamp(record.submit as u64 * 1000),
            nodes: job_nodes,
            per_node: Resources::new(per_node, u64::from(per_node) * MEMORY_PER_CPU_MB),
            runtime,
            time_limit,
            requeue: false,
        });
    }
    (jobs, skipped)
}

/// (nodes, CPUs per node) for `procs` processors on nodes of `cpus` CPUs; `None` when the size is
/// unknown or more than `cluster_nodes` nodes would be needed.
pub fn shape(procs: i64, cluster_nodes: u32, cpus: u32) -> Option<(u32, u32)> {
    if procs <= 0 || cpus == 0 {
        return None;
    }
    let procs = u64::try_from(procs).ok()?;
    let nodes = procs.div_ceil(u64::from(cpus));
    if nodes > u64::from(cluster_nodes) {
        return None;
    }
    let per_node = procs.div_ceil(nodes);
    Some((u32::try_from(nodes).ok()?, u32::try_from(per_node).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(number: u64, run: i64, allocated: i64, requested: i64, limit: i64) -> SwfJob {
        SwfJob {
            number,
            submit: 10,
            wait: -1,
            run,
            allocated_procs: allocated,
            requested_procs: requested,
            requested_time: limit,
            status: 1,
            user: 1,
        }
    }

    #[test]
    fn processors_become_nodes_times_cpus() {
        assert_eq!(shape(1, 4, 16), Some((1, 1)));
        assert_eq!(shape(16, 4, 16), Some((1, 16)));
        assert_eq!(shape(17, 4, 16), Some((2, 9)));
        assert_eq!(shape(40, 4, 16), Some((3, 14)));
        assert_eq!(shape(64, 4, 16), Some((4, 16)));
        assert_eq!(shape(65, 4, 16), None);
        assert_eq!(shape(-1, 4, 16), None);
    }

    #[test]
    fn fields_map_to_jobs_and_bad_records_are_counted() {
        let trace = [
            record(1, 100, 3, -1, 200),
            record(2, 100, 8, 3, -1),
            record(3, -1, 1, 1, 10),
            record(4, 100, -1, -1, 10),
            record(5, 100, 99, 99, 10),
        ];
        let (jobs, skipped) = jobs_from_swf(&trace, 2, 4);
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (
                jobs[0].id,
                jobs[0].submit,
                jobs[0].nodes,
                jobs[0].per_node.cpus
            ),
            (JobId(1), Timestamp(10_000), 1, 3)
        );
        assert_eq!((jobs[0].runtime, jobs[0].time_limit), (100_000, 200_000));
        // Requested processors win over allocated; an unknown limit becomes the run time.
        assert_eq!((jobs[1].per_node.cpus, jobs[1].time_limit), (3, 100_000));
        assert_eq!(
            skipped,
            Skipped {
                unknown_submit: 0,
                unknown_run_time: 1,
                unknown_size: 1,
                wider_than_cluster: 1,
            }
        );
        assert_eq!(skipped.total(), 3);
    }
}
