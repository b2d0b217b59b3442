#!/usr/bin/env bash
# Builds MPICH for Beowulf's MPI images: Debian 12's own MPICH source (4.0.2, the archive's
# orig tarball, checked against its SHA-256), configured for ch4:ofi over Debian's libfabric 1.17
# and as a PMIx client of Debian's libpmix2, so that the agents' PMIx servers start its ranks
# directly, as they do Open MPI's (docs/design.md §7, docs/decisions.md "MPICH").
#
#   sudo scripts/build-mpich.sh        # last stdout line: a tarball of ./opt/mpich
#
# Why not Debian's package: it is built for ch4:ucx only, and UCX 1.13's TCP transport hangs in
# MPI_Finalize (openucx/ucx#8738). libfabric's tcp provider does not.
#
# The tarball is cached as ${BEOWULF_IMAGE_CACHE:-/var/cache/beowulf/mpi-image}/mpich-<version>-<hash>.tar,
# <hash> covering the source, the configure line and this script, and built in a temporary directory
# renamed into place, so an interrupted build never looks cached. The build takes about 10 minutes
# on 2 cores. Progress notes go to stderr, prefixed `# `; the full log is kept on failure.
set -euo pipefail
SCRIPT=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SCRIPT")/.."
. scripts/lib.sh

VERSION=4.0.2
SOURCE_URL=http://deb.debian.org/debian/pool/main/m/mpich/mpich_${VERSION}.orig.tar.xz
# From bookworm's Sources index (mpich 4.0.2-3).
SOURCE_SHA256=b27039f964afeb6b8a3e009c56b441cbe368c26d6d6476ad3bb7190996875860
PREFIX=/opt/mpich
PMIX_DIR=/usr/lib/x86_64-linux-gnu/pmix2
# ch4:ofi with Debian's libfabric, PMIx (which also turns off hydra and MPICH's own PMI: the
# agents are the process manager), Debian's hwloc, and the dataloop datatype engine (yaksa's
# generated sources would double the build time; its gain is on GPUs). No Fortran or C++
# bindings: the images carry no Fortran compiler.
CONFIGURE=(
    --prefix="$PREFIX"
    --with-device=ch4:ofi
    --with-libfabric=/usr
    --with-pmix="$PMIX_DIR"
    --with-hwloc=/usr
    --with-datatype-engine=dataloop
    --disable-fortran
    --disable-cxx
    --disable-static
    --disable-doc
)
# What the build needs on the host; the images get the run-time libraries (build-mpi-image.sh).
BUILD_DEPENDS=(gcc g++ make curl xz-utils pkg-config libfabric-dev libpmix-dev libhwloc-dev)
CACHE=${BEOWULF_IMAGE_CACHE:-/var/cache/beowulf/mpi-image}

note() { echo "# $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "error: scripts/build-mpich.sh installs its build dependencies with apt-get; run it as root (sudo)" >&2
    exit 1
fi

hash=$( {
    printf '%s\n' "$VERSION" "$SOURCE_SHA256" "${CONFIGURE[@]}"
    cat "$SCRIPT"
} | sha256sum | cut -c1-16)
target="$CACHE/mpich-$VERSION-$hash.tar"

if [ -f "$target" ]; then
    note "cached: $target"
    echo "$target"
    exit 0
fi

start=$SECONDS
mkdir -p "$CACHE"
for d in "$CACHE"/.mpich-*; do
    [ -d "$d" ] || continue
    pid=${d##*-}
    if [[ "$pid" =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
        note "removing a stale build directory: $d"
        rm -rf "$d"
    fi
done
work="$CACHE/.mpich-$hash-$$"
rm -rf "$work"
mkdir -p "$work"
log="$work/build.log"
failed_log="$CACHE/mpich-$hash.log"
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ] && [ -f "$log" ]; then
        cp "$log" "$failed_log"
        note "build failed; last lines of the log (full log: $failed_log):"
        tail -n 20 "$log" | sed 's/^/#   /' >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

ensure_packages "${BUILD_DEPENDS[@]}" >>"$log" 2>&1

note "fetching MPICH $VERSION from Debian's archive"
curl --fail --silent --show-error --location --max-time 600 -o "$work/mpich.tar.xz" "$SOURCE_URL" >>"$log" 2>&1
echo "$SOURCE_SHA256  $work/mpich.tar.xz" | sha256sum --check --quiet >>"$log" 2>&1 || {
    echo "error: $SOURCE_URL does not have the SHA-256 recorded in scripts/build-mpich.sh" >&2
    exit 1
}
tar -C "$work" -xJf "$work/mpich.tar.xz"

# MPICH links against every library in libfabric.pc's Libs.private (`pkg-config --static`), and
# Debian's lists the providers' libraries (psm, psm2, efa, ...) that only a static libfabric needs:
# the shared libfabric.so.1 loads them itself. A copy without them stands first on the path.
mkdir -p "$work/pkgconfig"
sed '/^Libs.private:/d' "$(pkg-config --variable=pcfiledir libfabric)/libfabric.pc" >"$work/pkgconfig/libfabric.pc"

note "configuring: ${CONFIGURE[*]} (log $log)"
mkdir -p "$work/build"
(cd "$work/build" && PKG_CONFIG_PATH="$work/pkgconfig" "../mpich-$VERSION/configure" "${CONFIGURE[@]}") >>"$log" 2>&1
note "compiling (about 10 minutes on 2 cores)"
make -C "$work/build" -j"$(nproc)" >>"$log" 2>&1
make -C "$work/build" install DESTDIR="$work/dest" >>"$log" 2>&1

# Static archives and libtool files are not used by anything in an image.
find "$work/dest" -name '*.la' -delete
tar --numeric-owner --owner=0 --group=0 --sort=name -C "$work/dest" -cf "$work/mpich.tar" .
chmod 0644 "$work/mpich.tar"
mv -f "$work/mpich.tar" "$target"
rm -f "$failed_log"
note "built $target ($(du -h "$target" | cut -f1)) in $((SECONDS - start))s"
echo "$target"
