//! The scenario text format: one statement a line, `key=value` arguments, `#` comments, times in
//! seconds (decimals allowed).
//!
//! ```text
//! cluster nodes=4 cpus=4                 # N identical nodes, named node1..node4 (zero-padded)
//! policy easy fcfs                       # policies to run (default: easy)
//! job 1 submit=0 nodes=4 cpus=4 run=100 limit=100 [requeue]
//! down node2 at=50                       # also `up` and `drain`
//! expect 3 start=2 end=12 state=COMPLETED nodes=node1
//! expect fcfs 3 start=100                # only under fcfs
//! expect 4 start=never state=PENDING
//! ```

use super::{Expectation, Scenario};
use crate::cluster::Cluster;
use crate::error::ScenarioError;
use crate::event::{NodeChange, NodeEvent};
use crate::job::{Job, MEMORY_PER_CPU_MB};
use crate::policy::Policy;
use beowulf_types::{JobId, JobState, NodeName, Resources, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// Parses `text`; `file` names it in errors (`backfill.scn:7: job 3: `run` is missing`).
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let mut parser = Parser::default();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        parser
            .statement(index + 1, line)
            .map_err(|message| ScenarioError::Parse {
                file: file.to_string(),
                line: index + 1,
                message,
            })?;
    }
    parser.finish(file)
}

#[derive(Debug, Default)]
struct Parser {
    cluster: Option<(u32, u32)>,
    policies: Vec<Policy>,
    jobs: Vec<Job>,
    node_events: Vec<(usize, NodeEvent)>,
    expectations: Vec<Expectation>,
}

impl Parser {
    fn statement(&mut self, line: usize, text: &str) -> Result<(), String> {
        let mut words = text.split_whitespace();
        let keyword = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match keyword {
            "cluster" => {
                if self.cluster.is_some() {
                    return Err("a second `cluster` line".to_string());
                }
                let args = Args::new("cluster", &rest, &[])?;
                self.cluster = Some((args.number("nodes")?, args.number("cpus")?));
                args.done()
            }
            "policy" => {
                if rest.is_empty() {
                    return Err("`policy` needs at least one of easy, fcfs".to_string());
                }
                for word in rest {
                    let policy = Policy::parse(word)
                        .ok_or_else(|| format!("unknown policy `{word}` (easy or fcfs)"))?;
                    if !self.policies.contains(&policy) {
                        self.policies.push(policy);
                    }
                }
                Ok(())
            }
            "job" => self.job(&rest),
            "down" | "up" | "drain" => {
                let change = match keyword {
                    "down" => NodeChange::Down,
                    "up" => NodeChange::Up,
                    _ => NodeChange::Drain,
                };
                let (node, args) = rest
                    .split_first()
                    .ok_or_else(|| format!("`{keyword}` needs a node name"))?;
                let args = Args::new(keyword, args, &[])?;
                self.node_events.push((
                    line,
                    NodeEvent {
                        at: args.time("at")?,
                        node: NodeName::new(*node),
                        change,
                    },
                ));
                args.done()
            }
            "expect" => self.expect(line, &rest),
            other => Err(format!(
                "unknown statement `{other}` (cluster, policy, job, down, up, drain, expect)"
            )),
        }
    }

    fn job(&mut self, words: &[&str]) -> Result<(), String> {
        let (id, args) = words
            .split_first()
            .ok_or_else(|| "`job` needs an ID".to_string())?;
        let id = job_id(id)?;
        let args = Args::new(&format!("job {id}"), args, &["requeue"])?;
        let cpus: u32 = args.number("cpus")?;
        let job = Job {
            id,
            submit: args.time("submit")?,
            nodes: args.optional_number("nodes")?.unwrap_or(1),
            per_node: Resources::new(cpus, u64::from(cpus) * MEMORY_PER_CPU_MB),
            runtime: args.time("run")?.0,
            time_limit: args.time("limit")?.0,
            requeue: args.flag("requeue"),
        };
        args.done()?;
        if self.jobs.iter().any(|other| other.id == id) {
            return Err(format!("job {id} is defined twice"));
        }
        self.jobs.push(job);
        Ok(())
    }

    fn expect(&mut self, line: usize, words: &[&str]) -> Result<(), String> {
        let (policy, words) = match words.first().and_then(|word| Policy::parse(word)) {
            Some(policy) => (Some(policy), &words[1..]),
            None => (None, words),
        };
        let (id, args) = words
            .split_first()
            .ok_or_else(|| "`expect` needs a job ID".to_string())?;
        let job = job_id(id)?;
        let args = Args::new(&format!("expect {job}"), args, &[])?;
        let maybe_time = |key: &str| -> Result<Option<Option<Timestamp>>, String> {
            match args.get(key) {
                None => Ok(None),
                Some("never") => Ok(Some(None)),
                Some(_) => args.time(key).map(|at| Some(Some(at))),
            }
        };
        let expectation = Expectation {
            line,
            policy,
            job,
            start: maybe_time("start")?,
            end: maybe_time("end")?,
            state: args
                .get("state")
                .map(|state| {
                    JobState::parse(state).ok_or_else(|| format!("unknown job state `{state}`"))
                })
                .transpose()?,
            nodes: args
                .get("nodes")
                .map(|nodes| nodes.split(',').map(NodeName::new).collect()),
        };
        args.done()?;
        self.expectations.push(expectation);
        Ok(())
    }

    fn finish(self, file: &str) -> Result<Scenario, ScenarioError> {
        let error = |line: usize, message: String| ScenarioError::Parse {
            file: file.to_string(),
            line,
            message,
        };
        let (nodes, cpus) = self
            .cluster
            .ok_or_else(|| error(1, "no `cluster nodes=N cpus=C` line".to_string()))?;
        let cluster = Cluster::uniform(nodes, cpus);
        for (line, event) in &self.node_events {
            if !cluster.nodes.contains_key(&event.node) {
                let first = cluster.nodes.keys().next().map(NodeName::as_str);
                let last = cluster.nodes.keys().next_back().map(NodeName::as_str);
                return Err(error(
                    *line,
                    format!(
                        "node {} is not in the cluster ({}..{})",
                        event.node,
                        first.unwrap_or_default(),
                        last.unwrap_or_default()
                    ),
                ));
            }
        }
        let policies = if self.policies.is_empty() {
            vec![Policy::Easy]
        } else {
            self.policies
        };
        let ids: BTreeSet<JobId> = self.jobs.iter().map(|job| job.id).collect();
        for expectation in &self.expectations {
            if !ids.contains(&expectation.job) {
                return Err(error(
                    expectation.line,
                    format!("job {} is not defined", expectation.job),
                ));
            }
            if let Some(policy) = expectation.policy
                && !policies.contains(&policy)
            {
                return Err(error(
                    expectation.line,
                    format!("policy {policy} is not run by this scenario (see `policy`)"),
                ));
            }
        }
        Ok(Scenario {
            file: file.to_string(),
            cluster,
            policies,
            jobs: self.jobs,
            node_events: self
                .node_events
                .into_iter()
                .map(|(_, event)| event)
                .collect(),
            expectations: self.expectations,
        })
    }
}

fn job_id(word: &str) -> Result<JobId, String> {
    word.parse()
        .map_err(|_| format!("`{word}` is not a job ID"))
}

/// `key=value` arguments (and bare flags) of one statement; every one must be used.
#[derive(Debug)]
struct Args<'a> {
    what: String,
    values: BTreeMap<&'a str, &'a str>,
    flags: BTreeSet<&'a str>,
    used: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Args<'a> {
    fn new(what: &str, words: &[&'a str], allowed_flags: &[&str]) -> Result<Self, String> {
        let mut values = BTreeMap::new();
        let mut flags = BTreeSet::new();
        for word in words {
            match word.split_once('=') {
                Some((key, value)) => {
                    if values.insert(key, value).is_some() {
                        return Err(format!("{what}: `{key}` given twice"));
                    }
                }
                None if allowed_flags.contains(word) => {
                    flags.insert(*word);
                }
                None => return Err(format!("{what}: `{word}` is not `key=value`")),
            }
        }
        Ok(Args {
            what: what.to_string(),
            values,
            flags,
            used: Default::default(),
        })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.used.borrow_mut().insert(key.to_string());
        self.values.get(key).copied()
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.contains(key)
    }

    fn required(&self, key: &str) -> Result<&'a str, String> {
        self.get(key)
            .ok_or_else(|| format!("{}: `{key}` is missing", self.what))
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let value = self.required(key)?;
        value
            .parse()
            .map_err(|_| format!("{}: `{key}={value}` is not a whole number", self.what))
    }

    fn optional_number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.number(key).map(Some),
        }
    }

    /// Seconds, possibly with decimals, as a timestamp in ms.
    fn time(&self, key: &str) -> Result<Timestamp, String> {
        let value = self.required(key)?;
        let seconds: f64 = value
            .parse()
            .ok()
            .filter(|seconds: &f64| seconds.is_finite() && *seconds >= 0.0)
            .ok_or_else(|| format!("{}: `{key}={value}` is not a time in seconds", self.what))?;
        Ok(Timestamp((seconds * 1000.0).round() as u64))
    }

    /// Fails on an argument no one asked for (a typo like `sumbit=`).
    fn done(&self) -> Result<(), String> {
        let used = self.used.borrow();
        match self.values.keys().find(|key| !used.contains(**key)) {
            Some(key) => Err(format!("{}: unknown argument `{key}`", self.what)),
            None => Ok(()),
        }
    }
}
