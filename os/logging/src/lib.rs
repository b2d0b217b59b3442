//! How the daemons log: natively to the journal under systemd, plain text elsewhere.
//!
//! ```text
//!  stderr is the journal's stream (JOURNAL_STREAM names its device and inode) ─▶ journald's
//!    native protocol (`journal.rs`): PRIORITY from the level, MESSAGE the line with its fields
//!    inline, each field again as JOB=, NODE=, RUN=, ... (`journalctl -u headnoded JOB=12`), no
//!    timestamp or colour of ours
//!  else ─▶ text lines on stderr with a UTC timestamp; colours only on a terminal (never in a
//!    log file, where escape codes are noise)
//!  level: RUST_LOG when set (a developer's override), else the config's `log_level`
//! ```

#![forbid(unsafe_code)]

mod journal;

pub use journal::JournalLayer;

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A daemon's log level when its config names none: what an admin wants to read in the journal
/// (starts, ends, refusals), not every request.
pub const DEFAULT_LEVEL: &str = "info";

/// Whether `level` is a level or filter the daemons take (`info`, `debug`,
/// `info,beowulf_headnode::api=debug`); the reason when it is not.
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level).map(|_| ()).map_err(|e| {
        format!(
            "`{level}` is not a log level or filter ({e}); use error, warn, info, debug or trace"
        )
    })
}

/// Where the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The journal, natively.
    Journal,
    /// Text on a terminal (with colours).
    Terminal,
    /// Text into a file or a pipe (without colours).
    Plain,
}

/// Where this process's log goes: the journal when its stderr is the journal's stream.
pub fn destination() -> Destination {
    let journal = std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|stream| stderr_is(&stream));
    if journal {
        Destination::Journal
    } else if std::io::stderr().is_terminal() {
        Destination::Terminal
    } else {
        Destination::Plain
    }
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`): systemd sets it for a
/// service whose output goes to the journal, and a child that inherited the variable but not
/// the stream must not take it as its own.
fn stderr_is(stream: &str) -> bool {
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(meta.dev()) && inode.parse() == Ok(meta.ino())
}

/// Starts logging for the daemon `name` at `level` (the config's; `RUST_LOG` wins when set).
/// Falls back to text when the journal cannot be reached.
pub fn init(name: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let registry = tracing_subscriber::registry().with(filter);
    match destination() {
        Destination::Journal => {
            match JournalLayer::new(std::path::Path::new(journal::JOURNAL_SOCKET), name) {
                Ok(journal) => registry.with(journal).init(),
                Err(_) => registry
                    .with(
                        tracing_subscriber::fmt::layer()
                            .with_writer(std::io::stderr)
                            .with_ansi(false)
                            .without_time(),
                    )
                    .init(),
            }
        }
        Destination::Terminal | Destination::Plain => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(destination() == Destination::Terminal),
            )
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters_are_checked() {
        assert!(check_level("info").is_ok());
        assert!(check_level("warn,beowulf_headnode::api=debug").is_ok());
        let e = check_level("beowulf=shouting").unwrap_err();
        assert!(e.contains("`beowulf=shouting` is not a log level"), "{e}");
    }

    #[test]
    fn only_the_stream_journal_stream_names_is_the_journal() {
        let meta = std::fs::metadata("/proc/self/fd/2").unwrap();
        assert!(stderr_is(&format!("{}:{}", meta.dev(), meta.ino())));
        assert!(!stderr_is(&format!("{}:{}", meta.dev(), meta.ino() + 1)));
        assert!(!stderr_is("not a stream"));
    }
}
