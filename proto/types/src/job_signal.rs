//! Signals a user sends to a running job (`scancel --signal`), and which of its processes get
//! them.

use serde::{Deserialize, Serialize};

/// Which processes of a job a signal reaches, as scancel's options choose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SignalScope {
    /// The tasks of the job's steps (a batch script's srun steps, or every task of a job run as
    /// its command), not the batch shell: scancel's default.
    #[default]
    Steps,
    /// The batch shell alone (`scancel --batch`).
    Batch,
    /// Every process of the job, the batch shell included (`scancel --full`).
    Full,
}

/// One signal a user sent to a job's run, numbered from 1 per run so each node's agent delivers
/// it once however often the head's desired state carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSignal {
    pub seq: u32,
    /// The signal's number.
    pub signal: i32,
    pub scope: SignalScope,
}

/// Signals a run keeps: a node that missed one (restarting) gets it when the head's desired
/// state reaches it again, and older ones than this were delivered long before.
pub const MAX_KEPT_SIGNALS: usize = 16;
