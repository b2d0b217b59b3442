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

/// Marks silent nodes DOWN; checks four times per heartbeat timeout. When the loop itself woke
/// up far too late, the head was not running: it gives the nodes a new timeout instead.
pub async fn health_loop(head: Arc<Head>) {
    let timeout = Duration::from_millis(head.config.heartbeat_timeout_ms);
    let period = (timeout / 4).max(Duration::from_millis(100));
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let woke = tokio::time::Instant::now();
        let away = head_was_away(woke - last, period, timeout);
        last = woke;
        if let Some(away) = away {
            tracing::warn!(
                away_ms = away.as_millis() as u64,
                "the head was not running (its process or this machine stalled): every node gets a full heartbeat timeout again"
            );
            head.forgive_silence();
            continue;
        }
        let check_head = head.clone();
        match tokio::task::spawn_blocking(move || check_head.check_heartbeats()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "health check failed"),
            Err(e) => tracing::error!(error = %e, "health check panicked"),
        }
    }
}

/// How long the head was not running, when the health loop's sleep of `period` took `took` and
/// the extra is more than half a heartbeat timeout: long enough that a node could be failed for
/// the head's own silence. Shorter delays (a busy runtime) are ordinary and change nothing.
fn head_was_away(took: Duration, period: Duration, timeout: Duration) -> Option<Duration> {
    let late = took.saturating_sub(period);
    (late > timeout / 2).then_some(late)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wake_up_late_by_half_a_timeout_counts_as_the_head_being_away() {
        let (period, timeout) = (Duration::from_millis(2500), Duration::from_secs(10));
        assert_eq!(head_was_away(period, period, timeout), None);
        assert_eq!(
            head_was_away(Duration::from_millis(7000), period, timeout),
            None
        );
        // The failed CI run: the whole machine stalled for ~45 s.
        assert_eq!(
            head_was_away(Duration::from_millis(47_500), period, timeout),
            Some(Duration::from_secs(45))
        );
    }
}
