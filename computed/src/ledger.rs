//! The agent's ledger: every job run it was told to run and how its tasks ended, persisted before
//! the agent acts on it.
//!
//! On disk it is a snapshot (`ledger.json`, replaced by write-to-temporary and rename) and a journal
//! (`ledger.journal`) of the changes since, one JSON line each, appended with one `write(2)`:
//!
//! ```text
//!   save     diff against what the files hold ──▶ {"put":run} / {"remove":key} / {"generation":n}
//!            lines ──▶ one append to the journal
//!            (journal over its limit: new snapshot, rename, journal emptied)
//!   open     snapshot ──▶ apply the journal's whole lines in order ──▶ new snapshot, journal emptied
//! ```
//!
//! Why a journal: a rename per change made ext4 write the new file's blocks at once (its
//! replace-via-rename heuristic), and serialising every run per change grew with the runs held;
//! together a third of the agent's CPU time in a run of short jobs (issue 7). An append of one run's
//! line costs neither.
//!
//! A crash of the agent during an append leaves at most a torn last line, which `open` drops: that
//! change was never acted on. A crash between a snapshot's rename and the journal's emptying
//! replays the whole journal over the snapshot it led to, which changes nothing (each line sets a
//! run, or the generation, to its value at that point).
//!
//! The ledger is written without fsync on purpose: it exists so that a restarted *agent* finds the
//! runs whose processes may still be alive, and a write survives the agent's crash (the page cache
//! is the kernel's). A crash of the *machine* ends every process the ledger could name; the runs it
//! lists as active are then reported lost, and cgroups the ledger does not name are killed at start
//! (`leftover_jobs`). An fsync per change cost 1–3 ms of the agent's loop per job start and end, and
//! queued behind the head's own store flushes on the same disk (issue 7).

use beowulf_types::{Generation, RunKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The ledger is the agent's own record of the runs on its node (jobs, ranks, exit codes): root's alone.
const PRIVATE_FILE_MODE: u32 = 0o600;

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
    /// The OOM killer ended a process of the run here (read from its cgroup when it finished).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_memory: bool,
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

/// The journal is folded into a new snapshot when it has this many lines more than the runs held
/// (four per run: started, a task ended, finished, forgotten): a few hundred KiB at most, read once
/// at start.
const JOURNAL_SLACK_LINES: usize = 1024;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JournalLine {
    Generation(Generation),
    Put(RunEntry),
    Remove(RunKey),
}

#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    journal_path: PathBuf,
    /// Opened with `O_APPEND`.
    journal: std::fs::File,
    /// The journal's length in bytes and lines.
    journal_bytes: u64,
    journal_lines: usize,
    pub data: LedgerData,
    /// What the files hold: `data` as of the last save.
    saved: LedgerData,
}

impl Ledger {
    /// Loads the ledger at `path` (and its journal), or starts an empty one if there is none.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let read = |path: &Path| match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Read {
                path: path.to_path_buf(),
                source,
            }),
        };
        let corrupt = |source| LedgerError::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        let mut data = match read(path)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(corrupt)?,
            None => LedgerData::default(),
        };
        let journal_path = path.with_extension("journal");
        if let Some(bytes) = read(&journal_path)? {
            replay(&mut data, &bytes).map_err(|source| LedgerError::Corrupt {
                path: journal_path.clone(),
                source,
            })?;
        }
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&journal_path)
            .and_then(|file| {
                // A journal an earlier version made readable to everyone is closed now.
                file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
                Ok(file)
            })
            .map_err(|source| LedgerError::Write {
                path: journal_path.clone(),
                source,
            })?;
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            journal_path,
            journal,
            journal_bytes: 0,
            journal_lines: 0,
            saved: data.clone(),
            data,
        };
        ledger.write_snapshot()?;
        Ok(ledger)
    }

    /// Persists what changed in `data` since the last save: one append to the journal, or a new
    /// snapshot when the journal has grown long.
    pub fn save(&mut self) -> Result<(), LedgerError> {
        let mut lines = Vec::new();
        if self.data.generation != self.saved.generation {
            lines.push(JournalLine::Generation(self.data.generation));
        }
        for (key, entry) in &self.data.runs {
            if self.saved.runs.get(key) != Some(entry) {
                lines.push(JournalLine::Put(entry.clone()));
            }
        }
        for key in self.saved.runs.keys() {
            if !self.data.runs.contains_key(key) {
                lines.push(JournalLine::Remove(*key));
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        if self.journal_lines + lines.len() > self.data.runs.len() * 4 + JOURNAL_SLACK_LINES {
            return self.write_snapshot();
        }
        let mut bytes = Vec::new();
        for line in &lines {
            serde_json::to_writer(&mut bytes, line).expect("ledger lines serialize");
            bytes.push(b'\n');
        }
        if let Err(source) = self.journal.write_all(&bytes) {
            // A partial append (a full disk) must not stay: the next line would join it.
            let _ = self.journal.set_len(self.journal_bytes);
            return Err(LedgerError::Write {
                path: self.journal_path.clone(),
                source,
            });
        }
        self.journal_bytes += bytes.len() as u64;
        self.journal_lines += lines.len();
        for line in lines {
            apply(&mut self.saved, line);
        }
        Ok(())
    }

    /// Replaces the snapshot with the current data (atomically for a crash of this process), then
    /// empties the journal.
    fn write_snapshot(&mut self) -> Result<(), LedgerError> {
        let write = || -> std::io::Result<()> {
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(PRIVATE_FILE_MODE)
                .open(&tmp)?;
            file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
            file.write_all(&serde_json::to_vec(&self.data).expect("ledger serializes"))?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|source| LedgerError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.saved = self.data.clone();
        self.journal
            .set_len(0)
            .map_err(|source| LedgerError::Write {
                path: self.journal_path.clone(),
                source,
            })?;
        self.journal_bytes = 0;
        self.journal_lines = 0;
        Ok(())
    }
}

/// Applies the journal's whole lines to `data`; a last line without its newline (an append cut
/// short by a crash) is dropped.
fn replay(data: &mut LedgerData, bytes: &[u8]) -> Result<(), serde_json::Error> {
    let whole = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |end| &bytes[..end]);
    if whole.len() + 1 < bytes.len() {
        tracing::warn!(
            bytes = bytes.len() - whole.len() - 1,
            "the agent's ledger journal ends with a torn line; ignoring it"
        );
    }
    for line in whole.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        apply(data, serde_json::from_slice(line)?);
    }
    Ok(())
}

fn apply(data: &mut LedgerData, line: JournalLine) {
    match line {
        JournalLine::Generation(generation) => data.generation = generation,
        JournalLine::Put(entry) => {
            data.runs.insert(entry.key, entry);
        }
        JournalLine::Remove(key) => {
            data.runs.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beowulf_types::JobId;

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
            out_of_memory: false,
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

    fn run(job: u64, codes: &[Option<i32>]) -> RunEntry {
        let mut e = entry(codes);
        e.key.job = JobId(job);
        e
    }

    fn journal_of(path: &Path) -> String {
        std::fs::read_to_string(path.with_extension("journal")).unwrap()
    }

    #[test]
    fn changes_are_appended_to_the_journal_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.data.generation = Generation(7);
        ledger.data.runs.insert(run(1, &[]).key, run(1, &[None]));
        ledger
            .data
            .runs
            .insert(run(2, &[]).key, run(2, &[None, None]));
        ledger.save().unwrap();
        // A task ended, a run forgotten: one line each, and nothing for what did not change.
        ledger
            .data
            .runs
            .insert(run(2, &[]).key, run(2, &[Some(0), None]));
        ledger.data.runs.remove(&run(1, &[]).key);
        ledger.save().unwrap();
        ledger.save().unwrap();
        let journal = journal_of(&path);
        assert_eq!(journal.lines().count(), 5, "{journal}");
        assert!(
            journal.lines().nth(3).unwrap().starts_with("{\"put\""),
            "{journal}"
        );
        assert!(
            journal.ends_with("{\"remove\":{\"job\":1,\"run\":1}}\n"),
            "{journal}"
        );

        let again = Ledger::open(&path).unwrap();
        assert_eq!(again.data, ledger.data);
        assert_eq!(
            journal_of(&path),
            "",
            "opening folds the journal into the snapshot"
        );
        assert_eq!(Ledger::open(&path).unwrap().data, ledger.data);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.data.runs.insert(run(1, &[]).key, run(1, &[None]));
        ledger.save().unwrap();
        let before = ledger.data.clone();
        // A crash in the middle of the next append.
        let journal = path.with_extension("journal");
        let mut text = journal_of(&path);
        text.push_str("{\"put\":{\"key\":{\"job\":2,");
        std::fs::write(&journal, &text).unwrap();
        assert_eq!(Ledger::open(&path).unwrap().data, before);

        std::fs::write(&journal, "not json\n{\"generation\":3}\n").unwrap();
        let err = Ledger::open(&path).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("ledger.journal"), "{err}");
    }

    #[test]
    fn a_long_journal_is_folded_into_a_new_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        for job in 1..=(JOURNAL_SLACK_LINES as u64 + 10) {
            ledger
                .data
                .runs
                .insert(run(job, &[]).key, run(job, &[None]));
            ledger.save().unwrap();
            ledger.data.runs.remove(&run(job, &[]).key);
            ledger.save().unwrap();
        }
        ledger.data.generation = Generation(9);
        ledger.save().unwrap();
        let lines = journal_of(&path).lines().count();
        assert!(lines < JOURNAL_SLACK_LINES, "{lines} lines");
        assert_eq!(Ledger::open(&path).unwrap().data, ledger.data);
    }

    #[test]
    fn a_crash_between_the_snapshot_and_emptying_the_journal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.data.runs.insert(run(1, &[]).key, run(1, &[None]));
        ledger.save().unwrap();
        ledger.data.runs.insert(run(1, &[]).key, run(1, &[Some(3)]));
        ledger.data.runs.insert(run(2, &[]).key, run(2, &[None]));
        ledger.save().unwrap();
        ledger.data.runs.remove(&run(2, &[]).key);
        ledger.save().unwrap();
        let journal = journal_of(&path);
        // The snapshot of the final state, the journal not yet emptied.
        std::fs::write(&path, serde_json::to_vec(&ledger.data).unwrap()).unwrap();
        std::fs::write(path.with_extension("journal"), journal).unwrap();
        assert_eq!(Ledger::open(&path).unwrap().data, ledger.data);
    }
}
