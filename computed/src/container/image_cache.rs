//! The node-local image cache: each image's rootfs is unpacked once, under its digest, and shared
//! read-only by every container of every job that uses it.
//!
//! `<cache>/<hex digest>/` is complete when it exists: unpacking goes to a temporary directory
//! renamed into place at the end, so a crash midway leaves only a temporary directory (removed at
//! the next unpack of the same image) and several agents sharing a cache (a local cluster) never
//! see a half-unpacked image.
//!
//! Images are users' data, and the agent is root. So (docs/security.md):
//! - the tarball is opened with the submitting user's credentials, never as root;
//! - a tarball a user named by path must hash to the digest the head resolved, or nothing is
//!   kept: a user who swaps it after submit cannot put other content under a digest another job
//!   trusts (a blob of the image store, root's and named by its digest, is not hashed again:
//!   SHA-256 of a few hundred MiB took minutes on the lab's emulated CPUs);
//! - setuid and setgid bits are dropped, device nodes are skipped, and every file belongs to
//!   root, not to the owner the archive names;
//! - the cache is readable by root alone (0700) and mounted `nosuid,nodev`, so nothing in it can
//!   be run or opened from the host by a user.

use super::ContainerError;
use beowulf_as_user::UserCredentials;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Permission bits never kept from an image: setuid and setgid.
const DROPPED_MODE_BITS: u32 = 0o6000;

#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    /// One lock per digest, so concurrent jobs on one agent unpack an image once.
    unpacking: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Set once the cache directory is made private and mounted nosuid,nodev.
    protected: OnceLock<()>,
    /// Whether to mount the cache `nosuid,nodev` (always, but in unit tests).
    mount: bool,
}

/// What an unpack left out of an image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub skipped_devices: usize,
    pub dropped_setid: usize,
}

/// Where an image's tarball comes from, which decides whether its bytes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarballSource {
    /// A blob of the head's image store: written by the head, root's, named by its digest.
    ImageStore,
    /// A file a user named by path: the user can change it at any time.
    UserPath,
}

/// Hashes what is read through it, when asked to.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl ImageCache {
    pub fn new(dir: PathBuf) -> Self {
        ImageCache {
            dir,
            unpacking: Mutex::new(HashMap::new()),
            protected: OnceLock::new(),
            mount: true,
        }
    }

    /// A cache that is not mounted over (unit tests, whose temporary directories must go away).
    #[cfg(test)]
    fn unmounted(dir: PathBuf) -> Self {
        ImageCache {
            mount: false,
            ..ImageCache::new(dir)
        }
    }

    /// The rootfs of `digest`, unpacked from `tar` (opened as `user`, and checked against the
    /// digest when it is a user's file) if not cached yet. Blocking: call it from a blocking
    /// thread.
    pub fn rootfs(
        &self,
        digest: &str,
        tar: &Path,
        source: TarballSource,
        user: &UserCredentials,
    ) -> Result<PathBuf, ContainerError> {
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
        self.protect().map_err(|e| unpack_err(&self.dir, e))?;
        let temp = self.dir.join(format!(
            ".unpack-{hex}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = beowulf_as_user::open_read_as(user, tar).map_err(|source| {
            ContainerError::ReadImage {
                digest: digest.to_string(),
                tar: tar.to_path_buf(),
                source,
            }
        })?;
        std::fs::create_dir(&temp).map_err(|e| unpack_err(&temp, e))?;
        let mut reader = HashingReader {
            inner: std::io::BufReader::with_capacity(1 << 20, file),
            hasher: (source == TarballSource::UserPath).then(Sha256::new),
        };
        let unpacked = unpack(&mut reader, &temp).and_then(|unpacked| {
            // The archive may end before the file does (padding after its end blocks).
            std::io::copy(&mut reader, &mut std::io::sink())?;
            Ok(unpacked)
        });
        let unpacked = match unpacked {
            Ok(unpacked) => unpacked,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                return Err(unpack_err(&temp, e));
            }
        };
        let actual = reader.hasher.map(|h| format!("{:x}", h.finalize()));
        if let Some(actual) = actual
            && actual != hex.to_ascii_lowercase()
        {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(ContainerError::DigestMismatch {
                digest: digest.to_string(),
                tar: tar.to_path_buf(),
                actual: format!("sha256:{actual}"),
            });
        }
        if unpacked != Unpacked::default() {
            tracing::warn!(
                %digest,
                tar = %tar.display(),
                skipped_devices = unpacked.skipped_devices,
                dropped_setid = unpacked.dropped_setid,
                "image unpacked without its device nodes and setuid/setgid bits"
            );
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

    /// Makes the cache directory root's alone and, when the agent is root, a `nosuid,nodev`
    /// mount of itself (once per agent; a mount another agent sharing the cache made is kept).
    fn protect(&self) -> std::io::Result<()> {
        if self.protected.get().is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        if self.mount && nix::unistd::geteuid().is_root() {
            mount_nosuid_nodev(&self.dir)?;
        }
        let _ = self.protected.set(());
        Ok(())
    }
}

/// Unpacks the archive read from `reader` into `dir`: device nodes skipped, setuid/setgid bits
/// dropped, every file owned by the agent (root, which a directory's mode does not stop from
/// creating its contents).
fn unpack(reader: &mut impl Read, dir: &Path) -> std::io::Result<Unpacked> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    archive.set_mask(DROPPED_MODE_BITS);
    let mut unpacked = Unpacked::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            unpacked.skipped_devices += 1;
            continue;
        }
        if entry.header().mode().unwrap_or(0) & DROPPED_MODE_BITS != 0 {
            unpacked.dropped_setid += 1;
        }
        entry.unpack_in(dir)?;
    }
    Ok(unpacked)
}

/// Bind-mounts `dir` onto itself with `nosuid,nodev`, unless it already is such a mount.
fn mount_nosuid_nodev(dir: &Path) -> std::io::Result<()> {
    use nix::mount::{MsFlags, mount};
    let dir = dir.canonicalize()?;
    if is_nosuid_nodev_mount(&dir)? {
        return Ok(());
    }
    let none: Option<&str> = None;
    mount(Some(&dir), &dir, none, MsFlags::MS_BIND, none)?;
    mount(
        none,
        &dir,
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        none,
    )?;
    Ok(())
}

/// Whether `dir` is a mount point whose (topmost) mount has `nosuid` and `nodev`.
fn is_nosuid_nodev_mount(dir: &Path) -> std::io::Result<bool> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let topmost = crate::launcher::parse_mountinfo(&text)
        .into_iter()
        .rfind(|m| m.mount_point == dir);
    Ok(topmost.is_some_and(|m| {
        let has = |option: &str| m.mount_options.iter().any(|o| o == option);
        has("nosuid") && has("nodev")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn root() -> UserCredentials {
        UserCredentials::primary_only(0, 0)
    }

    fn digest_of(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

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

    /// A user's hostile image: a setuid-root shell owned by root, a file owned by uid 4242 with
    /// setgid, and a device node giving raw access to the host's memory.
    fn hostile_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut file = |path: &str, mode: u32, uid: u64| {
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(mode);
            header.set_uid(uid);
            header.set_gid(uid);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, path, &b"sh\n"[..])
                .unwrap();
        };
        file("bin/suid-sh", 0o4755, 0);
        file("bin/sgid-tool", 0o2755, 4242);
        let mut device = tar::Header::new_gnu();
        device.set_entry_type(tar::EntryType::Char);
        device.set_path("dev/mem").unwrap();
        device.set_device_major(1).unwrap();
        device.set_device_minor(1).unwrap();
        device.set_mode(0o666);
        device.set_size(0);
        device.set_cksum();
        builder.append(&device, std::io::empty()).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn unpacks_once_under_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("image.tar");
        let bytes = tar_with(&[("./bin/hello", "#!/bin/sh\necho hi\n")]);
        std::fs::write(&tar, &bytes).unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        let digest = digest_of(&bytes);
        let rootfs = cache
            .rootfs(&digest, &tar, TarballSource::UserPath, &root())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("bin/hello")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert!(rootfs.join("proc").is_dir());
        let mode = std::fs::metadata(dir.path().join("cache")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700, "the cache is root's alone");
        // Cached: the tarball is not read again.
        std::fs::remove_file(&tar).unwrap();
        assert_eq!(
            cache
                .rootfs(&digest, &tar, TarballSource::UserPath, &root())
                .unwrap(),
            rootfs
        );
    }

    #[test]
    fn setuid_bits_device_nodes_and_owners_of_an_image_never_reach_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("hostile.tar");
        let bytes = hostile_tar();
        std::fs::write(&tar, &bytes).unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        let rootfs = cache
            .rootfs(&digest_of(&bytes), &tar, TarballSource::UserPath, &root())
            .unwrap();
        let suid = std::fs::metadata(rootfs.join("bin/suid-sh")).unwrap();
        assert_eq!(suid.mode() & 0o7777, 0o755, "setuid dropped");
        let sgid = std::fs::metadata(rootfs.join("bin/sgid-tool")).unwrap();
        assert_eq!(sgid.mode() & 0o7777, 0o755, "setgid dropped");
        assert_eq!(
            sgid.uid(),
            nix::unistd::geteuid().as_raw(),
            "owned by the agent"
        );
        assert!(!rootfs.join("dev/mem").exists(), "device node skipped");
    }

    #[test]
    fn a_blob_of_the_image_store_is_not_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("blob.tar");
        let bytes = tar_with(&[("etc/motd", "stored")]);
        std::fs::write(&tar, &bytes).unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        // The store names blobs by their digest; a wrong one here shows it is not recomputed.
        let named = format!("sha256:{}", "ef".repeat(32));
        assert!(
            cache
                .rootfs(&named, &tar, TarballSource::ImageStore, &root())
                .is_ok()
        );
        let other = format!("sha256:{}", "fe".repeat(32));
        assert!(
            cache
                .rootfs(&other, &tar, TarballSource::UserPath, &root())
                .is_err()
        );
    }

    #[test]
    fn a_tarball_that_changed_since_submit_is_refused_and_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("image.tar");
        let submitted = tar_with(&[("etc/motd", "the image the head hashed")]);
        let swapped = tar_with(&[("etc/motd", "what the user put there after")]);
        std::fs::write(&tar, &swapped).unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        let digest = digest_of(&submitted);
        let err = cache
            .rootfs(&digest, &tar, TarballSource::UserPath, &root())
            .unwrap_err();
        assert!(
            matches!(err, ContainerError::DigestMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("submit the job again"), "{err}");
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert!(!dir.path().join("cache").join(hex).exists());
    }

    #[test]
    fn a_tarball_the_user_cannot_read_is_not_read_for_them() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let tar = dir.path().join("root-only.tar");
        let bytes = tar_with(&[("secret", "root's data")]);
        std::fs::write(&tar, &bytes).unwrap();
        std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        let stranger = UserCredentials::primary_only(64_999, 64_999);
        let err = cache
            .rootfs(&digest_of(&bytes), &tar, TarballSource::UserPath, &stranger)
            .unwrap_err();
        assert!(matches!(err, ContainerError::ReadImage { .. }), "{err}");
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }

    #[test]
    fn the_cache_is_mounted_nosuid_nodev() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let cache = ImageCache::new(cache_dir.clone());
        cache.protect().unwrap();
        let protected = is_nosuid_nodev_mount(&cache_dir.canonicalize().unwrap()).unwrap();
        // Done again (another agent sharing the cache): no second mount on top.
        ImageCache::new(cache_dir.clone()).protect().unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = cache_dir.canonicalize().unwrap();
        let count = mounts
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
            .count();
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(protected, "the cache is not a nosuid,nodev mount point");
        assert_eq!(count, 1);
    }

    #[test]
    fn bad_digests_and_missing_tarballs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::unmounted(dir.path().join("cache"));
        let missing = dir.path().join("missing.tar");
        assert!(matches!(
            cache.rootfs("md5:abc", &missing, TarballSource::UserPath, &root()),
            Err(ContainerError::BadDigest(_))
        ));
        let err = cache
            .rootfs(
                &format!("sha256:{}", "cd".repeat(32)),
                &missing,
                TarballSource::UserPath,
                &root(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("missing.tar"), "{err}");
    }
}
