//! `sacct`: jobs that ran or run, with `--format` fields and `--parsable2` output that tools
//! parse. Jobs have no steps here, so `-X` (allocations only) changes nothing.

use super::jobs::{
    JobFilter, JobSelector, elapsed_ms, job_id_text, my_uid, parse_state, slurm_time,
};
use crate::{client, local, output};
use beowulf_proto::v1;
use beowulf_types::{JobState, UtcTime, hostlist};
use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::Path;

/// sacct's default fields.
const DEFAULT_FIELDS: &str = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode";
/// `sacct --brief`'s.
const BRIEF_FIELDS: &str = "JobID,State,ExitCode";
/// `sacct --long`'s (those of Slurm's long list that exist here).
const LONG_FIELDS: &str = "JobID,JobIDRaw,JobName,Partition,Account,User,UID,AllocCPUS,NNodes,NTasks,ReqMem,Timelimit,Submit,Start,End,Elapsed,ElapsedRaw,State,ExitCode,NodeList,WorkDir";

/// One field sacct can print: its name, its default width, and its value.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub width: usize,
    pub value: fn(&v1::JobInfo, u64) -> String,
}

/// Every field this sacct prints, in Slurm's spelling (matched without regard to case).
pub const FIELDS: &[Field] = &[
    Field {
        name: "JobID",
        width: 12,
        value: |j, _| job_id_text(j),
    },
    Field {
        name: "JobIDRaw",
        width: 12,
        value: |j, _| j.id.to_string(),
    },
    Field {
        name: "JobName",
        width: 10,
        value: |j, _| j.name.clone(),
    },
    Field {
        name: "Partition",
        width: 10,
        value: |j, _| j.partition.clone(),
    },
    Field {
        name: "Account",
        width: 10,
        value: |j, _| j.account.clone(),
    },
    Field {
        name: "User",
        width: 9,
        value: |j, _| j.user.clone(),
    },
    Field {
        name: "UID",
        width: 6,
        value: |j, _| j.uid.to_string(),
    },
    Field {
        name: "AllocCPUS",
        width: 10,
        value: |j, _| alloc_cpus(j).to_string(),
    },
    Field {
        name: "NCPUS",
        width: 10,
        value: |j, _| alloc_cpus(j).to_string(),
    },
    Field {
        name: "AllocNodes",
        width: 10,
        value: |j, _| allocated(j, j.num_nodes).to_string(),
    },
    Field {
        name: "NNodes",
        width: 8,
        value: |j, _| j.num_nodes.to_string(),
    },
    Field {
        name: "NTasks",
        width: 8,
        value: |j, _| j.ntasks.to_string(),
    },
    Field {
        name: "ReqCPUS",
        width: 8,
        value: |j, _| (u64::from(j.ntasks) * u64::from(j.cpus_per_task)).to_string(),
    },
    Field {
        name: "ReqMem",
        width: 10,
        value: |j, _| format!("{}M", j.memory_mb),
    },
    Field {
        name: "ReqNodes",
        width: 8,
        value: |j, _| j.num_nodes.to_string(),
    },
    Field {
        name: "Timelimit",
        width: 10,
        value: |j, _| elapsed_text(j.time_limit_ms),
    },
    Field {
        name: "TimelimitRaw",
        width: 12,
        value: |j, _| (j.time_limit_ms / 60_000).to_string(),
    },
    Field {
        name: "Submit",
        width: 19,
        value: |j, _| slurm_time(Some(j.submit_time_ms), "Unknown"),
    },
    Field {
        name: "Eligible",
        width: 19,
        value: |j, _| slurm_time(Some(j.submit_time_ms), "Unknown"),
    },
    Field {
        name: "Start",
        width: 19,
        value: |j, _| slurm_time(j.start_time_ms, "Unknown"),
    },
    Field {
        name: "End",
        width: 19,
        value: |j, _| slurm_time(j.end_time_ms, "Unknown"),
    },
    Field {
        name: "Elapsed",
        width: 10,
        value: |j, now| elapsed_text(elapsed_ms(j, now)),
    },
    Field {
        name: "ElapsedRaw",
        width: 10,
        value: |j, now| (elapsed_ms(j, now) / 1000).to_string(),
    },
    Field {
        name: "State",
        width: 10,
        value: |j, _| j.state.clone(),
    },
    Field {
        name: "ExitCode",
        width: 8,
        value: |j, _| exit_code(j),
    },
    Field {
        name: "DerivedExitCode",
        width: 10,
        value: |j, _| exit_code(j),
    },
    Field {
        name: "NodeList",
        width: 15,
        value: |j, _| node_list(j),
    },
    Field {
        name: "WorkDir",
        width: 20,
        value: |j, _| j.workdir.clone(),
    },
    Field {
        name: "Reason",
        width: 20,
        value: |j, _| {
            if j.reason.is_empty() {
                "None".into()
            } else {
                j.reason.clone()
            }
        },
    },
    Field {
        name: "QOS",
        width: 10,
        value: |j, _| j.qos.clone(),
    },
    Field {
        name: "Priority",
        width: 10,
        value: |j, _| j.priority.to_string(),
    },
    Field {
        name: "Cluster",
        width: 10,
        value: |_, _| "beowulf".into(),
    },
];

#[derive(Debug, Parser)]
#[command(
    name = "sacct",
    version,
    about = "Accounting of jobs (Slurm's sacct)",
    disable_help_flag = true
)]
struct Args {
    /// Jobs to show: IDs, an array's ID (every element), `ARRAY_INDEX`.
    #[arg(short = 'j', long = "jobs", value_delimiter = ',')]
    jobs: Vec<String>,
    /// Fields to print, comma-separated (`JobID,State,Elapsed`; `Name%30` sets a width).
    #[arg(short = 'o', long = "format", value_delimiter = ',')]
    format: Vec<String>,
    /// Fields separated by `|`, none after the last.
    #[arg(short = 'P', long = "parsable2")]
    parsable2: bool,
    /// Fields followed by `|`.
    #[arg(short = 'p', long = "parsable")]
    parsable: bool,
    /// No header.
    #[arg(short = 'n', long = "noheader")]
    noheader: bool,
    /// Only allocations, not steps (jobs have no steps here: the same list).
    #[arg(short = 'X', long = "allocations")]
    allocations: bool,
    /// Jobs of these users (default: yours, unless -j or --allusers).
    #[arg(short = 'u', long = "user", value_delimiter = ',')]
    users: Vec<String>,
    /// Jobs of every user.
    #[arg(short = 'a', long = "allusers")]
    allusers: bool,
    /// Only jobs in these states.
    #[arg(short = 's', long = "state", value_delimiter = ',')]
    states: Vec<String>,
    /// Only jobs with these names.
    #[arg(long = "name", value_delimiter = ',')]
    names: Vec<String>,
    /// Only jobs that were not over before this time (`YYYY-MM-DD[THH:MM[:SS]]`, UTC).
    #[arg(short = 'S', long = "starttime")]
    starttime: Option<String>,
    /// Only jobs submitted before this time (`YYYY-MM-DD[THH:MM[:SS]]`, UTC; `now`).
    #[arg(short = 'E', long = "endtime")]
    endtime: Option<String>,
    /// Only JobID, State and ExitCode.
    #[arg(short = 'b', long = "brief")]
    brief: bool,
    /// Many fields.
    #[arg(short = 'l', long = "long")]
    long: bool,
    #[arg(short = 'h', long, action = ArgAction::Help)]
    help: Option<bool>,
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let _ = args.allocations;
    let default = if args.brief {
        BRIEF_FIELDS
    } else if args.long {
        LONG_FIELDS
    } else {
        DEFAULT_FIELDS
    };
    let requested: Vec<String> = if args.format.is_empty() {
        default.split(',').map(str::to_string).collect()
    } else {
        args.format.clone()
    };
    let columns = requested
        .iter()
        .map(|f| column(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mine_only = args.jobs.is_empty() && args.users.is_empty() && !args.allusers;
    let filter = JobFilter {
        jobs: JobSelector::parse_all(&args.jobs)?,
        users: args.users.clone(),
        uid: mine_only.then(my_uid),
        partitions: Vec::new(),
        states: args
            .states
            .iter()
            .map(|s| parse_state(s))
            .collect::<Result<_, _>>()?,
        names: args.names.clone(),
    };
    let since = args.starttime.as_deref().map(parse_time).transpose()?;
    let until = args.endtime.as_deref().map(parse_time).transpose()?;
    let mut c = client::connect(socket).await?;
    let jobs = client::list_jobs(&mut c, true).await?;
    let now = local::now_ms();
    let chosen = jobs.iter().filter(|j| {
        filter.matches(j)
            && since.is_none_or(|s| j.end_time_ms.is_none_or(|e| e >= s))
            && until.is_none_or(|u| j.submit_time_ms <= u)
    });
    let separator = if args.parsable2 || args.parsable {
        Some("|")
    } else {
        None
    };
    let mut out = String::new();
    if !args.noheader {
        out.push_str(&line(&columns, separator, args.parsable, |c| {
            c.0.name.to_string()
        }));
        if separator.is_none() {
            out.push_str(&line(&columns, None, false, |c| "-".repeat(c.1)));
        }
    }
    for job in chosen {
        out.push_str(&line(&columns, separator, args.parsable, |c| {
            (c.0.value)(job, now)
        }));
    }
    print!("{}", output::printable(&out));
    Ok(0)
}

/// A requested field and its width (`Name%30`).
fn column(requested: &str) -> anyhow::Result<(&'static Field, usize)> {
    let (name, width) = match requested.trim().split_once('%') {
        Some((name, width)) => (
            name,
            Some(
                width
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("invalid field width in `{requested}`"))?
                    .min(1024),
            ),
        ),
        None => (requested.trim(), None),
    };
    let field = FIELDS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
            anyhow::anyhow!(
                "invalid field requested: \"{name}\"; the fields are {}",
                names.join(", ")
            )
        })?;
    Ok((field, width.unwrap_or(field.width)))
}

/// One output line: `|`-separated (with one after the last field for `--parsable`), or columns
/// of their width, a value too long cut and ended with `+` as sacct does.
fn line(
    columns: &[(&'static Field, usize)],
    separator: Option<&str>,
    trailing: bool,
    value: impl Fn(&(&'static Field, usize)) -> String,
) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| {
            let v = value(c);
            match separator {
                Some(_) => v,
                None => {
                    let left = c.0.name == "JobID" || c.0.name == "JobIDRaw";
                    super::format::fit(v, c.1, left)
                }
            }
        })
        .collect();
    super::format::join_line(&cells, separator, trailing)
}

/// CPUs a job holds or held: none while it waits.
fn alloc_cpus(job: &v1::JobInfo) -> u64 {
    allocated(job, u64::from(job.ntasks) * u64::from(job.cpus_per_task))
}

fn allocated<T: Default>(job: &v1::JobInfo, value: T) -> T {
    if job.start_time_ms.is_some() {
        value
    } else {
        T::default()
    }
}

fn node_list(job: &v1::JobInfo) -> String {
    if job.nodes.is_empty() {
        "None assigned".into()
    } else {
        hostlist::compress(&job.nodes)
    }
}

/// `code:signal`: a task killed by a signal ended with 128 + its number.
fn exit_code(job: &v1::JobInfo) -> String {
    match job.exit_code {
        None => "0:0".into(),
        Some(code)
            if (129..=192).contains(&code) && job.job_state() != Some(JobState::Completed) =>
        {
            format!("0:{}", code - 128)
        }
        Some(code) => format!("{code}:0"),
    }
}

/// `HH:MM:SS`, or `D-HH:MM:SS`, as sacct prints elapsed times and limits.
fn elapsed_text(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC) or `now`, in Unix milliseconds.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if text.eq_ignore_ascii_case("now") {
        return Ok(local::now_ms());
    }
    let bad =
        || anyhow::anyhow!("`{text}` is not a time like 2026-12-07 or 2026-12-07T16:30 (UTC)");
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00"));
    let d: Vec<u64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let t: Vec<u64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let (year, month, day) = match d.as_slice() {
        [y, m, d] => (*y, *m, *d),
        _ => return Err(bad()),
    };
    let (hour, minute, second) = match t.as_slice() {
        [h, m] => (*h, *m, 0),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad()),
    };
    let time = UtcTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    };
    let unix = time.to_unix_seconds().ok_or_else(bad)?;
    Ok(unix.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> v1::JobInfo {
        v1::JobInfo {
            id: 13,
            array_job_id: Some(12),
            array_task_id: Some(1),
            name: "relax".into(),
            state: "FAILED".into(),
            exit_code: Some(137),
            start_time_ms: Some(1_000),
            end_time_ms: Some(66_000),
            nodes: vec!["node1".into(), "node2".into()],
            ntasks: 4,
            cpus_per_task: 2,
            ..Default::default()
        }
    }

    #[test]
    fn parsable2_is_what_tools_split_on_bars() {
        let columns: Vec<_> = [
            "JobID",
            "state",
            "NodeList",
            "Elapsed",
            "ExitCode",
            "AllocCPUS",
        ]
        .iter()
        .map(|f| column(f).unwrap())
        .collect();
        let j = job();
        let row = line(&columns, Some("|"), false, |c| (c.0.value)(&j, 0));
        assert_eq!(row, "12_1|FAILED|node[1-2]|00:01:05|0:9|8\n");
        let header = line(&columns, Some("|"), true, |c| c.0.name.to_string());
        assert_eq!(header, "JobID|State|NodeList|Elapsed|ExitCode|AllocCPUS|\n");
        assert!(
            column("Bogus")
                .unwrap_err()
                .to_string()
                .contains("\"Bogus\"")
        );
    }

    #[test]
    fn columns_are_cut_with_a_plus() {
        let columns = vec![column("JobName%4").unwrap()];
        let j = job();
        assert_eq!(
            line(&columns, None, false, |c| (c.0.value)(&j, 0)),
            "rel+ \n"
        );
    }

    #[test]
    fn times_are_read_as_utc_dates() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-01T01:00").unwrap(), 3_600_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }
}
