#!/usr/bin/env bash
# Runs every test tier there is: format and lint checks, unit tests, and the local tier (a real
# headnoded and real computed processes on this machine). Fails if any of them fails.
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
