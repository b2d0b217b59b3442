//! headnoded: the head-node daemon. The client API and the agent hub call into [`head::Head`], whose
//! state lives in a redb store; background tasks run scheduling passes and node health checks.

#![forbid(unsafe_code)]

pub mod agent_hub;
pub mod api;
pub mod config;
pub mod head;
pub mod init;
pub mod model;
pub mod server;
pub mod store;
pub mod submit_socket;
pub mod tasks;
