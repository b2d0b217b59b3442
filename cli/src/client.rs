//! A connection to headnoded's unix socket, and how its errors read to a user.

use anyhow::Context;
use beowulf_proto::v1::{self, cluster_client::ClusterClient};
use std::path::Path;
use tonic::transport::Channel;

pub type Client = ClusterClient<Channel>;

/// Connects to headnoded over its unix socket (the head identifies us by our uid).
pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let channel = beowulf_proto::local_socket::connect_unix(socket, "http://headnoded")
        .await
        .with_context(|| {
            format!(
                "cannot reach headnoded at {}: is the cluster up? (`cluster init --nodes 5 --local` starts a local one; \
                 set BEOWULF_SOCKET or --socket if it listens elsewhere; a user holding 64 connections to it already \
                 is refused more)",
                socket.display()
            )
        })?;
    Ok(ClusterClient::new(channel))
}

/// Every job the head lists (`all`: ended ones too), page after page.
pub async fn list_jobs(c: &mut Client, all: bool) -> anyhow::Result<Vec<v1::JobInfo>> {
    let mut jobs: Vec<v1::JobInfo> = Vec::new();
    loop {
        let page = c
            .list_jobs(v1::ListJobsRequest {
                all,
                after_job_id: jobs.last().map_or(0, |j| j.id),
                limit: 0,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        jobs.extend(page.jobs);
        if !page.more {
            return Ok(jobs);
        }
    }
}

/// Every node the head knows.
pub async fn list_nodes(c: &mut Client) -> anyhow::Result<Vec<v1::NodeInfo>> {
    let reply = c
        .list_nodes(v1::ListNodesRequest {})
        .await
        .map_err(status_error)?;
    Ok(reply.into_inner().nodes)
}

/// The cluster's partitions (one, `all`, when none is configured).
pub async fn list_partitions(c: &mut Client) -> anyhow::Result<Vec<v1::PartitionInfo>> {
    let reply = c
        .list_partitions(v1::ListPartitionsRequest {})
        .await
        .map_err(status_error)?;
    Ok(reply.into_inner().partitions)
}

/// Turns a gRPC status into an error that reads as the head's own message.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
