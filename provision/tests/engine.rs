//! The engine over recording fakes: check/apply/verify, idempotence, plan, resume, --from, failures,
//! degradation and the parallel bound.

use beowulf_provision::engine::{Engine, Mode, RunOptions, Start};
use beowulf_provision::transport::{Call, ExecOutput, RecordingConnector, RecordingTransport};
use beowulf_provision::{
    BuiltinRegistry, ClusterInventory, Outcome, Playbook, ProvisionEvent, RunError, Templates,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const INVENTORY: &str = r#"
[ssh]
user = "root"
key = "/nonexistent/key"
known_hosts = "/nonexistent/known_hosts"
[head]
gige = "10.77.0.254"
prefix = 24
[[node]]
name = "node1"
gige = { address = "10.77.0.1", netdev = "eth0" }
[[node]]
name = "node2"
gige = { address = "10.77.0.2", netdev = "eth0" }
[[node]]
name = "node3"
gige = { address = "10.77.0.3", netdev = "eth0" }
"#;

const PLAYBOOK: &str = r#"
title = "test"

[[step]]
id = "marker"
title = "a marker file"
scope = "nodes"
check = [{ run = "test -e /var/marker" }]
apply = [{ run = "touch /var/marker" }]

[[step]]
id = "conf"
title = "a rendered config"
scope = "nodes"
check = [{ file = "/etc/t.conf", content = "node {{ node.name }} head {{ head.gige.address }}\n" }]

[[step]]
id = "head-only"
title = "something on the head"
scope = "head"
check = [{ run = "test -e /var/head" }]
apply = [{ run = "touch /var/head" }]
"#;

fn inventory(nodes: usize) -> ClusterInventory {
    let mut text = INVENTORY.to_string();
    for i in 4..=nodes {
        text.push_str(&format!("[[node]]\nname = \"node{i}\"\ngige = {{ address = \"10.77.0.{i}\", netdev = \"eth0\" }}\n"));
    }
    ClusterInventory::parse(Path::new("cluster.toml"), &text).unwrap()
}

fn playbook(text: &str) -> Playbook {
    Playbook::parse(Path::new("playbooks/t.toml"), text).unwrap()
}

/// A fake node where `test -e`, `touch`, `stat` and `chown` behave like a tiny file system.
fn fake(name: &str) -> RecordingTransport {
    RecordingTransport::new(name)
        .on_fn(r"^test -e (\S+)$", |cmd, st| {
            let path = cmd.trim_start_matches("test -e ");
            if st.marks.contains(path) {
                ExecOutput::ok("")
            } else {
                ExecOutput::fail(1, "")
            }
        })
        .on_fn(r"^touch (\S+)$", |cmd, st| {
            st.marks
                .insert(cmd.trim_start_matches("touch ").to_string());
            ExecOutput::ok("")
        })
        .on_fn(r"^stat -c", |cmd, st| {
            let path = cmd.rsplit(' ').next().unwrap_or("");
            match st.files.get(path) {
                Some((_, mode)) => ExecOutput::ok(format!("{mode:o} root:root\n")),
                None => ExecOutput::fail(1, "no such file"),
            }
        })
        .on(r"^chown ", ExecOutput::ok(""))
}

struct Lab {
    connector: RecordingConnector,
}

impl Lab {
    fn new(nodes: usize) -> Self {
        let mut connector = RecordingConnector::default().with(fake("head"));
        for i in 1..=nodes {
            connector = connector.with(fake(&format!("node{i}")));
        }
        Self { connector }
    }

    fn node(&self, name: &str) -> &RecordingTransport {
        &self.connector.nodes[name]
    }

    fn clear(&self) {
        self.connector
            .nodes
            .values()
            .for_each(RecordingTransport::clear_calls);
    }

    fn applies(&self) -> usize {
        self.connector
            .nodes
            .values()
            .flat_map(RecordingTransport::calls)
            .filter(|c| {
                matches!(c, Call::PutFile { .. })
                    || matches!(c, Call::Exec(cmd) if cmd.starts_with("touch"))
            })
            .count()
    }
}

async fn run(
    engine: &Engine,
    playbooks: &[Playbook],
    inv: &ClusterInventory,
    lab: &Lab,
    mode: Mode,
    start: Start,
    state: Option<PathBuf>,
) -> (
    Result<beowulf_provision::RunReport, RunError>,
    Vec<ProvisionEvent>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let options = RunOptions {
        mode,
        start,
        state_file: state,
    };
    let result = engine
        .run(
            playbooks,
            inv,
            Arc::new(lab.connector.clone()),
            &options,
            tx,
        )
        .await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (result, events)
}

fn engine() -> Engine {
    Engine::new(Templates::empty(), BuiltinRegistry::standard())
}

#[tokio::test]
async fn first_run_changes_second_run_is_all_satisfied_and_applies_nothing() {
    let (inv, lab, pbs) = (inventory(3), Lab::new(3), vec![playbook(PLAYBOOK)]);
    let (report, events) = run(&engine(), &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    let report = report.unwrap();
    assert_eq!(report.results.len(), 7);
    assert_eq!(report.with_label("changed").len(), 7, "{report:?}");
    assert!(lab.node("node2").state().marks.contains("/var/marker"));
    let conf = &lab.node("node2").state().files["/etc/t.conf"];
    assert_eq!(
        String::from_utf8_lossy(&conf.0),
        "node node2 head 10.77.0.254\n"
    );
    assert_eq!(conf.1, 0o644);
    assert!(
        events
            .iter()
            .any(|e| e.node == "node1" && e.phase == beowulf_provision::Phase::Verify)
    );
    assert!(lab.applies() > 0);

    lab.clear();
    let (report, _) = run(&engine(), &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    let report = report.unwrap();
    assert!(
        report
            .results
            .iter()
            .all(|r| r.outcome == Outcome::Satisfied),
        "{report:?}"
    );
    assert!(report.changed_nothing());
    assert_eq!(lab.applies(), 0, "a second run must not apply anything");
}

#[tokio::test]
async fn plan_mode_reports_what_would_change_and_applies_nothing() {
    let (inv, lab, pbs) = (inventory(3), Lab::new(3), vec![playbook(PLAYBOOK)]);
    let (report, _) = run(&engine(), &pbs, &inv, &lab, Mode::Plan, Start::Fresh, None).await;
    let report = report.unwrap();
    assert_eq!(report.with_label("would change").len(), 7, "{report:?}");
    let Outcome::WouldChange { detail } = &report.results[0].outcome else {
        panic!()
    };
    assert!(detail.contains("test -e /var/marker"), "{detail}");
    assert!(report.results.iter().any(|r| matches!(&r.outcome, Outcome::WouldChange { detail } if detail.contains("/etc/t.conf is missing"))));
    assert_eq!(lab.applies(), 0);
}

#[tokio::test]
async fn a_failure_names_node_step_command_and_stderr_and_stops_after_the_step() {
    let (inv, pbs) = (inventory(3), vec![playbook(PLAYBOOK)]);
    let mut lab = Lab::new(3);
    let broken = fake("node2").on(
        r"^touch ",
        ExecOutput::fail(
            1,
            "touch: cannot touch '/var/marker': Read-only file system\n",
        ),
    );
    lab.connector.nodes.insert("node2".into(), broken);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let (result, events) = run(
        &engine(),
        &pbs,
        &inv,
        &lab,
        Mode::Apply,
        Start::Fresh,
        Some(state.clone()),
    )
    .await;
    let err = result.unwrap_err();
    let msg = err.to_string();
    for needle in [
        "node2",
        "t/marker",
        "apply",
        "`touch /var/marker` exited 1",
        "Read-only file system",
        "--resume",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
    let RunError::StepFailed { failures, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(failures.len(), 1);
    // The other nodes finished the step, but nobody went on to the next one.
    assert!(lab.node("node1").state().marks.contains("/var/marker"));
    assert!(lab.node("node3").state().marks.contains("/var/marker"));
    assert!(lab.node("node1").state().files.is_empty());
    assert!(!events.iter().any(|e| e.step == "t/conf"));

    // After the fix, --resume skips what is done and finishes.
    lab.connector.nodes.insert("node2".into(), fake("node2"));
    lab.clear();
    let (report, _) = run(
        &engine(),
        &pbs,
        &inv,
        &lab,
        Mode::Apply,
        Start::Resume,
        Some(state.clone()),
    )
    .await;
    let report = report.unwrap();
    assert!(
        !lab.node("node1")
            .commands()
            .iter()
            .any(|c| c.contains("/var/marker")),
        "node1's done step was redone"
    );
    let skipped = report
        .results
        .iter()
        .filter(
            |r| matches!(&r.outcome, Outcome::Skipped { reason } if reason.contains("earlier run")),
        )
        .count();
    assert_eq!(skipped, 2, "{report:?}");
    assert!(lab.node("node2").state().marks.contains("/var/marker"));
    assert!(lab.node("node3").state().files.contains_key("/etc/t.conf"));

    // A third resume has nothing left to do at all.
    lab.clear();
    let (report, _) = run(
        &engine(),
        &pbs,
        &inv,
        &lab,
        Mode::Apply,
        Start::Resume,
        Some(state),
    )
    .await;
    assert!(
        report
            .unwrap()
            .results
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Skipped { .. }))
    );
    assert!(lab.connector.nodes.values().all(|n| n.calls().is_empty()));
}

#[tokio::test]
async fn from_starts_at_the_named_step() {
    let (inv, lab, pbs) = (inventory(3), Lab::new(3), vec![playbook(PLAYBOOK)]);
    let (report, _) = run(
        &engine(),
        &pbs,
        &inv,
        &lab,
        Mode::Apply,
        Start::From("conf".into()),
        None,
    )
    .await;
    let report = report.unwrap();
    assert!(report.results.iter().filter(|r| r.step == "t/marker").all(
        |r| matches!(&r.outcome, Outcome::Skipped { reason } if reason.contains("--from t/conf"))
    ));
    assert!(
        !lab.node("node1")
            .commands()
            .iter()
            .any(|c| c.contains("marker"))
    );
    assert!(lab.node("node1").state().files.contains_key("/etc/t.conf"));
    let (err, _) = run(
        &engine(),
        &pbs,
        &inv,
        &lab,
        Mode::Apply,
        Start::From("nope".into()),
        None,
    )
    .await;
    assert!(matches!(err.unwrap_err(), RunError::UnknownStep { .. }));
}

#[tokio::test]
async fn degrade_records_the_reason_and_the_node_goes_on() {
    let text = r#"
title = "ib"
[[step]]
id = "port"
title = "port active"
scope = "nodes"
on_failure = "degrade"
check = [{ run = "cat /sys/class/infiniband/rxe0/ports/1/state", expect_stdout = "ACTIVE" }]
apply = [{ fail = "no active port on {{ node.name }}" }]
[[step]]
id = "after"
title = "later step"
scope = "nodes"
when = "node.name != 'node3'"
check = [{ run = "test -e /var/after" }]
apply = [{ run = "touch /var/after" }]
"#;
    let (inv, mut lab) = (inventory(3), Lab::new(3));
    for n in ["node1", "node3"] {
        let t = fake(n).on("infiniband", ExecOutput::ok("4: ACTIVE\n"));
        lab.connector.nodes.insert(n.into(), t);
    }
    let (report, _) = run(
        &engine(),
        &[playbook(text)],
        &inv,
        &lab,
        Mode::Apply,
        Start::Fresh,
        None,
    )
    .await;
    let report = report.unwrap();
    let degraded = report.with_label("degraded");
    assert_eq!(degraded.len(), 1);
    assert_eq!(degraded[0].node, "node2");
    let Outcome::Degraded { reason } = &degraded[0].outcome else {
        panic!()
    };
    assert!(reason.contains("no active port on node2"), "{reason}");
    assert!(lab.node("node2").state().marks.contains("/var/after"));
    let node3 = report
        .results
        .iter()
        .find(|r| r.node == "node3" && r.step == "t/after")
        .unwrap();
    assert!(
        matches!(&node3.outcome, Outcome::Skipped { reason } if reason.contains("not applicable")),
        "{node3:?}"
    );
}

#[tokio::test]
async fn an_unreachable_node_fails_naming_it() {
    let (inv, mut lab, pbs) = (inventory(3), Lab::new(3), vec![playbook(PLAYBOOK)]);
    lab.connector.unreachable.insert("node3".into());
    let (result, _) = run(&engine(), &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.contains("node3: connect of step `t/marker` failed: cannot connect to node3"),
        "{msg}"
    );
}

#[tokio::test]
async fn verify_failure_is_an_error_even_when_apply_succeeded() {
    let text = r#"
title = "v"
[[step]]
id = "stubborn"
title = "apply does not stick"
scope = "nodes"
check = [{ run = "test -e /var/never" }]
apply = [{ run = "true" }]
"#;
    let (inv, lab) = (inventory(3), Lab::new(3));
    for t in lab.connector.nodes.values() {
        let _ = t.clone().on("^true$", ExecOutput::ok(""));
    }
    let (result, _) = run(
        &engine(),
        &[playbook(text)],
        &inv,
        &lab,
        Mode::Apply,
        Start::Fresh,
        None,
    )
    .await;
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.contains("verify of step `t/stubborn` failed") && msg.contains("still fails"),
        "{msg}"
    );
}

#[tokio::test]
async fn nodes_run_in_parallel_up_to_the_bound() {
    let counters = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut connector = RecordingConnector::default().with(fake("head"));
    for i in 1..=6 {
        connector = connector.with(
            fake(&format!("node{i}")).with_latency(Duration::from_millis(40), counters.clone()),
        );
    }
    let lab = Lab { connector };
    let (inv, pbs) = (inventory(6), vec![playbook(PLAYBOOK)]);
    let engine = engine().with_parallelism(2);
    let (report, _) = run(&engine, &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    report.unwrap();
    assert_eq!(
        counters.1.load(Ordering::SeqCst),
        2,
        "at most 2 nodes at once, and really 2"
    );
    let counters = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut connector = RecordingConnector::default().with(fake("head"));
    for i in 1..=6 {
        connector = connector.with(
            fake(&format!("node{i}")).with_latency(Duration::from_millis(40), counters.clone()),
        );
    }
    let lab = Lab { connector };
    let (report, _) = run(
        &engine.with_parallelism(32),
        &pbs,
        &inv,
        &lab,
        Mode::Plan,
        Start::Fresh,
        None,
    )
    .await;
    report.unwrap();
    assert_eq!(counters.1.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn missing_templates_and_builtins_are_refused_before_anything_runs() {
    let text = r#"
title = "bad"
[[step]]
id = "a"
title = "a"
scope = "nodes"
check = [{ file = "/etc/x", template = "nope.conf" }, { builtin = "teleport" }]
"#;
    let (inv, lab) = (inventory(3), Lab::new(3));
    let (result, _) = run(
        &engine(),
        &[playbook(text)],
        &inv,
        &lab,
        Mode::Apply,
        Start::Fresh,
        None,
    )
    .await;
    let msg = result.unwrap_err().to_string();
    assert!(
        msg.contains("template `nope.conf` does not exist")
            && msg.contains("no builtin called `teleport`"),
        "{msg}"
    );
    assert!(lab.connector.nodes.values().all(|n| n.calls().is_empty()));
}

/// A node of a fake fabric for the pair probe: its port is ACTIVE, its ibv_rc_pingpong ends work
/// unless it (or, for a client, its server) is on the broken node `broken`.
fn fabric_node(i: usize, broken: Option<usize>) -> RecordingTransport {
    let me_broken = broken == Some(i);
    let broken_address = broken.map(|b| format!("10.77.0.{b}"));
    fake(&format!("node{i}"))
        .on(
            r"^for p in /sys/class/infiniband",
            ExecOutput::ok("rxe0 1 1\n"),
        )
        .on(r"ss -Hltn", ExecOutput::ok(""))
        .on_fn(r"^timeout \d+ ibv_rc_pingpong .*-n \d+$", move |_, _| {
            if me_broken {
                ExecOutput::fail(124, "")
            } else {
                ExecOutput::ok("20 iters in 0.11 seconds\n")
            }
        })
        .on_fn(
            r"^timeout \d+ ibv_rc_pingpong .* 10\.77\.0\.\d+$",
            move |cmd, _| {
                let to_broken = broken_address.as_ref().is_some_and(|a| cmd.ends_with(a));
                if me_broken || to_broken {
                    ExecOutput::fail(1, "Failed status transport retry counter exceeded (12)")
                } else {
                    ExecOutput::ok("20 iters in 0.11 seconds\n")
                }
            },
        )
        .on_fn(r"^rm -f '(\S+)'$", |cmd, st| {
            let path = cmd.trim_start_matches("rm -f '").trim_end_matches('\'');
            st.files.remove(path);
            ExecOutput::ok("")
        })
}

#[tokio::test]
async fn the_pair_probe_marks_only_the_node_whose_verbs_traffic_goes_nowhere() {
    let text = r#"
title = "ib"
[[step]]
id = "pair-probe"
title = "verbs traffic flows to a peer"
scope = "nodes"
on_failure = "degrade"
check = [{ builtin = "ib-pair-probe", args = { marker = "/var/lib/beowulf-agent/fabric-problem" } }]
"#;
    const MARKER: &str = "/var/lib/beowulf-agent/fabric-problem";
    let mut inv_text = INVENTORY.to_string();
    inv_text.push_str(
        "[[node]]\nname = \"node4\"\ngige = { address = \"10.77.0.4\", netdev = \"eth0\" }\n",
    );
    for i in 1..=4 {
        let line = format!("gige = {{ address = \"10.77.0.{i}\", netdev = \"eth0\" }}\n");
        inv_text = inv_text.replace(
            &line,
            &format!("{line}ib = {{ kind = \"soft-roce\", netdev = \"eth1\", address = \"10.78.0.{i}\" }}\n"),
        );
    }
    let inv = ClusterInventory::parse(Path::new("cluster.toml"), &inv_text).unwrap();
    let mut lab = Lab::new(0);
    for i in 1..=4 {
        lab.connector
            .nodes
            .insert(format!("node{i}").into(), fabric_node(i, Some(3)));
    }
    let pbs = [playbook(text)];
    let (report, _) = run(&engine(), &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    let report = report.unwrap();
    let degraded = report.with_label("degraded");
    assert_eq!(degraded.len(), 1, "{report:?}");
    assert_eq!(degraded[0].node, "node3");
    let Outcome::Degraded { reason } = &degraded[0].outcome else {
        panic!()
    };
    for peer in ["node4", "node2", "node1"] {
        assert!(reason.contains(peer), "{reason}");
    }
    let marker = lab.node("node3").state().files[MARKER].0.clone();
    assert!(
        String::from_utf8_lossy(&marker).contains("verbs pair probe from node3 failed"),
        "{}",
        String::from_utf8_lossy(&marker)
    );
    for healthy in ["node1", "node2", "node4"] {
        assert!(!lab.node(healthy).state().files.contains_key(MARKER));
    }
    // node2's first peer is node3: it tried it, then passed with node1.
    let tried: Vec<String> = lab
        .node("node2")
        .commands()
        .into_iter()
        .filter(|c| c.contains("ibv_rc_pingpong") && c.contains("10.77.0."))
        .collect();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(tried[0].ends_with("10.77.0.3") && tried[1].ends_with("10.77.0.1"));

    // Fixed: the next run passes on node3 and removes its marker; the others change nothing.
    for i in 1..=4 {
        let state = lab.node(&format!("node{i}")).state();
        let fixed = fabric_node(i, None);
        fixed.set_state(|s| *s = state);
        lab.connector.nodes.insert(format!("node{i}").into(), fixed);
    }
    let (report, _) = run(&engine(), &pbs, &inv, &lab, Mode::Apply, Start::Fresh, None).await;
    let report = report.unwrap();
    let changed = report.with_label("changed");
    assert_eq!(changed.len(), 1, "{report:?}");
    assert_eq!(changed[0].node, "node3");
    assert!(!lab.node("node3").state().files.contains_key(MARKER));
}
