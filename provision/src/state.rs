//! The run's state file: each (step, node) result, so `--resume` skips what is done. JSON, written
//! atomically (temp file, fsync, rename) at the end of every step, so a crash loses at most the step that
//! was running, which its check makes harmless to redo.

use crate::error::RunError;
use crate::event::Outcome;
use beowulf_types::NodeName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Format version: bump when the layout changes incompatibly.
const STATE_VERSION: u32 = 1;

/// Results by step key (`playbook/step`) and node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub version: u32,
    pub results: BTreeMap<String, BTreeMap<NodeName, StepRecord>>,
}

/// One (step, node) result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub outcome: Outcome,
    /// Wall-clock time of the result, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl RunState {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let err = |reason: String| RunError::State {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: STATE_VERSION,
                ..Self::default()
            }),
            Err(e) => Err(err(format!("cannot read it: {e}"))),
            Ok(bytes) => {
                let state: Self = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("not a state file: {e}")))?;
                if state.version != STATE_VERSION {
                    return Err(err(format!(
                        "version {} is not {STATE_VERSION}",
                        state.version
                    )));
                }
                Ok(state)
            }
        }
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> Result<(), RunError> {
        let err = |e: std::io::Error| RunError::State {
            path: path.to_path_buf(),
            reason: format!("cannot write it: {e}"),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }

    /// Records a result.
    pub fn record(&mut self, step: &str, node: &NodeName, outcome: Outcome, at_unix_ms: u64) {
        self.version = STATE_VERSION;
        self.results.entry(step.to_string()).or_default().insert(
            node.clone(),
            StepRecord {
                outcome,
                at_unix_ms,
            },
        );
    }

    /// Whether `step` ended successfully on `node` in an earlier run.
    pub fn is_done(&self, step: &str, node: &NodeName) -> bool {
        self.results
            .get(step)
            .and_then(|nodes| nodes.get(node))
            .is_some_and(|r| r.outcome.is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_knows_what_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let (node1, node2) = (NodeName::new("node1"), NodeName::new("node2"));
        let mut s = RunState::load(&path).unwrap();
        s.record("nfs/mount", &node1, Outcome::Changed, 1);
        s.record(
            "nfs/mount",
            &node2,
            Outcome::Failed { error: "x".into() },
            2,
        );
        s.save(&path).unwrap();
        let back = RunState::load(&path).unwrap();
        assert_eq!(back, s);
        assert!(back.is_done("nfs/mount", &node1));
        assert!(!back.is_done("nfs/mount", &node2));
        assert!(!back.is_done("nfs/other", &node1));
        std::fs::write(&path, "nonsense").unwrap();
        assert!(
            RunState::load(&path)
                .unwrap_err()
                .to_string()
                .contains("delete it")
        );
    }

    #[test]
    fn node_names_are_plain_keys_in_the_file() {
        let mut s = RunState::default();
        s.record("nfs/mount", &NodeName::new("node1"), Outcome::Changed, 7);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"version":1,"results":{"nfs/mount":{"node1":{"outcome":{"kind":"changed"},"at_unix_ms":7}}}}"#
        );
    }
}
