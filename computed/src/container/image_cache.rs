//! The node-local image cache: each image's rootfs is unpacked once, under its digest, and shared
//! read-only by every container of every job that uses it.
//!
//! `<cache>/<hex digest>/` is complete when it exists: unpacking goes to a temporary directory
//! renamed into place at the end, so a crash midway leaves only a temporary directory (removed at
//! the next unpack of the same image) and several agents sharing a cache (a local cluster) never
//! see a half-unpacked image.

use super::ContainerError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    /// One lock per digest, so concurrent jobs on one agent unpack an image once.
    unpacking: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Self {
        ImageCache {
            dir,
            unpacking: Mutex::new(HashMap::new()),
        }
    }

    /// The rootfs of `digest`, unpacked from `tar` if not cached yet. Blocking: call it from a
    /// blocking thread.
    pub fn rootfs(&self, digest: &str, tar: &Path) -> Result<PathBuf, ContainerError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ContainerError::BadDigest(digest.to_string()))?;
        let target = self.dir.join(hex);
        if target.is_dir() {
            return Ok(target);
        }
        let lock = {
            let mut map = self.unpacking.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(hex.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        if target.is_dir() {
            return Ok(target);
        }
        let unpack_err = |dir: &Path, source: std::io::Error| ContainerError::Unpack {
            digest: digest.to_string(),
            tar: tar.to_path_buf(),
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| unpack_err(&self.dir, e))?;
        let temp = self.dir.join(format!(
            ".unpack-{hex}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = std::fs::File::open(tar).map_err(|source| ContainerError::ReadImage {
            digest: digest.to_string(),
            tar: tar.to_path_buf(),
            source,
        })?;
        let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        std::fs::create_dir(&temp).map_err(|e| unpack_err(&temp, e))?;
        if let Err(e) = archive.unpack(&temp) {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(unpack_err(&temp, e));
        }
        // Every container bind-mounts over a few directories; make sure they exist.
        for dir in ["proc", "sys", "dev", "tmp", ".beowulf"] {
            let _ = std::fs::create_dir_all(temp.join(dir));
        }
        match std::fs::rename(&temp, &target) {
            Ok(()) => Ok(target),
            // Another agent sharing the cache finished first.
            Err(_) if target.is_dir() => {
                let _ = std::fs::remove_dir_all(&temp);
                Ok(target)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                Err(unpack_err(&target, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_once_under_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("image.tar");
        std::fs::write(&tar, tar_with(&[("./bin/hello", "#!/bin/sh\necho hi\n")])).unwrap();
        let cache = ImageCache::new(dir.path().join("cache"));
        let digest = format!("sha256:{}", "ab".repeat(32));
        let rootfs = cache.rootfs(&digest, &tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("bin/hello")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert!(rootfs.join("proc").is_dir());
        // Cached: the tarball is not read again.
        std::fs::remove_file(&tar).unwrap();
        assert_eq!(cache.rootfs(&digest, &tar).unwrap(), rootfs);
    }

    #[test]
    fn bad_digests_and_missing_tarballs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path().join("cache"));
        let missing = dir.path().join("missing.tar");
        assert!(matches!(
            cache.rootfs("md5:abc", &missing),
            Err(ContainerError::BadDigest(_))
        ));
        let err = cache
            .rootfs(&format!("sha256:{}", "cd".repeat(32)), &missing)
            .unwrap_err();
        assert!(err.to_string().contains("missing.tar"), "{err}");
    }
}
