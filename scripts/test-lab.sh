#!/usr/bin/env bash
# Runs the lab tier only: installs the lab's host packages, builds the binaries, and runs
# tests/tests/lab.rs and lab_init.rs with BEOWULF_LAB_TESTS=1 (5 QEMU VMs under TCG: ~40–47 min
# here, more on a busy machine, plus ~2 min the first time to build the VM image into the cache).
# The image cache is /var/cache/beowulf/lab-image unless BEOWULF_LAB_CACHE names another directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the lab tier (network namespaces, taps, VMs)"
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_rust
scripts/lab-deps.sh

echo "== build (the lab tier drives the real cluster binary)"
cargo build --workspace --bins --locked
echo "== lab tier"
start=$SECONDS
BEOWULF_LAB_TESTS=1 cargo test -p beowulf-tests --test lab --test lab_init --locked -- --nocapture
# CI's whole run (every tier) must end within 90 min on this machine.
echo "== lab tier: passed in $((SECONDS - start)) s (script total $SECONDS s)"
