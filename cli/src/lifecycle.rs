//! `cluster init|down`: bring a cluster up (local daemons, the lab's VMs, or real hosts from an
//! inventory) and take a local one down.

use crate::{lab, local, provision};
use anyhow::{Context, bail};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Number of compute nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: u32,
    /// Run every daemon on this machine, with no provisioning.
    #[arg(long)]
    pub local: bool,
    /// Provision the hosts of this inventory (cluster.toml) through the running headnoded.
    #[arg(long, conflicts_with = "local")]
    pub inventory: Option<PathBuf>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Skip the steps an earlier run completed.
    #[arg(long, conflicts_with = "from")]
    pub resume: bool,
    /// Start at this step (`playbook/step`).
    #[arg(long)]
    pub from: Option<String>,
    /// Run only this playbook (repeatable; e.g. `--playbook agent` after replacing computed).
    #[arg(long = "playbook")]
    pub playbooks: Vec<String>,
    /// Follow the current (or show the last) provisioning run.
    #[arg(long, conflicts_with_all = ["local", "inventory"])]
    pub watch: bool,
    /// CPUs each local node offers.
    #[arg(long, default_value_t = 2)]
    pub cpus_per_node: u32,
    /// Memory each local node offers, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory_per_node: u64,
    /// Seconds without a heartbeat before a node is DOWN.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_timeout: u64,
    /// Seconds a stopped job has between SIGTERM and SIGKILL (Slurm's KillWait).
    #[arg(long, default_value_t = 30)]
    pub kill_wait: u64,
    /// Scheduling policy for headnoded (`[[partition]]`, `[qos.NAME]`, `[priority]`, `[shares]`
    /// sections of headnoded.toml), added to the generated configuration.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

/// `cluster init`: follow a provisioning run, provision an inventory's hosts, build the lab, or
/// start a local cluster.
pub async fn init(state_dir: &Path, socket: &Path, args: InitArgs) -> anyhow::Result<i32> {
    if args.watch {
        return provision::watch(socket).await;
    }
    if let Some(inventory) = &args.inventory {
        let options = provision::InitOptions {
            inventory,
            plan: args.plan,
            resume: args.resume,
            from: args.from.as_deref(),
            playbooks: &args.playbooks,
        };
        return provision::init(socket, &options).await;
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !args.local {
        return lab_init(state_dir, socket, &args).await;
    }
    if args.plan || args.resume || args.from.is_some() {
        bail!(
            "--plan, --resume and --from provision hosts: use them with --inventory or without --local (the lab)"
        );
    }
    let opts = local::LocalOptions {
        state_dir: state_dir.to_path_buf(),
        socket: socket.to_path_buf(),
        nodes: args.nodes,
        cpus_per_node: args.cpus_per_node,
        memory_per_node_mb: args.memory_per_node,
        heartbeat_timeout_ms: args
            .heartbeat_timeout
            .checked_mul(1000)
            .context("--heartbeat-timeout is too large; give seconds, such as 10")?,
        kill_wait_ms: args
            .kill_wait
            .checked_mul(1000)
            .context("--kill-wait is too large; give seconds, such as 30")?,
        policy: match &args.policy {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the policy {}", path.display()))?,
            ),
            None => None,
        },
    };
    local::init(&opts).await?;
    Ok(0)
}

/// `cluster down`: stop the daemons `init --local` started.
pub async fn down(state_dir: &Path) -> anyhow::Result<i32> {
    local::down(state_dir).await?;
    Ok(0)
}

/// `cluster init --nodes N` without an inventory: the lab's VMs as the nodes (booted unless they
/// are up), headnoded in the lab's namespace, then the same provisioning as for real hosts.
async fn lab_init(state_dir: &Path, socket: &Path, args: &InitArgs) -> anyhow::Result<i32> {
    let lab_dir = state_dir.join("lab");
    let status = beowulf_lab::status(&beowulf_lab::host::System, &lab_dir);
    let up = status
        .as_ref()
        .is_ok_and(|s| s.namespace_exists && s.nodes.len() == args.nodes as usize);
    if !up && args.plan {
        // A plan changes nothing, so it boots nothing either.
        bail!(
            "--plan shows what init would change on running hosts, and the lab's {} VMs are not \
             up: start them with `cluster lab up --nodes {}` (or `cluster init --nodes {}`), or \
             give --inventory for real hosts",
            args.nodes,
            args.nodes,
            args.nodes
        );
    }
    if !up {
        let code = lab::run(
            state_dir,
            lab::LabArgs {
                command: lab::LabCommand::Up {
                    nodes: args.nodes,
                    memory: beowulf_lab::DEFAULT_MEMORY_MIB,
                    timeout: beowulf_lab::DEFAULT_BOOT_TIMEOUT.as_secs(),
                },
            },
        )?;
        if code != 0 {
            return Ok(code);
        }
    }
    let inventory_path = lab_dir.join("cluster.toml");
    let inventory = beowulf_provision::ClusterInventory::load(&inventory_path)?;
    let netns = inventory
        .ssh
        .netns
        .clone()
        .context("the lab's inventory names no network namespace")?;
    local::start_lab_head(state_dir, socket, &netns, inventory.head.gige).await?;
    let options = provision::InitOptions {
        inventory: &inventory_path,
        plan: args.plan,
        resume: args.resume,
        from: args.from.as_deref(),
        playbooks: &args.playbooks,
    };
    provision::init(socket, &options).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct InitOnly {
        #[command(flatten)]
        args: InitArgs,
    }

    #[tokio::test]
    async fn a_plan_without_a_running_lab_boots_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let args = InitOnly::parse_from(["init", "--nodes", "5", "--plan"]).args;
        let e = init(dir.path(), &dir.path().join("sock"), args)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the lab's 5 VMs are not up"), "{e}");
        assert!(!dir.path().join("lab").exists(), "a plan made lab state");
    }
}
