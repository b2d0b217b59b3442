//! `squeue`: pending and running jobs, in Slurm's columns or a `-o`/`--format` of `%` fields.

use super::format::{parse_format, render};
use super::jobs::{
    JobFilter, JobSelector, compact_state, elapsed_ms, job_id_text, my_uid, parse_state, slurm_time,
};
use crate::{client, local, output};
use beowulf_proto::v1;
use beowulf_types::{JobState, hostlist};
use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::Path;

/// squeue's default columns.
const DEFAULT_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R";
/// `squeue --long`'s.
const LONG_FORMAT: &str = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R";

#[derive(Debug, Parser)]
#[command(
    name = "squeue",
    version,
    about = "View jobs in the queue (Slurm's squeue)",
    disable_help_flag = true
)]
struct Args {
    /// Print no header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    /// Output format: `%i %j %t ...` (see `man squeue`), `%.10M` right-justified in 10 columns.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Jobs to show: IDs, `ARRAY_INDEX` for one element, comma-separated.
    #[arg(short = 'j', long = "jobs", value_delimiter = ',')]
    jobs: Vec<String>,
    /// Users whose jobs to show.
    #[arg(short = 'u', long = "user", value_delimiter = ',')]
    users: Vec<String>,
    /// Only my jobs.
    #[arg(long)]
    me: bool,
    /// Partitions whose jobs to show.
    #[arg(short = 'p', long = "partition", value_delimiter = ',')]
    partitions: Vec<String>,
    /// States to show (`PD,R`, `all`); default: pending and running.
    #[arg(short = 't', long = "states", value_delimiter = ',')]
    states: Vec<String>,
    /// Job names to show.
    #[arg(short = 'n', long = "name", value_delimiter = ',')]
    names: Vec<String>,
    /// Jobs of every partition (what squeue shows here anyway).
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// One line per array element (without it, an array's pending elements share one line:
    /// `12_[3-5,9]`).
    #[arg(short = 'r', long = "array")]
    array: bool,
    /// The long columns: the state's name and the time limit.
    #[arg(short = 'l', long = "long")]
    long: bool,
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let _ = args.all;
    let mut filter = JobFilter {
        jobs: JobSelector::parse_all(&args.jobs)?,
        users: args.users.clone(),
        uid: args.me.then(my_uid),
        partitions: args.partitions.clone(),
        states: Vec::new(),
        names: args.names.clone(),
    };
    let every_state = args.states.iter().any(|s| s.eq_ignore_ascii_case("all"));
    if !every_state {
        filter.states = if args.states.is_empty() {
            vec![JobState::Pending, JobState::Running]
        } else {
            args.states
                .iter()
                .map(|s| parse_state(s))
                .collect::<Result<_, _>>()?
        };
    }
    let mut c = client::connect(socket).await?;
    let jobs = client::list_jobs(&mut c, every_state || filter.needs_ended_jobs()).await?;
    let format = args.format.as_deref().unwrap_or(if args.long {
        LONG_FORMAT
    } else {
        DEFAULT_FORMAT
    });
    let fields = parse_format(format);
    let now = local::now_ms();
    if !args.noheader {
        println!("{}", render(&fields, |f| header(f).to_string()));
    }
    for row in rows(jobs.iter().filter(|j| filter.matches(j)), args.array) {
        let line = render(&fields, |f| value(f, &row, now));
        println!("{}", output::printable(&line));
    }
    Ok(0)
}

/// The `%` letters squeue prints here, with their column titles.
pub const FIELDS: &[(char, &str)] = &[
    ('i', "JOBID"),
    ('A', "JOBID"),
    ('F', "ARRAY_JOB_ID"),
    ('K', "ARRAY_TASK_ID"),
    ('j', "NAME"),
    ('u', "USER"),
    ('U', "UID"),
    ('t', "ST"),
    ('T', "STATE"),
    ('P', "PARTITION"),
    ('M', "TIME"),
    ('l', "TIME_LIMIT"),
    ('D', "NODES"),
    ('C', "CPUS"),
    ('R', "NODELIST(REASON)"),
    ('r', "REASON"),
    ('N', "NODELIST"),
    ('Q', "PRIORITY"),
    ('q', "QOS"),
    ('a', "ACCOUNT"),
    ('S', "START_TIME"),
    ('V', "SUBMIT_TIME"),
    ('e', "END_TIME"),
    ('m', "MIN_MEMORY"),
    ('Z', "WORK_DIR"),
    ('o', "COMMAND"),
];

fn header(letter: char) -> &'static str {
    FIELDS
        .iter()
        .find(|(l, _)| *l == letter)
        .map_or("?", |(_, title)| title)
}

/// One line of squeue: a job, or the pending elements of one array together, as Slurm shows
/// them (`12_[3-5,9]`) unless asked for one line each (`-r`).
#[derive(Debug)]
struct Row<'a> {
    job: &'a v1::JobInfo,
    /// The indices of the array's pending elements on this line (`3-5,9`), when more than one.
    indices: Option<String>,
}

fn rows<'a>(jobs: impl Iterator<Item = &'a v1::JobInfo>, one_per_element: bool) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = Vec::new();
    // Per array, the line of its pending elements and their indices.
    let mut pending: std::collections::BTreeMap<u64, (usize, Vec<u32>)> = Default::default();
    for job in jobs {
        let element = job.array_job_id.zip(job.array_task_id);
        match element {
            Some((array, index))
                if !one_per_element && job.job_state() == Some(JobState::Pending) =>
            {
                match pending.get_mut(&array) {
                    Some((_, indices)) => indices.push(index),
                    None => {
                        pending.insert(array, (rows.len(), vec![index]));
                        rows.push(Row { job, indices: None });
                    }
                }
            }
            _ => rows.push(Row { job, indices: None }),
        }
    }
    for (line, indices) in pending.into_values() {
        if indices.len() > 1 {
            rows[line].indices = Some(index_ranges(indices));
        }
    }
    rows
}

/// Indices as Slurm writes them: `1-3,7,9-10`.
fn index_ranges(mut indices: Vec<u32>) -> String {
    indices.sort_unstable();
    indices.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end.saturating_add(1) {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn value(letter: char, row: &Row<'_>, now: u64) -> String {
    let job = row.job;
    let state = job.job_state();
    let nodes = || hostlist::compress(&job.nodes);
    match letter {
        'i' => match (&row.indices, job.array_job_id) {
            (Some(indices), Some(array)) => format!("{array}_[{indices}]"),
            _ => job_id_text(job),
        },
        'A' => job.id.to_string(),
        'F' => job.array_job_id.unwrap_or(job.id).to_string(),
        'K' => match &row.indices {
            Some(indices) => format!("[{indices}]"),
            None => job
                .array_task_id
                .map_or_else(|| "N/A".to_string(), |i| i.to_string()),
        },
        'j' => job.name.clone(),
        'u' => job.user.clone(),
        'U' => job.uid.to_string(),
        't' => state.map_or("?", compact_state).to_string(),
        'T' => job.state.clone(),
        'P' => job.partition.clone(),
        'M' => output::duration(elapsed_ms(job, now)),
        'l' => output::duration(job.time_limit_ms),
        'D' => job.num_nodes.to_string(),
        'C' => (u64::from(job.ntasks) * u64::from(job.cpus_per_task)).to_string(),
        'R' if state == Some(JobState::Pending) => format!("({})", job.reason),
        'R' => nodes(),
        'r' if job.reason.is_empty() => "None".to_string(),
        'r' => job.reason.clone(),
        'N' => nodes(),
        'Q' => job.priority.to_string(),
        'q' => job.qos.clone(),
        'a' => job.account.clone(),
        'S' => slurm_time(job.start_time_ms.or(job.estimated_start_ms), "N/A"),
        'V' => slurm_time(Some(job.submit_time_ms), "N/A"),
        'e' => slurm_time(job.end_time_ms, "N/A"),
        'm' => format!("{}M", job.memory_mb),
        'Z' => job.workdir.clone(),
        'o' => "(batch)".to_string(),
        other => format!("%{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_as_squeue_reads_them() {
        let job = v1::JobInfo {
            id: 13,
            array_job_id: Some(12),
            array_task_id: Some(1),
            name: "a-very-long-job-name".into(),
            state: "PENDING".into(),
            reason: "Priority".into(),
            num_nodes: 2,
            ..Default::default()
        };
        let row = Row {
            job: &job,
            indices: None,
        };
        let line = render(&parse_format("%.6i|%5j|%t|%R|100%%"), |f| value(f, &row, 0));
        assert_eq!(line, "  12_1|a-ver|PD|(Priority)|100%");
        let header = render(&parse_format(DEFAULT_FORMAT), |f| header(f).to_string());
        assert_eq!(
            header,
            "             JOBID PARTITION     NAME     USER ST       TIME  NODES NODELIST(REASON)"
        );
        // parsl's format: ID and compact state, space-separated.
        let running = v1::JobInfo {
            id: 7,
            state: "RUNNING".into(),
            nodes: vec!["node1".into(), "node2".into()],
            ..Default::default()
        };
        assert_eq!(
            render(&parse_format("%i %t %R"), |f| value(
                f,
                &Row {
                    job: &running,
                    indices: None
                },
                0
            )),
            "7 R node[1-2]"
        );
    }

    #[test]
    fn pending_elements_of_an_array_share_a_line_unless_asked_for_each() {
        let element = |id: u64, index: u32, state: &str| v1::JobInfo {
            id,
            array_job_id: Some(10),
            array_task_id: Some(index),
            state: state.into(),
            ..Default::default()
        };
        let jobs = [
            element(10, 1, "RUNNING"),
            element(11, 2, "PENDING"),
            element(12, 3, "PENDING"),
            element(13, 4, "PENDING"),
            element(15, 7, "PENDING"),
        ];
        let ids = |one_per_element: bool| -> Vec<String> {
            rows(jobs.iter(), one_per_element)
                .iter()
                .map(|r| value('i', r, 0))
                .collect()
        };
        assert_eq!(ids(false), ["10_1", "10_[2-4,7]"]);
        assert_eq!(ids(true).len(), 5);
        assert_eq!(index_ranges(vec![9, 1, 2, 3, 5]), "1-3,5,9");
    }
}
