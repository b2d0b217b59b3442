//! TOML data files read strictly: every error names the file, the line and, where known, the field.
//!
//! One error type and one set of helpers for every file a person writes: job files, `cluster.toml`,
//! playbooks and the daemons' configs.

use serde::de::DeserializeOwned;
use std::ops::Range;
use std::path::Path;

/// A data file (job file, inventory, playbook) that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {}{message}", if *line > 0 { format!(":{line}") } else { String::new() }, field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct SourceError {
    /// The file as the user named it (a job file's name comes from the client: it is only printed).
    pub file: String,
    /// 1-based line of the offending key or value; 0 when the error is about the whole file.
    pub line: usize,
    pub field: Option<String>,
    pub message: String,
}

impl SourceError {
    /// An error at byte `span` of `text`, about `field`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, field: &str, message: String) -> Self {
        Self {
            file: file.display().to_string(),
            line: line_of(text, span.start),
            field: Some(field.to_string()),
            message,
        }
    }

    /// An error on the `nth` (0-based) line containing `needle`, about `field`: for problems found
    /// after parsing, when the value's position is no longer known.
    pub fn near(
        file: &Path,
        text: &str,
        needle: &str,
        nth: usize,
        field: &str,
        message: String,
    ) -> Self {
        Self {
            file: file.display().to_string(),
            line: line_containing(text, needle, nth),
            field: Some(field.to_string()),
            message,
        }
    }

    /// A file that cannot be read.
    pub fn unreadable(file: &Path, err: &std::io::Error) -> Self {
        Self {
            file: file.display().to_string(),
            line: 1,
            field: None,
            message: format!("cannot read the file: {err}; check the path and its permissions"),
        }
    }
}

/// Parses TOML into `T` (`file` names it in errors), turning syntax, type and unknown-field errors into a [`SourceError`].
pub fn from_toml<T: DeserializeOwned>(
    file: impl std::fmt::Display,
    text: &str,
) -> Result<T, SourceError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let start = e.span().map(|s| s.start).unwrap_or(0);
        SourceError {
            file: file.to_string(),
            line: line_of(text, start),
            field: e.span().and_then(|s| key_at(text, s.start)),
            message: e.message().trim().to_string(),
        }
    })
}

/// A TOML error as `line N: message`, for the daemons' config files.
pub fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let line = error.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    format!("line {line}: {}", error.message().trim())
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// 1-based line of the `nth` (0-based) occurrence of `needle`; 1 when there is none.
pub fn line_containing(text: &str, needle: &str, nth: usize) -> usize {
    text.match_indices(needle)
        .nth(nth)
        .map_or(1, |(offset, _)| line_of(text, offset))
}

/// 1-based line where a top-level `field = ...` is written, for errors found after parsing (for
/// example a request larger than the cluster); line 1 when the field is absent (a default was used).
pub fn line_of_field(text: &str, field: &str) -> usize {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('[') {
            break;
        }
        if let Some((key, _)) = line.split_once('=')
            && key.trim() == field
        {
            return index + 1;
        }
    }
    1
}

/// The key written on the line holding `offset`, if that line is `key = value`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Small {
        name: String,
        count: u32,
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let err =
            from_toml::<Small>("x.toml", "name = \"a\"\ncount = 1\ncolour = 2\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.field.as_deref(), Some("colour"));
        assert!(
            err.to_string().starts_with("x.toml:3: field `colour`:"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_line() {
        let err = from_toml::<Small>("x.toml", "name = \"a\"\ncount = \"many\"\n").unwrap_err();
        assert_eq!((err.line, err.field.as_deref()), (2, Some("count")));
    }

    #[test]
    fn an_error_about_the_whole_file_has_no_line() {
        let err = SourceError {
            file: "job.toml".into(),
            line: 0,
            field: None,
            message: "too big".into(),
        };
        assert_eq!(err.to_string(), "job.toml: too big");
    }

    #[test]
    fn the_nth_occurrence_names_its_line() {
        let text = "a = \"x\"\nb = \"y\"\nc = \"x\"\n";
        assert_eq!(line_containing(text, "\"x\"", 0), 1);
        assert_eq!(line_containing(text, "\"x\"", 1), 3);
        assert_eq!(line_containing(text, "\"z\"", 0), 1);
    }
}
