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

/// headnoded's config for a head in `dir` whose `[tls]` names `ca`, `cert` and `key`.
fn head_config(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> std::path::PathBuf {
    let config = dir.join("headnoded.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsocket = {:?}\nagent_listen = \"127.0.0.1:0\"\n\
             [tls]\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\n",
            dir.join("state"),
            dir.join("headnoded.sock"),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    config
}

/// systemd's readiness protocol, as a unit of `Type=notify` sees it: headnoded says READY=1
/// only once it can serve, so a head that cannot read its certificate is never taken as up.
#[test]
fn headnoded_is_ready_for_systemd_only_once_it_can_serve() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    // Without its certificate: it fails, naming the file, and never says ready.
    let missing = dir.path().join("missing");
    let config = head_config(
        dir.path(),
        &missing.join("ca.crt"),
        &missing.join("head.crt"),
        &missing.join("head.key"),
    );
    let out = Command::new(bin_dir().join("headnoded"))
        .args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ca.crt"), "{stderr}");
    systemd.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    assert!(
        systemd.recv(&mut buf).is_err(),
        "a head that cannot serve told systemd it was ready"
    );
    systemd.set_nonblocking(false).unwrap();

    // With it: READY=1 comes, and the head serves.
    let ca = ClusterCa::ensure(&dir.path().join("ca")).unwrap();
    ca.ensure_identity(beowulf_types::HEAD_TLS_NAME, &["127.0.0.1".into()])
        .unwrap();
    let (cert, key) = ca.identity_paths(beowulf_types::HEAD_TLS_NAME);
    let config = head_config(dir.path(), &ca.cert_path(), &cert, &key);
    let mut head = Command::new(bin_dir().join("headnoded"))
        .args(["--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let received = systemd.recv(&mut buf);
    let alive = head.try_wait().unwrap().is_none();
    // Stop the head this test started, by its PID.
    let _ = head.kill();
    let _ = head.wait();
    let n = received.expect("headnoded with its certificate never said READY=1");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(alive, "headnoded exited after saying it was ready");
}
