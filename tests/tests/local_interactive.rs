//! Local tier: interactive work as a Slurm user does it (issue 20): `salloc` holds nodes while
//! its shell runs `srun` steps on them (relayed by the head to the agents), `srun` outside a job
//! allocates one, runs and releases it, and `srun --pty` gives a real terminal through the
//! agent, driven here through a pty: prompt, commands, resize, Ctrl-C and the exit code.

use beowulf_tests::{LocalCluster, text};
use serde_json::Value;
use std::process::Command;

/// The job of `name` among every job the cluster knows (the allocation salloc or srun made).
fn job_named(cluster: &LocalCluster, name: &str) -> Value {
    let jobs = cluster.queue_all();
    let matching: Vec<&Value> = jobs.iter().filter(|j| j["name"] == name).collect();
    assert_eq!(matching.len(), 1, "one job called {name}: {jobs:#?}");
    matching[0].clone()
}

#[test]
fn salloc_holds_the_nodes_while_its_command_runs_srun_steps_on_them() {
    let cluster = LocalCluster::start(3, 10);
    let shell = r#"
echo "job=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST n=$SLURM_NNODES"
echo "state=$(squeue -h -j "$SLURM_JOB_ID" -o %T)"
srun -l bash -c 'echo "$SLURMD_NODENAME step=$SLURM_STEP_ID of=$SLURM_NTASKS"'
srun -N1 -w node2 bash -c 'echo "second step=$SLURM_STEP_ID on $SLURMD_NODENAME"; exit 4'
echo "srun=$?"
exit 3
"#;
    let out = cluster.slurm(
        "salloc",
        &["-N2", "-J", "interactive-a", "-t", "5", "bash", "-c", shell],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "salloc exits with its command's code\n{stdout}\n{stderr}"
    );
    let job = job_named(&cluster, "interactive-a");
    let id = job["id"].as_u64().unwrap();
    assert!(
        stderr.contains(&format!("salloc: Granted job allocation {id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("salloc: Relinquishing job allocation {id}")),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&format!("job={id} nodes=node[1-2] n=2").as_str()),
        "{stdout}"
    );
    assert!(
        lines.contains(&"state=RUNNING"),
        "the allocation holds its nodes: {stdout}"
    );
    assert!(lines.contains(&"0: node1 step=0 of=2"), "{stdout}");
    assert!(lines.contains(&"1: node2 step=0 of=2"), "{stdout}");
    assert!(lines.contains(&"second step=1 on node2"), "{stdout}");
    assert!(
        lines.contains(&"srun=4"),
        "srun exits with its task's code: {stdout}"
    );
    // The allocation ends with its command: FAILED with the shell's code, as sacct shows it.
    assert_eq!(job["state"], "FAILED", "{job:#}");
    assert_eq!(job["exit_code"], 3, "{job:#}");

    // A command that succeeds leaves a COMPLETED allocation; its nodes are free again.
    let out = cluster.slurm(
        "salloc",
        &["-N3", "-J", "interactive-b", "srun", "hostname"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(job_named(&cluster, "interactive-b")["state"], "COMPLETED");

    // An allocation that ended takes no more steps: the head refuses to relay them.
    let out = cluster.slurm("srun", &["--jobid", &id.to_string(), "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn srun_outside_a_job_allocates_runs_the_step_and_releases_the_job() {
    let cluster = LocalCluster::start(2, 10);
    let out = cluster.slurm(
        "srun",
        &[
            "-N2",
            "-J",
            "outside",
            "-l",
            "bash",
            "-c",
            "echo \"$SLURMD_NODENAME $SLURM_STEP_ID $SLURM_JOB_NAME\"",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["0: node1 0 outside", "1: node2 0 outside"]);
    assert_eq!(job_named(&cluster, "outside")["state"], "COMPLETED");

    let out = cluster.slurm("srun", &["-J", "fails", "bash", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let failed = job_named(&cluster, "fails");
    assert_eq!(
        (failed["state"].as_str(), failed["exit_code"].as_i64()),
        (Some("FAILED"), Some(5))
    );

    // A job that can never start is refused at once, naming the option.
    let out = cluster.slurm("srun", &["-N9", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("srun: error:"),
        "{}",
        text(&out.stderr)
    );
}

/// Drives `srun --pty` through a pseudo-terminal as a user at a keyboard would: waits for the
/// prompt, types commands, resizes the window, presses Ctrl-C, exits; prints the transcript and
/// exits with srun's exit code.
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])

transcript = b""

def read_until(needle, timeout=90):
    global transcript
    deadline = time.time() + timeout
    while needle not in transcript:
        left = deadline - time.time()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        transcript += data
    if needle not in transcript:
        sys.stdout.write(transcript.decode(errors="replace"))
        sys.exit(f"no {needle!r} in the terminal")

def type_in(text):
    os.write(fd, text.encode())

# bash's own prompt first (`bash-5.2$ `; `#` for root), then one we set.
read_until(b"bash-")
read_until(b" ")
type_in('PS1="PRO""MPT> "\r')
read_until(b"PROMPT> ")
type_in('tty | sed "s/^/tty=/"; echo "ok-$((6*7))"\r')
read_until(b"ok-42")
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
time.sleep(1)
type_in('echo "size-$(stty size | tr " " x)"\r')
read_until(b"size-50x132")
type_in("sleep 300\r")
time.sleep(1)
type_in("\x03")
time.sleep(0.5)
type_in('echo "interrupted-$?"\r')
read_until(b"interrupted-130")
type_in("exit 7\r")
try:
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        transcript += data
except OSError:
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(transcript.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

#[test]
fn srun_pty_gives_a_terminal_that_resizes_takes_ctrl_c_and_returns_the_exit_code() {
    let cluster = LocalCluster::start(2, 10);
    let driver = cluster.job_file("pty_driver.py", PTY_DRIVER);
    let srun = cluster.slurm_link("srun");
    let mut cmd = Command::new("python3");
    cmd.arg(&driver)
        .arg(&srun)
        .args([
            "-N1", "-w", "node2", "-J", "shell", "--pty", "bash", "--norc", "-i",
        ])
        .env("TERM", "dumb");
    cluster.slurm_env(&mut cmd);
    let out = cmd.output().expect("python3 runs the pty driver");
    let transcript = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "srun exits with the shell's code\n{transcript}\n{}",
        text(&out.stderr)
    );
    assert!(
        transcript.contains("tty=/dev/pts/"),
        "the task's stdin is a terminal: {transcript}"
    );
    let job = job_named(&cluster, "shell");
    assert_eq!(job["nodes"], serde_json::json!(["node2"]), "{job:#}");
    assert_eq!(
        (job["state"].as_str(), job["exit_code"].as_i64()),
        (Some("FAILED"), Some(7))
    );
}
