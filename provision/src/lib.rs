//! Provisioning: playbooks as data, the `cluster.toml` inventory, transports to nodes (local, SSH,
//! recording), builtin steps, and the engine that runs check → apply → verify per step and node.
//!
//! Vocabulary (DESIGN §2): a **playbook** is an ordered list of **steps**; a step runs on the head or on
//! every compute node, idempotently.

#![forbid(unsafe_code)]

pub mod action;
pub mod builtin;
pub mod ca;
pub mod check;
pub mod context;
pub mod engine;
pub mod error;
pub mod event;
pub mod execute;
pub mod inventory;
pub mod playbook;
pub mod render;
pub mod state;
pub mod template;
pub mod transport;

pub use beowulf_types::{NodeName, SourceError};
pub use builtin::BuiltinRegistry;
pub use engine::{DEFAULT_PARALLELISM, Engine, Mode, Outline, RunOptions, RunReport, Start};
pub use error::{RunError, StepError};
pub use event::{Outcome, Phase, ProvisionEvent};
pub use inventory::ClusterInventory;
pub use playbook::{INIT_PLAYBOOKS, Playbook, Scope, Step};
pub use template::Templates;
pub use transport::{Transport, TransportError};
