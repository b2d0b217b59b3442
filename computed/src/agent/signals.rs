//! Signals for a run's processes that do not end it: the one a job asked for before its time
//! limit (sbatch's `--signal=[B:]SIG@TIME`), and those users send (`scancel --signal`).
//!
//! ```text
//!  run starts here ─▶ timer until deadline − TIME ─▶ still desired, not stopping? ─▶ deliver
//!  desired state with signals numbered past the last delivered here ─▶ deliver each, in order
//!
//!  deliver(scope):
//!     ├─ Batch: the batch shell's process alone (on the script's node)
//!     ├─ Steps, a batch script's run: the tasks of its srun steps here (not the batch shell)
//!     └─ Steps, a job run as its command; Full: every process of the run here
//! ```

use super::{Agent, State};
use crate::assignment::Assignment;
use crate::launcher::Launcher;
use beowulf_types::{RunKey, SignalScope};
use nix::sys::signal::Signal;
use std::time::Duration;

impl<L: Launcher> Agent<L> {
    /// Arms the run's warning signal, if the job asked for one.
    pub(super) fn arm_warning(&self, key: RunKey, a: &Assignment) {
        let Some(warn) = a.warn_signal else {
            return;
        };
        let (Some(agent), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let at = a.deadline.0.saturating_sub(warn.before_ms);
        let wait = Duration::from_millis(at.saturating_sub(super::now_ms()));
        let scope = if warn.batch_only {
            SignalScope::Batch
        } else {
            SignalScope::Steps
        };
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let state = agent.lock();
            if state.terminating.contains(&key) {
                return;
            }
            let Some(a) = state.desired.get(&key) else {
                return;
            };
            tracing::info!(job = %key.job, run = key.run, signal = %warn.signal, ?scope, "the job's time limit is near: sending the signal it asked for");
            agent.deliver(&state, key, a, warn.signal, scope);
        });
    }

    /// Delivers the signals users sent to desired runs that this node has not delivered yet.
    pub(super) fn deliver_user_signals(&self, state: &mut State) {
        let mut delivered = Vec::new();
        for (key, a) in &state.desired {
            let done = state.signals_delivered.get(key).copied().unwrap_or(0);
            let mut last = done;
            for s in a.signals.iter().filter(|s| s.seq > done) {
                tracing::info!(job = %key.job, run = key.run, signal = %s.signal, scope = ?s.scope, seq = s.seq, "a user signals the run");
                self.deliver(state, *key, a, s.signal, s.scope);
                last = last.max(s.seq);
            }
            if last > done {
                delivered.push((*key, last));
            }
        }
        state.signals_delivered.extend(delivered);
    }

    /// Sends `signal` to the processes of run `key` here that `scope` names.
    fn deliver(
        &self,
        state: &State,
        key: RunKey,
        a: &Assignment,
        signal: Signal,
        scope: SignalScope,
    ) {
        let script = a.steps.is_some();
        match scope {
            SignalScope::Batch => {
                if let Some((task, pid)) = state.batch_tasks.get(&key) {
                    self.launcher.signal_task(*task, *pid, signal, false);
                }
            }
            SignalScope::Steps if script => {
                for (task, pid) in state.step_tasks_running.get(&key).into_iter().flatten() {
                    self.launcher.signal_task(*task, *pid, signal, true);
                }
            }
            SignalScope::Steps | SignalScope::Full => {
                if let Err(e) = self.launcher.signal_job(key, signal) {
                    tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot signal the run");
                }
            }
        }
    }
}
