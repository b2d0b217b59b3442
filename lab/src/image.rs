//! The lab's VM image: built once per recipe (see `recipe`) into the cache, atomically, then reused.
//!
//! A cached image is a directory `<cache>/<key>/` holding `base.qcow2` (read-only backing file for every
//! VM's overlay), `vmlinuz`, `initramfs.img` and `image.toml`. It is built in `<cache>/.build-<key>-<pid>/`
//! and renamed into place only when complete, so an interrupted build never looks cached.

use crate::LabError;
use crate::host::{Cmd, Host};
use crate::progress::Progress;
use crate::recipe;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The ext4 root filesystem's size. Sparse: the qcow2 base holds only what is used (~300 MiB); the
/// room is for what provisioning installs (agent, job images) in each VM's overlay.
pub const ROOT_FS_SIZE: &str = "4G";

/// A complete image in the cache.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub key: String,
    pub kernel_version: String,
}

impl Image {
    pub fn base(&self) -> PathBuf {
        self.dir.join("base.qcow2")
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("initramfs.img")
    }
    fn complete(&self) -> bool {
        [
            self.base(),
            self.kernel(),
            self.initramfs(),
            self.dir.join("image.toml"),
        ]
        .iter()
        .all(|p| p.is_file())
    }
}

/// Whether `ensure` found the image in the cache or built it (and how long that took).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    Cached,
    Built(Duration),
}

/// The kernel ABI Debian's `linux-image-amd64` currently points to.
pub fn kernel_version(host: &dyn Host) -> Result<String, LabError> {
    let out = host
        .run(&Cmd::new("apt-cache").args(["depends", recipe::KERNEL_META]))
        .map_err(|e| LabError::KernelVersion {
            reason: e.to_string(),
        })?;
    recipe::parse_kernel_version(&out).ok_or_else(|| LabError::KernelVersion {
        reason: format!(
            "`apt-cache depends {}` names no linux-image-<version>",
            recipe::KERNEL_META
        ),
    })
}

/// Returns the cached image for the current recipe, building it first when it is missing.
pub fn ensure(
    host: &dyn Host,
    cache: &Path,
    progress: &Progress,
) -> Result<(Image, Provenance), LabError> {
    let kv = kernel_version(host)?;
    let key = recipe::cache_key(&kv);
    let image = Image {
        dir: cache.join(&key),
        key: key.clone(),
        kernel_version: kv.clone(),
    };
    if image.complete() {
        progress.say(&format!("image: cached ({})", image.dir.display()));
        return Ok((image, Provenance::Cached));
    }
    std::fs::create_dir_all(cache).map_err(LabError::io("create", cache))?;
    remove_stale_builds(cache);
    let build = cache.join(format!(".build-{key}-{}", std::process::id()));
    if build.exists() {
        std::fs::remove_dir_all(&build).map_err(LabError::io("remove", &build))?;
    }
    std::fs::create_dir_all(&build).map_err(LabError::io("create", &build))?;
    progress.say(&format!(
        "image: building Debian {} with kernel {kv} into {} (log {})",
        recipe::SUITE,
        image.dir.display(),
        build.join("build.log").display()
    ));
    let start = Instant::now();
    let result = Builder {
        host,
        dir: &build,
        kv: &kv,
        progress,
    }
    .run();
    if let Err(e) = result {
        // Keep the log next to the cache, drop the half-built tree (hundreds of MiB).
        let log = cache.join(format!("build-{key}.log"));
        let _ = std::fs::rename(build.join("build.log"), &log);
        let _ = std::fs::remove_dir_all(&build);
        return Err(e);
    }
    if image.dir.exists() {
        // Another `lab up` finished the same build first: theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&build);
    } else {
        std::fs::rename(&build, &image.dir)
            .map_err(LabError::io("rename the built image into", &image.dir))?;
    }
    Ok((image, Provenance::Built(start.elapsed())))
}

/// Removes `.build-*` directories left by builds whose process is gone.
fn remove_stale_builds(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".build-") else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !crate::host::pid_alive(p)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

struct Builder<'a> {
    host: &'a dyn Host,
    dir: &'a Path,
    kv: &'a str,
    progress: &'a Progress,
}

impl Builder<'_> {
    fn log(&self) -> PathBuf {
        self.dir.join("build.log")
    }

    fn sh(&self, cmd: Cmd) -> Result<(), LabError> {
        self.host.run_logged(&cmd, &self.log())
    }

    fn step(
        &self,
        name: &'static str,
        f: impl FnOnce() -> Result<(), LabError>,
    ) -> Result<(), LabError> {
        self.progress
            .step(&format!("image: {name}"), f)
            .map_err(|e| match e {
                e @ LabError::BuildStep { .. } => e,
                e => LabError::BuildStep {
                    step: name,
                    reason: e.to_string(),
                    log: self.log(),
                },
            })
    }

    fn run(&self) -> Result<(), LabError> {
        self.step("fetch kernel", || self.fetch_kernel())?;
        self.step("root filesystem (mmdebstrap)", || self.rootfs())?;
        self.step("customize", || self.customize())?;
        self.step("disk image (ext4, qcow2)", || self.disk())?;
        self.step("initramfs", || self.initramfs())?;
        self.step("finish", || self.finish())
    }

    fn kernel_tree(&self) -> PathBuf {
        self.dir.join("kernel")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn fetch_kernel(&self) -> Result<(), LabError> {
        let debs = self.dir.join("debs");
        mkdir(&debs)?;
        let pkg = format!("linux-image-{}", self.kv);
        self.sh(Cmd::new("apt-get")
            .args(["download", "-q", &pkg])
            .cwd(&debs))?;
        let deb = std::fs::read_dir(&debs)
            .map_err(LabError::io("read", &debs))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| LabError::BuildStep {
                step: "fetch kernel",
                reason: format!("apt-get download {pkg} left no .deb in {}", debs.display()),
                log: self.log(),
            })?;
        self.sh(Cmd::new("dpkg")
            .arg("-x")
            .path_arg(&deb)
            .path_arg(&self.kernel_tree()))?;
        self.sh(Cmd::new("depmod")
            .arg("-b")
            .path_arg(&self.kernel_tree())
            .arg(self.kv))
    }

    fn rootfs(&self) -> Result<(), LabError> {
        let mut cmd = Cmd::new("mmdebstrap").args(["--variant=minbase", "--mode=root"]);
        for (verb, pattern) in [
            ("exclude", "/usr/share/man/*"),
            ("exclude", "/usr/share/locale/*"),
            ("include", "/usr/share/locale/locale.alias"),
            ("exclude", "/usr/share/doc/*"),
            ("exclude", "/usr/share/info/*"),
        ] {
            cmd = cmd.arg(format!("--dpkgopt=path-{verb}={pattern}"));
        }
        cmd = cmd
            .arg(format!("--include={}", recipe::PACKAGES.join(",")))
            .arg(recipe::SUITE)
            .path_arg(&self.rootfs_dir())
            .arg(recipe::MIRROR);
        self.sh(cmd)
    }

    fn customize(&self) -> Result<(), LabError> {
        let root = self.rootfs_dir();
        let src = self.kernel_tree().join("lib/modules").join(self.kv);
        let dst = root.join("lib/modules").join(self.kv);
        for d in recipe::MODULE_DIRS {
            let target = dst.join(d);
            if let Some(parent) = target.parent() {
                mkdir(parent)?;
            }
            self.sh(Cmd::new("cp")
                .arg("-a")
                .path_arg(&src.join(d))
                .path_arg(&target))?;
        }
        for d in recipe::MODULE_EXCLUDE {
            let p = dst.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(LabError::io("remove", &p))?;
            }
        }
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            copy(&src.join(f), &dst.join(f))?;
        }
        self.sh(Cmd::new("depmod").arg("-b").path_arg(&root).arg(self.kv))?;
        for (path, content, mode) in recipe::GUEST_FILES {
            write_file(&root.join(path), content, *mode)?;
        }
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        mkdir(&wants)?;
        for unit in recipe::ENABLED_UNITS {
            let link = wants.join(unit);
            if !link.exists() {
                std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)
                    .map_err(LabError::io("link", &link))?;
            }
        }
        disable_units(&root.join("etc/systemd/system"), recipe::DISABLED_UNITS)?;
        // Host keys come per node from the seed disk: an image-wide key would let any node pose as another.
        for e in std::fs::read_dir(root.join("etc/ssh"))
            .map_err(LabError::io("read", root.join("etc/ssh")))?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path()).map_err(LabError::io("remove", e.path()))?;
            }
        }
        // Each VM generates its own machine-id at first boot.
        write_file(&root.join("etc/machine-id"), "", 0o444)?;
        // Root without a password on the serial console only (sshd refuses empty passwords): a lab
        // whose network failed can still be debugged.
        self.sh(Cmd::new("chroot")
            .path_arg(&root)
            .args(["passwd", "-d", "root"]))
    }

    fn disk(&self) -> Result<(), LabError> {
        let raw = self.dir.join("base.raw");
        self.sh(Cmd::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "beowulf-root", "-d"])
            .path_arg(&self.rootfs_dir())
            .path_arg(&raw)
            .arg(ROOT_FS_SIZE))?;
        let base = self.dir.join("base.qcow2");
        self.sh(Cmd::new("qemu-img")
            .args(["convert", "-c", "-O", "qcow2"])
            .path_arg(&raw)
            .path_arg(&base))?;
        std::fs::remove_file(&raw).map_err(LabError::io("remove", &raw))?;
        set_mode(&base, 0o444)
    }

    fn initramfs(&self) -> Result<(), LabError> {
        let w = self.dir.join("initramfs");
        let kt = self.kernel_tree();
        let moddir = |root: &Path| root.join("lib/modules").join(self.kv);
        for d in ["bin", "sbin", "proc", "sys", "dev", "etc", "newroot"] {
            mkdir(&w.join(d))?;
        }
        mkdir(&moddir(&w))?;
        copy(Path::new("/bin/busybox"), &w.join("bin/busybox"))?;
        write_file(&w.join("init"), recipe::INIT, 0o755)?;
        let mut files = Vec::new();
        for m in recipe::INITRAMFS_MODULES {
            let out = self
                .host
                .run(&Cmd::new("modprobe").arg("-d").path_arg(&kt).args([
                    "-S",
                    self.kv,
                    "--show-depends",
                    m,
                ]))?;
            files.extend(recipe::parse_show_depends(&out));
        }
        files.sort();
        files.dedup();
        let src_root = moddir(&kt);
        for f in files {
            let f = PathBuf::from(f);
            let rel = f.strip_prefix(&src_root).map_err(|_| LabError::BuildStep {
                step: "initramfs",
                reason: format!(
                    "modprobe named {} outside {}",
                    f.display(),
                    src_root.display()
                ),
                log: self.log(),
            })?;
            let target = moddir(&w).join(rel);
            if let Some(parent) = target.parent() {
                mkdir(parent)?;
            }
            copy(&f, &target)?;
        }
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            copy(&src_root.join(f), &moddir(&w).join(f))?;
        }
        self.sh(Cmd::new("depmod").arg("-b").path_arg(&w).arg(self.kv))?;
        // find | cpio | zstd: a pipeline, so through sh with the paths as positional arguments.
        let out = self.dir.join("initramfs.img");
        self.sh(Cmd::new("sh")
            .args([
                "-c",
                "cd \"$1\" && find . | cpio -o -H newc --quiet | zstd -q -19 -T0 > \"$2\"",
                "sh",
            ])
            .path_arg(&w)
            .path_arg(&out))?;
        std::fs::remove_dir_all(&w).map_err(LabError::io("remove", &w))
    }

    fn finish(&self) -> Result<(), LabError> {
        let vmlinuz = self
            .kernel_tree()
            .join("boot")
            .join(format!("vmlinuz-{}", self.kv));
        copy(&vmlinuz, &self.dir.join("vmlinuz"))?;
        for d in ["rootfs", "kernel", "debs"] {
            let p = self.dir.join(d);
            std::fs::remove_dir_all(&p).map_err(LabError::io("remove", &p))?;
        }
        let manifest = format!(
            "# Beowulf lab image (written when the build completed)\nkey = \"{}\"\nrecipe = {}\nsuite = \"{}\"\nkernel = \"{}\"\npackages = [{}]\n",
            recipe::cache_key(self.kv),
            recipe::RECIPE_VERSION,
            recipe::SUITE,
            self.kv,
            recipe::PACKAGES
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        write_file(&self.dir.join("image.toml"), &manifest, 0o644)
    }
}

/// Removes every `<unit>` symlink from the `*.wants` directories under `system_dir`.
fn disable_units(system_dir: &Path, units: &[&str]) -> Result<(), LabError> {
    let entries = std::fs::read_dir(system_dir).map_err(LabError::io("read", system_dir))?;
    for e in entries.flatten() {
        let dir = e.path();
        if !dir.is_dir() || !e.file_name().to_string_lossy().ends_with(".wants") {
            continue;
        }
        for unit in units {
            let link = dir.join(unit);
            if link.symlink_metadata().is_ok() {
                std::fs::remove_file(&link).map_err(LabError::io("remove", &link))?;
            }
        }
    }
    Ok(())
}

pub(crate) fn mkdir(p: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(p).map_err(LabError::io("create", p))
}

fn copy(from: &Path, to: &Path) -> Result<(), LabError> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(LabError::io("copy", from))
}

fn set_mode(p: &Path, mode: u32) -> Result<(), LabError> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(LabError::io("chmod", p))
}

pub(crate) fn write_file(p: &Path, content: &str, mode: u32) -> Result<(), LabError> {
    if let Some(parent) = p.parent() {
        mkdir(parent)?;
    }
    if p.symlink_metadata().is_ok() {
        std::fs::remove_file(p).map_err(LabError::io("replace", p))?;
    }
    std::fs::write(p, content).map_err(LabError::io("write", p))?;
    set_mode(p, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_units_removes_their_wants_links_only() {
        let t = tempfile::tempdir().unwrap();
        let wants = t.path().join("multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/ypbind.service",
            wants.join("ypbind.service"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system/ssh.service", wants.join("ssh.service"))
            .unwrap();
        disable_units(t.path(), &["ypbind.service"]).unwrap();
        assert!(wants.join("ypbind.service").symlink_metadata().is_err());
        assert!(wants.join("ssh.service").symlink_metadata().is_ok());
    }

    #[test]
    fn an_image_is_complete_only_with_every_file() {
        let t = tempfile::tempdir().unwrap();
        let img = Image {
            dir: t.path().to_path_buf(),
            key: "k".into(),
            kernel_version: "v".into(),
        };
        assert!(!img.complete());
        for f in ["base.qcow2", "vmlinuz", "initramfs.img", "image.toml"] {
            std::fs::write(t.path().join(f), "x").unwrap();
        }
        assert!(img.complete());
    }
}
