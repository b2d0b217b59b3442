//! `lab up`, `lab status`, `lab ssh`, `lab down`: the lab's life cycle over the pieces in the other modules.

use crate::addressing::{self, NodePlan, PREFIX};
use crate::host::{self, Cmd, Host};
use crate::image::{self, Provenance, write_file};
use crate::inventory::{LabNetwork, LabNode, lab_inventory, lab_inventory_text};
use crate::progress::Progress;
use crate::qemu::{self, Accel, VmSpec};
use crate::state::{LabPaths, LabState, read_pid};
use crate::{LabError, netns, ssh};
use beowulf_provision::{ClusterInventory, NodeName};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the image cache lives unless `BEOWULF_LAB_CACHE` says otherwise: a cache in the FHS sense,
/// rebuilt when missing, shared by every lab on the machine.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/beowulf/lab-image";
/// The environment variable that moves the image cache.
pub const CACHE_ENV: &str = "BEOWULF_LAB_CACHE";
/// The environment variable that forces an accelerator (`kvm`, `tcg`) instead of probing.
pub const ACCEL_ENV: &str = "BEOWULF_LAB_ACCEL";
/// Guest RAM per VM: systemd, sshd and small MPI jobs fit; 5 VMs use ~4 GiB of host RAM under TCG.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// How long `lab up` waits for every VM: 5 VMs need ~170 s under TCG on 2 idle cores; a loaded CI
/// machine can take several times that.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `lab down` waits for a VM after SIGTERM before SIGKILL: qemu exits at once on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Tools `lab up` runs on the host (all installed by scripts/lab-deps.sh).
pub const TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "qemu-img",
    "mmdebstrap",
    "apt-get",
    "apt-cache",
    "dpkg",
    "depmod",
    "modprobe",
    "cpio",
    "zstd",
    "mkfs.ext4",
    "tar",
    "ip",
    "ssh",
    "ssh-keygen",
    "/bin/busybox",
];

/// What `lab up` is asked for.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The lab's state directory.
    pub dir: PathBuf,
    pub cache: PathBuf,
    pub nodes: u32,
    pub memory_mib: u32,
    pub boot_timeout: Duration,
    /// `BEOWULF_LAB_ACCEL`, if set.
    pub accel: Option<String>,
}

impl LabConfig {
    /// A config with the defaults, the cache from `BEOWULF_LAB_CACHE` and the accelerator from
    /// `BEOWULF_LAB_ACCEL`.
    pub fn new(dir: impl Into<PathBuf>, nodes: u32) -> Self {
        Self {
            dir: dir.into(),
            cache: std::env::var_os(CACHE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
            nodes,
            memory_mib: DEFAULT_MEMORY_MIB,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            accel: std::env::var(ACCEL_ENV).ok(),
        }
    }
}

/// What `lab up` did.
#[derive(Debug, Clone)]
pub struct UpReport {
    pub image: Provenance,
    pub image_dir: PathBuf,
    pub accel: Accel,
    /// From starting the first VM until every VM answered over SSH.
    pub boot: Duration,
    pub nodes: Vec<NodePlan>,
    pub inventory: PathBuf,
    pub namespace: String,
}

/// One VM as `lab status` sees it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub name: String,
    pub pid: Option<u32>,
    pub alive: bool,
    pub rss_mib: Option<u64>,
    pub ssh: bool,
    pub gige: String,
    pub ib: String,
}

/// What `lab status` found.
#[derive(Debug, Clone)]
pub struct StatusReport {
    pub namespace: String,
    pub namespace_exists: bool,
    pub accel: Accel,
    pub nodes: Vec<NodeStatus>,
}

/// What `lab down` stopped and removed.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    pub stopped: Vec<(String, u32)>,
    pub namespace_removed: Option<String>,
}

fn check_host() -> Result<(), LabError> {
    if !host::is_root() {
        return Err(LabError::NotRoot);
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| !host::on_path(t))
        .collect();
    if !missing.is_empty() {
        return Err(LabError::MissingTools {
            missing: missing.join(", "),
        });
    }
    Ok(())
}

/// Brings a lab up: image (cached or built), network, keys, VMs, and waits until every VM answers SSH.
pub fn up(h: &dyn Host, cfg: &LabConfig, progress: &Progress) -> Result<UpReport, LabError> {
    let nodes = addressing::plan(cfg.nodes)?;
    check_host()?;
    let paths = LabPaths::new(&cfg.dir);
    if let Some(old) = LabState::load(&paths.state_file())? {
        let alive = alive_vms(&paths, &old).len();
        if alive > 0 {
            return Err(LabError::AlreadyUp {
                dir: paths.dir.clone(),
                alive,
                nodes: old.nodes,
            });
        }
        progress.say("cleaning up a lab that is no longer running");
        down(h, &cfg.dir, progress)?;
    }
    image::mkdir(&paths.dir)?;
    let (image, provenance) = image::ensure(h, &cfg.cache, progress)?;
    let accel = qemu::choose_accel(
        cfg.accel.as_deref(),
        &image.kernel(),
        &image.initramfs(),
        &paths.dir,
    )?;
    progress.say(&format!(
        "accelerator: {} ({})",
        accel.name(),
        if cfg.accel.is_some() {
            ACCEL_ENV
        } else {
            "probed"
        }
    ));
    let ns = addressing::netns_name(&paths.dir);
    let state = LabState {
        namespace: ns.clone(),
        nodes: cfg.nodes,
        accel,
        memory_mib: cfg.memory_mib,
        image: image.dir.clone(),
    };
    // Written before anything starts, so `lab down` can clean up after a failure at any later point.
    write_file(&paths.state_file(), &state.to_toml(), 0o644)?;
    let started = start(h, cfg, &paths, &state, &image, &nodes, progress);
    match started {
        Ok(boot) => Ok(UpReport {
            image: provenance,
            image_dir: image.dir,
            accel,
            boot,
            nodes,
            inventory: paths.inventory(),
            namespace: ns,
        }),
        Err(e) => {
            net_diagnostics(h, &paths, &ns);
            progress.say("lab up failed; stopping what it started (serial logs are kept)");
            if let Err(down_err) = down(h, &cfg.dir, progress) {
                progress.say(&format!("clean-up failed too: {down_err}"));
            }
            Err(e)
        }
    }
}

fn start(
    h: &dyn Host,
    cfg: &LabConfig,
    paths: &LabPaths,
    state: &LabState,
    image: &image::Image,
    nodes: &[NodePlan],
    progress: &Progress,
) -> Result<Duration, LabError> {
    progress.step("keys and seed disks", || prepare_nodes(h, paths, nodes))?;
    progress.step("network namespace", || {
        if netns::exists(&state.namespace) {
            h.run(&netns::down_command(&state.namespace))?;
        }
        netns::up_commands(&state.namespace, nodes)
            .iter()
            .try_for_each(|c| h.run(c).map(|_| ()))
    })?;
    let boot_start = Instant::now();
    progress.step(&format!("start {} VMs", nodes.len()), || {
        for n in nodes {
            let overlay = paths.overlay(&n.name);
            h.run(
                &Cmd::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .path_arg(&image.base())
                    .path_arg(&overlay),
            )?;
            let log = paths.serial_log(&n.name);
            image::mkdir(log.parent().unwrap_or(&paths.dir))?;
            let _ = std::fs::remove_file(&log);
            let spec = VmSpec {
                node: n.clone(),
                accel: state.accel,
                memory_mib: cfg.memory_mib,
                kernel: image.kernel(),
                initramfs: image.initramfs(),
                overlay,
                seed: paths.seed(&n.name),
                serial_log: log,
                pidfile: paths.pidfile(&n.name),
            };
            h.run(&qemu::vm_command(&spec).in_netns(&state.namespace))?;
        }
        Ok::<(), LabError>(())
    })?;
    progress.step("boot (all VMs in parallel)", || {
        wait_ready(paths, nodes, boot_start, cfg.boot_timeout, progress)
    })?;
    progress.step("ssh (verified host keys)", || {
        wait_ssh(
            h,
            paths,
            state,
            nodes,
            boot_start,
            cfg.boot_timeout,
            progress,
        )
    })?;
    Ok(boot_start.elapsed())
}

/// Generates the lab key and each node's host key, writes seed tars, known_hosts and the inventory.
fn prepare_nodes(h: &dyn Host, paths: &LabPaths, nodes: &[NodePlan]) -> Result<(), LabError> {
    let key = paths.key();
    image::mkdir(key.parent().unwrap_or(&paths.dir))?;
    for p in [key.clone(), key.with_extension("pub")] {
        let _ = std::fs::remove_file(p);
    }
    h.run(&ssh::keygen_command(&key, "beowulf-lab"))?;
    let client_pub = read(&key.with_extension("pub"))?;
    let hosts = addressing::hosts_file(nodes);
    let mut host_keys = Vec::new();
    for n in nodes {
        let dir = paths.node_dir(&n.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(LabError::io("remove", &dir))?;
        }
        let seed = dir.join("seed");
        for (d, mode) in [
            ("etc", 0o755),
            ("etc/ssh", 0o755),
            ("etc/beowulf-lab", 0o755),
            ("root", 0o700),
            ("root/.ssh", 0o700),
        ] {
            image::mkdir(&seed.join(d))?;
            set_mode(&seed.join(d), mode)?;
        }
        let host_key = seed.join("etc/ssh/ssh_host_ed25519_key");
        h.run(&ssh::keygen_command(&host_key, &format!("root@{}", n.name)))?;
        host_keys.push((n, read(&host_key.with_extension("pub"))?));
        write_file(&seed.join("root/.ssh/authorized_keys"), &client_pub, 0o600)?;
        write_file(&seed.join("etc/hosts"), &hosts, 0o644)?;
        write_file(
            &seed.join("etc/beowulf-lab/node.env"),
            &ssh::node_env(n, PREFIX),
            0o644,
        )?;
        // Members listed, not ".": extracting "." would reset the guest's / to this directory's mode.
        h.run(
            &Cmd::new("tar")
                .args(["-cf"])
                .path_arg(&paths.seed(&n.name))
                .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
                .path_arg(&seed)
                .args(["etc", "root"]),
        )?;
        std::fs::remove_dir_all(&seed).map_err(LabError::io("remove", &seed))?;
    }
    write_file(&paths.known_hosts(), &ssh::known_hosts(&host_keys), 0o644)?;
    let (head_gige, head_ib) = addressing::head();
    let network = LabNetwork {
        ssh_key: key.clone(),
        known_hosts: paths.known_hosts(),
        netns: addressing::netns_name(&paths.dir),
        head_gige,
        head_ib,
        prefix: PREFIX,
    };
    let nodes: Vec<LabNode> = host_keys
        .iter()
        .map(|(n, key)| LabNode {
            name: n.name.clone(),
            gige: n.gige,
            ib: n.ib,
            host_key: ssh::public_key_of(key),
        })
        .collect();
    let inventory = lab_inventory(&network, &nodes);
    write_file(&paths.inventory(), &lab_inventory_text(&inventory), 0o644)
}

fn wait_ready(
    paths: &LabPaths,
    nodes: &[NodePlan],
    start: Instant,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), LabError> {
    let mut waiting: Vec<&NodePlan> = nodes.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for n in waiting {
            let log = paths.serial_log(&n.name);
            let console = std::fs::read_to_string(&log).unwrap_or_default();
            match console_verdict(&console, &n.name) {
                Some(Ok(())) => {
                    progress.say(&format!(
                        "{} ready after {:.1} s",
                        n.name,
                        start.elapsed().as_secs_f64()
                    ));
                    continue;
                }
                Some(Err(reason)) => {
                    return Err(LabError::GuestFailed {
                        node: n.name.clone(),
                        reason,
                        log,
                    });
                }
                None => {}
            }
            if !read_pid(&paths.pidfile(&n.name)).is_some_and(host::pid_alive) {
                return Err(LabError::VmDied {
                    node: n.name.clone(),
                    log,
                });
            }
            if start.elapsed() > timeout {
                return Err(LabError::BootTimeout {
                    node: n.name.clone(),
                    what: "finish booting",
                    seconds: timeout.as_secs(),
                    log,
                    detail: String::new(),
                });
            }
            still.push(n);
        }
        waiting = still;
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}

/// What a node's serial console says: ready, failed (with the guest's reason), or nothing yet.
fn console_verdict(console: &str, node: &str) -> Option<Result<(), String>> {
    let failed = format!("{} {node} ", crate::recipe::FAILED_MARKER);
    if let Some(line) = console.lines().find(|l| l.contains(&failed)) {
        let reason = line.split_once(&failed).map_or(line, |(_, r)| r);
        return Some(Err(reason.trim().to_string()));
    }
    let ready = format!("{} {node} ", crate::recipe::READY_MARKER);
    console.contains(&ready).then_some(Ok(()))
}

fn ssh_ok(h: &dyn Host, paths: &LabPaths, ns: &str, address: &str) -> bool {
    ssh_check(h, paths, ns, address).is_ok()
}

fn ssh_check(h: &dyn Host, paths: &LabPaths, ns: &str, address: &str) -> Result<(), LabError> {
    let cmd = ssh::ssh_command(
        ns,
        &paths.key(),
        &paths.known_hosts(),
        address,
        false,
        &["true".into()],
    );
    h.run(&cmd).map(|_| ())
}

fn wait_ssh(
    h: &dyn Host,
    paths: &LabPaths,
    state: &LabState,
    nodes: &[NodePlan],
    start: Instant,
    timeout: Duration,
    progress: &Progress,
) -> Result<(), LabError> {
    std::thread::scope(|s| {
        let checks: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    loop {
                        let last = match ssh_check(h, paths, &state.namespace, &n.gige.to_string())
                        {
                            Ok(()) => {
                                progress.say(&format!(
                                    "{} answers ssh after {:.1} s",
                                    n.name,
                                    start.elapsed().as_secs_f64()
                                ));
                                return Ok(());
                            }
                            Err(e) => e.to_string(),
                        };
                        if start.elapsed() > timeout {
                            return Err(LabError::BootTimeout {
                                node: n.name.clone(),
                                what: "answer ssh with its recorded host key",
                                seconds: timeout.as_secs(),
                                log: paths.serial_log(&n.name),
                                detail: format!(" (last attempt: {last})"),
                            });
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            })
            .collect();
        checks
            .into_iter()
            .map(|c| c.join().unwrap_or(Ok(())))
            .collect::<Result<Vec<()>, LabError>>()
            .map(|_| ())
    })
}

/// VMs of `state` whose qemu (by pid file) is running, with their pids.
fn alive_vms(paths: &LabPaths, state: &LabState) -> Vec<(String, u32)> {
    addressing::plan(state.nodes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let pid = read_pid(&paths.pidfile(&n.name))?;
            is_our_qemu(pid, &paths.overlay(&n.name)).then_some((n.name, pid))
        })
        .collect()
}

/// The process is alive and is the qemu of this overlay (not an unrelated process that reused the PID).
fn is_our_qemu(pid: u32, overlay: &Path) -> bool {
    host::pid_alive(pid) && {
        let cmdline = host::pid_cmdline(pid);
        cmdline.contains(qemu::QEMU) && cmdline.contains(&overlay.display().to_string())
    }
}

/// Lists the lab's VMs: qemu alive, RSS, SSH reachable (checked in parallel), addresses.
pub fn status(h: &dyn Host, dir: &Path) -> Result<StatusReport, LabError> {
    let paths = LabPaths::new(dir);
    let state = LabState::load(&paths.state_file())?.ok_or_else(|| LabError::NotUp {
        dir: dir.to_path_buf(),
    })?;
    let nodes = addressing::plan(state.nodes)?;
    let ns_exists = netns::exists(&state.namespace);
    let statuses = std::thread::scope(|s| {
        let workers: Vec<_> = nodes
            .iter()
            .map(|n| {
                let (paths, state) = (&paths, &state);
                s.spawn(move || {
                    let pid = read_pid(&paths.pidfile(&n.name));
                    let alive = pid.is_some_and(|p| is_our_qemu(p, &paths.overlay(&n.name)));
                    NodeStatus {
                        name: n.name.clone(),
                        pid,
                        alive,
                        rss_mib: pid
                            .filter(|_| alive)
                            .and_then(host::pid_rss_kib)
                            .map(|k| k / 1024),
                        ssh: alive
                            && ns_exists
                            && ssh_ok(h, paths, &state.namespace, &n.gige.to_string()),
                        gige: n.gige.to_string(),
                        ib: n.ib.to_string(),
                    }
                })
            })
            .collect();
        workers.into_iter().filter_map(|w| w.join().ok()).collect()
    });
    Ok(StatusReport {
        namespace: state.namespace,
        namespace_exists: ns_exists,
        accel: state.accel,
        nodes: statuses,
    })
}

/// Runs `command` on `node` (a login shell when empty) over the lab's verified key; returns its exit code.
pub fn ssh_run(
    h: &dyn Host,
    dir: &Path,
    node: &NodeName,
    command: &[String],
    tty: bool,
) -> Result<i32, LabError> {
    let paths = LabPaths::new(dir);
    let inv_path = paths.inventory();
    if !inv_path.exists() {
        return Err(LabError::NotUp {
            dir: dir.to_path_buf(),
        });
    }
    let inv = ClusterInventory::load(&inv_path)?;
    let entry = inv.node(node).ok_or_else(|| LabError::UnknownNode {
        node: node.clone(),
        known: inv
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let ns = inv
        .ssh
        .netns
        .clone()
        .unwrap_or_else(|| addressing::netns_name(dir));
    let cmd = ssh::ssh_command(
        &ns,
        &inv.ssh.key,
        &inv.ssh.known_hosts,
        &entry.gige.address.to_string(),
        tty && command.is_empty(),
        command,
    );
    h.run_interactive(&cmd)
}

/// Stops every VM by its PID, deletes the namespace (with its bridges and taps) and the per-lab files
/// (overlays, seeds, keys, inventory). Keeps the image cache and the serial logs. Safe to run twice.
pub fn down(h: &dyn Host, dir: &Path, progress: &Progress) -> Result<DownReport, LabError> {
    if !host::is_root() {
        return Err(LabError::NotRoot);
    }
    let paths = LabPaths::new(dir);
    let mut report = DownReport::default();
    let state = LabState::load(&paths.state_file()).ok().flatten();
    // Every pid file under nodes/, not only the nodes lab.toml names: a damaged state file must not
    // leave a VM running.
    let mut vms = Vec::new();
    if let Ok(entries) = std::fs::read_dir(paths.nodes_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = read_pid(&paths.pidfile(&name))
                && is_our_qemu(pid, &paths.overlay(&name))
            {
                vms.push((name, pid));
            }
        }
    }
    vms.sort();
    for (name, pid) in &vms {
        host::signal(*pid, libc::SIGTERM);
        progress.say(&format!("stopping {name} (qemu pid {pid})"));
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, pid) in &vms {
        while host::pid_alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if host::pid_alive(*pid) {
            progress.say(&format!("{name} (pid {pid}) ignored SIGTERM; killing it"));
            host::signal(*pid, libc::SIGKILL);
            let hard = Instant::now() + Duration::from_secs(5);
            while host::pid_alive(*pid) && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    report.stopped = vms;
    let ns = state
        .as_ref()
        .map(|s| s.namespace.clone())
        .unwrap_or_else(|| addressing::netns_name(dir));
    if netns::exists(&ns) {
        h.run(&netns::down_command(&ns))?;
        progress.say(&format!(
            "deleted network namespace {ns} (bridges and taps with it)"
        ));
        report.namespace_removed = Some(ns);
    }
    for p in [paths.nodes_dir(), paths.dir.join("ssh")] {
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(LabError::io("remove", &p))?;
        }
    }
    for p in [paths.known_hosts(), paths.inventory(), paths.state_file()] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(LabError::io("remove", &p))?;
        }
    }
    Ok(report)
}

/// Writes the namespace's links, addresses and neighbours to `logs/net-diag.txt` for a post-mortem.
fn net_diagnostics(h: &dyn Host, paths: &LabPaths, ns: &str) {
    let mut text = String::new();
    for args in [
        &["-br", "link"][..],
        &["-br", "addr"],
        &["neigh"],
        &["-d", "link", "show", "type", "bridge"],
    ] {
        let cmd = Cmd::new("ip").args(["-n", ns]).args(args);
        text.push_str(&format!("$ {cmd}\n"));
        match h.run(&cmd) {
            Ok(out) => text.push_str(&out),
            Err(e) => text.push_str(&format!("{e}\n")),
        }
    }
    let _ = std::fs::write(paths.dir.join("logs/net-diag.txt"), text);
}

fn read(p: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(p).map_err(LabError::io("read", p))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(LabError::io("chmod", p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_says_ready_failed_or_nothing_yet() {
        let ready = "node1 login: BEOWULF-LAB-READY node1 uptime=154.63\n";
        assert_eq!(console_verdict(ready, "node1"), Some(Ok(())));
        // node10's marker is not node1's
        assert_eq!(
            console_verdict("BEOWULF-LAB-READY node10 uptime=1\n", "node1"),
            None
        );
        assert_eq!(console_verdict("[  OK  ] Started ssh\n", "node1"), None);
        let failed =
            "BEOWULF-LAB-FAILED node2 beowulf-lab-node: /sys/class/net/eth1 did not appear\n";
        assert_eq!(
            console_verdict(failed, "node2"),
            Some(Err(
                "beowulf-lab-node: /sys/class/net/eth1 did not appear".into()
            ))
        );
    }
}
