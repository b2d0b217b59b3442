//! `cluster queue|show|cancel|why|hold|release|requeue|update`: what users ask about, and do
//! to, their jobs.

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

/// What `cluster hold|release|requeue` and scontrol's do to jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `user`: a user hold even when root holds (`scontrol uhold`).
    Hold {
        user: bool,
    },
    Release,
    Requeue,
}

impl Control {
    /// What became of a job, for messages: `held job 12`.
    pub fn done(self) -> &'static str {
        match self {
            Control::Hold { .. } => "held",
            Control::Release => "released",
            Control::Requeue => "requeued",
        }
    }

    /// Asks the head; `whole_array`: an array's ID acts on every element. The jobs it changed.
    pub async fn send(
        self,
        c: &mut client::Client,
        job_id: u64,
        whole_array: bool,
    ) -> Result<Vec<u64>, tonic::Status> {
        let request = v1::JobControlRequest {
            job_id,
            whole_array,
            user_hold: matches!(self, Control::Hold { user: true }),
        };
        let reply = match self {
            Control::Hold { .. } => c.hold(request).await?,
            Control::Release => c.release(request).await?,
            Control::Requeue => c.requeue(request).await?,
        };
        Ok(reply.into_inner().job_ids)
    }
}

/// `cluster hold|release|requeue JOB...`: each job in turn (an array's ID: every element); the
/// exit code is 1 when any was refused.
pub async fn control(socket: &Path, action: Control, jobs: Vec<u64>) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let mut failed = 0;
    for job in jobs {
        match action.send(&mut c, job, true).await {
            Ok(changed) => {
                for id in changed {
                    println!("{} job {id}", action.done());
                }
            }
            Err(status) => {
                eprintln!("error: {}", status.message());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}

/// `cluster update JOB --time ... --partition ... --name ... --nodes ... --ntasks ...`.
pub async fn update(socket: &Path, request: v1::UpdateJobRequest) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    let job = request.job_id;
    let info = c
        .update_job(request)
        .await
        .map_err(client::status_error)?
        .into_inner();
    println!(
        "updated job {job}: {} nodes, {} tasks, time limit {}, partition {}, name {}",
        info.num_nodes,
        info.ntasks,
        output::duration(info.time_limit_ms),
        info.partition,
        info.name
    );
    Ok(0)
}

/// A time limit as `--time` and `TimeLimit=` take it (minutes, `MM:SS`, `HH:MM:SS`,
/// `D-HH:MM:SS`), in milliseconds.
pub fn parse_time_limit(text: &str) -> anyhow::Result<u64> {
    beowulf_types::jobfile::parse_time_limit(&toml::Value::String(text.to_string()))
        .map_err(|e| anyhow::anyhow!("time limit {e}"))
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
