//! `clock-skew`: the node's clock agrees with the head's (this machine's) within [`MAX_CLOCK_SKEW`].

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use async_trait::async_trait;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest clock difference accepted between a node and the head (DESIGN §1). Job start and end times,
/// TLS certificate validity and `make` over NFS all compare clocks across machines; beyond a second,
/// accounting and build tools start to misbehave visibly.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

/// Measures and fixes clock skew.
#[derive(Debug, Clone, Copy)]
pub struct ClockSkew;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl ClockSkew {
    /// Node clock minus head clock, in seconds, taking the midpoint of the round trip as "now".
    async fn skew(cx: &BuiltinCx<'_>) -> Result<f64, StepError> {
        let command = "date +%s.%N";
        let before = now_secs();
        let out = cx.transport.exec(command).await?;
        let after = now_secs();
        let remote: f64 = out.stdout.trim().parse().map_err(|_| {
            StepError::command(
                command,
                &out,
                &[0],
                "the node's `date` must support %N (GNU coreutils)",
            )
        })?;
        Ok(remote - (before + after) / 2.0)
    }
}

#[async_trait]
impl Builtin for ClockSkew {
    fn name(&self) -> &'static str {
        "clock-skew"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        let skew = Self::skew(cx).await?;
        Ok(if skew.abs() < MAX_CLOCK_SKEW.as_secs_f64() {
            Check::Satisfied
        } else {
            Check::Unsatisfied(format!(
                "clock is {skew:+.3} s off the head's (limit {} s)",
                MAX_CLOCK_SKEW.as_secs()
            ))
        })
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        let command = format!(
            "if command -v chronyc >/dev/null 2>&1 && chronyc -a makestep >/dev/null 2>&1; then :; else date -u -s @{:.3} >/dev/null; fi",
            now_secs()
        );
        let out = cx.transport.exec(&command).await?;
        if out.status != 0 {
            return Err(StepError::command(
                &command,
                &out,
                &[0],
                "set the node's clock (run chrony or systemd-timesyncd against the head), then resume",
            ));
        }
        Ok(())
    }
}
