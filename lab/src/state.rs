//! Where a lab keeps its files, and `lab.toml`: what `lab up` started, so `status` and `down` can find it.

use crate::LabError;
use crate::qemu::Accel;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The lab's files under its state directory (`<cluster state dir>/lab`).
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub dir: PathBuf,
}

impl LabPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
    pub fn inventory(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("ssh/id_ed25519")
    }
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn nodes_dir(&self) -> PathBuf {
        self.dir.join("nodes")
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.nodes_dir().join(node)
    }
    pub fn overlay(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("disk.qcow2")
    }
    pub fn seed(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("seed.tar")
    }
    pub fn pidfile(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("qemu.pid")
    }
    /// Serial logs live outside `nodes/` so they survive `lab down` for post-mortems.
    pub fn serial_log(&self, node: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{node}.serial.log"))
    }
}

/// `lab.toml`: the lab that is (or was last) up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabState {
    pub namespace: String,
    pub nodes: u32,
    pub accel: Accel,
    pub memory_mib: u32,
    pub image: PathBuf,
}

impl LabState {
    pub fn load(path: &Path) -> Result<Option<Self>, LabError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabError::io("read", path)(e)),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::State {
                path: path.to_path_buf(),
                reason: e.to_string().trim_end().to_string(),
            })
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).unwrap_or_default();
        format!(
            "# The Beowulf lab that `cluster lab up` started; `cluster lab down` reads it\n{body}"
        )
    }
}

/// Reads a qemu pid file ("1234\n").
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_unknown_fields() {
        let s = LabState {
            namespace: "beowulf-lab-01".into(),
            nodes: 5,
            accel: Accel::Tcg,
            memory_mib: 512,
            image: "/var/cache/beowulf/lab-image/abc".into(),
        };
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lab.toml");
        std::fs::write(&p, s.to_toml()).unwrap();
        assert_eq!(LabState::load(&p).unwrap(), Some(s));
        std::fs::write(&p, "namespace = \"x\"\nextra = 1\n").unwrap();
        assert!(LabState::load(&p).is_err());
        assert_eq!(LabState::load(&t.path().join("none")).unwrap(), None);
    }

    #[test]
    fn pid_files_are_read_leniently() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("qemu.pid");
        std::fs::write(&p, "4242\n").unwrap();
        assert_eq!(read_pid(&p), Some(4242));
        std::fs::write(&p, "junk").unwrap();
        assert_eq!(read_pid(&p), None);
    }
}
