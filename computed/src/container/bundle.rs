//! The OCI bundle of one container: `config.json` generated for a job's process, next to a
//! read-only rootfs from the image cache.
//!
//! What every job container gets: the host's network (MPI and the fabric need the real NICs),
//! its own PID, IPC, mount and UTS namespaces (the hostname is the node's name), the image's
//! rootfs read-only with a fresh /tmp and /dev/shm, the host's /sys read-only (hwloc and UCX read
//! the topology and the verbs devices there), /dev/infiniband when the node has it, the user's
//! home and the job's directory bind-mounted, the job's user and groups, no new privileges, no
//! capabilities, and an unlimited memlock limit (RDMA registers memory).

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Open files per process: MPI opens a socket per peer and UCX more; Debian's default soft
/// limit of 1024 is too low for a few hundred ranks.
const NOFILE_LIMIT: u64 = 65_536;

/// Why the runtime spec of a container could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot build the {part} of the container spec: {source}")]
    Build {
        /// The part of `config.json` (`device rules`, `process`, ...).
        part: &'static str,
        source: oci_spec::OciSpecError,
    },
}

/// Why a container's bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot write the container bundle {}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the container bundle {}: {source}", dir.display())]
    Spec { dir: PathBuf, source: SpecError },
    #[error("cannot write the container bundle's {}: {source}", path.display())]
    Save {
        /// `<bundle>/config.json`.
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
}

/// A host directory mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

/// Everything that differs between job containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    pub rootfs: PathBuf,
    pub hostname: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The process's umask.
    pub umask: u32,
    pub binds: Vec<Bind>,
    /// Character devices to pass through (the verbs devices under /dev/infiniband).
    pub devices: Vec<PathBuf>,
    /// RLIMIT_MEMLOCK in bytes: unlimited (`u64::MAX`) where the agent may raise it (see
    /// [`memlock_limit`]).
    pub memlock: u64,
    /// RLIMIT_NOFILE (see [`nofile_limit`]).
    pub nofile: u64,
    /// The runtime's cgroup path for the container (relative: under the runtime's own cgroup,
    /// which is the job's).
    pub cgroups_path: String,
}

/// The memlock limit containers get: RDMA registers memory, so unlimited — the agent raises its
/// own hard limit first; where it cannot (no CAP_SYS_RESOURCE, as in some sandboxes) containers
/// get the agent's hard limit, since a runtime cannot set more either.
pub fn memlock_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const INFINITY: u64 = libc::RLIM_INFINITY;
    if setrlimit(Resource::RLIMIT_MEMLOCK, INFINITY, INFINITY).is_ok() {
        return u64::MAX;
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((_, hard)) if hard == INFINITY => u64::MAX,
        Ok((_, hard)) => hard,
        Err(_) => u64::MAX,
    }
}

/// The open-files limit containers get: [`NOFILE_LIMIT`], or the agent's hard limit if lower
/// and it cannot raise it.
pub fn nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if hard >= NOFILE_LIMIT {
            return NOFILE_LIMIT;
        }
        if setrlimit(Resource::RLIMIT_NOFILE, soft, NOFILE_LIMIT).is_err() {
            return hard;
        }
    }
    NOFILE_LIMIT
}

/// The verbs devices of this node (`/dev/infiniband/*`), empty without InfiniBand.
pub fn infiniband_devices() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/dev/infiniband") else {
        return Vec::new();
    };
    let mut devices: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_char_device()))
        .map(|e| e.path())
        .collect();
    devices.sort();
    devices
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

fn bind(source: &Path, destination: &Path, read_only: bool) -> Mount {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if read_only {
        options.push("ro");
    }
    bind_with(source, destination, &options)
}

/// A device node bound in: without `nodev`, which would make opening it fail with EACCES (the
/// device cgroup rules decide what the container may open).
fn device_bind(device: &Path) -> Mount {
    bind_with(device, device, &["bind", "nosuid"])
}

fn bind_with(source: &Path, destination: &Path, options: &[&str]) -> Mount {
    let mut m = mount("", "bind", "", options);
    m.set_destination(destination.to_path_buf());
    m.set_source(Some(source.to_path_buf()));
    m
}

/// The runtime spec for `config`.
pub fn spec(config: &ContainerConfig) -> Result<Spec, SpecError> {
    let e = |part: &'static str| move |source| SpecError::Build { part, source };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
        // MPI's shared-memory transport lives here: no size cap beyond the job's memory limit.
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "nodev", "mode=1777"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/tmp", "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=1777"]),
        bind(Path::new("/sys"), Path::new("/sys"), true),
    ];
    for device in &config.devices {
        mounts.push(device_bind(device));
    }
    for b in &config.binds {
        mounts.push(bind(&b.source, &b.destination, b.read_only));
    }

    let mut device_rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(e("device rules"))?,
    ];
    // The usual container devices (null, zero, full, random, urandom, tty, ptmx, pts).
    for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)] {
        device_rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(major)
                .minor(minor)
                .access("rwm")
                .build()
                .map_err(e("device rules"))?,
        );
    }
    device_rules.push(
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(136)
            .access("rwm")
            .build()
            .map_err(e("device rules"))?,
    );
    for device in &config.devices {
        if let Ok(meta) = std::fs::metadata(device) {
            let rdev = meta.rdev();
            device_rules.push(
                LinuxDeviceCgroupBuilder::default()
                    .allow(true)
                    .typ(LinuxDeviceType::C)
                    .major(libc::major(rdev) as i64)
                    .minor(libc::minor(rdev) as i64)
                    .access("rwm")
                    .build()
                    .map_err(e("device rules"))?,
            );
        }
    }

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(e("namespaces"))?;

    let rlimits = vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitMemlock)
            .hard(config.memlock)
            .soft(config.memlock)
            .build()
            .map_err(e("rlimits"))?,
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(config.nofile)
            .soft(config.nofile)
            .build()
            .map_err(e("rlimits"))?,
    ];

    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(config.uid)
                .gid(config.gid)
                .additional_gids(config.additional_gids.clone())
                .umask(config.umask)
                .build()
                .map_err(e("process's user"))?,
        )
        .args(config.args.clone())
        .env(
            config
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(config.cwd.clone())
        .no_new_privileges(true)
        // None at all: left out, runtimes would give their defaults (CAP_KILL, ...) to the user.
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(Capabilities::new())
                .effective(Capabilities::new())
                .inheritable(Capabilities::new())
                .permitted(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .map_err(e("capabilities"))?,
        )
        .rlimits(rlimits)
        .build()
        .map_err(e("process"))?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&config.cgroups_path))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(device_rules)
                .build()
                .map_err(e("resources"))?,
        )
        .masked_paths(
            [
                "/proc/acpi",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ]
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        )
        .readonly_paths(
            [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ]
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        )
        .build()
        .map_err(e("linux section"))?;

    let mut spec = Spec::default();
    spec.set_hostname(Some(config.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(config.rootfs.clone())
            .readonly(true)
            .build()
            .map_err(e("root"))?,
    ));
    spec.set_mounts(Some(mounts));
    spec.set_process(Some(process));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// Writes `<dir>/config.json` for `config` (creating `dir`).
pub fn write(dir: &Path, config: &ContainerConfig) -> Result<(), BundleError> {
    std::fs::create_dir_all(dir).map_err(|source| BundleError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let spec = spec(config).map_err(|source| BundleError::Spec {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("config.json");
    spec.save(&path)
        .map_err(|source| BundleError::Save { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerConfig {
        ContainerConfig {
            rootfs: "/var/cache/images/abc".into(),
            hostname: "node3".into(),
            args: vec!["mpirun".into(), "./hello".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: "/home/alice/run".into(),
            uid: 1001,
            gid: 1001,
            additional_gids: vec![27],
            umask: 0o027,
            binds: vec![Bind {
                source: "/home/alice".into(),
                destination: "/home/alice".into(),
                read_only: false,
            }],
            devices: Vec::new(),
            memlock: u64::MAX,
            nofile: NOFILE_LIMIT,
            cgroups_path: "bw-7-1-node3-0".into(),
        }
    }

    #[test]
    fn the_spec_runs_as_the_user_on_the_host_network_with_unlimited_memlock() {
        let spec = spec(&config()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["hostname"], "node3");
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["process"]["user"]["uid"], 1001);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["cwd"], "/home/alice/run");
        let namespaces: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!namespaces.contains(&"network"), "{namespaces:?}");
        assert!(namespaces.contains(&"pid") && namespaces.contains(&"uts"));
        let memlock = json["process"]["rlimits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "RLIMIT_MEMLOCK")
            .unwrap();
        assert_eq!(memlock["soft"], u64::MAX);
        let home = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/home/alice")
            .unwrap();
        assert_eq!(home["source"], "/home/alice");
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            assert_eq!(
                json["process"]["capabilities"][set],
                serde_json::json!([]),
                "{set}"
            );
        }
    }

    #[test]
    fn a_bundle_that_cannot_be_written_names_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let bundle = file.join("bundle");
        let error = write(&bundle, &config()).unwrap_err();
        assert!(
            matches!(&error, BundleError::Dir { dir, .. } if *dir == bundle),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "cannot write the container bundle {}: ",
                bundle.display()
            )),
            "{error}"
        );
        let bundle = dir.path().join("bundle");
        write(&bundle, &config()).unwrap();
        assert!(bundle.join("config.json").is_file());
    }

    #[test]
    fn devices_are_bound_without_nodev_and_allowed_by_their_numbers() {
        let mut c = config();
        // /dev/null stands in for a verbs device: a character device every machine has.
        c.devices = vec![PathBuf::from("/dev/null")];
        let json = serde_json::to_value(spec(&c).unwrap()).unwrap();
        let mount = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/dev/null")
            .unwrap();
        let options: Vec<&str> = mount["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert!(!options.contains(&"nodev"), "{options:?}");
        let allowed = json["linux"]["resources"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["allow"] == true && r["major"] == 1 && r["minor"] == 3);
        assert!(allowed, "{json:#}");
    }
}
