//! Background work: the scheduling loop and the health loop, idempotent and woken by events or timers.

use crate::head::Head;
use rand::SeedableRng;
use std::sync::Arc;
use std::time::Duration;

/// Runs scheduling passes, woken by `Head::wake_scheduler` and every `schedule_interval_ms`.
pub async fn scheduling_loop(head: Arc<Head>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_beef);
    let interval = Duration::from_millis(head.config.schedule_interval_ms);
    loop {
        let _ = tokio::time::timeout(interval, head.wake_scheduler.notified()).await;
        let pass_head = head.clone();
        let mut pass_rng = rand::rngs::StdRng::from_rng(&mut rng);
        let result = tokio::task::spawn_blocking(move || {
            let time_limits = pass_head.enforce_time_limits();
            let pass = pass_head.schedule_pass(&mut pass_rng);
            time_limits.and(pass)
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scheduling pass failed"),
            Err(e) => tracing::error!(error = %e, "scheduling pass panicked"),
        }
    }
}

/// Marks silent nodes DOWN; checks four times per heartbeat timeout.
pub async fn health_loop(head: Arc<Head>) {
    let period = Duration::from_millis((head.config.heartbeat_timeout_ms / 4).max(100));
    loop {
        tokio::time::sleep(period).await;
        let check_head = head.clone();
        match tokio::task::spawn_blocking(move || check_head.check_heartbeats()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "health check failed"),
            Err(e) => tracing::error!(error = %e, "health check panicked"),
        }
    }
}
