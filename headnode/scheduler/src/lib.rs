//! The pure scheduler: `plan(input, now, rng) -> Plan`, and `why(input, now, job) -> Explanation`.
//!
//! No async, no I/O, no clock: the head builds a [`SchedulerInput`] snapshot, calls [`plan`], and
//! applies the returned [`Plan`]. Every pending job in the snapshot gets an entry in
//! [`Plan::pending`] with a reason, unless the plan starts it.
//!
//! Inside a pass: `admission` holds jobs back for their partition, reservation, dependencies and
//! array throttle; [`priority`] orders the queue; `eligibility` says which nodes a job may use
//! (partition, [`constraint`], [`advance`] reservations); `placement` picks best-fit nodes;
//! [`preemption`] makes room for QOS that preempt; `backfill` holds the single EASY reservation; and
//! [`invariants`] checks any plan against its input.

#![forbid(unsafe_code)]

mod admission;
pub mod advance;
pub mod array;
mod backfill;
mod cluster;
pub mod constraint;
pub mod dependency;
mod eligibility;
pub mod fairshare;
mod feasibility;
mod gres;
mod input;
pub mod invariants;
pub mod partition;
mod pass;
mod placement;
mod plan;
pub mod preemption;
pub mod priority;
pub mod qos;
mod why;

pub use admission::Hold;
pub use advance::{AdvanceReservation, ReservationProblem};
pub use array::ArrayMember;
pub use constraint::{Constraint, ConstraintError};
pub use dependency::{Dependency, JobOutcome};
pub use fairshare::{Association, Share, ShareTable};
pub use input::{
    NodeAvailability, NodeView, PendingJob, PriorityWeights, RunningJob, SchedulerInput,
};
pub use partition::{Partition, PartitionProblem};
pub use pass::plan;
pub use plan::{Pending, Plan, Start, TopJob};
pub use preemption::Preemption;
pub use priority::{Factor, PriorityFactors};
pub use qos::{PreemptMode, Qos};
pub use why::{Blocker, Explanation, NodeLack, why};
