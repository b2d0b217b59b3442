//! The figures of a finished simulation (utilisation, wait, bounded slowdown, makespan, pass cost),
//! and their text forms: `name: value` lines, or a side-by-side table of several policies.

use crate::simulation::Outcome;
use beowulf_types::{JobState, Millis};
use std::fmt::Write as _;

/// Runs shorter than this count as this long in the bounded slowdown (10 s, the usual bound).
pub const SLOWDOWN_BOUND_MS: Millis = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub policy: String,
    pub jobs: usize,
    pub completed: usize,
    pub timeout: usize,
    pub node_fail: usize,
    /// Jobs that were still waiting when nothing was left to happen.
    pub never_started: usize,
    /// Allocated CPU·time / (cluster CPUs × makespan).
    pub utilisation: f64,
    /// Submit to start, over the jobs that started, in seconds.
    pub mean_wait_s: f64,
    pub p95_wait_s: f64,
    /// max(1, (wait + run) / max(run, 10 s)), over the jobs that ran to an end.
    pub mean_bounded_slowdown: f64,
    pub p95_bounded_slowdown: f64,
    /// First submit to last end, in seconds.
    pub makespan_s: f64,
    pub passes: u64,
    pub scheduler_calls: u64,
    /// Wall-clock time inside the scheduler, in ms.
    pub pass_time_ms: f64,
    /// Wall-clock time inside the invariant checker, in ms (0 without checking).
    pub check_time_ms: f64,
}

impl Report {
    pub fn new(outcome: &Outcome) -> Report {
        let jobs = &outcome.jobs;
        let count = |state: JobState| jobs.iter().filter(|job| job.state == state).count();
        let mut waits: Vec<f64> = jobs
            .iter()
            .filter_map(|job| job.wait())
            .map(seconds)
            .collect();
        let mut slowdowns: Vec<f64> = jobs
            .iter()
            .filter_map(|job| Some((job.wait()?, job.run()?)))
            .map(|(wait, run)| {
                let slowdown = (wait + run) as f64 / run.max(SLOWDOWN_BOUND_MS) as f64;
                slowdown.max(1.0)
            })
            .collect();
        let first_submit = jobs.iter().map(|job| job.submit).min();
        let last_end = jobs.iter().filter_map(|job| job.end).max();
        let makespan = match (first_submit, last_end) {
            (Some(first), Some(last)) => last.since(first),
            _ => 0,
        };
        let capacity = u128::from(outcome.total_cpus) * u128::from(makespan);
        let utilisation = if capacity == 0 {
            0.0
        } else {
            outcome.allocated_cpu_ms as f64 / capacity as f64
        };
        Report {
            policy: outcome.policy.to_string(),
            jobs: jobs.len(),
            completed: count(JobState::Completed),
            timeout: count(JobState::Timeout),
            node_fail: count(JobState::NodeFail),
            never_started: jobs.iter().filter(|job| job.start.is_none()).count(),
            utilisation,
            mean_wait_s: mean(&waits),
            p95_wait_s: p95(&mut waits),
            mean_bounded_slowdown: mean(&slowdowns),
            p95_bounded_slowdown: p95(&mut slowdowns),
            makespan_s: seconds(makespan),
            passes: outcome.stats.passes,
            scheduler_calls: outcome.stats.calls,
            pass_time_ms: outcome.stats.plan_time.as_secs_f64() * 1000.0,
            check_time_ms: outcome.stats.check_time.as_secs_f64() * 1000.0,
        }
    }

    /// (name, value) pairs, in print order.
    pub fn figures(&self) -> Vec<(&'static str, String)> {
        vec![
            ("policy", self.policy.clone()),
            ("jobs", self.jobs.to_string()),
            ("completed", self.completed.to_string()),
            ("timeout", self.timeout.to_string()),
            ("node_fail", self.node_fail.to_string()),
            ("never_started", self.never_started.to_string()),
            ("utilisation", format!("{:.4}", self.utilisation)),
            ("mean_wait_s", format!("{:.1}", self.mean_wait_s)),
            ("p95_wait_s", format!("{:.1}", self.p95_wait_s)),
            (
                "mean_bounded_slowdown",
                format!("{:.2}", self.mean_bounded_slowdown),
            ),
            (
                "p95_bounded_slowdown",
                format!("{:.2}", self.p95_bounded_slowdown),
            ),
            ("makespan_s", format!("{:.0}", self.makespan_s)),
            ("passes", self.passes.to_string()),
            ("scheduler_calls", self.scheduler_calls.to_string()),
            ("pass_time_ms", format!("{:.3}", self.pass_time_ms)),
            ("check_time_ms", format!("{:.3}", self.check_time_ms)),
        ]
    }

    /// One `name: value` line per figure.
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for (name, value) in self.figures() {
            let _ = writeln!(out, "{name}: {value}");
        }
        out
    }
}

/// The reports side by side: a column per report, a row per figure.
pub fn table(reports: &[Report]) -> String {
    let columns: Vec<Vec<(&'static str, String)>> = reports.iter().map(Report::figures).collect();
    let Some(first) = columns.first() else {
        return String::new();
    };
    let name_width = first.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    let value_width = columns
        .iter()
        .flatten()
        .map(|(_, value)| value.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    for (row, (name, _)) in first.iter().enumerate() {
        let _ = write!(out, "{name:<name_width$}");
        for column in &columns {
            let _ = write!(out, "  {:>value_width$}", column[row].1);
        }
        out.push('\n');
    }
    out
}

fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The 95th percentile, nearest rank: the smallest value at least 95% of the values are at most.
fn p95(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (values.len() * 95).div_ceil(100);
    values[rank.max(1) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        let mut values: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(p95(&mut values), 95.0);
        assert_eq!(p95(&mut [7.0]), 7.0);
        assert_eq!(p95(&mut [1.0, 2.0, 3.0]), 3.0);
        assert_eq!(p95(&mut []), 0.0);
    }

    #[test]
    fn table_lines_up_columns() {
        let outcome = Outcome {
            policy: crate::Policy::Easy,
            jobs: Vec::new(),
            stats: Default::default(),
            total_cpus: 4,
            allocated_cpu_ms: 0,
        };
        let report = Report::new(&outcome);
        let text = table(&[report.clone(), report.clone()]);
        let first = text.lines().next().unwrap();
        assert_eq!(
            first.split_whitespace().collect::<Vec<_>>(),
            ["policy", "easy", "easy"]
        );
        // "mean_bounded_slowdown" (21) + 2 × (2 + 8): every row as wide, values right-aligned.
        assert!(text.lines().all(|line| line.len() == 41), "{text}");
        assert_eq!(text.lines().count(), report.figures().len());
        assert!(report.lines().contains("utilisation: 0.0000\n"));
    }
}
