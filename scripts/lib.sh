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

# cargo-deny checks the dependency tree against deny.toml (scripts/test.sh). Pinned: its config
# format and checks change between releases. Built from crates.io when missing or another version
# (~3 minutes on 2 cores), into cargo's own temporary directory, not the workspace's target.
CARGO_DENY_VERSION=0.20.2
ensure_cargo_deny() {
    if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
        echo "installing cargo-deny $CARGO_DENY_VERSION (~3 minutes)"
        env -u CARGO_TARGET_DIR cargo install --locked --force --quiet cargo-deny --version "$CARGO_DENY_VERSION"
    fi
}

# The RustSec advisory database, which `cargo deny check advisories` clones. It is on GitHub, which
# some machines (this project's CI among them) cannot reach.
RUSTSEC_DB_URL=https://github.com/rustsec/advisory-db
# Succeeds when the database's repository answers within 10 s; otherwise sets RUSTSEC_DB_ERROR to
# why not (git's last error line) and fails. A missing git is an error, not "unreachable".
rustsec_db_reachable() {
    if ! command -v git >/dev/null 2>&1; then
        echo "error: git not found; it is needed to reach the advisory database" >&2
        exit 1
    fi
    local out rc=0
    out=$(GIT_TERMINAL_PROMPT=0 timeout 10 git ls-remote "$RUSTSEC_DB_URL" HEAD 2>&1 >/dev/null) || rc=$?
    case $rc in
        0) return 0 ;;
        124) RUSTSEC_DB_ERROR="no answer within 10 s" ;;
        *) RUSTSEC_DB_ERROR=$(printf '%s\n' "$out" | tail -n 1) ;;
    esac
    return 1
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
# python3-venv makes the virtual environment the Slurm tools (dask-jobqueue, from PyPI) run from
# in tests/tests/local_slurm_tools.rs.
BUILD_PACKAGES=(gcc libc6-dev pkg-config procps openssh-server runc mmdebstrap libopenmpi-dev openmpi-bin python3-venv)
