//! Progress events: one stream per run, kept by the head daemon and rendered by the CLI.

use beowulf_types::NodeName;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Something that happened to one step on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionEvent {
    pub node: NodeName,
    /// `playbook/step`.
    pub step: String,
    pub phase: Phase,
    pub outcome: Outcome,
    /// Time since this (step, node) began.
    pub elapsed: Duration,
}

/// Where in a step the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connect,
    Check,
    Apply,
    Verify,
    /// The step ended on this node; `outcome` is final.
    Done,
}

impl Phase {
    /// Lower-case name (`apply`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Check => "check",
            Phase::Apply => "apply",
            Phase::Verify => "verify",
            Phase::Done => "done",
        }
    }
}

/// How a phase, or the whole step (phase `done`), turned out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Outcome {
    /// The phase began.
    Started,
    /// Already done: nothing changed.
    Satisfied,
    /// Applied and verified.
    Changed,
    /// Plan mode: would change, and what differs.
    WouldChange { detail: String },
    /// Failed, but the step degrades instead of stopping (a node without InfiniBand uses TCP).
    Degraded { reason: String },
    /// Failed: the node stops and the run stops after this step.
    Failed { error: String },
    /// Not run: not applicable here, done in an earlier run, or before `--from`.
    Skipped { reason: String },
}

impl Outcome {
    /// Whether this final outcome lets the node go on to its next step.
    pub fn is_success(&self) -> bool {
        !matches!(self, Outcome::Failed { .. } | Outcome::Started)
    }

    /// A one-word label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Started => "running",
            Outcome::Satisfied => "ok",
            Outcome::Changed => "changed",
            Outcome::WouldChange { .. } => "would change",
            Outcome::Degraded { .. } => "degraded",
            Outcome::Failed { .. } => "FAILED",
            Outcome::Skipped { .. } => "skipped",
        }
    }
}
