//! Local tier, issue 4 done-when 6: the agent API takes only agents with a certificate from the
//! cluster's CA. An agent whose certificate comes from another CA is refused by headnoded; the
//! cluster's own agents (mutual TLS, set up by `cluster init --local`) are served.

use beowulf_provision::ca::ClusterCa;
use beowulf_tests::{LocalCluster, bin_dir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn an_agent_with_a_certificate_from_another_ca_is_refused() {
    let cluster = LocalCluster::start(1, 10);
    let state = cluster.state.path();
    assert_eq!(
        cluster.nodes_json().len(),
        1,
        "the cluster's own agent is served over mTLS"
    );
    assert!(state.join("tls/ca.crt").is_file());

    // An impostor: trusts the head (the real CA) but presents a certificate of its own CA.
    let dir = tempfile::tempdir().unwrap();
    let rogue = ClusterCa::ensure(&dir.path().join("rogue-ca")).unwrap();
    rogue.ensure_identity("node9", &[]).unwrap();
    let (cert, key) = rogue.identity_paths("node9");
    let config = dir.path().join("computed.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"node9\"\nhead_addr_file = {:?}\nstate_dir = {:?}\ncgroup_name = \"rogue-{}\"\n\
             cgroup_favor_dynamic_moves = false\nlaunch_listen = \"127.0.0.1:0\"\n\
             [tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
            state.join("agent.addr"),
            dir.path().join("state"),
            std::process::id(),
            state.join("tls/ca.crt"),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = Command::new(bin_dir().join("computed"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("computed starts");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = String::new();
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("no session with the head"))
        {
            refused = line.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    eprintln!("rogue agent: {refused}");
    assert!(
        refused.contains("the head refused the session"),
        "the rogue agent never reported a refused session; its log:\n{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    let names: Vec<String> = cluster
        .nodes_json()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        ["node1"],
        "the rogue agent was registered: {refused}"
    );
}
