//! `ib-pair-probe`: verbs traffic flows between this node and another node of the fabric — a real
//! RC ping-pong (`ibv_rc_pingpong`, rdma-core's example program) with this node as the client and a
//! peer as the server, so a link that looks ACTIVE but carries nothing (a dead switch port, a
//! bridge that drops RoCE) is found before jobs are placed on it.
//!
//! Peers are tried in ring order over the inventory's nodes with a fabric — next, previous,
//! next-but-one — and the node passes when any peer answers, so one broken node fails only itself,
//! not its neighbours. The verdict reaches the scheduler through a marker file in the agent's state
//! directory (`args.marker`): written with the reason when the probe fails while the node's own
//! port is ACTIVE, removed when it passes; the agent reports it in its inventory and the node then
//! offers only `tcp`. A node whose own port is not ACTIVE needs no marker: the agent sees the port.

use super::contract::{Builtin, BuiltinCx};
use crate::check::Check;
use crate::error::{StepError, tail};
use crate::inventory::{IbKind, Node};
use crate::transport::Transport;
use async_trait::async_trait;
use beowulf_types::NodeName;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// ibv_rc_pingpong's own default port; the probe from the node at index `i` uses `BASE + i`, so the
/// probes all nodes run at once never meet at one server.
const PINGPONG_PORT_BASE: usize = 18515;

/// Seconds either end of one probe may take. Moving the data takes ~0.1 s, but starting
/// ibv_rc_pingpong (opening the device, registering memory) took 3–5 s per end on the lab's
/// emulated CPUs with five nodes probing at once; a path that carries nothing leaves both ends
/// waiting until this ends them.
const PROBE_TIMEOUT_SECS: u32 = 20;

/// Tenths of a second to wait for the server to listen before starting the client (under
/// [`PROBE_TIMEOUT_SECS`], so a server that never listens is reported as such).
const LISTEN_WAIT_TENTHS: u32 = 150;

/// Round trips per probe: enough to exercise send, receive and completion many times, few enough
/// to stay in the milliseconds.
const ITERATIONS: u32 = 20;

/// Peers tried, as steps forward in the ring of fabric nodes: next, previous (a full turn less
/// one), next-but-one.
fn ring_steps(len: usize) -> [usize; 3] {
    [1, len.saturating_sub(1), 2]
}

/// Prints `device port gid-index` of the first ACTIVE verbs port; the gid index is the first
/// IPv4-mapped GID (what RoCE needs, `-g`), empty on InfiniBand, which routes by LID.
const LOCATE_PORT: &str = r#"for p in /sys/class/infiniband/*/ports/*; do [ "$(cat "$p/state" 2>/dev/null)" = "4: ACTIVE" ] || continue; d=${p#/sys/class/infiniband/}; d=${d%%/*}; g=; for f in "$p"/gids/*; do case "$(cat "$f" 2>/dev/null)" in 0000:0000:0000:0000:0000:ffff:*) g=${f##*/}; break;; esac; done; echo "$d ${p##*/} $g"; exit 0; done; echo 'no ACTIVE verbs port' >&2; exit 1"#;

/// Probes verbs traffic to peers.
#[derive(Debug, Default)]
pub struct IbPairProbe {
    /// A check's verdict per node, so the apply that follows does not probe again.
    verdicts: Mutex<BTreeMap<NodeName, Verdict>>,
}

/// What probing one node found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// A peer answered (or there is no peer to ask).
    Passed,
    /// The node's own port is not ACTIVE: the port check says why; no marker is needed.
    NoActivePort(String),
    /// The port is ACTIVE but no peer could be reached over verbs.
    Broken(String),
}

/// One end of a probe: a verbs port and the `-d/-i/-g` options that select it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    device: String,
    port: String,
    gid_index: Option<String>,
}

impl Port {
    fn parse(stdout: &str) -> Option<Port> {
        let mut words = stdout.split_whitespace();
        Some(Port {
            device: words.next()?.to_string(),
            port: words.next()?.to_string(),
            gid_index: words.next().map(str::to_string),
        })
    }

    fn options(&self, tcp_port: usize) -> String {
        let gid = self
            .gid_index
            .as_ref()
            .map(|g| format!(" -g {g}"))
            .unwrap_or_default();
        format!(
            "-d {} -i {}{gid} -p {tcp_port} -n {ITERATIONS}",
            self.device, self.port
        )
    }
}

fn has_fabric(node: &Node) -> bool {
    node.ib.as_ref().is_some_and(|ib| ib.kind != IbKind::None)
}

/// The peers to try for the node at `index` of `ring` (indices into it), nearest first.
fn peers_of(index: usize, len: usize) -> Vec<usize> {
    let mut peers = Vec::new();
    for step in ring_steps(len) {
        let peer = (index + step) % len.max(1);
        if peer != index && !peers.contains(&peer) {
            peers.push(peer);
        }
    }
    peers
}

async fn locate(transport: &dyn Transport) -> Result<Result<Port, String>, StepError> {
    let out = transport.exec(LOCATE_PORT).await?;
    Ok(match (out.status, Port::parse(&out.stdout)) {
        (0, Some(port)) => Ok(port),
        _ => Err(tail(&out.stderr)),
    })
}

impl IbPairProbe {
    async fn probe(&self, cx: &BuiltinCx<'_>) -> Result<Verdict, StepError> {
        let own = match locate(cx.transport).await? {
            Ok(port) => port,
            Err(why) => return Ok(Verdict::NoActivePort(why)),
        };
        let ring: Vec<&Node> = cx
            .inventory
            .nodes
            .iter()
            .filter(|n| has_fabric(n))
            .collect();
        let Some(index) = ring.iter().position(|n| n.name == *cx.node) else {
            return Ok(Verdict::Passed);
        };
        let tcp_port = PINGPONG_PORT_BASE + index;
        let mut failures = Vec::new();
        for peer in peers_of(index, ring.len()) {
            let peer = ring[peer];
            match self.probe_peer(cx, &own, peer, tcp_port).await {
                Ok(()) => return Ok(Verdict::Passed),
                Err(why) => failures.push(format!("{} ({why})", peer.name)),
            }
        }
        Ok(if failures.is_empty() {
            // The only node with a fabric: nobody to ping, and the port check already passed.
            Verdict::Passed
        } else {
            Verdict::Broken(format!(
                "verbs pair probe from {} failed with every peer tried: {}",
                cx.node,
                failures.join("; ")
            ))
        })
    }

    /// One RC ping-pong: `peer` serves, this node connects to it over the gigabit network for the
    /// out-of-band exchange, then both move data over verbs.
    async fn probe_peer(
        &self,
        cx: &BuiltinCx<'_>,
        own: &Port,
        peer: &Node,
        tcp_port: usize,
    ) -> Result<(), String> {
        let remote = cx
            .peers
            .transport(&peer.name)
            .await
            .map_err(|e| e.to_string())?;
        let theirs = locate(remote.as_ref())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|why| format!("its port: {why}"))?;
        let server = format!(
            "timeout {PROBE_TIMEOUT_SECS} ibv_rc_pingpong {}",
            theirs.options(tcp_port)
        );
        let listening = format!(
            "for i in $(seq {LISTEN_WAIT_TENTHS}); do ss -Hltn 'sport = :{tcp_port}' | grep -q . && exit 0; sleep 0.1; done; echo 'ibv_rc_pingpong did not listen on port {tcp_port}' >&2; exit 1"
        );
        let client = format!(
            "timeout {PROBE_TIMEOUT_SECS} ibv_rc_pingpong {} {}",
            own.options(tcp_port),
            peer.gige.address
        );
        let serve = remote.exec(&server);
        let connect = async {
            let up = remote.exec(&listening).await?;
            if up.status != 0 {
                return Ok(up);
            }
            cx.transport.exec(&client).await
        };
        let (served, connected) = tokio::join!(serve, connect);
        let connected = connected.map_err(|e| e.to_string())?;
        let served = served.map_err(|e| e.to_string())?;
        let verdict = |what: &str, out: &crate::transport::ExecOutput| match out.status {
            0 => Ok(()),
            124 => Err(format!("{what} timed out after {PROBE_TIMEOUT_SECS} s")),
            status => Err(format!(
                "{what} exited {status}: {}",
                tail(&format!("{}\n{}", out.stdout, out.stderr))
            )),
        };
        verdict("client", &connected)?;
        verdict("server", &served)
    }

    fn remember(&self, node: &NodeName, verdict: Verdict) {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node.clone(), verdict);
    }

    fn recall(&self, node: &NodeName) -> Option<Verdict> {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node)
    }
}

fn marker(cx: &BuiltinCx<'_>) -> Result<String, StepError> {
    cx.args.get("marker").cloned().ok_or_else(|| {
        StepError::failed(
            "ib-pair-probe needs `args.marker`, the file that tells the agent its fabric is broken",
            "fix the playbook",
        )
    })
}

#[async_trait]
impl Builtin for IbPairProbe {
    fn name(&self) -> &'static str {
        "ib-pair-probe"
    }

    async fn check(&self, cx: &BuiltinCx<'_>) -> Result<Check, StepError> {
        let marker = marker(cx)?;
        let verdict = self.probe(cx).await?;
        self.remember(cx.node, verdict.clone());
        Ok(match verdict {
            Verdict::Passed if cx.transport.read_file(&marker).await?.is_some() => {
                Check::Unsatisfied(format!(
                    "the probe passes now, but {marker} still marks the fabric broken"
                ))
            }
            Verdict::Passed => Check::Satisfied,
            Verdict::NoActivePort(why) => {
                Check::Unsatisfied(format!("nothing to probe from: {why}"))
            }
            Verdict::Broken(why) => Check::Unsatisfied(why),
        })
    }

    async fn apply(&self, cx: &BuiltinCx<'_>) -> Result<(), StepError> {
        let marker = marker(cx)?;
        let verdict = match self.recall(cx.node) {
            Some(v) => v,
            None => self.probe(cx).await?,
        };
        match verdict {
            Verdict::Passed => {
                let out = cx.transport.exec(&format!("rm -f '{marker}'")).await?;
                if out.status == 0 {
                    Ok(())
                } else {
                    Err(StepError::command(
                        &format!("rm -f '{marker}'"),
                        &out,
                        &[0],
                        "remove the marker by hand",
                    ))
                }
            }
            Verdict::NoActivePort(why) => Err(StepError::failed(
                format!("{} has no ACTIVE verbs port to probe from: {why}", cx.node),
                "jobs there use TCP over gigabit; fix the port (see the port-active step), then run init again",
            )),
            Verdict::Broken(why) => {
                cx.transport
                    .put_file(&marker, format!("{why}\n").as_bytes(), 0o644)
                    .await?;
                Err(StepError::failed(
                    why,
                    format!(
                        "{} now offers only TCP over gigabit ({marker}); check its cable, switch port or RoCE path, then run init again",
                        cx.node
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_next_previous_and_next_but_one() {
        assert_eq!(peers_of(0, 5), vec![1, 4, 2]);
        assert_eq!(peers_of(4, 5), vec![0, 3, 1]);
        assert_eq!(peers_of(0, 2), vec![1]);
        assert_eq!(peers_of(1, 3), vec![2, 0]);
        assert!(peers_of(0, 1).is_empty());
    }

    #[test]
    fn located_ports_give_pingpong_options() {
        let roce = Port::parse("rxe0 1 1\n").unwrap();
        assert_eq!(roce.options(18516), "-d rxe0 -i 1 -g 1 -p 18516 -n 20");
        let ib = Port::parse("mlx5_0 2 \n").unwrap();
        assert_eq!(ib.options(18515), "-d mlx5_0 -i 2 -p 18515 -n 20");
        assert_eq!(Port::parse(""), None);
    }
}
