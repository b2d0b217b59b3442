#!/usr/bin/env bash
# bench/beowulf.sh — measures Beowulf on a local cluster of NODES agents × CPUS_PER_NODE CPUs: the
# same topology and the same measurements as ../shared/bench/slurm-baseline.sh, printed as
# `name: value` lines with the same names where the measurement is the same.
#
# Run as root from anywhere (release binaries must be built: scripts/build-release.sh).
# Tunables: NODES=5 CPUS_PER_NODE=2 NJOBS=1000 LAT_JOBS=20 LAUNCH_REPS=20 MPI_REPS=10 POLL=0.1
#            BIN=target/dist
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-5}
CPUS_PER_NODE=${CPUS_PER_NODE:-2}
NJOBS=${NJOBS:-1000}
LAT_JOBS=${LAT_JOBS:-20}
LAUNCH_REPS=${LAUNCH_REPS:-20}
POLL=${POLL:-0.1}
MPI_REPS=${MPI_REPS:-10}
REPO=$PWD
BIN=$(realpath "${BIN:-target/dist}")

log() { echo "# $*" >&2; }
out() { echo "$1: $2"; }
die() { echo "ERROR: $*" >&2; exit 1; }
now() { echo "$EPOCHREALTIME"; }
el() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
median() { sort -g | awk '{v[NR]=$1} END{ if(NR==0){print "NA"; exit}
  if(NR%2) printf "%.3f\n", v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
minv() { sort -g | head -1; }
maxv() { sort -g | tail -1; }
ms() { awk '{printf "%.1f", $1*1000}'; }

[ "$(id -u)" = 0 ] || die "must run as root"
for b in cluster submit headnoded computed; do
  [ -x "$BIN/$b" ] || die "$BIN/$b missing: scripts/build-release.sh"
done

W=$(mktemp -d /tmp/beowulf-bench.XXXXXX)
chmod 755 "$W"
export BEOWULF_STATE_DIR=$W/state
cluster() { "$BIN/cluster" "$@"; }
cleanup() { local rc=$?; set +e; cluster down >/dev/null 2>&1; rm -rf "$W"; exit $rc; }
trap cleanup EXIT INT TERM

cluster init --local --nodes "$NODES" --cpus-per-node "$CPUS_PER_NODE" >&2
HEAD_PID=$(awk '$1=="headnoded"{print $2}' "$W/state/pids")
cd "$W"

queue_len() { cluster queue --json | grep -c '"id"' || true; }
wait_drain() {
  local t0=$SECONDS
  while [ "$(queue_len)" != 0 ]; do
    sleep "$POLL"
    [ $((SECONDS - t0)) -lt "${1:-3600}" ] || { echo TIMEOUT; return 1; }
  done
  now
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# States of jobs with id >= $1, one per line.
states_from() {
  cluster queue --all --json | awk -v first="$1" '
    /"id":/ { gsub(/[^0-9]/, "", $2); id = $2 + 0 }
    /"state":/ { if (id >= first) { gsub(/[",]/, "", $2); print $2 } }'
}

out machine.cpus "$(nproc)"
out machine.loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
out beowulf.nodes "$NODES"
out beowulf.cpus_per_node "$CPUS_PER_NODE"

t0=$(now); for i in $(seq 1 1000); do /bin/true; done; t1=$(now)
out noise.fork_exec_1000_s "$(el "$t0" "$t1")"

# Submit-to-start latency on an idle cluster, timestamped by the job itself.
mkdir -p lat
lat=() cli=()
for i in $(seq 1 "$LAT_JOBS"); do
  printf 'command = ["sh", "-c", "date +%%s.%%N > %s/lat/%s.tmp; mv %s/lat/%s.tmp %s/lat/%s"]\noutput = "/dev/null"\n' \
    "$W" "$i" "$W" "$i" "$W" "$i" > "lat$i.toml"
  t0=$(now); "$BIN/submit" "lat$i.toml" >/dev/null; t1=$(now)
  until [ -s "lat/$i" ]; do sleep 0.001; done
  lat+=("$(el "$t0" "$(cat "lat/$i")")")
  cli+=("$(el "$t0" "$t1")")
  wait_drain 60 >/dev/null
done
out latency.submit_to_start_median_ms "$(printf '%s\n' "${lat[@]}" | median | ms)"
out latency.submit_to_start_min_ms "$(printf '%s\n' "${lat[@]}" | minv | ms)"
out latency.submit_to_start_max_ms "$(printf '%s\n' "${lat[@]}" | maxv | ms)"
out latency.submit_cli_median_ms "$(printf '%s\n' "${cli[@]}" | median | ms)"

# A NODES-node `hostname` launch: from submit until the job has ended with every line written.
printf 'nodes = %s\ncommand = ["hostname"]\noutput = "%s/hostname-%%j.out"\n' "$NODES" "$W" > hostname.toml
launch=()
for i in $(seq 1 "$LAUNCH_REPS"); do
  t0=$(now); "$BIN/submit" --wait hostname.toml >/dev/null 2>&1; t1=$(now)
  launch+=("$(el "$t0" "$t1")")
done
n=$(cat "$W"/hostname-*.out | wc -l)
if [ "$n" != $((NODES * LAUNCH_REPS)) ]; then
  log "hostname launches printed $n lines, expected $((NODES * LAUNCH_REPS))"
  # The evidence: each short file with its job's record, and the daemons' logs (kept).
  for f in "$W"/hostname-*.out; do
    [ "$(wc -l < "$f")" = "$NODES" ] && continue
    id=${f##*hostname-}; id=${id%.out}
    log "$f: $(tr '\n' ' ' < "$f")"
    cluster show "$id" >&2 || true
  done
  kept=$(mktemp -d /tmp/beowulf-bench-logs.XXXXXX)
  cp -r "$W/state/logs" "$kept/" && log "daemon logs kept in $kept"
fi
out launch_N${NODES}_hostname_lines "$n/$((NODES * LAUNCH_REPS))"
out launch_N${NODES}_hostname_median_ms "$(printf '%s\n' "${launch[@]}" | median | ms)"
out launch_N${NODES}_hostname_max_ms "$(printf '%s\n' "${launch[@]}" | maxv | ms)"

# A NODES-rank MPI hello (examples/mpi-hello.c: ring + allreduce), without and with containers:
# from submit until the job has ended (Slurm's row is `srun --mpi=pmix -N5 -n5 hello`).
# The default launch ("direct"): each agent starts its ranks with its PMIx server, as srun
# --mpi=pmix does; MPI_LAUNCH=mpirun measures mpirun instead.
MPI_LAUNCH=${MPI_LAUNCH:-direct}
if [ "$MPI_REPS" -gt 0 ] && command -v mpicc >/dev/null; then
  mpicc -O2 -o "$W/mpi-hello" "$REPO/examples/mpi-hello.c"
  mpi_job() { # $1 file, $2 command, $3 extra sections, $4 flavor (default openmpi: MPICH starts directly only)
    local flavor=${4:-openmpi} launch=$MPI_LAUNCH
    [ "$flavor" = mpich ] && launch=direct
    printf 'nodes = %s\nntasks = %s\ncommand = ["%s"]\noutput = "%s/mpi-%%j.out"\ntime_limit = "5"\n%s[mpi]\nflavor = "%s"\nfabric = "tcp"\nlaunch = "%s"\n' \
      "$NODES" "$NODES" "$2" "$W" "$3" "$flavor" "$launch" > "$1"
  }
  last_job_start_ms() { # image staged (cached) + containers started, of the last job
    local last_id
    last_id=$(cluster queue --all --json | awk -F'[:,]' '/"id"/ { gsub(/ /, "", $2); id = $2 } END { print id }')
    cluster show "$last_id" --json | awk -F'[:,]' '
      /"image_staged"|"containers_started"/ { gsub(/[^0-9]/, "", $2); s += $2 } END { print s + 0 }'
  }
  mpi_runs() { # $1 file, $2 reps; prints the wall time of each run that printed the right result
    local i t0 t1 id
    for i in $(seq 1 "$2"); do
      # A pause between runs: outside containers, an mpirun started right after the previous
      # job's (all "nodes" being one host here) idles ~5 s at exit — see bench/README.md.
      sleep 1
      t0=$(now); id=$("$BIN/submit" --wait --json "$1" 2>/dev/null | awk -F'[:,]' '/"id"/{gsub(/ /,"",$2); print $2; exit}'); t1=$(now)
      grep -q "allreduce ok sum=$((NODES*(NODES+1)/2))" "$W/mpi-$id.out" 2>/dev/null && echo "$(el "$t0" "$t1")"
    done
  }
  mpi_job mpi-host.toml "$W/mpi-hello" ""
  mapfile -t mh < <(mpi_runs mpi-host.toml "$MPI_REPS")
  out mpi_N${NODES}_hello_ok "${#mh[@]}/$MPI_REPS"
  [ ${#mh[@]} -gt 0 ] && out mpi_N${NODES}_hello_median_ms "$(printf '%s\n' "${mh[@]}" | median | ms)"
  container_rows() { # $1 figure prefix, $2 image name, $3 flavor: the hello in that flavor's image
    local prefix=$1 image=$2 flavor=$3 tarball first runs
    if ! tarball=$(bash "$REPO/scripts/build-mpi-image.sh" "$flavor" 2>/dev/null | tail -1) || [ ! -f "$tarball" ]; then
      log "no $image image (scripts/build-mpi-image.sh $flavor failed): its rows skipped"
      return
    fi
    cluster image import "$image" "$tarball" >&2
    mpi_job "$image.toml" /opt/mpi-hello/mpi-hello "[container]"$'\n'"image = \"$image\""$'\n' "$flavor"
    mapfile -t first < <(mpi_runs "$image.toml" 1) # unpacks the image into the node cache
    out "${prefix}_first_run_ms" "$(printf '%s\n' "${first[@]:-NA}" | head -1 | ms)"
    mapfile -t runs < <(mpi_runs "$image.toml" "$MPI_REPS")
    out "${prefix}_hello_ok" "${#runs[@]}/$MPI_REPS"
    [ ${#runs[@]} -gt 0 ] && out "${prefix}_hello_median_ms" "$(printf '%s\n' "${runs[@]}" | median | ms)"
    # The container start cost of the last run: image staged (cached) + containers started.
    out "${prefix}_start_ms" "$(last_job_start_ms)"
  }
  container_rows "mpi_N${NODES}_container" mpi-hello openmpi
  # The same program with MPICH (libfabric's tcp provider), started directly by the agents.
  # Its image's first build compiles MPICH (~9 minutes), then it is cached.
  container_rows "mpich_N${NODES}_container" mpich-hello mpich
else
  log "mpicc not found or MPI_REPS=0: MPI rows skipped"
fi

# NJOBS sequential CLI submissions of a trivial job, then until all have completed; figures named
# PREFIX.*. The container rows above unpacked ~700 MiB into the node caches: write it back first, or
# its writeback makes every fsync of this row wait (Slurm's run has no such rows before this one).
seq_row() {
  local prefix=$1 first_id cpu0 cpu1 t0 tsub tend
  sync
  printf 'command = ["true"]\noutput = "/dev/null"\n' > trivial.toml
  first_id=$(( $(cluster queue --all --json | grep -c '"id"') + 1 ))
  cpu0=$(cpu_ticks "$HEAD_PID")
  t0=$(now)
  for i in $(seq 1 "$NJOBS"); do "$BIN/submit" trivial.toml >/dev/null; done
  tsub=$(now)
  tend=$(wait_drain 3600)
  cpu1=$(cpu_ticks "$HEAD_PID")
  out "$prefix.submit_${NJOBS}_s" "$(el "$t0" "$tsub")"
  out "$prefix.submit_rate_jobs_per_s" "$(awk -v n="$NJOBS" -v a="$t0" -v b="$tsub" 'BEGIN{printf "%.1f", n/(b-a)}')"
  out "$prefix.all_completed_${NJOBS}_s" "$(el "$t0" "$tend")"
  out "$prefix.drain_after_last_submit_s" "$(el "$tsub" "$tend")"
  out "$prefix.completion_rate_jobs_per_s" "$(awk -v n="$NJOBS" -v a="$t0" -v b="$tend" 'BEGIN{printf "%.1f", n/(b-a)}')"
  out "$prefix.head_cpu_s" "$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}')"
  out "$prefix.job_states" "$(states_from "$first_id" | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?",":""), $2, $1}')"
  out "$prefix.failed_or_hung_jobs" "$(states_from "$first_id" | grep -vc '^COMPLETED$' || true)"
}

# The default store mode: every submit answered after its fsync.
seq_row seq
out head.peak_rss_mib "$(awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$HEAD_PID/status")"

# The same with `[store] acknowledge = "write"` (answered after the write-ahead log's write(2),
# fsynced within 5 ms): the head restarted with that setting on the same agents' cluster.
printf '[store]\nacknowledge = "write"\n' > "$W/store-write.toml"
cluster down >/dev/null
cluster init --local --nodes "$NODES" --cpus-per-node "$CPUS_PER_NODE" --policy "$W/store-write.toml" >&2
HEAD_PID=$(awk '$1=="headnoded"{print $2}' "$W/state/pids")
grep -q 'acknowledge = "write"' "$W/state/headnoded.toml" || die "headnoded.toml has no [store] acknowledge = \"write\""
seq_row seq_write
out machine.loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
