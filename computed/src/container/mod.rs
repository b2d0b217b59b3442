//! Containers for job processes: the node-local image cache ([`ImageCache`]) and the OCI bundle
//! each container runs from ([`bundle`]), run by an OCI runtime (runc or crun) that the launcher
//! starts inside the job's cgroup.

pub mod bundle;
mod image_cache;

pub use image_cache::{ImageCache, TarballSource};

use std::path::{Path, PathBuf};

/// Why a container could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("image {digest}: cannot read {}: {source}", tar.display())]
    ReadImage {
        digest: String,
        tar: PathBuf,
        source: std::io::Error,
    },
    #[error("image {digest}: cannot unpack {} into {}: {source}", tar.display(), dir.display())]
    Unpack {
        digest: String,
        tar: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "image {digest}: {} now hashes to {actual}: the tarball changed after the job was submitted; submit the job again",
        tar.display()
    )]
    DigestMismatch {
        digest: String,
        tar: PathBuf,
        actual: String,
    },
    #[error("image digest {0:?} is not of the form sha256:<64 hex digits>")]
    BadDigest(String),
    #[error(
        "no OCI runtime found: install runc or crun, or set `container_runtime` in computed.toml"
    )]
    NoRuntime,
}

/// The OCI runtime to run containers with: `configured` if given, else runc, else crun, from
/// the usual system paths. runc comes first because crun 1.8 refuses hosts whose cgroup v2
/// hierarchy has controllers while v1 is in use ("hybrid" hosts, such as the test machines).
pub fn find_runtime(configured: Option<&Path>) -> Result<PathBuf, ContainerError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    ["runc", "crun"]
        .iter()
        .flat_map(|name| {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
                .iter()
                .map(move |dir| Path::new(dir).join(name))
        })
        .find(|path| path.is_file())
        .ok_or(ContainerError::NoRuntime)
}
