//! Job arrays: the head expands `--array 1-1000%50` into element jobs; the scheduler enforces the
//! `%50` throttle by counting running elements.

use beowulf_types::JobId;
use std::collections::BTreeMap;

/// Membership of a job (pending or running) in an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArrayMember {
    /// The array's ID (Slurm's `ArrayJobId`, the first element's ID).
    pub array: JobId,
    /// The element's index (`SLURM_ARRAY_TASK_ID`).
    pub index: u32,
    /// At most this many elements run at once (`%N`); `None`: no throttle.
    pub max_running: Option<u32>,
}

impl Default for ArrayMember {
    fn default() -> Self {
        ArrayMember {
            array: JobId(0),
            index: 0,
            max_running: None,
        }
    }
}

/// Running elements per array, updated as the pass starts elements.
#[derive(Debug, Default)]
pub(crate) struct ArrayCounts {
    running: BTreeMap<JobId, u32>,
}

impl ArrayCounts {
    pub fn new<'a>(members: impl Iterator<Item = &'a ArrayMember>) -> ArrayCounts {
        let mut counts = ArrayCounts::default();
        for member in members {
            counts.started(member);
        }
        counts
    }

    pub fn running(&self, array: JobId) -> u32 {
        self.running.get(&array).copied().unwrap_or(0)
    }

    /// Whether the throttle keeps `member` from starting now.
    pub fn at_limit(&self, member: &ArrayMember) -> bool {
        member
            .max_running
            .is_some_and(|max| self.running(member.array) >= max)
    }

    pub fn started(&mut self, member: &ArrayMember) {
        *self.running.entry(member.array).or_default() += 1;
    }
}
