//! Allocations for interactive work: `salloc`, and `srun` outside a job, submit a job that runs
//! nothing itself (`allocation = true`), wait for it to start, give their command the job's
//! `SLURM_*` variables, and end the job with the command's exit code.
//!
//! ```text
//!  Submit(allocation) ─▶ "Pending job allocation N" ─▶ WatchJob ... RUNNING ─▶ "Granted job
//!  allocation N" ─▶ the command (salloc: a shell here; srun: a step on the job's nodes) ─▶
//!  EndAllocation(N, exit code) ─▶ COMPLETED / FAILED
//!  Ctrl-C while pending ─▶ EndAllocation (the job is cancelled) ─▶ "revoked", exit 1
//! ```

use crate::client::{self, Client};
use beowulf_proto::v1;
use beowulf_types::{JobState, hostlist};
use std::collections::HashMap;
use tokio_stream::StreamExt;

/// The job file of an allocation: everything else comes from the options.
const ALLOCATION_JOB_FILE: &str = "allocation = true\n";

/// Submits an allocation with `overrides` (job-file field → value, as sbatch's options) and
/// waits until it runs. `Err(code)`: it never ran (refused, revoked, or the user gave up while
/// it waited), and the message was printed.
pub async fn allocate(
    client: &mut Client,
    who: &str,
    overrides: HashMap<String, String>,
    quiet: bool,
) -> anyhow::Result<Result<v1::JobInfo, i32>> {
    let cwd = std::env::current_dir()?;
    let request = v1::SubmitRequest {
        file_name: who.to_string(),
        file_text: ALLOCATION_JOB_FILE.to_string(),
        cwd: cwd.display().to_string(),
        env: std::env::vars().collect(),
        overrides,
        umask: Some(crate::submit::current_umask()),
        test_only: false,
    };
    let reply = match client.submit(request).await {
        Ok(reply) => reply.into_inner(),
        Err(status) => {
            eprintln!("{who}: error: {}", client::status_error(status));
            return Ok(Err(1));
        }
    };
    for warning in &reply.warnings {
        eprintln!("{who}: warning: {warning}");
    }
    let id = reply.job_id;
    if !quiet {
        eprintln!("{who}: Pending job allocation {id}");
    }
    let mut events = client
        .watch_job(v1::ShowJobRequest { job_id: id })
        .await
        .map_err(client::status_error)?
        .into_inner();
    let mut interrupt = Interrupts::new()?;
    let mut said_waiting = false;
    loop {
        tokio::select! {
            info = events.next() => {
                let Some(info) = info else {
                    eprintln!("{who}: error: the head stopped following job {id}");
                    return Ok(Err(1));
                };
                let info = info.map_err(client::status_error)?;
                match info.job_state() {
                    Some(JobState::Running) => {
                        if !quiet {
                            if said_waiting {
                                eprintln!("{who}: job {id} has been allocated resources");
                            }
                            eprintln!("{who}: Granted job allocation {id}");
                        }
                        return Ok(Ok(info));
                    }
                    Some(state) if state.is_terminal() => {
                        eprintln!("{who}: error: Job allocation {id} has been revoked: {}", info.reason);
                        return Ok(Err(1));
                    }
                    _ if !said_waiting && !quiet => {
                        said_waiting = true;
                        eprintln!("{who}: job {id} queued and waiting for resources ({})", info.reason);
                    }
                    _ => {}
                }
            }
            () = interrupt.next() => {
                // As Slurm's salloc: the user gave up waiting; the job goes away.
                let _ = end(client, id, 1).await;
                eprintln!("{who}: Job allocation {id} has been revoked.");
                return Ok(Err(1));
            }
        }
    }
}

/// Ends allocation `id`: its command ended with `exit_code`. An allocation that already ended
/// (its time limit, a cancel) is said, not an error.
pub async fn end(client: &mut Client, id: u64, exit_code: i32) -> anyhow::Result<()> {
    match client
        .end_allocation(v1::EndAllocationRequest {
            job_id: id,
            exit_code,
        })
        .await
    {
        Ok(_) => Ok(()),
        // Its time limit or a cancel ended it first: nothing is left to end.
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(status) => Err(client::status_error(status)),
    }
}

/// The `SLURM_*` variables of a running job, as salloc gives its command and srun its step.
pub fn allocation_env(info: &v1::JobInfo, submit_dir: &str) -> Vec<(String, String)> {
    let nodelist = hostlist::compress(&info.nodes);
    let nodes = info.nodes.len().to_string();
    let per_node = if info.nodes.is_empty() {
        0
    } else {
        info.ntasks.div_ceil(info.nodes.len() as u32)
    };
    [
        ("SLURM_JOB_ID", info.id.to_string()),
        ("SLURM_JOBID", info.id.to_string()),
        ("SLURM_JOB_NAME", info.name.clone()),
        ("SLURM_JOB_NODELIST", nodelist.clone()),
        ("SLURM_NODELIST", nodelist),
        ("SLURM_NNODES", nodes.clone()),
        ("SLURM_JOB_NUM_NODES", nodes),
        ("SLURM_NTASKS", info.ntasks.to_string()),
        ("SLURM_NPROCS", info.ntasks.to_string()),
        ("SLURM_NTASKS_PER_NODE", per_node.to_string()),
        ("SLURM_CPUS_PER_TASK", info.cpus_per_task.max(1).to_string()),
        ("SLURM_MEM_PER_NODE", info.memory_mb.to_string()),
        ("SLURM_JOB_PARTITION", info.partition.clone()),
        ("SLURM_JOB_USER", info.user.clone()),
        ("SLURM_JOB_UID", info.uid.to_string()),
        ("SLURM_SUBMIT_DIR", submit_dir.to_string()),
        ("BEOWULF_JOB_ID", info.id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Ctrl-C, SIGTERM and SIGHUP while an allocation waits: each means "give up".
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> std::io::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Interrupts {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_job_gives_slurms_variables() {
        let info = v1::JobInfo {
            id: 42,
            name: "bash".into(),
            nodes: vec!["node1".into(), "node2".into(), "node3".into()],
            ntasks: 4,
            cpus_per_task: 2,
            partition: "all".into(),
            ..Default::default()
        };
        let env: HashMap<String, String> = allocation_env(&info, "/home/ada").into_iter().collect();
        assert_eq!(env["SLURM_JOB_ID"], "42");
        assert_eq!(env["SLURM_JOB_NODELIST"], "node[1-3]");
        assert_eq!(env["SLURM_NNODES"], "3");
        assert_eq!(env["SLURM_NTASKS"], "4");
        assert_eq!(env["SLURM_NTASKS_PER_NODE"], "2");
        assert_eq!(env["SLURM_CPUS_PER_TASK"], "2");
        assert_eq!(env["SLURM_SUBMIT_DIR"], "/home/ada");
    }
}
