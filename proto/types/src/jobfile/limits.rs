//! What a job file may ask for: every number and every string a user writes is bounded here, so the
//! parser refuses what could wrap, overflow or only fail once the job runs on a node.
//!
//! Each bound says why it has its value. Strings that reach `execve` (argv, the script, the
//! environment) are bounded by what Linux accepts there; strings shown to other users (`cluster
//! queue`) may hold no control characters; numbers are parsed and combined with checked arithmetic.

use crate::Millis;

/// Most bytes a job file may have. `submit` sends the file's text through the submit socket, whose
/// frames are at most 4 MiB (`beowulf_proto::submit_socket::MAX_FRAME_BYTES`) and also carry the
/// exported environment (at most [`MAX_ENV_BYTES`]), the submit directory and the command-line
/// overrides: 2 MiB of file leaves room for all of them. Real job files are a few hundred bytes, and
/// the largest fields a file can hold (argv, `[env]`, script: under 1 MiB together) fit in 2 MiB even
/// written with escapes.
pub const MAX_JOB_FILE_BYTES: usize = 2 << 20;

/// Longest job name. Slurm's accounting keeps job names in a TINYTEXT column (255 bytes), so a name
/// that works there works here; names are printed in every user's `cluster queue`, so they stay short.
pub const MAX_NAME_BYTES: usize = 255;

/// Longest partition, QOS, account or reservation name: Slurm's accounting keeps these names in
/// TINYTEXT columns too (255 bytes).
pub const MAX_IDENTIFIER_BYTES: usize = 255;

/// Longest path (`workdir`, `output`, `error`, `container.image`, the submit directory): Linux's
/// PATH_MAX is 4096 bytes with the terminating NUL, and a longer path cannot be opened.
pub const MAX_PATH_BYTES: usize = 4095;

/// Longest `constraint`, `gres`, `array` or `dependency` expression: 64 KiB, the TEXT column Slurm's
/// accounting keeps constraints and array expressions in. That is a dependency on ~7000 jobs or
/// ~10 000 explicit array indices.
pub const MAX_EXPRESSION_BYTES: usize = 64 << 10;

/// Longest single string passed to `execve`: one argument of `command`, the script (the agent runs
/// it as `sh -c SCRIPT`, one argument), or one `NAME=value` of the environment. Linux refuses any
/// string longer than MAX_ARG_STRLEN (32 pages = 128 KiB, counting its terminating NUL) with E2BIG,
/// so a longer one would be accepted here and fail only when the job starts.
pub const MAX_EXEC_STRING_BYTES: usize = (128 << 10) - 1;

/// Most arguments in `command`: generous for programs given thousands of input files, and with
/// [`MAX_ARGV_BYTES`] far inside what `execve` takes (see [`MAX_ENV_BYTES`]).
pub const MAX_ARGV_ELEMENTS: usize = 4096;

/// Most bytes of `command` arguments together (the lengths of the arguments, summed): 256 KiB.
pub const MAX_ARGV_BYTES: usize = 256 << 10;

/// Longest batch script. Slurm's default `max_script_size` is 4 MB, because slurmd writes the script
/// to a file; our agent passes it to `sh -c` as one argument, so a script can be no longer than
/// [`MAX_EXEC_STRING_BYTES`] (128 KiB): real batch scripts are a few KiB. Raise it (up to 1 MiB) only
/// when the script reaches the node as a file.
pub const MAX_SCRIPT_BYTES: usize = MAX_EXEC_STRING_BYTES;

/// Most variables in an environment (`[env]`, or the exported environment with `[env]` over it):
/// real login environments have 50–200.
pub const MAX_ENV_VARS: usize = 4096;

/// Most bytes of an environment, counting each variable as `NAME=value`: 512 KiB, five times the
/// largest exported environments of real users (~100 KiB, with long module paths). Linux gives
/// `execve` a quarter of the stack limit for arguments and environment together, 2 MiB with the
/// default 8 MiB stack: 256 KiB of argv, 512 KiB of environment, the agent's SLURM_* variables and
/// the 8-byte pointer to each string stay under half of it.
pub const MAX_ENV_BYTES: usize = 512 << 10;

/// Longest node name in `nodelist` and `exclude`: node names are host names, and a DNS name is at
/// most 253 bytes.
pub const MAX_NODE_NAME_BYTES: usize = 253;

/// Upper bound on `nodes`: catches typos (`nodes = 1000000`) before the cluster sees them; larger
/// than any cluster this tool is meant for.
pub const MAX_NODES: u32 = 100_000;

/// Most CPUs a job may ask for on one node (`tasks_per_node × cpus_per_task`): Linux's largest
/// configuration (x86-64 MAXSMP) supports 8192 CPUs, so no node can offer more. It also keeps the
/// product far from wrapping u32, and the default memory (128 MiB per CPU) at most 1 TiB.
pub const MAX_CPUS_PER_NODE: u32 = 8192;

/// Upper bound on `tasks_per_node`: every task takes at least one CPU of its node.
pub const MAX_TASKS_PER_NODE: u32 = MAX_CPUS_PER_NODE;

/// Upper bound on `cpus_per_task`: a task runs on one node.
pub const MAX_CPUS_PER_TASK: u32 = MAX_CPUS_PER_NODE;

/// Upper bound on `ntasks` (given, or `nodes × tasks_per_node`): 64 tasks on each of the most nodes
/// accepted; keeps rank arithmetic (`node index × tasks per node`, SLURM_PROCID) far inside u32.
pub const MAX_NTASKS: u32 = MAX_NODES * 64;

/// Most memory a job may ask for on one node: 1 PiB (2^30 MiB). The largest single machines sold
/// have tens of TiB (HPE Superdome Flex: 48 TiB), so this refuses only mistakes, and in bytes
/// (2^50) it is far inside the u64 the agent writes to the cgroup's `memory.max`.
pub const MAX_MEMORY_MB: u64 = 1 << 30;

/// Longest time limit: 365 days. Slurm also has INFINITE; we have no unlimited jobs, so backfill
/// always has an end to plan with. A year is longer than any real cluster's MaxTime (typically 1 to
/// 30 days), and keeps `start + limit` in milliseconds (3.2e10 ms here) far inside u64 (1.8e19).
pub const MAX_TIME_LIMIT_MS: Millis = 365 * 24 * 60 * 60 * 1000;

/// Largest count of one generic resource on a node (`gres = "gpu:2"`). Devices number in the tens
/// (8–16 GPUs); counted shares such as Slurm's MPS (100 per GPU) reach a few thousand. A million is
/// far above those and keeps the scheduler's per-node sums over many jobs inside u32.
pub const MAX_GRES_COUNT: u32 = 1_000_000;

/// Most elements one array may have: Slurm's default MaxArraySize is 1001; ours is larger, since an
/// element costs one small record, but a typo such as `1-10000000` is still caught.
pub const MAX_ARRAY_ELEMENTS: usize = 100_001;

/// How a string field is checked, by where it ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Text {
    /// Printed on other users' terminals (`cluster queue`, `cluster show`): no control characters
    /// (escape sequences) and no bidirectional-text controls (which make text display as other text).
    Shown,
    /// A path the agent opens or creates: no control characters.
    Path,
    /// Handed to `execve` as it is (arguments, the script, environment values): anything but NUL,
    /// which would end the C string early.
    Exec,
}

/// Why `value` cannot be used as a `rule` string of at most `max` bytes, if it cannot.
pub(super) fn text_problem(value: &str, rule: Text, max: usize) -> Option<String> {
    if value.len() > max {
        return Some(format!(
            "is {} bytes, more than the limit of {max} bytes; shorten it",
            value.len()
        ));
    }
    let (at, c) = value.char_indices().find(|&(_, c)| match rule {
        Text::Exec => c == '\0',
        Text::Path => c.is_control(),
        Text::Shown => c.is_control() || is_bidi_control(c),
    })?;
    Some(if c == '\0' {
        format!(
            "contains a NUL byte (at byte {at}), which would cut the string short where it is used; remove it"
        )
    } else if rule == Text::Path {
        format!(
            "contains the control character U+{:04X} (at byte {at}); paths with control characters are refused: use another name",
            u32::from(c)
        )
    } else if c.is_control() {
        format!(
            "contains the control character U+{:04X} (at byte {at}); it would be printed on other users' terminals: remove it",
            u32::from(c)
        )
    } else {
        format!(
            "contains the bidirectional-text control U+{:04X} (at byte {at}), which changes how the text is displayed; remove it",
            u32::from(c)
        )
    })
}

/// Unicode's explicit bidirectional formatting characters (the "Trojan Source" set, CVE-2021-42574).
pub(super) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// A user's text quoted in an error message: control and bidirectional characters escaped, and cut
/// after 64 characters, so an error cannot carry escape sequences or megabytes back.
pub(super) fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || is_bidi_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a number written as text is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadNumber {
    /// Not digits only (signs, spaces inside, letters, empty).
    Invalid,
    /// Digits, but more than the type holds.
    TooLarge,
}

/// A non-negative decimal integer of ASCII digits only (no sign: `+5` and `-5` are refused too).
pub(super) fn decimal<T>(text: &str) -> Result<T, BadNumber>
where
    T: std::str::FromStr<Err = std::num::ParseIntError>,
{
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadNumber::Invalid);
    }
    text.parse().map_err(|_| BadNumber::TooLarge)
}

/// Why an environment cannot be handed to `execve`: the variable at fault (None: the environment
/// as a whole) and the reason.
pub(super) fn environment_problem<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<(Option<&'a str>, String)> {
    let mut count = 0usize;
    let mut total = 0usize;
    for (key, value) in vars {
        let fail = |message: String| Some((Some(key), message));
        if key.is_empty() {
            return fail("a variable has an empty name; remove it".into());
        }
        if key.contains('=') {
            return fail(format!(
                "variable `{}` has `=` in its name, which would split it elsewhere; rename it",
                shown(key)
            ));
        }
        if let Some(problem) = text_problem(key, Text::Exec, usize::MAX) {
            return fail(format!("the name of variable `{}` {problem}", shown(key)));
        }
        if let Some(problem) = text_problem(value, Text::Exec, usize::MAX) {
            return fail(format!("the value of `{}` {problem}", shown(key)));
        }
        let bytes = key.len().saturating_add(1).saturating_add(value.len());
        if bytes > MAX_EXEC_STRING_BYTES {
            return fail(format!(
                "`{}=…` is {bytes} bytes, more than the limit of {MAX_EXEC_STRING_BYTES} bytes for one \
                 variable (Linux's MAX_ARG_STRLEN); pass large data in a file",
                shown(key)
            ));
        }
        count += 1;
        total = total.saturating_add(bytes);
    }
    if count > MAX_ENV_VARS {
        return Some((
            None,
            format!(
                "has {count} variables, more than the limit of {MAX_ENV_VARS}; pass only what the job needs"
            ),
        ));
    }
    if total > MAX_ENV_BYTES {
        return Some((
            None,
            format!(
                "is {total} bytes (as `NAME=value` strings), more than the limit of {MAX_ENV_BYTES} \
                 bytes (512 KiB); pass only what the job needs, and large data in a file"
            ),
        ));
    }
    None
}
