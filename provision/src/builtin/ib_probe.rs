//! `ib-probe`: the node has an ACTIVE verbs port that userspace can open. Reads port state from sysfs
//! (`/sys/class/infiniband/*/ports/*/state`, e.g. `4: ACTIVE`) and asks `ibv_devinfo` for the device.
//! It cannot repair a fabric: its apply fails with the reason, and the step's `on_failure = "degrade"`
//! turns that into the gigabit fallback for the node.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::StepError;
use async_trait::async_trait;

/// Probes a node's verbs fabric.
#[derive(Debug, Clone, Copy)]
pub struct IbProbe;

const PORTS: &str = "for p in /sys/class/infiniband/*/ports/*; do [ -r \"$p/state\" ] && echo \"$p $(cat \"$p/state\")\"; done; true";

/// `(device, port, state)` from the sysfs listing.
pub(crate) fn parse_ports(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let (path, state) = l.split_once(' ')?;
            let mut parts = path.trim_end_matches('/').rsplit('/');
            let port = parts.next()?.to_string();
            let device = parts.nth(1)?.to_string();
            Some((device, port, state.trim().to_string()))
        })
        .collect()
}

impl IbProbe {
    async fn problem(cx: &BuiltinCx<'_>) -> Result<Option<String>, StepError> {
        let out = cx.transport.exec(PORTS).await?;
        let ports = parse_ports(&out.stdout);
        let Some((device, _, _)) = ports.iter().find(|(_, _, s)| s.ends_with("ACTIVE")) else {
            return Ok(Some(if ports.is_empty() {
                "no verbs device (nothing in /sys/class/infiniband)".to_string()
            } else {
                format!(
                    "no ACTIVE verbs port ({})",
                    ports
                        .iter()
                        .map(|(d, p, s)| format!("{d}/{p}: {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        };
        let command = format!("ibv_devinfo -d {device}");
        let info = cx.transport.exec(&command).await?;
        if info.status != 0 || !info.stdout.contains("PORT_ACTIVE") {
            return Ok(Some(format!(
                "`{command}` does not show PORT_ACTIVE (exit {}): userspace verbs provider missing?",
                info.status
            )));
        }
        Ok(None)
    }
}

#[async_trait]
impl Builtin for IbProbe {
    fn name(&self) -> &'static str {
        "ib-probe"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        Ok(Check::from_problem(Self::problem(cx).await?))
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        match Self::problem(cx).await? {
            None => Ok(()),
            Some(p) => Err(StepError::failed(
                format!("{} has no working verbs fabric: {p}", cx.node),
                "jobs there use TCP over gigabit; check the cable, the subnet manager or the rxe link, then run init again",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ports;

    #[test]
    fn sysfs_listing_parses() {
        let p = parse_ports(
            "/sys/class/infiniband/rxe0/ports/1 4: ACTIVE\n/sys/class/infiniband/mlx5_0/ports/2 1: DOWN\n",
        );
        assert_eq!(p[0], ("rxe0".into(), "1".into(), "4: ACTIVE".into()));
        assert_eq!(p[1].0, "mlx5_0");
    }
}
