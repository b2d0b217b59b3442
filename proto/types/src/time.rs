//! Time as plain numbers, so pure code (the scheduler) takes "now" as an argument and never reads a clock.

use serde::{Deserialize, Serialize};

/// A span of time in milliseconds.
pub type Millis = u64;

/// Milliseconds since the Unix epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn plus(self, span: Millis) -> Timestamp {
        Timestamp(self.0.saturating_add(span))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Millis {
        self.0.saturating_sub(earlier.0)
    }
}
