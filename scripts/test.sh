#!/usr/bin/env bash
# Runs every test tier: format and lint checks, unit tests, the local tier (a real headnoded and real
# computed processes on this machine) and the lab tier (VMs, scripts/test-lab.sh). Fails if any
# tier fails. `scripts/test.sh --no-lab` skips the lab tier for a quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the test suite"
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_rust

echo "== format"
cargo fmt --all --check
echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build (the local tier runs the real binaries)"
cargo build --workspace --bins --locked
echo "== unit and local tiers"
cargo test --workspace --locked

if [ "${1:-}" = "--no-lab" ]; then
    echo "== lab tier: skipped (--no-lab)"
else
    bash scripts/test-lab.sh
fi
