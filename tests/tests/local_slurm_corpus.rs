//! Local tier: the real batch scripts of `tests/slurm-corpus/` that sbatch accepts
//! (`slurm_corpus.rs`), submitted unchanged through `sbatch` to a 3-node local cluster that has
//! the partitions they name. A script
//! is either refused for this cluster's sake (a partition, account or QOS it does not have, more
//! than it has to give), saying which field, or it runs as its directives say: the nodes and
//! tasks it asked for, every element of its array, its output where its `--output` names it.
//! What the scripts' programs do (LAMMPS, R, `module load`) is theirs: most are not installed
//! here, so many end FAILED, which changes nothing of the above.

use beowulf_tests::{LocalCluster, text};
use beowulf_types::jobfile::{BatchJob, parse_batch_script};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a corpus job may run before it is cancelled: long enough to have started its batch
/// script and written its output file, short enough that the queue behind it moves.
const RUN_FOR: Duration = Duration::from_secs(5);

/// Every corpus script sbatch's reading accepts, with what it asked for.
fn accepted_scripts() -> Vec<(String, String, BatchJob)> {
    let corpus = beowulf_tests::repo_root().join("tests/slurm-corpus");
    let sources: toml::Value =
        toml::from_str(&std::fs::read_to_string(corpus.join("SOURCES.toml")).unwrap()).unwrap();
    sources["script"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let file = s["file"].as_str().unwrap().to_string();
            let text = std::fs::read_to_string(corpus.join("scripts").join(&file)).unwrap();
            let job = parse_batch_script(&file, &text, &BTreeMap::new()).ok()?;
            Some((file, text, job))
        })
        .collect()
}

/// The file name an `--output` pattern gives job `info` (the head's default without one).
fn expected_output_name(job: &BatchJob, info: &Value) -> String {
    let id = info["id"].as_u64().unwrap().to_string();
    let array = info["array_job_id"].as_u64().map(|a| a.to_string());
    let index = info["array_task_id"].as_u64().map(|i| i.to_string());
    let pattern = job.spec.output.clone().unwrap_or_else(|| {
        if array.is_some() {
            "beowulf-%A_%a.out".into()
        } else {
            "beowulf-%j.out".into()
        }
    });
    let expanded = beowulf_types::output_pattern::expand(&pattern, |letter| match letter {
        'j' | 'J' => Some(id.clone()),
        'x' => info["name"].as_str().map(str::to_string),
        'u' => info["user"].as_str().map(str::to_string),
        'A' => array.clone().or_else(|| Some(id.clone())),
        'a' => index.clone().or_else(|| Some(String::new())),
        'N' => info["nodes"][0].as_str().map(str::to_string),
        'n' | 't' => Some("0".into()),
        's' => Some("batch".into()),
        _ => None,
    });
    Path::new(&expanded)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(expanded)
}

#[test]
fn accepted_real_scripts_run_as_their_directives_say_or_are_refused_for_this_cluster() {
    let scripts = accepted_scripts();
    // Configured as the sites the scripts come from: every partition they name exists (on all
    // three nodes). Their accounts, QOS and sizes are still checked as any site's would be.
    let mut partitions: Vec<String> = scripts
        .iter()
        .filter_map(|(_, _, job)| job.spec.partition.clone())
        .collect();
    partitions.sort();
    partitions.dedup();
    let mut policy =
        String::from("[[partition]]\nname = \"batch\"\nnodes = \"node[1-3]\"\ndefault = true\n");
    for name in &partitions {
        policy.push_str(&format!(
            "\n[[partition]]\nname = {name:?}\nnodes = \"node[1-3]\"\n"
        ));
    }
    let cluster = LocalCluster::start_with_policy(3, 10, Some(&policy));
    assert!(scripts.len() >= 40, "{} accepted scripts", scripts.len());
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut submitted: Vec<(String, BatchJob, u64)> = Vec::new();
    for (file, body, job) in scripts {
        // Unchanged, from the work directory (the default working directory and output place).
        let path = cluster.job_file(&file, &body);
        let out = cluster.sbatch(&["--parsable", path.to_str().unwrap()]);
        if out.status.success() {
            let id: u64 = text(&out.stdout).trim().parse().unwrap();
            submitted.push((file, job, id));
        } else {
            refused.push((file, text(&out.stderr)));
        }
    }
    // A refusal is this cluster's: it names the file and the field or the resource.
    for (file, message) in &refused {
        let names_field = message.contains(&format!("{file}:")) || message.contains("field");
        assert!(
            names_field,
            "{file} was refused without naming the field: {message}"
        );
    }
    // Every queued job starts. A job still running after a while is cancelled, so that the
    // ones queued behind it start too (the scripts' own programs may run for hours).
    let ids: Vec<u64> = submitted
        .iter()
        .flat_map(|(_, job, id)| {
            let elements = job
                .spec
                .array
                .as_ref()
                .map_or(1, |a| a.indices.len() as u64);
            *id..*id + elements
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut running_since: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut impossible = std::collections::BTreeSet::new();
    loop {
        let mut waiting = Vec::new();
        for &id in &ids {
            let info = cluster.show(id);
            match info["state"].as_str().unwrap_or_default() {
                // A constraint only an active fabric satisfies: such a job waits for it (a
                // GRES or feature no node here has is refused at submit, as Slurm does).
                "PENDING" if info["reason"] == "BadConstraints" => {
                    let _ = cluster.cluster(&["cancel", &id.to_string()]);
                    impossible.insert(id);
                }
                "PENDING" => waiting.push(format!("{id}: PENDING ({})", info["reason"])),
                "RUNNING" => {
                    waiting.push(format!("{id}: RUNNING"));
                    let since = *running_since.entry(id).or_insert_with(Instant::now);
                    if since.elapsed() > RUN_FOR {
                        let _ = cluster.cluster(&["cancel", &id.to_string()]);
                    }
                }
                _ => {}
            }
        }
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "corpus jobs still waiting: {waiting:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut ran = 0;
    for (file, job, id) in &submitted {
        let elements = job
            .spec
            .array
            .as_ref()
            .map_or(1, |a| a.indices.len() as u64);
        for element in *id..*id + elements {
            if impossible.contains(&element) {
                continue;
            }
            let info = cluster.show(element);
            assert!(
                info["start_time_ms"].is_u64(),
                "{file}: job {element} never started: {info:#}"
            );
            assert_eq!(info["num_nodes"], job.spec.nodes, "{file}: {info:#}");
            assert_eq!(info["ntasks"], job.spec.ntasks, "{file}: {info:#}");
            if elements > 1 {
                assert_eq!(info["array_job_id"], *id, "{file}: {info:#}");
            }
            let stdout = info["stdout"].as_str().unwrap_or_default();
            let name = expected_output_name(job, &info);
            assert!(
                stdout.ends_with(&name),
                "{file}: output {stdout:?}, the directives name {name:?}"
            );
            // The batch script started: its output file is there (what it wrote is its own) —
            // unless the directory the script names for it does not exist here, where Slurm too
            // fails the job before it runs.
            let path = Path::new(&info["workdir"].as_str().unwrap_or_default()).join(stdout);
            let directory_exists = path.parent().is_some_and(Path::is_dir);
            if directory_exists {
                assert!(
                    path.exists(),
                    "{file}: no output file {}: {info:#}",
                    path.display()
                );
            } else {
                assert_eq!(info["state"], "FAILED", "{file}: {info:#}");
            }
            ran += 1;
        }
    }
    println!(
        "{} scripts queued ({ran} jobs ran as their directives say, {} could never start here), \
         {} refused for this cluster:",
        submitted.len(),
        impossible.len(),
        refused.len()
    );
    for (file, message) in &refused {
        println!("  {file}: {}", message.lines().next().unwrap_or_default());
    }
    assert!(
        submitted.len() >= 10,
        "only {} of the accepted scripts could be queued here",
        submitted.len()
    );
}
