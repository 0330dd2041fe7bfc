#!/usr/bin/env bash
# lockkeeper side by side with etcd's own lock (`etcdctl lock`), python-etcd3's Lock and the floor
# (bare etcd requests), on one local 3-member etcd cluster, in one run; the fleet phase adds what an
# idle queue costs etcd (up to 1,000 library contenders, 20 sidecars) and hand-off with it full.
#
#   scripts/bench.sh                 full run: release build, writes docs/benchmarks.md and
#                                    docs/img/benchmarks.svg (about 15 minutes on 2 cores)
#   scripts/bench.sh --smoke         what CI runs: tiny iteration counts, debug build, every code
#                                    path once; writes to target/lockbench-smoke/; fails if any
#                                    path breaks, asserts nothing about speed
#   scripts/bench.sh --only handoff,fleet       some phases only (see benches/lockbench/main.rs)
#   LOCKBENCH_ARGS="--ns 10,100" scripts/bench.sh --smoke --only contention   extra lockbench flags
#
# Installs what is missing: etcd and etcdctl (Debian's etcd-server / etcd-client, through
# scripts/install-deps.sh) and python-etcd3 in a virtualenv under .tools/bench-venv (the same script), pinned as
# PEERS.md says (protobuf<3.21, tenacity==6.3.1). Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SMOKE=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --only)
      [ $# -ge 2 ] || { echo "bench: --only needs a value" >&2; exit 2; }
      ONLY=$2
      shift
      ;;
    -h | --help)
      sed -n '2,16p' "$0"
      exit 0
      ;;
    *)
      echo "bench: unknown argument $1 (try --help)" >&2
      exit 2
      ;;
  esac
  shift
done

if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
log() { printf 'bench: %s\n' "$*" >&2; }
T_START=$(date +%s)

# --- peers -----------------------------------------------------------------------------------
log "checking tools (etcd, etcdctl, protoc, ...)"
bash scripts/install-deps.sh >&2
ETCDCTL=$(command -v etcdctl)

# shellcheck source=scripts/venv.sh
. "$ROOT/scripts/venv.sh"
PY=$(venv_python)

# python-etcd3 in .tools/bench-venv: installed by scripts/install-deps.sh (the tests use it too).
VENV="$ROOT/.tools/bench-venv"

# --- build -----------------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  PROFILE_ARGS=(--profile dev)
  BUILD_ARGS=()
  BIN_DIR=debug
  OUT_DIR="$ROOT/target/lockbench-smoke"
  OUT="$OUT_DIR/benchmarks.md"
  CHART="$OUT_DIR/img/benchmarks.svg"
else
  # The release profile for the benchmark too (not cargo's `bench` profile), so that lockkeeper
  # itself is compiled once for both.
  PROFILE_ARGS=(--profile release)
  BUILD_ARGS=(--release)
  BIN_DIR=release
  OUT="docs/benchmarks.md"
  CHART="docs/img/benchmarks.svg"
fi
log "building the benchmark and lockkeeper ($BIN_DIR)"
BENCH=$(cargo bench --quiet "${PROFILE_ARGS[@]}" --bench lockbench --no-run --message-format=json |
  "$PY" -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "lockbench" and m.get("executable"):
        print(m["executable"])
')
[ -x "$BENCH" ] || { log "could not find the lockbench executable"; exit 1; }
# Last, so that target/*/lockkeeper is the binary users build (without the dev-dependencies'
# feature unification that building a bench target brings).
cargo build --quiet "${BUILD_ARGS[@]}" --bin lockkeeper
LOCKKEEPER="$ROOT/target/$BIN_DIR/lockkeeper"
T_BUILT=$(date +%s)
log "build done in $((T_BUILT - T_START)) s"

# --- cluster ---------------------------------------------------------------------------------
WORK=$(mktemp -d -t lockbench-etcd.XXXXXX)
PIDS=()
BENCH_PID=""
cleanup() {
  local pid _
  if [ -n "$BENCH_PID" ]; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/etcd-cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/etcd-cluster.sh"
start_etcd_cluster "$WORK" lockbench || exit 1
FSTYPE=$(df -T "$WORK" 2>/dev/null | awk 'NR == 2 { print $2 }')
log "3-member etcd cluster up: $ENDPOINTS (data on ${FSTYPE:-?})"

# --- measure ---------------------------------------------------------------------------------
COMMAND="scripts/bench.sh"
ARGS=()
if [ "$SMOKE" = 1 ]; then
  COMMAND+=" --smoke"
  ARGS+=(--smoke)
fi
if [ -n "$ONLY" ]; then
  COMMAND+=" --only $ONLY"
  ARGS+=(--only "$ONLY")
fi
rc=0
"$BENCH" --endpoints "$ENDPOINTS" \
  --lockkeeper "$LOCKKEEPER" --etcdctl "$ETCDCTL" \
  --python "$VENV/bin/python" --pylock "$ROOT/scripts/bench_peers/pylock.py" \
  --out "$OUT" --chart "$CHART" --command "$COMMAND" \
  --cluster-note "3 etcd members on 127.0.0.1 (loopback), etcd's default heartbeat 100 ms / election 1 s, data dirs on ${FSTYPE:-?}" \
  "${ARGS[@]}" ${LOCKBENCH_ARGS:-} & # LOCKBENCH_ARGS: word splitting wanted
BENCH_PID=$!
wait "$BENCH_PID" || rc=$?
BENCH_PID=""
T_END=$(date +%s)
log "finished in $((T_END - T_START)) s (build $((T_BUILT - T_START)) s), exit code $rc"
exit "$rc"
