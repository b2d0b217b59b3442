#!/usr/bin/env bash
# bench/compare.sh — Beowulf and real Slurm 22.05 side by side on this machine: the same 5 nodes ×
# 2 CPUs local topology, measured back to back in one run (Slurm with its defaults, then with
# batch_sched_delay=0, then Beowulf). Prints every figure, the ratio to each Slurm, and writes the
# results into bench/results-latest.md.
#
# Run as root from anywhere:  bash bench/compare.sh        (~15 min; Slurm's part dominates)
# Tunables: NJOBS=1000 LAT_JOBS=20 ROUNDS=1 (Slurm rounds) SKIP_SLURM=0 SLURM_BASELINE=<path>
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
NJOBS=${NJOBS:-1000}
LAT_JOBS=${LAT_JOBS:-20}
ROUNDS=${ROUNDS:-1}
MPI_REPS=${MPI_REPS:-10}
SKIP_SLURM=${SKIP_SLURM:-0}
SLURM_BASELINE=${SLURM_BASELINE:-$repo/../shared/bench/slurm-baseline.sh}
out_dir=$(mktemp -d /tmp/beowulf-compare.XXXXXX)
[ "$(id -u)" = 0 ] || { echo "ERROR: must run as root" >&2; exit 1; }

echo "# building release binaries (scripts/build-release.sh)" >&2
BIN=$(scripts/build-release.sh)

if [ "$SKIP_SLURM" != 1 ]; then
  [ -f "$SLURM_BASELINE" ] || { echo "ERROR: $SLURM_BASELINE not found (set SLURM_BASELINE)" >&2; exit 1; }
  echo "# Slurm, defaults" >&2
  NJOBS=$NJOBS LAT_JOBS=$LAT_JOBS ROUNDS=$ROUNDS MPI_REPS=$MPI_REPS bash "$SLURM_BASELINE" > "$out_dir/slurm-default.txt"
  echo "# Slurm, batch_sched_delay=0" >&2
  NJOBS=$NJOBS LAT_JOBS=$LAT_JOBS ROUNDS=$ROUNDS MPI_REPS=$MPI_REPS SKIP_INSTALL=1 SCHED_PARAMS=batch_sched_delay=0 \
    bash "$SLURM_BASELINE" > "$out_dir/slurm-tuned.txt"
fi
echo "# Beowulf" >&2
NJOBS=$NJOBS LAT_JOBS=$LAT_JOBS MPI_REPS=$MPI_REPS BIN=$BIN bash bench/beowulf.sh > "$out_dir/beowulf.txt"

# value FILE NAME: the summary mean (Slurm, several rounds) or the plain value.
value() {
  local f=$1 n=$2 v
  v=$(awk -F': ' -v n="summary.$n" '$1==n {print $2}' "$f" | sed -E 's/^mean=([0-9.]+).*/\1/')
  [ -n "$v" ] || v=$(awk -F': ' -v n="round1.$n" '$1==n {print $2}' "$f")
  [ -n "$v" ] || v=$(awk -F': ' -v n="$n" '$1==n {print $2}' "$f")
  echo "${v:-NA}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.1fx", a/b; else print "-" }'; }

rows=(
  "$NJOBS sequential submissions (s)|seq.submit_${NJOBS}_s|seq.submit_${NJOBS}_s|lower"
  "submission rate (jobs/s)|seq.submit_rate_jobs_per_s|seq.submit_rate_jobs_per_s|higher"
  "$NJOBS trivial jobs, first submit to all complete (s)|seq.all_completed_${NJOBS}_s|seq.all_completed_${NJOBS}_s|lower"
  "completion rate (jobs/s)|seq.completion_rate_jobs_per_s|seq.completion_rate_jobs_per_s|higher"
  "$NJOBS sequential submissions, store acknowledge = \"write\" (s)|seq.submit_${NJOBS}_s|seq_write.submit_${NJOBS}_s|lower"
  "$NJOBS trivial jobs to all complete, acknowledge = \"write\" (s)|seq.all_completed_${NJOBS}_s|seq_write.all_completed_${NJOBS}_s|lower"
  "submit to start, median (ms)|latency.submit_to_start_median_ms|latency.submit_to_start_median_ms|lower"
  "submit to start, min (ms)|latency.submit_to_start_min_ms|latency.submit_to_start_min_ms|lower"
  "submit to start, max (ms)|latency.submit_to_start_max_ms|latency.submit_to_start_max_ms|lower"
  "5-node hostname launch, median (ms)|srun_N5_hostname_median_ms|launch_N5_hostname_median_ms|lower"
  "5-rank MPI hello, median (ms; Slurm: srun --mpi=pmix)|mpi_srun_pmix_N5_median_ms|mpi_N5_hello_median_ms|lower"
  "5-rank MPI hello in containers, median (ms)|mpi_srun_pmix_N5_median_ms|mpi_N5_container_hello_median_ms|lower"
  "5-rank MPICH hello in containers, median (ms)|mpi_srun_pmix_N5_median_ms|mpich_N5_container_hello_median_ms|lower"
  "5-rank MPI hello, runs that printed the right result|mpi_srun_pmix_N5_ok|mpi_N5_hello_ok|info"
  "machine noise: 1000 fork+exec (s)|noise.fork_exec_1000_s|noise.fork_exec_1000_s|lower"
)
report=$out_dir/report.md
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); Slurm rounds: $ROUNDS."
  echo
  echo "| measurement | Slurm defaults | Slurm batch_sched_delay=0 | Beowulf | Beowulf vs defaults | vs tuned |"
  echo "|---|---|---|---|---|---|"
  for row in "${rows[@]}"; do
    IFS='|' read -r label sname bname better <<< "$row"
    d=NA t=NA
    if [ "$SKIP_SLURM" != 1 ]; then d=$(value "$out_dir/slurm-default.txt" "$sname"); t=$(value "$out_dir/slurm-tuned.txt" "$sname"); fi
    b=$(value "$out_dir/beowulf.txt" "$bname")
    if [ "$better" = lower ]; then rd=$(ratio "$d" "$b"); rt=$(ratio "$t" "$b");
    elif [ "$better" = higher ]; then rd=$(ratio "$b" "$d"); rt=$(ratio "$b" "$t");
    else rd=-; rt=-; fi
    echo "| $label | $d | $t | $b | $rd | $rt |"
  done
  echo
  echo "Beowulf only: head CPU during the $NJOBS-job run $(value "$out_dir/beowulf.txt" seq.head_cpu_s) s (acknowledge = "write": $(value "$out_dir/beowulf.txt" seq_write.head_cpu_s) s), head peak RSS $(value "$out_dir/beowulf.txt" head.peak_rss_mib) MiB, job states $(value "$out_dir/beowulf.txt" seq.job_states), failed or hung $(value "$out_dir/beowulf.txt" seq.failed_or_hung_jobs) (acknowledge = \"write\": $(value "$out_dir/beowulf.txt" seq_write.job_states), failed or hung $(value "$out_dir/beowulf.txt" seq_write.failed_or_hung_jobs))."
  echo "Containers: start cost per MPI run (image staged from the node cache + containers started) $(value "$out_dir/beowulf.txt" mpi_N5_container_start_ms) ms; first run with the image unpacked into the cache $(value "$out_dir/beowulf.txt" mpi_N5_container_first_run_ms) ms; $(value "$out_dir/beowulf.txt" mpi_N5_container_hello_ok) container runs right; MPICH: start cost $(value "$out_dir/beowulf.txt" mpich_N5_container_start_ms) ms, $(value "$out_dir/beowulf.txt" mpich_N5_container_hello_ok) runs right."
  echo "Ratios say how many times better Beowulf is (higher is better for Beowulf). The MPI rows compare with Slurm's srun --mpi=pmix of the same program (no containers on Slurm's side)."
} > "$report"
cat "$report"
cp "$report" bench/results-latest.md
echo "# raw figures in $out_dir" >&2
