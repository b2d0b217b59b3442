//! Errors of running steps: what failed, on which node, the command and its stderr, and what to do.

use crate::transport::TransportError;
use beowulf_types::NodeName;
use std::path::PathBuf;

/// How much of a failed command's stderr an error quotes: enough for the real message (apt, mount and
/// systemd put it in the last lines), little enough to keep a table of 500 nodes readable.
pub const STDERR_TAIL_LINES: usize = 6;

/// One action that failed on one node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error(
        "`{command}` exited {status}{}: {tail}; {hint}",
        expected_note(expected)
    )]
    Command {
        command: String,
        status: i32,
        expected: Vec<i32>,
        /// The last lines of stderr (or stdout when stderr is empty).
        tail: String,
        hint: String,
    },
    #[error("{message}; {hint}")]
    Failed { message: String, hint: String },
    #[error("template: {0}; fix the playbook or its template")]
    Template(String),
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error(
        "took longer than {seconds} s; look at the node for a hung command, or raise the step's timeout_s"
    )]
    Timeout { seconds: u64 },
}

fn expected_note(expected: &[i32]) -> String {
    match expected {
        [0] | [] => String::new(),
        list => format!(
            " (expected {})",
            list.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

impl StepError {
    /// A failed command, with the tail of its output.
    pub fn command(
        command: &str,
        out: &crate::transport::ExecOutput,
        expected: &[i32],
        hint: &str,
    ) -> Self {
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        StepError::Command {
            command: command.to_string(),
            status: out.status,
            expected: expected.to_vec(),
            tail: tail(text),
            hint: hint.to_string(),
        }
    }

    /// A failure that is not one command's.
    pub fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        StepError::Failed {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// The last [`STDERR_TAIL_LINES`] non-empty lines of `text`, joined with ` | `.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    let t = lines[start..].join(" | ");
    if t.is_empty() {
        "(no output)".into()
    } else {
        t
    }
}

/// One node's failure of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: NodeName,
    /// `playbook/step`.
    pub step: String,
    /// `check`, `apply` or `verify`.
    pub phase: String,
    pub error: String,
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of step `{}` failed: {}",
            self.node, self.phase, self.step, self.error
        )
    }
}

/// A provisioning run that could not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("step `{step}` failed on {}:\n{}\nfix the cause, then run `cluster init --resume` (completed steps are skipped)", failures.iter().map(|f| f.node.as_str()).collect::<Vec<_>>().join(", "), failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"))]
    StepFailed {
        step: String,
        failures: Vec<NodeFailure>,
    },
    #[error(
        "no step `{step}` in the playbooks of this run (steps are named `playbook/step` or by a unique step id); `cluster init --plan` lists them"
    )]
    UnknownStep { step: String },
    #[error("step `{step}` is ambiguous: it is in {}; name it as `playbook/step`", candidates.join(", "))]
    AmbiguousStep {
        step: String,
        candidates: Vec<String>,
    },
    #[error("the playbooks are not runnable:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<String> },
    #[error(
        "state file {path}: {reason}; delete it to start afresh (every step checks before it changes anything)"
    )]
    State { path: PathBuf, reason: String },
}
