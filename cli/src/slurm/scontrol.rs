//! `scontrol show job|node|partition`: Slurm's `Key=Value` records, which tools read with
//! regular expressions (`JobState=(\w+)`); and `hold`, `uhold`, `release`, `requeue` of a job
//! list and `update JobId=... Field=Value...`, which print nothing when they succeed, as Slurm's.

use super::jobs::{JobSelector, elapsed_ms, slurm_time};
use crate::jobs::{Control, parse_time_limit};
use crate::{client, local, output};
use beowulf_proto::v1;
use beowulf_types::hostlist;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Parser)]
#[command(
    name = "scontrol",
    version,
    about = "View the cluster's state (Slurm's scontrol)"
)]
struct Args {
    /// One record per line.
    #[arg(short = 'o', long = "oneliner", global = true)]
    oneliner: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `show job [ID]`, `show node [NAME]`, `show partition [NAME]`.
    Show {
        entity: String,
        name: Option<String>,
    },
    /// `hold JOBLIST`: pending jobs wait until released (root's hold: JobHeldAdmin).
    Hold {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// `uhold JOBLIST`: a user hold (JobHeldUser), whoever holds.
    Uhold {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// `release JOBLIST`.
    Release {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// `requeue JOBLIST`: running jobs stop and are queued again.
    Requeue {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// `update JobId=JOBLIST Field=Value...`.
    Update {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let (entity, name) = match args.command {
        Command::Show { entity, name } => (entity.to_ascii_lowercase(), name),
        Command::Hold { jobs } => {
            return control(socket, Control::Hold { user: false }, &jobs).await;
        }
        Command::Uhold { jobs } => {
            return control(socket, Control::Hold { user: true }, &jobs).await;
        }
        Command::Release { jobs } => return control(socket, Control::Release, &jobs).await,
        Command::Requeue { jobs } => return control(socket, Control::Requeue, &jobs).await,
        Command::Update { rest } => return update(socket, &rest).await,
    };
    let mut c = client::connect(socket).await?;
    let records: Vec<Vec<(String, String)>> = match entity.as_str() {
        "job" | "jobs" => {
            let selector = name.as_deref().map(JobSelector::parse).transpose()?;
            let jobs = client::list_jobs(&mut c, selector.is_some()).await?;
            let chosen: Vec<_> = jobs
                .iter()
                .filter(|j| selector.is_none_or(|s| s.matches(j)))
                .collect();
            if let (Some(name), true) = (&name, chosen.is_empty()) {
                anyhow::bail!("Invalid job id specified: {name}");
            }
            let now = local::now_ms();
            chosen.into_iter().map(|j| job_record(j, now)).collect()
        }
        "node" | "nodes" => {
            let nodes = client::list_nodes(&mut c).await?;
            let chosen: Vec<_> = nodes
                .iter()
                .filter(|n| name.as_ref().is_none_or(|x| *x == n.name))
                .collect();
            if let (Some(name), true) = (&name, chosen.is_empty()) {
                anyhow::bail!("Node {name} not found");
            }
            chosen.into_iter().map(node_record).collect()
        }
        "partition" | "partitions" => {
            let partitions = client::list_partitions(&mut c).await?;
            let chosen: Vec<_> = partitions
                .iter()
                .filter(|p| name.as_ref().is_none_or(|x| *x == p.name))
                .collect();
            if let (Some(name), true) = (&name, chosen.is_empty()) {
                anyhow::bail!("Partition {name} not found");
            }
            chosen.into_iter().map(partition_record).collect()
        }
        other => anyhow::bail!("show {other}: not supported; show job, node or partition"),
    };
    let mut out = String::new();
    for record in &records {
        out.push_str(&render(record, args.oneliner));
    }
    print!("{}", output::printable(&out));
    Ok(0)
}

/// A job list as scontrol takes it: IDs and `ARRAY_INDEX` elements, separated by commas or
/// given as several arguments.
fn job_list(items: &[String]) -> anyhow::Result<Vec<JobSelector>> {
    items
        .iter()
        .flat_map(|item| item.split(','))
        .filter(|item| !item.trim().is_empty())
        .map(JobSelector::parse)
        .collect()
}

/// The job IDs the head knows `selectors` by: an ID as it is (the head expands an array's),
/// an element looked up among the live jobs. `Err` names an element that is not there.
async fn resolve(
    c: &mut client::Client,
    selectors: &[JobSelector],
) -> anyhow::Result<Vec<(String, Result<u64, String>)>> {
    let elements = selectors
        .iter()
        .any(|s| matches!(s, JobSelector::Element { .. }));
    let live = if elements {
        client::list_jobs(c, false).await?
    } else {
        Vec::new()
    };
    Ok(selectors
        .iter()
        .map(|selector| match *selector {
            JobSelector::Job(id) => (id.to_string(), Ok(id)),
            JobSelector::Element { array, index } => {
                let shown = format!("{array}_{index}");
                let found = live.iter().find(|j| selector.matches(j)).map(|j| j.id);
                let id = found.ok_or_else(|| format!("Invalid job id specified: {shown}"));
                (shown, id)
            }
        })
        .collect())
}

/// `scontrol hold|uhold|release|requeue JOBLIST`: silent on success, as Slurm's; each refusal
/// on stderr, and exit code 1 when there was any.
async fn control(socket: &Path, action: Control, items: &[String]) -> anyhow::Result<i32> {
    let selectors = job_list(items)?;
    let mut c = client::connect(socket).await?;
    let mut failed = 0;
    for (shown, id) in resolve(&mut c, &selectors).await? {
        // An element named `ARRAY_INDEX` is that element only; an array's ID is every element.
        let whole_array = !shown.contains('_');
        let result = match id {
            Ok(id) => action
                .send(&mut c, id, whole_array)
                .await
                .map_err(|status| status.message().to_string()),
            Err(message) => Err(message),
        };
        if let Err(message) = result {
            eprintln!("scontrol: error: {message} (job {shown})");
            failed += 1;
        }
    }
    Ok(i32::from(failed > 0))
}

/// The subcommands `scontrol` has here (for the docs' table).
pub const SUBCOMMANDS: &[&str] = &[
    "show job|node|partition",
    "hold",
    "uhold",
    "release",
    "requeue",
    "update",
];

/// The fields `scontrol update` changes here, as Slurm names them; any other is refused.
pub const UPDATE_FIELDS: &[&str] = &["TimeLimit", "Partition", "JobName", "NumNodes", "NumTasks"];

fn update_fields() -> String {
    UPDATE_FIELDS.join(", ")
}

/// `scontrol update`'s words: the jobs (`JobId=`) and the change, keys in any case. Fields
/// this cluster cannot change are refused, naming the ones it can.
fn parse_update(words: &[String]) -> anyhow::Result<(Vec<JobSelector>, v1::UpdateJobRequest)> {
    let mut jobs = None;
    let mut change = v1::UpdateJobRequest::default();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            anyhow::bail!(
                "`{word}` is not Field=Value; give JobId=N and the fields to change ({})",
                update_fields()
            );
        };
        let count = || -> anyhow::Result<u32> {
            value
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{key}={value}: give a whole number"))
        };
        match key.to_ascii_lowercase().as_str() {
            "jobid" | "job" => jobs = Some(job_list(&[value.to_string()])?),
            "timelimit" => change.time_limit_ms = Some(parse_time_limit(value)?),
            "partition" => change.partition = Some(value.to_string()),
            "jobname" | "name" => change.name = Some(value.to_string()),
            "numnodes" | "reqnodes" => change.num_nodes = Some(count()?),
            "numtasks" => change.num_tasks = Some(count()?),
            _ => anyhow::bail!(
                "Update of {key} is not supported here; the fields that can be updated are {}",
                update_fields()
            ),
        }
    }
    match jobs.filter(|j| !j.is_empty()) {
        Some(jobs) => Ok((jobs, change)),
        None => anyhow::bail!("no job to update: give JobId=N"),
    }
}

/// `scontrol update JobId=JOBLIST Field=Value...`: every job of the list (an array's ID: every
/// live element) gets the same change.
async fn update(socket: &Path, words: &[String]) -> anyhow::Result<i32> {
    let (selectors, change) = parse_update(words)?;
    let mut c = client::connect(socket).await?;
    let live = client::list_jobs(&mut c, false).await?;
    let mut failed = 0;
    for selector in selectors {
        let mut ids: Vec<u64> = live
            .iter()
            .filter(|j| selector.matches(j))
            .map(|j| j.id)
            .collect();
        if let (true, JobSelector::Job(id)) = (ids.is_empty(), selector) {
            // Not live: the head says why (no such job, or it has ended).
            ids.push(id);
        }
        if let (true, JobSelector::Element { array, index }) = (ids.is_empty(), selector) {
            eprintln!("scontrol: error: Invalid job id specified: {array}_{index}");
            failed += 1;
        }
        for job_id in ids {
            let request = v1::UpdateJobRequest {
                job_id,
                ..change.clone()
            };
            if let Err(status) = c.update_job(request).await {
                eprintln!("scontrol: error: {}", status.message());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}

/// A record as scontrol prints it: a few `Key=Value` pairs per indented line (or all on one
/// line with `-o`), a blank line after it.
fn render(record: &[(String, String)], oneliner: bool) -> String {
    let pairs: Vec<String> = record.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if oneliner {
        return format!("{}\n", pairs.join(" "));
    }
    let mut out = String::new();
    for (i, chunk) in pairs.chunks(4).enumerate() {
        if i > 0 {
            out.push_str("   ");
        }
        out.push_str(&chunk.join(" "));
        out.push('\n');
    }
    out.push('\n');
    out
}

fn kv(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "(null)".into()
    } else {
        text.to_string()
    }
}

/// A node list as Slurm prints one: compressed, `(null)` when empty.
fn node_list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        "(null)".into()
    } else {
        hostlist::compress(nodes)
    }
}

fn job_record(job: &v1::JobInfo, now: u64) -> Vec<(String, String)> {
    let (array, index) = match (job.array_job_id, job.array_task_id) {
        (Some(a), Some(i)) => (a.to_string(), i.to_string()),
        _ => (String::new(), String::new()),
    };
    let mut pairs = vec![
        ("JobId", job.id.to_string()),
        ("JobName", job.name.clone()),
        ("UserId", format!("{}({})", job.user, job.uid)),
        ("Account", or_none(&job.account)),
        ("QOS", or_none(&job.qos)),
        ("Priority", job.priority.to_string()),
        ("JobState", job.state.clone()),
        (
            "Reason",
            if job.reason.is_empty() {
                "None".into()
            } else {
                job.reason.replace(' ', "_")
            },
        ),
        ("ExitCode", format!("{}:0", job.exit_code.unwrap_or(0))),
        ("Restarts", job.restarts.to_string()),
        ("RunTime", output::duration(elapsed_ms(job, now))),
        ("TimeLimit", output::duration(job.time_limit_ms)),
        (
            "SubmitTime",
            slurm_time(Some(job.submit_time_ms), "Unknown"),
        ),
        (
            "EligibleTime",
            slurm_time(Some(job.eligible_time_ms), "Unknown"),
        ),
        (
            "StartTime",
            slurm_time(job.start_time_ms.or(job.estimated_start_ms), "Unknown"),
        ),
        ("EndTime", slurm_time(job.end_time_ms, "Unknown")),
        ("Partition", job.partition.clone()),
        (
            "OverSubscribe",
            if job.exclusive { "NO" } else { "OK" }.into(),
        ),
        ("ReqNodeList", node_list(&job.required_nodes)),
        ("ExcNodeList", node_list(&job.excluded_nodes)),
        (
            "NodeList",
            if job.nodes.is_empty() {
                "(null)".into()
            } else {
                hostlist::compress(&job.nodes)
            },
        ),
        ("NumNodes", job.num_nodes.to_string()),
        (
            "NumCPUs",
            (u64::from(job.ntasks) * u64::from(job.cpus_per_task)).to_string(),
        ),
        ("NumTasks", job.ntasks.to_string()),
        ("CPUs/Task", job.cpus_per_task.to_string()),
        ("MinMemoryNode", format!("{}M", job.memory_mb)),
        ("WorkDir", job.workdir.clone()),
        ("StdErr", job.stderr_path.clone()),
        ("StdOut", job.stdout_path.clone()),
    ];
    if !array.is_empty() {
        pairs.insert(1, ("ArrayJobId", array));
        pairs.insert(2, ("ArrayTaskId", index));
    }
    if !job.dependencies.is_empty() {
        pairs.push(("Dependency", job.dependencies.join(",")));
    }
    kv(&pairs)
}

fn node_record(node: &v1::NodeInfo) -> Vec<(String, String)> {
    kv(&[
        ("NodeName", node.name.clone()),
        ("CPUAlloc", node.cpus_allocated.to_string()),
        ("CPUTot", node.cpus.to_string()),
        ("RealMemory", node.memory_mb.to_string()),
        ("AllocMem", node.memory_allocated_mb.to_string()),
        ("State", node.state.clone()),
        (
            "Reason",
            if node.reason.is_empty() {
                "(null)".into()
            } else {
                node.reason.replace(' ', "_")
            },
        ),
    ])
}

fn partition_record(p: &v1::PartitionInfo) -> Vec<(String, String)> {
    kv(&[
        ("PartitionName", p.name.clone()),
        (
            "Default",
            if p.default { "YES".into() } else { "NO".into() },
        ),
        (
            "MaxNodes",
            p.max_nodes
                .map_or_else(|| "UNLIMITED".into(), |n| n.to_string()),
        ),
        (
            "MaxTime",
            p.max_time_ms
                .map_or_else(|| "UNLIMITED".into(), output::duration),
        ),
        ("Nodes", hostlist::compress(&p.nodes)),
        ("TotalNodes", p.nodes.len().to_string()),
        ("State", "UP".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_as_key_value_pairs() {
        let job = v1::JobInfo {
            id: 7,
            name: "relax".into(),
            user: "ada".into(),
            uid: 1000,
            state: "RUNNING".into(),
            nodes: vec!["node1".into(), "node2".into()],
            ..Default::default()
        };
        let text = render(&job_record(&job, 0), false);
        assert!(
            text.starts_with("JobId=7 JobName=relax UserId=ada(1000)"),
            "{text}"
        );
        assert!(text.contains("JobState=RUNNING"), "{text}");
        assert!(text.contains("NodeList=node[1-2]"), "{text}");
        assert!(text.ends_with("\n\n"));
        let one = render(&job_record(&job, 0), true);
        assert_eq!(one.lines().count(), 1);
    }

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn updates_read_slurms_fields_in_any_case_and_refuse_others_naming_what_can_change() {
        let (jobs, change) = parse_update(&words(
            "JobId=12,13_2 timelimit=1:30:00 Partition=short NumNodes=2",
        ))
        .unwrap();
        assert_eq!(
            jobs,
            [
                JobSelector::Job(12),
                JobSelector::Element {
                    array: 13,
                    index: 2
                }
            ]
        );
        assert_eq!(change.time_limit_ms, Some(90 * 60_000));
        assert_eq!(change.partition.as_deref(), Some("short"));
        assert_eq!(change.num_nodes, Some(2));
        let e = parse_update(&words("JobId=12 Nice=10"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Update of Nice is not supported"), "{e}");
        assert!(e.contains("TimeLimit, Partition, JobName"), "{e}");
        assert!(parse_update(&words("TimeLimit=10")).is_err(), "no job");
        assert!(parse_update(&words("JobId=12 NumTasks=x")).is_err());
    }

    #[test]
    fn job_lists_take_commas_and_several_arguments() {
        let list = job_list(&words("12,13 14_1")).unwrap();
        assert_eq!(list.len(), 3);
        assert!(job_list(&words("12,x")).is_err());
    }
}
