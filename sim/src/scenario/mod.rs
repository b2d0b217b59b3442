//! Scripted scenarios: a cluster, jobs, node events and the expected start, end, state and nodes of
//! jobs under each policy, run through the simulator with the invariant checker on.

mod parse;

pub use parse::parse;

use crate::cluster::Cluster;
use crate::error::ScenarioError;
use crate::event::NodeEvent;
use crate::job::{Job, JobOutcome};
use crate::policy::Policy;
use crate::simulation::{Outcome, SimConfig, simulate};
use beowulf_types::{JobId, JobState, NodeName, Timestamp};
use std::fmt::Write as _;

#[derive(Debug, Clone)]
pub struct Scenario {
    /// Names the scenario in errors.
    pub file: String,
    pub cluster: Cluster,
    pub policies: Vec<Policy>,
    pub jobs: Vec<Job>,
    pub node_events: Vec<NodeEvent>,
    pub expectations: Vec<Expectation>,
}

/// What one `expect` line says about one job; `None` fields are not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Line of the `expect` statement, for error messages.
    pub line: usize,
    /// Only under this policy; `None`: under every policy of the scenario.
    pub policy: Option<Policy>,
    pub job: JobId,
    /// `Some(None)`: never starts (or ends).
    pub start: Option<Option<Timestamp>>,
    pub end: Option<Option<Timestamp>>,
    pub state: Option<JobState>,
    pub nodes: Option<Vec<NodeName>>,
}

/// Runs the scenario under each of its policies (checking invariants after every pass) and compares
/// the outcome with every expectation; all mismatches are reported together.
pub fn run(scenario: &Scenario) -> Result<Vec<Outcome>, ScenarioError> {
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for &policy in &scenario.policies {
        let outcome = simulate(
            scenario.cluster.clone(),
            scenario.jobs.clone(),
            scenario.node_events.clone(),
            &SimConfig::new(policy),
        )
        .map_err(|source| ScenarioError::Simulation {
            file: scenario.file.clone(),
            policy: policy.to_string(),
            source: Box::new(source),
        })?;
        for expectation in &scenario.expectations {
            if expectation.policy.is_some_and(|only| only != policy) {
                continue;
            }
            let Some(job) = outcome.jobs.iter().find(|job| job.id == expectation.job) else {
                continue;
            };
            for problem in compare(expectation, job) {
                failures.push(format!(
                    "{}:{}: {policy}: job {}: {problem}",
                    scenario.file, expectation.line, expectation.job
                ));
            }
        }
        outcomes.push(outcome);
    }
    if failures.is_empty() {
        Ok(outcomes)
    } else {
        Err(ScenarioError::Mismatch {
            file: scenario.file.clone(),
            failures,
        })
    }
}

fn compare(expectation: &Expectation, job: &JobOutcome) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(start) = expectation.start
        && start != job.start
    {
        problems.push(format!(
            "start: expected {}, got {}",
            show_time(start),
            show_time(job.start)
        ));
    }
    if let Some(end) = expectation.end
        && end != job.end
    {
        problems.push(format!(
            "end: expected {}, got {}",
            show_time(end),
            show_time(job.end)
        ));
    }
    if let Some(state) = expectation.state
        && state != job.state
    {
        problems.push(format!("state: expected {state}, got {}", job.state));
    }
    if let Some(nodes) = &expectation.nodes
        && *nodes != job.nodes
    {
        problems.push(format!(
            "nodes: expected {}, got {}",
            show_nodes(nodes),
            show_nodes(&job.nodes)
        ));
    }
    problems
}

/// One line per job: `job 3: COMPLETED start=2 end=12 nodes=node1`, times in seconds.
pub fn describe(outcome: &Outcome) -> String {
    let mut out = String::new();
    for job in &outcome.jobs {
        let _ = writeln!(
            out,
            "job {}: {} start={} end={} nodes={}",
            job.id,
            job.state,
            show_time(job.start),
            show_time(job.end),
            show_nodes(&job.nodes)
        );
    }
    out
}

fn show_time(at: Option<Timestamp>) -> String {
    match at {
        None => "never".to_string(),
        Some(at) if at.0 % 1000 == 0 => (at.0 / 1000).to_string(),
        Some(at) => format!("{}", at.0 as f64 / 1000.0),
    }
}

fn show_nodes(nodes: &[NodeName]) -> String {
    if nodes.is_empty() {
        return "-".to_string();
    }
    let names: Vec<&str> = nodes.iter().map(NodeName::as_str).collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = "\
cluster nodes=2 cpus=2
policy easy
job 1 submit=0 nodes=2 cpus=2 run=10 limit=20
job 2 submit=1 cpus=1 run=5 limit=5
expect 1 start=0 end=10 state=COMPLETED nodes=node1,node2
expect 2 start=10 end=15
";

    #[test]
    fn a_met_scenario_passes_and_a_wrong_expectation_is_reported_with_its_line() {
        let scenario = parse("ok.scn", SCENARIO).unwrap();
        run(&scenario).unwrap();
        let wrong = SCENARIO.replace("expect 2 start=10 end=15", "expect 2 start=1 state=TIMEOUT");
        let error = run(&parse("wrong.scn", &wrong).unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "wrong.scn: 2 expectation(s) not met:\n\
             wrong.scn:6: easy: job 2: start: expected 1, got 10\n\
             wrong.scn:6: easy: job 2: state: expected TIMEOUT, got COMPLETED"
        );
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases = [
            (
                "cluster nodes=2 cpus=2\njob 1 submit=0 cpus=1 limit=5\n",
                "t:2: job 1: `run` is missing",
            ),
            (
                "cluster nodes=2 cpus=2\njob 1 sumbit=0 submit=0 cpus=1 run=1 limit=5\n",
                "t:2: job 1: unknown argument `sumbit`",
            ),
            (
                "cluster nodes=2 cpus=x\n",
                "t:1: cluster: `cpus=x` is not a whole number",
            ),
            (
                "cluster nodes=2 cpus=2\n\ndown node3 at=1\n",
                "t:3: node node3 is not in the cluster (node1..node2)",
            ),
            (
                "cluster nodes=2 cpus=2\nexpect 9 start=1\n",
                "t:2: job 9 is not defined",
            ),
            (
                "cluster nodes=2 cpus=2\nfly away\n",
                "t:2: unknown statement `fly` (cluster, policy, job, down, up, drain, expect)",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse("t", text).unwrap_err().to_string(), expected);
        }
    }
}
