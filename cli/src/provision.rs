//! `cluster init` on real hosts: asks headnoded to provision the nodes of an inventory and shows
//! the run — a progress bar per node, then the step × node table. headnoded drives the run; this
//! only asks and shows, so `cluster init --watch` in another shell shows the same run.

use crate::client;
use anyhow::{Context, bail};
use beowulf_proto::v1::{self, init_update::Body};
use beowulf_provision::render::ProgressBars;
use beowulf_provision::{Outline, ProvisionEvent};
use std::path::Path;
use tokio_stream::StreamExt;

/// What to ask for.
#[derive(Debug, Clone)]
pub struct InitOptions<'a> {
    pub inventory: &'a Path,
    pub plan: bool,
    pub resume: bool,
    pub from: Option<&'a str>,
    /// Only these playbooks (empty: all).
    pub playbooks: &'a [String],
}

/// Starts a run and shows it; returns the exit code (0: the run succeeded).
pub async fn init(socket: &Path, options: &InitOptions<'_>) -> anyhow::Result<i32> {
    let inventory = std::fs::canonicalize(options.inventory)
        .with_context(|| format!("cannot read the inventory {}", options.inventory.display()))?;
    let mut client = client::connect(socket).await?;
    let request = v1::InitRequest {
        inventory: inventory.display().to_string(),
        plan: options.plan,
        resume: options.resume,
        from_step: options.from.unwrap_or_default().to_string(),
        playbooks: options.playbooks.to_vec(),
    };
    let stream = client
        .init(request)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    show(stream, options.plan).await
}

/// Shows the current (or last) run from its beginning.
pub async fn watch(socket: &Path) -> anyhow::Result<i32> {
    let mut client = client::connect(socket).await?;
    let stream = client
        .watch_init(v1::WatchInitRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    show(stream, false).await
}

async fn show(mut stream: tonic::Streaming<v1::InitUpdate>, plan: bool) -> anyhow::Result<i32> {
    let mut bars: Option<ProgressBars> = None;
    while let Some(update) = stream.next().await {
        let update =
            update.map_err(|s| anyhow::anyhow!("lost the run's progress: {}", s.message()))?;
        match update.body {
            Some(Body::OutlineJson(json)) => {
                let outline: Outline =
                    serde_json::from_str(&json).context("headnoded sent an unreadable outline")?;
                bars = Some(ProgressBars::new(outline));
            }
            Some(Body::EventJson(json)) => {
                let event: ProvisionEvent =
                    serde_json::from_str(&json).context("headnoded sent an unreadable event")?;
                if let Some(bars) = bars.as_mut() {
                    bars.handle(&event);
                }
            }
            Some(Body::Finished(end)) => {
                let mut degraded = false;
                if let Some(bars) = bars.take() {
                    let model = bars.finish();
                    let summary = model.summary();
                    degraded = model.has_degraded();
                    print!("{summary}");
                    if !summary.ends_with('\n') {
                        println!();
                    }
                }
                if !end.ok {
                    eprintln!("error: {}", end.error);
                    return Ok(1);
                }
                if end.changed_nothing {
                    println!(
                        "{}",
                        match (plan, degraded) {
                            (true, _) => "plan: nothing to change; every step is already satisfied",
                            (false, false) => "nothing changed: every step was already satisfied",
                            // A degraded step fell back (gigabit); it is not "satisfied".
                            (false, true) => {
                                "nothing changed except the fallbacks listed as degraded above"
                            }
                        }
                    );
                } else if plan {
                    println!(
                        "plan: the steps marked `would change` would change; nothing was changed"
                    );
                }
                return Ok(0);
            }
            None => {}
        }
    }
    bail!("headnoded closed the run's stream before it ended; `cluster init --watch` follows it")
}
