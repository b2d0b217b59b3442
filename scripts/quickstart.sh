#!/usr/bin/env bash
# Builds Beowulf, starts a local 5-node cluster on this machine and runs examples/hello.toml on it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root "the quickstart"
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_rust
repo=$PWD
bin=$(scripts/build-release.sh)
export PATH="$bin:$PATH"
export BEOWULF_STATE_DIR="${BEOWULF_STATE_DIR:-/var/lib/beowulf}"
cluster init --nodes 5 --local
cluster nodes
workdir=$(mktemp -d /tmp/beowulf-hello.XXXXXX)
chmod 755 "$workdir"
cd "$workdir"
submit "$repo/examples/hello.toml" --wait
job=$(cluster queue --all --json | python3 -c 'import json,sys; print(max(j["id"] for j in json.load(sys.stdin)))')
echo "--- output of job $job ($workdir/hello-$job.out):"
sort "hello-$job.out"
echo "--- the cluster keeps running: cluster queue, cluster nodes; stop it with: $bin/cluster down --state-dir $BEOWULF_STATE_DIR"
