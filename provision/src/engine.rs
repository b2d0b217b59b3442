//! The step engine: runs playbooks' steps in order, nodes in parallel (bounded); per (step, node) it
//! checks, applies only when needed, and verifies. Results go to the event channel and the state file.
//!
//! A failure stops the failing node; the other nodes finish the current step, then the run stops with an
//! error naming every failed node, the step, the command and its stderr tail. `Plan` runs checks only.

use crate::builtin::BuiltinRegistry;
use crate::check::Check;
use crate::context::node_context;
use crate::error::{NodeFailure, RunError, StepError};
use crate::event::{Outcome, Phase, ProvisionEvent};
use crate::execute::{self, ActionCx};
use crate::inventory::ClusterInventory;
use crate::playbook::{OnFailure, Playbook, Scope, Step};
use crate::state::RunState;
use crate::template::Templates;
use crate::transport::{Connector, Transport};
use beowulf_types::NodeName;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc};

/// Nodes worked on at once. Each node costs the head one SSH connection and a task; the real limits are
/// the head's CPU for key exchange (russh ran 100 sessions on 2 cores in ~20 s, bound by sshd forking)
/// and the package mirror every node installs from at once. 32 keeps a 500-node cluster to ~16 waves
/// per step while keeping a single mirror and a small head responsive; raise it for bigger heads.
pub const DEFAULT_PARALLELISM: usize = 32;

/// Change things, or only look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Checks only: reports what would change and changes nothing.
    Plan,
}

/// Where a run begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Every step (each checks first, so done steps cost a check).
    Fresh,
    /// Skip (step, node) pairs the state file records as done.
    Resume,
    /// Start at this step (`playbook/step` or a unique step id); earlier steps are skipped.
    From(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub mode: Mode,
    pub start: Start,
    /// Where results persist; `None` keeps no state (tests, one-off checks).
    pub state_file: Option<PathBuf>,
}

/// One (step, node) result of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub step: String,
    pub node: NodeName,
    pub outcome: Outcome,
}

/// What a finished run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    pub results: Vec<StepResult>,
}

impl RunReport {
    /// Whether nothing changed (a second run on a provisioned cluster).
    pub fn changed_nothing(&self) -> bool {
        self.results
            .iter()
            .all(|r| !matches!(r.outcome, Outcome::Changed | Outcome::WouldChange { .. }))
    }

    /// The results with the given label (`"changed"`, `"degraded"` ...).
    pub fn with_label(&self, label: &str) -> Vec<&StepResult> {
        self.results
            .iter()
            .filter(|r| r.outcome.label() == label)
            .collect()
    }
}

/// The steps and nodes of a run, for progress bars and tables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outline {
    /// `(playbook/step, title, scope)` in run order.
    pub steps: Vec<(String, String, Scope)>,
    /// The head first, then compute nodes in inventory order.
    pub head: NodeName,
    pub nodes: Vec<NodeName>,
}

impl Outline {
    /// How many steps `node` takes part in.
    pub fn steps_for(&self, node: &NodeName) -> usize {
        let scope = if *node == self.head {
            Scope::Head
        } else {
            Scope::Nodes
        };
        self.steps.iter().filter(|(_, _, s)| *s == scope).count()
    }
}

#[derive(Debug)]
struct Inner {
    templates: Templates,
    builtins: BuiltinRegistry,
    parallelism: usize,
    vars: BTreeMap<String, String>,
}

/// Runs playbooks.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

type Connections = Arc<Mutex<BTreeMap<NodeName, Arc<dyn Transport>>>>;

/// Everything one (step, node) task needs, owned.
struct Job {
    inner: Arc<Inner>,
    inventory: Arc<ClusterInventory>,
    connector: Arc<dyn Connector>,
    connections: Connections,
    playbook_when: Option<String>,
    step: Arc<Step>,
    key: String,
    node: NodeName,
    mode: Mode,
    events: mpsc::UnboundedSender<ProvisionEvent>,
}

impl Engine {
    /// An engine over these templates and builtins, with [`DEFAULT_PARALLELISM`] and no run variables.
    pub fn new(templates: Templates, builtins: BuiltinRegistry) -> Self {
        Self {
            inner: Arc::new(Inner {
                templates,
                builtins,
                parallelism: DEFAULT_PARALLELISM,
                vars: BTreeMap::new(),
            }),
        }
    }

    /// Works on at most `n` nodes at once (at least 1).
    pub fn with_parallelism(self, n: usize) -> Self {
        self.map(|i| i.parallelism = n.max(1))
    }

    /// Run variables, visible to templates as `vars.NAME` (paths of the agent binary, certificates ...).
    pub fn with_vars(self, vars: BTreeMap<String, String>) -> Self {
        self.map(|i| i.vars = vars)
    }

    fn map(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            templates: Templates::empty(),
            builtins: arc.builtins.clone(),
            parallelism: arc.parallelism,
            vars: arc.vars.clone(),
        });
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Checks that every template a step names exists, every builtin is registered, and every template
    /// string and `when` expression parses.
    pub fn validate(&self, playbooks: &[Playbook]) -> Result<(), RunError> {
        let t = &self.inner.templates;
        let mut problems = Vec::new();
        for p in playbooks {
            let file = p.file.display();
            if let Some(w) = &p.when
                && let Err(e) = t.check_expression(w)
            {
                problems.push(format!("{file}: when `{w}`: {e}"));
            }
            for s in &p.steps {
                let at = format!("{file}:{}: step `{}`", s.line, s.id);
                if let Some(w) = &s.when
                    && let Err(e) = t.check_expression(w)
                {
                    problems.push(format!("{at}: when `{w}`: {e}"));
                }
                for a in s.actions() {
                    if let Some(name) = a.template()
                        && !t.has(name)
                    {
                        problems.push(format!(
                            "{at}: template `{name}` does not exist in the templates directory"
                        ));
                    }
                    if let Some(name) = a.builtin()
                        && !self.inner.builtins.contains(name)
                    {
                        problems.push(format!("{at}: no builtin called `{name}`"));
                    }
                    for s in a.template_strings() {
                        if let Err(e) = t.check_syntax(s) {
                            problems.push(format!("{at}: `{s}`: {e}"));
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RunError::Invalid { problems })
        }
    }

    /// The steps and nodes a run over `playbooks` touches.
    pub fn outline(playbooks: &[Playbook], inventory: &ClusterInventory) -> Outline {
        Outline {
            steps: playbooks
                .iter()
                .flat_map(|p| {
                    p.steps
                        .iter()
                        .map(move |s| (format!("{}/{}", p.name, s.id), s.title.clone(), s.scope))
                })
                .collect(),
            head: inventory.head.name.clone(),
            nodes: inventory.nodes.iter().map(|n| n.name.clone()).collect(),
        }
    }

    /// Runs the playbooks on the inventory's nodes. Events go to `events` as they happen.
    pub async fn run(
        &self,
        playbooks: &[Playbook],
        inventory: &ClusterInventory,
        connector: Arc<dyn Connector>,
        options: &RunOptions,
        events: mpsc::UnboundedSender<ProvisionEvent>,
    ) -> Result<RunReport, RunError> {
        self.validate(playbooks)?;
        let mut state = match &options.state_file {
            Some(path) => RunState::load(path)?,
            None => RunState::default(),
        };
        let steps: Vec<(String, Option<String>, Arc<Step>)> = playbooks
            .iter()
            .flat_map(|p| {
                p.steps.iter().map(move |s| {
                    (
                        format!("{}/{}", p.name, s.id),
                        p.when.clone(),
                        Arc::new(s.clone()),
                    )
                })
            })
            .collect();
        let first = match &options.start {
            Start::From(name) => find_step(&steps, name)?,
            _ => 0,
        };
        let inventory = Arc::new(inventory.clone());
        let connections: Connections = Arc::default();
        let semaphore = Arc::new(Semaphore::new(self.inner.parallelism));
        let mut stopped: BTreeSet<NodeName> = BTreeSet::new();
        let mut report = RunReport::default();
        for (index, (key, playbook_when, step)) in steps.iter().enumerate() {
            let targets: Vec<NodeName> = match step.scope {
                Scope::Head => vec![inventory.head.name.clone()],
                Scope::Nodes => inventory.nodes.iter().map(|n| n.name.clone()).collect(),
            };
            let mut tasks = tokio::task::JoinSet::new();
            let mut outcomes: BTreeMap<NodeName, Outcome> = BTreeMap::new();
            for node in targets.iter().cloned() {
                let skip = if index < first {
                    Some(format!("before --from {}", steps[first].0))
                } else if stopped.contains(&node) {
                    Some("an earlier step failed on this node".to_string())
                } else if options.start == Start::Resume && state.is_done(key, &node) {
                    Some("done in an earlier run".to_string())
                } else {
                    None
                };
                if let Some(reason) = skip {
                    let outcome = Outcome::Skipped { reason };
                    let _ = events.send(event(
                        &node,
                        key,
                        Phase::Done,
                        outcome.clone(),
                        Instant::now(),
                    ));
                    outcomes.insert(node, outcome);
                    continue;
                }
                let job = Job {
                    inner: self.inner.clone(),
                    inventory: inventory.clone(),
                    connector: connector.clone(),
                    connections: connections.clone(),
                    playbook_when: playbook_when.clone(),
                    step: step.clone(),
                    key: key.clone(),
                    node,
                    mode: options.mode,
                    events: events.clone(),
                };
                let semaphore = semaphore.clone();
                tasks.spawn(async move {
                    let _permit = semaphore.acquire_owned().await;
                    let node = job.node.clone();
                    (node, job.run().await)
                });
            }
            let mut failures = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (node, (outcome, failure)) = joined.unwrap_or_else(|e| {
                    (
                        NodeName::new("?"),
                        (
                            Outcome::Failed {
                                error: format!("internal error: {e}"),
                            },
                            None,
                        ),
                    )
                });
                failures.extend(failure);
                outcomes.insert(node, outcome);
            }
            let now = unix_ms();
            for node in &targets {
                let Some(outcome) = outcomes.remove(node) else {
                    continue;
                };
                if options.mode == Mode::Apply && !matches!(outcome, Outcome::Skipped { .. }) {
                    state.record(key, node, outcome.clone(), now);
                }
                if matches!(outcome, Outcome::Failed { .. }) {
                    stopped.insert(node.clone());
                }
                report.results.push(StepResult {
                    step: key.clone(),
                    node: node.clone(),
                    outcome,
                });
            }
            if options.mode == Mode::Apply
                && let Some(path) = &options.state_file
            {
                state.save(path)?;
            }
            if !failures.is_empty() && options.mode == Mode::Apply {
                failures.sort_by(|a: &NodeFailure, b| a.node.cmp(&b.node));
                return Err(RunError::StepFailed {
                    step: key.clone(),
                    failures,
                });
            }
        }
        Ok(report)
    }
}

fn find_step(steps: &[(String, Option<String>, Arc<Step>)], name: &str) -> Result<usize, RunError> {
    if let Some(i) = steps.iter().position(|(key, _, _)| key == name) {
        return Ok(i);
    }
    let matches: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, (_, _, s))| s.id == name)
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(RunError::UnknownStep {
            step: name.to_string(),
        }),
        many => Err(RunError::AmbiguousStep {
            step: name.to_string(),
            candidates: many.iter().map(|i| steps[*i].0.clone()).collect(),
        }),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn event(
    node: &NodeName,
    step: &str,
    phase: Phase,
    outcome: Outcome,
    started: Instant,
) -> ProvisionEvent {
    ProvisionEvent {
        node: node.clone(),
        step: step.to_string(),
        phase,
        outcome,
        elapsed: started.elapsed(),
    }
}

impl Job {
    fn emit(&self, phase: Phase, outcome: Outcome, started: Instant) {
        let _ = self
            .events
            .send(event(&self.node, &self.key, phase, outcome, started));
    }

    /// check → apply → verify on one node; the final outcome and, if it failed, the failure.
    async fn run(self) -> (Outcome, Option<NodeFailure>) {
        let started = Instant::now();
        let (outcome, failure) = match self.steps(started).await {
            Ok(outcome) => (outcome, None),
            Err((phase, error)) => {
                let failure = NodeFailure {
                    node: self.node.clone(),
                    step: self.key.clone(),
                    phase: phase.as_str().to_string(),
                    error: error.to_string(),
                };
                match self.step.on_failure {
                    OnFailure::Degrade => (
                        Outcome::Degraded {
                            reason: failure.to_string(),
                        },
                        None,
                    ),
                    OnFailure::Stop => (
                        Outcome::Failed {
                            error: failure.to_string(),
                        },
                        Some(failure),
                    ),
                }
            }
        };
        self.emit(Phase::Done, outcome.clone(), started);
        (outcome, failure)
    }

    async fn steps(&self, started: Instant) -> Result<Outcome, (Phase, StepError)> {
        let inner = &self.inner;
        let context = node_context(&self.inventory, &self.node, &inner.vars);
        for cond in [&self.playbook_when, &self.step.when].into_iter().flatten() {
            match inner.templates.eval_when(cond, &context) {
                Ok(true) => {}
                Ok(false) => {
                    return Ok(Outcome::Skipped {
                        reason: format!("not applicable here ({cond})"),
                    });
                }
                Err(e) => {
                    return Err((
                        Phase::Check,
                        StepError::Template(format!("when `{cond}`: {e}")),
                    ));
                }
            }
        }
        let transport = self
            .transport(started)
            .await
            .map_err(|e| (Phase::Connect, e))?;
        let cx = ActionCx {
            node: &self.node,
            transport: transport.as_ref(),
            templates: &inner.templates,
            context: &context,
            builtins: &inner.builtins,
            inventory: &self.inventory,
            vars: &inner.vars,
            peers: self,
        };
        let timeout = self.step.timeout;
        let timed = |phase: Phase| {
            move |_| {
                (
                    phase,
                    StepError::Timeout {
                        seconds: timeout.as_secs(),
                    },
                )
            }
        };

        self.emit(Phase::Check, Outcome::Started, started);
        let unsatisfied = tokio::time::timeout(timeout, check_all(&self.step.check, &cx))
            .await
            .map_err(timed(Phase::Check))?
            .map_err(|e| (Phase::Check, e))?;
        let Some(detail) = unsatisfied else {
            return Ok(Outcome::Satisfied);
        };
        if self.mode == Mode::Plan {
            return Ok(Outcome::WouldChange { detail });
        }

        self.emit(Phase::Apply, Outcome::Started, started);
        tokio::time::timeout(timeout, async {
            for action in self.step.apply_actions() {
                execute::apply(action, &cx).await?;
            }
            Ok(())
        })
        .await
        .map_err(timed(Phase::Apply))?
        .map_err(|e| (Phase::Apply, e))?;

        self.emit(Phase::Verify, Outcome::Started, started);
        let still = tokio::time::timeout(timeout, check_all(self.step.verify_actions(), &cx))
            .await
            .map_err(timed(Phase::Verify))?
            .map_err(|e| (Phase::Verify, e))?;
        match still {
            None => Ok(Outcome::Changed),
            Some(detail) => Err((
                Phase::Verify,
                StepError::failed(
                    format!("applied, but the check still fails: {detail}"),
                    "look at the node; the step's apply does not achieve its check",
                ),
            )),
        }
    }

    /// The node's transport, connecting on first use.
    async fn transport(&self, started: Instant) -> Result<Arc<dyn Transport>, StepError> {
        if let Some(t) = self.cached(&self.node) {
            return Ok(t);
        }
        self.emit(Phase::Connect, Outcome::Started, started);
        self.connect(&self.node).await
    }

    fn cached(&self, node: &NodeName) -> Option<Arc<dyn Transport>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .cloned()
    }

    async fn connect(&self, node: &NodeName) -> Result<Arc<dyn Transport>, StepError> {
        let t = self.connector.connect(node).await?;
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.clone(), t.clone());
        Ok(t)
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("node", &self.node)
            .field("step", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl crate::builtin::Peers for Job {
    async fn transport(&self, node: &NodeName) -> Result<Arc<dyn Transport>, StepError> {
        match self.cached(node) {
            Some(t) => Ok(t),
            None => self.connect(node).await,
        }
    }
}

/// Checks actions in order; the first unsatisfied one's detail, or `None` when all are satisfied.
async fn check_all(
    actions: &[crate::action::Action],
    cx: &ActionCx<'_>,
) -> Result<Option<String>, StepError> {
    for action in actions {
        if let Check::Unsatisfied(detail) = execute::check(action, cx).await? {
            return Ok(Some(detail));
        }
    }
    Ok(None)
}
