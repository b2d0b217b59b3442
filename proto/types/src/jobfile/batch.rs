//! Slurm batch scripts: a shell script whose `#SBATCH` lines set the job, read as `sbatch` reads
//! them, and the same options given on the command line.
//!
//! sbatch reads directives from the top of the script until the first line that is neither blank
//! nor a comment; a directive is a line that starts with `#SBATCH` (an indented or `##SBATCH` line
//! is a comment, the usual way to switch one off). Options on the command line win over the
//! script's. Each option becomes the job-file field of the same meaning, and the result is checked
//! by the job-file parser, so a script and a `job.toml` are held to the same rules.
//!
//! Every option sbatch documents is in [`SBATCH_OPTIONS`]: each one is honoured, accepted with a
//! warning (it changes nothing here, such as `--mail-user`), or refused with the line and what to
//! do instead. None is dropped silently.

use super::{JobSpec, parse_job_file};
use crate::located::SourceError;
use std::collections::BTreeMap;

/// What a batch script (or the command line) asked for, and where each field came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchJob {
    pub spec: JobSpec,
    /// Options accepted without effect, each naming the line and why.
    pub warnings: Vec<String>,
    /// The script line (1-based) that set each job-file field, for errors found after parsing;
    /// fields set on the command line are not here.
    pub lines: BTreeMap<String, usize>,
}

/// What an sbatch option does here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Sets this job-file field to the option's value.
    Field(&'static str),
    /// Sets this boolean job-file field.
    Flag(&'static str, bool),
    /// Accepted; changes nothing here, for this reason (printed as a warning).
    Informational(&'static str),
    /// Accepted only with these values (case-insensitive), which are what happens anyway; any
    /// other value is refused with the hint.
    OnlyValue(&'static [&'static str], &'static str),
    /// Refused, with what to do instead.
    Refused(&'static str),
}

/// One sbatch option: its long name, its short letter, whether it takes a value, and its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbatchOption {
    pub long: &'static str,
    pub short: Option<char>,
    pub takes_value: bool,
    pub effect: Effect,
}

const fn opt(long: &'static str, short: Option<char>, effect: Effect) -> SbatchOption {
    let takes_value = !matches!(effect, Effect::Flag(..));
    SbatchOption {
        long,
        short,
        takes_value,
        effect,
    }
}

const fn flag(long: &'static str, short: Option<char>, effect: Effect) -> SbatchOption {
    SbatchOption {
        long,
        short,
        takes_value: false,
        effect,
    }
}

const GRES_HINT: &str = "ask for GPUs with --gres=gpu:N (per node)";
const CPU_LAYOUT_HINT: &str =
    "CPUs are given per task (--cpus-per-task) and tasks per node (--ntasks-per-node)";

/// Every sbatch option (Slurm 24.11's `sbatch --help` and man page) and what it does here.
pub const SBATCH_OPTIONS: &[SbatchOption] = &[
    // Honoured: the job-file field of the same meaning.
    opt("job-name", Some('J'), Effect::Field("name")),
    opt("nodes", Some('N'), Effect::Field("nodes")),
    opt("ntasks", Some('n'), Effect::Field("ntasks")),
    opt("ntasks-per-node", None, Effect::Field("tasks_per_node")),
    opt("tasks-per-node", None, Effect::Field("tasks_per_node")),
    opt("cpus-per-task", Some('c'), Effect::Field("cpus_per_task")),
    opt("mem", None, Effect::Field("memory")),
    opt("time", Some('t'), Effect::Field("time_limit")),
    opt("partition", Some('p'), Effect::Field("partition")),
    opt("output", Some('o'), Effect::Field("output")),
    opt("error", Some('e'), Effect::Field("error")),
    opt("chdir", Some('D'), Effect::Field("workdir")),
    opt("workdir", None, Effect::Field("workdir")),
    opt("array", Some('a'), Effect::Field("array")),
    opt("dependency", Some('d'), Effect::Field("dependency")),
    opt("constraint", Some('C'), Effect::Field("constraint")),
    opt("gres", None, Effect::Field("gres")),
    opt("qos", Some('q'), Effect::Field("qos")),
    opt("account", Some('A'), Effect::Field("account")),
    opt("reservation", None, Effect::Field("reservation")),
    flag("requeue", None, Effect::Flag("requeue", true)),
    flag("no-requeue", None, Effect::Flag("requeue", false)),
    flag("hold", Some('H'), Effect::Flag("hold", true)),
    opt("nodelist", Some('w'), Effect::Field("nodelist")),
    opt("exclude", Some('x'), Effect::Field("exclude")),
    flag("exclusive", None, Effect::Flag("exclusive", true)),
    opt("begin", Some('b'), Effect::Field("begin")),
    // Accepted: what they ask for is what happens anyway.
    opt("export", None, Effect::Field("export")),
    opt(
        "open-mode",
        None,
        Effect::OnlyValue(
            &["append"],
            "output files are appended to; remove an old file in the script before writing",
        ),
    ),
    // Accepted, changing nothing here.
    opt(
        "mail-type",
        None,
        Effect::Informational("this cluster sends no mail"),
    ),
    opt(
        "mail-user",
        None,
        Effect::Informational("this cluster sends no mail"),
    ),
    opt(
        "comment",
        None,
        Effect::Informational("comments are not kept"),
    ),
    flag(
        "get-user-env",
        None,
        Effect::Informational("jobs get the environment they are submitted from"),
    ),
    opt(
        "propagate",
        None,
        Effect::Informational("resource limits are the node's, not the submitting shell's"),
    ),
    flag(
        "verbose",
        Some('v'),
        Effect::Informational("it only changes sbatch's own output"),
    ),
    flag(
        "quiet",
        Some('Q'),
        Effect::Informational("it only changes sbatch's own output"),
    ),
    opt(
        "acctg-freq",
        None,
        Effect::Informational("accounting samples at its own interval"),
    ),
    opt(
        "profile",
        None,
        Effect::Informational("no profiling plugin is installed"),
    ),
    opt("mem-per-cpu", None, Effect::Field("memory_per_cpu")),
    // Refused, with what to do instead.
    opt(
        "mem-per-gpu",
        None,
        Effect::Refused("not supported yet: give --mem, the memory per node"),
    ),
    opt("gpus", Some('G'), Effect::Field("gpus")),
    opt("gpus-per-node", None, Effect::Field("gpus_per_node")),
    opt("gpus-per-task", None, Effect::Refused(GRES_HINT)),
    opt("gpus-per-socket", None, Effect::Refused(GRES_HINT)),
    opt("cpus-per-gpu", None, Effect::Refused(GRES_HINT)),
    opt("ntasks-per-gpu", None, Effect::Refused(GRES_HINT)),
    opt("gpu-bind", None, Effect::Refused(GRES_HINT)),
    opt("gpu-freq", None, Effect::Refused(GRES_HINT)),
    opt("signal", None, Effect::Field("signal")),
    flag(
        "wait",
        Some('W'),
        Effect::Refused("use `submit --wait`, which follows the job and exits with its exit code"),
    ),
    flag(
        "test-only",
        None,
        Effect::Refused("give it on the command line: sbatch --test-only SCRIPT"),
    ),
    flag(
        "parsable",
        None,
        Effect::Refused("it is an option of the sbatch command line, not of the script"),
    ),
    opt(
        "wrap",
        None,
        Effect::Refused(
            "it is an option of the sbatch command line; in a script, the script is the command",
        ),
    ),
    opt(
        "time-min",
        None,
        Effect::Refused("not supported yet: give --time"),
    ),
    opt(
        "nice",
        None,
        Effect::Refused(
            "not supported: priority comes from the cluster's policy (age, size, fair-share, partition, QOS)",
        ),
    ),
    opt(
        "priority",
        None,
        Effect::Refused(
            "not supported: priority comes from the cluster's policy (age, size, fair-share, partition, QOS)",
        ),
    ),
    opt(
        "licenses",
        Some('L'),
        Effect::Refused("not supported: the cluster has no license counts"),
    ),
    opt(
        "wckey",
        None,
        Effect::Informational(
            "workload characterization keys are not kept; accounts are (--account)",
        ),
    ),
    opt(
        "clusters",
        Some('M'),
        Effect::Refused("not supported: this is one cluster"),
    ),
    opt(
        "cluster-constraint",
        None,
        Effect::Refused("not supported: this is one cluster"),
    ),
    opt(
        "deadline",
        None,
        Effect::Refused("not supported yet: give --time"),
    ),
    opt(
        "distribution",
        Some('m'),
        Effect::Refused("not supported yet: ranks are placed block-wise, node by node"),
    ),
    opt("hint", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("mincpus", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("ntasks-per-core", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("ntasks-per-socket", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("sockets-per-node", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("cores-per-socket", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("threads-per-core", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt(
        "extra-node-info",
        Some('B'),
        Effect::Refused(CPU_LAYOUT_HINT),
    ),
    opt("cpu-bind", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt("mem-bind", None, Effect::Refused(CPU_LAYOUT_HINT)),
    opt(
        "core-spec",
        Some('S'),
        Effect::Refused(
            "not supported: the node's reserved CPUs are the admin's (computed.toml reserved_cpus)",
        ),
    ),
    opt(
        "thread-spec",
        None,
        Effect::Refused(
            "not supported: the node's reserved CPUs are the admin's (computed.toml reserved_cpus)",
        ),
    ),
    opt(
        "tmp",
        None,
        Effect::Refused("not supported yet: node-local disk is not counted"),
    ),
    flag(
        "overcommit",
        Some('O'),
        Effect::Refused("not supported: a job gets the CPUs it asks for"),
    ),
    flag(
        "oversubscribe",
        Some('s'),
        Effect::Refused("not supported: a job gets the CPUs it asks for"),
    ),
    flag(
        "spread-job",
        None,
        Effect::Refused("not supported yet: nodes are chosen best-fit"),
    ),
    flag(
        "contiguous",
        None,
        Effect::Refused("not supported: nodes are chosen best-fit"),
    ),
    opt(
        "switches",
        None,
        Effect::Refused("not supported: the cluster has no switch topology"),
    ),
    flag(
        "use-min-nodes",
        None,
        Effect::Refused("not supported: give one node count"),
    ),
    opt(
        "uid",
        None,
        Effect::Refused("not supported: a job runs as the user who submits it"),
    ),
    opt(
        "gid",
        None,
        Effect::Refused("not supported: a job runs with the groups of the user who submits it"),
    ),
    opt(
        "kill-on-invalid-dep",
        None,
        Effect::Refused(
            "not supported yet: a job whose dependency can never be met waits with reason DependencyNeverSatisfied; cancel it",
        ),
    ),
    flag(
        "no-kill",
        Some('k'),
        Effect::Refused("not supported: a job whose node fails is requeued or ends NODE_FAIL"),
    ),
    opt(
        "input",
        Some('i'),
        Effect::Refused("not supported: a batch job's standard input is /dev/null"),
    ),
    opt(
        "cpu-freq",
        None,
        Effect::Refused("not supported: CPU frequency is the node's"),
    ),
    opt("power", None, Effect::Refused("not supported")),
    flag(
        "reboot",
        None,
        Effect::Refused("not supported: nodes are rebooted by the admin"),
    ),
    opt(
        "network",
        None,
        Effect::Refused(
            "not supported: the fabric is chosen per job (`[mpi] fabric` in a job file)",
        ),
    ),
    opt("mcs-label", None, Effect::Refused("not supported")),
    opt("delay-boot", None, Effect::Refused("not supported")),
    opt(
        "container",
        None,
        Effect::Refused("not supported yet in scripts: use a job file's [container] image"),
    ),
    opt(
        "batch",
        None,
        Effect::Refused("not supported: node features are chosen with --constraint"),
    ),
    opt(
        "prefer",
        None,
        Effect::Refused("not supported yet: use --constraint"),
    ),
    flag(
        "ignore-pbs",
        None,
        Effect::Informational("#PBS lines are never read"),
    ),
];

/// Where a value came from: a script line, or an option on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Line(usize),
    CommandLine(String),
}

/// A job-file field set by a directive or an option.
#[derive(Debug, Clone)]
struct Setting {
    field: String,
    value: toml::Value,
    origin: Origin,
    /// The option as written (`--nodes`), for errors.
    option: String,
}

/// True when `text` is a script rather than a job file: it starts with `#!`, as a script sbatch
/// runs must.
pub fn is_batch_script(text: &str) -> bool {
    text.starts_with("#!")
}

/// Parses a batch script's directives, applies `overrides` (job-file field → value, from the
/// command line) over them, and checks the result as a job file whose `script` is the whole text.
pub fn parse_batch_script(
    file: &str,
    text: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<BatchJob, SourceError> {
    let at = |line: usize, option: &str, message: String| SourceError {
        file: file.to_string(),
        line,
        field: Some(format!("#SBATCH {option}")),
        message,
    };
    let mut settings: Vec<Setting> = Vec::new();
    let mut warnings = Vec::new();
    for (number, line) in directive_lines(text) {
        let words = split_words(line).map_err(|m| at(number, "", m))?;
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            let (option, inline) = match split_option(&word) {
                Some(parts) => parts,
                None => {
                    return Err(at(
                        number,
                        &word,
                        "is not an option; #SBATCH lines hold options like --nodes=2".into(),
                    ));
                }
            };
            let Some(known) = find_option(&option) else {
                return Err(at(
                    number,
                    &option,
                    "is not an sbatch option; check its spelling in `man sbatch`".into(),
                ));
            };
            let value = if known.takes_value {
                match inline.or_else(|| words.next()) {
                    Some(v) => Some(v),
                    None => return Err(at(number, &option, "needs a value".into())),
                }
            } else {
                if inline.is_some() {
                    return Err(at(number, &option, "takes no value".into()));
                }
                None
            };
            let value = value.unwrap_or_default();
            match known.effect {
                Effect::Field(field) => settings.push(Setting {
                    field: field.to_string(),
                    value: typed_value(field, &value),
                    origin: Origin::Line(number),
                    option: option.clone(),
                }),
                Effect::Flag(field, on) => settings.push(Setting {
                    field: field.to_string(),
                    value: toml::Value::Boolean(on),
                    origin: Origin::Line(number),
                    option: option.clone(),
                }),
                Effect::Informational(why) => {
                    warnings.push(format!(
                        "{file}:{number}: #SBATCH {option} is accepted but changes nothing: {why}"
                    ));
                }
                Effect::OnlyValue(allowed, hint) => {
                    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value.trim())) {
                        return Err(at(
                            number,
                            &option,
                            format!("`{}` is not supported: {hint}", value.trim()),
                        ));
                    }
                }
                Effect::Refused(hint) => return Err(at(number, &option, hint.to_string())),
            }
        }
    }
    // The command line wins over the script, field by field.
    settings.retain(|s| !overrides.contains_key(&s.field));
    for (field, value) in overrides {
        settings.push(Setting {
            field: field.clone(),
            value: typed_value(field, value),
            origin: Origin::CommandLine(option_for_field(field)),
            option: option_for_field(field),
        });
    }
    // Later directives win over earlier ones, as in sbatch: keep the last setting of each field.
    let mut last: BTreeMap<String, Setting> = BTreeMap::new();
    for setting in settings {
        last.insert(setting.field.clone(), setting);
    }
    let settings: Vec<Setting> = last.into_values().collect();
    if settings
        .iter()
        .any(|s| s.field == "script" || s.field == "command")
    {
        return Err(SourceError {
            file: file.to_string(),
            line: 0,
            field: None,
            message: "a batch script is its own command; give `command` or `script` only in a \
                      job file"
                .into(),
        });
    }
    // One line per setting, then the script: a parse error's line tells which setting it was.
    let mut generated = String::new();
    for setting in &settings {
        generated.push_str(&format!("{} = {}\n", setting.field, setting.value));
    }
    generated.push_str(&format!(
        "script = {}\n",
        toml::Value::String(text.to_string())
    ));
    let spec = parse_job_file(file, &generated).map_err(|e| {
        let setting = e.line.checked_sub(1).and_then(|i| settings.get(i));
        match setting {
            Some(Setting {
                origin: Origin::Line(line),
                option,
                ..
            }) => SourceError {
                file: file.to_string(),
                line: *line,
                field: Some(format!("#SBATCH {option}")),
                message: e.message,
            },
            Some(Setting {
                origin: Origin::CommandLine(option),
                ..
            }) => SourceError {
                file: option.clone(),
                line: 0,
                field: None,
                message: e.message,
            },
            // The script itself, or a rule about several fields: about the whole file.
            None => SourceError {
                file: file.to_string(),
                line: 0,
                field: e.field.map(|f| format!("{f} (from the #SBATCH lines)")),
                message: e.message,
            },
        }
    })?;
    let lines = settings
        .iter()
        .filter_map(|s| match s.origin {
            Origin::Line(line) => Some((s.field.clone(), line)),
            Origin::CommandLine(_) => None,
        })
        .collect();
    Ok(BatchJob {
        spec,
        warnings,
        lines,
    })
}

/// The `#SBATCH` lines sbatch reads, with their 1-based numbers and what follows `#SBATCH`.
fn directive_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .skip(1)
        .take_while(|(_, line)| {
            let line = line.trim();
            line.is_empty() || line.starts_with('#')
        })
        .filter_map(|(index, line)| {
            let rest = line.strip_prefix("#SBATCH")?;
            (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some((index + 1, rest))
        })
}

/// The option of a word (`--nodes=2` → `--nodes`, `Some("2")`; `-N2` → `-N`, `Some("2")`), or
/// `None` when the word is not an option.
fn split_option(word: &str) -> Option<(String, Option<String>)> {
    if let Some(long) = word.strip_prefix("--") {
        if long.is_empty() {
            return None;
        }
        return Some(match long.split_once('=') {
            Some((name, value)) => (format!("--{name}"), Some(value.to_string())),
            None => (format!("--{long}"), None),
        });
    }
    let short = word.strip_prefix('-')?;
    let mut chars = short.chars();
    let letter = chars.next()?;
    let rest: String = chars.collect();
    let rest = rest.strip_prefix('=').map(str::to_string).unwrap_or(rest);
    Some((format!("-{letter}"), (!rest.is_empty()).then_some(rest)))
}

/// The sbatch option that sets job-file `field` (`time_limit` → `--time`), or `--field` for a
/// field no option sets.
pub fn option_for_field(field: &str) -> String {
    SBATCH_OPTIONS
        .iter()
        .find(|o| match o.effect {
            Effect::Field(f) | Effect::Flag(f, true) => f == field,
            _ => false,
        })
        .map_or_else(
            || format!("--{}", field.replace('_', "-")),
            |o| format!("--{}", o.long),
        )
}

/// The option named `--long` or `-s`.
fn find_option(option: &str) -> Option<&'static SbatchOption> {
    if let Some(long) = option.strip_prefix("--") {
        return SBATCH_OPTIONS.iter().find(|o| o.long == long);
    }
    let letter = option.strip_prefix('-')?.chars().next()?;
    SBATCH_OPTIONS.iter().find(|o| o.short == Some(letter))
}

/// A value as the job-file field takes it: counts as integers, memory and time as an integer when
/// they are a bare number (MiB, minutes, as in sbatch), `true`/`false` for flags, text otherwise.
pub(super) fn typed_value(field: &str, value: &str) -> toml::Value {
    let value = value.trim();
    match field {
        "nodes" | "ntasks" | "tasks_per_node" | "cpus_per_task" | "memory" | "memory_per_cpu"
        | "time_limit" | "gpus" | "gpus_per_node" => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(value.to_string())),
        "requeue" | "hold" | "exclusive" => match value {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            other => toml::Value::String(other.to_string()),
        },
        _ => toml::Value::String(value.to_string()),
    }
}

/// Splits a directive's text into words as sbatch does: blanks separate words, single and double
/// quotes group, a backslash escapes the next character, and a `#` starting a word begins a
/// comment that runs to the end of the line.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => word.extend(chars.next()),
                        Some(other) => word.push(other),
                        None => return Err(format!("the {c} quote is not closed")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests;
