//! CPU confinement of a node's tasks by cpuset, when the node keeps CPUs for its daemons
//! (`reserved_cpus`): the node's job parent cgroup (`<own>/beowulf/<node>`) gets the tasks' CPUs
//! as its `cpuset.cpus`, so no task can move onto the reserved ones with `sched_setaffinity`
//! (an affinity mask alone it could widen).
//!
//! - cgroup v2: the `cpuset` controller is enabled down to `beowulf/` and the node's directory
//!   holds the CPUs; every job cgroup below inherits them.
//! - cgroup v1: the cpuset hierarchy is its own mount. A new v1 cpuset starts with no CPUs and no
//!   memory nodes (a task cannot join it), so `beowulf/` copies its parent's and the node's
//!   directory gets the tasks' CPUs. Tasks join the node's directory, not a cgroup per job: every
//!   job cgroup would be two more writes per start under the cpuset lock, and the job's kill and
//!   accounting use the other hierarchies anyway.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const CPUS: &str = "cpuset.cpus";
const MEMS: &str = "cpuset.mems";

/// Why the tasks' CPUs could not be confined.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CpusetError {
    #[error("no cgroup v1 cpuset hierarchy is mounted for this process")]
    NoV1Hierarchy,
    #[error("the cgroup v2 cpuset controller is not available in {0} (on systemd, Delegate=yes)")]
    NoV2Controller(PathBuf),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CpusetError {
    let path = path.to_path_buf();
    move |source| CpusetError::Io { what, path, source }
}

fn read_value(path: &Path) -> Result<String, CpusetError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(io_error("read", path))
}

fn write_value(path: &Path, value: &str) -> Result<(), CpusetError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_error("write", path))
}

fn make_dir(path: &Path) -> Result<(), CpusetError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CpusetError::Io {
            what: "create",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Gives `dir` its parent's value of `file` when it has none yet (a new v1 cpuset).
fn inherit_if_empty(dir: &Path, file: &str) -> Result<(), CpusetError> {
    let own = dir.join(file);
    if !read_value(&own)?.is_empty() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(dir).join(file);
    write_value(&own, &read_value(&parent)?)
}

/// v1: `<own>/beowulf/<node>` in the cpuset hierarchy holds `cpus`; returns that directory,
/// which tasks join.
pub(crate) fn confine_v1(own: &Path, node: &str, cpus: &str) -> Result<PathBuf, CpusetError> {
    let beowulf = own.join("beowulf");
    let node_dir = beowulf.join(node);
    make_dir(&beowulf)?;
    inherit_if_empty(&beowulf, MEMS)?;
    inherit_if_empty(&beowulf, CPUS)?;
    make_dir(&node_dir)?;
    inherit_if_empty(&node_dir, MEMS)?;
    write_value(&node_dir.join(CPUS), cpus)?;
    Ok(node_dir)
}

/// v2: enables the cpuset controller from `own` down to `base` (`<own>/beowulf/<node>`, already
/// created) and gives `base` the tasks' `cpus`.
pub(crate) fn confine_v2(own: &Path, base: &Path, cpus: &str) -> Result<(), CpusetError> {
    let beowulf = base.parent().unwrap_or(base);
    for dir in [own, beowulf] {
        let available = read_value(&dir.join("cgroup.controllers"))?;
        if !available.split_whitespace().any(|c| c == "cpuset") {
            return Err(CpusetError::NoV2Controller(dir.to_path_buf()));
        }
        write_value(&dir.join("cgroup.subtree_control"), "+cpuset")?;
    }
    write_value(&base.join(CPUS), cpus)
}

/// Removes the v1 node directory and `beowulf/` where empty (at shutdown).
pub(crate) fn remove_v1(node_dir: &Path) {
    let _ = fs::remove_dir(node_dir);
    if let Some(beowulf) = node_dir.parent() {
        let _ = fs::remove_dir(beowulf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory tree shaped like a v1 cpuset hierarchy: regular files stand in for the
    /// kernel's (which a new directory would get by itself, empty).
    fn fake_cpuset(root: &Path, dirs: &[&str]) {
        for dir in dirs {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).unwrap();
            for file in [CPUS, MEMS] {
                if !dir.join(file).exists() {
                    fs::write(dir.join(file), "").unwrap();
                }
            }
        }
    }

    #[test]
    fn v1_node_directory_gets_the_tasks_cpus_and_its_parents_memory_nodes() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join(CPUS), "0-3\n").unwrap();
        fs::write(root.path().join(MEMS), "0\n").unwrap();
        // The kernel creates the files of a new cpuset empty: so do we, before confining.
        fake_cpuset(root.path(), &["beowulf", "beowulf/node1"]);
        let dir = confine_v1(root.path(), "node1", "1-3").unwrap();
        assert_eq!(dir, root.path().join("beowulf/node1"));
        let read = |p: &str| read_value(&root.path().join(p)).unwrap();
        assert_eq!(read("beowulf/cpuset.cpus"), "0-3");
        assert_eq!(read("beowulf/cpuset.mems"), "0");
        assert_eq!(read("beowulf/node1/cpuset.cpus"), "1-3");
        assert_eq!(read("beowulf/node1/cpuset.mems"), "0");
        // Another node's agent sharing `beowulf/` keeps what is there.
        fake_cpuset(root.path(), &["beowulf/node2"]);
        confine_v1(root.path(), "node2", "2").unwrap();
        assert_eq!(read("beowulf/cpuset.cpus"), "0-3");
        assert_eq!(read("beowulf/node2/cpuset.cpus"), "2");
    }

    #[test]
    fn v2_without_the_cpuset_controller_says_where_it_is_missing() {
        let own = tempfile::tempdir().unwrap();
        let base = own.path().join("beowulf/node1");
        fs::create_dir_all(&base).unwrap();
        fs::write(own.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let error = confine_v2(own.path(), &base, "1").unwrap_err();
        assert!(
            matches!(&error, CpusetError::NoV2Controller(dir) if dir == own.path()),
            "{error}"
        );
    }

    #[test]
    fn v2_enables_cpuset_down_to_the_node_and_writes_its_cpus() {
        let own = tempfile::tempdir().unwrap();
        let base = own.path().join("beowulf/node1");
        fs::create_dir_all(&base).unwrap();
        for dir in [own.path().to_path_buf(), own.path().join("beowulf")] {
            fs::write(dir.join("cgroup.controllers"), "cpuset cpu\n").unwrap();
            fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        }
        fs::write(base.join(CPUS), "").unwrap();
        confine_v2(own.path(), &base, "1").unwrap();
        assert_eq!(read_value(&base.join(CPUS)).unwrap(), "1");
        assert_eq!(
            read_value(&own.path().join("beowulf/cgroup.subtree_control")).unwrap(),
            "+cpuset"
        );
    }
}
