#!/usr/bin/env bash
# Fault-injection soak: runs randomized fault schedules against real etcd clusters and real
# `lockkeeper run` sidecars for the given duration, checks the safety rule on every recorded
# history, runs the negative controls, and writes docs/safety.md.
#
#   scripts/soak.sh --duration 10m [--parallel 2] [--seed N] [--report docs/safety.md]
#
# Exit status is non-zero if any violation was found or a negative control was not caught
# (the report is written either way). Histories and logs of a failing scenario are kept under
# $TMPDIR (the path is printed). The CI-sized version of the same suite is
# `cargo test --test safety`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration=10m
parallel=2
seed=""
report=docs/safety.md
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --parallel) parallel="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# 90s, 10m, 2h, or plain seconds.
case "$duration" in
  *h) secs=$(( ${duration%h} * 3600 )) ;;
  *m) secs=$(( ${duration%m} * 60 )) ;;
  *s) secs=${duration%s} ;;
  *) secs=$duration ;;
esac
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "soak: bad --duration $duration" >&2; exit 2; }

if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
bash scripts/install-deps.sh

mkdir -p "$(dirname "$report")"
export LOCKKEEPER_SOAK_SECS="$secs"
export LOCKKEEPER_SOAK_PARALLEL="$parallel"
export LOCKKEEPER_SAFETY_REPORT="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
[ -n "$seed" ] && export LOCKKEEPER_SOAK_SEED="$seed"
export LOCKKEEPER_REQUIRE_ETCD=1

echo "soak: ${secs}s, ${parallel} scenarios at a time, report ${report}"
# --release: the sidecars under test are the optimized build users run.
cargo test --release --test safety randomized_soak -- --exact --nocapture
