//! Plain domain types shared by every Beowulf crate: typed IDs, resources, job specs and states.
//!
//! Nothing here does I/O. The head, the agents, the CLI and the pure scheduler all speak these types,
//! so a `JobId` or a `NodeName` means the same thing everywhere.

#![forbid(unsafe_code)]

pub mod config;
pub mod hostlist;
mod ids;
mod inventory;
mod job_signal;
pub mod jobfile;
pub mod located;
pub mod output_pattern;
mod resources;
mod run;
mod states;
mod time;

pub use ids::{Generation, JobId, NodeName};
pub use inventory::{IbPort, IbPortState, Inventory, Nic};
pub use job_signal::{JobSignal, MAX_KEPT_SIGNALS, SignalScope};
pub use jobfile::{
    ArraySpec, ContainerSpec, DependencySpec, ElementAfter, Fabric, JobSpec, MpiFlavor,
    MpiLaunchMode, MpiSpec, Program, RunFabric, apply_overrides, parse_job_file,
};
pub use located::{SourceError, line_of_field};
pub use resources::Resources;
pub use run::{RunKey, TaskKey};
pub use states::{JobHold, JobState, JobTransition, NodeState, PendingReason};
pub use time::{Millis, Timestamp, UtcTime};

/// The name agents expect in the head's TLS certificate: they reach the head by address or by
/// name, and one fixed name keeps the check independent of how.
pub const HEAD_TLS_NAME: &str = "beowulf-head";
