//! computed: the compute-node agent. It keeps a session with the head ([`agent`]), takes each job
//! run's part on this node off the wire once ([`assignment`]), persists what it was asked to run
//! ([`ledger`]), decides what to do ([`reconcile`]) and does it ([`launcher`]).

pub mod agent;
pub mod assignment;
pub mod config;
pub mod container;
pub mod gpus;
pub mod inventory;
pub mod launch_service;
pub mod launcher;
pub mod ledger;
pub mod mpi;
pub mod pmix;
pub mod reconcile;
pub mod tls;
