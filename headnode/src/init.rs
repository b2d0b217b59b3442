//! `cluster init` on the head: headnoded runs the provisioning engine over an inventory and keeps
//! the run's progress — its outline, every event, its end — so the CLI that asked, or any other
//! one later (`cluster init --watch`), can follow it. The CLI only asks and shows.
//!
//! ```text
//!  Init(request) ─▶ load inventory, playbooks, templates ─▶ validate ─▶ outline ─▶ log
//!        │ (one run at a time; refused while one is going)
//!        ▼
//!  engine.run (SSH to nodes, local on the head) ── events ─▶ log (memory + events.jsonl)
//!        ▼
//!  finished { ok, error naming node and step, changed_nothing } ─▶ log
//! ```
//!
//! The engine's state file (`<state_dir>/init/state.json`) records each (step, node) result, so
//! `--resume` skips what is done even after a head restart; `events.jsonl` keeps the last run's
//! stream for `WatchInit` after a restart.

use crate::config::ProvisionConfig;
use crate::head::Head;
use beowulf_proto::v1::{self, init_update::Body};
use beowulf_provision::builtin::{AgentRegister, ProbeError, RegistrationProbe};
use beowulf_provision::ca::ClusterCa;
use beowulf_provision::transport::InventoryConnector;
use beowulf_provision::{
    BuiltinRegistry, ClusterInventory, Engine, Mode, NodeName, Playbook, RunOptions, Start,
    Templates,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// Why a provisioning run could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("a provisioning run is in progress; follow it with `cluster init --watch`")]
    Busy,
    #[error("{0}")]
    Inventory(String),
    #[error("playbooks in {}: {message}", dir.display())]
    Playbooks { dir: PathBuf, message: String },
    #[error("cannot reach the nodes: {0}")]
    Connect(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot keep the run's log in {}: {source}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no provisioning run yet: start one with `cluster init --inventory cluster.toml`")]
    NoRun,
}

/// One run's stream, as kept by the head.
#[derive(Debug)]
pub struct RunLog {
    updates: Mutex<Vec<v1::InitUpdate>>,
    /// The number of updates so far; followers wait on it.
    count: watch::Sender<usize>,
    file: Option<Mutex<std::fs::File>>,
}

impl RunLog {
    fn new(file: Option<std::fs::File>) -> Arc<Self> {
        Arc::new(RunLog {
            updates: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            file: file.map(Mutex::new),
        })
    }

    fn push(&self, update: v1::InitUpdate) {
        if let Some(file) = &self.file {
            let line = update_json(&update);
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(file, "{line}") {
                tracing::warn!(error = %e, "cannot append to the provisioning log");
            }
        }
        let len = {
            let mut updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
            updates.push(update);
            updates.len()
        };
        self.count.send_replace(len);
    }

    /// Whether the run has ended.
    pub fn finished(&self) -> bool {
        self.updates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .is_some_and(|u| matches!(u.body, Some(Body::Finished(_))))
    }

    /// Every update from the beginning, then the new ones as they come, until the run ends or
    /// `out` closes.
    pub async fn follow(self: Arc<Self>, out: mpsc::Sender<Result<v1::InitUpdate, tonic::Status>>) {
        let mut seen = 0;
        let mut count = self.count.subscribe();
        loop {
            let fresh: Vec<v1::InitUpdate> = {
                let updates = self.updates.lock().unwrap_or_else(|p| p.into_inner());
                updates[seen.min(updates.len())..].to_vec()
            };
            seen += fresh.len();
            for update in fresh {
                let last = matches!(update.body, Some(Body::Finished(_)));
                if out.send(Ok(update)).await.is_err() || last {
                    return;
                }
            }
            if count.changed().await.is_err() {
                return;
            }
        }
    }

    /// The log of a run that a previous headnoded kept in `path`.
    fn replay(path: &Path) -> Option<Arc<Self>> {
        let text = std::fs::read_to_string(path).ok()?;
        let log = RunLog::new(None);
        for line in text.lines() {
            if let Some(update) = update_from_json(line) {
                log.push(update);
            }
        }
        if !log.finished() {
            log.push(finished(
                false,
                "headnoded stopped during this run; `cluster init --resume` goes on from where it stopped"
                    .into(),
                false,
            ));
        }
        Some(log)
    }
}

/// The head's provisioning runs: at most one at a time.
#[derive(Debug)]
pub struct Provisioner {
    config: ProvisionConfig,
    dir: PathBuf,
    current: Mutex<Option<Arc<RunLog>>>,
    /// Answers the agent step's "has this node's agent registered?".
    registrations: Arc<dyn RegistrationProbe>,
}

/// The agent step's question, answered by the head's agent sessions.
#[derive(Debug)]
pub struct HeadRegistrations(pub Arc<Head>);

#[async_trait::async_trait]
impl RegistrationProbe for HeadRegistrations {
    async fn registered(&self, node: &NodeName) -> Result<bool, ProbeError> {
        Ok(self.0.agent_connected(node))
    }
}

impl Provisioner {
    /// `state_dir` is headnoded's; runs keep their files in `<state_dir>/init`.
    pub fn new(
        config: ProvisionConfig,
        state_dir: &Path,
        registrations: Arc<dyn RegistrationProbe>,
    ) -> Self {
        let dir = state_dir.join("init");
        let last = RunLog::replay(&dir.join("events.jsonl"));
        Provisioner {
            config,
            dir,
            current: Mutex::new(last),
            registrations,
        }
    }

    /// The current or last run.
    pub fn current(&self) -> Result<Arc<RunLog>, InitError> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(InitError::NoRun)
    }

    /// Starts a run in the background and returns its log.
    pub fn start(&self, request: &v1::InitRequest) -> Result<Arc<RunLog>, InitError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|log| !log.finished()) {
            return Err(InitError::Busy);
        }
        let inventory = ClusterInventory::load(Path::new(&request.inventory))
            .map_err(|e| InitError::Inventory(e.to_string()))?;
        let dir = self.config.playbooks.clone();
        let playbook_error = |message: String| InitError::Playbooks {
            dir: dir.clone(),
            message,
        };
        for wanted in &request.playbooks {
            if !self.config.run.contains(wanted) {
                return Err(playbook_error(format!(
                    "no playbook `{wanted}` in this head's run list ({})",
                    self.config.run.join(", ")
                )));
            }
        }
        let names: Vec<&str> = self
            .config
            .run
            .iter()
            .filter(|name| request.playbooks.is_empty() || request.playbooks.contains(name))
            .map(String::as_str)
            .collect();
        let playbooks =
            Playbook::load_named(&dir, &names).map_err(|e| playbook_error(e.to_string()))?;
        let templates_dir = dir.join("templates");
        let templates = if templates_dir.is_dir() {
            Templates::load(&templates_dir).map_err(|e| playbook_error(e.to_string()))?
        } else {
            Templates::empty()
        };
        let builtins = BuiltinRegistry::standard()
            .with(Arc::new(AgentRegister::new(self.registrations.clone())));
        let engine = Engine::new(templates, builtins)
            .with_parallelism(self.config.parallelism)
            .with_vars(self.config.vars.clone());
        engine
            .validate(&playbooks)
            .map_err(|e| playbook_error(e.to_string()))?;
        // The agent step installs a certificate per node from the cluster CA: make the missing ones.
        if let Some(tls_dir) = self.config.vars.get("tls_dir") {
            let ca =
                ClusterCa::ensure(Path::new(tls_dir)).map_err(|e| InitError::Tls(e.to_string()))?;
            for node in &inventory.nodes {
                ca.ensure_identity(node.name.as_str(), &[node.gige.address.to_string()])
                    .map_err(|e| InitError::Tls(e.to_string()))?;
            }
        }
        let connector = Arc::new(
            InventoryConnector::new(inventory.clone())
                .map_err(|e| InitError::Connect(e.to_string()))?,
        );
        let log_error = |path: &Path, source| InitError::Log {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| log_error(&self.dir, e))?;
        let events_path = self.dir.join("events.jsonl");
        let file = std::fs::File::create(&events_path).map_err(|e| log_error(&events_path, e))?;
        let log = RunLog::new(Some(file));
        let outline = Engine::outline(&playbooks, &inventory);
        log.push(v1::InitUpdate {
            body: Some(Body::OutlineJson(
                serde_json::to_string(&outline).unwrap_or_default(),
            )),
        });
        let options = RunOptions {
            mode: if request.plan {
                Mode::Plan
            } else {
                Mode::Apply
            },
            start: if !request.from_step.is_empty() {
                Start::From(request.from_step.clone())
            } else if request.resume {
                Start::Resume
            } else {
                Start::Fresh
            },
            state_file: Some(self.dir.join("state.json")),
        };
        tracing::info!(inventory = %request.inventory, plan = request.plan, resume = request.resume, from = %request.from_step, "provisioning run started");
        let run_log = log.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let forward_log = run_log.clone();
            let forward = async move {
                while let Some(event) = rx.recv().await {
                    forward_log.push(v1::InitUpdate {
                        body: Some(Body::EventJson(
                            serde_json::to_string(&event).unwrap_or_default(),
                        )),
                    });
                }
            };
            let run = engine.run(&playbooks, &inventory, connector, &options, tx);
            let (result, ()) = tokio::join!(run, forward);
            let end = match result {
                Ok(report) => {
                    // A plan goes on past failed checks (to show everything); they still fail it.
                    let failed: Vec<String> = report
                        .with_label("FAILED")
                        .iter()
                        .map(|r| format!("{} on {}", r.step, r.node))
                        .collect();
                    if failed.is_empty() {
                        finished(true, String::new(), report.changed_nothing())
                    } else {
                        finished(
                            false,
                            format!(
                                "checks failed: {}; fix what the table says, then run it again",
                                failed.join(", ")
                            ),
                            false,
                        )
                    }
                }
                Err(e) => finished(false, e.to_string(), false),
            };
            tracing::info!(
                ok = matches!(&end.body, Some(Body::Finished(f)) if f.ok),
                "provisioning run ended"
            );
            run_log.push(end);
        });
        *current = Some(log.clone());
        Ok(log)
    }
}

fn finished(ok: bool, error: String, changed_nothing: bool) -> v1::InitUpdate {
    v1::InitUpdate {
        body: Some(Body::Finished(v1::InitFinished {
            ok,
            error,
            changed_nothing,
        })),
    }
}

/// One update as a line of `events.jsonl`.
fn update_json(update: &v1::InitUpdate) -> String {
    let value = match &update.body {
        Some(Body::OutlineJson(o)) => serde_json::json!({ "outline": o }),
        Some(Body::EventJson(e)) => serde_json::json!({ "event": e }),
        Some(Body::Finished(f)) => serde_json::json!({
            "finished": { "ok": f.ok, "error": f.error, "changed_nothing": f.changed_nothing }
        }),
        None => serde_json::Value::Null,
    };
    value.to_string()
}

fn update_from_json(line: &str) -> Option<v1::InitUpdate> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let body = if let Some(o) = value.get("outline").and_then(|v| v.as_str()) {
        Body::OutlineJson(o.to_string())
    } else if let Some(e) = value.get("event").and_then(|v| v.as_str()) {
        Body::EventJson(e.to_string())
    } else {
        let f = value.get("finished")?;
        Body::Finished(v1::InitFinished {
            ok: f.get("ok")?.as_bool()?,
            error: f.get("error")?.as_str()?.to_string(),
            changed_nothing: f.get("changed_nothing")?.as_bool()?,
        })
    };
    Some(v1::InitUpdate { body: Some(body) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_survive_the_log_file_round_trip() {
        for update in [
            v1::InitUpdate {
                body: Some(Body::OutlineJson("{\"steps\":[]}".into())),
            },
            v1::InitUpdate {
                body: Some(Body::EventJson("{\"node\":\"node1\"}".into())),
            },
            finished(false, "step `os-check/os` failed on node3".into(), false),
        ] {
            assert_eq!(update_from_json(&update_json(&update)), Some(update));
        }
    }

    #[tokio::test]
    async fn a_run_cut_short_by_a_restart_replays_as_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"outline\":\"{}\"}\n{\"event\":\"{}\"}\n").unwrap();
        let log = RunLog::replay(&path).unwrap();
        assert!(log.finished());
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(log.follow(tx));
        let mut got = Vec::new();
        while let Some(Ok(u)) = rx.recv().await {
            got.push(u);
        }
        assert_eq!(got.len(), 3);
        let Some(Body::Finished(f)) = &got[2].body else {
            panic!("no end")
        };
        assert!(!f.ok && f.error.contains("--resume"), "{}", f.error);
    }
}
