//! Runs every scenario in `tests/scenarios/` under its policies, with the invariant checker after every
//! pass, and fails on any expectation not met (each failure names the scenario file and line).

use beowulf_sim::scenario;
use std::path::Path;

#[test]
fn every_scenario_meets_its_expectations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "scn"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut runs = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let parsed = scenario::parse(&name, &text).unwrap_or_else(|error| panic!("{error}"));
        assert!(
            !parsed.expectations.is_empty(),
            "{name} has no expectations"
        );
        match scenario::run(&parsed) {
            Ok(outcomes) => runs += outcomes.len(),
            Err(error) => failures.push(error.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(files.len() >= 4, "only {} scenarios", files.len());
    // Every scenario here compares both policies.
    assert_eq!(runs, 2 * files.len());
}
