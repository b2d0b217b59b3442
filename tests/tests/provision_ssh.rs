//! SshTransport against a REAL sshd on 127.0.0.1 (a random free port, own config and host key in a temp
//! dir): exec, put_file, read_file, a tiny playbook run twice (the second run changes nothing), and
//! host-key pinning: a matching key is accepted, a wrong or unknown one refused, naming the node.
//!
//! Needs openssh-server (`scripts/test.sh` installs it) and root (sshd's privilege separation).

use beowulf_provision::engine::{Engine, Mode, RunOptions, Start};
use beowulf_provision::transport::{Connector, InventoryConnector};
use beowulf_provision::{
    BuiltinRegistry, ClusterInventory, Outcome, Playbook, Templates, TransportError,
};
use beowulf_tests::sshd::{Sshd, keygen, start_sshd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An inventory with one node, node1, at the sshd; `host_key` pinned (or not) and `known_hosts` lines.
fn inventory(sshd: &Sshd, host_key: Option<&str>, known_hosts: &str) -> ClusterInventory {
    let d = sshd.dir.path();
    let kh = d.join("known_hosts");
    std::fs::write(&kh, known_hosts).unwrap();
    let host_key = host_key
        .map(|k| format!("host_key = \"{k}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "[ssh]\nuser = \"root\"\nkey = \"{key}\"\nknown_hosts = \"{kh}\"\nport = {port}\n[head]\ngige = \"10.77.0.254\"\nprefix = 24\n[[node]]\nname = \"node1\"\ngige = {{ address = \"127.0.0.1\", netdev = \"lo\" }}\n{host_key}",
        key = d.join("id_ed25519").display(),
        kh = kh.display(),
        port = sshd.port,
    );
    ClusterInventory::parse(Path::new("cluster.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

async fn connect(
    inv: ClusterInventory,
) -> Result<Arc<dyn beowulf_provision::Transport>, TransportError> {
    InventoryConnector::new(inv)?.connect(&"node1".into()).await
}

#[tokio::test]
async fn ssh_transport_runs_commands_and_moves_files_on_a_real_sshd() {
    let sshd = start_sshd();
    let t = connect(inventory(&sshd, Some(&sshd.host_pub), ""))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = t.exec("echo hi; echo oops >&2; exit 3").await.unwrap();
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (3, "hi\n", "oops\n")
    );

    let target: PathBuf = sshd.dir.path().join("put/dir/x.conf");
    let path = target.to_str().unwrap();
    assert_eq!(t.read_file(path).await.unwrap(), None);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    t.put_file(path, &bytes, 0o600).await.unwrap();
    assert_eq!(t.read_file(path).await.unwrap(), Some(bytes));
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o600
    );
}

#[tokio::test]
async fn a_playbook_runs_over_ssh_and_a_second_run_changes_nothing() {
    let sshd = start_sshd();
    let kh = format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_pub);
    let inv = inventory(&sshd, None, &kh);
    let d = sshd.dir.path().display().to_string();
    let text = format!(
        r#"
title = "tiny"
[[step]]
id = "marker"
title = "a marker"
scope = "nodes"
check = [{{ run = "test -e {d}/marker" }}]
apply = [{{ run = "touch {d}/marker" }}]
[[step]]
id = "conf"
title = "a rendered file"
scope = "nodes"
check = [{{ file = "{d}/etc/tiny.conf", content = "node {{{{ node.name }}}} at {{{{ node.address }}}}\n", mode = "0640" }}]
"#
    );
    let playbook = Playbook::parse(Path::new("tiny.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::new(Templates::empty(), BuiltinRegistry::standard());
    let options = RunOptions {
        mode: Mode::Apply,
        start: Start::Fresh,
        state_file: Some(sshd.dir.path().join("state.json")),
    };
    for (round, want) in [(1, Outcome::Changed), (2, Outcome::Satisfied)] {
        let connector = Arc::new(InventoryConnector::new(inv.clone()).unwrap());
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let report = engine
            .run(
                std::slice::from_ref(&playbook),
                &inv,
                connector,
                &options,
                tx,
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            report.results.iter().all(|r| r.outcome == want),
            "round {round}: {report:?}"
        );
    }
    let conf = std::fs::read_to_string(sshd.dir.path().join("etc/tiny.conf")).unwrap();
    assert_eq!(conf, "node node1 at 127.0.0.1\n");
}

#[tokio::test]
async fn wrong_or_unknown_host_keys_are_refused_naming_the_node() {
    let sshd = start_sshd();
    let other = keygen(&sshd.dir.path().join("impostor_ed25519"));
    let err = connect(inventory(&sshd, Some(&other), ""))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::HostKeyChanged { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("node1") && msg.contains("CHANGED") && msg.contains("known_hosts"),
        "{msg}"
    );

    let err = connect(inventory(&sshd, None, "")).await.unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("node1"), "{err}");

    // The same key recorded for another port does not count.
    let err = connect(inventory(
        &sshd,
        None,
        &format!("127.0.0.1 {}\n", sshd.host_pub),
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(err, TransportError::UnknownHostKey { .. }),
        "{err}"
    );
}
