//! The job cgroups: `<agent's own cgroup>/beowulf/<node>/job_<id>.<run>` in every cgroup v1
//! hierarchy used (cpu, memory, freezer, pids), or in the cgroup v2 tree.

use super::cpus::cpu_list;
use super::cpuset::{self, CpusetError};
use super::{JobLimits, LaunchError};
use beowulf_types::{JobId, RunKey};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The v1 controllers a job cgroup is created in (whichever of them are mounted).
const V1_CONTROLLERS: [&str; 4] = ["cpu", "memory", "freezer", "pids"];
/// The v2 controllers enabled for job cgroups (whichever of them are available).
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
/// The leaf the agent moves itself into on cgroup v2 when its own cgroup has processes and
/// controllers cannot be enabled for children ("no internal processes" rule).
const V2_AGENT_LEAF: &str = "beowulf-agent";
const CFS_PERIOD_US: u64 = 100_000;
/// How long `kill` keeps freezing and killing before it gives up on processes that do not die.
const KILL_DEADLINE: Duration = Duration::from_secs(1);
/// How long to wait for a v1 freezer to report FROZEN before killing anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(200);

/// Why the cgroup layout of this process could not be detected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayoutError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "no cgroup v1 hierarchy with cpu, memory, freezer or pids and no cgroup2 mount found in /proc/self/mountinfo"
    )]
    NoHierarchy,
    #[error("no cgroup v2 entry (0::/...) in /proc/self/cgroup")]
    NoV2Entry,
}

/// A problem setting up the node's cgroup directories: [`Cgroups::init`] fails with
/// [`CgroupSetupError::NoHierarchy`] when no hierarchy is left, and returns the others as
/// warnings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupSetupError {
    #[error("cannot create cgroup {}{}: {source}", path.display(), controllers_note(controllers))]
    Create {
        path: PathBuf,
        /// The v1 hierarchy's controllers (empty on v2).
        controllers: Vec<String>,
        source: io::Error,
    },
    #[error("no cgroup hierarchy is usable: {}", join_failures(failures))]
    NoHierarchy { failures: Vec<CgroupSetupError> },
    #[error("cannot move computed into {}: {source}", leaf.display())]
    MoveAgent { leaf: PathBuf, source: io::Error },
    #[error(
        "cannot enable {value:?} in {}: {source}; job limits are not enforced",
        path.display()
    )]
    EnableControllers {
        /// What was written (`+cpu +memory +pids`).
        value: String,
        /// The `cgroup.subtree_control` file.
        path: PathBuf,
        source: io::Error,
    },
}

fn controllers_note(controllers: &[String]) -> String {
    if controllers.is_empty() {
        String::new()
    } else {
        format!(" ({})", controllers.join(","))
    }
}

fn join_failures(failures: &[CgroupSetupError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pids controller's value for `limits` (the same word in v1 and v2).
fn pids_max(limits: &JobLimits) -> String {
    limits
        .pids_max
        .map_or_else(|| "max".to_string(), |n| n.to_string())
}

/// One cgroup v1 hierarchy (mount) used for job cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Hierarchy {
    /// Controllers of this hierarchy that we use (`cpu`, `memory`, ...).
    pub controllers: Vec<String>,
    /// `<mount>/<own cgroup>/beowulf/<node>`.
    pub base: PathBuf,
}

#[derive(Debug)]
pub(crate) enum Cgroups {
    V1 {
        hierarchies: Vec<V1Hierarchy>,
        /// `<cpuset mount>/<own cgroup>/beowulf/<node>` when the node's tasks are confined to
        /// their CPUs ([`Cgroups::confine_cpus`]): every task joins it (see `cpuset.rs`).
        cpuset: Option<PathBuf>,
    },
    V2 {
        /// `<mount>/<own cgroup>/beowulf/<node>`.
        base: PathBuf,
        /// Controllers enabled for the job cgroups under `base`.
        controllers: Vec<String>,
        /// Set once we warned that a limit file is missing.
        warned_missing_limit: AtomicBool,
    },
}

/// A mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The path inside the filesystem that is mounted (`/` unless a subtree is bind-mounted).
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, ...).
    pub mount_options: Vec<String>,
    pub fstype: String,
    pub super_options: Vec<String>,
}

/// Parses /proc/self/mountinfo (only the fields we need).
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if sep < 6 || fields.len() < sep + 3 {
            continue;
        }
        mounts.push(Mount {
            root: unescape_mount_field(fields[3]),
            mount_point: PathBuf::from(unescape_mount_field(fields[4])),
            mount_options: fields[5].split(',').map(str::to_string).collect(),
            fstype: fields[sep + 1].to_string(),
            super_options: fields[sep + 3].split(',').map(str::to_string).collect(),
        });
    }
    mounts
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/self/cgroup: hierarchy controllers (empty for v2) and our path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnCgroup {
    pub hierarchy_id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<OwnCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(OwnCgroup {
                hierarchy_id: id,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// `<mount point>/<own path relative to the mount's root>`.
fn own_dir(mount: &Mount, own_path: &str) -> PathBuf {
    let relative = own_path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(own_path);
    let relative = relative.trim_start_matches('/');
    if relative.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(relative)
    }
}

/// What the cgroup layout looks like before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// v1 (legacy or hybrid): per hierarchy, controllers used and our own cgroup directory.
    V1(Vec<(Vec<String>, PathBuf)>),
    /// v2 (unified): our own cgroup directory.
    V2(PathBuf),
}

/// Decides between v1 and v2 from the mount table and our own cgroups. v1 wins when any of the
/// controllers we use is mounted as v1 (legacy and hybrid setups); otherwise a cgroup2 mount is used.
pub(crate) fn detect_layout(mountinfo: &str, proc_cgroup: &str) -> Result<Layout, LayoutError> {
    let mounts = parse_mountinfo(mountinfo);
    let own = parse_proc_cgroup(proc_cgroup);

    let mut v1: Vec<(Vec<String>, PathBuf)> = Vec::new();
    for controller in V1_CONTROLLERS {
        let Some(mount) = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
        else {
            continue;
        };
        let Some(mine) = own
            .iter()
            .find(|o| o.controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let dir = own_dir(mount, &mine.path);
        match v1.iter_mut().find(|(_, d)| *d == dir) {
            Some((controllers, _)) => controllers.push(controller.to_string()),
            None => v1.push((vec![controller.to_string()], dir)),
        }
    }
    if !v1.is_empty() {
        return Ok(Layout::V1(v1));
    }

    let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") else {
        return Err(LayoutError::NoHierarchy);
    };
    let Some(mine) = own
        .iter()
        .find(|o| o.hierarchy_id == 0 && o.controllers.is_empty())
    else {
        return Err(LayoutError::NoV2Entry);
    };
    let mut dir = own_dir(mount, &mine.path);
    // An earlier launcher in this process moved us into the agent leaf: use its parent.
    if dir.file_name().is_some_and(|n| n == V2_AGENT_LEAF)
        && let Some(parent) = dir.parent()
    {
        dir = parent.to_path_buf();
    }
    Ok(Layout::V2(dir))
}

/// Our own directory in the v1 hierarchy of `controller`, if it is mounted.
fn v1_own_dir(controller: &str) -> Option<PathBuf> {
    let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?);
    let own = parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup").ok()?);
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))?;
    let mine = own
        .iter()
        .find(|o| o.controllers.iter().any(|c| c == controller))?;
    Some(own_dir(mount, &mine.path))
}

/// Reads the system's layout.
pub(crate) fn detect_system_layout() -> Result<Layout, LayoutError> {
    let read = |path: &str| {
        fs::read_to_string(path).map_err(|source| LayoutError::Read {
            path: PathBuf::from(path),
            source,
        })
    };
    let mountinfo = read("/proc/self/mountinfo")?;
    let proc_cgroup = read("/proc/self/cgroup")?;
    detect_layout(&mountinfo, &proc_cgroup)
}

/// The `oom_kill N` line of a `memory.events` or `memory.oom_control` file.
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn job_dir_name(key: RunKey) -> String {
    format!("job_{}.{}", key.job.0, key.run)
}

pub(crate) fn parse_job_dir_name(name: &str) -> Option<RunKey> {
    let (id, run) = name.strip_prefix("job_")?.split_once('.')?;
    if !id.bytes().all(|b| b.is_ascii_digit()) || !run.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(RunKey {
        job: JobId(id.parse().ok()?),
        run: run.parse().ok()?,
    })
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

fn create_dir(path: &Path) -> io::Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn create_dir_all(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Removes a directory; a missing one is fine.
fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The pids listed in a cgroup.procs file (none when it is missing), and in those of the cgroups
/// below it (a container runtime puts each container in a child of the job's cgroup).
fn read_procs(path: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(path)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    if let Some(dir) = path.parent() {
        for child in child_dirs(dir) {
            pids.extend(read_procs(&child.join("cgroup.procs")));
        }
    }
    pids
}

/// The sub-cgroups of a cgroup directory.
fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes a cgroup and the cgroups below it, deepest first.
fn remove_tree(dir: &Path) -> io::Result<()> {
    for child in child_dirs(dir) {
        remove_tree(&child)?;
    }
    remove_dir(dir)
}

/// True unless the process is gone or a zombie (dead, waiting to be reaped).
pub(crate) fn pid_is_live(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return true;
    };
    !matches!(after.trim_start().chars().next(), Some('Z' | 'X' | 'x'))
}

fn sigkill(pid: i32) {
    // ESRCH (already gone) is fine; EPERM cannot happen for root and means nothing we can do otherwise.
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

impl Cgroups {
    /// Creates `<own>/beowulf/<node>` in every hierarchy (and, on v2, enables the controllers on the
    /// way down). Hierarchies where that fails are dropped; `Err` when none is left.
    pub(crate) fn init(
        layout: Layout,
        node: &str,
    ) -> Result<(Cgroups, Vec<CgroupSetupError>), CgroupSetupError> {
        let mut warnings = Vec::new();
        match layout {
            Layout::V1(list) => {
                let mut hierarchies = Vec::new();
                for (controllers, own) in list {
                    let base = own.join("beowulf").join(node);
                    match create_dir_all(&base) {
                        Ok(()) => hierarchies.push(V1Hierarchy { controllers, base }),
                        Err(source) => warnings.push(CgroupSetupError::Create {
                            path: base,
                            controllers,
                            source,
                        }),
                    }
                }
                if hierarchies.is_empty() {
                    return Err(CgroupSetupError::NoHierarchy { failures: warnings });
                }
                Ok((
                    Cgroups::V1 {
                        hierarchies,
                        cpuset: None,
                    },
                    warnings,
                ))
            }
            Layout::V2(own) => {
                let beowulf = own.join("beowulf");
                let base = beowulf.join(node);
                create_dir_all(&base).map_err(|source| CgroupSetupError::Create {
                    path: base.clone(),
                    controllers: Vec::new(),
                    source,
                })?;
                let mut controllers: Vec<String> =
                    V2_CONTROLLERS.iter().map(|c| c.to_string()).collect();
                for dir in [&own, &beowulf, &base] {
                    controllers = enable_v2_controllers(dir, &controllers, &mut warnings);
                }
                Ok((
                    Cgroups::V2 {
                        base,
                        controllers,
                        warned_missing_limit: AtomicBool::new(false),
                    },
                    warnings,
                ))
            }
        }
    }

    /// The job run's directory in every hierarchy.
    pub(crate) fn job_dirs(&self, key: RunKey) -> Vec<PathBuf> {
        let name = job_dir_name(key);
        match self {
            Cgroups::V1 { hierarchies, .. } => {
                hierarchies.iter().map(|h| h.base.join(&name)).collect()
            }
            Cgroups::V2 { base, .. } => vec![base.join(name)],
        }
    }

    /// How many processes of the job run the kernel's OOM killer ended: `oom_kill` of v2's
    /// `memory.events` (which counts the whole subtree), or of v1's `memory.oom_control` (kernels
    /// from 4.13). 0 when the files are missing.
    pub(crate) fn oom_kills(&self, key: RunKey) -> u64 {
        let name = job_dir_name(key);
        let files: Vec<PathBuf> = match self {
            Cgroups::V1 { hierarchies, .. } => hierarchies
                .iter()
                .filter(|h| h.controllers.iter().any(|c| c == "memory"))
                .map(|h| h.base.join(&name).join("memory.oom_control"))
                .collect(),
            Cgroups::V2 { base, .. } => vec![base.join(&name).join("memory.events")],
        };
        files
            .iter()
            .filter_map(|file| fs::read_to_string(file).ok())
            .map(|text| oom_kill_count(&text))
            .sum()
    }

    /// The cgroup.procs files a task writes itself into.
    pub(crate) fn procs_files(&self, key: RunKey) -> Vec<PathBuf> {
        self.job_dirs(key)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The cgroup.procs files a task of the job run writes itself into: its job's, and on v1 the
    /// node's cpuset when tasks are confined to their CPUs.
    pub(crate) fn join_files(&self, key: RunKey) -> Vec<PathBuf> {
        let mut files = self.procs_files(key);
        if let Cgroups::V1 {
            cpuset: Some(dir), ..
        } = self
        {
            files.push(dir.join("cgroup.procs"));
        }
        files
    }

    /// Confines every task of the node to `cpus` by cpuset (see `cpuset.rs`).
    pub(crate) fn confine_cpus(&mut self, cpus: &[u32]) -> Result<(), CpusetError> {
        let list = cpu_list(cpus);
        match self {
            Cgroups::V1 {
                hierarchies,
                cpuset,
            } => {
                let node = hierarchies
                    .first()
                    .and_then(|h| h.base.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let own = v1_own_dir("cpuset").ok_or(CpusetError::NoV1Hierarchy)?;
                *cpuset = Some(cpuset::confine_v1(&own, &node, &list)?);
                Ok(())
            }
            Cgroups::V2 { base, .. } => {
                let own = base
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(base)
                    .to_path_buf();
                cpuset::confine_v2(&own, base, &list)
            }
        }
    }

    /// True when the job run's cgroup exists in every hierarchy.
    pub(crate) fn exists(&self, key: RunKey) -> bool {
        self.job_dirs(key).iter().all(|d| d.is_dir())
    }

    pub(crate) fn prepare(&self, key: RunKey, limits: &JobLimits) -> Result<(), LaunchError> {
        let name = job_dir_name(key);
        let write = |path: PathBuf, value: String| {
            write_file(&path, &value).map_err(|source| LaunchError::WriteCgroup {
                run: key,
                path,
                value,
                source,
            })
        };
        let create = |path: &Path| {
            create_dir(path).map_err(|source| LaunchError::CreateCgroup {
                run: key,
                path: path.to_path_buf(),
                source,
            })
        };
        match self {
            Cgroups::V1 { hierarchies, .. } => {
                for h in hierarchies {
                    let dir = h.base.join(&name);
                    create(&dir)?;
                    for controller in &h.controllers {
                        match controller.as_str() {
                            "cpu" => {
                                write(dir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
                                let quota = if limits.cpus == 0 {
                                    "-1".to_string()
                                } else {
                                    (u64::from(limits.cpus) * CFS_PERIOD_US).to_string()
                                };
                                write(dir.join("cpu.cfs_quota_us"), quota)?;
                            }
                            "memory" => {
                                let limit = if limits.memory_mb == 0 {
                                    "-1".to_string()
                                } else {
                                    limits.memory_mb.saturating_mul(1 << 20).to_string()
                                };
                                write(dir.join("memory.limit_in_bytes"), limit)?;
                            }
                            "freezer" => {
                                // A leftover frozen state would hang the task at once.
                                write(dir.join("freezer.state"), "THAWED".to_string())?;
                            }
                            "pids" => {
                                write(dir.join("pids.max"), pids_max(limits))?;
                            }
                            _ => {}
                        }
                    }
                }
            }
            Cgroups::V2 {
                base,
                controllers,
                warned_missing_limit,
            } => {
                let dir = base.join(&name);
                create(&dir)?;
                let mut files = Vec::new();
                if controllers.iter().any(|c| c == "cpu") {
                    let quota = if limits.cpus == 0 {
                        "max".to_string()
                    } else {
                        (u64::from(limits.cpus) * CFS_PERIOD_US).to_string()
                    };
                    files.push(("cpu.max", format!("{quota} {CFS_PERIOD_US}")));
                }
                if controllers.iter().any(|c| c == "memory") {
                    let limit = if limits.memory_mb == 0 {
                        "max".to_string()
                    } else {
                        limits.memory_mb.saturating_mul(1 << 20).to_string()
                    };
                    files.push(("memory.max", limit));
                }
                if controllers.iter().any(|c| c == "pids") {
                    files.push(("pids.max", pids_max(limits)));
                }
                let wanted_limits =
                    limits.cpus != 0 || limits.memory_mb != 0 || limits.pids_max.is_some();
                if files.len() < V2_CONTROLLERS.len()
                    && wanted_limits
                    && !warned_missing_limit.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        cgroup = %dir.display(),
                        enabled = ?controllers,
                        "cgroup v2 controllers cpu/memory/pids are not all available for job cgroups; their limits are not enforced"
                    );
                }
                for (file, value) in files {
                    write(dir.join(file), value)?;
                }
            }
        }
        Ok(())
    }

    /// The live (not zombie) processes of the job run, over all hierarchies.
    pub(crate) fn live_pids(&self, key: RunKey) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for file in self.procs_files(key) {
            pids.extend(read_procs(&file));
        }
        pids.into_iter().filter(|p| pid_is_live(*p)).collect()
    }

    /// Kills every process of the job run; a missing cgroup is fine.
    pub(crate) fn kill(&self, key: RunKey) -> Result<(), LaunchError> {
        match self {
            Cgroups::V1 { hierarchies, .. } => {
                let name = job_dir_name(key);
                let freezer = hierarchies
                    .iter()
                    .find(|h| h.controllers.iter().any(|c| c == "freezer"))
                    .map(|h| h.base.join(&name))
                    .filter(|d| d.is_dir());
                match freezer {
                    Some(dir) => self.kill_frozen(key, &FreezeV1 { dir: &dir }),
                    None => {
                        self.kill_loop(key);
                        Ok(())
                    }
                }
            }
            Cgroups::V2 { base, .. } => {
                let dir = base.join(job_dir_name(key));
                if !dir.is_dir() {
                    return Ok(());
                }
                let kill_file = dir.join("cgroup.kill");
                match write_file(&kill_file, "1") {
                    Ok(()) => {
                        // cgroup.kill is race-free; just give the processes a moment to die.
                        self.kill_loop(key);
                        Ok(())
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => {
                        // Kernel before 5.14: freeze, kill, thaw.
                        self.kill_frozen(key, &FreezeV2 { dir: &dir })
                    }
                    Err(_) if !dir.is_dir() => Ok(()),
                    Err(source) => Err(LaunchError::KillCgroup {
                        run: key,
                        path: kill_file,
                        source,
                    }),
                }
            }
        }
    }

    /// Freeze, SIGKILL everything, thaw; until nothing live is left or the deadline passes.
    fn kill_frozen(&self, key: RunKey, freezer: &dyn Freezer) -> Result<(), LaunchError> {
        let deadline = Instant::now() + KILL_DEADLINE;
        loop {
            let frozen = freezer.freeze();
            if let Err(source) = &frozen {
                if !freezer.exists() {
                    return Ok(());
                }
                tracing::warn!(
                    job = %key.job, run = key.run, error = %source,
                    "cannot freeze the job's cgroup; killing without freezing"
                );
            }
            let pids = self.live_pids(key);
            for pid in &pids {
                sigkill(*pid);
            }
            if let Err(source) = freezer.thaw()
                && freezer.exists()
            {
                return Err(LaunchError::KillCgroup {
                    run: key,
                    path: freezer.path(),
                    source,
                });
            }
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                tracing::warn!(job = %key.job, run = key.run, pids = ?pids, "job processes survive SIGKILL; giving up for now");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL everything until nothing live is left or the deadline passes.
    fn kill_loop(&self, key: RunKey) {
        let deadline = Instant::now() + KILL_DEADLINE;
        loop {
            let pids = self.live_pids(key);
            if pids.is_empty() {
                return;
            }
            for pid in &pids {
                sigkill(*pid);
            }
            if Instant::now() >= deadline {
                tracing::warn!(job = %key.job, run = key.run, pids = ?pids, "job processes survive SIGKILL; giving up for now");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the job run's directories; missing ones are fine. `EBUSY` while processes remain.
    /// Removes the job run's directories if no process is left in them, without reading them:
    /// the kernel refuses to remove a cgroup that has processes or sub-cgroups (EBUSY). True when
    /// every directory is gone; false leaves the rest for [`Cgroups::remove`] after a look at
    /// what is inside. Reading cgroup.procs and listing every directory first was a third of
    /// the agent's system time in a run of short jobs (issue 7).
    pub(crate) fn remove_if_empty(&self, key: RunKey) -> bool {
        self.job_dirs(key).iter().all(|dir| remove_dir(dir).is_ok())
    }

    pub(crate) fn remove(&self, key: RunKey) -> Result<(), LaunchError> {
        let mut result = Ok(());
        for dir in self.job_dirs(key) {
            if let Err(source) = remove_tree(&dir)
                && result.is_ok()
            {
                result = Err(LaunchError::RemoveCgroup {
                    run: key,
                    path: dir,
                    source,
                });
            }
        }
        result
    }

    /// Job runs that have a directory under our node's base in any hierarchy.
    pub(crate) fn existing_jobs(&self) -> Vec<RunKey> {
        let bases: Vec<&Path> = match self {
            Cgroups::V1 { hierarchies, .. } => {
                hierarchies.iter().map(|h| h.base.as_path()).collect()
            }
            Cgroups::V2 { base, .. } => vec![base.as_path()],
        };
        let mut jobs = BTreeSet::new();
        for base in bases {
            let Ok(entries) = fs::read_dir(base) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(key) = entry.file_name().to_str().and_then(parse_job_dir_name)
                {
                    jobs.insert(key);
                }
            }
        }
        jobs.into_iter().collect()
    }

    /// Removes `<own>/beowulf/<node>` (and `<own>/beowulf`) where empty; at shutdown and in tests.
    pub(crate) fn remove_node_dirs(&self) {
        let bases: Vec<&Path> = match self {
            Cgroups::V1 { hierarchies, .. } => {
                hierarchies.iter().map(|h| h.base.as_path()).collect()
            }
            Cgroups::V2 { base, .. } => vec![base.as_path()],
        };
        for base in bases {
            let _ = fs::remove_dir(base);
            if let Some(parent) = base.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        if let Cgroups::V1 {
            cpuset: Some(dir), ..
        } = self
        {
            cpuset::remove_v1(dir);
        }
    }
}

/// Enables `wanted` controllers (those available) in `dir`'s cgroup.subtree_control and returns the
/// ones that are now enabled for its children. On `EBUSY` (our own cgroup has processes), moves this
/// process into a `beowulf-agent` leaf and retries once.
fn enable_v2_controllers(
    dir: &Path,
    wanted: &[String],
    warnings: &mut Vec<CgroupSetupError>,
) -> Vec<String> {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = wanted
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == c.as_str()))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return wanted;
    }
    let subtree = dir.join("cgroup.subtree_control");
    let value = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut result = write_file(&subtree, &value);
    if let Err(e) = &result
        && e.raw_os_error() == Some(libc::EBUSY)
    {
        let leaf = dir.join(V2_AGENT_LEAF);
        let moved = create_dir(&leaf)
            .and_then(|()| write_file(&leaf.join("cgroup.procs"), &std::process::id().to_string()));
        match moved {
            Ok(()) => {
                tracing::info!(leaf = %leaf.display(), "moved computed into its own cgroup leaf so job cgroups can have controllers");
                result = write_file(&subtree, &value);
            }
            Err(source) => warnings.push(CgroupSetupError::MoveAgent { leaf, source }),
        }
    }
    match result {
        Ok(()) => wanted,
        Err(source) => {
            warnings.push(CgroupSetupError::EnableControllers {
                value,
                path: subtree,
                source,
            });
            Vec::new()
        }
    }
}

/// Freezing a cgroup, v1 (freezer.state) or v2 (cgroup.freeze).
trait Freezer {
    fn freeze(&self) -> io::Result<()>;
    fn thaw(&self) -> io::Result<()>;
    fn exists(&self) -> bool;
    fn path(&self) -> PathBuf;
}

struct FreezeV1<'a> {
    dir: &'a Path,
}

impl Freezer for FreezeV1<'_> {
    fn freeze(&self) -> io::Result<()> {
        let state = self.dir.join("freezer.state");
        write_file(&state, "FROZEN")?;
        let start = Instant::now();
        loop {
            if fs::read_to_string(&state)?.trim() == "FROZEN" {
                return Ok(());
            }
            if start.elapsed() >= FREEZE_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "cgroup still FREEZING (a process in uninterruptible sleep?)",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn thaw(&self) -> io::Result<()> {
        write_file(&self.dir.join("freezer.state"), "THAWED")
    }
    fn exists(&self) -> bool {
        self.dir.is_dir()
    }
    fn path(&self) -> PathBuf {
        self.dir.join("freezer.state")
    }
}

struct FreezeV2<'a> {
    dir: &'a Path,
}

impl Freezer for FreezeV2<'_> {
    fn freeze(&self) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.freeze"), "1")?;
        let events = self.dir.join("cgroup.events");
        let start = Instant::now();
        loop {
            if fs::read_to_string(&events)?
                .lines()
                .any(|l| l.trim() == "frozen 1")
            {
                return Ok(());
            }
            if start.elapsed() >= FREEZE_WAIT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "cgroup not frozen yet",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn thaw(&self) -> io::Result<()> {
        write_file(&self.dir.join("cgroup.freeze"), "0")
    }
    fn exists(&self) -> bool {
        self.dir.is_dir()
    }
    fn path(&self) -> PathBuf {
        self.dir.join("cgroup.freeze")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/system.slice/computed.service
6:freezer:/
4:memory:/system.slice/computed.service
2:cpu,cpuacct:/system.slice/computed.service
0::/system.slice/computed.service
";

    #[test]
    fn v1_layout_groups_comounted_controllers_and_uses_own_paths() {
        let layout = detect_layout(HYBRID_MOUNTINFO, HYBRID_CGROUP).unwrap();
        assert_eq!(
            layout,
            Layout::V1(vec![
                (
                    vec!["cpu".into()],
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/system.slice/computed.service")
                ),
                (
                    vec!["memory".into()],
                    PathBuf::from("/sys/fs/cgroup/memory/system.slice/computed.service")
                ),
                (
                    vec!["freezer".into()],
                    PathBuf::from("/sys/fs/cgroup/freezer")
                ),
            ])
        );
    }

    #[test]
    fn v2_layout_from_unified_mount() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = "0::/system.slice/computed.service\n";
        assert_eq!(
            detect_layout(mountinfo, cgroup).unwrap(),
            Layout::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/computed.service"
            ))
        );
        let moved = "0::/system.slice/computed.service/beowulf-agent\n";
        assert_eq!(
            detect_layout(mountinfo, moved).unwrap(),
            Layout::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/computed.service"
            ))
        );
    }

    #[test]
    fn bind_mounted_subtree_is_stripped_and_escapes_decoded() {
        let mountinfo =
            "35 31 0:32 /docker/abc /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory\n";
        let cgroup = "4:memory:/docker/abc/inner\n";
        assert_eq!(
            detect_layout(mountinfo, cgroup).unwrap(),
            Layout::V1(vec![(
                vec!["memory".into()],
                PathBuf::from("/sys/fs/cgroup/my mem/inner")
            )])
        );
    }

    #[test]
    fn no_cgroups_is_an_error() {
        assert!(matches!(
            detect_layout("1 0 0:1 / / rw - ext4 /dev/sda rw\n", "0::/\n"),
            Err(LayoutError::NoHierarchy)
        ));
        let unified = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(matches!(
            detect_layout(unified, "4:memory:/\n"),
            Err(LayoutError::NoV2Entry)
        ));
    }

    #[test]
    fn v1_setup_fails_only_when_no_hierarchy_is_left_and_names_each_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let writable = dir.path().join("memory");
        let layout = Layout::V1(vec![
            (vec!["cpu".into(), "cpuacct".into()], file.clone()),
            (vec!["memory".into()], writable.clone()),
        ]);
        let (cgroups, warnings) = Cgroups::init(layout, "node1").unwrap();
        assert!(writable.join("beowulf/node1").is_dir());
        assert!(matches!(cgroups, Cgroups::V1 { ref hierarchies, .. } if hierarchies.len() == 1));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let warning = warnings[0].to_string();
        assert!(
            warning.starts_with(&format!(
                "cannot create cgroup {} (cpu,cpuacct): ",
                file.join("beowulf/node1").display()
            )),
            "{warning}"
        );

        let layout = Layout::V1(vec![(vec!["cpu".into()], file.clone())]);
        let Err(CgroupSetupError::NoHierarchy { failures }) = Cgroups::init(layout, "node1") else {
            panic!("a setup with no usable hierarchy succeeded");
        };
        assert!(
            matches!(&failures[..], [CgroupSetupError::Create { path, .. }] if *path == file.join("beowulf/node1")),
            "{failures:?}"
        );
    }

    #[test]
    fn job_dir_names_round_trip() {
        let key = RunKey {
            job: JobId(17),
            run: 2,
        };
        assert_eq!(job_dir_name(key), "job_17.2");
        assert_eq!(parse_job_dir_name("job_17.2"), Some(key));
        for bad in [
            "job_17", "job_.1", "job_1.", "job_a.1", "xjob_1.1", "job_1.+2",
        ] {
            assert_eq!(parse_job_dir_name(bad), None, "{bad}");
        }
    }
}
