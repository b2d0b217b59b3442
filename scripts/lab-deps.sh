#!/usr/bin/env bash
# Installs the Debian packages the VM lab needs on the host (`cluster lab up`): QEMU, the image
# builder and the initramfs tools. Idempotent: does nothing when everything is installed.
#
# qemu-utils: the machine image may ship a newer qemu-utils (bookworm-backports) that Breaks
# bookworm's qemu-system-common, so it is pinned to the same version as qemu-system-x86 and
# installed in the same apt command with --allow-downgrades (docs/design.md §6).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
if [ "$(id -u)" -ne 0 ]; then
    echo "error: scripts/lab-deps.sh installs Debian packages; run it as root (sudo scripts/lab-deps.sh)" >&2
    exit 1
fi

# Everything `cluster lab up` runs on the host. openssh-client: ssh, ssh-keygen; e2fsprogs: mkfs.ext4 -d;
# iproute2: ip netns; busybox-static: the initramfs; kmod: depmod/modprobe for module closures.
LAB_PACKAGES=(qemu-system-x86 mmdebstrap busybox-static cpio zstd kmod openssh-client e2fsprogs iproute2 dpkg)
# The lab head's own services, run by `cluster init` as children in the lab's namespace: slapd and the
# OpenLDAP tools (the directory), nfs-ganesha with its VFS backend (the NFS server: this kernel has none),
# rpcbind (the lab's own portmapper, for NFSv3 and NIS), ypserv (the NIS server and makedbm, for
# `users.backend = "nis"`).
LAB_PACKAGES+=(slapd ldap-utils nfs-ganesha nfs-ganesha-vfs rpcbind ypserv)

export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in "${LAB_PACKAGES[@]}"; do installed "$pkg" || missing+=("$pkg"); done

qemu_utils_ok=1
if installed qemu-system-x86; then
    want=$(dpkg-query -W -f='${Version}' qemu-system-x86)
    have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    [ "$want" = "$have" ] || qemu_utils_ok=0
fi

if [ ${#missing[@]} -eq 0 ] && [ $qemu_utils_ok = 1 ]; then
    echo "lab dependencies: all installed"
    exit 0
fi

apt-get update -qq
pins=()
if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]] || [ $qemu_utils_ok = 0 ]; then
    # the version apt would install for qemu-system-x86 (or the installed one): qemu-utils must match it
    qver=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
    [ -n "$qver" ] || qver=$(apt-cache policy qemu-system-x86 | sed -n 's/^ *Candidate: //p')
    if [ -z "$qver" ] || [ "$qver" = "(none)" ]; then
        echo "error: apt knows no qemu-system-x86; add Debian 12 (bookworm) to the apt sources" >&2
        exit 1
    fi
    pins=("qemu-utils=$qver")
fi
echo "installing Debian packages: ${missing[*]} ${pins[*]}"
# slapd: no system directory of its own (the lab configures a private one under its state directory).
echo 'slapd slapd/no_configuration boolean true' | debconf-set-selections
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends --allow-downgrades \
    "${missing[@]}" "${pins[@]}"
if [[ " ${missing[*]} " == *" nfs-ganesha "* ]] && [ -d /run/systemd/system ]; then
    # The package starts a system NFS server; the lab runs its own in its namespace instead.
    systemctl disable --now nfs-ganesha >/dev/null 2>&1 || true
fi
if [[ " ${missing[*]} " == *" rpcbind "* ]] && [ -d /run/systemd/system ]; then
    # Likewise the system portmapper: the lab runs one per lab, in its namespace.
    systemctl disable --now rpcbind.socket rpcbind >/dev/null 2>&1 || true
elif [[ " ${missing[*]} " == *" rpcbind "* ]] && [ -x /etc/init.d/rpcbind ]; then
    # Without systemd the package's init script started it just now; a host-wide socket in /run
    # would take the lab ganesha's registrations.
    /etc/init.d/rpcbind stop >/dev/null 2>&1 || true
fi
if [[ " ${missing[*]} " == *" ypserv "* ]] && [ -d /run/systemd/system ]; then
    # Without /etc/default/nis its init scripts start nothing; its systemd units would.
    systemctl disable --now ypserv yppasswdd ypxfrd >/dev/null 2>&1 || true
fi
echo "lab dependencies: installed"
