//! How jobs and nodes print: tables for people, JSON for scripts.

use beowulf_proto::v1;
use beowulf_types::{JobState, Timestamp};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

pub fn job_json(job: &v1::JobInfo) -> Value {
    json!({
        "id": job.id,
        "name": job.name,
        "user": job.user,
        "uid": job.uid,
        "state": job.state,
        "reason": job.reason,
        "exit_code": job.exit_code,
        "nodes": job.nodes,
        "num_nodes": job.num_nodes,
        "ntasks": job.ntasks,
        "cpus_per_task": job.cpus_per_task,
        "memory_mb": job.memory_mb,
        "partition": job.partition,
        "priority": job.priority,
        "time_limit_s": job.time_limit_ms / 1000,
        "submit_time_ms": job.submit_time_ms,
        "start_time_ms": job.start_time_ms,
        "end_time_ms": job.end_time_ms,
        "estimated_start_ms": job.estimated_start_ms,
        "restarts": job.restarts,
        "workdir": job.workdir,
        "stdout": job.stdout_path,
        "stderr": job.stderr_path,
        "array_job_id": job.array_job_id,
        "array_task_id": job.array_task_id,
        "qos": job.qos,
        "account": job.account,
        "dependencies": job.dependencies,
        "required_nodes": job.required_nodes,
        "excluded_nodes": job.excluded_nodes,
        "exclusive": job.exclusive,
        "eligible_time_ms": job.eligible_time_ms,
        "fabric": (!job.fabric.is_empty()).then_some(&job.fabric),
        "fabric_reason": (!job.fabric_reason.is_empty()).then_some(&job.fabric_reason),
        "image": (!job.image.is_empty()).then_some(&job.image),
        "image_digest": (!job.image_digest.is_empty()).then_some(&job.image_digest),
        "phases_ms": job.phases.iter().map(|p| (p.name.clone(), json!(p.ms))).collect::<serde_json::Map<_, _>>(),
        "events": job.events.iter().map(|e| json!({"time_ms": e.time_ms, "message": e.message})).collect::<Vec<_>>(),
    })
}

pub fn node_json(node: &v1::NodeInfo) -> Value {
    let inv = node.inventory.clone().unwrap_or_default();
    let (fabric, fabric_reason) = fabric_of(node);
    json!({
        "name": node.name,
        "fabric": fabric,
        "fabric_reason": fabric_reason,
        "state": node.state,
        "reason": node.reason,
        "cpus": node.cpus,
        "cpus_allocated": node.cpus_allocated,
        "memory_mb": node.memory_mb,
        "memory_allocated_mb": node.memory_allocated_mb,
        "jobs": node.jobs,
        "last_heartbeat_ms": node.last_heartbeat_ms,
        "os": inv.os,
        "kernel": inv.kernel,
        "arch": inv.arch,
        "hostname": inv.hostname,
        "nics": inv.nics.iter().map(|n| json!({"name": n.name, "mac": n.mac, "addresses": n.addresses, "up": n.up, "speed_mbps": n.speed_mbps})).collect::<Vec<_>>(),
        "ib_ports": inv.ib_ports.iter().map(|p| json!({"device": p.device, "port": p.port, "state": p.state, "link_layer": p.link_layer, "rate": p.rate, "netdev": p.netdev})).collect::<Vec<_>>(),
    })
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header.iter().copied());
    t
}

/// `squeue`-like: one line per job.
pub fn queue_table(jobs: &[v1::JobInfo], now_ms: u64) -> String {
    let mut t = table(&[
        "JOBID",
        "PARTITION",
        "NAME",
        "USER",
        "STATE",
        "TIME",
        "NODES",
        "NODELIST(REASON)",
        "PRIORITY",
    ]);
    for job in jobs {
        let elapsed = match (job.start_time_ms, job.end_time_ms) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            (Some(s), None) => now_ms.saturating_sub(s),
            _ => 0,
        };
        let where_ = if job.job_state() == Some(JobState::Pending) {
            let est = job
                .estimated_start_ms
                .map(|t| format!(", starts in ~{}", duration(t.saturating_sub(now_ms))))
                .unwrap_or_default();
            format!("({}{est})", job.reason)
        } else {
            beowulf_types::hostlist::compress(&job.nodes)
        };
        t.add_row(vec![
            job.id.to_string(),
            job.partition.clone(),
            job.name.clone(),
            job.user.clone(),
            job.state.clone(),
            duration(elapsed),
            job.num_nodes.to_string(),
            where_,
            job.priority.to_string(),
        ]);
    }
    t.to_string()
}

/// The fabric a node offers MPI jobs, and why: `ib` with an ACTIVE verbs port that no probe found
/// broken, else `tcp`.
pub fn fabric_of(node: &v1::NodeInfo) -> (&'static str, String) {
    let inv = node
        .inventory
        .as_ref()
        .map(beowulf_types::Inventory::from)
        .unwrap_or_default();
    if let Some(reason) = inv.ib_unusable_reason() {
        return ("tcp", reason);
    }
    let port = inv
        .ib_ports
        .iter()
        .find(|p| p.state == beowulf_types::IbPortState::Active)
        .map(|p| format!("{} port {} is ACTIVE", p.device, p.port))
        .unwrap_or_default();
    ("ib", port)
}

/// `sinfo -N`-like: one line per node.
pub fn nodes_table(nodes: &[v1::NodeInfo]) -> String {
    let mut t = table(&[
        "NODE",
        "STATE",
        "CPUS(A/T)",
        "MEMORY(A/T MiB)",
        "JOBS",
        "FABRIC",
        "REASON",
    ]);
    for node in nodes {
        let (fabric, _) = fabric_of(node);
        t.add_row(vec![
            node.name.clone(),
            node.state.clone(),
            format!("{}/{}", node.cpus_allocated, node.cpus),
            format!("{}/{}", node.memory_allocated_mb, node.memory_mb),
            node.jobs
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            fabric.to_string(),
            node.reason.clone(),
        ]);
    }
    t.to_string()
}

/// `scontrol show reservation`-like, one line each.
pub fn reservations_table(list: &[v1::Reservation], now_ms: u64) -> String {
    let mut t = table(&["NAME", "NODES", "STARTS", "ENDS", "USERS", "FLAGS"]);
    for r in list {
        let when = |ms: u64| {
            if ms <= now_ms {
                format!("{} ago", duration(now_ms - ms))
            } else {
                format!("in {}", duration(ms - now_ms))
            }
        };
        let nodes = if r.nodes.is_empty() {
            "ALL".to_string()
        } else {
            beowulf_types::hostlist::compress(&r.nodes)
        };
        t.add_row(vec![
            r.name.clone(),
            nodes,
            when(r.start_ms),
            when(r.end_ms),
            if r.users.is_empty() {
                "-".into()
            } else {
                r.users.join(",")
            },
            if r.maintenance {
                "MAINT".into()
            } else {
                String::new()
            },
        ]);
    }
    t.to_string()
}

pub fn image_json(image: &v1::ImageInfo) -> Value {
    json!({
        "name": image.name,
        "digest": image.digest,
        "size_bytes": image.size_bytes,
        "owner": image.owner,
        "created_ms": image.created_ms,
        "tar_path": image.tar_path,
    })
}

/// `docker image ls`-like: one line per image, digests cut to 12 hex digits.
pub fn images_table(images: &[v1::ImageInfo], now_ms: u64) -> String {
    let mut t = table(&["NAME", "DIGEST", "SIZE", "OWNER", "CREATED"]);
    for image in images {
        let hex = image
            .digest
            .split_once(':')
            .map_or(image.digest.as_str(), |(_, h)| h);
        t.add_row(vec![
            image.name.clone(),
            hex.chars().take(12).collect(),
            mib(image.size_bytes),
            image.owner.clone(),
            format!("{} ago", duration(now_ms.saturating_sub(image.created_ms))),
        ]);
    }
    t.to_string()
}

/// A size in MiB: `812 MiB`, `3.4 MiB`, `<0.1 MiB`.
pub fn mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 10.0 {
        format!("{mib:.0} MiB")
    } else if bytes > 0 && mib < 0.1 {
        "<0.1 MiB".into()
    } else {
        format!("{mib:.1} MiB")
    }
}

/// `scontrol show job`-like.
pub fn job_details(job: &v1::JobInfo) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:>14}: {v}\n"));
    line("JobId", job.id.to_string());
    line("Name", job.name.clone());
    line("User", format!("{} (uid {})", job.user, job.uid));
    line("State", job.state.clone());
    line(
        "Reason",
        if job.reason.is_empty() {
            "None".into()
        } else {
            job.reason.clone()
        },
    );
    line(
        "ExitCode",
        job.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    line(
        "Nodes",
        format!(
            "{} [{}]",
            job.num_nodes,
            beowulf_types::hostlist::compress(&job.nodes)
        ),
    );
    line(
        "Tasks",
        format!(
            "{} ({} CPU each, {} MiB per node)",
            job.ntasks, job.cpus_per_task, job.memory_mb
        ),
    );
    line("Partition", job.partition.clone());
    if !job.required_nodes.is_empty() {
        line(
            "ReqNodeList",
            beowulf_types::hostlist::compress(&job.required_nodes),
        );
    }
    if !job.excluded_nodes.is_empty() {
        line(
            "ExcNodeList",
            beowulf_types::hostlist::compress(&job.excluded_nodes),
        );
    }
    if job.exclusive {
        line("Exclusive", "yes: no other job shares its nodes".into());
    }
    if let (Some(a), Some(i)) = (job.array_job_id, job.array_task_id) {
        line("Array", format!("element {i} of job array {a}"));
    }
    if !job.qos.is_empty() {
        line("QOS", job.qos.clone());
    }
    if !job.account.is_empty() {
        line("Account", job.account.clone());
    }
    if !job.dependencies.is_empty() {
        line("Dependency", job.dependencies.join(","));
    }
    line("TimeLimit", duration(job.time_limit_ms));
    line(
        "SubmitTime",
        Timestamp(job.submit_time_ms).utc().to_string(),
    );
    if job.eligible_time_ms > job.submit_time_ms {
        line(
            "EligibleTime",
            Timestamp(job.eligible_time_ms).utc().to_string(),
        );
    }
    for (name, time) in [
        ("StartTime", job.start_time_ms),
        ("EndTime", job.end_time_ms),
    ] {
        if let Some(t) = time {
            line(name, Timestamp(t).utc().to_string());
        }
    }
    line("Restarts", job.restarts.to_string());
    line("WorkDir", job.workdir.clone());
    line("StdOut", job.stdout_path.clone());
    line("StdErr", job.stderr_path.clone());
    if let Some(t) = job.estimated_start_ms {
        line("EstStart", Timestamp(t).utc().to_string());
    }
    if !job.image.is_empty() {
        let short = job.image_digest.get(..19).unwrap_or(&job.image_digest);
        line("Image", format!("{} ({short})", job.image));
    }
    if !job.fabric.is_empty() {
        line("Fabric", format!("{} ({})", job.fabric, job.fabric_reason));
    }
    if !job.phases.is_empty() {
        let phases: Vec<String> = job
            .phases
            .iter()
            .map(|p| format!("{} {} ms", p.name.replace('_', " "), p.ms))
            .collect();
        line("Phases", phases.join(", "));
    }
    out.push_str("        Events:\n");
    let first = job.events.first().map(|e| e.time_ms).unwrap_or(0);
    for e in &job.events {
        out.push_str(&format!(
            "   +{:>9.3}s  {}\n",
            (e.time_ms - first) as f64 / 1000.0,
            e.message
        ));
    }
    out
}

/// `1:02:03`, `2:03`, or `1-02:03:04`, as Slurm prints times.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h) {
        (0, 0) => format!("{m}:{s:02}"),
        (0, _) => format!("{h}:{m:02}:{s:02}"),
        _ => format!("{d}-{h:02}:{m:02}:{s:02}"),
    }
}
/// `text` safe to put on a terminal: other users' job names, reasons and events cannot move the
/// cursor, clear the screen or reorder the line (terminal escapes, other control characters and
/// bidirectional-text controls are shown as `\u{..}`); line breaks and tabs stay.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_users_text_cannot_drive_the_terminal() {
        let name = "x\u{1b}[2J\u{1b}]0;pwned\u{7}\r\u{202e}gnp.exe";
        let shown = printable(&format!("job {name}\nnext\tline"));
        assert!(
            !shown
                .chars()
                .any(|c| c == '\u{1b}' || c == '\r' || c == '\u{202e}')
        );
        assert_eq!(
            shown,
            "job x\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{d}\\u{202e}gnp.exe\nnext\tline"
        );
    }
}
