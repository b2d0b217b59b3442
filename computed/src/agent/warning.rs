//! The signal a job asked for before its time limit (sbatch's `--signal=[B:]SIG@TIME`): armed
//! when the run starts on this node, sent `TIME` before the run's deadline if the run is still
//! here then.
//!
//! ```text
//!  run starts here ─▶ timer until deadline − TIME ─▶ still desired, not stopping?
//!     ├─ B: (batch_only), the script's node: the batch shell's process alone
//!     ├─ a batch script's run: the tasks of its srun steps on this node (not the batch shell)
//!     └─ a job run as its command: every process of the run here
//! ```

use super::Agent;
use crate::assignment::Assignment;
use crate::launcher::Launcher;
use beowulf_types::RunKey;
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
        let script = a.steps.is_some();
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            let state = agent.lock();
            if !state.desired.contains_key(&key) || state.terminating.contains(&key) {
                return;
            }
            tracing::info!(job = %key.job, run = key.run, signal = %warn.signal, batch_only = warn.batch_only, "the job's time limit is near: sending the signal it asked for");
            if warn.batch_only {
                if let Some((task, pid)) = state.batch_tasks.get(&key) {
                    agent.launcher.signal_task(*task, *pid, warn.signal, false);
                }
            } else if script {
                for (task, pid) in state.step_tasks_running.get(&key).into_iter().flatten() {
                    agent.launcher.signal_task(*task, *pid, warn.signal, true);
                }
            } else if let Err(e) = agent.launcher.signal_job(key, warn.signal) {
                tracing::warn!(job = %key.job, run = key.run, error = %e, "cannot signal the run");
            }
        });
    }
}
