//! The reconciler's decisions, as a pure function: desired runs vs. the ledger → actions.

use crate::ledger::LedgerData;
use beowulf_types::RunKey;
use std::collections::BTreeSet;

/// One thing the agent must do to move toward its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// A desired run the ledger has never seen: record it, then start its tasks.
    Start(RunKey),
    /// A run no longer desired whose tasks still run: kill them.
    Kill(RunKey),
    /// A run no longer desired whose tasks all ended: release its cgroup and forget it.
    Forget(RunKey),
}

/// Decides what to do. A run that is desired and already in the ledger is left alone, finished or
/// not: a finished run stays until the head stops desiring it, so its result can be re-reported
/// after a reconnect, and it is never started twice.
pub fn reconcile(desired: &BTreeSet<RunKey>, ledger: &LedgerData) -> Vec<Action> {
    let mut actions: Vec<Action> = desired
        .iter()
        .filter(|key| !ledger.runs.contains_key(key))
        .map(|key| Action::Start(*key))
        .collect();
    for (key, entry) in &ledger.runs {
        if desired.contains(key) {
            continue;
        }
        actions.push(if entry.finished() {
            Action::Forget(*key)
        } else {
            Action::Kill(*key)
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{RunEntry, TaskEnd};
    use beowulf_types::JobId;

    fn key(job: u64, run: u32) -> RunKey {
        RunKey {
            job: JobId(job),
            run,
        }
    }

    fn ledger(entries: &[(RunKey, bool)]) -> LedgerData {
        let mut data = LedgerData::default();
        for (k, finished) in entries {
            let end = finished.then(|| TaskEnd {
                code: 0,
                detail: String::new(),
            });
            data.runs.insert(
                *k,
                RunEntry {
                    key: *k,
                    tasks: [(0, end)].into(),
                    lost: false,
                    cause: None,
                    out_of_memory: false,
                },
            );
        }
        data
    }

    #[test]
    fn new_runs_start_and_known_runs_are_left_alone() {
        let desired = [key(1, 1), key(2, 1)].into();
        let actions = reconcile(&desired, &ledger(&[(key(1, 1), true)]));
        assert_eq!(actions, vec![Action::Start(key(2, 1))]);
    }

    #[test]
    fn undesired_runs_are_killed_while_alive_and_forgotten_when_done() {
        let desired = [key(3, 2)].into();
        let actions = reconcile(
            &desired,
            &ledger(&[(key(3, 1), false), (key(4, 1), true), (key(3, 2), false)]),
        );
        assert_eq!(
            actions,
            vec![Action::Kill(key(3, 1)), Action::Forget(key(4, 1))]
        );
    }
}
