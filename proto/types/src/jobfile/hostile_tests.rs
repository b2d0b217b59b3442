//! The job file as an attacker writes it: every value that wrapped, overflowed or got through to
//! fail only on a node is refused, with the file, line and field; values just inside each limit pass.

use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<JobSpec, SourceError> {
    parse_job_file("job.toml", text)
}

/// Refused at `line`, naming `field`, with a message holding every one of `words`.
#[track_caller]
fn refused(text: &str, line: usize, field: &str, words: &[&str]) -> SourceError {
    let e = match parse(text) {
        Ok(spec) => panic!("accepted: {spec:?}"),
        Err(e) => e,
    };
    assert_eq!((e.line, e.field.as_deref()), (line, Some(field)), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("job.toml:{line}: field `{field}`: ")),
        "{e}"
    );
    for word in words {
        assert!(e.message.contains(word), "{word:?} not in: {e}");
    }
    e
}

const CMD: &str = "command = [\"a\"]\n";

#[test]
fn integer_minutes_that_wrapped_to_44_seconds_are_refused() {
    // 307445734561825861 × 60 s is 2^64 + 44: unchecked, this was a 44-second limit.
    refused(
        &format!("{CMD}time_limit = 307445734561825861\n"),
        2,
        "time_limit",
        &["307445734561825861 minutes", "365 days", "365-00:00:00"],
    );
    refused(
        &format!("{CMD}time_limit = {}\n", i64::MAX),
        2,
        "time_limit",
        &["365 days"],
    );
    refused(
        &format!("{CMD}time_limit = 525601\n"),
        2,
        "time_limit",
        &["525601 minutes", "365 days"],
    );
    refused(
        &format!("{CMD}time_limit = -5\n"),
        2,
        "time_limit",
        &["more than zero"],
    );
    let spec = parse(&format!("{CMD}time_limit = 525600\n")).unwrap();
    assert_eq!(spec.time_limit_ms, MAX_TIME_LIMIT_MS);
    assert_eq!(MAX_TIME_LIMIT_MS, 365 * 86_400 * 1000);
}

#[test]
fn day_hour_minute_second_times_are_summed_with_checked_arithmetic() {
    for text in [
        "99999999999999999999-00:00:00", // a part over u64
        "213503982334602-00:00:00",      // days × 86400 over u64
        "1-5124095576030431:00:00",      // hours × 3600 over u64
        "365-00:00:01",
        "8760:00:01",
    ] {
        refused(
            &format!("{CMD}time_limit = \"{text}\"\n"),
            2,
            "time_limit",
            &["365 days"],
        );
    }
    for text in ["+5", "-5", "1- 2", "1:2:3:4", "1-", "５"] {
        refused(
            &format!("{CMD}time_limit = \"{text}\"\n"),
            2,
            "time_limit",
            &["is not a time"],
        );
    }
    let t = |s: &str| parse_time_limit(&toml::Value::String(s.into()));
    assert_eq!(t("365-00:00:00"), Ok(MAX_TIME_LIMIT_MS));
    assert_eq!(t("8760:00:00"), Ok(MAX_TIME_LIMIT_MS));
    assert_eq!(t("364-23:59:59"), Ok(MAX_TIME_LIMIT_MS - 1000));
}

#[test]
fn memory_with_a_huge_suffix_is_refused() {
    for text in [
        "\"9999999999999T\"",
        "\"18446744073709551615T\"",
        "\"99999999999999999999999M\"",
        "\"1025T\"",
        "\"1073741825\"",
        "1073741825",
        "9223372036854775807",
    ] {
        refused(
            &format!("{CMD}memory = {text}\n"),
            2,
            "memory",
            &["more than the limit of 1073741824 MiB", "1 PiB"],
        );
    }
    refused(
        &format!("{CMD}memory = -1\n"),
        2,
        "memory",
        &["more than zero"],
    );
    refused(
        &format!("{CMD}memory = \"2GBB\"\n"),
        2,
        "memory",
        &["unknown unit"],
    );
    for text in ["\"1024T\"", "\"1048576G\"", "1073741824"] {
        let spec = parse(&format!("{CMD}memory = {text}\n")).unwrap();
        assert_eq!(spec.memory_mb, MAX_MEMORY_MB, "{text}");
    }
}

#[test]
fn tasks_per_node_times_cpus_per_task_that_wrapped_to_zero_is_refused() {
    // 65536 × 65536 is 2^32: as a u32 product, 0 CPUs and 0 MiB, which agents read as no limits.
    refused(
        "command = [\"a\"]\ntasks_per_node = 65536\ncpus_per_task = 65536\n",
        2,
        "tasks_per_node",
        &["at most 8192", "65536"],
    );
    refused(
        "command = [\"a\"]\ncpus_per_task = 65536\n",
        2,
        "cpus_per_task",
        &["at most 8192", "65536"],
    );
    // Each within its bound, the product is not.
    refused(
        "command = [\"a\"]\ntasks_per_node = 128\ncpus_per_task = 128\n",
        3,
        "cpus_per_task",
        &["16384 CPUs", "limit of 8192"],
    );
    refused(
        "command = [\"a\"]\ntasks_per_node = 8192\ncpus_per_task = 2\n",
        3,
        "cpus_per_task",
        &["16384 CPUs"],
    );
    // ntasks on one node derives tasks_per_node: the product is blamed on ntasks.
    refused(
        "command = [\"a\"]\nntasks = 8193\n",
        2,
        "ntasks",
        &["8193 CPUs"],
    );
    let spec = parse("command = [\"a\"]\ntasks_per_node = 64\ncpus_per_task = 128\n").unwrap();
    assert_eq!(spec.cpus_per_node(), MAX_CPUS_PER_NODE);
    // The default memory, 128 MiB per CPU, with checked arithmetic: 1 TiB.
    assert_eq!(spec.memory_mb, 128 * 8192);
}

#[test]
fn nodes_times_tasks_per_node_and_ntasks_are_bounded() {
    refused(
        "command = [\"a\"]\nnodes = 100000\ntasks_per_node = 65\n",
        3,
        "tasks_per_node",
        &["6500000 tasks", "limit of 6400000"],
    );
    refused(
        "command = [\"a\"]\nntasks = 6400001\n",
        2,
        "ntasks",
        &["at most 6400000"],
    );
    refused(
        "command = [\"a\"]\nnodes = 100001\n",
        2,
        "nodes",
        &["at most 100000"],
    );
    refused(
        &format!("command = [\"a\"]\nnodes = {}\n", i64::MAX),
        2,
        "nodes",
        &["at most 100000"],
    );
    let spec = parse("command = [\"a\"]\nnodes = 100000\ntasks_per_node = 64\n").unwrap();
    assert_eq!(spec.ntasks, MAX_NTASKS);
    assert_eq!(spec.ranks_on_node(99_999), 6_399_936..6_400_000);
    // ntasks with tasks_per_node: compared in u64, so no product wraps into a match.
    refused(
        "command = [\"a\"]\nnodes = 100000\ntasks_per_node = 8192\nntasks = 1\n",
        4,
        "ntasks",
        &["do not match"],
    );
}

#[test]
fn gres_counts_that_wrapped_are_refused() {
    for (gres, count) in [
        ("gpu:4294967296", "4294967296"),
        ("gpu:99999999999999999999", "99999999999999999999"),
        ("gpu:4294967295", "4294967295"),
        ("gpu:1000001", "1000001"),
        // Two halves of 2^32: as a u32 sum, zero GPUs.
        ("gpu:2147483648,gpu:2147483648", "2147483648"),
        ("gpu:4294967295,gpu:1", "4294967295"),
        ("gpu:600000,gpu:600000", "1200000"),
    ] {
        refused(
            &format!("{CMD}gres = \"{gres}\"\n"),
            2,
            "gres",
            &[
                &format!("asks for {count} of `gpu`"),
                "more than the limit of 1000000",
            ],
        );
    }
    refused(
        &format!("{CMD}gres = \"gpu:+2\"\n"),
        2,
        "gres",
        &["not a count"],
    );
    let spec = parse(&format!("{CMD}gres = \"gpu:999999,gpu:1\"\n")).unwrap();
    assert_eq!(spec.gres["gpu"], MAX_GRES_COUNT);
}

#[test]
fn array_ranges_steps_and_throttles_are_checked() {
    for (array, words) in [
        (
            "0-4294967295",
            &["brings the array to 4294967296 elements, more than the limit of 100001"][..],
        ),
        ("0-4294967296", &["largest index"]),
        ("0-100001", &["100002 elements", "limit of 100001"]),
        (
            "0-50000,50001-100001",
            &["`50001-100001` brings the array to 100002 elements"],
        ),
        ("1-3%4294967296", &["largest throttle"]),
        ("1-5:+1", &["not an index"]),
        ("-1-5", &["not an index"]),
        ("1-5:0", &["at least 1"]),
    ] {
        refused(&format!("{CMD}array = \"{array}\"\n"), 2, "array", words);
    }
    // The largest index, with a step that leaves two elements.
    let spec = parse(&format!(
        "{CMD}array = \"0-4294967295:4294967295%4294967295\"\n"
    ))
    .unwrap();
    let array = spec.array.unwrap();
    assert_eq!(array.indices, [0, u32::MAX]);
    assert_eq!(array.max_running, Some(u32::MAX));
    let spec = parse(&format!("{CMD}array = \"0-100000\"\n")).unwrap();
    assert_eq!(spec.array.unwrap().indices.len(), MAX_ARRAY_ELEMENTS);
}

#[test]
fn dependency_job_ids_are_checked() {
    for (dependency, words) in [
        ("afterok:18446744073709551616", &["largest job ID"][..]),
        ("afterok:0", &["start at 1"]),
        ("afterok:+5", &["not a job ID"]),
        ("afterany:5:-1", &["not a job ID"]),
    ] {
        refused(
            &format!("{CMD}dependency = \"{dependency}\"\n"),
            2,
            "dependency",
            words,
        );
    }
    let spec = parse(&format!(
        "{CMD}dependency = \"afterok:18446744073709551615\"\n"
    ))
    .unwrap();
    assert_eq!(spec.dependencies, [DependencySpec::AfterOk(vec![u64::MAX])]);
}

#[test]
fn a_job_name_of_2_5_mb_is_refused() {
    // The whole file is over its limit first: refused before the TOML is even parsed.
    let huge = "x".repeat(2_500_000);
    let e = parse(&format!("{CMD}name = \"{huge}\"\n")).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.line, e.field.as_deref()),
        ("job.toml", 0, None)
    );
    assert!(
        e.message.contains("2500026 bytes") && e.message.contains("limit of 2097152 bytes"),
        "{e}"
    );
    // In a file under that limit, the name's own limit, naming the field.
    let big = "x".repeat(1 << 20);
    refused(
        &format!("{CMD}name = \"{big}\"\n"),
        2,
        "name",
        &["1048576 bytes", "limit of 255 bytes"],
    );
    // And on the command line.
    let mut spec = parse(CMD).unwrap();
    let e = apply_overrides(&mut spec, &BTreeMap::from([("name".into(), huge)])).unwrap_err();
    assert_eq!(e.file, "--name");
    assert!(
        e.message.contains("2500000 bytes") && e.message.contains("255"),
        "{e}"
    );
}

#[test]
fn names_up_to_the_limit_are_accepted() {
    let spec = parse(&format!("{CMD}name = \"{}\"\n", "n".repeat(MAX_NAME_BYTES))).unwrap();
    assert_eq!(spec.name.len(), 255);
    // Multi-byte characters count in bytes: 127 × "é" is 254 bytes, one more is 256.
    assert!(parse(&format!("{CMD}name = \"{}\"\n", "é".repeat(127))).is_ok());
    refused(
        &format!("{CMD}name = \"{}\"\n", "é".repeat(128)),
        2,
        "name",
        &["256 bytes", "limit of 255"],
    );
    refused(&format!("{CMD}name = \"  \"\n"), 2, "name", &["is empty"]);
    let spec = parse(&format!("{CMD}name = \"données — ☃\"\n")).unwrap();
    assert_eq!(spec.name, "données — ☃");
}

#[test]
fn nul_and_control_characters_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("name = \"a\\u0000b\"", "name", &["NUL byte"]),
        (
            "name = \"a\\u001b[2Jb\"",
            "name",
            &["control character U+001B", "other users' terminals"],
        ),
        ("name = \"tab\\there\"", "name", &["U+0009"]),
        ("name = \"csi\\u009b\"", "name", &["U+009B"]),
        (
            "name = \"\\u202Egnp.exe\"",
            "name",
            &["bidirectional-text control U+202E"],
        ),
        ("partition = \"p\\u0000\"", "partition", &["NUL byte"]),
        ("qos = \"q\\n\"", "qos", &["U+000A"]),
        ("account = \"a\\u0007\"", "account", &["U+0007"]),
        ("reservation = \"r\\u0000\"", "reservation", &["NUL byte"]),
        ("constraint = \"ib\\u001b\"", "constraint", &["U+001B"]),
        ("workdir = \"/tmp/\\n\"", "workdir", &["U+000A", "paths"]),
        ("output = \"out\\u0000.txt\"", "output", &["NUL byte"]),
        ("error = \"err\\u0085\"", "error", &["U+0085"]),
        ("output = \"\"", "output", &["is empty"]),
    ];
    for (line, field, words) in cases {
        refused(&format!("{CMD}{line}\n"), 2, field, words);
    }
    refused(
        "command = [\"a\"]\n[container]\nimage = \"/img\\u0000\"\n",
        3,
        "container.image",
        &["NUL byte"],
    );
}

#[test]
fn nul_in_argv_env_and_script_is_refused_where_it_is_written() {
    // The argument's own line, in a command written over several lines.
    let e = refused(
        "command = [\n  \"echo\",\n  \"a\\u0000b\",\n]\n",
        3,
        "command",
        &["argument 1", "NUL byte"],
    );
    assert!(e.message.contains("at byte 1"), "{e}");
    refused(
        "script = \"echo hi\\u0000rm -rf\"\n",
        1,
        "script",
        &["NUL byte"],
    );
    refused(
        &format!("{CMD}[env]\nA = \"ok\"\nB = \"x\\u0000y\"\n"),
        4,
        "env",
        &["the value of `B`", "NUL byte"],
    );
    refused(
        &format!("{CMD}[env]\n\"A\\u0000B\" = \"x\"\n"),
        3,
        "env",
        &["name of variable `A\\u{0}B`", "NUL byte"],
    );
    refused(
        &format!("{CMD}[env]\n\"A=B\" = \"x\"\n"),
        3,
        "env",
        &["`A=B` has `=`"],
    );
    refused(
        &format!("{CMD}[env]\n\"\" = \"x\"\n"),
        3,
        "env",
        &["empty name"],
    );
    // What works in a command, a script and an environment stays accepted.
    let spec = parse(
        "script = \"\"\"\n#!/bin/sh\n\techo \"$GREETING\"\n\"\"\"\n[env]\nGREETING = \"two\\nlines\\tand tab\"\n",
    )
    .unwrap();
    assert_eq!(spec.env["GREETING"], "two\nlines\tand tab");
    assert!(parse("command = [\"sh\", \"-c\", \"echo a\\necho\\tb\\u001b[0m\"]\n").is_ok());
}

#[test]
fn command_limits_hold_with_their_boundaries() {
    let argv = |count: usize, len: usize| {
        let args: Vec<String> = (0..count)
            .map(|_| format!("\"{}\"", "a".repeat(len)))
            .collect();
        format!("command = [{}]\n", args.join(","))
    };
    assert!(parse(&argv(MAX_ARGV_ELEMENTS, 1)).is_ok());
    refused(
        &argv(MAX_ARGV_ELEMENTS + 1, 1),
        1,
        "command",
        &["4097 arguments", "limit of 4096"],
    );
    assert!(parse(&argv(1, MAX_EXEC_STRING_BYTES)).is_ok());
    refused(
        &argv(1, MAX_EXEC_STRING_BYTES + 1),
        1,
        "command",
        &["argument 0 is 131072 bytes", "limit of 131071"],
    );
    // In all: two of the longest arguments and two bytes more is exactly 256 KiB.
    let two_long = format!("\"{}\"", "a".repeat(MAX_EXEC_STRING_BYTES));
    let total = |last: &str| format!("command = [{two_long}, {two_long}, \"{last}\"]\n");
    assert!(parse(&total("bb")).is_ok());
    refused(
        &total("bbb"),
        1,
        "command",
        &["262145 bytes of arguments", "limit of 262144"],
    );
    refused(
        &argv(3, 100_000),
        1,
        "command",
        &["300000 bytes of arguments", "limit of 262144"],
    );
}

#[test]
fn environment_limits_hold_with_their_boundaries() {
    let env = |count: usize, value_len: usize| {
        let mut text = format!("{CMD}[env]\n");
        for i in 0..count {
            text.push_str(&format!("V{i:05} = \"{}\"\n", "v".repeat(value_len)));
        }
        text
    };
    assert!(parse(&env(MAX_ENV_VARS, 1)).is_ok());
    refused(
        &env(MAX_ENV_VARS + 1, 1),
        2,
        "env",
        &["4097 variables", "limit of 4096"],
    );
    // One variable: `V00000=` is 7 bytes.
    assert!(parse(&env(1, MAX_EXEC_STRING_BYTES - 7)).is_ok());
    refused(
        &env(1, MAX_EXEC_STRING_BYTES - 6),
        3,
        "env",
        &["`V00000=…` is 131072 bytes", "limit of 131071"],
    );
    // In all: 4 × 131071 = 512 KiB - 4 accepted; 5 × 120000 refused.
    assert!(parse(&env(4, MAX_EXEC_STRING_BYTES - 7)).is_ok());
    refused(
        &env(5, 120_000),
        2,
        "env",
        &["600035 bytes", "limit of 524288"],
    );
}

#[test]
fn script_path_expression_and_file_limits_hold_with_their_boundaries() {
    let script = |len: usize| format!("script = \"{}\"\n", "e".repeat(len));
    assert!(parse(&script(MAX_SCRIPT_BYTES)).is_ok());
    refused(
        &script(MAX_SCRIPT_BYTES + 1),
        1,
        "script",
        &["131072 bytes", "limit of 131071", "sh -c"],
    );

    let path = |len: usize| format!("{CMD}output = \"/{}\"\n", "p".repeat(len - 1));
    assert!(parse(&path(MAX_PATH_BYTES)).is_ok());
    refused(
        &path(MAX_PATH_BYTES + 1),
        2,
        "output",
        &["4096 bytes", "limit of 4095"],
    );

    let constraint = |len: usize| format!("{CMD}constraint = \"{}\"\n", "c".repeat(len));
    assert!(parse(&constraint(MAX_EXPRESSION_BYTES)).is_ok());
    refused(
        &constraint(MAX_EXPRESSION_BYTES + 1),
        2,
        "constraint",
        &["65537 bytes", "limit of 65536"],
    );
    refused(
        &format!("{CMD}dependency = \"afterok{}\"\n", ":1".repeat(40_000)),
        2,
        "dependency",
        &["80007 bytes", "limit of 65536"],
    );

    // The whole file: padded with a comment to exactly the limit, then one byte over.
    let file = |len: usize| {
        let mut text = format!("{CMD}#");
        text.push_str(&"#".repeat(len - text.len() - 1));
        text.push('\n');
        text
    };
    assert!(parse(&file(MAX_JOB_FILE_BYTES)).is_ok());
    let e = parse(&file(MAX_JOB_FILE_BYTES + 1)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("job.toml: the job file is 2097153 bytes, more than the limit of 2097152"),
        "{e}"
    );
}

#[test]
fn overrides_are_checked_as_the_file_is() {
    let mut spec = parse(CMD).unwrap();
    for (option, value, words) in [
        ("name", "evil\u{1b}]0;title\u{7}", &["U+001B"][..]),
        ("partition", "p\0", &["NUL byte"]),
        ("constraint", "x\u{202e}", &["bidirectional"]),
        ("array", "0-4294967295", &["limit of 100001"]),
        ("gres", "gpu:4294967296", &["limit of 1000000"]),
        ("dependency", "afterok:0", &["start at 1"]),
    ] {
        let e = apply_overrides(&mut spec, &BTreeMap::from([(option.into(), value.into())]))
            .unwrap_err();
        assert_eq!(e.file, format!("--{option}"), "{e}");
        for word in words {
            assert!(e.message.contains(word), "{word:?} not in: {e}");
        }
    }
    // An unknown option is quoted without its control characters.
    let e = apply_overrides(
        &mut spec,
        &BTreeMap::from([("x\u{1b}[2J".into(), "1".into())]),
    )
    .unwrap_err();
    assert!(!e.to_string().contains('\u{1b}'), "{e:?}");
    assert_eq!(
        spec,
        parse(CMD).unwrap(),
        "a refused override changes nothing"
    );
}

#[test]
fn the_submission_is_checked_with_the_exported_environment() {
    let spec = parse(&format!("{CMD}[env]\nA = \"{}\"\n", "a".repeat(100_000))).unwrap();
    let ok = |cwd: &str, env: &BTreeMap<String, String>| {
        validate_submission("job.toml", cwd, env, &spec)
    };
    // A real user's exported environment: 200 variables, 100 KiB.
    let exported: BTreeMap<String, String> = (0..200)
        .map(|i| (format!("VAR_{i}"), "x".repeat(500)))
        .collect();
    assert_eq!(ok("/home/alice", &exported), Ok(()));
    assert_eq!(validate_environment(&exported), Ok(()));

    let e = ok("/home/alice", &BTreeMap::from([("B".into(), "b\0".into())])).unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (0, Some("env")), "{e}");
    assert!(
        e.message.contains("exported environment") && e.message.contains("NUL byte"),
        "{e}"
    );
    // 4 × 110 KB exported, with [env]'s 100 KB, is over 512 KiB together.
    let big: BTreeMap<String, String> = (0..4)
        .map(|i| (format!("BIG{i}"), "x".repeat(110_000)))
        .collect();
    assert_eq!(validate_environment(&big), Ok(()));
    let e = ok("/home/alice", &big).unwrap_err();
    assert!(
        e.message.contains("with `[env]` over it is 540022 bytes")
            && e.message.contains("limit of 524288"),
        "{e}"
    );
    let many: BTreeMap<String, String> = (0..5000)
        .map(|i| (format!("V{i}"), String::new()))
        .collect();
    assert!(
        validate_environment(&many)
            .unwrap_err()
            .contains("5000 variables, more than the limit of 4096")
    );

    let e = ok("home/alice", &exported).unwrap_err();
    assert!(e.message.contains("not an absolute path"), "{e}");
    let e = ok("/home/\0alice", &exported).unwrap_err();
    assert!(
        e.message.contains("submit directory") && e.message.contains("NUL byte"),
        "{e}"
    );
    let e = ok(&format!("/{}", "d".repeat(MAX_PATH_BYTES)), &exported).unwrap_err();
    assert!(e.message.contains("4096 bytes"), "{e}");
}

#[test]
fn a_default_name_from_a_hostile_file_name_is_made_printable_and_short() {
    let spec = parse_job_file("/tmp/evil\u{1b}[2J\u{202e}.toml", CMD).unwrap();
    assert_eq!(spec.name, "evil_[2J_");
    let spec = parse_job_file(&format!("{}.toml", "é".repeat(300)), CMD).unwrap();
    assert_eq!(spec.name, "é".repeat(127));
    let spec = parse_job_file("\u{7}.toml", CMD).unwrap();
    assert_eq!(spec.name, "_");
}

#[test]
fn errors_quote_user_text_escaped_and_short() {
    let e = parse(&format!(
        "{CMD}memory = \"12\\u001b[31m{}\"\n",
        "X".repeat(10_000)
    ))
    .unwrap_err();
    assert!(!e.message.contains('\u{1b}'), "{e:?}");
    assert!(e.message.contains("\\u{1b}"), "{e}");
    assert!(e.message.len() < 300, "{e}");
}

#[test]
fn a_spec_built_by_hand_saturates_instead_of_wrapping() {
    let mut spec = parse(CMD).unwrap();
    spec.tasks_per_node = 65_536;
    spec.cpus_per_task = 65_536;
    assert_eq!(
        spec.cpus_per_node(),
        u32::MAX,
        "never 0, which means no limit"
    );
    spec.nodes = 0;
    assert!(spec.ranks_on_node(0).is_empty());
    spec.nodes = 2;
    spec.ntasks = u32::MAX;
    assert_eq!(spec.ranks_on_node(1).end, u32::MAX);
    assert!(spec.ranks_on_node(7).is_empty());
}

proptest! {
    /// No integer in any numeric field panics (debug builds panic on overflow) or gets past the
    /// bounds; whatever is accepted is consistent.
    #[test]
    fn any_integers_are_refused_or_within_bounds(
        nodes in prop_oneof![1i64..=8, any::<i64>()],
        tasks in prop_oneof![1i64..=64, any::<i64>()],
        cpus in prop_oneof![1i64..=64, any::<i64>()],
        memory in prop_oneof![1i64..=1 << 20, any::<i64>()],
        minutes in prop_oneof![1i64..=1 << 20, any::<i64>()],
        use_ntasks: bool,
    ) {
        let tasks_key = if use_ntasks { "ntasks" } else { "tasks_per_node" };
        let text = format!(
            "command = [\"a\"]\nnodes = {nodes}\n{tasks_key} = {tasks}\ncpus_per_task = {cpus}\n\
             memory = {memory}\ntime_limit = {minutes}\n"
        );
        if let Ok(spec) = parse(&text) {
            prop_assert!((1..=MAX_NODES).contains(&spec.nodes));
            prop_assert!((spec.nodes..=MAX_NTASKS).contains(&spec.ntasks));
            prop_assert!((1..=MAX_CPUS_PER_NODE).contains(&spec.cpus_per_node()));
            prop_assert_eq!(
                u64::from(spec.cpus_per_node()),
                u64::from(spec.tasks_per_node) * u64::from(spec.cpus_per_task)
            );
            prop_assert!((1..=MAX_MEMORY_MB).contains(&spec.memory_mb));
            prop_assert!((60_000..=MAX_TIME_LIMIT_MS).contains(&spec.time_limit_ms));
            let ranks: u32 = (0..spec.nodes).map(|i| spec.ranks_on_node(i).len() as u32).sum();
            prop_assert_eq!(ranks, spec.ntasks);
        }
    }

    /// Digit strings of any length in the text-parsed numbers never panic.
    #[test]
    fn any_digits_in_text_numbers_are_refused_or_within_bounds(
        a in "[0-9]{1,30}",
        b in "[0-9]{1,30}",
        unit in "[KMGTkmgt]?",
    ) {
        if let Ok(ms) = parse_time_limit(&toml::Value::String(format!("{a}-{b}:{a}:{b}"))) {
            prop_assert!(ms <= MAX_TIME_LIMIT_MS);
        }
        if let Ok(mb) = parse_memory(&toml::Value::String(format!("{a}{unit}"))) {
            prop_assert!((1..=MAX_MEMORY_MB).contains(&mb));
        }
        if let Ok(gres) = parse_gres(&format!("gpu:{a},gpu:{b}")) {
            prop_assert!(gres["gpu"] <= MAX_GRES_COUNT);
        }
        if let Ok(array) = parse_array(&format!("{a}-{b}:{a}%{b}")) {
            prop_assert!(array.indices.len() <= MAX_ARRAY_ELEMENTS);
        }
        let _ = parse_dependencies(&format!("afterok:{a}:{b}"));
    }
}
