//! Reading TOML data files strictly: every error names the file, the line and, where known, the field.

use serde::de::DeserializeOwned;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A data file (playbook, inventory) that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {}{message}", file.display(), field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct SourceError {
    pub file: PathBuf,
    /// 1-based line of the offending key or value (1 when the file cannot be read at all).
    pub line: usize,
    pub field: Option<String>,
    pub message: String,
}

impl SourceError {
    /// An error at byte `span` of `text`, about `field`.
    pub fn at(file: &Path, text: &str, span: Range<usize>, field: &str, message: String) -> Self {
        Self {
            file: file.to_path_buf(),
            line: line_of(text, span.start),
            field: Some(field.to_string()),
            message,
        }
    }

    /// A file that cannot be read.
    pub fn unreadable(file: &Path, err: &std::io::Error) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 1,
            field: None,
            message: format!("cannot read the file: {err}; check the path and its permissions"),
        }
    }
}

/// Parses TOML into `T`, turning syntax, type and unknown-field errors into a `SourceError`.
pub fn from_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, SourceError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let start = e.span().map(|s| s.start).unwrap_or(0);
        SourceError {
            file: file.to_path_buf(),
            line: line_of(text, start),
            field: e.span().and_then(|s| key_at(text, s.start)),
            message: e.message().trim().to_string(),
        }
    })
}

/// Reads and parses a TOML file.
pub fn load_toml<T: DeserializeOwned>(file: &Path) -> Result<(T, String), SourceError> {
    let text = std::fs::read_to_string(file).map_err(|e| SourceError::unreadable(file, &e))?;
    let value = from_toml(file, &text)?;
    Ok((value, text))
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
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
        let err = from_toml::<Small>(Path::new("x.toml"), "name = \"a\"\ncount = 1\ncolour = 2\n")
            .unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.field.as_deref(), Some("colour"));
        assert!(
            err.to_string().starts_with("x.toml:3: field `colour`:"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_line() {
        let err = from_toml::<Small>(Path::new("x.toml"), "name = \"a\"\ncount = \"many\"\n")
            .unwrap_err();
        assert_eq!((err.line, err.field.as_deref()), (2, Some("count")));
    }
}
