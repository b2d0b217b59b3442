//! The image store: `cluster image import` streams one rootfs tar here, stored by digest as
//! `<image_store>/blobs/sha256-<hex>.tar` and recorded by name. Jobs name an image by that name or
//! by an absolute path to a tarball; [`Head::resolve_image`] turns either into a digest and a tar.

use super::{Caller, Head, HeadError, Inner, Tx, now};
use crate::model::{ImageRecord, User};
use beowulf_as_user::UserCredentials;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Longest image name.
pub const MAX_NAME_LEN: usize = 128;

/// Size of a tar block: a tar archive is a whole number of them.
const TAR_BLOCK: usize = 512;

/// What a job's image reference resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference as the job gave it (a name or an absolute path).
    pub reference: String,
    /// `sha256:<hex>` of the tar.
    pub digest: String,
    /// The tar to unpack (in the image store, or the tarball the path named).
    pub tar_path: PathBuf,
}

/// A tarball named by path is taken to be unchanged while its path, size and mtime are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
}

/// Image names: `[a-z0-9][a-z0-9._-]*`, at most [`MAX_NAME_LEN`] characters.
pub fn validate_image_name(name: &str) -> Result<(), HeadError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(HeadError::Invalid(format!(
        "image name {name:?} is not valid: use lowercase letters, digits, '.', '_' and '-', \
         starting with a letter or digit, at most {MAX_NAME_LEN} characters"
    )))
}

/// An import in progress: the tar received so far, in a temporary file of the image store,
/// hashed as it is written. Dropping it before [`Head::finish_import`] removes the file.
#[derive(Debug)]
pub struct ImageUpload {
    name: String,
    owner: User,
    file: File,
    /// The temporary file, until it is renamed into `blobs/` (or dropped).
    tmp: Option<PathBuf>,
    hasher: Sha256,
    size: u64,
    /// The tar's first block, to check that it is a tar at all.
    first_block: Vec<u8>,
}

impl ImageUpload {
    /// Appends the next bytes of the tar.
    pub fn write(&mut self, data: &[u8]) -> Result<(), HeadError> {
        if self.first_block.len() < TAR_BLOCK {
            let take = (TAR_BLOCK - self.first_block.len()).min(data.len());
            self.first_block.extend_from_slice(&data[..take]);
        }
        self.file.write_all(data).map_err(|e| {
            HeadError::ImageIo(format!(
                "image {:?}: cannot write {}: {e}",
                self.name,
                self.tmp.as_deref().unwrap_or(Path::new("?")).display()
            ))
        })?;
        self.hasher.update(data);
        self.size += data.len() as u64;
        Ok(())
    }
}

impl Drop for ImageUpload {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take()
            && let Err(e) = fs::remove_file(&tmp)
        {
            tracing::warn!(path = %tmp.display(), "cannot remove an unfinished image upload: {e}");
        }
    }
}

impl Head {
    /// Starts importing `name` for `caller`: checks the name and that the caller may replace an
    /// existing image of that name, and opens a temporary file in the image store.
    pub fn begin_import(&self, caller: &Caller, name: &str) -> Result<ImageUpload, HeadError> {
        validate_image_name(name)?;
        self.read(|inner| may_replace(inner.images.get(name), caller))?;
        let store = self.config.image_store();
        let blobs = store.join("blobs");
        for dir in [&store, &blobs] {
            create_dir_0755(dir).map_err(|e| {
                HeadError::ImageIo(format!(
                    "cannot create the image store {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let tmp = store.join(format!("tmp-{:016x}", rand::random::<u64>()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|f| {
                f.set_permissions(fs::Permissions::from_mode(0o644))?;
                Ok(f)
            })
            .map_err(|e| {
                HeadError::ImageIo(format!(
                    "cannot write to the image store {}: {e}",
                    tmp.display()
                ))
            })?;
        Ok(ImageUpload {
            name: name.to_string(),
            owner: self.identities.of(caller).user,
            file,
            tmp: Some(tmp),
            hasher: Sha256::new(),
            size: 0,
            first_block: Vec::with_capacity(TAR_BLOCK),
        })
    }

    /// Ends an import whose stream ended normally: fsyncs the tar, moves it to
    /// `blobs/sha256-<hex>.tar` (or drops it when that blob exists), commits the record, and
    /// removes the blob of the image it replaced when no other name uses it.
    pub fn finish_import(
        &self,
        caller: &Caller,
        mut upload: ImageUpload,
    ) -> Result<ImageRecord, HeadError> {
        let name = upload.name.clone();
        check_tar(&name, upload.size, &upload.first_block)?;
        upload.file.sync_all().map_err(|e| {
            HeadError::ImageIo(format!("image {name:?}: cannot sync the upload: {e}"))
        })?;
        let hex = format!("{:x}", upload.hasher.clone().finalize());
        let blobs = self.config.image_store().join("blobs");
        let blob = blobs.join(format!("sha256-{hex}.tar"));
        let record = ImageRecord {
            name: name.clone(),
            digest: format!("sha256:{hex}"),
            size_bytes: upload.size,
            owner: upload.owner.clone(),
            created: now(),
            tar_path: blob.clone(),
        };

        // Under the lock, so that no other import or replacement runs between placing the blob,
        // committing the record and removing an unused blob.
        let mut inner = self.lock();
        may_replace(inner.images.get(&name), caller)?;
        if !blob.exists()
            && let Some(tmp) = upload.tmp.take()
        {
            let placed = fs::rename(&tmp, &blob).and_then(|()| File::open(&blobs)?.sync_all());
            if let Err(e) = placed {
                upload.tmp = Some(tmp);
                return Err(HeadError::ImageIo(format!(
                    "image {name:?}: cannot store {}: {e}",
                    blob.display()
                )));
            }
        }
        drop(upload);
        self.store.put_image(&name, Some(&record))?;
        inner.images.insert(name, record.clone());
        remove_unused_blobs(&inner, &blobs);
        Ok(record)
    }

    /// Every image, by name.
    pub fn list_images(&self) -> Vec<ImageRecord> {
        self.read(|inner| inner.images.values().cloned().collect())
    }

    /// Resolves a job's image reference: a stored image's name, or an absolute path to a
    /// tarball, opened with `user`'s credentials (the head never reads a path a user names as
    /// root) and hashed once per path, size and mtime. Takes the head's lock briefly and hashes
    /// outside it, so it must not be called inside [`Head::mutate`]; use [`Tx::resolve_image`]
    /// there.
    pub fn resolve_image(
        &self,
        reference: &str,
        user: &UserCredentials,
    ) -> Result<ResolvedImage, HeadError> {
        if let Some(found) = self.read(|inner| stored(inner, reference)) {
            return Ok(found);
        }
        let (file, key) = open_tarball(reference, user)?;
        if let Some(found) = self.read(|inner| cached(inner, reference, &key)) {
            return Ok(found);
        }
        let digest = hash_file(reference, file)?;
        self.lock()
            .image_digests
            .insert(key.clone(), digest.clone());
        Ok(ResolvedImage {
            reference: reference.to_string(),
            digest,
            tar_path: key.path,
        })
    }
}

impl Tx<'_> {
    /// [`Head::resolve_image`] inside a mutation. A tarball named by path and not yet hashed is
    /// hashed under the head's lock: resolve it once outside (at submit) to keep that off here.
    #[allow(
        dead_code,
        reason = "for job start, which resolves a job's image inside a mutation"
    )]
    pub fn resolve_image(
        &mut self,
        reference: &str,
        user: &UserCredentials,
    ) -> Result<ResolvedImage, HeadError> {
        if let Some(found) = stored(self.inner, reference) {
            return Ok(found);
        }
        let (file, key) = open_tarball(reference, user)?;
        if let Some(found) = cached(self.inner, reference, &key) {
            return Ok(found);
        }
        let digest = hash_file(reference, file)?;
        self.inner.image_digests.insert(key.clone(), digest.clone());
        Ok(ResolvedImage {
            reference: reference.to_string(),
            digest,
            tar_path: key.path,
        })
    }
}

/// Removes the temporary files of imports a previous head process did not finish.
pub(super) fn remove_stale_uploads(store: &Path) {
    let Ok(entries) = fs::read_dir(store) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("tmp-")
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::warn!(path = %entry.path().display(), "cannot remove a stale image upload: {e}");
        }
    }
}

/// Removes the blobs no image name and no active job uses. A job keeps the digest it resolved
/// at submit, so re-importing a name does not pull the image from under a queued or running job;
/// its blob goes at the first import after the job has ended.
fn remove_unused_blobs(inner: &Inner, blobs: &Path) {
    let mut used: std::collections::BTreeSet<&Path> = inner
        .images
        .values()
        .map(|i| i.tar_path.as_path())
        .collect();
    used.extend(
        inner
            .active
            .iter()
            .filter_map(|id| inner.jobs.get(id)?.image.as_ref())
            .map(|i| i.tar_path.as_path()),
    );
    let Ok(entries) = fs::read_dir(blobs) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !used.contains(path.as_path())
            && let Err(e) = fs::remove_file(&path)
        {
            tracing::warn!(path = %path.display(), "cannot remove an unused image: {e}");
        }
    }
}

fn may_replace(existing: Option<&ImageRecord>, caller: &Caller) -> Result<(), HeadError> {
    match existing {
        Some(image) if !caller.is_root() && image.owner.uid != caller.uid => {
            Err(HeadError::PermissionDenied(format!(
                "image {:?} belongs to {} (uid {}); only they or root may replace it (you are uid {}): \
                 import yours under another name",
                image.name, image.owner.name, image.owner.uid, caller.uid
            )))
        }
        _ => Ok(()),
    }
}

fn create_dir_0755(dir: &Path) -> std::io::Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Refuses data that cannot be a tar: empty, not whole blocks, or a first header whose checksum
/// is wrong.
fn check_tar(name: &str, size: u64, first_block: &[u8]) -> Result<(), HeadError> {
    let refuse = |why: &str| {
        Err(HeadError::Invalid(format!(
            "image {name:?}: the data sent is not a tar archive ({why}); `cluster image import` \
             sends one built from a tarball, a directory or an OCI layout"
        )))
    };
    if size == 0 {
        return refuse("it is empty");
    }
    if !size.is_multiple_of(TAR_BLOCK as u64) {
        return refuse("its size is not a multiple of 512 bytes");
    }
    if !tar_header_checksum_ok(first_block) {
        return refuse("its first header is corrupt");
    }
    Ok(())
}

/// True when `block` is a tar header whose checksum matches (sum of its bytes, with the checksum
/// field counted as spaces).
fn tar_header_checksum_ok(block: &[u8]) -> bool {
    if block.len() < TAR_BLOCK || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let Some(stored) = std::str::from_utf8(field)
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u64::from_str_radix(s, 8).ok())
    else {
        return false;
    };
    let sum: u64 = block[..TAR_BLOCK]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(*b)
            }
        })
        .sum();
    sum == stored
}

fn stored(inner: &Inner, reference: &str) -> Option<ResolvedImage> {
    inner.images.get(reference).map(|image| ResolvedImage {
        reference: reference.to_string(),
        digest: image.digest.clone(),
        tar_path: image.tar_path.clone(),
    })
}

fn cached(inner: &Inner, reference: &str, key: &FileKey) -> Option<ResolvedImage> {
    inner.image_digests.get(key).map(|digest| ResolvedImage {
        reference: reference.to_string(),
        digest: digest.clone(),
        tar_path: key.path.clone(),
    })
}

/// Opens a reference that is an absolute path to a file, as `user`, with its cache key taken from
/// the opened file (not from a second look at the path); any other reference is no image. Opened
/// non-blocking: a FIFO must not hold the head.
fn open_tarball(reference: &str, user: &UserCredentials) -> Result<(File, FileKey), HeadError> {
    let path = Path::new(reference);
    if !path.is_absolute() {
        return Err(HeadError::NoSuchImage(reference.to_string()));
    }
    let cannot_read = |e: std::io::Error| {
        HeadError::ImageIo(format!(
            "image {reference:?}: cannot read {reference} as uid {}: {e}; give a stored image's \
             name or an absolute path to a rootfs tarball you can read",
            user.uid
        ))
    };
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
    let file = beowulf_as_user::open_as(user, path, &options).map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(HeadError::Invalid(format!(
            "image {reference:?}: not a file; give a rootfs tarball, or import the directory with \
             `cluster image import NAME {reference}` and name the image"
        )));
    }
    let key = FileKey {
        path: path.to_path_buf(),
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    };
    Ok((file, key))
}

fn hash_file(reference: &str, mut file: File) -> Result<String, HeadError> {
    let io = |e: std::io::Error| {
        HeadError::ImageIo(format!("image {reference:?}: cannot read {reference}: {e}"))
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests;
