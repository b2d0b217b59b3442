//! One scheduling pass: snapshot the records, call the pure scheduler, apply the plan it returns.

use super::{Head, HeadError, Inner, now};
use beowulf_scheduler::{NodeAvailability, NodeView, PendingJob, RunningJob, SchedulerInput, plan};
use beowulf_types::{JobState, Resources, Timestamp};
use std::collections::BTreeMap;

impl Head {
    /// Runs one pass; returns how many jobs it started.
    pub fn schedule_pass(&self, rng: &mut impl rand::Rng) -> Result<usize, HeadError> {
        let now = now();
        let (input, plan) = {
            let inner = self.lock();
            let input = snapshot(&inner, now, self.config.priority_weights());
            let plan = plan(&input, now, rng);
            (input, plan)
        };
        drop(input);
        let started = plan.starts.len();
        if started > 0 {
            self.mutate(|tx| {
                for start in &plan.starts {
                    let job = tx.job_mut(start.job).expect("planned jobs exist");
                    job.state = JobState::Running;
                    job.nodes = start.nodes.clone();
                    job.run += 1;
                    job.start_time = Some(now);
                    job.node_results.clear();
                    let list: Vec<&str> = start.nodes.iter().map(|n| n.as_str()).collect();
                    job.log(
                        now,
                        format!("started on {} (run {})", list.join(","), job.run),
                    );
                }
                Ok(())
            })?;
        }
        self.lock().pending = plan.pending;
        Ok(started)
    }
}

/// The scheduler's view of the committed records.
fn snapshot(
    inner: &Inner,
    now: Timestamp,
    weights: beowulf_scheduler::PriorityWeights,
) -> SchedulerInput {
    let nodes = inner
        .nodes
        .values()
        .map(|n| {
            let availability = if n.down_reason.is_some() {
                NodeAvailability::Down
            } else if n.drain_reason.is_some() {
                NodeAvailability::Drain
            } else {
                NodeAvailability::Up
            };
            (
                n.name.clone(),
                NodeView {
                    capacity: n.capacity(),
                    availability,
                    ..NodeView::default()
                },
            )
        })
        .collect();
    let mut running = Vec::new();
    let mut pending = Vec::new();
    for id in &inner.active {
        let job = &inner.jobs[id];
        let per_node = job.per_node();
        let allocation: BTreeMap<_, Resources> =
            job.held_nodes().map(|n| (n.clone(), per_node)).collect();
        if !allocation.is_empty() {
            let expected_end = match (job.state, job.start_time) {
                (JobState::Running, Some(start)) => start.plus(job.spec.time_limit_ms),
                // Cleanup of an ended run takes moments.
                _ => now,
            };
            running.push(RunningJob {
                id: job.id,
                allocation,
                expected_end,
                ..RunningJob::default()
            });
        }
        if job.state == JobState::Pending {
            pending.push(PendingJob {
                id: job.id,
                submitted: job.submit_time,
                nodes: job.spec.nodes,
                per_node,
                time_limit: job.spec.time_limit_ms,
                ..PendingJob::default()
            });
        }
    }
    SchedulerInput {
        nodes,
        running,
        pending,
        weights,
        ..SchedulerInput::default()
    }
}
