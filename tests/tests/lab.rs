//! Lab tier: real VMs. `cluster lab up --nodes 5` from nothing (or the image cache), SSH over gige with
//! verified host keys, the second NIC on the ib bridge, a second `lab up` on the cached image, and
//! `cluster lab down` leaving nothing behind. Issue 3's "done when" 1-3.
//!
//! Runs only with `BEOWULF_LAB_TESTS=1` (as root, with `scripts/lab-deps.sh` installed; see
//! `scripts/test-lab.sh`); then it fails loudly if it cannot run. Takes ~10 minutes under TCG.

use beowulf_provision::inventory::IbKind;
use beowulf_tests::lab::{Lab, gated, running_as_root};
use beowulf_tests::text;
use std::process::Command;
use std::time::Instant;

#[test]
fn five_vms_come_up_answer_ssh_on_both_fabrics_and_go_away_cleanly() {
    if !gated() {
        return;
    }
    assert!(
        running_as_root(),
        "the lab tier needs root: run scripts/test-lab.sh as root"
    );
    let mut lab = Lab::new();
    let test_start = Instant::now();

    // 1. Five VMs, SSH on gige with verified keys, a second NIC on the ib bridge, timings printed.
    let first = lab.up();
    let out = &first;
    assert!(out.contains("image: "), "no image timing in:\n{out}");
    assert!(
        out.contains("boot: 5 VMs ready over ssh in "),
        "no boot timing in:\n{out}"
    );
    let inv = lab.inventory();
    assert_eq!(inv.nodes.len(), 5);
    let ns = inv
        .ssh
        .netns
        .clone()
        .expect("the lab's inventory names its namespace");
    let known_hosts = std::fs::read_to_string(&inv.ssh.known_hosts).expect("known_hosts");
    assert_eq!(known_hosts.lines().count(), 5, "{known_hosts}");
    for node in &inv.nodes {
        let ib = node.ib.as_ref().expect("every lab node has an ib fabric");
        assert_eq!(ib.kind, IbKind::SoftRoce);
        let host_key = node
            .host_key
            .as_deref()
            .expect("the lab lists every host key");
        assert!(
            known_hosts.contains(host_key),
            "{}'s host key is not in known_hosts",
            node.name
        );
        // One round trip per node: name, gige and ib addresses.
        let got = lab.ok(&[
            "lab",
            "ssh",
            node.name.as_str(),
            "hostname; ip -4 -o addr show eth0; ip -4 -o addr show eth1; \
             ping -c 1 -W 10 -I eth1 10.78.0.254 >/dev/null && echo ib-bridge-ok",
        ]);
        assert!(
            got.starts_with(&format!("{}\n", node.name)),
            "{}: {got}",
            node.name
        );
        assert!(
            got.contains(&format!("inet {}/24", node.gige.address)),
            "{}: {got}",
            node.name
        );
        let ib_addr = ib.address.expect("lab ib address");
        let eth1 = got
            .lines()
            .find(|l| l.contains(" eth1 "))
            .unwrap_or_default();
        assert!(
            eth1.contains(&format!("inet {ib_addr}/24")),
            "{}: {got}",
            node.name
        );
        // eth1 is on the ib bridge: the head's ib address (only on br-ib) answers through it.
        assert!(
            got.contains("ib-bridge-ok"),
            "{}: the head's ib address does not answer over eth1: {got}",
            node.name
        );
    }
    let members = Command::new("ip")
        .args(["-n", &ns, "-o", "link", "show", "master", "br-ib"])
        .output()
        .expect("ip");
    for i in 1..=5 {
        assert!(
            text(&members.stdout).contains(&format!(": ib{i}:")),
            "ib{i} is not on br-ib:\n{}",
            text(&members.stdout)
        );
    }
    let status = lab.ok(&["lab", "status"]);
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains(" up ") && l.contains(" ok "))
            .count(),
        5,
        "{status}"
    );
    // A wrong known_hosts must make ssh refuse: connections are verified, not trusted.
    let wrong = lab.state.path().join("empty_known_hosts");
    std::fs::write(&wrong, "").expect("write");
    let refused = Command::new("ip")
        .args(["netns", "exec", &ns, "ssh", "-i"])
        .arg(&inv.ssh.key)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ])
        .arg(format!("UserKnownHostsFile={}", wrong.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "root@10.77.0.1",
            "true",
        ])
        .output()
        .expect("ssh");
    assert!(
        !refused.status.success(),
        "ssh accepted an unknown host key"
    );

    // 3. Down leaves nothing.
    lab.down_and_check_clean(&ns);

    // 2. A second up reuses the cached image and only boots.
    lab.downed = false;
    let out = lab.up();
    assert!(
        out.contains("image: cached"),
        "the second lab up rebuilt the image:\n{out}"
    );
    assert!(out.contains("boot: 5 VMs ready over ssh in "), "{out}");
    let got = lab.ok(&["lab", "ssh", "node5", "hostname"]);
    assert_eq!(got.trim(), "node5");
    lab.down_and_check_clean(&ns);
    let second = out;
    eprintln!(
        "lab tier figures: {}; first boot of 5 VMs {} s; second boot {} s; whole test {:.1} s",
        line_after(&first, "image: ").unwrap_or("image: ?"),
        line_after(&first, "boot: 5 VMs ready over ssh in ")
            .and_then(|l| l.split_whitespace().nth(7))
            .unwrap_or("?"),
        line_after(&second, "boot: 5 VMs ready over ssh in ")
            .and_then(|l| l.split_whitespace().nth(7))
            .unwrap_or("?"),
        test_start.elapsed().as_secs_f64()
    );
}

/// The first line of `out` that starts with `prefix`.
fn line_after<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(prefix))
}
