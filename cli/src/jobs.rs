//! `cluster queue|show|cancel|why`: what users ask about their jobs.

use crate::{client, local, output};
use beowulf_proto::v1;
use beowulf_types::JobState;
use std::path::Path;

/// `cluster queue [--all] [--json]`: every page of the job list.
pub async fn queue(socket: &Path, all: bool, json: bool) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let jobs = client::list_jobs(&mut c, all).await?;
    if json {
        let list: Vec<_> = jobs.iter().map(output::job_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{}",
            output::printable(&output::queue_table(&jobs, local::now_ms()))
        );
    }
    Ok(0)
}

/// `cluster show JOB [--json]`.
pub async fn show(socket: &Path, job: u64, json: bool) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let info = c
        .show_job(v1::ShowJobRequest { job_id: job })
        .await
        .map_err(client::status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output::job_json(&info))?
        );
    } else {
        print!("{}", output::printable(&output::job_details(&info)));
    }
    Ok(0)
}

/// `cluster cancel JOB...`: each job in turn; the exit code is 1 when any was refused.
pub async fn cancel(socket: &Path, jobs: Vec<u64>) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let mut failed = 0;
    for job in jobs {
        let request = v1::CancelRequest {
            job_id: job,
            whole_array: true,
        };
        match c.cancel(request).await {
            Ok(_) => println!("cancelled job {job}"),
            Err(status) => {
                eprintln!("error: {}", status.message());
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// `cluster why JOB [--json]`.
pub async fn why(socket: &Path, job: u64, json: bool) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let why = c
        .why(v1::ShowJobRequest { job_id: job })
        .await
        .map_err(client::status_error)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "id": why.job_id,
                "state": why.state,
                "reason": why.reason,
                "starts_now": why.starts_now,
                "priority": why.priority,
                "estimated_start_ms": why.estimated_start_ms,
                "blockers": why.blockers,
            }))?
        );
    } else if why.job_state() != Some(JobState::Pending) {
        println!("job {job} is {}, not waiting", why.state);
    } else {
        print!("{}", why.text);
        if let Some(t) = why.estimated_start_ms {
            println!(
                "expected to start in ~{}",
                output::duration(t.saturating_sub(local::now_ms()))
            );
        }
    }
    Ok(0)
}
