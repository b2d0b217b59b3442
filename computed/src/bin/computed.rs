//! `computed`: the compute-node agent's entry point.

use anyhow::Context;
use beowulf_computed::{
    agent::{Agent, Redetect},
    config::AgentConfig,
    inventory::InventorySource,
    launch_service,
    launcher::{ProcessLauncher, TaskCpus, cpu_list},
};
use clap::Parser;
use std::path::PathBuf;

/// The Beowulf compute-node agent: registers with the head and runs the tasks it is given.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (computed.toml).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread (the runtime's, libpmix's) exists.
    unsafe { beowulf_computed::pmix::configure_process() };
    let args = Args::parse();
    let config = AgentConfig::load(&args.config)?;
    beowulf_logging::init("computed", &config.log_level);
    let task_cpus = TaskCpus::without(&config.reserved_cpus)
        .with_context(|| format!("{}: field `reserved_cpus`", args.config.display()))?;
    if let Some(cpus) = &task_cpus {
        tracing::info!(
            cpus = %cpu_list(&cpus.cpus()),
            reserved = ?config.reserved_cpus,
            "tasks run on these CPUs; the reserved ones are kept for the node's daemons"
        );
    }
    let gpus = beowulf_computed::gpus::detect(&config.gpu_devices);
    let source = InventorySource::new(config.offer.clone(), &config.state_dir)
        .withholding_cpus(task_cpus.as_ref().map_or(0, TaskCpus::withheld))
        .with_gpus(u32::try_from(gpus.indices.len()).unwrap_or(u32::MAX));
    let detect = move || -> anyhow::Result<beowulf_types::Inventory> {
        source
            .detect()
            .context("cannot detect this node's hardware")
    };
    let inventory = detect()?;
    if config.cgroup_favor_dynamic_moves {
        match beowulf_computed::launcher::favor_dynamic_moves() {
            Ok(outcome) => tracing::info!(?outcome, "cgroup migrations favoured"),
            Err(reason) => {
                tracing::warn!(%reason, "cannot favour cgroup migrations; task starts stay slower")
            }
        }
    }
    let launcher = ProcessLauncher::new(config.cgroup_name.as_deref().unwrap_or(&config.node_name))
        .context("cannot set up the task launcher")?
        .with_task_cpus(task_cpus);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let launch_listen = config.launch_listen.clone();
        let launch_advertise = config.launch_advertise.clone();
        let node_name = config.node_name.clone();
        let agent_tls = config.tls.clone();
        let launch_socket = config.launch_socket_path();
        let pmix_dir = std::env::temp_dir().join(format!(
            "beowulf-pmix-{}",
            config.cgroup_name.as_deref().unwrap_or(&config.node_name)
        ));
        let (agent, exits) = Agent::start(config, inventory, launcher)?;
        agent.set_redetect(std::sync::Arc::new(Redetect(Box::new(move || {
            detect()
                .map_err(|e| tracing::warn!(error = %e, "cannot detect the inventory again"))
                .ok()
        }))));
        let listener = tokio::net::TcpListener::bind(&launch_listen)
            .await
            .with_context(|| format!("cannot listen for MPI launches on {launch_listen}"))?;
        let endpoint = launch_service::endpoint(
            listener.local_addr()?,
            launch_advertise.as_deref(),
            &node_name,
        );
        tracing::info!(%endpoint, "MPI launch service listening");
        agent.set_launch_endpoint(endpoint);
        let pmix = beowulf_computed::pmix::PmixServer::start(&pmix_dir, &node_name);
        if pmix.is_ok() {
            tracing::info!(dir = %pmix_dir.display(), "PMIx server ready for direct MPI launch");
        }
        agent.set_pmix(pmix);
        let tls = match &agent_tls {
            Some(files) => Some(launch_service::server_tls(files)?),
            None => {
                tracing::warn!("no [tls] in computed.toml: the MPI launch service is plaintext and trusts any holder of a run's credential");
                None
            }
        };
        tokio::spawn(launch_service::serve(agent.clone(), listener, tls));
        let local = launch_service::bind_local(&launch_socket).with_context(|| {
            format!("cannot listen for local launches on {}", launch_socket.display())
        })?;
        tracing::info!(socket = %launch_socket.display(), "local launch socket ready");
        tokio::spawn(launch_service::serve_local(agent.clone(), local));
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            () = agent.clone().run(exits) => {}
            _ = terminate.recv() => agent.shut_down(),
            _ = tokio::signal::ctrl_c() => agent.shut_down(),
        }
        // The PMIx server's files die with it (the next agent of this node starts afresh), and
        // so does the local launch socket.
        let _ = std::fs::remove_dir_all(&pmix_dir);
        let _ = std::fs::remove_file(&launch_socket);
        if let Some(dir) = launch_socket.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    })
}
