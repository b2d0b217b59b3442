//! The agent's ledger: every job run it was told to run and how its tasks ended, persisted (write to
//! a temporary file, rename) before the agent acts on it.
//!
//! The ledger is written without fsync on purpose: it exists so that a restarted *agent* finds the
//! runs whose processes may still be alive, and a rename survives the agent's crash (the page cache
//! is the kernel's). A crash of the *machine* ends every process the ledger could name; the runs it
//! lists as active are then reported lost, and cgroups the ledger does not name are killed at start
//! (`leftover_jobs`). An fsync per change cost 1–3 ms of the agent's loop per job start and end, and
//! queued behind the head's own store flushes on the same disk (issue 7).

use beowulf_types::{Generation, JobId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A job run on this node: `(job, run)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    pub job: JobId,
    pub run: u32,
}

/// What the agent knows of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntry {
    pub key: RunKey,
    /// Rank → how it ended (`None` while it runs).
    pub tasks: BTreeMap<u32, Option<TaskEnd>>,
    /// Set when the agent could not follow the run (it restarted while tasks ran): they were killed.
    pub lost: bool,
    /// The rank whose failure ended the run here (an MPI rank that exited non-zero or aborted,
    /// after which the agent killed the others): its end is the run's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnd {
    pub code: i32,
    pub detail: String,
}

impl RunEntry {
    pub fn finished(&self) -> bool {
        self.lost || self.tasks.values().all(Option::is_some)
    }

    /// The run's result on this node: the end of the rank that caused it to stop, else the
    /// highest task exit code, with its detail.
    pub fn result(&self) -> (i32, String) {
        if self.lost {
            return (
                -1,
                "the agent restarted while the run was active; its tasks were killed".into(),
            );
        }
        let cause = self.cause.and_then(|rank| self.tasks.get_key_value(&rank));
        self.tasks
            .iter()
            .filter(|(rank, _)| cause.is_none_or(|(cause, _)| cause == *rank))
            .filter_map(|(rank, end)| end.as_ref().map(|e| (e.code, rank, &e.detail)))
            .max_by_key(|(code, rank, _)| (*code, std::cmp::Reverse(**rank)))
            .map(|(code, rank, detail)| {
                let detail = if code == 0 {
                    String::new()
                } else {
                    format!("rank {rank}: {detail}")
                };
                (code, detail)
            })
            .unwrap_or((0, String::new()))
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerData {
    /// Newest desired-state generation acted on; older ones are ignored.
    pub generation: Generation,
    #[serde(with = "runs_as_list")]
    pub runs: BTreeMap<RunKey, RunEntry>,
}

/// JSON maps need string keys: the runs are stored as a list (each entry carries its key).
mod runs_as_list {
    use super::{RunEntry, RunKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        runs: &BTreeMap<RunKey, RunEntry>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        runs.values().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<RunKey, RunEntry>, D::Error> {
        let list = Vec::<RunEntry>::deserialize(d)?;
        Ok(list.into_iter().map(|e| (e.key, e)).collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot write the ledger {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the ledger {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ledger {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    pub data: LedgerData,
}

impl Ledger {
    /// Loads the ledger at `path`, or starts an empty one if there is none.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let data = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| LedgerError::Corrupt {
                path: path.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => LedgerData::default(),
            Err(source) => {
                return Err(LedgerError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Ledger {
            path: path.to_path_buf(),
            data,
        })
    }

    /// Replaces the ledger file with the current data, atomically for a crash of this process.
    pub fn save(&self) -> Result<(), LedgerError> {
        let write = || -> std::io::Result<()> {
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&self.data).expect("ledger serializes"))?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| LedgerError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(codes: &[Option<i32>]) -> RunEntry {
        RunEntry {
            key: RunKey {
                job: JobId(1),
                run: 1,
            },
            tasks: codes
                .iter()
                .enumerate()
                .map(|(rank, code)| {
                    (
                        rank as u32,
                        code.map(|c| TaskEnd {
                            code: c,
                            detail: format!("exited with code {c}"),
                        }),
                    )
                })
                .collect(),
            lost: false,
            cause: None,
        }
    }

    #[test]
    fn a_run_finishes_when_every_task_ended_and_reports_the_worst_code() {
        assert!(!entry(&[Some(0), None]).finished());
        let done = entry(&[Some(0), Some(3), Some(1)]);
        assert!(done.finished());
        assert_eq!(done.result(), (3, "rank 1: exited with code 3".into()));
        assert_eq!(entry(&[Some(0), Some(0)]).result(), (0, String::new()));
    }

    #[test]
    fn the_rank_that_caused_the_end_gives_the_result_not_the_ranks_killed_after_it() {
        let mut run = entry(&[Some(137), Some(7), Some(137)]);
        assert_eq!(run.result().0, 137);
        run.cause = Some(1);
        assert_eq!(run.result(), (7, "rank 1: exited with code 7".into()));
    }

    #[test]
    fn the_ledger_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.data.generation = Generation(7);
        let e = entry(&[None]);
        ledger.data.runs.insert(e.key, e.clone());
        ledger.save().unwrap();
        let again = Ledger::open(&path).unwrap();
        assert_eq!(again.data, ledger.data);
    }
}
