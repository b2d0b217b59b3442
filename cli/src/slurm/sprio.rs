//! `sprio`: each pending job's priority and the factors it is made of, as the head's last
//! scheduling pass computed them, in Slurm's columns or a `-o`/`--format` of `%` fields.

use super::format::{Piece, parse_format, render};
use super::jobs::{JobFilter, JobSelector, job_id_text};
use crate::{client, output};
use beowulf_proto::v1;
use beowulf_types::JobState;
use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::Path;

#[derive(Debug, Parser)]
#[command(
    name = "sprio",
    version,
    about = "View the factors of pending jobs' priorities (Slurm's sprio)",
    disable_help_flag = true
)]
struct Args {
    /// Print no header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    /// Output format: `%i %Y %A ...` (the fields below), `%.10A` right-justified in 10 columns.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Jobs to show: IDs (an array's ID: every element), `ARRAY_INDEX`, comma-separated.
    #[arg(short = 'j', long = "jobs", value_delimiter = ',')]
    jobs: Vec<String>,
    /// Users whose jobs to show.
    #[arg(short = 'u', long = "user", value_delimiter = ',')]
    users: Vec<String>,
    /// Partitions whose jobs to show.
    #[arg(short = 'p', long = "partition", value_delimiter = ',')]
    partitions: Vec<String>,
    /// More columns: the job's account and its nice value (always 0 here).
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// The factors before weighting (0 to 1), and the priority as a share of the highest the
    /// weights can give.
    #[arg(short = 'n', long = "norm")]
    norm: bool,
    /// Print the configured weights instead of jobs.
    #[arg(short = 'w', long = "weights")]
    weights: bool,
    /// Only this cluster's jobs: what sprio shows here anyway.
    #[arg(long = "local")]
    local: bool,
    /// Refused: this is one cluster.
    #[arg(short = 'M', long = "clusters")]
    clusters: Option<String>,
    /// Refused: this is one cluster.
    #[arg(long = "federation")]
    federation: bool,
    /// Refused for now: jobs are listed by job ID.
    #[arg(short = 'S', long = "sort", allow_hyphen_values = true)]
    sort: Option<String>,
    /// Refused for now: use the columns (`-o`), or `cluster show --json` for one job.
    #[arg(long = "json", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    json: Option<String>,
    /// Refused for now: use the columns (`-o`).
    #[arg(long = "yaml", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    yaml: Option<String>,
    /// Refused: sprio here has nothing more to say about its options.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Options refused with what to do instead (never accepted and ignored).
fn refuse_unsupported(args: &Args) -> anyhow::Result<()> {
    if args.clusters.is_some() || args.federation {
        anyhow::bail!("--clusters and --federation are not supported: this is one cluster");
    }
    if args.sort.is_some() {
        anyhow::bail!(
            "--sort is not supported yet: jobs are listed by job ID (sort the output, e.g. `sprio -h | sort -k3 -n -r`)"
        );
    }
    if args.json.is_some() || args.yaml.is_some() {
        anyhow::bail!(
            "--json and --yaml are not supported yet: use -o with the fields you need (and -h)"
        );
    }
    if args.verbose {
        anyhow::bail!("--verbose is not supported: sprio here prints nothing beyond its columns");
    }
    Ok(())
}

/// Every `%` field sprio prints here: its letter, its column title, and what it is.
pub const FIELDS: &[(char, &str, &str)] = &[
    ('i', "JOBID", "job ID (`12_3` for an array element)"),
    ('r', "PARTITION", "partition"),
    ('u', "USER", "user"),
    ('o', "ACCOUNT", "account"),
    ('Y', "PRIORITY", "priority (what `squeue -o %Q` shows)"),
    (
        'y',
        "PRIORITY",
        "priority over the highest the weights can give",
    ),
    ('S', "SITE", "site factor: always 0 (none here)"),
    ('A', "AGE", "weighted age factor"),
    ('a', "AGE", "age factor"),
    ('F', "FAIRSHARE", "weighted fair-share factor"),
    ('f', "FAIRSHARE", "fair-share factor"),
    ('J', "JOBSIZE", "weighted job size factor"),
    ('j', "JOBSIZE", "job size factor"),
    ('P', "PARTITION", "weighted partition factor"),
    ('p', "PARTITION", "partition factor"),
    ('Q', "QOS", "weighted QOS factor"),
    ('q', "QOS", "QOS factor"),
    (
        'N',
        "NICE",
        "nice adjustment: always 0 (`--nice` is refused)",
    ),
];

/// The default columns: Slurm's, without the factors whose weight is 0 (as Slurm leaves them out).
fn default_format(weights: &v1::PriorityWeights, long: bool, norm: bool) -> String {
    let mut columns = vec!["%.15i", "%9r", "%.8u"];
    if long {
        columns.push("%.8o");
    }
    columns.push(if norm { "%.10y" } else { "%.10Y" });
    columns.push("%.10S");
    let factors = [
        (weights.age, "%.10A", "%.10a"),
        (weights.fairshare, "%.10F", "%.10f"),
        (weights.size, "%.10J", "%.10j"),
        (weights.partition, "%.10P", "%.10p"),
        (weights.qos, "%.10Q", "%.10q"),
    ];
    for (weight, weighted, normalized) in factors {
        if weight > 0 {
            columns.push(if norm { normalized } else { weighted });
        }
    }
    if long {
        columns.push("%.11N");
    }
    columns.join(" ")
}

/// A format's pieces, every field one sprio prints here.
fn parse_checked(format: &str) -> anyhow::Result<Vec<Piece>> {
    let pieces = parse_format(format);
    for piece in &pieces {
        if let Piece::Field { letter, .. } = piece
            && !FIELDS.iter().any(|(l, _, _)| l == letter)
        {
            let letters: String = FIELDS.iter().map(|(l, _, _)| format!("%{l}")).collect();
            anyhow::bail!(
                "invalid sprio field %{letter}: not supported here; the fields are {letters}"
            );
        }
    }
    Ok(pieces)
}

fn header(letter: char) -> &'static str {
    FIELDS
        .iter()
        .find(|(l, _, _)| *l == letter)
        .map_or("?", |(_, title, _)| title)
}

/// A factor before weighting, as Slurm prints one (`0.2500000`).
fn normalized(factor: Option<&v1::PriorityFactor>) -> String {
    let millionths = factor.map_or(0, |f| f.millionths);
    format!("{:.7}", millionths as f64 / 1e6)
}

fn weighted(factor: Option<&v1::PriorityFactor>) -> String {
    factor.map_or(0, |f| f.weighted).to_string()
}

/// The highest priority the weights can give: every factor 1.0.
fn highest(weights: &v1::PriorityWeights) -> u64 {
    let sum = u64::from(weights.age)
        + u64::from(weights.size)
        + u64::from(weights.fairshare)
        + u64::from(weights.partition)
        + u64::from(weights.qos);
    sum.saturating_mul(weights.factor_scale)
}

fn value(letter: char, job: &v1::JobInfo, weights: &v1::PriorityWeights) -> String {
    let f = job.priority_factors.as_ref();
    match letter {
        'i' => job_id_text(job),
        'r' => job.partition.clone(),
        'u' => job.user.clone(),
        'o' => job.account.clone(),
        'Y' => job.priority.to_string(),
        'y' => match highest(weights) {
            0 => normalized(None),
            top => format!("{:.7}", job.priority as f64 / top as f64),
        },
        'S' | 'N' => "0".to_string(),
        'A' => weighted(f.and_then(|f| f.age.as_ref())),
        'a' => normalized(f.and_then(|f| f.age.as_ref())),
        'F' => weighted(f.and_then(|f| f.fairshare.as_ref())),
        'f' => normalized(f.and_then(|f| f.fairshare.as_ref())),
        'J' => weighted(f.and_then(|f| f.size.as_ref())),
        'j' => normalized(f.and_then(|f| f.size.as_ref())),
        'P' => weighted(f.and_then(|f| f.partition.as_ref())),
        'p' => normalized(f.and_then(|f| f.partition.as_ref())),
        'Q' => weighted(f.and_then(|f| f.qos.as_ref())),
        'q' => normalized(f.and_then(|f| f.qos.as_ref())),
        other => format!("%{other}"),
    }
}

/// `sprio -w`'s line: each factor's configured weight under its column.
fn weight(letter: char, weights: &v1::PriorityWeights) -> String {
    match letter {
        'i' => "Weights".to_string(),
        'A' | 'a' => weights.age.to_string(),
        'F' | 'f' => weights.fairshare.to_string(),
        'J' | 'j' => weights.size.to_string(),
        'P' | 'p' => weights.partition.to_string(),
        'Q' | 'q' => weights.qos.to_string(),
        _ => String::new(),
    }
}

/// The options, for the docs.
pub fn option_rows() -> Vec<(String, String)> {
    use clap::CommandFactory;
    super::option_rows(Args::command())
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    refuse_unsupported(&args)?;
    let _ = args.local;
    let filter = JobFilter {
        jobs: JobSelector::parse_all(&args.jobs)?,
        users: args.users.clone(),
        uid: None,
        partitions: args.partitions.clone(),
        states: vec![JobState::Pending],
        names: Vec::new(),
    };
    if let Some(format) = &args.format {
        parse_checked(format)?;
    }
    let mut c = client::connect(socket).await?;
    let weights = c
        .get_priority_weights(v1::PriorityWeightsRequest {})
        .await
        .map_err(client::status_error)?
        .into_inner();
    let format = args
        .format
        .clone()
        .unwrap_or_else(|| default_format(&weights, args.long, args.norm));
    let fields = parse_checked(&format)?;
    let mut out = String::new();
    if !args.noheader {
        out.push_str(&render(&fields, |f| header(f).to_string()));
        out.push('\n');
    }
    if args.weights {
        out.push_str(&render(&fields, |f| weight(f, &weights)));
        out.push('\n');
    } else {
        let jobs = client::list_jobs(&mut c, filter.needs_ended_jobs()).await?;
        for job in jobs.iter().filter(|j| filter.matches(j)) {
            out.push_str(&render(&fields, |f| value(f, job, &weights)));
            out.push('\n');
        }
    }
    print!("{}", output::printable(&out));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn factor(millionths: u64, weighted: u64) -> Option<v1::PriorityFactor> {
        Some(v1::PriorityFactor {
            millionths,
            weighted,
        })
    }

    fn weights() -> v1::PriorityWeights {
        v1::PriorityWeights {
            age: 1000,
            size: 100,
            fairshare: 500,
            factor_scale: 1_000_000,
            ..Default::default()
        }
    }

    fn job() -> v1::JobInfo {
        v1::JobInfo {
            id: 13,
            array_job_id: Some(12),
            array_task_id: Some(1),
            user: "ada".into(),
            partition: "batch".into(),
            state: "PENDING".into(),
            priority: 250_000_000 + 25_000_000 + 500_000_000,
            priority_factors: Some(v1::PriorityFactors {
                age: factor(250_000, 250_000_000),
                size: factor(250_000, 25_000_000),
                fairshare: factor(1_000_000, 500_000_000),
                partition: factor(0, 0),
                qos: factor(0, 0),
            }),
            ..Default::default()
        }
    }

    fn lines(format: &str, job: &v1::JobInfo, weights: &v1::PriorityWeights) -> (String, String) {
        let fields = parse_checked(format).unwrap();
        (
            render(&fields, |f| header(f).to_string()),
            render(&fields, |f| value(f, job, weights)),
        )
    }

    #[test]
    fn columns_are_slurms_without_the_factors_weighted_zero() {
        let w = weights();
        let (header, line) = lines(&default_format(&w, false, false), &job(), &w);
        assert_eq!(
            header,
            "          JOBID PARTITION     USER   PRIORITY       SITE        AGE  FAIRSHARE    JOBSIZE"
        );
        assert_eq!(
            line,
            "           12_1 batch          ada  775000000          0  250000000  500000000   25000000"
        );
        let all = v1::PriorityWeights {
            partition: 1,
            qos: 1,
            ..w
        };
        let (header, _) = lines(&default_format(&all, true, false), &job(), &all);
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            [
                "JOBID",
                "PARTITION",
                "USER",
                "ACCOUNT",
                "PRIORITY",
                "SITE",
                "AGE",
                "FAIRSHARE",
                "JOBSIZE",
                "PARTITION",
                "QOS",
                "NICE"
            ]
        );
    }

    #[test]
    fn the_weighted_parts_add_up_to_the_priority_and_norm_shows_the_factors() {
        let w = weights();
        let (_, line) = lines("%Y=%A+%F+%J+%P+%Q", &job(), &w);
        let (total, parts) = line.split_once('=').unwrap();
        let sum: u64 = parts.split('+').map(|p| p.parse::<u64>().unwrap()).sum();
        assert_eq!(total.parse::<u64>().unwrap(), sum);
        let (header, line) = lines(&default_format(&w, false, true), &job(), &w);
        assert!(header.contains("PRIORITY"), "{header}");
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            [
                "12_1",
                "batch",
                "ada",
                "0.4843750",
                "0",
                "0.2500000",
                "1.0000000",
                "0.2500000"
            ]
        );
        // A job the head has not planned yet: its factors are 0.
        let unplanned = v1::JobInfo {
            priority_factors: None,
            ..job()
        };
        assert_eq!(lines("%A %a", &unplanned, &w).1, "0 0.0000000");
    }

    #[test]
    fn weights_line_up_under_their_columns() {
        let w = weights();
        let fields = parse_checked(&default_format(&w, false, false)).unwrap();
        assert_eq!(
            render(&fields, |f| weight(f, &w)),
            "        Weights                                                1000        500        100"
        );
    }

    #[test]
    fn unknown_fields_and_unsupported_options_are_refused() {
        let e = parse_checked("%i %B").unwrap_err().to_string();
        assert!(e.contains("invalid sprio field %B"), "{e}");
        assert!(e.contains("%A"), "{e}");
        for refused in [
            vec!["sprio", "-M", "other"],
            vec!["sprio", "--federation"],
            vec!["sprio", "-S", "-y"],
            vec!["sprio", "--json"],
            vec!["sprio", "--yaml"],
            vec!["sprio", "-v"],
        ] {
            let args = Args::try_parse_from(&refused).unwrap();
            assert!(refuse_unsupported(&args).is_err(), "{refused:?}");
        }
        let args =
            Args::try_parse_from(["sprio", "-l", "-n", "-w", "--local", "-u", "a,b"]).unwrap();
        assert!(refuse_unsupported(&args).is_ok());
        assert_eq!(args.users, ["a", "b"]);
    }
}
