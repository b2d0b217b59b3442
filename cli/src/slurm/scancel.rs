//! `scancel`: cancel jobs by ID (an array's ID cancels every element, `12_3` one), or every job
//! that matches the filters (`-u`, `-p`, `-t`, `-n`, `--me`).

use super::jobs::{JobFilter, JobSelector, job_id_text, my_uid, parse_state};
use crate::client;
use beowulf_proto::v1;
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
    /// Send this signal instead of ending the job.
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    /// Print nothing about jobs that could not be cancelled.
    #[arg(short = 'Q', long = "quiet")]
    quiet: bool,
    /// Say what is cancelled.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    if let Some(signal) = &args.signal {
        anyhow::bail!(
            "--signal={signal} is not supported yet: a cancelled job's tasks are killed; \
             cancel it without --signal"
        );
    }
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
        let request = v1::CancelRequest {
            job_id: job.id,
            whole_array: false,
        };
        match c.cancel(request).await {
            Ok(_) if args.verbose => eprintln!("scancel: cancelled job {}", job_id_text(job)),
            Ok(_) => {}
            Err(status) => {
                if !args.quiet {
                    eprintln!(
                        "scancel: error: Kill job error on job id {}: {}",
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
