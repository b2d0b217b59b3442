//! `scontrol show job|node|partition`: Slurm's `Key=Value` records, which tools read with
//! regular expressions (`JobState=(\w+)`). The changing subcommands (`hold`, `release`, `update`,
//! `requeue`) are refused with what to do instead until the head has them.

use super::jobs::{JobSelector, elapsed_ms, slurm_time};
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
    Hold {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    Release {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    Update {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    Requeue {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let (entity, name) = match args.command {
        Command::Show { entity, name } => (entity.to_ascii_lowercase(), name),
        Command::Hold { .. } | Command::Release { .. } => anyhow::bail!(
            "hold and release are not supported yet: cancel the job and submit it again when it \
             should run, or make it wait with --dependency"
        ),
        Command::Update { .. } => anyhow::bail!(
            "update is not supported yet: cancel the job and submit it again with the new values"
        ),
        Command::Requeue { .. } => anyhow::bail!(
            "requeue is not supported yet: a job with requeue = true is requeued when its node fails"
        ),
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
}
