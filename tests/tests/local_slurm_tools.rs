//! Local tier: real tools that drive Slurm's commands, installed from PyPI at test time, run
//! unchanged against a local cluster through our Slurm-named commands (issue 20, done-when 2).
//!
//! The tools go into a virtual environment kept between runs (`pip` runs only when a tool is
//! missing). Without `python3 -m venv` (Debian's python3-venv, which `scripts/test.sh` installs)
//! the test says so and passes; a failing `pip install` (PyPI unreachable) fails it.

use beowulf_cli::slurm::SlurmCommand;
use beowulf_tests::{LocalCluster, text};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The tools' versions, pinned so a new release cannot change what the test checks.
const DASK_JOBQUEUE: &str = "dask-jobqueue==0.9.0";

/// Where the virtual environment lives: beside the build, so `cargo clean` removes it.
fn venv_dir() -> PathBuf {
    beowulf_tests::bin_dir().join("slurm-tools-venv")
}

/// The venv's python with `module` importable, or `None` (and why, printed) when this machine
/// cannot make a virtual environment.
fn python_with(module: &str, package: &str) -> Option<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python3");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: `python3 -m venv` failed (install python3-venv; scripts/test.sh does): {}",
                    text(&out.stderr)
                );
                let _ = std::fs::remove_dir_all(&venv);
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: no python3 to make a virtual environment with: {e}");
                return None;
            }
        }
    }
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !imports(&python) {
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(package)
            .output()
            .expect("the venv's pip runs");
        assert!(
            out.status.success(),
            "pip install {package} failed (PyPI must be reachable): {}",
            text(&out.stderr)
        );
    }
    Some(python)
}

/// dask-jobqueue's own usage, as its documentation shows it: a SLURMCluster of two one-core
/// worker jobs, a client, a sum. It submits with `sbatch`, and cancels with `scancel`.
const DASK_EXAMPLE: &str = r#"
from dask_jobqueue import SLURMCluster
from dask.distributed import Client

cluster = SLURMCluster(cores=1, memory="1GB", walltime="00:05:00")
print(cluster.job_script(), flush=True)
cluster.scale(jobs=2)
client = Client(cluster)
client.wait_for_workers(2, timeout=90)
futures = client.map(lambda x: x * x, range(10))
print("sum", client.submit(sum, futures).result(timeout=60), flush=True)
client.close()
cluster.close()
"#;

#[test]
fn dask_jobqueue_runs_its_workers_as_jobs_through_sbatch_and_scancel() {
    let Some(python) = python_with("dask_jobqueue", DASK_JOBQUEUE) else {
        return;
    };
    let cluster = LocalCluster::start(2, 10);
    for name in std::iter::once("sbatch").chain(SlurmCommand::ALL.map(SlurmCommand::name)) {
        cluster.slurm_link(name);
    }
    let links = cluster.state.path().join("bin");
    let path = format!(
        "{}:{}",
        links.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = cluster.job_file("dask_example.py", DASK_EXAMPLE);
    let mut child = Command::new(&python)
        .arg(&script)
        .env("PATH", path)
        .env("BEOWULF_STATE_DIR", cluster.state.path())
        .env_remove("BEOWULF_SOCKET")
        .current_dir(cluster.work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    // Bounded: a worker that never comes up must fail the test, not hang it.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the dask example failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("#SBATCH"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "sum 285"), "{stdout}\n{stderr}");
    // Both workers ran as jobs, and closing the cluster cancelled them.
    let jobs = cluster.queue_all();
    let workers: Vec<_> = jobs.iter().filter(|j| j["name"] == "dask-worker").collect();
    assert_eq!(workers.len(), 2, "{jobs:#?}");
    for worker in workers {
        let id = worker["id"].as_u64().unwrap();
        let info = cluster.wait_state(
            id,
            &["CANCELLED", "COMPLETED", "FAILED"],
            Duration::from_secs(30),
        );
        assert_ne!(info["start_time_ms"], serde_json::Value::Null, "{info:#}");
    }
}
