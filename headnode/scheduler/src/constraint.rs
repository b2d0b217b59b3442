//! Node feature constraints (Slurm's `--constraint`), the subset `a&b`, `a|b` and parentheses, with
//! `&` binding tighter than `|`. Parse errors name the byte position, so the head can point at it.

use std::collections::BTreeSet;
use std::fmt;

/// A parsed constraint: an expression over feature names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Constraint {
    Feature(String),
    And(Vec<Constraint>),
    Or(Vec<Constraint>),
}

/// Why a constraint does not parse, and where (byte offset into the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ConstraintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "constraint error at position {}: {}",
            self.position, self.message
        )
    }
}

impl std::error::Error for ConstraintError {}

impl Constraint {
    /// Parses `text`: features are letters, digits, `_`, `-`, `.` and `:`; spaces are ignored.
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let mut parser = Parser { text, at: 0 };
        let constraint = parser.or()?;
        parser.skip_spaces();
        match parser.peek() {
            None => Ok(constraint),
            Some(c) => Err(parser.error(format!("unexpected '{c}'"))),
        }
    }

    /// Whether a node with `features` satisfies the constraint.
    pub fn matches(&self, features: &BTreeSet<String>) -> bool {
        match self {
            Constraint::Feature(name) => features.contains(name),
            Constraint::And(all) => all.iter().all(|c| c.matches(features)),
            Constraint::Or(any) => any.iter().any(|c| c.matches(features)),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[Constraint], op: &str, wrap_or: bool| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    f.write_str(op)?;
                }
                if wrap_or && matches!(part, Constraint::Or(_)) {
                    write!(f, "({part})")?;
                } else {
                    write!(f, "{part}")?;
                }
            }
            Ok(())
        };
        match self {
            Constraint::Feature(name) => f.write_str(name),
            Constraint::And(all) => join(f, all, "&", true),
            Constraint::Or(any) => join(f, any, "|", false),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn skip_spaces(&mut self) {
        while let Some(c) = self.peek()
            && c.is_whitespace()
        {
            self.at += c.len_utf8();
        }
    }

    fn error(&self, message: String) -> ConstraintError {
        ConstraintError {
            position: self.at,
            message,
        }
    }

    fn or(&mut self) -> Result<Constraint, ConstraintError> {
        let mut parts = vec![self.and()?];
        loop {
            self.skip_spaces();
            if self.peek() != Some('|') {
                break;
            }
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Constraint::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Constraint, ConstraintError> {
        let mut parts = vec![self.atom()?];
        loop {
            self.skip_spaces();
            if self.peek() != Some('&') {
                break;
            }
            self.at += 1;
            parts.push(self.atom()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Constraint::And(parts)
        })
    }

    fn atom(&mut self) -> Result<Constraint, ConstraintError> {
        self.skip_spaces();
        match self.peek() {
            Some('(') => {
                self.at += 1;
                let inner = self.or()?;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    return Err(self.error("expected ')'".to_string()));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(c) if is_feature_char(c) => {
                let start = self.at;
                while let Some(c) = self.peek()
                    && is_feature_char(c)
                {
                    self.at += c.len_utf8();
                }
                Ok(Constraint::Feature(self.text[start..self.at].to_string()))
            }
            Some(c) => Err(self.error(format!("expected a feature name, found '{c}'"))),
            None => Err(self.error("expected a feature name, found the end".to_string())),
        }
    }
}

fn is_feature_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let c = Constraint::parse("a & b | c").unwrap();
        assert_eq!(c.to_string(), "a&b|c");
        assert!(c.matches(&features(&["a", "b"])));
        assert!(c.matches(&features(&["c"])));
        assert!(!c.matches(&features(&["a"])));
        let c = Constraint::parse("a&(b|c)").unwrap();
        assert!(c.matches(&features(&["a", "c"])));
        assert!(!c.matches(&features(&["c"])));
        assert_eq!(Constraint::parse(&c.to_string()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("a&", 2),
            ("a||b", 2),
            ("(a|b", 4),
            ("a b", 2),
            ("", 0),
            ("a&$", 2),
        ];
        for (text, position) in cases {
            let error = Constraint::parse(text).unwrap_err();
            assert_eq!(error.position, position, "{text}: {error}");
        }
    }
}
