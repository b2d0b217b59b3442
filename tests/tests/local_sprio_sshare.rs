//! Local tier: `sprio` and `sshare` by their Slurm names against a local cluster: pending jobs'
//! priorities factor by factor (the numbers squeue shows), and the fair-share usage of a job that
//! ran.

use beowulf_tests::{LocalCluster, text};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

/// Age is full at once (max_age_ms = 1) and usage decays over a week, so priorities do not move
/// between two commands: what sprio and squeue print can be compared exactly.
const POLICY: &str = r#"
[priority]
age_weight = 1000
max_age_ms = 1
size_weight = 100
fairshare_weight = 500
"#;

/// Runs a Slurm command, which must succeed; its standard output.
fn ok(cluster: &LocalCluster, name: &str, args: &[&str]) -> String {
    let out = cluster.slurm(name, args);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `sbatch --parsable ARGS --wrap COMMAND`; the job's ID.
fn sbatch(cluster: &LocalCluster, args: &[&str], command: &str) -> u64 {
    let mut all = vec!["--parsable", "-o", "/dev/null"];
    all.extend(args);
    all.extend(["--wrap", command]);
    ok(cluster, "sbatch", &all).trim().parse().unwrap()
}

/// `|`-separated lines as maps of their header's fields.
fn parsable(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("a header").split('|').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split('|'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn sprio_shows_the_schedulers_factors_and_sshare_the_usage_of_a_job_that_ran() {
    let cluster = LocalCluster::start_with_policy(1, 10, Some(POLICY));
    // A job of account physics runs and ends: its CPU-time is the fair-share usage.
    let ran = sbatch(&cluster, &["-A", "physics", "-c", "2"], "sleep 2");
    let info = cluster.wait_state(ran, &["COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let me = info["user"].as_str().unwrap().to_string();

    // The node's two CPUs are taken; the next jobs wait.
    let blocker = sbatch(&cluster, &["-c", "2", "-t", "5"], "sleep 120");
    cluster.wait_state(blocker, &["RUNNING"], MINUTE);
    let chem = sbatch(&cluster, &["-A", "chem", "-c", "1"], "true");
    let physics = sbatch(&cluster, &["-A", "physics", "-c", "2"], "true");
    let plain = sbatch(&cluster, &["-c", "1"], "true");
    let pending = [chem, physics, plain];

    // Every pending job priced by a pass that knew all three (the fair-share table counts the
    // pending jobs' accounts): squeue's priorities, the same twice.
    let deadline = Instant::now() + MINUTE;
    let squeue = loop {
        let read = || -> BTreeMap<u64, u64> {
            ok(&cluster, "squeue", &["-h", "-t", "PD", "-o", "%i %Q"])
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(id, p)| (id.parse().unwrap(), p.parse().unwrap()))
                .collect()
        };
        let first = read();
        std::thread::sleep(Duration::from_millis(1500));
        let planned = first.len() == 3 && first.values().all(|p| *p > 0);
        if planned && read() == first {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "priorities did not settle: {first:?}"
        );
    };

    // sprio: the pending jobs alone, each with squeue's priority, its weighted parts adding up
    // to it.
    let out = ok(&cluster, "sprio", &[]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "JOBID",
            "PARTITION",
            "USER",
            "PRIORITY",
            "SITE",
            "AGE",
            "FAIRSHARE",
            "JOBSIZE"
        ],
        "{out}"
    );
    let mut listed = Vec::new();
    for line in out.lines().skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let id: u64 = cells[0].parse().unwrap();
        let number = |i: usize| cells[i].parse::<u64>().unwrap();
        assert_eq!(cells[2], me, "{line}");
        assert_eq!(
            number(3),
            squeue[&id],
            "sprio and squeue agree on job {id}: {out}"
        );
        assert_eq!(
            number(3),
            number(4) + number(5) + number(6) + number(7),
            "{line}"
        );
        listed.push(id);
    }
    assert_eq!(listed, pending, "only the pending jobs, by ID: {out}");
    // The same through `cluster show`.
    for id in pending {
        assert_eq!(cluster.show(id)["priority"].as_u64(), Some(squeue[&id]));
    }

    // The factors before weighting: age full, size the share of the cluster's CPUs, fair-share
    // the mean of the user's (the only user: 2^-1) and the account's (physics used all the
    // accounts' usage with half their shares: 2^-2; chem none: 1); without an account, the
    // user's.
    let norm = ok(
        &cluster,
        "sprio",
        &[
            "-n",
            "-h",
            "-o",
            "%i %a %j %f",
            "-j",
            &format!("{chem},{physics},{plain}"),
        ],
    );
    let expected = format!(
        "{chem} 1.0000000 0.5000000 0.7500000\n\
         {physics} 1.0000000 1.0000000 0.3750000\n\
         {plain} 1.0000000 0.5000000 0.5000000\n"
    );
    assert_eq!(norm, expected);
    let weights = ok(&cluster, "sprio", &["-w", "-h"]);
    assert_eq!(
        weights.split_whitespace().collect::<Vec<_>>(),
        ["Weights", "1000", "500", "100"],
        "{weights}"
    );
    assert_eq!(ok(&cluster, "sprio", &["-h", "-u", "nobody-here"]), "");
    let one = ok(
        &cluster,
        "sprio",
        &["-h", "-o", "%i", "-j", &physics.to_string()],
    );
    assert_eq!(one.trim(), physics.to_string());
    let refused = cluster.slurm("sprio", &["--sort=-y"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("--sort is not supported"));

    // sshare: the job that ran is physics's usage, in CPU-seconds (its two CPUs over its run).
    let shares = parsable(&ok(&cluster, "sshare", &["-a", "-P"]));
    let line = |account: &str, user: &str| {
        shares
            .iter()
            .find(|l| l["Account"] == account && l["User"] == user)
            .unwrap_or_else(|| panic!("no line {account:?}/{user:?} in {shares:#?}"))
            .clone()
    };
    let sacct = ok(
        &cluster,
        "sacct",
        &[
            "-n",
            "-P",
            "-j",
            &ran.to_string(),
            "-o",
            "ElapsedRaw,AllocCPUS",
        ],
    );
    let (elapsed, cpus) = sacct.trim().split_once('|').unwrap();
    let cpu_seconds = elapsed.parse::<u64>().unwrap() * cpus.parse::<u64>().unwrap();
    let physics_line = line(" physics", "");
    let used: u64 = physics_line["RawUsage"].parse().unwrap();
    assert!(
        used.abs_diff(cpu_seconds) <= 2 && used >= 2,
        "physics used {used} CPU-s, sacct says {cpu_seconds}: {shares:#?}"
    );
    assert_eq!(physics_line["EffectvUsage"], "1.000000");
    assert_eq!(physics_line["NormShares"], "0.500000");
    assert_eq!(physics_line["FairShare"], "0.250000");
    let chem_line = line(" chem", "");
    assert_eq!(chem_line["RawUsage"], "0");
    assert_eq!(chem_line["FairShare"], "1.000000");
    // The user's usage: the job that ran and the one running, all of root's.
    let mine = line("", &me);
    let user_used: u64 = mine["RawUsage"].parse().unwrap();
    assert!(user_used >= used, "{shares:#?}");
    assert_eq!(mine["FairShare"], "0.500000");
    assert_eq!(line("root", "")["RawUsage"], mine["RawUsage"]);
    // Without -a: my own line is there too; -A one account, -n no header.
    let default = ok(&cluster, "sshare", &["-P", "-n", "-o", "User,FairShare"]);
    assert!(
        default.lines().any(|l| l == format!("{me}|0.500000")),
        "{default}"
    );
    let chem_only = ok(
        &cluster,
        "sshare",
        &["-P", "-n", "-A", "chem", "-o", "Account,RawShares"],
    );
    assert_eq!(chem_only, "root|\n chem|1\n");
    let refused = cluster.slurm("sshare", &["-o", "LevelFS"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("LevelFS is not supported here"));

    let _ = cluster.slurm("scancel", &[&blocker.to_string()]);
}
