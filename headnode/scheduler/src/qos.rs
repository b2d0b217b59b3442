//! Quality of service: a priority boost and the right to preempt jobs of other QOS.

use std::collections::BTreeSet;

/// One QOS (Slurm's `sacctmgr add qos`). Defaults: no priority, preempts nothing, never preempted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qos {
    /// Normalised by the largest QOS priority in the input, times `PriorityWeights::qos_weight`.
    pub priority: u32,
    /// Names of the QOS whose running jobs this QOS's pending jobs may preempt.
    pub preempts: BTreeSet<String>,
    /// What happens to *this* QOS's jobs when they are preempted (Slurm takes the victim's mode).
    pub preempt_mode: PreemptMode,
}

/// What preemption does to a victim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PreemptMode {
    /// Never preempted, even by a QOS that lists this one (Slurm's `PreemptMode=OFF`).
    #[default]
    Off,
    /// Killed and put back in the queue.
    Requeue,
    /// Killed and ended CANCELLED.
    Cancel,
}
