//! Fast job starts: switches the kernel's cgroup core to `favordynmods`, so that moving a task
//! into its job cgroup does not wait for an RCU grace period.
//!
//! Every task start is a cgroup migration (the task writes itself into `cgroup.procs`). By
//! default the kernel optimises for rare migrations: each one waits for an RCU grace period,
//! measured at 7–14 ms on this project's machines, which was most of a job's submit-to-start
//! time. `favordynmods` (Linux 6.0+) makes migrations cheap at a small cost to fork and exit —
//! the trade a batch system wants, where starting tasks is the hot path. The mode is global to
//! the kernel and is switched on by mounting a hierarchy that carries the option:
//! - cgroup v1 and hybrid hosts: an empty named hierarchy, `name=beowulf-favordynmods`, at
//!   [`V1_FAVOR_MOUNT`] (no controllers, so nothing else changes);
//! - cgroup v2 hosts: a remount of the unified hierarchy with its current options plus
//!   `favordynmods` (what `mount -o remount,favordynmods /sys/fs/cgroup` does).

use super::cgroup::{Mount, parse_mountinfo};
use nix::mount::{MsFlags, mount};
use std::path::{Path, PathBuf};

/// The empty v1 hierarchy mounted only to switch the mode on.
const V1_FAVOR_NAME: &str = "name=beowulf-favordynmods";
/// Where it is mounted; under /run so that it goes away with a reboot, as the mode does.
pub const V1_FAVOR_MOUNT: &str = "/run/beowulf/cgroup-favordynmods";

/// What the agent must do to switch the mode on, decided from the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FavorAction {
    /// A cgroup mount already carries `favordynmods`.
    AlreadyOn,
    /// Mount the named v1 hierarchy (hosts with v1 controller hierarchies).
    MountV1Named,
    /// Remount the cgroup2 hierarchy with these per-mount flags and superblock options.
    RemountV2 {
        mount_point: PathBuf,
        flags: Vec<String>,
        data: String,
    },
    /// No cgroup filesystem is mounted.
    NoCgroups,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FavorOutcome {
    AlreadyOn,
    SwitchedOn(String),
}

/// Why the mode could not be switched on (task starts stay slower; nothing else changes).
#[derive(Debug, thiserror::Error)]
pub enum FavorError {
    #[error("cannot read {}: {source}", path.display())]
    ReadMounts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no cgroup filesystem is mounted")]
    NoCgroups,
    #[error("cannot create {}: {source}", path.display())]
    CreateMountPoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot mount cgroup -o {data} on {}: {source}", target.display())]
    MountV1 {
        data: String,
        target: PathBuf,
        source: nix::Error,
    },
    #[error("cannot remount {} with {data}: {source}", mount_point.display())]
    RemountV2 {
        mount_point: PathBuf,
        data: String,
        source: nix::Error,
    },
}

pub(crate) fn plan(mounts: &[Mount]) -> FavorAction {
    let cgroup_mounts = || {
        mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
    };
    if cgroup_mounts().any(|m| m.super_options.iter().any(|o| o == "favordynmods")) {
        return FavorAction::AlreadyOn;
    }
    if mounts.iter().any(|m| m.fstype == "cgroup") {
        return FavorAction::MountV1Named;
    }
    match mounts.iter().find(|m| m.fstype == "cgroup2") {
        Some(unified) => {
            let mut options: Vec<&str> = unified
                .super_options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "rw" && *o != "ro")
                .collect();
            options.push("favordynmods");
            FavorAction::RemountV2 {
                mount_point: unified.mount_point.clone(),
                flags: unified.mount_options.clone(),
                data: options.join(","),
            }
        }
        None => FavorAction::NoCgroups,
    }
}

/// The `MsFlags` that keep a mount's per-mount options across a remount.
fn remount_flags(options: &[String]) -> MsFlags {
    let mut flags = MsFlags::MS_REMOUNT;
    for option in options {
        flags |= match option.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    flags
}

/// Switches the mode on (idempotent). Needs root; the error says what failed.
pub fn favor_dynamic_moves() -> Result<FavorOutcome, FavorError> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let mountinfo =
        std::fs::read_to_string(MOUNTINFO).map_err(|source| FavorError::ReadMounts {
            path: PathBuf::from(MOUNTINFO),
            source,
        })?;
    match plan(&parse_mountinfo(&mountinfo)) {
        FavorAction::AlreadyOn => Ok(FavorOutcome::AlreadyOn),
        FavorAction::NoCgroups => Err(FavorError::NoCgroups),
        FavorAction::MountV1Named => {
            let target = Path::new(V1_FAVOR_MOUNT);
            std::fs::create_dir_all(target).map_err(|source| FavorError::CreateMountPoint {
                path: target.to_path_buf(),
                source,
            })?;
            let data = format!("none,{V1_FAVOR_NAME},favordynmods");
            mount(
                Some("cgroup"),
                target,
                Some("cgroup"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .map_err(|source| FavorError::MountV1 {
                data: data.clone(),
                target: target.to_path_buf(),
                source,
            })?;
            Ok(FavorOutcome::SwitchedOn(format!(
                "mounted cgroup -o {data} on {}",
                target.display()
            )))
        }
        FavorAction::RemountV2 {
            mount_point,
            flags,
            data,
        } => {
            mount(
                None::<&str>,
                &mount_point,
                None::<&str>,
                remount_flags(&flags),
                Some(data.as_str()),
            )
            .map_err(|source| FavorError::RemountV2 {
                mount_point: mount_point.clone(),
                data: data.clone(),
                source,
            })?;
            Ok(FavorOutcome::SwitchedOn(format!(
                "remounted {} with {data}",
                mount_point.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 26 0:30 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
44 35 0:39 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_hosts_get_the_named_v1_hierarchy() {
        assert_eq!(plan(&parse_mountinfo(HYBRID)), FavorAction::MountV1Named);
    }

    #[test]
    fn unified_hosts_remount_keeping_every_option() {
        let FavorAction::RemountV2 {
            mount_point,
            flags,
            data,
        } = plan(&parse_mountinfo(UNIFIED))
        else {
            panic!("expected a remount");
        };
        assert_eq!(mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");
        let flags = remount_flags(&flags);
        assert!(flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn a_mount_with_the_option_means_nothing_to_do() {
        let on = UNIFIED.replace("memory_recursiveprot", "memory_recursiveprot,favordynmods");
        assert_eq!(plan(&parse_mountinfo(&on)), FavorAction::AlreadyOn);
        let named = format!(
            "{HYBRID}50 35 0:40 / {V1_FAVOR_MOUNT} rw,nosuid - cgroup cgroup rw,name=beowulf-favordynmods,favordynmods\n"
        );
        assert_eq!(plan(&parse_mountinfo(&named)), FavorAction::AlreadyOn);
        assert_eq!(plan(&[]), FavorAction::NoCgroups);
    }
}
