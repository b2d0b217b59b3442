//! The Beowulf gRPC API (generated) and conversions between its messages and the domain types.

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
pub mod peer;
pub mod submit_socket;

pub use v1::*;
