#!/usr/bin/env bash
# bench/scheduler.sh — the scheduler's benchmarks (issue 6, done-when 2 and 3), run through the
# simulator (sim/, bin beowulf-sim) so they exercise the same scheduler code as the head:
#   (a) a 10,000-job synthetic trace on 128 nodes × 2 CPUs, replayed with EASY backfill and with plain
#       FCFS, printed side by side (utilisation, wait, bounded slowdown, makespan, pass time);
#   (b) one full scheduling pass over 10,000 nodes and 100,000 pending jobs (backfill considers every
#       job), at 0%, 50% and 100% of nodes busy, printing the pass time and the process's peak RSS.
# Output: `name: value` lines (and the side-by-side table). Needs no root and no cluster.
# Tunables: JOBS=10000 NODES=128 CPUS=2 SEED=1 LOAD=0.9 BIG_NODES=10000 BIG_CPUS=64 BIG_JOBS=100000
#           CHECK=1 (run the invariant checker after every pass; its time is reported separately)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-10000}
NODES=${NODES:-128}
CPUS=${CPUS:-2}
SEED=${SEED:-1}
LOAD=${LOAD:-0.9}
BIG_NODES=${BIG_NODES:-10000}
BIG_CPUS=${BIG_CPUS:-64}
BIG_JOBS=${BIG_JOBS:-100000}
CHECK=${CHECK:-1}

cargo build --quiet --release -p beowulf-sim --bin beowulf-sim >&2
BIN=${CARGO_TARGET_DIR:-target}/release/beowulf-sim

check=()
no_check=(--no-check)
if [ "$CHECK" = 1 ]; then check=(--check); no_check=(); fi

echo "machine.cpus: $(nproc)"
echo "machine.memory_gib: $(awk '/MemTotal/ {printf "%.0f", $2/1024/1024}' /proc/meminfo)"
echo "machine.loadavg_start: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "# (a) ${JOBS}-job synthetic trace (seed $SEED, offered load $LOAD) on ${NODES} nodes x ${CPUS} CPUs"
"$BIN" synth --jobs "$JOBS" --nodes "$NODES" --cpus "$CPUS" --seed "$SEED" --load "$LOAD" \
  --policy both "${check[@]}"

for busy in 0 0.5 1; do
  echo "# (b) one pass: ${BIG_NODES} nodes x ${BIG_CPUS} CPUs, ${BIG_JOBS} pending jobs, busy share $busy"
  "$BIN" pass --nodes "$BIG_NODES" --cpus "$BIG_CPUS" --jobs "$BIG_JOBS" --busy "$busy" \
    --seed "$SEED" "${no_check[@]}"
done
