//! Lab tier, issue 4 (and the lab half of issue 5): `cluster init --nodes 5` on the VM lab with every
//! playbook — OS check, users from the lab head's slapd, NFS from its nfs-ganesha, InfiniBand on
//! soft-RoCE, the agent as a systemd unit registering over mutual TLS. The first init meets a fault:
//! node4's sshd stopped (init stops naming the node and step; `--resume` finishes without redoing
//! completed steps). Then all five nodes are IDLE on ib, the LDAP user's uid is the same on every
//! node, a file written on node1 is read on node5, an MPI job submitted by the LDAP user runs as that
//! user over ib with its output on the NFS home, and a second init changes nothing. With node5's ib
//! NIC down, init completes and node5 gets `fabric` = `tcp` with the reason; an `ib` job waits
//! naming it, an `auto` MPI job runs over tcp naming it. The NIC comes back, node5 is ib again. Then
//! node5's RoCE traffic is cut while its port stays ACTIVE: the pair probe marks it tcp, and the next
//! init after the repair clears it. The MPI job runs in containers from the image store on the NFS
//! shared area. Last, the users switch to NIS: the lab head's ypserv serves them and every node
//! resolves alice through ypbind. Runs only with `BEOWULF_LAB_TESTS=1`.

use beowulf_tests::lab::{Lab, gated, running_as_root};
use beowulf_tests::{json, text};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The lab's demo user (beowulf-lab's `DEMO_USERS`).
const ALICE_UID: u32 = 10001;
const ALICE_GID: u32 = 10000;

/// How long node4's sshd stays stopped: long enough for the first init to reach node4 and fail
/// (seconds here), short enough not to slow the test much.
const SSHD_DOWN_SECS: u32 = 75;

fn node<'a>(nodes: &'a Value, name: &str) -> &'a Value {
    nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {nodes:#}"))
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("{what}: {:.1} s", start.elapsed().as_secs_f64());
}

/// Writes `body` as alice's file on the NFS home (seen from the head) and returns its node path.
fn alice_file(home: &Path, name: &str, body: &str) -> String {
    let path = home.join(name);
    std::fs::write(&path, body).unwrap();
    std::os::unix::fs::chown(&path, Some(ALICE_UID), Some(ALICE_GID)).unwrap();
    format!("/home/alice/{name}")
}

/// A 5-rank MPI hello as alice: the Open MPI program from the shared area, or `flavor`'s from
/// `image`'s container.
fn mpi_job(fabric: &str, image: Option<&str>, flavor: &str) -> String {
    let (program, container) = match image {
        Some(image) => (
            "/opt/mpi-hello/mpi-hello",
            format!("[container]\nimage = \"{image}\"\n"),
        ),
        None => ("/srv/beowulf/mpi-hello", String::new()),
    };
    format!(
        "nodes = 5\nntasks = 5\ncommand = [\"{program}\"]\nworkdir = \"/home/alice\"\n\
         output = \"/home/alice/mpi-%j.out\"\ntime_limit = \"5\"\n{container}\
         [mpi]\nflavor = \"{flavor}\"\nfabric = \"{fabric}\"\n"
    )
}

#[test]
fn init_provisions_users_nfs_fabric_and_agents_and_ldap_users_run_mpi_on_nfs_homes() {
    if !gated() {
        return;
    }
    assert!(running_as_root(), "the lab tier needs root");
    let lab = Lab::new();
    let head_home = lab.state.path().join("lab-head/home/alice");
    let head_shared = lab.state.path().join("lab-head/srv-beowulf");

    // 0. The lab; on a fresh lab, --plan lists every step and changes nothing.
    lab.up();
    let plan = lab.cluster(&["init", "--nodes", "5", "--plan"]);
    let shown = format!("{}{}", text(&plan.stdout), text(&plan.stderr));
    println!("{shown}");
    for step in [
        "users-ldap/directory",
        "users-ldap/nslcd-config",
        "nfs/homes",
        "nfs/mount-units",
        "infiniband/rxe-link",
        "agent/binary",
    ] {
        let row = shown
            .lines()
            .find(|l| l.starts_with(&format!("| {step} ")))
            .unwrap_or_else(|| panic!("no {step} row in the plan: {shown}"));
        assert!(row.contains("would change"), "{row}");
    }
    assert!(
        !lab.cluster(&["lab", "ssh", "node1", "test -e /usr/local/sbin/computed"])
            .status
            .success(),
        "the plan installed the agent"
    );

    // The fault, before init.
    lab.on(
        "node4",
        &format!(
            "systemd-run --quiet --on-active={SSHD_DOWN_SECS} --unit beowulf-test-sshd-back \
             systemctl start ssh.service && systemctl stop ssh.service"
        ),
    );
    let sshd_stopped = Instant::now();

    // 1. init stops at node4's first step, naming the node and the step, and says how to go on.
    let out = lab.cluster(&["init", "--nodes", "5"]);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        sshd_stopped.elapsed().as_secs() < u64::from(SSHD_DOWN_SECS),
        "the failing init took longer than node4's sshd was down: {all}"
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("node4") && stderr.contains("os-check/"),
        "{stderr}"
    );
    assert!(stderr.contains("--resume"), "{stderr}");

    // 2. After the fix (sshd back), --resume finishes without redoing completed steps.
    wait_for("node4's sshd back", Duration::from_secs(240), || {
        lab.cluster(&["lab", "ssh", "node4", "true"])
            .status
            .success()
    });
    let out = lab.ok(&["init", "--nodes", "5", "--resume"]);
    println!("{out}");
    let first_row = out
        .lines()
        .find(|l| l.starts_with("| os-check/distribution"))
        .unwrap_or_else(|| panic!("no os-check/distribution row in {out}"));
    assert!(
        first_row.matches("skipped").count() >= 4,
        "the nodes that passed the first step ran it again: {first_row}"
    );
    for step in ["users-ldap/resolve", "nfs/shared-write", "agent/registered"] {
        assert!(out.contains(step), "no {step} in {out}");
    }

    // 3. Five IDLE nodes, each on ib.
    let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
    assert_eq!(nodes.as_array().map(Vec::len), Some(5), "{nodes:#}");
    for i in 1..=5 {
        let n = node(&nodes, &format!("node{i}"));
        assert_eq!(n["state"], "IDLE", "{n}");
        assert_eq!(n["fabric"], "ib", "{n}");
    }

    // 4. The LDAP user resolves to the same uid everywhere; a file node1 writes, node5 reads.
    for i in 1..=5 {
        let uid = lab.on(&format!("node{i}"), "getent passwd alice | cut -d: -f3");
        assert_eq!(uid.trim(), ALICE_UID.to_string(), "node{i}");
    }
    lab.on(
        "node1",
        "setpriv --reuid alice --regid hpc --clear-groups sh -c 'echo written on node1 > /home/alice/from-node1'",
    );
    let seen = lab.on(
        "node5",
        "stat -c %u /home/alice/from-node1 && cat /home/alice/from-node1",
    );
    assert_eq!(seen, format!("{ALICE_UID}\nwritten on node1\n"));
    let on_head =
        std::fs::metadata(head_home.join("from-node1")).expect("not on the head's export");
    assert_eq!(on_head.uid(), ALICE_UID);

    // 5. MPI as alice, program on the shared area, output on her NFS home.
    let program = head_shared.join("mpi-hello");
    let cc = std::process::Command::new("mpicc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(beowulf_tests::repo_root().join("examples/mpi-hello.c"))
        .output()
        .expect("mpicc runs");
    assert!(cc.status.success(), "mpicc: {}", text(&cc.stderr));
    let submit_as_alice = |job: &str| {
        let out = lab.cluster_as(ALICE_UID, ALICE_GID, &["submit", "--wait", "--json", job]);
        let info = json(&out.stdout);
        (info, text(&out.stderr))
    };
    let run_mpi = |fabric_wanted: &str, file: &str, image: Option<&str>, flavor: &str| {
        let job = head_home.join(file);
        alice_file(&head_home, file, &mpi_job("auto", image, flavor));
        let (info, stderr) = submit_as_alice(job.to_str().unwrap());
        assert_eq!(info["state"], "COMPLETED", "{info:#}\n{stderr}");
        assert_eq!(info["fabric"], fabric_wanted, "{info:#}");
        let out = head_home.join(format!("mpi-{}.out", info["id"]));
        let meta = std::fs::metadata(&out).expect("no output on the NFS home");
        assert_eq!(meta.uid(), ALICE_UID, "{}", out.display());
        let output = std::fs::read_to_string(&out).unwrap();
        assert!(output.contains("allreduce ok sum=15"), "{output}");
        for rank in 0..5 {
            let line = format!("rank {rank} of 5 on node{}", rank + 1);
            assert!(output.contains(&line), "no {line:?} in {output}");
        }
        info
    };

    // 5a. `auto` on five ib nodes runs over ib (soft-RoCE, UCX).
    let mpi = run_mpi("ib", "mpi-auto-ib.toml", None, "openmpi");
    // The agent logs to the journal natively: its lines about the job carry the job's ID as a
    // field of their own.
    let lines = lab.on(
        "node1",
        &format!("journalctl -u computed --no-pager -o cat JOB={}", mpi["id"]),
    );
    assert!(
        lines.contains(&format!("job={}", mpi["id"])),
        "no journal line of computed with JOB={}: {lines}",
        mpi["id"]
    );

    // 5b. A batch script's srun runs steps on the job's nodes as alice: the agent playbook
    // installed srun, and the steps go between the agents over mutual TLS.
    let steps = head_home.join("steps.sh");
    alice_file(
        &head_home,
        "steps.sh",
        "#!/bin/bash\n#SBATCH -N 3\n#SBATCH -D /home/alice\n#SBATCH -o steps-%j.out\n\
         srun -l bash -c 'echo \"$(hostname) $(id -un) step $SLURM_STEP_ID\"'\n\
         srun -N2 -w node3 bash -c 'echo \"task $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME\"'\n",
    );
    let (info, stderr) = submit_as_alice(steps.to_str().unwrap());
    let out = head_home.join(format!("steps-{}.out", info["id"]));
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(info["state"], "COMPLETED", "{info:#}\n{stderr}\n{output}");
    for rank in 0..3 {
        let line = format!("{rank}: node{} alice step 0", rank + 1);
        assert!(output.contains(&line), "no {line:?} in {output}");
    }
    // -w node3 with -N2: node3 and the job's first other node, in the job's order.
    for (task, node) in [(0, 1), (1, 3)] {
        let line = format!("task {task} of 2 on node{node}");
        assert!(output.contains(&line), "no {line:?} in {output}");
    }

    // 5c. salloc as alice holds two nodes while its srun (run here, outside the job's nodes)
    // runs a step on them: the head relays it to the first node's agent with its own
    // certificate, and the agents take it from there.
    let srun = beowulf_tests::bin_dir().join("srun");
    let out = lab.slurm_as(
        ALICE_UID,
        ALICE_GID,
        "salloc",
        &[
            "-N2",
            "-J",
            "lab-salloc",
            srun.to_str().unwrap(),
            "-l",
            "-D",
            "/home/alice",
            "bash",
            "-c",
            "echo \"$(hostname) $(id -un) $SLURM_JOB_NAME $PWD\"",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "salloc: {}\n{stdout}",
        text(&out.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (rank, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("{rank}: node"))
                && line.ends_with(" alice lab-salloc /home/alice"),
            "{stdout}"
        );
    }

    // 6. init again changes nothing and says so; so does --plan.
    let out = lab.ok(&["init", "--nodes", "5"]);
    assert!(
        out.contains("nothing changed: every step was already satisfied"),
        "{out}"
    );
    let out = lab.ok(&["init", "--nodes", "5", "--plan"]);
    assert!(out.contains("plan: nothing to change"), "{out}");

    // 7. With node5's ib NIC down before init, init completes and node5 uses tcp, saying why.
    lab.on("node5", "ip link set eth1 down");
    let out = lab.ok(&["init", "--nodes", "5"]);
    println!("{out}");
    let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
    for i in 1..=5 {
        let n = node(&nodes, &format!("node{i}"));
        assert_eq!(n["state"], "IDLE", "{n}");
        assert_eq!(n["fabric"], if i == 5 { "tcp" } else { "ib" }, "{n}");
    }
    let reason = node(&nodes, "node5")["fabric_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!reason.is_empty(), "node5 has no fabric reason: {nodes:#}");

    // 7a. `fabric = "ib"` cannot be placed while node5 lacks ib: it waits, naming node5.
    let ib_job = head_home.join("mpi-ib.toml");
    alice_file(&head_home, "mpi-ib.toml", &mpi_job("ib", None, "openmpi"));
    let out = lab.cluster_as(
        ALICE_UID,
        ALICE_GID,
        &["submit", "--json", ib_job.to_str().unwrap()],
    );
    let id = json(&out.stdout)["id"].to_string();
    let shown = json(&lab.cluster(&["show", &id, "--json"]).stdout);
    assert_eq!(shown["state"], "PENDING", "{shown:#}");
    let why = text(&lab.cluster(&["why", &id]).stdout);
    assert!(why.contains("node5") && why.contains("fabric:ib"), "{why}");
    lab.ok(&["cancel", &id]);

    // 7b. `auto` runs over tcp and names node5.
    let info = run_mpi("tcp", "mpi-auto-tcp.toml", None, "openmpi");
    let reason = info["fabric_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("node5"), "{info:#}");

    // 8. The NIC comes back: the agent notices, node5 is ib again.
    lab.on("node5", "ip link set eth1 up");
    wait_for("node5 back on ib", Duration::from_secs(60), || {
        let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
        node(&nodes, "node5")["fabric"] == "ib"
    });

    // 8b. A fabric that looks up but carries nothing: node5's ib tap leaves the lab's ib bridge,
    //     so its port stays ACTIVE while no RoCE packet gets through. Only the pair probe can tell:
    //     node5 is degraded naming the peers it tried, and its agent then offers only tcp with the
    //     probe's reason. Back on the bridge, the next init clears the verdict and node5 is ib.
    let ns = beowulf_lab::addressing::netns_name(&lab.dir());
    let bridge = |args: &[&str]| {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "ip", "link", "set", "ib5"])
            .args(args)
            .status()
            .expect("cannot run ip");
        assert!(status.success(), "ip link set ib5 {args:?} failed");
    };
    bridge(&["nomaster"]);
    let state = lab.on("node5", "cat /sys/class/infiniband/rxe0/ports/1/state");
    assert!(state.contains("ACTIVE"), "{state}");
    let out = lab.ok(&["init", "--nodes", "5", "--playbook", "infiniband"]);
    println!("{out}");
    assert!(out.contains("verbs pair probe from node5 failed"), "{out}");
    for healthy in ["node1", "node2", "node3"] {
        assert!(
            !out.contains(&format!("verbs pair probe from {healthy} failed")),
            "{out}"
        );
    }
    wait_for(
        "node5 on tcp after the pair probe",
        Duration::from_secs(30),
        || {
            let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
            node(&nodes, "node5")["fabric"] == "tcp"
        },
    );
    let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
    let reason = node(&nodes, "node5")["fabric_reason"].to_string();
    assert!(reason.contains("pair probe"), "{reason}");
    assert_eq!(node(&nodes, "node4")["fabric"], "ib", "{nodes:#}");
    bridge(&["master", beowulf_lab::addressing::IB_BRIDGE]);
    lab.ok(&["init", "--nodes", "5", "--playbook", "infiniband"]);
    wait_for(
        "node5 back on ib after the probe passes",
        Duration::from_secs(30),
        || {
            let nodes = json(&lab.cluster(&["nodes", "--json"]).stdout);
            node(&nodes, "node5")["fabric"] == "ib"
        },
    );

    // 9. In containers: the image goes into the store on the NFS shared area, each node unpacks
    //    it once; each node's agent starts its rank in a container, as alice, over ib (the
    //    verbs devices passed through), and the other nodes' output reaches alice's NFS home
    //    through node1's agent.
    let tarball = beowulf_tests::mpi_image();
    lab.ok(&["image", "import", "mpi-hello", tarball.to_str().unwrap()]);
    let blobs = std::fs::read_dir(head_shared.join("images/blobs"))
        .expect("the image store is not on the shared area")
        .count();
    assert_eq!(blobs, 1);
    let info = run_mpi("ib", "mpi-container.toml", Some("mpi-hello"), "openmpi");
    for phase in ["queued", "image_staged", "containers_started", "mpi_ran"] {
        assert!(
            info["phases_ms"][phase].is_u64(),
            "no {phase} phase: {info:#}"
        );
    }
    println!("containerized MPI phases (ms): {}", info["phases_ms"]);

    // 9b. The same program built with MPICH (libfabric's verbs provider under RxM over
    //     soft-RoCE), its ranks started by the agents through their PMIx servers.
    let tarball = beowulf_tests::mpi_image_of("mpich");
    lab.ok(&["image", "import", "mpich-hello", tarball.to_str().unwrap()]);
    let info = run_mpi("ib", "mpich-container.toml", Some("mpich-hello"), "mpich");
    println!("containerized MPICH phases (ms): {}", info["phases_ms"]);

    // 10. NIS instead of LDAP: the lab head's ypserv serves maps of the cluster's users, the nodes
    //     bind with ypbind and resolve alice through it alone; a second run changes nothing.
    let inventory_path = lab.state.path().join("lab/cluster.toml");
    let mut inventory = beowulf_provision::ClusterInventory::load(&inventory_path)
        .expect("cannot read the lab's inventory");
    inventory.users.backend = beowulf_provision::inventory::UsersBackend::Nis;
    std::fs::write(&inventory_path, inventory.to_toml()).expect("cannot write the inventory");
    let out = lab.ok(&["init", "--nodes", "5", "--playbook", "users-nis"]);
    println!("{out}");
    for step in ["users-nis/maps", "users-nis/nsswitch"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| {step} ")))
            .unwrap_or_else(|| panic!("no {step} row: {out}"));
        assert!(row.contains("changed"), "{row}");
    }
    for n in 1..=5 {
        let name = format!("node{n}");
        let nsswitch = lab.on(&name, "grep '^passwd:' /etc/nsswitch.conf");
        assert!(
            nsswitch.contains("nis") && !nsswitch.contains("ldap"),
            "{name}: {nsswitch}"
        );
        let entry = lab.on(&name, "ypmatch alice passwd.byname");
        assert!(
            entry.starts_with(&format!("alice:*:{ALICE_UID}:{ALICE_GID}:")),
            "{name}: {entry}"
        );
        let uid = lab.on(&name, "getent passwd alice | cut -d: -f3");
        assert_eq!(uid.trim(), ALICE_UID.to_string(), "{name}");
        let group = lab.on(&name, "getent group hpc");
        assert!(group.contains("alice"), "{name}: {group}");
    }
    let out = lab.ok(&["init", "--nodes", "5", "--playbook", "users-nis"]);
    assert!(
        out.contains("nothing changed: every step was already satisfied"),
        "{out}"
    );
}
