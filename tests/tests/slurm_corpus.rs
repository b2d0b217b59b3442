//! The corpus of real batch scripts (`tests/slurm-corpus/`, verbatim copies from public
//! repositories listed in its SOURCES.toml): every script is accepted unchanged by sbatch's
//! reading of `#SBATCH` lines, or refused naming its line and directive — never silently
//! changed. Each script's outcome is kept in `expected.txt`, so a change in what we accept or
//! how we refuse shows in review; `BEOWULF_BLESS=1` rewrites it.
//!
//! What the accepted scripts do when they run is the local tier's `local_slurm_corpus.rs`.

use beowulf_types::jobfile::parse_batch_script;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    beowulf_tests::repo_root().join("tests/slurm-corpus")
}

/// Every script of SOURCES.toml, in order: its file name and text.
fn scripts() -> Vec<(String, String)> {
    let sources = std::fs::read_to_string(corpus().join("SOURCES.toml")).unwrap();
    let sources: toml::Value = toml::from_str(&sources).unwrap();
    sources["script"]
        .as_array()
        .expect("SOURCES.toml lists [[script]]s")
        .iter()
        .map(|s| {
            let file = s["file"].as_str().unwrap().to_string();
            for key in ["repo", "path", "what"] {
                assert!(s.get(key).is_some(), "{file}: SOURCES.toml names no {key}");
            }
            let text = std::fs::read_to_string(corpus().join("scripts").join(&file))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            (file, text)
        })
        .collect()
}

/// One line per script: accepted (with its warnings counted), or refused and why.
fn outcomes() -> BTreeMap<String, String> {
    scripts()
        .into_iter()
        .map(|(file, text)| {
            let outcome = match parse_batch_script(&file, &text, &BTreeMap::new()) {
                Ok(job) => format!(
                    "accepted: {} node(s), {} task(s), {} warning(s)",
                    job.spec.nodes,
                    job.spec.ntasks,
                    job.warnings.len()
                ),
                Err(e) => {
                    // A refusal names the line and the directive, or is about the script itself
                    // (line 0: its interpreter).
                    let names_directive =
                        e.line > 0 && e.field.as_deref().is_some_and(|f| f.starts_with("#SBATCH"));
                    assert!(
                        names_directive || (e.line == 0 && e.field.is_none()),
                        "{file}: a refusal that names no line and directive: {e}"
                    );
                    format!("refused: {e}")
                }
            };
            (file, outcome)
        })
        .collect()
}

#[test]
fn every_real_script_is_accepted_or_refused_naming_its_directive() {
    let outcomes = outcomes();
    assert!(
        outcomes.len() >= 40,
        "the corpus has {} scripts",
        outcomes.len()
    );
    let text: String = outcomes
        .iter()
        .map(|(file, outcome)| format!("{file}: {outcome}\n"))
        .collect();
    let accepted = outcomes
        .values()
        .filter(|o| o.starts_with("accepted"))
        .count();
    println!(
        "{accepted} of {} real scripts accepted unchanged",
        outcomes.len()
    );
    let expected_path = corpus().join("expected.txt");
    if std::env::var_os("BEOWULF_BLESS").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert!(
        expected == text,
        "the corpus's outcomes changed; review and run `BEOWULF_BLESS=1 cargo test -p \
         beowulf-tests --test slurm_corpus` to record them:\n{}",
        diff(&expected, &text)
    );
}

/// The lines of `new` that `old` lacks, and the other way round.
fn diff(old: &str, new: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    for line in &old_lines {
        if !new_lines.contains(line) {
            out.push_str(&format!("- {line}\n"));
        }
    }
    for line in &new_lines {
        if !old_lines.contains(line) {
            out.push_str(&format!("+ {line}\n"));
        }
    }
    out
}
