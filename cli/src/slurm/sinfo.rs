//! `sinfo`: partitions and the state of their nodes, one line per partition and node state (or
//! per node with `-N`), in Slurm's columns or a `-o`/`--format` of `%` fields.

use super::format::{parse_format, render};
use crate::{client, output};
use beowulf_proto::v1;
use beowulf_types::{NodeState, hostlist};
use clap::{ArgAction, Parser};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// sinfo's default columns.
const DEFAULT_FORMAT: &str = "%9P %.5a %.10l %.6D %.6t %N";
/// `sinfo -N`'s.
const NODE_FORMAT: &str = "%N %.6D %9P %.6t";
/// `sinfo -l`'s (with `-N`, per node).
const LONG_FORMAT: &str = "%9P %.5a %.10l %.6D %.9T %N";
const LONG_NODE_FORMAT: &str = "%N %.6D %9P %.11T %.4c %.8m %20E";

#[derive(Debug, Parser)]
#[command(
    name = "sinfo",
    version,
    about = "View partitions and nodes (Slurm's sinfo)",
    disable_help_flag = true
)]
struct Args {
    /// One line per node.
    #[arg(short = 'N', long = "Node")]
    node: bool,
    /// No header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    /// Only these partitions.
    #[arg(short = 'p', long = "partition", value_delimiter = ',')]
    partitions: Vec<String>,
    /// Only nodes in these states (`idle`, `mix`, `alloc`, `drain`, `down`, ...).
    #[arg(short = 't', long = "states", value_delimiter = ',')]
    states: Vec<String>,
    /// Output format: `%P %a %l %D %t %N ...` (see `man sinfo`).
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Long columns: the states' full names (with -N: CPUs, memory, reason).
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// Why nodes are down or drained.
    #[arg(short = 'R', long = "list-reasons")]
    reasons: bool,
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Nodes of one partition that share a state (one line of sinfo), or one node (`-N`).
struct Group<'a> {
    partition: &'a v1::PartitionInfo,
    state: NodeState,
    nodes: Vec<&'a v1::NodeInfo>,
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let states = args
        .states
        .iter()
        .map(|s| parse_node_state(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut c = client::connect(socket).await?;
    let partitions = client::list_partitions(&mut c).await?;
    let nodes = client::list_nodes(&mut c).await?;
    let by_name: BTreeMap<&str, &v1::NodeInfo> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    if args.reasons {
        return list_reasons(&nodes, args.noheader);
    }
    let mut groups: Vec<Group<'_>> = Vec::new();
    for partition in partitions
        .iter()
        .filter(|p| args.partitions.is_empty() || args.partitions.contains(&p.name))
    {
        let mut by_state: BTreeMap<NodeState, Vec<&v1::NodeInfo>> = BTreeMap::new();
        for node in partition
            .nodes
            .iter()
            .filter_map(|n| by_name.get(n.as_str()))
        {
            let Some(state) = node.node_state() else {
                continue;
            };
            if states.is_empty() || states.contains(&state) {
                by_state.entry(state).or_default().push(node);
            }
        }
        for (state, nodes) in by_state {
            if args.node {
                groups.extend(nodes.into_iter().map(|n| Group {
                    partition,
                    state,
                    nodes: vec![n],
                }));
            } else {
                groups.push(Group {
                    partition,
                    state,
                    nodes,
                });
            }
        }
    }
    if args.node {
        groups.sort_by(|a, b| a.nodes[0].name.cmp(&b.nodes[0].name));
    }
    let format = args
        .format
        .as_deref()
        .unwrap_or(match (args.node, args.long) {
            (false, false) => DEFAULT_FORMAT,
            (true, false) => NODE_FORMAT,
            (false, true) => LONG_FORMAT,
            (true, true) => LONG_NODE_FORMAT,
        });
    let pieces = parse_format(format);
    if !args.noheader {
        println!("{}", render(&pieces, |f| header(f).to_string()));
    }
    for group in &groups {
        println!(
            "{}",
            output::printable(&render(&pieces, |f| value(f, group)))
        );
    }
    Ok(0)
}

fn list_reasons(nodes: &[v1::NodeInfo], noheader: bool) -> anyhow::Result<i32> {
    let pieces = parse_format("%20E %N");
    if !noheader {
        println!(
            "{}",
            render(&pieces, |f| if f == 'E' {
                "REASON".into()
            } else {
                "NODELIST".into()
            })
        );
    }
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for node in nodes.iter().filter(|n| !n.reason.is_empty()) {
        by_reason
            .entry(node.reason.as_str())
            .or_default()
            .push(node.name.clone());
    }
    for (reason, names) in by_reason {
        let line = render(&pieces, |f| {
            if f == 'E' {
                reason.to_string()
            } else {
                hostlist::compress(&names)
            }
        });
        println!("{}", output::printable(&line));
    }
    Ok(0)
}

/// sinfo's short state names (`%t`).
fn compact(state: NodeState) -> &'static str {
    match state {
        NodeState::Idle => "idle",
        NodeState::Mixed => "mix",
        NodeState::Allocated => "alloc",
        NodeState::Draining => "drng",
        NodeState::Drained => "drain",
        NodeState::Down => "down",
    }
}

/// sinfo's long state names (`%T`).
fn long(state: NodeState) -> &'static str {
    match state {
        NodeState::Idle => "idle",
        NodeState::Mixed => "mixed",
        NodeState::Allocated => "allocated",
        NodeState::Draining => "draining",
        NodeState::Drained => "drained",
        NodeState::Down => "down",
    }
}

fn parse_node_state(text: &str) -> anyhow::Result<NodeState> {
    let text = text.trim();
    NodeState::parse(text)
        .or_else(|| {
            NodeState::ALL.into_iter().find(|s| {
                compact(*s).eq_ignore_ascii_case(text) || long(*s).eq_ignore_ascii_case(text)
            })
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "invalid node state `{text}`; use idle, mix, alloc, drng, drain or down"
            )
        })
}

fn header(letter: char) -> &'static str {
    match letter {
        'P' | 'R' => "PARTITION",
        'a' => "AVAIL",
        'l' => "TIMELIMIT",
        'D' => "NODES",
        't' | 'T' => "STATE",
        'N' => "NODELIST",
        'c' => "CPUS",
        'm' => "MEMORY",
        'C' => "CPUS(A/I/O/T)",
        'E' => "REASON",
        _ => "?",
    }
}

fn value(letter: char, group: &Group<'_>) -> String {
    let p = group.partition;
    let names: Vec<String> = group.nodes.iter().map(|n| n.name.clone()).collect();
    match letter {
        'P' if p.default => format!("{}*", p.name),
        'P' | 'R' => p.name.clone(),
        'a' => "up".into(),
        'l' => p
            .max_time_ms
            .map_or_else(|| "infinite".into(), output::duration),
        'D' => group.nodes.len().to_string(),
        't' => compact(group.state).into(),
        'T' => long(group.state).into(),
        'N' => hostlist::compress(&names),
        'c' => group
            .nodes
            .iter()
            .map(|n| n.cpus)
            .max()
            .unwrap_or(0)
            .to_string(),
        'm' => group
            .nodes
            .iter()
            .map(|n| n.memory_mb)
            .max()
            .unwrap_or(0)
            .to_string(),
        'C' => {
            let total: u64 = group.nodes.iter().map(|n| u64::from(n.cpus)).sum();
            let allocated: u64 = group
                .nodes
                .iter()
                .map(|n| u64::from(n.cpus_allocated))
                .sum();
            let other: u64 = group
                .nodes
                .iter()
                .filter(|n| matches!(n.node_state(), Some(NodeState::Down | NodeState::Drained)))
                .map(|n| u64::from(n.cpus) - u64::from(n.cpus_allocated.min(n.cpus)))
                .sum();
            let idle = total.saturating_sub(allocated).saturating_sub(other);
            format!("{allocated}/{idle}/{other}/{total}")
        }
        'E' => {
            let reason = group
                .nodes
                .iter()
                .map(|n| n.reason.as_str())
                .find(|r| !r.is_empty());
            reason.unwrap_or("none").to_string()
        }
        other => format!("%{other}"),
    }
}
