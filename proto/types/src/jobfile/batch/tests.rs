//! Batch scripts read as sbatch reads them: directives, overrides, refusals naming the line.

use super::*;
use crate::Program;

fn parse(text: &str) -> Result<BatchJob, SourceError> {
    parse_batch_script("job.sh", text, &BTreeMap::new())
}

const SCRIPT: &str = "#!/bin/bash
#SBATCH --job-name=relax
#SBATCH -N 2
#SBATCH --ntasks-per-node=4 --cpus-per-task 2   # two nodes, eight ranks
#SBATCH --mem=8G
#SBATCH -t 1-02:00:00
#SBATCH -o relax-%j.out
#SBATCH --requeue

# a comment, then the first command ends the directives
module load vasp
#SBATCH --nodes=99
srun vasp_std
";

#[test]
fn directives_set_the_job_until_the_first_command() {
    let job = parse(SCRIPT).unwrap();
    let spec = &job.spec;
    assert_eq!(spec.name, "relax");
    assert_eq!(
        spec.nodes, 2,
        "the #SBATCH after the first command is not read"
    );
    assert_eq!(
        (spec.tasks_per_node, spec.ntasks, spec.cpus_per_task),
        (4, 8, 2)
    );
    assert_eq!(spec.memory_mb, 8 * 1024);
    assert_eq!(spec.time_limit_ms, (86_400 + 2 * 3600) * 1000);
    assert_eq!(spec.output.as_deref(), Some("relax-%j.out"));
    assert!(spec.requeue);
    assert_eq!(spec.program, Program::Script(SCRIPT.to_string()));
    assert_eq!(job.lines.get("nodes"), Some(&3));
    assert!(job.warnings.is_empty(), "{:?}", job.warnings);
}

#[test]
fn the_command_line_wins_over_the_script_and_later_directives_over_earlier() {
    let text = "#!/bin/sh\n#SBATCH -N 2\n#SBATCH --time=10\n#SBATCH --time=20\nhostname\n";
    let overrides = BTreeMap::from([("nodes".to_string(), "3".to_string())]);
    let job = parse_batch_script("job.sh", text, &overrides).unwrap();
    assert_eq!(job.spec.nodes, 3);
    assert_eq!(job.spec.time_limit_ms, 20 * 60 * 1000);
    assert_eq!(job.lines.get("time_limit"), Some(&4));
    assert_eq!(job.lines.get("nodes"), None, "set on the command line");
}

#[test]
fn a_bad_value_names_the_line_and_the_directive() {
    let err = parse("#!/bin/bash\n\n#SBATCH --nodes=0\necho\n").unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert_eq!(
        err.to_string(),
        "job.sh:3: field `#SBATCH --nodes`: must be at least 1, got 0"
    );
    let err = parse("#!/bin/bash\n#SBATCH --mem=lots\necho\n").unwrap_err();
    assert_eq!((err.line, err.field.as_deref()), (2, Some("#SBATCH --mem")));
    assert!(err.message.contains("lots"), "{err}");
}

#[test]
fn a_bad_command_line_value_names_the_option() {
    let overrides = BTreeMap::from([("time_limit".to_string(), "soon".to_string())]);
    let err = parse_batch_script("job.sh", "#!/bin/sh\nhostname\n", &overrides).unwrap_err();
    assert_eq!(err.file, "--time");
    assert!(err.message.contains("soon"), "{err}");
}

#[test]
fn unsupported_directives_are_refused_with_what_to_do() {
    for (line, option, words) in [
        ("#SBATCH --mem-per-gpu=1G", "--mem-per-gpu", "give --mem"),
        ("#SBATCH --exclusive=user", "--exclusive", "takes no value"),
        (
            "#SBATCH --gpus-per-task=2",
            "--gpus-per-task",
            "--gres=gpu:N",
        ),
        (
            "#SBATCH --gpus=3 -N 2",
            "--gpus",
            "do not divide evenly over 2 nodes",
        ),
        ("#SBATCH --time-min=5", "--time-min", "give --time"),
        ("#SBATCH --export=1BAD", "--export", "not a variable name"),
        ("#SBATCH --frobnicate", "--frobnicate", "man sbatch"),
        ("#SBATCH nodes=2", "nodes=2", "not an option"),
        ("#SBATCH --nodes", "--nodes", "needs a value"),
    ] {
        let text = format!("#!/bin/bash\n#SBATCH -N 1\n{line}\nhostname\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 3, "{line}: {err}");
        assert_eq!(
            err.field.as_deref(),
            Some(format!("#SBATCH {option}").as_str()),
            "{line}: {err}"
        );
        assert!(err.message.contains(words), "{line}: {err}");
    }
}

#[test]
fn informational_directives_are_accepted_with_a_warning() {
    let text = "#!/bin/bash\n#SBATCH --mail-type=END\n#SBATCH --mail-user=a@b\n#SBATCH --export=ALL\nhostname\n";
    let job = parse(text).unwrap();
    assert_eq!(job.warnings.len(), 2, "{:?}", job.warnings);
    assert!(job.warnings[0].starts_with("job.sh:2: #SBATCH --mail-type"));
    assert!(job.warnings[0].contains("no mail"));
}

#[test]
fn switched_off_and_indented_directives_are_comments() {
    let text = "#!/bin/bash\n##SBATCH --exclusive\n  #SBATCH --exclusive\n# SBATCH --exclusive\n#SBATCHX\nhostname\n";
    assert_eq!(parse(text).unwrap().spec.nodes, 1);
}

#[test]
fn words_are_split_with_quotes_escapes_and_comments() {
    assert_eq!(
        split_words(r#"--job-name="my job" -o 'a b'.out --x=a\ b # -N 5"#).unwrap(),
        vec!["--job-name=my job", "-o", "a b.out", "--x=a b"]
    );
    assert!(split_words("--job-name=\"open").is_err());
    let job = parse("#!/bin/bash\n#SBATCH -J \"two words\"\n#SBATCH -N2\nhostname\n").unwrap();
    assert_eq!((job.spec.name.as_str(), job.spec.nodes), ("two words", 2));
}

#[test]
fn every_option_is_listed_once_and_short_letters_are_unique() {
    let mut longs = std::collections::BTreeSet::new();
    let mut shorts = std::collections::BTreeSet::new();
    for option in SBATCH_OPTIONS {
        assert!(longs.insert(option.long), "--{} twice", option.long);
        if let Some(letter) = option.short {
            assert!(shorts.insert(letter), "-{letter} twice");
        }
        if let Effect::Field(field) = option.effect {
            // The field exists in the job file: a script setting only it parses.
            let text = format!("#!/bin/sh\n#SBATCH --{}=1\nhostname\n", option.long);
            if let Err(e) = parse(&text) {
                assert!(
                    !e.message.contains("unknown field"),
                    "--{} maps to `{field}`, which the job file does not have: {e}",
                    option.long
                );
            }
        }
    }
}

#[test]
fn scripts_run_under_their_own_shell() {
    assert_eq!(
        crate::jobfile::script_argv("#!/bin/bash -l\necho", "j").unwrap(),
        vec!["/bin/bash", "-l", "-c", "#!/bin/bash -l\necho", "j"]
    );
    assert_eq!(
        crate::jobfile::script_argv("#!/usr/bin/env zsh\necho", "j").unwrap()[..3],
        ["/usr/bin/env", "zsh", "-c"]
    );
    assert_eq!(
        crate::jobfile::script_argv("echo hi", "j").unwrap()[0],
        "/bin/sh"
    );
    let err = parse("#!/usr/bin/python3\nprint(1)\n").unwrap_err();
    assert!(err.message.contains("python3"), "{err}");
}

#[test]
fn options_apply_to_a_job_file_too_and_are_checked_with_it() {
    let file = "command = [\"hostname\"]\nntasks = 4\n";
    let with = |pairs: &[(&str, &str)]| {
        let overrides: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::jobfile::parse_with_overrides("job.toml", file, &overrides)
    };
    let spec = with(&[("nodes", "2"), ("memory", "1G"), ("time_limit", "10")]).unwrap();
    assert_eq!((spec.nodes, spec.ntasks, spec.tasks_per_node), (2, 4, 2));
    assert_eq!(spec.memory_mb, 1024);
    assert_eq!(spec.time_limit_ms, 10 * 60 * 1000);
    // An option that disagrees with the file is refused naming the option.
    let err = with(&[("nodes", "8")]).unwrap_err();
    assert!(
        err.message.contains("4 tasks cannot cover 8 nodes"),
        "{err}"
    );
    assert_eq!(err.to_string().split(':').next(), Some("job.toml"), "{err}");
    let err = with(&[("memory", "-3")]).unwrap_err();
    assert_eq!(err.file, "--mem", "{err}");
    // The file's own errors still name its line.
    let err = crate::jobfile::parse_with_overrides(
        "job.toml",
        "command = [\"hostname\"]\nnodes = 0\n",
        &BTreeMap::from([("memory".to_string(), "1G".to_string())]),
    )
    .unwrap_err();
    assert_eq!((err.line, err.field.as_deref()), (2, Some("nodes")));
}

#[test]
fn hold_queues_the_job_held() {
    for line in ["#SBATCH --hold", "#SBATCH -H"] {
        let text = format!("#!/bin/bash\n{line}\nhostname\n");
        assert!(parse(&text).unwrap().spec.hold, "{line}");
    }
    assert!(!parse("#!/bin/bash\nhostname\n").unwrap().spec.hold);
}

#[test]
fn placement_options_set_the_job_from_directives_and_the_command_line() {
    let text = "#!/bin/bash\n#SBATCH -w node[2-3]\n#SBATCH --exclude=node7,node[8-9]\n\
                #SBATCH --exclusive\n#SBATCH --begin=now+10minutes\nhostname\n";
    let job = parse(text).unwrap();
    let names = |list: &[crate::NodeName]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&job.spec.nodelist), ["node2", "node3"]);
    assert_eq!(
        job.spec.nodes, 2,
        "a node list alone sets the node count, as in Slurm"
    );
    assert_eq!(names(&job.spec.exclude), ["node7", "node8", "node9"]);
    assert!(job.spec.exclusive);
    assert_eq!(
        job.spec.begin,
        Some(crate::jobfile::BeginTime::AfterSubmit(600))
    );
    assert_eq!(job.lines.get("nodelist"), Some(&2));
    // The command line wins, and sets the same fields.
    let overrides = BTreeMap::from([
        ("nodelist".to_string(), "node1".to_string()),
        ("begin".to_string(), "tomorrow".to_string()),
        ("nodes".to_string(), "3".to_string()),
    ]);
    let job = parse_batch_script("job.sh", text, &overrides).unwrap();
    assert_eq!(names(&job.spec.nodelist), ["node1"]);
    assert_eq!(
        job.spec.nodes, 3,
        "more nodes than listed: the list is a minimum"
    );
    assert_eq!(job.spec.begin, Some(crate::jobfile::BeginTime::DayStart(1)));
    // Without them, nothing is restricted.
    let plain = parse("#!/bin/sh\nhostname\n").unwrap().spec;
    assert!(plain.nodelist.is_empty() && plain.exclude.is_empty());
    assert!(!plain.exclusive && plain.begin.is_none());
}

#[test]
fn bad_placement_options_name_the_line_or_the_option() {
    for (line, words) in [
        (
            "#SBATCH -w node[1-3] -N 2",
            "names 3 nodes but the job asks for 2",
        ),
        ("#SBATCH --nodelist=node[3-1]", "counts down"),
        (
            "#SBATCH --nodelist=node[1-200000]",
            "more than 100000 nodes",
        ),
        ("#SBATCH -x 'node 1'", "is not a node name"),
        ("#SBATCH -x ,", "names no node"),
        ("#SBATCH --begin=later", "is not a time"),
        ("#SBATCH -b now+2fortnights", "unknown unit"),
    ] {
        let text = format!("#!/bin/bash\n{line}\nhostname\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line, 2, "{line}: {err}");
        assert!(
            err.field
                .as_deref()
                .is_some_and(|f| f.starts_with("#SBATCH ")),
            "{line}: {err}"
        );
        assert!(err.message.contains(words), "{line}: {err}");
    }
    let overrides = BTreeMap::from([("begin".to_string(), "yesterday-ish".to_string())]);
    let err = parse_batch_script("job.sh", "#!/bin/sh\nhostname\n", &overrides).unwrap_err();
    assert_eq!(err.file, "--begin", "{err}");
    assert!(err.message.contains("is not a time"), "{err}");
    let overrides = BTreeMap::from([("exclude".to_string(), "node2".to_string())]);
    let err = parse_batch_script(
        "job.sh",
        "#!/bin/sh\n#SBATCH -w node[1-2]\nhostname\n",
        &overrides,
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("excludes `node2`, which `nodelist` asks for"),
        "{err}"
    );
}

#[test]
fn memory_per_cpu_and_gpus_are_per_node_amounts() {
    let job = parse("#!/bin/bash\n#SBATCH -N 2 --ntasks-per-node=4 -c 2\n#SBATCH --mem-per-cpu=500M\nhostname\n")
        .unwrap();
    assert_eq!(job.spec.memory_mb, 8 * 500, "8 CPUs per node × 500 MiB");
    let e =
        parse("#!/bin/bash\n#SBATCH --mem=1G\n#SBATCH --mem-per-cpu=1G\nhostname\n").unwrap_err();
    assert!(e.message.contains("not both"), "{e}");
    let gpus = parse("#!/bin/bash\n#SBATCH -N 2\n#SBATCH --gpus=4\nhostname\n").unwrap();
    assert_eq!(gpus.spec.gres.get("gpu"), Some(&2), "4 GPUs over 2 nodes");
    let per_node = parse("#!/bin/bash\n#SBATCH --gpus-per-node=3\nhostname\n").unwrap();
    assert_eq!(per_node.spec.gres.get("gpu"), Some(&3));
    let e = parse("#!/bin/bash\n#SBATCH --gres=gpu:1\n#SBATCH --gpus-per-node=3\nhostname\n")
        .unwrap_err();
    assert!(e.message.contains("asks for GPUs already"), "{e}");
}

#[test]
fn export_chooses_what_of_the_submitters_environment_the_job_gets() {
    let none = parse("#!/bin/bash\n#SBATCH --export=NONE\nhostname\n").unwrap();
    assert_eq!(none.spec.export, Some(crate::jobfile::Export::default()));
    let list = parse("#!/bin/bash\n#SBATCH --export=ALL,OMP_NUM_THREADS=4\nhostname\n").unwrap();
    let export = list.spec.export.unwrap();
    assert!(export.all);
    assert_eq!(
        export.set.get("OMP_NUM_THREADS").map(String::as_str),
        Some("4")
    );
}
