# Shared helpers for the project's scripts (sourced, not run).

# Installs Debian packages that are missing; does nothing when all are there.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# The Rust toolchain comes from rustup (rust-toolchain.toml pins the version).
ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found; install Rust with rustup (https://rustup.rs), then run this again" >&2
        exit 1
    fi
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: $1 needs root (cgroups and running tasks as their users); run it with sudo" >&2
        exit 1
    fi
}

# Packages a build and the local tier need: a C compiler for ring, procps for ps in tests.
# runc runs job containers (crun 1.8 refuses this machine's hybrid cgroups); mmdebstrap and the
# Open MPI compiler build the example MPI image (scripts/build-mpi-image.sh) for the local tier.
BUILD_PACKAGES=(gcc libc6-dev pkg-config procps openssh-server runc mmdebstrap libopenmpi-dev openmpi-bin)
