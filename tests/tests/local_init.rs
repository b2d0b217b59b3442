//! Local tier, issue 4: `cluster init --inventory` through a real headnoded, which drives the
//! provisioning engine over real SSH (an sshd of this test on 127.0.0.1) and streams the run to
//! the CLI: plan, apply, a second run that changes nothing, a failure naming the step and the
//! nodes, `--resume`, `--watch` from another shell, and root only.

use beowulf_tests::sshd::start_sshd;
use beowulf_tests::{LocalCluster, text};
use std::path::Path;

const NOBODY: u32 = 65534;

/// A playbook that writes a marker per node and a gate that fails while `blocked` exists.
const DEMO: &str = r#"title = "Demo: a marker file on every node"

[[step]]
id = "marker"
title = "the node's marker file"
scope = "nodes"
check = [{ file = "{{ vars.marker_dir }}/{{ node.name }}.marker", content = "provisioned {{ node.name }}\n" }]

[[step]]
id = "gate"
title = "nothing blocks provisioning"
scope = "nodes"
check = [{ run = "test ! -e {{ vars.marker_dir }}/blocked" }]
apply = [{ fail = "remove {{ vars.marker_dir }}/blocked" }]
"#;

fn inventory(dir: &Path, sshd: &beowulf_tests::sshd::Sshd) -> std::path::PathBuf {
    let d = sshd.dir.path();
    let known_hosts = d.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_pub),
    )
    .unwrap();
    let mut text = format!(
        "[ssh]\nuser = \"root\"\nkey = \"{}\"\nknown_hosts = \"{}\"\nport = {}\n[head]\ngige = \"10.77.0.254\"\nprefix = 24\n",
        d.join("id_ed25519").display(),
        known_hosts.display(),
        sshd.port
    );
    // Two nodes with their own addresses, both reached through the one sshd.
    for (node, address) in [("node1", "127.0.0.1"), ("node2", "127.0.0.2")] {
        text.push_str(&format!(
            "[[node]]\nname = \"{node}\"\ngige = {{ address = \"{address}\", netdev = \"lo\" }}\nssh = {{ address = \"127.0.0.1\" }}\n"
        ));
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn headnoded_provisions_an_inventory_streams_the_run_and_resumes_after_a_failure() {
    let sshd = start_sshd();
    let playbooks = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    std::fs::write(playbooks.path().join("demo.toml"), DEMO).unwrap();
    let policy = format!(
        "[provision]\nplaybooks = {:?}\nrun = [\"demo\"]\nvars = {{ marker_dir = {:?} }}\n",
        playbooks.path(),
        markers.path()
    );
    let cluster = LocalCluster::start_with_policy(1, 10, Some(&policy));
    let inv = inventory(playbooks.path(), &sshd);
    let inv = inv.to_str().unwrap();
    let marker = |node: &str| markers.path().join(format!("{node}.marker"));

    // --plan lists every step as a change and changes nothing.
    let out = cluster.cluster(&["init", "--inventory", inv, "--plan"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("would change"), "{stdout}");
    assert!(
        stdout.contains("node1") && stdout.contains("node2"),
        "{stdout}"
    );
    assert!(!marker("node1").exists(), "--plan changed something");

    // Apply: both nodes get their marker.
    let out = cluster.cluster(&["init", "--inventory", inv]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("changed"), "{stdout}");
    for node in ["node1", "node2"] {
        assert_eq!(
            std::fs::read_to_string(marker(node)).unwrap(),
            format!("provisioned {node}\n")
        );
    }

    // Again: nothing to do, and it says so; --plan on a provisioned cluster lists no changes.
    let out = cluster.cluster(&["init", "--inventory", inv]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("nothing changed: every step was already satisfied"),
        "{stdout}"
    );
    let out = cluster.cluster(&["init", "--inventory", inv, "--plan"]);
    assert!(
        text(&out.stdout).contains("plan: nothing to change"),
        "{}",
        text(&out.stdout)
    );

    // A failure stops the run with an error naming the step and the nodes.
    std::fs::remove_file(marker("node2")).unwrap();
    std::fs::write(markers.path().join("blocked"), "").unwrap();
    let out = cluster.cluster(&["init", "--inventory", inv]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("demo/gate") && stderr.contains("node1") && stderr.contains("node2"),
        "{stderr}"
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(
        marker("node2").exists(),
        "the step before the failure did not run"
    );

    // Another shell can watch the (last) run.
    let out = cluster.cluster(&["init", "--watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("demo/gate"),
        "{}",
        text(&out.stderr)
    );

    // After the fix, --resume finishes without redoing the completed step.
    std::fs::remove_file(markers.path().join("blocked")).unwrap();
    std::fs::remove_file(marker("node1")).unwrap();
    let out = cluster.cluster(&["init", "--inventory", inv, "--resume"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        !marker("node1").exists(),
        "--resume redid a step an earlier run completed:\n{stdout}"
    );

    // Only root provisions.
    let out = cluster.cluster_as(NOBODY, NOBODY, &["init", "--inventory", inv]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("only root"),
        "{}",
        text(&out.stderr)
    );
}
