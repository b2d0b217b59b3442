#!/usr/bin/env bash
# Builds the release binaries into target/dist/ (one directory, as an install would have them):
# the daemons (headnoded, computed, beowulf-rsh) as cargo builds them, and the user commands
# (cluster, submit, and srun, which compute nodes get too) statically linked.
#
# Why static commands: a `submit` in a script's loop pays its own start-up every time. Dynamically
# linked, the loader maps libc and libgcc_s and applies ~40,000 relocations of the position-
# independent binary before main: 1.35 ms per start here, against 0.9 ms static (bench/README.md).
# The daemons stay dynamic: computed links libpmix, and both resolve users through NSS, which a
# static glibc cannot load modules for (LDAP, sssd).
#
# Usage: scripts/build-release.sh        prints the directory it filled
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --locked >&2
# A target given explicitly keeps RUSTFLAGS off the build scripts and proc macros (which must stay
# dynamic) and the static objects in their own directory, target/<host>/release.
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked -p beowulf-cli --bins --target "$host" >&2
dist=$target/dist
mkdir -p "$dist"
for b in headnoded computed beowulf-rsh; do
  install -m 755 "$target/release/$b" "$dist/$b"
done
for b in cluster submit srun; do
  install -m 755 "$target/$host/release/$b" "$dist/$b"
done
# Slurm's names: submit answers as sbatch, cluster as the others, when called by these names.
ln -sfn submit "$dist/sbatch"
for b in squeue scancel sacct sinfo scontrol salloc sprio sshare; do
  ln -sfn cluster "$dist/$b"
done

echo "$dist"
