//! The pure scheduler: `plan(input, now, rng) -> Plan`.
//!
//! No async, no I/O, no clock: the head builds a [`SchedulerInput`] snapshot, calls [`plan`], and
//! applies the returned [`Plan`]. Every pending job in the snapshot gets an entry in
//! [`Plan::pending`] with a reason, unless the plan starts it.
//!
//! Inside a pass: [`priority`] orders the queue, `placement` picks best-fit nodes, `backfill` holds
//! the single EASY reservation, and [`invariants`] checks any plan against its input.

mod backfill;
mod cluster;
mod feasibility;
mod input;
pub mod invariants;
mod pass;
mod placement;
mod plan;
pub mod priority;

pub use input::{
    NodeAvailability, NodeView, PendingJob, PriorityWeights, RunningJob, SchedulerInput,
};
pub use plan::{Pending, Plan, Start, plan};
