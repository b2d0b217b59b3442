//! `cluster lab up|status|ssh|down`: the VM lab (lab/) from the command line.

use anyhow::Context;
use beowulf_lab::{LabConfig, progress::Progress};
use beowulf_types::NodeName;
use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build (or reuse) the image and boot N VMs with a gige and a soft-RoCE NIC each.
    Up {
        /// Number of compute node VMs.
        #[arg(long, default_value_t = 5)]
        nodes: u32,
        /// Guest memory per VM, in MiB.
        #[arg(long, default_value_t = beowulf_lab::DEFAULT_MEMORY_MIB)]
        memory: u32,
        /// Seconds to wait for every VM to answer SSH.
        #[arg(long, default_value_t = beowulf_lab::DEFAULT_BOOT_TIMEOUT.as_secs())]
        timeout: u64,
    },
    /// The lab's VMs: qemu running, SSH reachable, addresses.
    Status,
    /// Run a command on a lab node over its verified SSH key (a shell without CMD).
    Ssh {
        node: NodeName,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop every VM, delete the namespace and overlays; keep the image cache.
    Down,
}

/// Runs a `cluster lab` command; `state_dir` is the cluster's state directory (the lab lives in `lab/`).
pub fn run(state_dir: &Path, args: LabArgs) -> anyhow::Result<i32> {
    let dir = state_dir.join("lab");
    let host = beowulf_lab::host::System;
    let progress = Progress::new("lab");
    match args.command {
        LabCommand::Up {
            nodes,
            memory,
            timeout,
        } => {
            let mut cfg = LabConfig::new(&dir, nodes);
            cfg.memory_mib = memory;
            cfg.boot_timeout = Duration::from_secs(timeout);
            let r = beowulf_lab::up(&host, &cfg, &progress)?;
            match r.image {
                beowulf_lab::image::Provenance::Cached => {
                    println!("image: cached ({})", r.image_dir.display())
                }
                beowulf_lab::image::Provenance::Built(d) => println!(
                    "image: built in {:.1} s ({})",
                    d.as_secs_f64(),
                    r.image_dir.display()
                ),
            }
            println!(
                "boot: {} VMs ready over ssh in {:.1} s (accel {})",
                r.nodes.len(),
                r.boot.as_secs_f64(),
                r.accel.name()
            );
            println!("{:<8} {:<12} {:<12}", "NODE", "GIGE", "IB");
            for n in &r.nodes {
                println!("{:<8} {:<12} {:<12}", n.name, n.gige, n.ib);
            }
            println!("inventory: {}", r.inventory.display());
            println!(
                "namespace: {} (ip netns exec {} ...)",
                r.namespace, r.namespace
            );
            Ok(0)
        }
        LabCommand::Status => {
            let s = beowulf_lab::status(&host, &dir)?;
            println!(
                "namespace: {} ({}), accel {}",
                s.namespace,
                if s.namespace_exists {
                    "present"
                } else {
                    "MISSING"
                },
                s.accel.name()
            );
            println!(
                "{:<8} {:<8} {:<6} {:<8} {:<4} {:<12} {:<12}",
                "NODE", "PID", "QEMU", "RSS", "SSH", "GIGE", "IB"
            );
            for n in &s.nodes {
                println!(
                    "{:<8} {:<8} {:<6} {:<8} {:<4} {:<12} {:<12}",
                    n.name,
                    n.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    if n.alive { "up" } else { "DOWN" },
                    n.rss_mib
                        .map(|m| format!("{m}M"))
                        .unwrap_or_else(|| "-".into()),
                    if n.ssh { "ok" } else { "no" },
                    n.gige,
                    n.ib
                );
            }
            let healthy = s.namespace_exists && s.nodes.iter().all(|n| n.alive && n.ssh);
            Ok(if healthy { 0 } else { 1 })
        }
        LabCommand::Ssh { node, command } => {
            let tty = std::io::stdin().is_terminal();
            beowulf_lab::ssh_run(&host, &dir, &node, &command, tty)
                .with_context(|| format!("cannot run ssh on {node}"))
        }
        LabCommand::Down => {
            let r = beowulf_lab::down(&host, &dir, &progress)?;
            println!(
                "stopped {} VM(s); namespace {}; image cache kept",
                r.stopped.len(),
                r.namespace_removed.as_deref().unwrap_or("already gone")
            );
            Ok(0)
        }
    }
}
