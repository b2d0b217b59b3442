//! Node operations: agent sessions (register, heartbeat, reports), health, drain and resume.

use super::identity::Caller;
use super::jobs::{apply_run_report, fail_on_node};
use super::{Head, HeadError, Session, now};
use crate::model::NodeRecord;
use beowulf_proto::v1;
use beowulf_types::{Generation, Inventory, JobId, JobState, NodeName, RunKey};
use tokio::sync::mpsc;

impl Head {
    /// Registers (or re-registers) an agent: records its inventory, brings the node back up,
    /// reconciles the runs it reports, and attaches its stream. Returns the session ID.
    pub fn register(
        &self,
        register: &v1::Register,
        tx_stream: mpsc::UnboundedSender<v1::HeadMessage>,
    ) -> Result<u64, HeadError> {
        let name = NodeName::new(register.node.clone());
        let inventory: Inventory = register
            .inventory
            .as_ref()
            .map(Inventory::from)
            .unwrap_or_default();
        let now = now();
        {
            let mut inner = self.lock();
            let id = inner.next_session_id;
            inner.next_session_id += 1;
            inner.sessions.insert(
                name.clone(),
                Session {
                    id,
                    tx: tx_stream,
                    payloads_sent: Default::default(),
                },
            );
            inner.last_seen.insert(name.clone(), now);
            // An agent that saw a newer generation than this head has (the head's store was
            // restored from an older copy) would ignore everything up to it: continue from there.
            if register.generation > inner.generation.0 {
                inner.generation = Generation(register.generation);
            }
        }
        self.mutate(|tx| {
            match tx.node_mut(&name) {
                Some(node) => {
                    if node.inventory != inventory {
                        node.inventory = inventory;
                    }
                    if node.launch_endpoint != register.launch_endpoint {
                        node.launch_endpoint = register.launch_endpoint.clone();
                    }
                    if node.down_reason.take().is_some() {
                        tracing::info!(node = %name, "node is back: agent registered");
                    }
                }
                None => {
                    tracing::info!(node = %name, cpus = inventory.cpus, "new node registered");
                    tx.insert_node(NodeRecord {
                        name: name.clone(),
                        inventory,
                        drain_reason: None,
                        down_reason: None,
                        launch_endpoint: register.launch_endpoint.clone(),
                    });
                }
            }
            // Runs the agent no longer has are gone from that node.
            for id in tx.active_ids() {
                let job = tx.job(id).expect("active jobs exist");
                if let Some(hold) = job.cleanup_hold(&name) {
                    let still_there = register
                        .runs
                        .iter()
                        .any(|r| r.run_key() == hold && !r.finished);
                    if !still_there {
                        tx.job_mut(id).expect("exists").cleanup.remove(&name);
                    }
                }
            }
            for report in &register.runs {
                apply_run_report(tx, &name, report, now);
            }
            // Always send the full desired state on a new session.
            tx.resend(name.clone());
            Ok(())
        })?;
        self.wake_scheduler.notify_one();
        Ok(self.lock().sessions.get(&name).map(|s| s.id).unwrap_or(0))
    }

    /// A node's heartbeat: it is alive, acted on `beat.generation`, and knows `beat.runs`. Holds
    /// of runs it does not know, given at or before that generation, are released: nothing of
    /// such a run is on the node (it was cancelled before its start reached the agent).
    pub fn heartbeat(&self, node: &NodeName, beat: &v1::Heartbeat) -> Result<(), HeadError> {
        let unknown: Vec<RunKey> = {
            let mut inner = self.lock();
            inner.last_seen.insert(node.clone(), now());
            if inner.hold_generation.is_empty() {
                return Ok(());
            }
            let acted_on = Generation(beat.generation);
            let inner = &mut *inner;
            inner
                .hold_generation
                .retain(|id, _| inner.jobs.get(id).is_some_and(|j| !j.cleanup.is_empty()));
            inner
                .hold_generation
                .iter()
                .filter(|(_, given)| acted_on >= **given)
                .filter_map(|(id, _)| {
                    let hold = inner.jobs.get(id)?.cleanup_hold(node)?;
                    let known = beat.runs.iter().any(|r| r.run_key() == hold);
                    (!known).then_some(hold)
                })
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let released = self.mutate(|tx| {
            let mut released = 0;
            for &key in &unknown {
                let id = key.job;
                let Some(job) = tx.job(id) else { continue };
                if job.cleanup_hold(node) == Some(key) {
                    tracing::info!(job = %id, run = key.run, node = %node, "released: the node's agent never had the run (it ended before its start reached the node)");
                    tx.job_mut(id).expect("exists").cleanup.remove(node);
                    released += 1;
                }
            }
            Ok(released)
        })?;
        if released > 0 {
            self.wake_scheduler.notify_one();
        }
        Ok(())
    }

    /// Gives every node a full heartbeat timeout from now: the head itself was not running (its
    /// process or the whole machine stalled), so it could not have heard them meanwhile, and
    /// their heartbeats may still wait unread in its sockets. Nomad resets its heartbeat timers
    /// on a leader change for the same reason; the head does it at start too.
    pub fn forgive_silence(&self) {
        let now = now();
        for seen in self.lock().last_seen.values_mut() {
            *seen = (*seen).max(now);
        }
    }

    /// Records a registered node's changed inventory (sent with a heartbeat).
    pub fn update_inventory(
        &self,
        node: &NodeName,
        inventory: &v1::Inventory,
    ) -> Result<(), HeadError> {
        let inventory = Inventory::from(inventory);
        let changed = self.mutate(|tx| {
            let Some(record) = tx.node_mut(node) else {
                return Ok(false);
            };
            if record.inventory == inventory {
                return Ok(false);
            }
            tracing::info!(node = %node, ib_active = inventory.has_active_ib(), "node inventory changed");
            record.inventory = inventory;
            Ok(true)
        })?;
        if changed {
            self.wake_scheduler.notify_one();
        }
        Ok(())
    }

    pub fn run_report(&self, node: &NodeName, report: &v1::RunReport) -> Result<(), HeadError> {
        self.lock().last_seen.insert(node.clone(), now());
        let ended = self.mutate(|tx| {
            let before = tx
                .job(JobId(report.job_id))
                .map(|j| (j.state, j.cleanup.len()));
            apply_run_report(tx, node, report, now());
            let after = tx
                .job(JobId(report.job_id))
                .map(|j| (j.state, j.cleanup.len()));
            Ok(before != after)
        })?;
        if ended {
            self.wake_scheduler.notify_one();
        }
        Ok(())
    }

    /// Detaches a session when its stream ends, unless a newer session replaced it.
    pub fn disconnect(&self, node: &NodeName, session: u64) {
        let mut inner = self.lock();
        if inner.sessions.get(node).is_some_and(|s| s.id == session) {
            inner.sessions.remove(node);
            tracing::info!(node = %node, "agent disconnected");
        }
    }

    /// Marks nodes DOWN whose heartbeats stopped, and deals with their running jobs.
    pub fn check_heartbeats(&self) -> Result<usize, HeadError> {
        let timeout = self.config.heartbeat_timeout_ms;
        let now = now();
        let silent: Vec<(NodeName, u64)> = self.read(|inner| {
            inner
                .nodes
                .values()
                .filter(|n| n.down_reason.is_none())
                .filter_map(|n| {
                    let seen = inner.last_seen.get(&n.name).copied().unwrap_or_default();
                    let quiet = now.since(seen);
                    (quiet > timeout).then(|| (n.name.clone(), quiet))
                })
                .collect()
        });
        if silent.is_empty() {
            return Ok(0);
        }
        self.mutate(|tx| {
            for (name, quiet) in &silent {
                let why = format!("not responding: no heartbeat for {} s", quiet / 1000);
                tracing::warn!(node = %name, "{why}");
                if let Some(node) = tx.node_mut(name) {
                    node.down_reason = Some(why.clone());
                }
                for id in tx.active_ids() {
                    let job = tx.job(id).expect("active jobs exist");
                    if job.state == JobState::Running && job.nodes.contains(name) {
                        fail_on_node(tx, id, now, &format!("node {name} is DOWN ({why})"));
                    }
                    // A DOWN node's processes are cleaned up when its agent registers again; its
                    // resources are not offered meanwhile, so drop the hold.
                    if tx.job(id).is_some_and(|j| j.cleanup.contains_key(name)) {
                        tx.job_mut(id).expect("exists").cleanup.remove(name);
                    }
                }
            }
            Ok(())
        })?;
        self.wake_scheduler.notify_one();
        Ok(silent.len())
    }

    pub fn drain(&self, caller: &Caller, name: &NodeName, reason: &str) -> Result<(), HeadError> {
        require_root(caller, "drain a node")?;
        if reason.trim().is_empty() {
            return Err(HeadError::Conflict(
                "a drain needs a reason: cluster drain NODE --reason TEXT".into(),
            ));
        }
        self.mutate(|tx| {
            let node = tx
                .node_mut(name)
                .ok_or_else(|| HeadError::NoSuchNode(name.clone()))?;
            node.drain_reason = Some(reason.to_string());
            Ok(())
        })
    }

    pub fn resume(&self, caller: &Caller, name: &NodeName) -> Result<(), HeadError> {
        require_root(caller, "resume a node")?;
        let connected = self.read(|inner| inner.sessions.contains_key(name));
        self.mutate(|tx| {
            let node = tx
                .node_mut(name)
                .ok_or_else(|| HeadError::NoSuchNode(name.clone()))?;
            if node.down_reason.is_some() && !connected {
                return Err(HeadError::Conflict(format!(
                    "node {name} is DOWN and its agent is not connected; start computed on it first"
                )));
            }
            node.drain_reason = None;
            node.down_reason = None;
            Ok(())
        })?;
        self.wake_scheduler.notify_one();
        Ok(())
    }
}

fn require_root(caller: &Caller, what: &str) -> Result<(), HeadError> {
    if caller.is_root() {
        Ok(())
    } else {
        Err(HeadError::PermissionDenied(format!(
            "only root may {what} (you are uid {})",
            caller.uid
        )))
    }
}
