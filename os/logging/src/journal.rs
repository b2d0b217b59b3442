//! A tracing layer that writes each event to the journal in its native protocol: the line an
//! admin reads (`MESSAGE`, the event's fields inline as in text logs), its `PRIORITY`, and each
//! field again as a journal field of its own (`JOB=12`), so `journalctl -u headnoded JOB=12`
//! finds a job's lines and `journalctl -p warning` the problems.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

/// Where journald takes native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The most bytes of one entry: journald takes bigger ones only through a memfd; a log line
/// this long is cut (with its fields kept whole before it).
const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Sends events to a journal socket.
#[derive(Debug)]
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl JournalLayer {
    /// A layer writing to the journal at `path` as `identifier` (`SYSLOG_IDENTIFIER`).
    pub fn new(path: &Path, identifier: &str) -> std::io::Result<JournalLayer> {
        let socket = UnixDatagram::unbound()?;
        // Fails here, not at the first event, when there is no journal to write to.
        socket.connect(path)?;
        Ok(JournalLayer {
            socket,
            path: path.to_path_buf(),
            identifier: identifier.to_string(),
        })
    }
}

/// syslog's priority of a tracing level (the journal's `PRIORITY`).
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &tracing::field::Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.push((field.name().to_string(), value));
        }
    }
}

/// A field name as the journal takes it: upper-case letters, digits and `_`, not starting with
/// `_` (those are the journal's own) or a digit.
fn journal_name(name: &str) -> Option<String> {
    let name: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    let name = name.trim_start_matches('_');
    let reserved = matches!(
        name,
        "MESSAGE" | "PRIORITY" | "SYSLOG_IDENTIFIER" | "CODE_FILE" | "CODE_LINE" | "TARGET"
    );
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && !reserved)
        .then(|| name.to_string())
}

/// Appends `NAME=value` in the native protocol: as text when the value has no newline, else as
/// the name, a newline, the value's length (64-bit little-endian) and the value.
fn append(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
        entry.extend_from_slice(value.as_bytes());
    } else {
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
    }
    entry.push(b'\n');
}

/// The journal entry of an event.
fn entry(identifier: &str, metadata: &tracing::Metadata<'_>, fields: &Fields) -> Vec<u8> {
    let mut line = fields.message.clone();
    for (name, value) in &fields.others {
        let _ = write!(line, " {name}={value}");
    }
    let mut entry = Vec::with_capacity(256 + line.len());
    append(
        &mut entry,
        "PRIORITY",
        &priority(*metadata.level()).to_string(),
    );
    append(&mut entry, "SYSLOG_IDENTIFIER", identifier);
    append(&mut entry, "TARGET", metadata.target());
    if let Some(file) = metadata.file() {
        append(&mut entry, "CODE_FILE", file);
    }
    if let Some(number) = metadata.line() {
        append(&mut entry, "CODE_LINE", &number.to_string());
    }
    for (name, value) in &fields.others {
        if let Some(name) = journal_name(name) {
            append(&mut entry, &name, value);
        }
    }
    let room = MAX_ENTRY_BYTES.saturating_sub(entry.len() + 32);
    if line.len() > room {
        let mut cut = room;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str(" [cut]");
    }
    append(&mut entry, "MESSAGE", &line);
    entry
}

impl<S: tracing::Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let entry = entry(&self.identifier, event.metadata(), &fields);
        if self.socket.send(&entry).is_err() {
            // journald restarted: its socket is new. One retry, then the line is lost (a
            // logger never blocks or fails the daemon).
            let _ = self.socket.connect(&self.path);
            let _ = self.socket.send(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// An entry's `NAME=value` text fields.
    fn text_fields(datagram: &[u8]) -> Vec<(String, String)> {
        String::from_utf8_lossy(datagram)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn events_reach_the_journal_with_priority_message_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::new(&path, "headnoded").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(job = 12, node = "node3", "a task did not start");
        });
        let mut buf = vec![0u8; MAX_ENTRY_BYTES];
        let n = journal.recv(&mut buf).unwrap();
        let fields = text_fields(&buf[..n]);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("PRIORITY"), Some("4"));
        assert_eq!(get("SYSLOG_IDENTIFIER"), Some("headnoded"));
        assert_eq!(get("JOB"), Some("12"));
        assert_eq!(get("NODE"), Some("node3"));
        assert_eq!(
            get("MESSAGE"),
            Some("a task did not start job=12 node=node3")
        );
    }

    #[test]
    fn names_and_values_are_made_safe_for_the_journal() {
        assert_eq!(journal_name("job").as_deref(), Some("JOB"));
        assert_eq!(journal_name("error.kind").as_deref(), Some("ERROR_KIND"));
        assert_eq!(journal_name("_boot_id"), Some("BOOT_ID".to_string()));
        assert_eq!(journal_name("priority"), None, "the journal's own");
        assert_eq!(journal_name("9lives"), None);
        let mut entry = Vec::new();
        append(&mut entry, "MESSAGE", "two\nlines");
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, expected);
    }
}
