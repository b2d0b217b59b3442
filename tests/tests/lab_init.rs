//! Lab tier, issue 4 (and the ib half of issue 5): `cluster init --nodes 5` on the VM lab, with
//! the playbooks that run in the lab today (OS check, InfiniBand on soft-RoCE, the agent as a
//! systemd unit registering over mutual TLS): five nodes IDLE with `fabric` = `ib`; a second run
//! changes nothing and `--plan` lists no changes; an MPI job across the five VMs uses ib.
//!
//! The users (LDAP) and NFS playbooks need the lab's head services, which are not done yet, so
//! this test names the playbooks it runs. Runs only with `BEOWULF_LAB_TESTS=1`.

use beowulf_tests::lab::{Lab, gated, running_as_root};
use beowulf_tests::{json, text};

const PLAYBOOKS: [&str; 6] = [
    "--playbook",
    "os-check",
    "--playbook",
    "infiniband",
    "--playbook",
    "agent",
];

#[test]
fn init_provisions_the_lab_agents_register_over_mtls_and_mpi_runs_on_ib() {
    if !gated() {
        return;
    }
    assert!(running_as_root(), "the lab tier needs root");
    let lab = Lab::new();

    // 1. From nothing: the lab boots, headnoded starts in its namespace, the nodes are provisioned.
    let mut args = vec!["init", "--nodes", "5"];
    args.extend(PLAYBOOKS);
    let out = lab.ok(&args);
    assert!(out.contains("agent/registered"), "{out}");
    let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
    let nodes = nodes.as_array().expect("nodes");
    assert_eq!(nodes.len(), 5, "{nodes:?}");
    for node in nodes {
        assert_eq!(node["state"], "IDLE", "{node}");
        assert_eq!(node["fabric"], "ib", "{node}");
    }

    // 2. Again: every step already satisfied; --plan lists no changes.
    let out = lab.ok(&args);
    assert!(
        out.contains("nothing changed: every step was already satisfied"),
        "{out}"
    );
    let mut plan = args.clone();
    plan.push("--plan");
    let out = lab.ok(&plan);
    assert!(out.contains("plan: nothing to change"), "{out}");

    // 3. MPI across the five VMs: `auto` picks ib (soft-RoCE, UCX). The program is put on each
    //    node by the test (the NFS shared area is not provisioned in the lab yet).
    let program = lab.state.path().join("mpi-hello");
    let cc = std::process::Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(beowulf_tests::repo_root().join("examples/mpi-hello.c"))
        .output()
        .expect("mpicc runs");
    assert!(cc.status.success(), "mpicc: {}", text(&cc.stderr));
    for i in 1..=5 {
        let node = format!("node{i}");
        let out = std::process::Command::new(beowulf_tests::bin_dir().join("cluster"))
            .args(["lab", "ssh", &node])
            .arg("mkdir -p /opt/mpi-hello /srv/work && cat > /opt/mpi-hello/mpi-hello && chmod 755 /opt/mpi-hello/mpi-hello")
            .env("BEOWULF_STATE_DIR", lab.state.path())
            .stdin(std::fs::File::open(&program).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{node}: {}", text(&out.stderr));
    }
    let job = lab.state.path().join("mpi.toml");
    std::fs::write(
        &job,
        "nodes = 5\nntasks = 5\ncommand = [\"/opt/mpi-hello/mpi-hello\"]\nworkdir = \"/srv/work\"\n\
         output = \"/srv/work/mpi-%j.out\"\ntime_limit = \"5\"\n[mpi]\nflavor = \"openmpi\"\nfabric = \"auto\"\n",
    )
    .unwrap();
    let out = lab.cluster(&["submit", "--wait", "--json", job.to_str().unwrap()]);
    let info = json(&out.stdout);
    assert_eq!(
        info["state"],
        "COMPLETED",
        "{info:#}\n{}",
        text(&out.stderr)
    );
    assert_eq!(info["fabric"], "ib", "{info:#}");
    let output = lab.ok(&[
        "lab",
        "ssh",
        "node1",
        &format!("cat /srv/work/mpi-{}.out", info["id"]),
    ]);
    assert!(output.contains("allreduce ok sum=15"), "{output}");
    for rank in 0..5 {
        let line = format!("rank {rank} of 5 on node{}", rank + 1);
        assert!(output.contains(&line), "no {line:?} in {output}");
    }
}
