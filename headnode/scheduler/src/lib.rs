//! The pure scheduler: `plan(input, now, rng) -> Plan`.
//!
//! No async, no I/O, no clock: the head builds a [`SchedulerInput`] snapshot, calls [`plan`], and
//! applies the returned [`Plan`]. Every pending job in the snapshot gets an entry in
//! [`Plan::pending`] with a reason, unless the plan starts it.

mod input;
mod plan;

pub use input::{NodeAvailability, NodeView, PendingJob, PriorityWeights, RunningJob, SchedulerInput};
pub use plan::{Pending, Plan, Start, plan};
