//! Local tier: Slurm batch scripts submitted as a Slurm user would (issue 20): `#SBATCH` lines set
//! the job, command-line options override them, unsupported directives are refused naming the
//! line, and the script runs under its own `#!` shell.

use beowulf_tests::{LocalCluster, text};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// The job ID in sbatch's answer, which tools parse: `Submitted batch job N`.
fn batch_job_id(stdout: &[u8]) -> u64 {
    let out = text(stdout);
    let id = out
        .trim()
        .strip_prefix("Submitted batch job ")
        .unwrap_or_else(|| panic!("not sbatch's answer: {out:?}"));
    id.parse().unwrap()
}

#[test]
fn a_batch_script_runs_as_its_directives_say() {
    let cluster = LocalCluster::start(3, 10);
    let script = cluster.job_file(
        "relax.sh",
        r#"#!/bin/bash
#SBATCH --job-name=relax
#SBATCH -N 3                      # overridden on the command line
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:05:00
#SBATCH -o %x-%j-%N.out
#SBATCH --mail-user=ada@example.org

# bash, not sh: [[ ]] and BASH_VERSION exist only there
if [[ -n "$BASH_VERSION" ]]; then shell=bash; else shell=other; fi
echo "$SLURM_JOB_NAME $SLURM_NNODES $SLURM_NTASKS $SLURM_JOB_NODELIST $shell"
"#,
    );
    let out = cluster.sbatch(&["-N", "2", script.to_str().unwrap()]);
    assert!(out.status.success(), "sbatch: {}", text(&out.stderr));
    let id = batch_job_id(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("relax.sh:7: #SBATCH --mail-user is accepted but changes nothing"),
        "the mail directive is reported, not dropped: {stderr}"
    );
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let output = cluster.work.path().join(format!("relax-{id}-node1.out"));
    let written =
        std::fs::read_to_string(&output).unwrap_or_else(|e| panic!("{}: {e}", output.display()));
    assert_eq!(written.trim(), "relax 2 4 node[1-2] bash");
}

#[test]
fn a_refused_directive_names_its_line_and_nothing_is_queued() {
    let cluster = LocalCluster::start(1, 10);
    let script = cluster.job_file(
        "per-gpu.sh",
        "#!/bin/sh\n#SBATCH -N 1\n#SBATCH --mem-per-gpu=1G\nhostname\n",
    );
    let out = cluster.sbatch(&[script.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("per-gpu.sh:3: field `#SBATCH --mem-per-gpu`: not supported yet"),
        "{stderr}"
    );
    assert!(
        cluster.queue_all().is_empty(),
        "a refused script queues nothing"
    );
}

#[test]
fn wrap_parsable_and_options_on_a_job_file() {
    let cluster = LocalCluster::start(2, 10);
    let out = cluster.sbatch(&[
        "--parsable",
        "-o",
        "wrapped-%j.out",
        "--wrap",
        "echo wrapped on $(hostname -s) $SLURM_JOB_NODELIST",
    ]);
    assert!(out.status.success(), "sbatch --wrap: {}", text(&out.stderr));
    let id: u64 = text(&out.stdout)
        .trim()
        .parse()
        .expect("--parsable prints the ID alone");
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let written =
        std::fs::read_to_string(cluster.work.path().join(format!("wrapped-{id}.out"))).unwrap();
    assert!(written.starts_with("wrapped on "), "{written}");
    assert!(written.trim().ends_with("node1"), "{written}");

    // No file and no --wrap: the script comes on standard input, as sbatch reads it.
    let link = cluster.state.path().join("bin/sbatch");
    let mut child = std::process::Command::new(&link)
        .arg("--parsable")
        .env("BEOWULF_STATE_DIR", cluster.state.path())
        .env_remove("BEOWULF_SOCKET")
        .current_dir(cluster.work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        b"#!/bin/sh\n#SBATCH -o piped-%j.out\necho piped\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sbatch < script: {}",
        text(&out.stderr)
    );
    let id: u64 = text(&out.stdout).trim().parse().unwrap();
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let written =
        std::fs::read_to_string(cluster.work.path().join(format!("piped-{id}.out"))).unwrap();
    assert_eq!(written.trim(), "piped");

    // sbatch's resource options apply to a job file too, checked with its fields.
    let file = cluster.job_file(
        "two.toml",
        "command = [\"sh\", \"-c\", \"echo $SLURM_NNODES $SLURM_NTASKS\"]\noutput = \"two-%j.out\"\n",
    );
    let out = cluster.cluster(&[
        "submit",
        "--json",
        "-N",
        "2",
        "-n",
        "4",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "submit -N 2: {}", text(&out.stderr));
    let id = beowulf_tests::json(&out.stdout)["id"].as_u64().unwrap();
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let written =
        std::fs::read_to_string(cluster.work.path().join(format!("two-{id}.out"))).unwrap();
    assert_eq!(written.lines().next(), Some("2 4"), "{written}");
    let out = cluster.cluster(&["submit", "-N", "3", file.to_str().unwrap()]);
    assert!(!out.status.success(), "3 nodes of a 2-node cluster");
    let out = cluster.cluster(&["submit", "--mem", "lots", file.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("--mem: `lots` is not a size"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn squeue_scancel_sacct_sinfo_and_scontrol_answer_as_slurm_does() {
    let cluster = LocalCluster::start(2, 10);
    let ok = |name: &str, args: &[&str]| {
        let out = cluster.slurm(name, args);
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    // A running job and a pending array (it waits for the running one).
    let sleeper = cluster.job_file(
        "sleeper.sh",
        "#!/bin/sh\n#SBATCH -N 2 --ntasks-per-node=2 -J sleeper\nsleep 300\n",
    );
    let running = batch_job_id(&cluster.sbatch(&[sleeper.to_str().unwrap()]).stdout);
    cluster.wait_state(running, &["RUNNING"], MINUTE);
    let array_script = cluster.job_file(
        "array.sh",
        "#!/bin/sh\n#SBATCH -N 2 --array=0-2 -J arr\nhostname\n",
    );
    let array = batch_job_id(&cluster.sbatch(&[array_script.to_str().unwrap()]).stdout);

    // parsl's call: ID and compact state, no header. The array's pending elements share a
    // line, as in Slurm; `-r` gives each its own.
    let listed = ok("squeue", &["--noheader", "--format=%i %t", "--me"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [format!("{running} R"), format!("{array}_[0-2] PD")],
        "{listed}"
    );
    let listed = ok("squeue", &["--noheader", "--format=%i %t", "--me", "-r"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{running} R"),
            format!("{array}_0 PD"),
            format!("{array}_1 PD"),
            format!("{array}_2 PD")
        ],
        "{listed}"
    );
    let only = ok("squeue", &["-h", "-o", "%i", "-j", &format!("{array}_1")]);
    assert_eq!(only.trim(), format!("{array}_1"));
    let header = ok("squeue", &["-t", "R"]);
    assert!(
        header.starts_with("             JOBID PARTITION"),
        "{header}"
    );
    assert!(header.contains("node[1-2]"), "{header}");

    // sinfo: the whole cluster in the default partition, both nodes allocated.
    let info = ok("sinfo", &[]);
    assert!(info.contains("all*"), "{info}");
    assert!(info.contains("alloc node[1-2]"), "{info}");
    let scontrol = ok("scontrol", &["show", "job", &running.to_string()]);
    assert!(scontrol.contains("JobState=RUNNING"), "{scontrol}");
    assert!(scontrol.contains("NodeList=node[1-2]"), "{scontrol}");

    // The array's ID cancels every element; then the running job.
    ok("scancel", &[&array.to_string()]);
    ok("scancel", &[&running.to_string()]);
    cluster.wait_state(running, &["CANCELLED"], MINUTE);
    let left = ok("squeue", &["-h", "--me"]);
    assert!(left.trim().is_empty(), "nothing left: {left}");
    let out = cluster.slurm("scancel", &["999"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("job id 999"),
        "{}",
        text(&out.stderr)
    );

    // submitit's call: sacct, bar-separated, the array's elements under its ID.
    let ids = format!("{running},{array}");
    let acct = ok(
        "sacct",
        &["-o", "JobID,State,NodeList", "--parsable2", "-j", &ids],
    );
    let rows: Vec<&str> = acct.lines().collect();
    assert_eq!(rows[0], "JobID|State|NodeList");
    assert!(
        rows.contains(&format!("{running}|CANCELLED|node[1-2]").as_str()),
        "{acct}"
    );
    assert!(
        rows.contains(&format!("{array}_2|CANCELLED|None assigned").as_str()),
        "{acct}"
    );
    assert_eq!(rows.len(), 5, "{acct}");
    let out = cluster.slurm("sacct", &["-o", "JobID,Bogus"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("\"Bogus\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_array_s_id_names_the_whole_array_for_dependencies_and_cancel() {
    let cluster = LocalCluster::start(1, 10);
    // Three elements, one at a time (%1), each a second long: element 0 ends first, the array last.
    let array_script = cluster.job_file(
        "steps.sh",
        "#!/bin/sh\n#SBATCH --array=0-2%1 -o /dev/null\nsleep 1\n",
    );
    let array = batch_job_id(&cluster.sbatch(&[array_script.to_str().unwrap()]).stdout);
    let after = cluster.job_file("after.sh", "#!/bin/sh\n#SBATCH -o /dev/null\ntrue\n");
    let dependency = format!("afterok:{array}");
    let out = cluster.sbatch(&["-d", &dependency, after.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let waiter = batch_job_id(&out.stdout);
    let waited = cluster.wait_state(waiter, &["COMPLETED", "FAILED", "CANCELLED"], MINUTE);
    assert_eq!(waited["state"], "COMPLETED", "{waited:#}");
    let started = waited["start_time_ms"].as_u64().unwrap();
    for element in array..array + 3 {
        let info = cluster.show(element);
        assert_eq!(info["state"], "COMPLETED", "{info:#}");
        assert!(
            info["end_time_ms"].as_u64().unwrap() <= started,
            "job {waiter} started before element {element} of array {array} ended"
        );
    }

    // `cluster cancel ARRAY` ends every element, running or pending.
    let long = cluster.job_file(
        "long.sh",
        "#!/bin/sh\n#SBATCH --array=1-4 -o /dev/null\nsleep 300\n",
    );
    let array = batch_job_id(&cluster.sbatch(&[long.to_str().unwrap()]).stdout);
    cluster.wait_state(array, &["RUNNING"], MINUTE);
    let out = cluster.cluster(&["cancel", &array.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for element in array..array + 4 {
        let info = cluster.wait_state(element, &["CANCELLED"], MINUTE);
        assert_eq!(info["state"], "CANCELLED");
    }
}

#[test]
fn at_its_time_limit_a_job_gets_sigterm_saves_a_checkpoint_and_is_killed_after_the_kill_wait() {
    let cluster = LocalCluster::start(1, 10);
    // Traps SIGTERM: saves its checkpoint, then goes on as if nothing happened, until SIGKILL.
    let script = cluster.job_file(
        "ckpt.sh",
        "#!/bin/bash\n#SBATCH -t 0:02 -o /dev/null\n\
         trap 'echo checkpoint saved > ckpt-$SLURM_JOB_ID.txt' TERM\n\
         while true; do sleep 0.2; done\n",
    );
    let id = batch_job_id(&cluster.sbatch(&[script.to_str().unwrap()]).stdout);
    let info = cluster.wait_state(id, &["TIMEOUT", "COMPLETED", "FAILED"], MINUTE);
    assert_eq!(info["state"], "TIMEOUT", "{info:#}");
    let timed_out = std::time::Instant::now();
    let checkpoint = cluster.work.path().join(format!("ckpt-{id}.txt"));
    while !checkpoint.exists() {
        assert!(
            timed_out.elapsed() < Duration::from_secs(10),
            "no checkpoint: the job never got SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_to_string(&checkpoint).unwrap().trim(),
        "checkpoint saved"
    );
    // The job ignored SIGTERM: its CPU stays held until SIGKILL, the kill wait after it.
    let held =
        |cluster: &LocalCluster| cluster.nodes_json()[0]["cpus_allocated"].as_u64() != Some(0);
    assert!(held(&cluster), "released before the kill wait");
    while held(&cluster) {
        assert!(
            timed_out.elapsed() < Duration::from_secs(30),
            "never killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill_wait: u64 = beowulf_tests::KILL_WAIT_S.parse().unwrap();
    assert!(
        timed_out.elapsed() >= Duration::from_millis(kill_wait * 1000 - 500),
        "killed {:?} after the time limit, before its {kill_wait} s kill wait",
        timed_out.elapsed()
    );
}

#[test]
fn a_job_the_oom_killer_ends_is_out_of_memory() {
    let cluster = LocalCluster::start(1, 10);
    // tail keeps its last line in memory: 512 MiB of zeros without a newline is one such line.
    let script = cluster.job_file(
        "hog.sh",
        "#!/bin/sh\n#SBATCH --mem=64M -o /dev/null\nhead -c 512M /dev/zero | tail > /dev/null\necho survived\n",
    );
    let id = batch_job_id(&cluster.sbatch(&[script.to_str().unwrap()]).stdout);
    let info = cluster.wait_state(
        id,
        &[
            "OUT_OF_MEMORY",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
        ],
        MINUTE,
    );
    assert_eq!(info["state"], "OUT_OF_MEMORY", "{info:#}");
    assert!(
        info["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("64 MiB"),
        "{info:#}"
    );
    let listed = cluster.slurm("squeue", &["-h", "-t", "OOM", "-o", "%i %t"]);
    assert_eq!(text(&listed.stdout).trim(), format!("{id} OOM"));
}

/// Lines of a file, sorted (tasks on different nodes write in no fixed order).
fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let written =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = written.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn srun_in_a_batch_script_runs_steps_on_the_jobs_nodes() {
    let cluster = LocalCluster::start(3, 10);
    let script = cluster.job_file(
        "steps.sh",
        r#"#!/bin/bash
#SBATCH -N 3
#SBATCH --ntasks-per-node=1
#SBATCH -o steps-%j.out
set -u
# Step 0: one task on every node, labelled.
srun -l bash -c 'echo "step=$SLURM_STEP_ID rank=$SLURM_PROCID of=$SLURM_NTASKS node=$SLURMD_NODENAME id=$SLURM_NODEID"'
# Step 1: two nodes, its output in a file per task.
srun -N2 -o 'step-%s-task-%t.out' bash -c 'echo "$SLURM_STEP_ID $SLURM_PROCID $SLURMD_NODENAME $SLURM_STEP_NODELIST"; echo err >&2'
# Steps 2 and 3 at once, on chosen nodes.
srun -w node3 bash -c 'sleep 1; echo "late $SLURM_STEP_ID $SLURMD_NODENAME"' &
srun -x node1,node3 bash -c 'echo "early $SLURM_STEP_ID $SLURMD_NODENAME"' &
wait
# Step 4: a failing task; srun exits with its code.
srun -n1 bash -c 'exit 3'
echo "srun exit=$?"
# Refused before any step: more tasks than the job's CPUs on a node.
srun -N1 -n8 true 2>/dev/null
echo "too many exit=$?"
"#,
    );
    let out = cluster.sbatch(&[script.to_str().unwrap()]);
    assert!(out.status.success(), "sbatch: {}", text(&out.stderr));
    let id = batch_job_id(&out.stdout);
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    let work = cluster.work.path();
    let output = work.join(format!("steps-{id}.out"));
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    assert_eq!(info["state"], "COMPLETED", "{info:#}\n{written}");
    let lines = sorted_lines(&output);
    let expected_step0 = [
        "0: step=0 rank=0 of=3 node=node1 id=0",
        "1: step=0 rank=1 of=3 node=node2 id=1",
        "2: step=0 rank=2 of=3 node=node3 id=2",
    ];
    for line in expected_step0 {
        assert!(lines.iter().any(|l| l == line), "{line:?} in {lines:#?}");
    }
    for (task, node) in [(0, "node1"), (1, "node2")] {
        let file = work.join(format!("step-1-task-{task}.out"));
        assert_eq!(
            sorted_lines(&file),
            [format!("1 {task} {node} node[1-2]"), "err".to_string()]
        );
    }
    assert!(!work.join("step-1-task-2.out").exists());
    // Steps 2 and 3 ran at the same time: each got its own number, on the nodes it named.
    let late = lines
        .iter()
        .find(|l| l.starts_with("late "))
        .expect(&written);
    let early = lines
        .iter()
        .find(|l| l.starts_with("early "))
        .expect(&written);
    assert!(
        late.ends_with(" node3") && early.ends_with(" node2"),
        "{written}"
    );
    let mut concurrent: Vec<&str> = [late, early]
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    concurrent.sort_unstable();
    assert_eq!(concurrent, ["2", "3"], "{written}");
    assert!(lines.contains(&"srun exit=3".to_string()), "{written}");
    assert!(lines.contains(&"too many exit=1".to_string()), "{written}");
}

#[test]
fn srun_forwards_signals_and_its_steps_die_with_it() {
    let cluster = LocalCluster::start(2, 10);
    let script = cluster.job_file(
        "signals.sh",
        r#"#!/bin/bash
#SBATCH -N 2
#SBATCH -o signals-%j.out
# A step on the other node that checkpoints on SIGTERM: srun passes the signal on.
srun -w node2 bash -c 'trap "echo checkpointed on \$SLURMD_NODENAME; exit 0" TERM; echo ready; sleep 300 & wait' &
srun_pid=$!
sleep 2
kill -TERM $srun_pid
wait $srun_pid
echo "term exit=$?"
# A step whose srun is killed outright: its task on the other node is killed too.
srun -w node2 sleep 4242 &
srun_pid=$!
sleep 2
kill -KILL $srun_pid
sleep 1
echo "left=$(ps -eo args= | grep -c '^sleep 4242$')"
"#,
    );
    let out = cluster.sbatch(&[script.to_str().unwrap()]);
    assert!(out.status.success(), "sbatch: {}", text(&out.stderr));
    let id = batch_job_id(&out.stdout);
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
    let output = cluster.work.path().join(format!("signals-{id}.out"));
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    assert_eq!(info["state"], "COMPLETED", "{info:#}\n{written}");
    let lines: Vec<&str> = written.lines().collect();
    assert!(lines.contains(&"checkpointed on node2"), "{written}");
    assert!(lines.contains(&"term exit=0"), "{written}");
    assert!(lines.contains(&"left=0"), "{written}");
}

#[test]
fn scontrol_holds_releases_updates_and_requeues_jobs_as_slurm_does() {
    let cluster = LocalCluster::start(1, 10);
    let ok = |name: &str, args: &[&str]| {
        let out = cluster.slurm(name, args);
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let reason = |id: u64| ok("squeue", &["-h", "-o", "%t %r", "-j", &id.to_string()]);

    // Submitted held: it waits, as its owner's hold, whatever else happens.
    let quick = cluster.job_file("quick.sh", "#!/bin/sh\n#SBATCH -o /dev/null\ntrue\n");
    let held = batch_job_id(&cluster.sbatch(&["-H", quick.to_str().unwrap()]).stdout);
    assert_eq!(reason(held).trim(), "PD JobHeldUser");

    // A pending job (it waits for a sleeper) held by root: an admin hold.
    let sleeper = cluster.job_file("sleeper.sh", "#!/bin/sh\n#SBATCH -o /dev/null\nsleep 300\n");
    let blocker = batch_job_id(&cluster.sbatch(&[sleeper.to_str().unwrap()]).stdout);
    let after = format!("afterany:{blocker}");
    let waiting = batch_job_id(
        &cluster
            .sbatch(&["-d", &after, quick.to_str().unwrap()])
            .stdout,
    );
    ok("scontrol", &["hold", &waiting.to_string()]);
    assert_eq!(reason(waiting).trim(), "PD JobHeldAdmin");
    // Its time limit changes while it waits, and scontrol shows it.
    ok(
        "scontrol",
        &["update", &format!("JobId={waiting}"), "TimeLimit=10"],
    );
    let shown = ok("scontrol", &["show", "job", &waiting.to_string()]);
    assert!(shown.contains("TimeLimit=10:00"), "{shown}");
    let out = cluster.slurm(
        "scontrol",
        &["update", &format!("JobId={waiting}"), "Nice=5"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Update of Nice is not supported"),
        "{}",
        text(&out.stderr)
    );
    // Its dependency is satisfied, but the hold keeps it pending until released.
    ok("scancel", &[&blocker.to_string()]);
    cluster.wait_state(blocker, &["CANCELLED"], MINUTE);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reason(waiting).trim(), "PD JobHeldAdmin");
    ok("scontrol", &["release", &format!("{waiting},{held}")]);
    for id in [waiting, held] {
        let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
        assert_eq!(info["state"], "COMPLETED", "{info:#}");
    }
    // A job that has ended can be neither held nor released.
    let out = cluster.slurm("scontrol", &["hold", &held.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has already ended"),
        "{}",
        text(&out.stderr)
    );

    // Requeued, a running job stops and runs again, its restart count one higher.
    let again = cluster.job_file(
        "again.sh",
        "#!/bin/sh\n#SBATCH --requeue -o again-%j.out\necho \"run $SLURM_RESTART_COUNT\"\nsleep 300\n",
    );
    let id = batch_job_id(&cluster.sbatch(&[again.to_str().unwrap()]).stdout);
    cluster.wait_state(id, &["RUNNING"], MINUTE);
    let output = cluster.work.path().join(format!("again-{id}.out"));
    let wait_for = |line: &str| {
        let deadline = std::time::Instant::now() + MINUTE;
        loop {
            let written = std::fs::read_to_string(&output).unwrap_or_default();
            if written.lines().any(|l| l == line) {
                return written;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {line:?} in {}: {written:?}",
                output.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("run 0");
    ok("scontrol", &["requeue", &id.to_string()]);
    let written = wait_for("run 1");
    assert_eq!(written.lines().collect::<Vec<_>>(), ["run 0", "run 1"]);
    let shown = ok("scontrol", &["show", "job", &id.to_string()]);
    assert!(shown.contains("JobState=RUNNING"), "{shown}");
    assert!(shown.contains("Restarts=1"), "{shown}");
    ok("scancel", &[&id.to_string()]);

    // A job submitted without --requeue may not be requeued, as in Slurm.
    let plain = batch_job_id(&cluster.sbatch(&[sleeper.to_str().unwrap()]).stdout);
    cluster.wait_state(plain, &["RUNNING"], MINUTE);
    let out = cluster.slurm("scontrol", &["requeue", &plain.to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--requeue"),
        "{}",
        text(&out.stderr)
    );
    ok("scancel", &[&plain.to_string()]);
}

/// Submits `script` with `args` through sbatch and returns the job ID.
#[test]
fn array_index_names_one_element_for_dependencies() {
    let cluster = LocalCluster::start(2, 10);
    // Element 1 ends at once; element 2 runs for minutes.
    let array_script = cluster.job_file(
        "elements.sh",
        "#!/bin/sh\n#SBATCH --array=1-2 -o /dev/null\n[ \"$SLURM_ARRAY_TASK_ID\" = 2 ] && sleep 300\ntrue\n",
    );
    let array = batch_job_id(&cluster.sbatch(&[array_script.to_str().unwrap()]).stdout);
    let after = cluster.job_file("after-one.sh", "#!/bin/sh\n#SBATCH -o /dev/null\ntrue\n");
    let one = sbatch_ok(
        &cluster,
        &["-d", &format!("afterok:{array}_1"), after.to_str().unwrap()],
    );
    let all = sbatch_ok(
        &cluster,
        &["-d", &format!("afterany:{array}"), after.to_str().unwrap()],
    );
    let waited = cluster.wait_state(one, &["COMPLETED", "FAILED", "CANCELLED"], MINUTE);
    assert_eq!(waited["state"], "COMPLETED", "{waited:#}");
    let element_2 = array + 1;
    assert_eq!(
        cluster.show(element_2)["state"],
        "RUNNING",
        "afterok:{array}_1 waited for element 1 alone"
    );
    let whole = cluster.show(all);
    assert_eq!(
        whole["state"], "PENDING",
        "afterany:{array} waits for every element: {whole:#}"
    );
    assert_eq!(
        whole["dependencies"],
        serde_json::json!([format!("afterany:{array}")])
    );
    assert_eq!(
        cluster.show(one)["dependencies"],
        serde_json::json!([format!("afterok:{array}_1")])
    );
    // An index the array does not have is refused at submit, naming it.
    let out = cluster.sbatch(&["-d", &format!("afterok:{array}_7"), after.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("job {array} has no array element 7")),
        "{}",
        text(&out.stderr)
    );
    let out = cluster.cluster(&["cancel", &array.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn sbatch_ok(cluster: &LocalCluster, args: &[&str]) -> u64 {
    let out = cluster.sbatch(args);
    assert!(
        out.status.success(),
        "sbatch {args:?}: {}",
        text(&out.stderr)
    );
    batch_job_id(&out.stdout)
}

/// The nodes a completed job wrote as its SLURM_JOB_NODELIST to `where-JOBID.out`.
fn nodelist_written(cluster: &LocalCluster, id: u64) -> String {
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED", "CANCELLED"], MINUTE);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    let path = cluster.work.path().join(format!("where-{id}.out"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn nodelist_exclude_exclusive_and_begin_are_observed_in_placement() {
    let cluster = LocalCluster::start(3, 10);
    let where_script = cluster.job_file(
        "where.sh",
        "#!/bin/sh\n#SBATCH -o where-%j.out\necho $SLURM_JOB_NODELIST\n",
    );
    let script = where_script.to_str().unwrap();

    // On an idle cluster best fit takes node1: the list and the exclusion move the job.
    let listed = sbatch_ok(&cluster, &["-w", "node3", script]);
    assert_eq!(nodelist_written(&cluster, listed), "node3");
    let two = sbatch_ok(&cluster, &["--nodelist=node[2-3]", script]);
    assert_eq!(
        nodelist_written(&cluster, two),
        "node[2-3]",
        "a list alone sets the node count"
    );
    let excluded = sbatch_ok(&cluster, &["-x", "node[1-2]", script]);
    assert_eq!(nodelist_written(&cluster, excluded), "node3");
    let out = cluster.sbatch(&["-w", "node9", script]);
    assert!(!out.status.success(), "a node the cluster does not have");
    assert!(
        text(&out.stderr).contains("invalid node name specified: `node9`"),
        "{}",
        text(&out.stderr)
    );

    // A one-CPU job on node1; an exclusive job goes to an empty node, though best fit (the
    // partly used node1) would take node1 for a job that shares.
    let sleeper = cluster.job_file("sleeper.sh", "#!/bin/sh\nsleep 300\n");
    let busy = sbatch_ok(&cluster, &["-w", "node1", sleeper.to_str().unwrap()]);
    cluster.wait_state(busy, &["RUNNING"], MINUTE);
    let alone = sbatch_ok(&cluster, &["--exclusive", sleeper.to_str().unwrap()]);
    let info = cluster.wait_state(alone, &["RUNNING"], MINUTE);
    assert_eq!(info["nodes"], serde_json::json!(["node2"]), "{info:#}");
    assert_eq!(info["exclusive"], true);
    // Nothing joins it there, while node2 has a free CPU.
    let beside = sbatch_ok(&cluster, &["-w", "node2", script]);
    std::thread::sleep(Duration::from_secs(3));
    let info = cluster.show(beside);
    assert_eq!(
        (&info["state"], &info["reason"]),
        (
            &serde_json::json!("PENDING"),
            &serde_json::json!("Resources")
        ),
        "{info:#}"
    );
    let shown = cluster.slurm("scontrol", &["show", "job", &beside.to_string()]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("ReqNodeList=node2"), "{shown}");
    assert!(shown.contains("ExcNodeList=(null)"), "{shown}");
    let shown = text(
        &cluster
            .slurm("scontrol", &["show", "job", &alone.to_string()])
            .stdout,
    );
    assert!(shown.contains("OverSubscribe=NO"), "{shown}");
    assert!(
        cluster
            .cluster(&["cancel", &alone.to_string()])
            .status
            .success()
    );
    assert_eq!(nodelist_written(&cluster, beside), "node2");
    assert!(
        cluster
            .cluster(&["cancel", &busy.to_string()])
            .status
            .success()
    );

    // Not eligible before its begin time: it waits with BeginTime, then runs.
    let later = sbatch_ok(&cluster, &["--begin=now+3", script]);
    // The reason is the next scheduling pass's (each second): wait for it.
    let mut info = cluster.show(later);
    for _ in 0..20 {
        if info["reason"] != "None" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        info = cluster.show(later);
    }
    assert_eq!(info["reason"], "BeginTime", "{info:#}");
    let submitted = info["submit_time_ms"].as_u64().unwrap();
    let eligible = info["eligible_time_ms"].as_u64().unwrap();
    assert!(
        (submitted + 3000..submitted + 4000).contains(&eligible),
        "{info:#}"
    );
    assert_eq!(nodelist_written(&cluster, later), "node1");
    let started = cluster.show(later)["start_time_ms"].as_u64().unwrap();
    assert!(
        started >= eligible,
        "started {started}, eligible {eligible}"
    );
}

#[test]
fn signal_before_the_time_limit_reaches_the_batch_shell_or_the_steps() {
    let cluster = LocalCluster::start(2, 10);
    // B: the batch shell alone gets USR1, 15 s before its 20 s limit.
    let batch = cluster.job_file(
        "warn-batch.sh",
        r#"#!/bin/bash
#SBATCH -t 00:00:20
#SBATCH --signal=B:USR1@15
#SBATCH -o warn-batch-%j.out
trap 'echo "batch got USR1 after ${SECONDS}s"; exit 0' USR1
sleep 100 &
wait
"#,
    );
    // Without B: the steps' tasks get it, not the batch shell (which has no trap and would die).
    let steps = cluster.job_file(
        "warn-steps.sh",
        r#"#!/bin/bash
#SBATCH -t 00:00:20
#SBATCH --signal=USR2@15
#SBATCH -o warn-steps-%j.out
srun bash -c 'trap "echo step got USR2; exit 0" USR2; sleep 100 & wait'
echo "batch shell still here"
"#,
    );
    let batch_id = batch_job_id(&cluster.sbatch(&[batch.to_str().unwrap()]).stdout);
    let steps_id = batch_job_id(&cluster.sbatch(&[steps.to_str().unwrap()]).stdout);
    for (id, name, wanted) in [
        (batch_id, "warn-batch", "batch got USR1 after"),
        (
            steps_id,
            "warn-steps",
            "step got USR2\nbatch shell still here",
        ),
    ] {
        let info = cluster.wait_state(id, &["COMPLETED", "FAILED", "TIMEOUT"], MINUTE);
        let output = cluster.work.path().join(format!("{name}-{id}.out"));
        let written = std::fs::read_to_string(&output).unwrap_or_default();
        assert_eq!(info["state"], "COMPLETED", "{info:#}\n{written}");
        assert!(written.contains(wanted), "{written}");
    }
}

#[test]
fn scancel_signal_reaches_the_batch_shell_or_the_steps_and_the_job_runs_on() {
    let cluster = LocalCluster::start(2, 10);
    let script = cluster.job_file(
        "signalled.sh",
        r#"#!/bin/bash
#SBATCH -N 2
#SBATCH -o signalled-%j.out
trap 'echo "batch got USR1"' USR1
srun -N2 bash -c 'trap "echo step \$SLURM_PROCID got USR2; exit 0" USR2; echo ready; sleep 100 & wait' &
wait
wait
echo "batch done"
"#,
    );
    let id = batch_job_id(&cluster.sbatch(&[script.to_str().unwrap()]).stdout);
    let output = cluster.work.path().join(format!("signalled-{id}.out"));
    let read = || std::fs::read_to_string(&output).unwrap_or_default();
    let until = |what: &str, count: usize| {
        let start = std::time::Instant::now();
        while read().matches(what).count() < count {
            assert!(start.elapsed() < MINUTE, "no {what:?} in {}", read());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until("ready", 2);
    let job = id.to_string();
    let out = cluster.slurm("scancel", &["--signal=USR1", "--batch", &job]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    until("batch got USR1", 1);
    assert_eq!(
        cluster.show(id)["state"],
        "RUNNING",
        "a signal does not end the job"
    );
    let out = cluster.slurm("scancel", &["-s", "SIGUSR2", &job]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info = cluster.wait_state(id, &["COMPLETED", "FAILED", "CANCELLED"], MINUTE);
    let written = read();
    assert_eq!(info["state"], "COMPLETED", "{info:#}\n{written}");
    for line in ["step 0 got USR2", "step 1 got USR2", "batch done"] {
        assert!(written.contains(line), "no {line:?} in {written}");
    }
    assert_eq!(written.matches("batch got USR1").count(), 1, "{written}");
    // A signal for a job that is not running is refused.
    let out = cluster.slurm("scancel", &["-s", "USR1", &job]);
    assert!(!out.status.success());
    let out = cluster.slurm("scancel", &["-s", "NOPE", &job]);
    assert!(
        text(&out.stderr).contains("not a signal name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn export_decides_what_of_the_submitters_environment_the_job_gets() {
    let cluster = LocalCluster::start(1, 10);
    let script = cluster.job_file(
        "export.sh",
        "#!/bin/bash\n#SBATCH --export=NONE\n#SBATCH -o export-%j.out\n\
         echo \"mark=${EXPORT_MARK-unset} kept=${KEPT-unset} set=${SET-unset} job=$SLURM_JOB_ID\"\n",
    );
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.push(script.to_str().unwrap());
        let out = std::process::Command::new(cluster.slurm_link("sbatch"))
            .args(&all)
            .env("BEOWULF_STATE_DIR", cluster.state.path())
            .env("EXPORT_MARK", "here")
            .env("KEPT", "yes")
            .env_remove("BEOWULF_SOCKET")
            .current_dir(cluster.work.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let id = batch_job_id(&out.stdout);
        let info = cluster.wait_state(id, &["COMPLETED", "FAILED"], MINUTE);
        assert_eq!(info["state"], "COMPLETED", "{info:#}");
        let path = cluster.work.path().join(format!("export-{id}.out"));
        (
            id,
            std::fs::read_to_string(path).unwrap().trim().to_string(),
        )
    };
    // The script's NONE: none of the submitter's variables, Slurm's own still there.
    let (id, line) = run(&[]);
    assert_eq!(line, format!("mark=unset kept=unset set=unset job={id}"));
    // The command line's list wins: KEPT from the environment, SET set, EXPORT_MARK not.
    let (id, line) = run(&["--export=KEPT,SET=1"]);
    assert_eq!(line, format!("mark=unset kept=yes set=1 job={id}"));
    let (id, line) = run(&["--export=ALL"]);
    assert_eq!(line, format!("mark=here kept=yes set=unset job={id}"));
}

#[test]
fn test_only_checks_the_job_and_queues_nothing() {
    let cluster = LocalCluster::start(2, 10);
    let script = cluster.job_file("check.sh", "#!/bin/sh\n#SBATCH -N 2\nhostname\n");
    let out = cluster.sbatch(&["--test-only", script.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).is_empty(),
        "no job ID: {}",
        text(&out.stdout)
    );
    let said = text(&out.stderr);
    assert!(
        said.starts_with("sbatch: 1 job(s) would be queued: 2 node(s)"),
        "{said}"
    );
    // What a submit would refuse, --test-only refuses.
    let out = cluster.sbatch(&["--test-only", "-N", "3", script.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(cluster.queue_all().is_empty(), "nothing was queued");
    // And the next real submit gets the first job ID: none was used.
    let id = batch_job_id(&cluster.sbatch(&[script.to_str().unwrap()]).stdout);
    assert_eq!(id, 1);
}
