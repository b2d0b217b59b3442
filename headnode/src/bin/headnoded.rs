//! `headnoded`: the head-node daemon's entry point.

#![forbid(unsafe_code)]

use anyhow::Context;
use beowulf_headnode::{config::HeadConfig, server};
use clap::Parser;
use std::path::PathBuf;

/// The Beowulf head-node daemon: accepts jobs, schedules them, drives the compute agents.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Configuration file (headnoded.toml).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = HeadConfig::load(&args.config)?;
    beowulf_logging::init("headnoded", &config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(server::run(config))
}
