//! `beowulf-rsh`: the remote launcher of an MPI job's `mpirun` (Open MPI's `plm_rsh_agent`).
//!
//! Called as `beowulf-rsh [ssh options] NODE COMMAND...` like ssh; asks NODE's agent to run
//! COMMAND (with `sh -c`) in the same job's container there, and exits with its exit code. The
//! request goes to this node's agent over its local socket (which knows the caller by its uid)
//! and on to NODE's agent over mutual TLS; the job, its launch credential and the socket come
//! from the environment the agent gave mpirun; NODE must be one of the job's nodes.

use anyhow::{anyhow, bail};
use beowulf_computed::mpi;
use beowulf_proto::v1;
use std::process::ExitCode;

/// Exit code when the launch itself failed (ssh uses 255 for its own errors, and Open MPI
/// reports a daemon that could not be started).
const LAUNCH_FAILED: u8 = 255;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(LAUNCH_FAILED)),
        Err(error) => {
            // Every message says what failed and why: the chain would repeat it.
            eprintln!("beowulf-rsh: {error}");
            ExitCode::from(LAUNCH_FAILED)
        }
    }
}

/// Skips ssh-style options (`-x`, `-o Opt=val`, ...) and returns the node and the command.
fn split_args(args: &[String]) -> Result<(&str, &[String]), anyhow::Error> {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        // Options of ssh that take a value.
        let takes_value = matches!(
            args[i].as_str(),
            "-o" | "-p" | "-l" | "-i" | "-F" | "-E" | "-b" | "-c" | "-m" | "-S"
        );
        i += if takes_value { 2 } else { 1 };
    }
    match args.get(i) {
        Some(node) if i + 1 < args.len() => Ok((node.as_str(), &args[i + 1..])),
        _ => bail!("usage: beowulf-rsh NODE COMMAND..."),
    }
}

/// A variable of the launch environment the agent gave mpirun.
fn env(name: &str) -> Result<String, anyhow::Error> {
    std::env::var(name)
        .map_err(|_| anyhow!("{name} is not set: beowulf-rsh only works inside a Beowulf MPI job"))
}

fn run(args: &[String]) -> Result<i32, anyhow::Error> {
    let (node, command) = split_args(args)?;
    let socket = env(mpi::ENV_LAUNCH_SOCKET)?;
    let job_id: u64 = env(mpi::ENV_JOB)?
        .parse()
        .map_err(|_| anyhow!("{} is not a job ID", mpi::ENV_JOB))?;
    let run: u32 = env(mpi::ENV_RUN)?
        .parse()
        .map_err(|_| anyhow!("{} is not a run number", mpi::ENV_RUN))?;
    let token = env(mpi::ENV_TOKEN)?;
    let request = v1::LaunchRequest {
        job_id,
        run,
        token,
        argv: command.to_vec(),
        env: Default::default(),
        node: node.to_string(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let reply = mpi::connect_local_launch(std::path::Path::new(&socket))
            .await?
            .launch(request)
            .await
            .map_err(|status| anyhow!("the launch on {node} was refused: {}", status.message()))?
            .into_inner();
        if reply.exit_code != 0 {
            eprintln!("beowulf-rsh: on {node}: {}", reply.detail);
        }
        Ok(reply.exit_code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ssh_options_are_skipped() {
        let args = strings(&["-x", "-o", "BatchMode=yes", "node2", "orted", "-mca", "x"]);
        let (node, command) = split_args(&args).unwrap();
        assert_eq!(node, "node2");
        assert_eq!(command, &strings(&["orted", "-mca", "x"])[..]);
        assert!(split_args(&strings(&["node2"])).is_err());
    }
}
