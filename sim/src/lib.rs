//! A discrete-event simulator over the real scheduler: a virtual clock in milliseconds, workloads from
//! SWF traces or a seeded generator, the `easy` (the scheduler as the head runs it) and `fcfs` policies,
//! and reports of utilisation, wait and slowdown.
//!
//! The core is pure: no async, no clock but the virtual one (wall-clock time is only measured around
//! scheduler calls, in [`policy`]), no file access (parsers take `&str` or `BufRead`). The simulator
//! builds every scheduler input in [`snapshot`], so changes to the scheduler's input types land there.

#![forbid(unsafe_code)]

pub mod allocation;
pub mod big_pass;
pub mod cluster;
pub mod error;
pub mod event;
pub mod job;
pub mod policy;
pub mod report;
pub mod scenario;
pub mod simulation;
pub mod snapshot;
pub mod swf;
pub mod synth;
pub mod workload;

pub use cluster::Cluster;
pub use error::{ScenarioError, SimError, SwfError};
pub use event::{NodeChange, NodeEvent};
pub use job::{Job, JobOutcome};
pub use policy::Policy;
pub use report::Report;
pub use simulation::{Outcome, SimConfig, simulate};
