//! The Beowulf gRPC API (generated) and conversions between its messages and the domain types.

#![forbid(unsafe_code)]

#[allow(
    missing_debug_implementations,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("beowulf.v1");
}

mod convert;
pub mod launch_client;
pub mod local_socket;
pub mod peer;
pub mod submit_socket;

pub use v1::*;

/// The largest message an agent takes from the head: a node's whole desired state. gRPC's
/// default of 4 MiB was passed by a handful of jobs with large exported environments, and the
/// node then took no state at all (every job on it hung). The head keeps each node's desired
/// state within [`DESIRED_STATE_BUDGET`], so this is never reached.
pub const MAX_DESIRED_STATE_BYTES: usize = 64 << 20;

/// How large the head lets one node's desired state grow: a job whose start would pass it on
/// any of its nodes fails with the reason instead (a quarter below the agents' limit, for the
/// message's own framing and the runs that end meanwhile). One job's assignment is at most about
/// 1 MiB (the job file's limits), so only dozens of jobs with very large environments on one
/// node get near it.
pub const DESIRED_STATE_BUDGET: usize = 48 << 20;
