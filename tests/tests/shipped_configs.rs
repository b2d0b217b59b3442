//! Every configuration file the project ships parses with the daemons' own strict parsers.

use beowulf_computed::config::AgentConfig;
use beowulf_headnode::config::HeadConfig;
use beowulf_provision::ClusterInventory;
use beowulf_provision::inventory::Role;
use beowulf_tests::repo_root;

#[test]
fn every_shipped_config_parses() {
    let dir = repo_root().join("configs");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        match path.file_name().and_then(|n| n.to_str()) {
            Some("headnoded.toml") => {
                HeadConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            }
            Some("computed.toml") => {
                AgentConfig::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            }
            Some("cluster.toml") => {
                let inventory =
                    ClusterInventory::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    inventory
                        .nodes
                        .iter()
                        .any(|n| n.roles.contains(&Role::Login)),
                    "the example inventory shows a login node"
                );
            }
            _ => panic!(
                "{} is not a known config: add it to this test",
                path.display()
            ),
        }
        parsed += 1;
    }
    assert_eq!(parsed, 3);
}

#[test]
fn every_example_job_file_parses() {
    let dir = repo_root().join("examples");
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        beowulf_types::parse_job_file(&path.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        parsed += 1;
    }
    assert!(parsed >= 2, "examples/*.toml: only {parsed} found");
}

#[test]
fn configs_refuse_unknown_fields_naming_the_line() {
    let path = std::path::Path::new("headnoded.toml");
    let err = HeadConfig::parse(
        path,
        "state_dir = \"/x\"\nsocket = \"/x/s\"\nheartbeat_timeout = 3\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    assert!(err.to_string().contains("heartbeat_timeout"), "{err}");
    let err = AgentConfig::parse(path, "node_name = \"n\"\nstate_dir = \"/x\"\n").unwrap_err();
    assert!(err.to_string().contains("head"), "{err}");
}
