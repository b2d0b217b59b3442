#!/usr/bin/env bash
# Builds an example MPI container image: a Debian 12 root filesystem with an MPI and
# examples/mpi-hello.c compiled to /opt/mpi-hello/mpi-hello, as an uncompressed tar (numeric
# owners, entries `./usr/...`). FLAVOR is the job's `[mpi] flavor`:
#   openmpi (default)  the "mpi-hello" image: Debian's Open MPI
#   mpich              the "mpich-hello" image: MPICH for ch4:ofi and PMIx from scripts/build-mpich.sh
#                      (in /opt/mpich) with Debian's libfabric, libpmix2 and hwloc
#
#   sudo scripts/build-mpi-image.sh [FLAVOR]  # last stdout line: the tarball's path
#   cluster image import mpi-hello "$(sudo scripts/build-mpi-image.sh | tail -n1)"
#   cluster image import mpich-hello "$(sudo scripts/build-mpi-image.sh mpich | tail -n1)"
#
# The tarball is cached as ${BEOWULF_IMAGE_CACHE:-/var/cache/beowulf/mpi-image}/<image>-<hash>.tar,
# <hash> covering the package list, the C source, the MPICH build and this script: an unchanged
# recipe is reused at once, and a new build removes the image's builds of older recipes. Built in a temporary directory next to the cache and renamed into place,
# so an interrupted build never looks cached. Progress notes go to stderr, prefixed `# `; the
# build's full log is kept on failure.
#
# No ssh in the image: mpirun's remote launcher is the agent's rsh-agent program (docs/design.md §7), but
# openmpi-bin depends on `openssh-client | ssh-client`, so a tiny local package provides `ssh-client`.
set -euo pipefail
SCRIPT=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SCRIPT")/.."
. scripts/lib.sh

FLAVOR=${1:-openmpi}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
# openmpi-bin: mpirun/orted; libopenmpi3: the library (pulls libucx0, libfabric1, libpmix2, hwloc);
# libucx0 + ibverbs-providers: UCX over InfiniBand/RoCE (rxe, mlx5 providers); ca-certificates for
# programs that fetch over TLS. Recommends are not installed (mmdebstrap's default).
PACKAGES=(openmpi-bin libopenmpi3 libucx0 ibverbs-providers ca-certificates)
IMAGE=mpi-hello
MPICH_TAR=
case "$FLAVOR" in
openmpi) ;;
mpich)
    # MPICH's run-time libraries from Debian (the same releases it was built against), and
    # libfabric's verbs provider's user-space drivers (ibverbs-providers, librdmacm1).
    PACKAGES=(libfabric1 libpmix2 libhwloc15 ibverbs-providers librdmacm1 ca-certificates)
    IMAGE=mpich-hello
    MPICH_TAR=$(bash scripts/build-mpich.sh | tail -n1)
    ;;
*)
    echo "error: scripts/build-mpi-image.sh: unknown flavor \`$FLAVOR\` (openmpi or mpich)" >&2
    exit 2
    ;;
esac
# Packages apt must not pick for an alternative (`pkg-` in apt's syntax), checked after the build.
# openssh-client: see the header. usrmerge: bookworm's essential init-system-helpers depends on
# `usrmerge | usr-is-merged`, and usrmerge brings 60 MiB of perl; mmdebstrap's merged-usr hook creates
# the /usr symlinks itself and installs usr-is-merged instead.
EXCLUDED=(openssh-client usrmerge)
SOURCE=examples/mpi-hello.c
CACHE=${BEOWULF_IMAGE_CACHE:-/var/cache/beowulf/mpi-image}

note() { echo "# $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "error: scripts/build-mpi-image.sh builds a root filesystem with mmdebstrap --mode=root; run it as root (sudo)" >&2
    exit 1
fi

hash=$( {
    printf '%s\n' "$FLAVOR" "$SUITE" "$MIRROR" "${PACKAGES[@]}" "${EXCLUDED[@]}" "${MPICH_TAR##*/}"
    cat "$SOURCE" "$SCRIPT"
} | sha256sum | cut -c1-16)
target="$CACHE/$IMAGE-$hash.tar"

if [ -f "$target" ]; then
    note "cached: $target"
    echo "$target"
    exit 0
fi

start=$SECONDS
mkdir -p "$CACHE"
# Build directories of builds whose process is gone. --one-file-system: never descend into a mount
# (/proc, /dev, /sys) a killed mmdebstrap may have left in its rootfs.
for d in "$CACHE"/.build-*; do
    [ -d "$d" ] || continue
    pid=${d##*-}
    if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
        note "removing a stale build directory: $d"
        rm -rf --one-file-system "$d" || note "could not remove all of $d (a mount left in it?); remove it by hand"
    fi
done
work="$CACHE/.build-$hash-$$"
rm -rf --one-file-system "$work"
mkdir -p "$work"
log="$work/build.log"
failed_log="$CACHE/build-$hash.log"
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && [ -f "$log" ]; then
        cp "$log" "$failed_log"
        note "build failed; last lines of the log (full log: $failed_log):"
        tail -n 20 "$log" | sed 's/^/#   /' >&2
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# Host tools: mmdebstrap, and for Open MPI its mpicc from the same Debian release as the image's.
need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
if [ "$FLAVOR" = openmpi ]; then
    command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev gcc)
fi
if [ ${#need[@]} -gt 0 ]; then
    note "installing build tools: ${need[*]}"
    ensure_packages "${need[@]}" >>"$log" 2>&1
fi

if [ "$FLAVOR" = openmpi ]; then
    note "compiling $SOURCE with $(mpicc --showme:version 2>&1 | head -n1)"
    mpicc -O2 -Wall -Wextra -o "$work/mpi-hello" "$SOURCE" >>"$log" 2>&1
else
    # MPICH's mpicc names its install prefix; compiled here against the unpacked tree instead, with
    # the prefix the image has as the run path.
    mkdir -p "$work/mpich"
    tar -C "$work/mpich" -xf "$MPICH_TAR"
    note "compiling $SOURCE with MPICH from $MPICH_TAR"
    gcc -O2 -Wall -Wextra -I"$work/mpich/opt/mpich/include" -o "$work/mpi-hello" "$SOURCE" \
        -L"$work/mpich/opt/mpich/lib" -Wl,-rpath,/opt/mpich/lib -lmpi >>"$log" 2>&1
fi

# A package that provides ssh-client, so openmpi-bin's dependency holds without openssh-client.
nossh="$work/beowulf-no-ssh-client"
mkdir -p "$nossh/DEBIAN"
cat >"$nossh/DEBIAN/control" <<'EOF'
Package: beowulf-no-ssh-client
Version: 1.0
Architecture: all
Maintainer: Beowulf <root@localhost>
Provides: ssh-client
Section: misc
Priority: optional
Description: satisfies openmpi-bin's ssh-client dependency in Beowulf's MPI images
 mpirun starts remote daemons through the Beowulf agent, not ssh.
EOF
dpkg-deb --root-owner-group --build "$nossh" "$work/beowulf-no-ssh-client.deb" >>"$log" 2>&1
# Installed right after the essential packages (the hook's shell sees this variable), so apt finds
# ssh-client already provided when it installs openmpi-bin.
export NOSSH_DEB="$work/beowulf-no-ssh-client.deb"

rootfs="$work/rootfs"
note "root filesystem: mmdebstrap $SUITE with ${PACKAGES[*]} (log $log)"
# The hook's text is expanded by mmdebstrap's shell ($1 = the rootfs), hence the single quotes.
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --mode=root \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --essential-hook='cp "$NOSSH_DEB" "$1/tmp/nossh.deb" && chroot "$1" dpkg -i /tmp/nossh.deb && rm "$1/tmp/nossh.deb"' \
    --include="${PACKAGES[*]}" \
    --include="${EXCLUDED[*]/%/-}" \
    "$SUITE" "$rootfs" "$MIRROR" >>"$log" 2>&1
for pkg in "${EXCLUDED[@]}"; do
    if [ "$(dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ]; then
        echo "error: $pkg ended up in the image" >&2
        exit 1
    fi
done

if [ "$FLAVOR" = mpich ]; then
    note "installing MPICH in /opt/mpich"
    tar -C "$rootfs" -xf "$MPICH_TAR" ./opt/mpich/bin ./opt/mpich/lib ./opt/mpich/include
    echo /opt/mpich/lib >"$rootfs/etc/ld.so.conf.d/mpich.conf"
    ldconfig -r "$rootfs"
fi

note "installing /opt/mpi-hello/mpi-hello and trimming"
install -D -m 0755 "$work/mpi-hello" "$rootfs/opt/mpi-hello/mpi-hello"
install -m 0644 "$SOURCE" "$rootfs/opt/mpi-hello/mpi-hello.c"
# apt's lists and caches, docs, logs: nothing in a container uses them.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
# Device nodes: the container runtime mounts its own /dev (and an unprivileged unpacker could not mknod).
find "$rootfs/dev" -mindepth 1 -delete
# The build host's resolver and names must not leak into the image; empty files stay as bind-mount
# targets (the agent mounts the node's /etc/hosts and /etc/resolv.conf).
for f in etc/resolv.conf etc/hostname etc/hosts; do
    rm -f "${rootfs:?}/$f"
    install -m 0644 /dev/null "$rootfs/$f"
done

note "writing the tarball"
tar --numeric-owner --sort=name -C "$rootfs" -cf "$work/image.tar" .
chmod 0644 "$work/image.tar"
mv -f "$work/image.tar" "$target"
rm -f "$failed_log"
# Builds of an older recipe of this image are never used again (each is 140 MiB or more).
for old in "$CACHE/$IMAGE"-*.tar; do
    [ "$old" = "$target" ] || rm -f "$old"
done
note "built $target ($(du -h "$target" | cut -f1)) in $((SECONDS - start))s"
echo "$target"
