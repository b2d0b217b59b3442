//! Local tier, issue 4 done-when 6: the agent API takes only agents with a certificate from the
//! cluster's CA, each under the node name its certificate is for. An agent whose certificate comes
//! from another CA is refused by headnoded, and so is one with the cluster CA's certificate of
//! another node; the cluster's own agents (mutual TLS, set up by `cluster init --local`) are served.

use beowulf_provision::ca::ClusterCa;
use beowulf_tests::{LocalCluster, bin_dir};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts an agent registering as `node` with `cert_name`'s identity from the CA in `ca_dir`; returns
/// its log line saying the head refused it ("" if it never did within 5 s).
fn refused_agent(
    cluster: &LocalCluster,
    dir: &Path,
    node: &str,
    ca_dir: &Path,
    cert_name: &str,
) -> String {
    let state = cluster.state.path();
    let ca = ClusterCa::ensure(ca_dir).unwrap();
    ca.ensure_identity(cert_name, &[]).unwrap();
    let (cert, key) = ca.identity_paths(cert_name);
    let config = dir.join("computed.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"{node}\"\nhead_addr_file = {:?}\nstate_dir = {:?}\ncgroup_name = \"rogue-{}\"\n\
             cgroup_favor_dynamic_moves = false\nlaunch_listen = \"127.0.0.1:0\"\n\
             [tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
            state.join("agent.addr"),
            dir.join("state"),
            std::process::id(),
            state.join("tls/ca.crt"),
        ),
    )
    .unwrap();
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
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
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("no session with the head"))
        {
            refused = line.to_string();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM, as `cluster down` stops agents, so that it removes its cgroups; SIGKILL if it hangs.
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    eprintln!("agent {node} with {cert_name}'s certificate: {refused}");
    assert!(
        refused.contains("the head refused the session"),
        "the agent never reported a refused session; its log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    refused
}

fn node_names(cluster: &LocalCluster) -> Vec<String> {
    cluster
        .nodes_json()
        .iter()
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn agents_from_another_ca_or_under_another_nodes_name_are_refused() {
    let cluster = LocalCluster::start(1, 10);
    let state = cluster.state.path();
    assert_eq!(
        node_names(&cluster),
        ["node1"],
        "the cluster's own agent is served over mTLS"
    );
    assert!(state.join("tls/ca.crt").is_file());

    // An impostor: trusts the head (the real CA) but presents a certificate of its own CA.
    let dir = tempfile::tempdir().unwrap();
    let refused = refused_agent(
        &cluster,
        dir.path(),
        "node9",
        &dir.path().join("rogue-ca"),
        "node9",
    );
    assert_eq!(
        node_names(&cluster),
        ["node1"],
        "the rogue agent was registered: {refused}"
    );

    // A real certificate of the cluster's CA, but for node7, used to register as node9.
    let dir = tempfile::tempdir().unwrap();
    let refused = refused_agent(&cluster, dir.path(), "node9", &state.join("tls"), "node7");
    assert!(
        refused.contains("certificate is for node7, not for node `node9`"),
        "{refused}"
    );
    assert_eq!(
        node_names(&cluster),
        ["node1"],
        "node9 was registered: {refused}"
    );
}
