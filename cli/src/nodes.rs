//! `cluster nodes|drain|resume`: the nodes and what the admin does to them.

use crate::{client, output};
use beowulf_proto::v1;
use std::path::Path;

/// `cluster nodes [--json]`.
pub async fn list(socket: &Path, json: bool) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let nodes = client::list_nodes(&mut c).await?;
    if json {
        let list: Vec<_> = nodes.iter().map(output::node_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{}", output::printable(&output::nodes_table(&nodes)));
    }
    Ok(0)
}

/// The nodes of a host list (`node[1-4],gpu7`), for commands that act on each.
fn host_list(nodes: &str) -> anyhow::Result<Vec<String>> {
    beowulf_types::hostlist::expand(nodes).map_err(|e| anyhow::anyhow!("`{nodes}`: {e}"))
}

/// `cluster drain NODES --reason WHY`: each node of the host list in turn; the exit code is 1
/// when any was refused.
pub async fn drain(socket: &Path, nodes: String, reason: String) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let mut failed = 0;
    for node in host_list(&nodes)? {
        let request = v1::DrainRequest {
            node,
            reason: reason.clone(),
        };
        match c.drain(request).await {
            Ok(info) => {
                let info = info.into_inner();
                println!("{} is {}", info.name, info.state);
            }
            Err(status) => {
                eprintln!("error: {}", status.message());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}

/// `cluster resume NODES`: each node of the host list in turn.
pub async fn resume(socket: &Path, nodes: String) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let mut failed = 0;
    for node in host_list(&nodes)? {
        match c.resume(v1::ResumeRequest { node }).await {
            Ok(info) => {
                let info = info.into_inner();
                println!("{} is {}", info.name, info.state);
            }
            Err(status) => {
                eprintln!("error: {}", status.message());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}
