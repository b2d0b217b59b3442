//! What goes into the lab's VM image: the Debian release and packages, the kernel modules, the files
//! added to the guest and the initramfs. Everything here feeds the image's cache key. Pure.

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// Bump when the build steps change in a way the inputs below do not show (a different mkfs option,
/// a new customisation step): every cached image is then rebuilt once.
pub const RECIPE_VERSION: u32 = 1;

/// Debian 12: the release the project supports first and the one the host runs.
pub const SUITE: &str = "bookworm";
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// The meta package whose dependency names the current kernel ABI (`linux-image-6.1.0-NN-amd64`).
pub const KERNEL_META: &str = "linux-image-amd64";

/// Every package a compute node needs, since the VMs reach no package repository: systemd and sshd for
/// provisioning; the verbs stack and perftest for the InfiniBand step; the NFS client; the LDAP (nslcd)
/// and NIS (ypbind, and glibc's NIS module, a package of its own since glibc 2.35) clients for the
/// users step; crun, Open MPI and UCX for containerized MPI. No nfs-kernel-server (the head serves
/// NFS) and no compilers (programs are built on the head).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "openssh-client",
    "rdma-core",
    "ibverbs-utils",
    "ibverbs-providers",
    "perftest",
    "nfs-common",
    "nslcd",
    "libnss-ldapd",
    "ldap-utils",
    "nis",
    "libnss-nis",
    "crun",
    "openmpi-bin",
    "libucx0",
    "ucx-utils",
    "kmod",
    "iproute2",
    "procps",
    "netbase",
    "iputils-ping",
    "tar",
];

/// Units the image ships disabled: the users step enables the one it chooses. ypbind without a NIS
/// server would stall every boot, and a compute node serves no NIS maps.
pub const DISABLED_UNITS: &[&str] = &[
    "ypbind.service",
    "ypserv.service",
    "yppasswdd.service",
    "ypxfrd.service",
    "nis.service",
];

/// Kernel module trees copied into the image (all of `lib/modules` is 390 MiB; these are what a compute
/// node can use: filesystems, networking, crypto, virtio, RDMA).
pub const MODULE_DIRS: &[&str] = &[
    "kernel/arch",
    "kernel/crypto",
    "kernel/lib",
    "kernel/fs",
    "kernel/net",
    "kernel/block",
    "kernel/mm",
    "kernel/virt",
    "kernel/drivers/infiniband",
    "kernel/drivers/virtio",
    "kernel/drivers/block",
    "kernel/drivers/char",
    "kernel/drivers/net",
    "kernel/drivers/md",
];
/// Dropped from the copy: no VM has Wi-Fi.
pub const MODULE_EXCLUDE: &[&str] = &["kernel/drivers/net/wireless"];

/// Modules the initramfs loads to mount the root disk. `crc32c_generic` is a soft dependency of ext4 that
/// `modprobe --show-depends` does not list: without it ext4 fails with "Cannot load crc32c driver".
pub const INITRAMFS_MODULES: &[&str] = &[
    "crc32c_generic",
    "crc32c-intel",
    "virtio_pci",
    "virtio_blk",
    "ext4",
];

/// Printed on the serial console by the initramfs when booted with `beowulf.probe` (the KVM probe).
pub const PROBE_MARKER: &str = "BEOWULF-PROBE-OK";
/// Printed on the serial console by the guest once sshd is up and addresses are set.
pub const READY_MARKER: &str = "BEOWULF-LAB-READY";
/// Printed on the serial console (`BEOWULF-LAB-FAILED nodeN what: why`) when the guest cannot take its
/// identity or addresses: `lab up` fails at once instead of waiting for SSH until its timeout.
pub const FAILED_MARKER: &str = "BEOWULF-LAB-FAILED";

/// The initramfs' `/init`: loads virtio and ext4, mounts `/dev/vda`, and chains to systemd. With
/// `beowulf.probe` on the command line it prints the probe marker and powers off instead.
pub const INIT: &str = r#"#!/bin/busybox sh
# Beowulf lab initramfs: mount the root disk and chain to its /sbin/init.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
ROOT=/dev/vda
for a in $(cat /proc/cmdline); do case $a in root=*) ROOT=${a#root=};; beowulf.probe) echo "BEOWULF-PROBE-OK"; poweroff -f;; esac; done
modprobe virtio_pci; modprobe virtio_blk; modprobe crc32c_generic; modprobe crc32c-intel 2>/dev/null; modprobe ext4
mkdir -p /newroot
i=0; while [ ! -b "$ROOT" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -o rw "$ROOT" /newroot || { echo "beowulf-lab: cannot mount $ROOT"; exec sh; }
umount /proc /sys; mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
"#;

/// Guest script: unpacks the per-node seed disk (host key, authorized key, /etc/hosts, addresses) and
/// sets the addresses. The lab does not configure RDMA: the InfiniBand provisioning step does.
///
/// It loads `virtio_net` itself and waits for the NICs and the seed disk, instead of ordering the unit
/// after their systemd device units: under TCG on a loaded host udev's coldplug can take longer than
/// systemd's 90 s device timeout, the unit then ran before eth0/eth1 existed, failed, and the node
/// booted without addresses (unreachable, yet printing the ready marker). Any failure is printed on the
/// serial console as the failure marker, so `lab up` stops at once with the reason.
pub const NODE_INIT: &str = r#"#!/bin/sh
# Beowulf lab: take this node's identity from its seed disk (/dev/vdb, a tar written by `cluster lab up`).
fail() { echo "BEOWULF-LAB-FAILED $(hostname) beowulf-lab-node: $*" > /dev/ttyS0; exit 1; }
wait_for() {
    i=0
    while [ ! -e "$1" ]; do
        [ $i -lt 1200 ] || fail "$1 did not appear within 600 s"
        sleep 0.5; i=$((i+1))
    done
}
modprobe virtio_net || fail "modprobe virtio_net failed"
wait_for /dev/vdb
wait_for /sys/class/net/eth0
wait_for /sys/class/net/eth1
tar -xf /dev/vdb -C / --no-same-owner || fail "cannot unpack the seed disk /dev/vdb"
[ -r /etc/beowulf-lab/node.env ] || fail "no etc/beowulf-lab/node.env on the seed disk"
. /etc/beowulf-lab/node.env
ip link set lo up || fail "cannot bring lo up"
ip link set eth0 up && ip addr replace "$GIGE_ADDR/$PREFIX" dev eth0 || fail "cannot set $GIGE_ADDR on eth0"
ip link set eth1 up && ip addr replace "$IB_ADDR/$PREFIX" dev eth1 || fail "cannot set $IB_ADDR on eth1"
"#;

pub const NODE_INIT_UNIT: &str = "[Unit]
Description=Beowulf lab node identity and addresses (seed disk)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=network-online.target ssh.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/beowulf-lab-node
[Install]
WantedBy=multi-user.target network-online.target
";

/// The marker means "addresses set, sshd up": it requires the identity unit, and waits for sshd to
/// be active instead of requiring it. Under a loaded TCG host sshd's first start can time out
/// (seen: the guest kernel stalled in rtnetlink for minutes) and systemd restarts it; with
/// `Requires=ssh.service` that first failure cancelled the marker for good, and `lab up` waited for
/// a node that was up until its boot timeout.
///
/// The marker goes to the kernel's console (`/dev/kmsg`, at a level `quiet` still prints), and
/// three times to the serial line 2 s apart: the serial getty starts when the boot's jobs are done
/// (`Type=idle`), right after this one, and its hangup of the line flushes what the UART has not
/// sent yet; on a loaded host one marker written just before it was lost, and `lab up` waited
/// for a node whose login prompt was on its console until its boot timeout. (`$$` is systemd's
/// escape for the shell's `$`.)
pub const READY_UNIT: &str = "[Unit]
Description=Beowulf lab ready marker on the serial console
Requires=beowulf-lab-node.service
Wants=ssh.service
After=ssh.service beowulf-lab-node.service multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'until systemctl is-active -q ssh.service; do sleep 1; done; m=\"BEOWULF-LAB-READY $(hostname) uptime=$(cut -d\" \" -f1 /proc/uptime)\"; echo \"<2>$$m\" > /dev/kmsg; for i in 1 2 3; do echo \"$$m\" > /dev/ttyS0; sleep 2; done; true'
[Install]
WantedBy=multi-user.target
";

/// Files written into the image: (path in the guest, content, mode).
pub const GUEST_FILES: &[(&str, &str, u32)] = &[
    ("etc/fstab", "/dev/vda / ext4 rw,noatime 0 1\n", 0o644),
    ("usr/local/sbin/beowulf-lab-node", NODE_INIT, 0o755),
    (
        "etc/systemd/system/beowulf-lab-node.service",
        NODE_INIT_UNIT,
        0o644,
    ),
    (
        "etc/systemd/system/beowulf-lab-ready.service",
        READY_UNIT,
        0o644,
    ),
    // RDMA needs locked memory, for services and for login sessions.
    (
        "etc/systemd/system.conf.d/memlock.conf",
        "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
        0o644,
    ),
    (
        "etc/security/limits.d/memlock.conf",
        "* soft memlock unlimited\n* hard memlock unlimited\n",
        0o644,
    ),
];

/// Units enabled in the image (symlinks in multi-user.target.wants).
pub const ENABLED_UNITS: &[&str] = &["beowulf-lab-node.service", "beowulf-lab-ready.service"];

/// The image's cache key: a hash of every input above and of the kernel ABI it is built with.
pub fn cache_key(kernel_version: &str) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &str| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    };
    field("recipe", &RECIPE_VERSION.to_string());
    field("suite", SUITE);
    field("mirror", MIRROR);
    field("kernel", kernel_version);
    field("packages", &PACKAGES.join(","));
    field("disabled", &DISABLED_UNITS.join(","));
    field("modules", &MODULE_DIRS.join(","));
    field("exclude", &MODULE_EXCLUDE.join(","));
    field("initramfs", &INITRAMFS_MODULES.join(","));
    field("init", INIT);
    field("enabled", &ENABLED_UNITS.join(","));
    for (path, content, mode) in GUEST_FILES {
        field(path, &format!("{mode:o}:{content}"));
    }
    let digest = h.finalize();
    let mut key = String::new();
    for b in &digest[..12] {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The kernel ABI from `apt-cache depends linux-image-amd64` ("  Depends: linux-image-6.1.0-56-amd64").
pub fn parse_kernel_version(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let v = dep.strip_prefix("linux-image-")?;
        (v.chars().next()?.is_ascii_digit()).then(|| v.to_string())
    })
}

/// Module files from `modprobe --show-depends` output ("insmod /path/x.ko" lines; builtins skipped).
pub fn parse_show_depends(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("insmod "))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_the_kernel_and_is_stable() {
        let a = cache_key("6.1.0-56-amd64");
        assert_eq!(a, cache_key("6.1.0-56-amd64"));
        assert_ne!(a, cache_key("6.1.0-57-amd64"));
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn kernel_version_comes_from_the_meta_package() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(parse_kernel_version(out).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(parse_kernel_version("linux-image-amd64\n"), None);
        assert_eq!(parse_kernel_version("  Depends: linux-image-cloud\n"), None);
    }

    #[test]
    fn show_depends_lists_module_files_only() {
        let out = "builtin crc32c\ninsmod /k/lib/modules/6.1/kernel/lib/crc16.ko \n\
                   insmod /k/lib/modules/6.1/kernel/fs/ext4/ext4.ko\n";
        assert_eq!(
            parse_show_depends(out),
            [
                "/k/lib/modules/6.1/kernel/lib/crc16.ko",
                "/k/lib/modules/6.1/kernel/fs/ext4/ext4.ko"
            ]
        );
    }

    #[test]
    fn the_guest_gets_what_the_playbooks_need() {
        for p in [
            "openssh-server",
            "rdma-core",
            "nfs-common",
            "nslcd",
            "crun",
            "openmpi-bin",
        ] {
            assert!(PACKAGES.contains(&p), "{p}");
        }
        assert!(INIT.contains("crc32c_generic"));
        assert!(
            !NODE_INIT.contains("rdma link add"),
            "the lab must not configure RDMA"
        );
        // The identity unit must not wait on device units (they time out under a loaded TCG host);
        // the script waits for the NICs itself and reports failures on the console.
        assert!(!NODE_INIT_UNIT.contains(".device"), "{NODE_INIT_UNIT}");
        assert!(NODE_INIT.contains("modprobe virtio_net"));
        assert!(NODE_INIT.contains(FAILED_MARKER));
        assert!(!NODE_INIT.contains("set -e"), "failures go through fail()");
        assert!(READY_UNIT.contains("Requires=beowulf-lab-node.service"));
        // sshd restarting after a failed first start must not cancel the marker.
        assert!(!READY_UNIT.contains("Requires=ssh.service"), "{READY_UNIT}");
        assert!(READY_UNIT.contains("until systemctl is-active -q ssh.service"));
        // The marker survives the getty's hangup of the serial line: the kernel console has it
        // too, and the line gets it again; the shell's variables reach it past systemd's own
        // `$` expansion.
        assert!(READY_UNIT.contains("> /dev/kmsg"), "{READY_UNIT}");
        assert!(READY_UNIT.contains("for i in 1 2 3"), "{READY_UNIT}");
        assert!(!READY_UNIT.replace("$$", "").contains("$m"), "{READY_UNIT}");
    }
}
