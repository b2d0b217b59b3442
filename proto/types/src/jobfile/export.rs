//! Which of the submitter's environment a job gets: sbatch's `--export`, the job file's
//! `export = "NONE"`.
//!
//! `ALL` (the default): all of it. `NONE`: only its `SLURM_*` variables. A list of `NAME` (taken
//! from the submitter's environment) and `NAME=value` (set): those and the `SLURM_*` ones, or,
//! with `ALL` in the list, all of it with those set.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most names a list may hold: far more than any script lists, few enough to keep the record small.
const MAX_EXPORT_ITEMS: usize = 1024;

/// A job's `--export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Export {
    /// The whole submitter's environment (`ALL`), or only its `SLURM_*` variables.
    pub all: bool,
    /// Variables taken from the submitter's environment.
    pub names: Vec<String>,
    /// Variables set to a value.
    pub set: BTreeMap<String, String>,
}

impl Export {
    /// The environment a job submitted from `env` gets.
    pub fn apply(&self, env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = env
            .iter()
            .filter(|(k, _)| self.all || k.starts_with("SLURM_") || self.names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.extend(self.set.clone());
        out
    }
}

/// `ALL`, `NONE`, or a comma-separated list of `NAME` and `NAME=value` (with `ALL` or `NIL` in it).
pub fn parse_export(text: &str) -> Result<Export, String> {
    let text = text.trim();
    match text {
        "ALL" => {
            return Ok(Export {
                all: true,
                ..Export::default()
            });
        }
        "NONE" | "NIL" => return Ok(Export::default()),
        "" => return Err("names nothing: give ALL, NONE or a list of variables".into()),
        _ => {}
    }
    let mut export = Export::default();
    for (i, item) in text.split(',').enumerate() {
        if i >= MAX_EXPORT_ITEMS {
            return Err(format!("lists more than {MAX_EXPORT_ITEMS} variables"));
        }
        match item.split_once('=') {
            _ if item == "ALL" => export.all = true,
            _ if item == "NIL" || item == "NONE" => {}
            Some((name, value)) => {
                check_name(name)?;
                export.set.insert(name.to_string(), value.to_string());
            }
            None => {
                check_name(item)?;
                export.names.push(item.to_string());
            }
        }
    }
    Ok(export)
}

/// An environment variable's name: letters, digits and `_`, not starting with a digit.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a variable name (letters, digits and _)",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("HOME", "/home/ada"), ("PATH", "/bin"), ("SLURM_CONF", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_none_and_lists_choose_the_jobs_environment() {
        let all = parse_export("ALL").unwrap().apply(&env());
        assert_eq!(all, env());
        let none = parse_export("NONE").unwrap().apply(&env());
        assert_eq!(none.keys().collect::<Vec<_>>(), ["SLURM_CONF"]);
        let list = parse_export("PATH,OMP_NUM_THREADS=4")
            .unwrap()
            .apply(&env());
        assert_eq!(
            list.keys().collect::<Vec<_>>(),
            ["OMP_NUM_THREADS", "PATH", "SLURM_CONF"]
        );
        let with_all = parse_export("ALL,HOME=/scratch").unwrap().apply(&env());
        assert_eq!(with_all["HOME"], "/scratch");
        assert_eq!(with_all.len(), 3);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "1X", "A-B=1", "PATH,,", "=1"] {
            assert!(parse_export(bad).is_err(), "{bad}");
        }
    }
}
