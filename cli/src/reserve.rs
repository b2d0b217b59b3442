//! `cluster reserve create|list|delete`: advance reservations.

use crate::{client, local, output};
use anyhow::{Context, bail};
use beowulf_proto::v1;
use clap::Subcommand;
use std::path::Path;

#[derive(Debug, Subcommand)]
pub enum ReserveCommand {
    /// Set nodes aside: `cluster reserve create maint --nodes node[1-2] --start +10m --duration 2h --maintenance`.
    Create {
        name: String,
        /// A host list (`node[1-2]`); absent: every node.
        #[arg(long)]
        nodes: Option<String>,
        /// `now`, `+30m`, `+2h`, or Unix seconds.
        #[arg(long, default_value = "now")]
        start: String,
        /// Slurm's time syntax (`2:00:00`, `1-00:00:00`) or minutes.
        #[arg(long)]
        duration: String,
        /// Users allowed to run in it (comma-separated); absent: anyone who names it.
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        /// Nobody runs there: a maintenance window.
        #[arg(long)]
        maintenance: bool,
    },
    /// Reservations that have not ended.
    List {
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
    },
}

/// `cluster reserve create|list|delete`.
pub async fn run(socket: &Path, command: ReserveCommand) -> anyhow::Result<i32> {
    let mut c = client::connect(socket).await?;
    match command {
        ReserveCommand::Create {
            name,
            nodes,
            start,
            duration,
            users,
            maintenance,
        } => {
            let start_ms = parse_start(&start)?;
            let duration_ms = beowulf_types::jobfile::parse_time_limit(&toml_value(&duration))
                .map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
            let nodes = match nodes {
                Some(list) => beowulf_types::hostlist::expand(&list)
                    .map_err(|e| anyhow::anyhow!("--nodes: {e}"))?,
                None => Vec::new(),
            };
            let r = c
                .create_reservation(v1::Reservation {
                    name,
                    nodes,
                    start_ms,
                    end_ms: start_ms
                        .checked_add(duration_ms)
                        .context("--start and --duration end after the year 584 million")?,
                    users,
                    maintenance,
                    created_by: String::new(),
                })
                .await
                .map_err(client::status_error)?
                .into_inner();
            println!("reservation {} created", r.name);
        }
        ReserveCommand::List { json } => {
            let list = c
                .list_reservations(v1::ListReservationsRequest {})
                .await
                .map_err(client::status_error)?
                .into_inner()
                .reservations;
            if json {
                let items: Vec<_> = list
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "nodes": r.nodes, "start_ms": r.start_ms, "end_ms": r.end_ms, "users": r.users, "maintenance": r.maintenance}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{}",
                    output::printable(&output::reservations_table(&list, local::now_ms()))
                );
            }
        }
        ReserveCommand::Delete { name } => {
            c.delete_reservation(v1::DeleteReservationRequest { name: name.clone() })
                .await
                .map_err(client::status_error)?;
            println!("reservation {name} deleted");
        }
    }
    Ok(0)
}

/// A duration given on the command line: integer minutes, Slurm's time syntax (`2:00:00`,
/// `1-00:00:00`), or a number with a unit (`90s`, `30m`, `2h`, `1d`).
fn toml_value(text: &str) -> toml::Value {
    let text = text.trim();
    if let Ok(minutes) = text.parse::<i64>() {
        return toml::Value::Integer(minutes);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    match (number.parse::<u64>(), unit) {
        (Ok(n), "s") => toml::Value::String(format!("{}:{:02}", n / 60, n % 60)),
        (Ok(n), "m") => i64::try_from(n).map_or_else(
            |_| toml::Value::String(text.to_string()),
            toml::Value::Integer,
        ),
        (Ok(n), "h") => toml::Value::String(format!("{n}:00:00")),
        (Ok(n), "d") => toml::Value::String(format!("{n}-00:00:00")),
        _ => toml::Value::String(text.to_string()),
    }
}

/// `now`, `+30m` / `+2h` / `+1d` / `+90s`, or Unix seconds → Unix milliseconds.
fn parse_start(text: &str) -> anyhow::Result<u64> {
    let now = local::now_ms();
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(rel) = text.strip_prefix('+') {
        let (n, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = n
            .parse()
            .map_err(|_| anyhow::anyhow!("--start: `{text}` is not like +30m"))?;
        let ms = match unit {
            "s" => 1000,
            "" | "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => bail!("--start: unknown unit `{unit}` (use s, m, h or d)"),
        };
        return n
            .checked_mul(ms)
            .and_then(|ms| now.checked_add(ms))
            .with_context(|| format!("--start: `{text}` is too far in the future"));
    }
    let secs: u64 = text
        .parse()
        .map_err(|_| anyhow::anyhow!("--start: `{text}` is not now, +30m or Unix seconds"))?;
    secs.checked_mul(1000)
        .with_context(|| format!("--start: `{text}` is too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_as_the_help_shows() {
        let ms = |text: &str| beowulf_types::jobfile::parse_time_limit(&toml_value(text)).unwrap();
        assert_eq!(ms("2h"), 2 * 3_600_000);
        assert_eq!(ms("90s"), 90_000);
        assert_eq!(ms("30m"), 30 * 60_000);
        assert_eq!(ms("1d"), 86_400_000);
        assert_eq!(ms("45"), 45 * 60_000);
        assert_eq!(ms("1-02:00:00"), 26 * 3_600_000);
        assert!(beowulf_types::jobfile::parse_time_limit(&toml_value("2x")).is_err());
        assert!(parse_start("+99999999999999999d").is_err());
        assert!(parse_start("99999999999999999999").is_err());
    }
}
