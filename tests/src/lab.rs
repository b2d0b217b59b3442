//! The lab tier's harness: a VM lab in its own state directory, driven through `cluster`, taken
//! down on drop (a failing test leaves no VM); the tier runs only with `BEOWULF_LAB_TESTS=1`.

use crate::{bin_dir, processes_with, text};
use beowulf_provision::ClusterInventory;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

pub const GATE: &str = "BEOWULF_LAB_TESTS";

pub fn gated() -> bool {
    if std::env::var(GATE).as_deref() == Ok("1") {
        return true;
    }
    println!("skipped: lab tier runs with {GATE}=1 (scripts/test-lab.sh)");
    false
}

/// A lab in its own state directory; `cluster down` (a headnoded `cluster init` started) and
/// `cluster lab down` on drop, so a failing test leaves no VM and no daemon.
#[derive(Debug)]
pub struct Lab {
    pub state: tempfile::TempDir,
    pub downed: bool,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    pub fn new() -> Self {
        // Under /var/tmp, not /tmp: the overlays grow as VMs write, and /tmp may be a small tmpfs.
        let state = tempfile::Builder::new()
            .prefix("beowulf-lab-test-")
            .tempdir_in("/var/tmp")
            .expect("cannot create a state directory under /var/tmp");
        // Like /var/lib/beowulf: users other than root reach headnoded's socket through it.
        std::fs::set_permissions(
            state.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("cannot open the state directory to other users");
        Self {
            state,
            downed: false,
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.state.path().join("lab")
    }

    pub fn cluster(&self, args: &[&str]) -> Output {
        Command::new(bin_dir().join("cluster"))
            .args(args)
            .env("BEOWULF_STATE_DIR", self.state.path())
            .output()
            .expect("cannot run cluster")
    }

    /// `cluster ARGS` as another user (uid, gid; no supplementary groups).
    pub fn cluster_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(bin_dir().join("cluster"))
            .args(args)
            .env("BEOWULF_STATE_DIR", self.state.path())
            .uid(uid)
            .gid(gid)
            .output()
            .expect("cannot run cluster")
    }

    /// Runs Slurm's command `name` (`salloc`, `squeue`, ...: the `cluster` program under that
    /// name, as an install links it) as another user.
    pub fn slurm_as(&self, uid: u32, gid: u32, name: &str, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        Command::new(bin_dir().join("cluster"))
            .arg0(name)
            .args(args)
            .env("BEOWULF_STATE_DIR", self.state.path())
            .uid(uid)
            .gid(gid)
            .output()
            .expect("cannot run cluster")
    }

    /// Runs a shell command on a lab node as root (`cluster lab ssh`); panics naming the node and
    /// the command when it fails; returns its stdout.
    pub fn on(&self, node: &str, command: &str) -> String {
        self.ok(&["lab", "ssh", node, command])
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let start = Instant::now();
        let out = self.cluster(args);
        assert!(
            out.status.success(),
            // stderr first: it holds the error, and CI may show only the start of a long message
            "`cluster {}` failed ({}):\nstderr:\n{}\nstdout:\n{}{}",
            args.join(" "),
            out.status,
            text(&out.stderr),
            text(&out.stdout),
            self.logs_tail()
        );
        eprintln!(
            "`cluster {}` took {:.1} s",
            args.join(" "),
            start.elapsed().as_secs_f64()
        );
        text(&out.stdout)
    }

    /// The end of headnoded's log and the failed provisioning events, for a failure message.
    fn logs_tail(&self) -> String {
        let tail = |path: PathBuf, keep: &dyn Fn(&str) -> bool, n: usize| {
            let body = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = body.lines().filter(|l| keep(l)).collect();
            let from = lines.len().saturating_sub(n);
            format!("\n{}:\n{}", path.display(), lines[from..].join("\n"))
        };
        let failed = |l: &str| l.contains("failed") || l.contains("error");
        tail(self.state.path().join("init/events.jsonl"), &failed, 10)
            + &tail(self.state.path().join("logs/headnoded.log"), &|_| true, 30)
    }

    pub fn inventory(&self) -> ClusterInventory {
        ClusterInventory::load(&self.dir().join("cluster.toml"))
            .expect("lab up wrote no valid cluster.toml")
    }

    pub fn up(&self) -> String {
        let out = self.ok(&["lab", "up", "--nodes", "5"]);
        println!("{out}");
        out
    }

    pub fn down_and_check_clean(&mut self, ns: &str) {
        self.ok(&["lab", "down"]);
        self.downed = true;
        let dir = self.dir();
        let marker = dir.display().to_string();
        assert!(
            processes_with(&marker).is_empty(),
            "processes still run from {marker}: {:?}",
            processes_with(&marker)
        );
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} is still there"
        );
        assert!(
            !dir.join("nodes").exists(),
            "overlays are still there in {}",
            dir.join("nodes").display()
        );
        let links = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("ip link");
        for l in text(&links.stdout).lines() {
            let name = l.split(':').nth(1).unwrap_or_default().trim();
            assert!(
                !(name.starts_with("gige")
                    || name.starts_with("br-gige")
                    || name.starts_with("br-ib")),
                "a lab link is left on the host: {l}"
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the serial logs (lab/logs/) for the post-mortem; `lab down` below keeps them too.
            self.state.disable_cleanup(true);
            eprintln!(
                "lab state kept for inspection: {}",
                self.state.path().display()
            );
        }
        let _ = self.cluster(&["down"]);
        if !self.downed {
            let _ = self.cluster(&["lab", "down"]);
        }
    }
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    // /proc/self/status "Uid: real effective saved fs": no libc call needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
