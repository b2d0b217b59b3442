//! A local cluster: headnoded and N computed processes on this machine, no provisioning.
//! `cluster init --local` starts whatever is not running (so it also restarts a killed daemon);
//! `cluster down` stops them by the PIDs it recorded.

pub(crate) mod daemon;

use crate::client;
use crate::lab_head::{self, LabHead};
use anyhow::{Context, bail};
use beowulf_proto::v1;
use beowulf_provision::ca::ClusterCa;
use beowulf_types::{HEAD_TLS_NAME, NodeState};
use daemon::{alive, has_exited, is_our_process, spawn_in};
use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long daemons get to come up before `init` gives up and points at their logs.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `down` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub nodes: u32,
    pub cpus_per_node: u32,
    pub memory_per_node_mb: u64,
    pub heartbeat_timeout_ms: u64,
    /// The agents' `kill_wait_ms`: SIGTERM to SIGKILL when a run is stopped.
    pub kill_wait_ms: u64,
    /// TOML sections added to headnoded.toml (partitions, QOS, priority weights, shares).
    pub policy: Option<String>,
}

const HEAD: &str = "headnoded";

fn node_name(i: u32) -> String {
    format!("node{i}")
}

/// Starts the daemons that are not running, then waits until every node is registered.
pub async fn init(opts: &LocalOptions) -> anyhow::Result<()> {
    let started_at = now_ms();
    let dir = &opts.state_dir;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // Users other than the one who started the cluster reach the socket inside this directory.
    set_mode(dir, 0o755)?;
    let mut pids = read_pids(dir)?;
    let bin_dir = binary_dir()?;

    // Agents and head authenticate each other with certificates from the cluster's own CA, as
    // on real nodes.
    let ca = ClusterCa::ensure(&dir.join("tls"))?;
    ca.ensure_identity(HEAD_TLS_NAME, &["127.0.0.1".into(), "localhost".into()])?;
    let head_config = dir.join("headnoded.toml");
    let mut config = format!(
        "# Written by `cluster init --local`.\nstate_dir = {:?}\nsocket = {:?}\nagent_listen = \"127.0.0.1:0\"\nheartbeat_timeout_ms = {}\n\n{}",
        dir,
        opts.socket,
        opts.heartbeat_timeout_ms,
        tls_section(&ca, HEAD_TLS_NAME)
    );
    if let Some(policy) = &opts.policy {
        config.push_str("\n# Policy given with --policy:\n");
        config.push_str(policy);
    }
    std::fs::write(&head_config, config)?;
    let mut started = Vec::new();
    if !alive(&pids, HEAD, "headnoded") {
        let _ = std::fs::remove_file(dir.join("agent.addr"));
        let pid = spawn(
            &bin_dir.join("headnoded"),
            &head_config,
            &dir.join("logs/headnoded.log"),
        )?;
        pids.insert(HEAD.into(), pid);
        write_pids(dir, &pids)?;
        started.push(HEAD.to_string());
        wait_for(
            || dir.join("agent.addr").exists() && opts.socket.exists(),
            "headnoded to listen",
            dir,
            Starting {
                pid,
                program: "headnoded",
                log: &dir.join("logs/headnoded.log"),
            },
        )
        .await?;
    }
    for i in 1..=opts.nodes {
        let name = node_name(i);
        if alive(&pids, &name, "computed") {
            continue;
        }
        let node_dir = dir.join("nodes").join(&name);
        std::fs::create_dir_all(&node_dir)?;
        let config = node_dir.join("computed.toml");
        ca.ensure_identity(&name, &[])?;
        std::fs::write(
            &config,
            format!(
                "# Written by `cluster init --local`.\nnode_name = {name:?}\nhead_addr_file = {:?}\nstate_dir = {node_dir:?}\ncgroup_name = \"local-{:08x}-{name}\"\n# The agents share one machine: one image cache, MPI over loopback.\nimage_cache = {:?}\nlaunch_listen = \"127.0.0.1:0\"\nmpi_tcp_include = \"lo\"\nkill_wait_ms = {}\n{}\n[offer]\ncpus = {}\nmemory_mb = {}\n",
                dir.join("agent.addr"),
                path_hash(dir),
                dir.join(IMAGE_CACHE),
                opts.kill_wait_ms,
                reserved_cpus_line(),
                opts.cpus_per_node,
                opts.memory_per_node_mb
            ) + "\n"
                + &tls_section(&ca, &name),
        )?;
        let pid = spawn(
            &bin_dir.join("computed"),
            &config,
            &dir.join(format!("logs/{name}.log")),
        )?;
        pids.insert(name.clone(), pid);
        write_pids(dir, &pids)?;
        started.push(name);
    }

    let mut client = None;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if client.is_none() {
            client = client::connect(&opts.socket).await.ok();
        }
        if let Some(c) = client.as_mut()
            && let Ok(reply) = c.list_nodes(v1::ListNodesRequest {}).await
        {
            let nodes = reply.into_inner().nodes;
            let ready = (1..=opts.nodes).all(|i| {
                let name = node_name(i);
                nodes.iter().any(|n| {
                    n.name == name
                        && n.node_state() != Some(NodeState::Down)
                        && (!started.contains(&name)
                            || n.last_heartbeat_ms.unwrap_or(0) >= started_at)
                })
            });
            if ready {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the local cluster did not come up within {} s; see the logs in {}",
                START_TIMEOUT.as_secs(),
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if started.is_empty() {
        println!(
            "local cluster already up: headnoded and {} nodes running (state in {})",
            opts.nodes,
            dir.display()
        );
    } else {
        println!(
            "local cluster up in {:.1} s: started {} (state in {})",
            (now_ms() - started_at) as f64 / 1000.0,
            started.join(", "),
            dir.display()
        );
    }
    println!("socket: {}", opts.socket.display());
    Ok(())
}

/// Stops every daemon `init` started, by PID: SIGTERM, then SIGKILL after a grace period.
pub async fn down(state_dir: &Path) -> anyhow::Result<()> {
    let pids = read_pids(state_dir)?;
    if pids.is_empty() {
        println!(
            "nothing to stop: no daemons recorded in {}",
            state_dir.display()
        );
        return Ok(());
    }
    // Agents first, so they stop their tasks while the head still runs; the lab head's services
    // (slapd, nfs-ganesha) last, after everything that uses them.
    let service = |n: &str| lab_head::SERVICES.iter().find(|(name, _)| *name == n);
    let rank = |n: &str| match (n == HEAD, service(n).is_some()) {
        (false, false) => 0,
        (true, _) => 1,
        (false, true) => 2,
    };
    let mut order: Vec<(&String, &u32)> = pids.iter().collect();
    order.sort_by_key(|(n, _)| rank(n));
    for &(name, &pid) in &order {
        let program = match service(name) {
            Some((_, program)) => program,
            None if *name == HEAD => "headnoded",
            None => "computed",
        };
        if !is_our_process(pid, program) {
            continue;
        }
        signal(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while is_our_process(pid, program) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if is_our_process(pid, program) {
            signal(pid, libc::SIGKILL);
        }
        println!("stopped {name} (pid {pid})");
    }
    std::fs::remove_file(state_dir.join("pids")).ok();
    release_image_cache(&state_dir.join(IMAGE_CACHE));
    Ok(())
}

/// The image cache the local cluster's agents share, in its state directory.
const IMAGE_CACHE: &str = "image-cache";

/// Detaches the `nosuid,nodev` mount the agents put on their shared image cache (it outlives
/// them, as on a real node), so that the state directory can be removed.
fn release_image_cache(cache: &Path) {
    let Ok(cache) = cache.canonicalize() else {
        return;
    };
    let cache = cache.as_path();
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mounts| {
        let point = cache.to_string_lossy().replace(' ', "\\040");
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(point.as_str()))
    });
    if mounted && let Err(e) = nix::mount::umount2(cache, nix::mount::MntFlags::MNT_DETACH) {
        eprintln!(
            "warning: cannot unmount the image cache {}: {e}",
            cache.display()
        );
    }
}

/// The agents' `reserved_cpus`: the first CPU this machine lets us use, kept for the daemons and
/// the kernel when there is another one for the tasks. The agents of a local cluster share the
/// machine's cores, and their MPI ranks busy-poll: on this 2-core machine ranks spinning on both
/// cores stalled the whole machine (one job 1–5 s in 5, and once the kernel's workqueues for 43 s
/// so that the head failed the nodes). With the ranks on the other cores: 40 of 40 jobs in
/// 345–399 ms (docs/decisions.md).
fn reserved_cpus_line() -> String {
    let mut allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter();
    match (allowed.next(), allowed.next()) {
        (Some(first), Some(_)) => format!(
            "# CPU {first} is kept for the daemons and the kernel: ranks busy-polling on every core stalled them.\nreserved_cpus = [{first}]\n"
        ),
        _ => String::new(),
    }
}

/// A short stable hash of the state directory, so each local cluster's agents get their own cgroups.
fn path_hash(path: &Path) -> u32 {
    // FNV-1a: tiny, stable across runs and versions (unlike std's hasher).
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0x811c_9dc5_u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
}

fn spawn(binary: &Path, config: &Path, log: &Path) -> anyhow::Result<u32> {
    spawn_daemon(None, binary, config, log)
}

/// Starts a daemon with `--config config`, in network namespace `netns` when given.
fn spawn_daemon(
    netns: Option<&str>,
    binary: &Path,
    config: &Path,
    log: &Path,
) -> anyhow::Result<u32> {
    let args = ["--config".to_string(), config.display().to_string()];
    spawn_in(netns, binary, &args, log)
}

/// The `[tls]` section of a daemon's config for identity `name` of `ca`.
fn tls_section(ca: &ClusterCa, name: &str) -> String {
    let (cert, key) = ca.identity_paths(name);
    format!(
        "[tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
        ca.cert_path()
    )
}

/// Where the playbooks are: `BEOWULF_PLAYBOOKS`, the installed copy, or the source tree's
/// (`<repo>/target/<profile>/cluster` → `<repo>/playbooks`).
pub fn playbooks_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BEOWULF_PLAYBOOKS") {
        return Ok(PathBuf::from(dir));
    }
    let installed = PathBuf::from("/usr/share/beowulf/playbooks");
    if installed.is_dir() {
        return Ok(installed);
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    exe.ancestors()
        .map(|a| a.join("playbooks"))
        .find(|p| p.join("os-check.toml").is_file())
        .with_context(|| {
            "no playbooks found: install them in /usr/share/beowulf/playbooks or set BEOWULF_PLAYBOOKS"
                .to_string()
        })
}

/// Starts headnoded for the lab inside the lab's network namespace, where the VMs reach it on
/// the head's gigabit address; does nothing when it already answers on `socket`.
pub async fn start_lab_head(
    state_dir: &Path,
    socket: &Path,
    netns: &str,
    head_address: std::net::Ipv4Addr,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir.join("logs"))?;
    // The head's services first (they may have stopped while headnoded still runs).
    let lab_head = LabHead::new(state_dir);
    let mut pids = read_pids(state_dir)?;
    let started = lab_head
        .start(netns, head_address, &state_dir.join("logs"), &mut pids)
        .await;
    write_pids(state_dir, &pids)?;
    started?;
    if UnixStream::connect(socket).is_ok() {
        return Ok(());
    }
    let bin_dir = binary_dir()?;
    let node_bins = lab_head.node_binaries(&bin_dir)?;
    let playbooks = playbooks_dir()?;
    let head_vars: String = lab_head
        .vars()
        .iter()
        .map(|(k, v)| format!(", {k} = {v:?}"))
        .collect();
    // The CA the agent step installs on the nodes (node certificates are made by headnoded at
    // each run, for the nodes of the inventory).
    let ca = ClusterCa::ensure(&state_dir.join("tls"))?;
    ca.ensure_identity(HEAD_TLS_NAME, &[head_address.to_string()])?;
    let config = state_dir.join("headnoded.toml");
    std::fs::write(
        &config,
        format!(
            "# Written by `cluster init` for the lab: headnoded runs in the lab's namespace.\n\
             state_dir = {state:?}\nsocket = {socket:?}\nagent_listen = \"{head_address}:{AGENT_PORT}\"\n\
             image_store = {images:?}\nimage_store_on_nodes = {images_on_nodes:?}\n\n\
             {tls_section}\n[provision]\nplaybooks = {playbooks:?}\n\
             vars = {{ computed_binary = {computed:?}, rsh_binary = {rsh:?}, srun_binary = {srun:?}, tls_dir = {tls:?}, agent_port = \"{AGENT_PORT}\"{head_vars} }}\n",
            state = state_dir,
            images = lab_head.shared().join("images"),
            images_on_nodes = Path::new(lab_head::SHARED_ON_NODES).join("images"),
            computed = node_bins.join("computed"),
            rsh = node_bins.join("beowulf-rsh"),
            srun = node_bins.join("srun"),
            tls = state_dir.join("tls"),
            tls_section = tls_section(&ca, HEAD_TLS_NAME),
        ),
    )?;
    let pid = spawn_daemon(
        Some(netns),
        &bin_dir.join("headnoded"),
        &config,
        &state_dir.join("logs/headnoded.log"),
    )?;
    pids.insert(HEAD.into(), pid);
    write_pids(state_dir, &pids)?;
    wait_for(
        || UnixStream::connect(socket).is_ok(),
        "headnoded to answer",
        state_dir,
        Starting {
            pid,
            program: "headnoded",
            log: &state_dir.join("logs/headnoded.log"),
        },
    )
    .await
}

/// The head's agent API port on a real or lab cluster.
const AGENT_PORT: u16 = 7090;

/// Lines of a daemon's log shown when it exits while starting: its reason is in the last few.
const START_FAILURE_LOG_LINES: usize = 8;

/// What a daemon's log says about why it exited: its last `Error:` report without the
/// backtrace (`RUST_BACKTRACE` adds one), else the last lines.
fn start_failure(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let report = lines
        .iter()
        .rposition(|l| l.starts_with("Error: "))
        .map(|start| {
            lines[start..]
                .iter()
                .take_while(|l| !l.starts_with("Stack backtrace:"))
                .take(START_FAILURE_LOG_LINES)
                .copied()
                .collect::<Vec<_>>()
        });
    report
        .unwrap_or_else(|| lines[lines.len().saturating_sub(START_FAILURE_LOG_LINES)..].to_vec())
        .join("\n")
        .trim_end()
        .to_string()
}

/// A daemon being started: its PID, program name and log.
struct Starting<'a> {
    pid: u32,
    program: &'a str,
    log: &'a Path,
}

/// Waits until `ready`; fails at once, with the end of its log, when `daemon` exits first (a
/// head that refuses its store says why there, and waiting the whole start timeout helps nobody).
async fn wait_for(
    ready: impl Fn() -> bool,
    what: &str,
    dir: &Path,
    daemon: Starting<'_>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        if has_exited(daemon.pid) {
            let text = std::fs::read_to_string(daemon.log).unwrap_or_default();
            let tail = start_failure(&text);
            bail!(
                "{} (pid {}) exited while starting; the end of {}:\n{tail}",
                daemon.program,
                daemon.pid,
                daemon.log.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}; see {}",
                dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The directory holding `headnoded` and `computed`: `BEOWULF_BIN_DIR`, else beside this program.
fn binary_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BEOWULF_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = exe
        .parent()
        .context("this program has no directory")?
        .to_path_buf();
    for daemon in ["headnoded", "computed"] {
        if !dir.join(daemon).exists() {
            bail!(
                "{} not found beside {}; build the workspace (`cargo build --release`) or set BEOWULF_BIN_DIR",
                daemon,
                exe.display()
            );
        }
    }
    Ok(dir)
}

fn read_pids(dir: &Path) -> anyhow::Result<BTreeMap<String, u32>> {
    let path = dir.join("pids");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut pids = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let Some((name, pid)) = line.split_once(' ') else {
            continue;
        };
        let pid = pid
            .trim()
            .parse()
            .with_context(|| format!("{}:{}: bad pid {pid:?}", path.display(), n + 1))?;
        pids.insert(name.to_string(), pid);
    }
    Ok(pids)
}

fn write_pids(dir: &Path, pids: &BTreeMap<String, u32>) -> anyhow::Result<()> {
    let text: String = pids.iter().map(|(n, p)| format!("{n} {p}\n")).collect();
    let tmp = dir.join("pids.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("pids"))?;
    Ok(())
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked to be our daemon.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_failure_shows_the_error_report_without_its_backtrace() {
        let log = "INFO starting\nError: the log is damaged at bytes 10..20\n\nCaused by:\n    checksum\n\nStack backtrace:\n   0: main\n";
        assert_eq!(
            start_failure(log),
            "Error: the log is damaged at bytes 10..20\n\nCaused by:\n    checksum"
        );
        let plain = (1..=20).map(|i| format!("line {i}\n")).collect::<String>();
        assert_eq!(start_failure(&plain).lines().next(), Some("line 13"));
    }
}
