//! The lab: an emulated cluster of QEMU VMs (Debian 12, systemd) with two fabrics, `gige` and a
//! soft-RoCE `ib`, inside a network namespace of its own. `cluster lab up|status|ssh|down` drive it.
//!
//! Everything the lab starts is a qemu recorded by its pid file and stopped by that PID; everything it
//! creates on the host is its namespace (with bridges and taps), its state directory and the image cache.

pub mod addressing;
mod error;
pub mod host;
pub mod image;
pub mod inventory;
mod lab;
pub mod netns;
pub mod progress;
pub mod qemu;
pub mod recipe;
pub mod ssh;
pub mod state;

pub use error::LabError;
pub use lab::{
    ACCEL_ENV, CACHE_ENV, DEFAULT_BOOT_TIMEOUT, DEFAULT_CACHE_DIR, DEFAULT_MEMORY_MIB, DownReport,
    LabConfig, NodeStatus, StatusReport, TOOLS, UpReport, down, ssh_run, status, up,
};
