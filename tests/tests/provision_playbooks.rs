//! Every shipped playbook parses, names only templates and builtins that exist, and renders for a
//! realistic inventory (soft-RoCE, HCA and gigabit-only nodes; LDAP and NIS) without a template error.

use beowulf_provision::builtin::{AgentRegister, FixedProbe};
use beowulf_provision::engine::{Engine, Mode, RunOptions, Start};
use beowulf_provision::transport::{ExecOutput, RecordingConnector, RecordingTransport};
use beowulf_provision::{
    BuiltinRegistry, ClusterInventory, INIT_PLAYBOOKS, Outcome, Playbook, Templates,
};
use beowulf_tests::repo_root;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const INVENTORY: &str = r#"
[ssh]
user = "root"
key = "/var/lib/beowulf/ssh/id_ed25519"
known_hosts = "/var/lib/beowulf/ssh/known_hosts"
[head]
gige = "10.77.0.254"
ib = "10.78.0.254"
prefix = 24
[[node]]
name = "node1"
gige = { address = "10.77.0.1", netdev = "eth0" }
ib = { kind = "soft-roce", netdev = "eth1", address = "10.78.0.1" }
[[node]]
name = "node2"
gige = { address = "10.77.0.2", netdev = "eth0" }
ib = { kind = "hca", netdev = "ib0", address = "10.78.0.2" }
[[node]]
name = "node3"
gige = { address = "10.77.0.3", netdev = "eth0" }
[users]
backend = "BACKEND"
[[users.group]]
name = "hpc"
gid = 10000
members = ["alice"]
[[users.user]]
name = "alice"
uid = 10001
gid = 10000
"#;

fn shipped() -> (Vec<Playbook>, Templates) {
    let dir = repo_root().join("playbooks");
    let all = Playbook::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    let mut sorted_init = INIT_PLAYBOOKS.to_vec();
    sorted_init.sort_unstable();
    assert_eq!(
        names, sorted_init,
        "playbooks/ must hold exactly the init playbooks"
    );
    let playbooks = Playbook::load_named(&dir, INIT_PLAYBOOKS).unwrap_or_else(|e| panic!("{e}"));
    let templates = Templates::load(&dir.join("templates")).unwrap_or_else(|e| panic!("{e}"));
    (playbooks, templates)
}

#[test]
fn every_shipped_playbook_parses_and_names_existing_templates_and_builtins() {
    let (playbooks, templates) = shipped();
    let engine = Engine::new(templates, BuiltinRegistry::standard());
    engine
        .validate(&playbooks)
        .unwrap_or_else(|e| panic!("{e}"));
    let steps: usize = playbooks.iter().map(|p| p.steps.len()).sum();
    assert!(steps >= 40, "only {steps} steps");
    // Every template file is used by some step (no stale templates).
    let (_, templates) = shipped();
    for name in templates.names() {
        assert!(
            playbooks
                .iter()
                .flat_map(|p| &p.steps)
                .flat_map(|s| s.actions())
                .any(|a| a.template() == Some(name)),
            "template {name} is used by no step"
        );
    }
}

#[test]
fn the_shipped_agent_unit_matches_computed_service() {
    let shipped = std::fs::read_to_string(repo_root().join("computed/computed.service")).unwrap();
    let template =
        std::fs::read_to_string(repo_root().join("playbooks/templates/computed.service")).unwrap();
    assert_eq!(
        template, shipped,
        "playbooks/templates/computed.service drifted from computed/computed.service"
    );
}

/// A fake node on which nothing is done yet but the builtins' probes answer sensibly.
fn fresh(name: &str) -> RecordingTransport {
    RecordingTransport::new(name)
        .on(".", ExecOutput::fail(1, "not yet"))
        .on_fn(r"^date \+%s\.%N$", |_, _| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            ExecOutput::ok(format!("{}.{:09}\n", now.as_secs(), now.subsec_nanos()))
        })
        .on(
            "^getent (passwd|group)$",
            ExecOutput::ok("root:x:0:0::/root:/bin/bash\n"),
        )
        .on(
            "^ldapsearch .* -b dc=",
            ExecOutput::fail(32, "No such object"),
        )
        .on("/sys/class/infiniband", ExecOutput::ok(""))
        .on_fn(r"^test \S+ != none$", |cmd, _| {
            if cmd == "test none != none" {
                ExecOutput::fail(1, "")
            } else {
                ExecOutput::ok("")
            }
        })
        .on_fn("^for p in ", |cmd, _| {
            let list = cmd
                .trim_start_matches("for p in ")
                .split("; do")
                .next()
                .unwrap_or("");
            ExecOutput::ok(list.split_whitespace().collect::<Vec<_>>().join("\n"))
        })
}

#[tokio::test]
async fn every_shipped_step_renders_for_a_real_inventory_in_plan_mode() {
    let (playbooks, templates) = shipped();
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("computed");
    std::fs::write(&binary, b"\x7fELF").unwrap();
    for f in [
        "ca.crt",
        "node1.crt",
        "node1.key",
        "node2.crt",
        "node2.key",
        "node3.crt",
        "node3.key",
    ] {
        std::fs::write(tmp.path().join(f), f).unwrap();
    }
    let vars = BTreeMap::from([
        ("computed_binary".to_string(), binary.display().to_string()),
        ("tls_dir".to_string(), tmp.path().display().to_string()),
        ("agent_port".to_string(), "7090".to_string()),
    ]);
    let nobody_registered = AgentRegister::new(Arc::new(FixedProbe::default()));
    let builtins = BuiltinRegistry::standard().with(Arc::new(nobody_registered));
    let engine = Engine::new(templates, builtins).with_vars(vars);
    for backend in ["ldap", "nis"] {
        let inv = ClusterInventory::parse(
            Path::new("cluster.toml"),
            &INVENTORY.replace("BACKEND", backend),
        )
        .unwrap();
        let mut connector = RecordingConnector::default().with(fresh("head"));
        for n in ["node1", "node2", "node3"] {
            connector = connector.with(fresh(n));
        }
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let options = RunOptions {
            mode: Mode::Plan,
            start: Start::Fresh,
            state_file: None,
        };
        let report = engine
            .run(&playbooks, &inv, Arc::new(connector.clone()), &options, tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for r in &report.results {
            assert!(
                matches!(
                    r.outcome,
                    Outcome::WouldChange { .. } | Outcome::Skipped { .. } | Outcome::Satisfied
                ),
                "{backend}: {} on {}: {:?}",
                r.step,
                r.node,
                r.outcome
            );
        }
        let would = |step: &str, node: &str| {
            report.results.iter().any(|r| {
                r.step == step && r.node == node && matches!(r.outcome, Outcome::WouldChange { .. })
            })
        };
        let other = if backend == "ldap" {
            "users-nis"
        } else {
            "users-ldap"
        };
        assert!(
            would(&format!("users-{backend}/nsswitch"), "node1"),
            "{backend}"
        );
        assert!(!would(&format!("{other}/nsswitch"), "node1"), "{backend}");
        assert!(would("infiniband/rxe-link", "node1") && !would("infiniband/rxe-link", "node2"));
        assert!(
            would("infiniband/subnet-manager", "node2")
                && !would("infiniband/port-active", "node3")
        );
        assert!(
            would("infiniband/fabric-present", "node3")
                && !would("infiniband/fabric-present", "node1")
        );
        assert!(would("agent/binary", "node3") && would("nfs/ganesha-exports", "head"));
        // Plan mode changed nothing: only checks ran.
        for node in connector.nodes.values() {
            assert!(
                node.state().files.is_empty(),
                "plan mode wrote files on {node:?}"
            );
        }
    }
}

/// The agent playbook's computed.toml renders into a configuration computed accepts, with the
/// admin's reserved CPUs when headnoded.toml's provision vars give them and none by default.
#[test]
fn the_rendered_agent_config_parses_with_and_without_reserved_cpus() {
    use beowulf_computed::config::AgentConfig;
    let (_, templates) = shipped();
    let inv = ClusterInventory::parse(
        Path::new("cluster.toml"),
        &INVENTORY.replace("BACKEND", "ldap"),
    )
    .unwrap();
    let render = |mut vars: BTreeMap<String, String>| {
        // A run variable headnoded always gives the agent playbook.
        vars.insert("agent_port".into(), "7090".into());
        let node2 = beowulf_provision::NodeName::new("node2");
        let context = beowulf_provision::context::node_context(&inv, &node2, &vars);
        let text = templates
            .render_file("computed.toml", &context)
            .unwrap_or_else(|e| panic!("{e}"));
        AgentConfig::parse(Path::new("/etc/beowulf/computed.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let plain = render(BTreeMap::new());
    assert_eq!(plain.node_name, "node2");
    assert!(plain.reserved_cpus.is_empty());
    let reserving = render(BTreeMap::from([(
        "agent_reserved_cpus".to_string(),
        "0, 1".to_string(),
    )]));
    assert_eq!(reserving.reserved_cpus, vec![0, 1]);
}
