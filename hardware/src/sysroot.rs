//! `SysRoot`: the path prefix under which detection reads `/proc`, `/sys` and `/etc`, and the error type.

use std::io;
use std::path::{Path, PathBuf};

/// Why detection failed. Every variant names the path it was reading.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {what}", path.display())]
    Parse { path: PathBuf, what: String },
    #[error("cannot list network addresses of the interfaces under {}: {source}", path.display())]
    Addresses {
        path: PathBuf,
        #[source]
        source: sysinfo::Error,
    },
}

/// A path prefix standing for `/`: the host itself, or a fixture tree captured from a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    prefix: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot::host()
    }
}

impl SysRoot {
    /// The running machine: paths are read as they are.
    pub fn host() -> SysRoot {
        SysRoot::new("/")
    }

    /// A tree whose `proc/`, `sys/` and `etc/` stand for the machine's.
    pub fn new(prefix: impl Into<PathBuf>) -> SysRoot {
        SysRoot {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// True when this is the running machine, so facts sysfs lacks (addresses, arch) can come from the OS.
    pub fn is_host(&self) -> bool {
        self.prefix == Path::new("/")
    }

    /// The full path of `rel` (written without a leading `/`, e.g. "proc/meminfo").
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.prefix.join(rel)
    }

    /// Reads a whole file; any failure is an error naming the path.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String, DetectError> {
        let path = self.path(rel);
        std::fs::read_to_string(&path).map_err(|source| DetectError::Read { path, source })
    }

    /// Reads a file that may be absent: `Ok(None)` when it does not exist, an error for any other failure.
    pub fn read_if_exists(&self, rel: impl AsRef<Path>) -> Result<Option<String>, DetectError> {
        let path = self.path(rel);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DetectError::Read { path, source }),
        }
    }

    /// Reads a sysfs attribute that may legitimately fail (absent, or EINVAL when the driver has no
    /// value, like `speed` on a virtual NIC): the trimmed text, or `None` on any failure or when empty.
    pub fn attr(&self, rel: impl AsRef<Path>) -> Option<String> {
        let text = std::fs::read_to_string(self.path(rel)).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// Sorted entry names of a directory; `Ok(None)` when the directory does not exist.
    pub fn list_if_exists(
        &self,
        rel: impl AsRef<Path>,
    ) -> Result<Option<Vec<String>>, DetectError> {
        let path = self.path(rel);
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DetectError::Read { path, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DetectError::Read {
                path: path.clone(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(Some(names))
    }

    /// Sorted entry names of a directory that must exist.
    pub fn list(&self, rel: impl AsRef<Path>) -> Result<Vec<String>, DetectError> {
        let rel = rel.as_ref();
        self.list_if_exists(rel)?.ok_or_else(|| DetectError::Read {
            path: self.path(rel),
            source: io::Error::from(io::ErrorKind::NotFound),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_slash_and_fixture_is_not() {
        assert!(SysRoot::host().is_host());
        assert!(!SysRoot::new("/tmp/fixture").is_host());
        assert_eq!(
            SysRoot::new("/tmp/fx").path("proc/meminfo"),
            PathBuf::from("/tmp/fx/proc/meminfo")
        );
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let root = SysRoot::new("/nonexistent-beowulf-root");
        let err = root.read("proc/meminfo").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot read /nonexistent-beowulf-root/proc/meminfo"),
            "{msg}"
        );
        assert!(root.read_if_exists("proc/meminfo").unwrap().is_none());
        assert!(
            root.list_if_exists("sys/class/infiniband")
                .unwrap()
                .is_none()
        );
        assert!(root.list("sys/class/net").is_err());
        assert_eq!(root.attr("sys/class/net/eth0/speed"), None);
    }
}
