//! `cluster nodes|drain|resume`: the nodes and what the admin does to them.

use crate::{client, output};
use beowulf_proto::v1;
use std::path::Path;

/// `cluster nodes [--json]`.
pub async fn list(socket: &Path, json: bool) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let nodes = c
        .list_nodes(v1::ListNodesRequest {})
        .await
        .map_err(client::status_error)?
        .into_inner()
        .nodes;
    if json {
        let list: Vec<_> = nodes.iter().map(output::node_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{}", output::printable(&output::nodes_table(&nodes)));
    }
    Ok(0)
}

/// `cluster drain NODE --reason WHY`.
pub async fn drain(socket: &Path, node: String, reason: String) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let info = c
        .drain(v1::DrainRequest { node, reason })
        .await
        .map_err(client::status_error)?
        .into_inner();
    println!("{} is {}", info.name, info.state);
    Ok(0)
}

/// `cluster resume NODE`.
pub async fn resume(socket: &Path, node: String) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let info = c
        .resume(v1::ResumeRequest { node })
        .await
        .map_err(client::status_error)?
        .into_inner();
    println!("{} is {}", info.name, info.state);
    Ok(0)
}
