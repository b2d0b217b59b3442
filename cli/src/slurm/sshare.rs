//! `sshare`: the fair-share table the scheduler computes (shares, decayed usage and factor per
//! account and per user), in Slurm's columns, `--format` fields and `--parsable2` output.
//!
//! Users and accounts are two levels here, each normalised among itself, not Slurm's tree of
//! associations: an account's line has no user, a user's line no account (a user's usage counts
//! over all their accounts), and `root` sums every job's usage.

use crate::{client, output};
use beowulf_proto::v1;
use clap::{ArgAction, Parser};
use std::ffi::OsString;
use std::path::Path;

/// sshare's default fields.
const DEFAULT_FIELDS: &str = "Account,User,RawShares,NormShares,RawUsage,EffectvUsage,FairShare";
/// `sshare --long`'s (those of Slurm's long list that exist here).
const LONG_FIELDS: &str =
    "Account,User,RawShares,NormShares,RawUsage,NormUsage,EffectvUsage,FairShare";

/// One line of the table: `root`, an account, or a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// As Slurm writes it: `root`, or an account one space in.
    account: String,
    user: String,
    /// None for `root`, whose shares are everyone's.
    share: Option<v1::ShareInfo>,
    /// Every job's decayed usage (CPU-milliseconds): `root`'s, and what NormUsage divides by.
    total_usage: f64,
}

/// One field sshare can print: its name, its default width, and its value.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub width: usize,
    pub value: fn(&Line) -> String,
}

fn six(value: f64) -> String {
    format!("{value:.6}")
}

/// Decayed CPU-milliseconds as Slurm's RawUsage counts: whole CPU-seconds.
fn cpu_seconds(cpu_ms: f64) -> String {
    format!("{}", (cpu_ms / 1000.0).floor() as u64)
}

/// Every field this sshare prints, in Slurm's spelling (matched without regard to case).
pub const FIELDS: &[Field] = &[
    Field {
        name: "Account",
        width: 20,
        value: |l| l.account.clone(),
    },
    Field {
        name: "User",
        width: 10,
        value: |l| l.user.clone(),
    },
    Field {
        name: "RawShares",
        width: 10,
        value: |l| {
            l.share
                .as_ref()
                .map_or(String::new(), |s| s.raw_shares.to_string())
        },
    },
    Field {
        name: "NormShares",
        width: 11,
        value: |l| l.share.as_ref().map_or(six(1.0), |s| six(s.norm_shares)),
    },
    Field {
        name: "RawUsage",
        width: 11,
        value: |l| cpu_seconds(l.share.as_ref().map_or(l.total_usage, |s| s.usage_cpu_ms)),
    },
    Field {
        name: "NormUsage",
        width: 11,
        value: |l| {
            let usage = l.share.as_ref().map_or(l.total_usage, |s| s.usage_cpu_ms);
            six(if l.total_usage > 0.0 {
                usage / l.total_usage
            } else {
                0.0
            })
        },
    },
    Field {
        name: "EffectvUsage",
        width: 13,
        value: |l| match &l.share {
            Some(s) => six(s.effective_usage),
            None => six(if l.total_usage > 0.0 { 1.0 } else { 0.0 }),
        },
    },
    Field {
        name: "FairShare",
        width: 10,
        value: |l| l.share.as_ref().map_or(String::new(), |s| six(s.fairshare)),
    },
];

/// Fields of Slurm's sshare that have no meaning here, with why.
pub const ABSENT_FIELDS: &[(&str, &str)] = &[
    (
        "LevelFS",
        "the fair-tree algorithm is not used here (classic fair-share)",
    ),
    ("GrpTRESMins", "associations have no limits here"),
    ("GrpTRESRaw", "associations have no limits here"),
    ("TRESRunMins", "associations have no limits here"),
    ("TRESRaw", "usage is counted in CPU-time alone (RawUsage)"),
    ("Partition", "associations are not per partition here"),
    ("ID", "associations have no IDs here"),
    ("Cluster", "this is one cluster"),
];

#[derive(Debug, Parser)]
#[command(
    name = "sshare",
    version,
    about = "View fair-share shares and usage (Slurm's sshare)",
    disable_help_flag = true
)]
struct Args {
    /// Every user's line (default: your own, unless -A).
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// These accounts' lines alone, comma-separated.
    #[arg(short = 'A', long = "accounts", value_delimiter = ',')]
    accounts: Vec<String>,
    /// These users' lines, comma-separated (then no account lines unless -A).
    #[arg(short = 'u', long = "users", value_delimiter = ',')]
    users: Vec<String>,
    /// Users' lines alone: no root or account lines.
    #[arg(short = 'U', long = "Users")]
    users_only: bool,
    /// Fields to print, comma-separated (`Account,User,FairShare`; `User%20` sets a width).
    #[arg(short = 'o', long = "format", value_delimiter = ',')]
    format: Vec<String>,
    /// The long fields: NormUsage too.
    #[arg(short = 'l', long = "long")]
    long: bool,
    /// No header.
    #[arg(short = 'n', long = "noheader")]
    noheader: bool,
    /// Fields followed by `|`.
    #[arg(short = 'p', long = "parsable")]
    parsable: bool,
    /// Fields separated by `|`, none after the last.
    #[arg(short = 'P', long = "parsable2")]
    parsable2: bool,
    /// List the fields -o takes.
    #[arg(long = "helpformat")]
    helpformat: bool,
    /// Refused: this is one cluster.
    #[arg(short = 'M', long = "clusters")]
    clusters: Option<String>,
    /// Refused: associations are not per partition here.
    #[arg(short = 'm', long = "partition")]
    partition: bool,
    /// Refused for now: use --parsable2 with the fields you need.
    #[arg(long = "json", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    json: Option<String>,
    /// Refused for now: use --parsable2 with the fields you need.
    #[arg(long = "yaml", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    yaml: Option<String>,
    /// Refused: sshare here prints nothing beyond its table.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    #[arg(short = 'h', long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// Options refused with what to do instead (never accepted and ignored).
fn refuse_unsupported(args: &Args) -> anyhow::Result<()> {
    if args.clusters.is_some() {
        anyhow::bail!("--clusters is not supported: this is one cluster");
    }
    if args.partition {
        anyhow::bail!("--partition is not supported: associations are not per partition here");
    }
    if args.json.is_some() || args.yaml.is_some() {
        anyhow::bail!(
            "--json and --yaml are not supported yet: use --parsable2 with the fields you need (-o)"
        );
    }
    if args.verbose {
        anyhow::bail!("--verbose is not supported: sshare here prints nothing beyond its table");
    }
    Ok(())
}

/// A requested field and its width (`User%20`).
fn column(requested: &str) -> anyhow::Result<(&'static Field, usize)> {
    let (name, width) = match requested.trim().split_once('%') {
        Some((name, width)) => (
            name,
            Some(
                width
                    .parse::<usize>()
                    .map_err(|_| anyhow::anyhow!("invalid field width in `{requested}`"))?
                    .min(1024),
            ),
        ),
        None => (requested.trim(), None),
    };
    if let Some((absent, why)) = ABSENT_FIELDS
        .iter()
        .find(|(absent, _)| absent.eq_ignore_ascii_case(name))
    {
        anyhow::bail!("field {absent} is not supported here: {why}");
    }
    let field = FIELDS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
            anyhow::anyhow!(
                "invalid field requested: \"{name}\"; the fields are {}",
                names.join(", ")
            )
        })?;
    Ok((field, width.unwrap_or(field.width)))
}

/// Which lines to print.
#[derive(Debug, Default)]
struct Selection {
    all: bool,
    accounts: Vec<String>,
    users: Vec<String>,
    users_only: bool,
    /// The caller, whose line shows without -a or -u.
    me: Option<String>,
}

/// The table's lines as sshare prints them: `root`, the accounts, then the users chosen.
fn lines(reply: &v1::ListSharesReply, selection: &Selection) -> Vec<Line> {
    let total_usage: f64 = reply.users.iter().map(|u| u.usage_cpu_ms).sum();
    let mut out = Vec::new();
    if !selection.users_only {
        out.push(Line {
            account: "root".into(),
            user: String::new(),
            share: None,
            total_usage,
        });
        let accounts_shown = selection.users.is_empty() || !selection.accounts.is_empty();
        for account in reply.accounts.iter().filter(|a| {
            accounts_shown
                && (selection.accounts.is_empty() || selection.accounts.contains(&a.name))
        }) {
            out.push(Line {
                account: format!(" {}", account.name),
                user: String::new(),
                share: Some(account.clone()),
                total_usage,
            });
        }
    }
    for user in reply.users.iter().filter(|u| {
        if !selection.users.is_empty() {
            selection.users.contains(&u.name)
        } else if selection.all || selection.users_only {
            true
        } else {
            selection.accounts.is_empty() && selection.me.as_deref() == Some(&u.name)
        }
    }) {
        out.push(Line {
            account: String::new(),
            user: user.name.clone(),
            share: Some(user.clone()),
            total_usage,
        });
    }
    out
}

/// One output line: `|`-separated (with one after the last field for `--parsable`), or columns
/// of their width: headers right-justified, Account's values left, the others right, a value too
/// long cut and ended with `+`.
fn render(
    columns: &[(&'static Field, usize)],
    separator: Option<&str>,
    trailing: bool,
    header: bool,
    value: impl Fn(&'static Field) -> String,
) -> String {
    let cells: Vec<String> = columns
        .iter()
        .map(|&(field, width)| {
            let v = value(field);
            if separator.is_some() {
                return v;
            }
            super::format::fit(v, width, !header && field.name == "Account")
        })
        .collect();
    super::format::join_line(&cells, separator, trailing)
}

/// The whole output for `lines` in `columns`.
fn table(
    columns: &[(&'static Field, usize)],
    lines: &[Line],
    separator: Option<&str>,
    trailing: bool,
    noheader: bool,
) -> String {
    let mut out = String::new();
    if !noheader {
        out.push_str(&render(columns, separator, trailing, true, |f| {
            f.name.to_string()
        }));
        if separator.is_none() {
            let dashes: Vec<String> = columns.iter().map(|c| "-".repeat(c.1)).collect();
            out.push_str(&format!("{} \n", dashes.join(" ")));
        }
    }
    for line in lines {
        out.push_str(&render(columns, separator, trailing, false, |f| {
            (f.value)(line)
        }));
    }
    out
}

/// The caller's user name, for the default selection.
fn my_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The options, for the docs.
pub fn option_rows() -> Vec<(String, String)> {
    use clap::CommandFactory;
    super::option_rows(Args::command())
}

pub async fn run(socket: &Path, args: Vec<OsString>) -> anyhow::Result<i32> {
    let args = Args::try_parse_from(args).unwrap_or_else(|e| e.exit());
    refuse_unsupported(&args)?;
    if args.helpformat {
        let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        println!("{}", names.join(" "));
        return Ok(0);
    }
    let default = if args.long {
        LONG_FIELDS
    } else {
        DEFAULT_FIELDS
    };
    let requested: Vec<String> = if args.format.is_empty() {
        default.split(',').map(str::to_string).collect()
    } else {
        args.format.clone()
    };
    let columns = requested
        .iter()
        .map(|f| column(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let selection = Selection {
        all: args.all,
        accounts: args.accounts.clone(),
        users: args.users.clone(),
        users_only: args.users_only,
        me: my_name(),
    };
    let mut c = client::connect(socket).await?;
    let reply = c
        .list_shares(v1::ListSharesRequest {})
        .await
        .map_err(client::status_error)?
        .into_inner();
    let separator = (args.parsable2 || args.parsable).then_some("|");
    let out = table(
        &columns,
        &lines(&reply, &selection),
        separator,
        args.parsable,
        args.noheader,
    );
    print!("{}", output::printable(&out));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(name: &str, shares: u32, usage: f64, effective: f64, factor: f64) -> v1::ShareInfo {
        v1::ShareInfo {
            name: name.into(),
            raw_shares: shares,
            norm_shares: 0.5,
            usage_cpu_ms: usage,
            effective_usage: effective,
            fairshare: factor,
        }
    }

    fn reply() -> v1::ListSharesReply {
        v1::ListSharesReply {
            users: vec![
                share("ada", 1, 90_000.0, 0.9, 0.287175),
                share("bob", 1, 10_000.0, 0.1, 0.870551),
            ],
            accounts: vec![share("physics", 2, 50_000.0, 1.0, 0.25)],
            weighted: true,
        }
    }

    fn columns(fields: &str) -> Vec<(&'static Field, usize)> {
        fields.split(',').map(|f| column(f).unwrap()).collect()
    }

    #[test]
    fn parsable2_has_root_the_accounts_and_the_users_chosen() {
        let selection = Selection {
            me: Some("bob".into()),
            ..Default::default()
        };
        let out = table(
            &columns(DEFAULT_FIELDS),
            &lines(&reply(), &selection),
            Some("|"),
            false,
            false,
        );
        assert_eq!(
            out,
            "Account|User|RawShares|NormShares|RawUsage|EffectvUsage|FairShare\n\
             root|||1.000000|100|1.000000|\n \
             physics||2|0.500000|50|1.000000|0.250000\n\
             |bob|1|0.500000|10|0.100000|0.870551\n"
        );
        let all = Selection {
            all: true,
            ..Default::default()
        };
        assert_eq!(lines(&reply(), &all).len(), 4);
        let only = Selection {
            users: vec!["ada".into()],
            ..Default::default()
        };
        let chosen: Vec<String> = lines(&reply(), &only)
            .iter()
            .map(|l| format!("{}/{}", l.account, l.user))
            .collect();
        assert_eq!(chosen, ["root/", "/ada"]);
        let users_only = Selection {
            users_only: true,
            ..Default::default()
        };
        assert_eq!(lines(&reply(), &users_only).len(), 2);
        // -A alone: root and those accounts.
        let account = Selection {
            accounts: vec!["physics".into()],
            me: Some("bob".into()),
            ..Default::default()
        };
        assert_eq!(lines(&reply(), &account).len(), 2);
    }

    #[test]
    fn columns_as_slurm_prints_them() {
        let selection = Selection {
            users: vec!["ada".into()],
            accounts: vec!["physics".into()],
            ..Default::default()
        };
        let out = table(
            &columns("Account,User,RawUsage,NormUsage,FairShare"),
            &lines(&reply(), &selection),
            None,
            false,
            false,
        );
        let expected = [
            "             Account       User    RawUsage   NormUsage  FairShare ",
            "-------------------- ---------- ----------- ----------- ---------- ",
            "root                                    100    1.000000            ",
            " physics                                 50    0.500000   0.250000 ",
            "                            ada          90    0.900000   0.287175 ",
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), expected);
        let parsable = table(
            &columns("User,FairShare"),
            &lines(&reply(), &selection)[2..],
            Some("|"),
            true,
            true,
        );
        assert_eq!(parsable, "ada|0.287175|\n");
    }

    #[test]
    fn fields_slurm_has_but_not_here_are_refused_saying_why() {
        let e = column("LevelFS").unwrap_err().to_string();
        assert!(e.contains("LevelFS is not supported here"), "{e}");
        let e = column("Bogus").unwrap_err().to_string();
        assert!(e.contains("\"Bogus\""), "{e}");
        assert_eq!(column("fairshare%4").unwrap().1, 4);
        for refused in [
            vec!["sshare", "-M", "other"],
            vec!["sshare", "-m"],
            vec!["sshare", "--json"],
            vec!["sshare", "-v"],
        ] {
            let args = Args::try_parse_from(&refused).unwrap();
            assert!(refuse_unsupported(&args).is_err(), "{refused:?}");
        }
        let args = Args::try_parse_from(["sshare", "-a", "-l", "-P", "-n", "-A", "x,y"]).unwrap();
        assert!(refuse_unsupported(&args).is_ok());
        assert_eq!(args.accounts, ["x", "y"]);
    }
}
