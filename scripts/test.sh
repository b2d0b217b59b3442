#!/usr/bin/env bash
# Runs every test tier: format and lint checks, unit tests, the local tier (a real headnoded and real
# computed processes on this machine) and the lab tier (VMs, scripts/test-lab.sh). Fails if any
# tier fails. `scripts/test.sh --no-lab` skips the lab tier for a quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the test suite"
ensure_packages "${BUILD_PACKAGES[@]}"
# The build (~10 GiB for a clean debug tree) and the lab's VM overlays need room; a full disk shows
# up much later as odd failures (a provisioning log that cannot be written), so say it first.
need_gib=15
free_gib=$(df -P --block-size=1G . /var/tmp | awk 'NR > 1 { print $4 }' | sort -n | head -1)
if [ "$free_gib" -lt "$need_gib" ]; then
    echo "warning: only ${free_gib} GiB free on $(pwd) or /var/tmp; the tests need about ${need_gib} GiB" >&2
fi
ensure_rust

echo "== format"
cargo fmt --all --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== dependency audit (deny.toml)"
ensure_cargo_deny
# cargo deny reads `cargo metadata`, which needs the crates of every platform, not only the ones the
# build downloaded; with them here, the checks below need no network. The inclusion graphs (a
# tree per duplicated crate, ~2,000 lines) are hidden: run it without that flag to see them.
cargo fetch --locked
cargo deny --locked --offline check --hide-inclusion-graph bans licenses sources
if rustsec_db_reachable; then
    cargo deny --locked check advisories
else
    echo "== advisories: SKIPPED, the RustSec advisory database ($RUSTSEC_DB_URL) is unreachable: $RUSTSEC_DB_ERROR"
fi
echo "== build (the local tier runs the real binaries)"
cargo build --workspace --bins --locked
echo "== unit and local tiers"
cargo test --workspace --locked

if [ "${1:-}" = "--no-lab" ]; then
    echo "== lab tier: skipped (--no-lab)"
else
    bash scripts/test-lab.sh
fi
