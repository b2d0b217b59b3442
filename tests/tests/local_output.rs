//! Local tier, issue 7: the output of a job whose tasks run on several nodes reaches its files
//! through the first node's agent (output forwarding), so that files on NFS get every line. The
//! first node's tasks write to the file; the other nodes' write into pipes their agent forwards.

use beowulf_tests::{LocalCluster, text};
use std::collections::BTreeMap;

const NOBODY: u32 = 65534;
/// Lines of the one task that writes a lot: several batches, more than the pipes and the run's
/// queue hold (its writes must wait for the writer, and nothing may be lost).
const MANY: u32 = 200_000;

#[test]
fn every_nodes_output_reaches_the_files_through_the_first_node() {
    let cluster = LocalCluster::start(5, 10);
    // Ten tasks on five nodes, as nobody. Each says where its stdout goes (`$$`: the shell's, not
    // the command substitution's), writes three lines to stdout and one to stderr; the last
    // task also writes MANY numbered lines.
    let script = format!(
        "for i in 1 2 3; do echo \"rank $SLURM_PROCID on $SLURMD_NODENAME line $i fd1 $(readlink /proc/$$/fd/1)\"; done; \
         echo \"rank $SLURM_PROCID error\" >&2; \
         if [ \"$SLURM_PROCID\" = 9 ]; then seq 1 {MANY}; fi"
    );
    let file = cluster.job_file(
        "spread.toml",
        &format!(
            "name = \"spread\"\nnodes = 5\ntasks_per_node = 2\ncommand = [\"sh\", \"-c\", {script:?}]\n\
             output = \"spread-%j.out\"\nerror = \"spread-%j.err\"\ntime_limit = \"00:02:00\"\n"
        ),
    );
    let info = cluster.submit_as(NOBODY, NOBODY, &file, true);
    assert_eq!(info["state"], "COMPLETED", "{info:#}");
    // Read right when the job is COMPLETED: every node's output must be in the files by then.
    let out_path = info["stdout"].as_str().unwrap().to_string();
    let output = std::fs::read_to_string(&out_path).unwrap();
    let errors = std::fs::read_to_string(info["stderr"].as_str().unwrap()).unwrap();

    let mut lines: BTreeMap<(u32, u32), (String, String)> = BTreeMap::new();
    let mut numbers = Vec::new();
    for line in output.lines() {
        if let Ok(n) = line.parse::<u32>() {
            numbers.push(n);
            continue;
        }
        // "rank R on nodeN line I fd1 TARGET"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() == 8 && words[0] == "rank",
            "a line not whole: {line:?}"
        );
        let (rank, index) = (words[1].parse().unwrap(), words[5].parse().unwrap());
        let first = lines.insert((rank, index), (words[3].to_string(), words[7].to_string()));
        assert!(first.is_none(), "line {index} of rank {rank} twice");
    }
    assert_eq!(lines.len(), 30, "missing lines:\n{output}");
    for ((rank, _), (node, target)) in &lines {
        assert_eq!(*node, format!("node{}", rank / 2 + 1));
        if *node == "node1" {
            assert_eq!(*target, out_path, "the first node's tasks write the file");
        } else {
            assert!(target.starts_with("pipe:"), "rank {rank} wrote to {target}");
        }
    }
    // The long output whole and in order.
    assert_eq!(numbers.len(), MANY as usize);
    if let Some(at) = numbers
        .iter()
        .zip(1..=MANY)
        .position(|(n, want)| *n != want)
    {
        let around = &numbers[at.saturating_sub(3)..(at + 3).min(numbers.len())];
        panic!("numbered lines out of order at line {at}: {around:?}");
    }

    let mut error_lines: Vec<&str> = errors.lines().collect();
    error_lines.sort();
    let expected: Vec<String> = (0..10).map(|r| format!("rank {r} error")).collect();
    let mut expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(error_lines, expected, "stderr file:\n{errors}");

    // The files belong to the job's user, as if its tasks had written them all.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&out_path).unwrap().uid(), NOBODY);
}

#[test]
fn short_jobs_on_five_nodes_lose_no_line() {
    // Jobs this short end on the other nodes before the first node's agent has set up the
    // files: their output must wait for it, not be turned away (it was, in 3 jobs of 100).
    let cluster = LocalCluster::start(5, 10);
    let file = cluster.job_file(
        "short.toml",
        "nodes = 5\ncommand = [\"hostname\"]\noutput = \"short-%j.out\"\n",
    );
    for _ in 0..100 {
        let info = cluster.submit_as(0, 0, &file, true);
        assert_eq!(info["state"], "COMPLETED", "{info:#}");
        let output = std::fs::read_to_string(info["stdout"].as_str().unwrap()).unwrap();
        assert_eq!(output.lines().count(), 5, "job {}: {output:?}", info["id"]);
    }
}

#[test]
fn output_a_user_cannot_write_fails_the_job_on_the_first_node_and_says_where() {
    let cluster = LocalCluster::start(2, 10);
    // The output directory is root's: nobody's tasks cannot create the file there.
    let locked = cluster.work.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    let file = cluster.job_file(
        "locked.toml",
        &format!(
            "nodes = 2\ncommand = [\"echo\", \"hi\"]\noutput = {:?}\n",
            locked.join("out").display().to_string()
        ),
    );
    let info = cluster.submit_as(NOBODY, NOBODY, &file, true);
    assert_eq!(info["state"], "FAILED", "{info:#}");
    let shown = cluster.cluster(&["show", &info["id"].to_string()]);
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("cannot open output file") && shown.contains("locked/out"),
        "{shown}"
    );
}
