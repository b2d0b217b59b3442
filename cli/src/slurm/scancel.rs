//! `scancel`: cancel jobs by ID (an array's ID cancels every element, `12_3` one), or every job
//! that matches the filters (`-u`, `-p`, `-t`, `-n`, `--me`); with `--signal`, signal them
//! instead (their steps' tasks, `--batch` the batch shell, `--full` every process).

use super::jobs::{JobFilter, JobSelector, job_id_text, my_uid, parse_state};
use crate::client;
use beowulf_proto::v1;
use beowulf_types::jobfile::signal_number;
use clap::Parser;
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Parser)]
#[command(name = "scancel", version, about = "Cancel jobs (Slurm's scancel)")]
struct Args {
    /// Jobs to cancel: IDs, an array's ID (every element), `ARRAY_INDEX` (one element).
    job_ids: Vec<String>,
    /// Only jobs of these users.
    #[arg(short = 'u', long = "user", value_delimiter = ',')]
    users: Vec<String>,
    /// Only my jobs.
    #[arg(long)]
    me: bool,
    /// Only jobs of these partitions.
    #[arg(short = 'p', long = "partition", value_delimiter = ',')]
    partitions: Vec<String>,
    /// Only jobs in these states (`PENDING`, `R`, ...).
    #[arg(short = 't', long = "state", value_delimiter = ',')]
    states: Vec<String>,
    /// Only jobs with these names.
    #[arg(short = 'n', long = "name", alias = "jobname", value_delimiter = ',')]
    names: Vec<String>,
    /// Send this signal (a name or number) instead of ending the job: to its steps' tasks (a
    /// batch script's srun steps, or every task of a job run as its command), not the batch shell.
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    /// With --signal: to the batch shell alone.
    #[arg(short = 'b', long = "batch")]
    batch: bool,
    /// With --signal: to every process of the job, the batch shell included.
    #[arg(short = 'f', long = "full")]
    full: bool,
    /// Print nothing about jobs that could not be cancelled.
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    /// Say what is cancelled.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let signal = match &args.signal {
        None if args.batch || args.full => {
            anyhow::bail!("--batch and --full choose whom --signal reaches: give --signal too")
        }
        None => None,
        Some(name) => Some(signal_number(name).ok_or_else(|| {
            anyhow::anyhow!("--signal={name}: not a signal name or number (USR1, TERM, 10, ...)")
        })?),
    };
    let scope = match (args.batch, args.full) {
        (true, true) => anyhow::bail!("--batch and --full exclude each other"),
        (true, false) => v1::SignalScope::Batch,
        (false, true) => v1::SignalScope::Full,
        (false, false) => v1::SignalScope::Steps,
    };
    let filter = JobFilter {
        jobs: JobSelector::parse_all(&args.job_ids)?,
        users: args.users.clone(),
        uid: args.me.then(my_uid),
        partitions: args.partitions.clone(),
        states: args
            .states
            .iter()
            .map(|s| parse_state(s))
            .collect::<Result<_, _>>()?,
        names: args.names.clone(),
    };
    if args.job_ids.is_empty()
        && args.users.is_empty()
        && !args.me
        && args.partitions.is_empty()
        && args.states.is_empty()
        && args.names.is_empty()
    {
        anyhow::bail!("no job identification provided: give job IDs, or --user, --name, ...");
    }
    let mut c = client::connect(socket).await?;
    // Only live jobs can be cancelled; an ID that names none is reported.
    let jobs = client::list_jobs(&mut c, false).await?;
    let chosen: Vec<&v1::JobInfo> = jobs.iter().filter(|j| filter.matches(j)).collect();
    let mut failed = 0;
    for selector in &filter.jobs {
        if !chosen.iter().any(|j| selector.matches(j)) {
            let shown = match selector {
                JobSelector::Job(id) => id.to_string(),
                JobSelector::Element { array, index } => format!("{array}_{index}"),
            };
            if !args.quiet {
                eprintln!(
                    "scancel: error: Kill job error on job id {shown}: no such pending or running job"
                );
            }
            failed += 1;
        }
    }
    for job in chosen {
        // Each element on its own: an array's ID was expanded to its elements above.
        let done = match signal {
            Some(signal) => c
                .signal_job(v1::SignalJobRequest {
                    job_id: job.id,
                    whole_array: false,
                    signal,
                    scope: scope as i32,
                })
                .await
                .map(|_| "signalled"),
            None => c
                .cancel(v1::CancelRequest {
                    job_id: job.id,
                    whole_array: false,
                })
                .await
                .map(|_| "cancelled"),
        };
        match done {
            Ok(what) if args.verbose => eprintln!("scancel: {what} job {}", job_id_text(job)),
            Ok(_) => {}
            Err(status) => {
                if !args.quiet {
                    let what = if signal.is_some() { "Signal" } else { "Kill" };
                    eprintln!(
                        "scancel: error: {what} job error on job id {}: {}",
                        job_id_text(job),
                        status.message()
                    );
                }
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}
