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
const SUBMITIT: &str = "submitit==1.5.4";

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

/// The cluster's Slurm-named commands first on a `PATH`.
fn path_with_slurm(cluster: &LocalCluster) -> String {
    for name in std::iter::once("sbatch").chain(SlurmCommand::ALL.map(SlurmCommand::name)) {
        cluster.slurm_link(name);
    }
    let links = cluster.state.path().join("bin");
    format!(
        "{}:{}",
        links.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `script` with the venv's `python` in the cluster's work directory, the Slurm names on
/// its PATH; fails the test after `limit`. Its stdout and stderr.
fn run_python(
    cluster: &LocalCluster,
    python: &Path,
    script: &Path,
    limit: Duration,
) -> (bool, String, String) {
    let mut child = Command::new(python)
        .arg(script)
        .env("PATH", path_with_slurm(cluster))
        .env("BEOWULF_STATE_DIR", cluster.state.path())
        .env_remove("BEOWULF_SOCKET")
        .current_dir(cluster.work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    // Bounded: a job that never comes up must fail the test, not hang it.
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// submitit's own example (its README), unchanged: an AutoExecutor, which picks Slurm when
/// `srun` is on the PATH, submits `add(5, 7)` with `sbatch` (a script whose `srun --unbuffered
/// --output ...` runs the function as a job step, `--signal=USR2@90`, `--wckey`), follows it with
/// `sacct`, and reads its pickled result.
const SUBMITIT_EXAMPLE: &str = r#"
import submitit

def add(a, b):
    return a + b

# executor is the submission interface (logs are dumped in the folder)
executor = submitit.AutoExecutor(folder="log_test")
# set timeout in min, and partition for running the job
executor.update_parameters(timeout_min=1, slurm_partition="dev")
job = executor.submit(add, 5, 7)  # will compute add(5, 7)
print(job.job_id)  # ID of your job

output = job.result()  # waits for completion and returns output
assert output == 12  # 5 + 7 = 12...  your addition was computed in the cluster
"#;

/// The example's partition, as a site would have it.
const DEV_PARTITION: &str = r#"
[[partition]]
name = "dev"
nodes = "node[1-2]"
default = true
"#;

#[test]
fn submitit_runs_its_example_through_sbatch_srun_and_sacct() {
    let Some(python) = python_with("submitit", SUBMITIT) else {
        return;
    };
    let cluster = LocalCluster::start_with_policy(2, 10, Some(DEV_PARTITION));
    let script = cluster.job_file("submitit_example.py", SUBMITIT_EXAMPLE);
    let (ok, stdout, stderr) = run_python(&cluster, &python, &script, Duration::from_secs(120));
    assert!(ok, "the submitit example failed:\n{stdout}\n{stderr}");
    let id: u64 = stdout
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("the example prints the job ID first: {stdout}"));
    let info = cluster.show(id);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    assert_eq!(info["partition"], "dev", "{info:#}");
    // The function ran as srun's step 0: its result and its log are the task's, in files named
    // by srun's --output and --error patterns (%j_%t).
    let folder = cluster.work.path().join("log_test");
    assert!(
        folder.join(format!("{id}_0_result.pkl")).exists(),
        "no result pickle in {}",
        folder.display()
    );
    let read = |name: String| {
        let path = folder.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let (out, err) = (
        read(format!("{id}_0_log.out")),
        read(format!("{id}_0_log.err")),
    );
    assert!(
        err.contains("completed") || out.contains("completed"),
        "stdout log:\n{out}\nstderr log:\n{err}"
    );
}

#[test]
fn dask_jobqueue_runs_its_workers_as_jobs_through_sbatch_and_scancel() {
    let Some(python) = python_with("dask_jobqueue", DASK_JOBQUEUE) else {
        return;
    };
    let cluster = LocalCluster::start(2, 10);
    let script = cluster.job_file("dask_example.py", DASK_EXAMPLE);
    let (ok, stdout, stderr) = run_python(&cluster, &python, &script, Duration::from_secs(150));
    assert!(ok, "the dask example failed:\n{stdout}\n{stderr}");
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
