#!/usr/bin/env bash
# The lockkeeper demo: a local 3-member etcd cluster (no Docker), then
#   1. three library processes (crates/lockkeeper/examples/contend.rs) passing one lock around, with fencing tokens;
#   2. three `lockkeeper run` sidecars contending for one lock: readiness follows ownership,
#      a SIGKILLed holder is replaced after its lease TTL, a SIGTERMed one hands over at once.
# Everything it starts is stopped on exit. Installs what is missing (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install-deps.sh
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"

echo "==> building lockkeeper and the example"
cargo build --quiet --bin lockkeeper
cargo build --quiet -p lockkeeper --example contend
BIN="$ROOT/target/debug/lockkeeper"
EXAMPLE="$ROOT/target/debug/examples/contend"

WORK=$(mktemp -d -t lockkeeper-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# shellcheck source=scripts/etcd-cluster.sh
. "$(dirname "${BASH_SOURCE[0]}")/etcd-cluster.sh"

echo "==> starting a 3-member etcd cluster (data in $WORK)"
start_etcd_cluster "$WORK" lockkeeper-demo
ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health

echo
echo "==> part 1: three processes share lock 'demo' through the library (FIFO, fencing tokens)"
for n in alice bob carol; do
  "$EXAMPLE" --endpoints "$ENDPOINTS" --name "$n" --lock demo --rounds 2 --hold 600ms &
  PIDS+=($!)
  sleep 0.1
done
wait "${PIDS[@]:3}" || true
PIDS=("${PIDS[@]:0:3}")

echo
echo "==> part 2: three 'lockkeeper run' sidecars contend for lock 'singleton' (TTL 5s)"
declare -A SIDECAR_PID SIDECAR_PORT
for n in pod-a pod-b pod-c; do
  port=$(free_port)
  SIDECAR_PORT[$n]=$port
  "$BIN" run --etcd-endpoints "$ENDPOINTS" --lock singleton --identity "$n" --ttl 5s \
    --listen "127.0.0.1:$port" --log-format text --log-level info 2>"$WORK/$n.log" &
  SIDECAR_PID[$n]=$!
  PIDS+=($!)
  disown "$!" # the demo kills some on purpose: no job-status lines
done

show() {
  local line="  t=$(date +%T)"
  for n in pod-a pod-b pod-c; do
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${SIDECAR_PORT[$n]}/readyz" || true)
    [ "$code" = 000 ] && code=down
    line+="  $n:/readyz=$code"
  done
  echo "$line"
}
holder() {
  for n in pod-a pod-b pod-c; do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${SIDECAR_PORT[$n]}/readyz" || true)" = 200 ]; then
      echo "$n"; return
    fi
  done
}
for _ in 1 2 3; do show; sleep 1; done
h=$(holder)
echo "  holder is $h: $(curl -s "http://127.0.0.1:${SIDECAR_PORT[$h]}/status")"

echo "==> SIGKILL $h: its lease must expire (TTL 5s) before anyone else turns ready"
kill -KILL "${SIDECAR_PID[$h]}"
for _ in $(seq 1 8); do show; sleep 1; done
h2=$(holder)
echo "  new holder is $h2: $(curl -s "http://127.0.0.1:${SIDECAR_PORT[$h2]}/status")"

echo "==> SIGTERM $h2: it releases at once and the last pod takes over within a second"
kill -TERM "${SIDECAR_PID[$h2]}"
for _ in 1 2 3; do show; sleep 0.5; done
h3=$(holder)
[ -n "$h3" ] && echo "  new holder is $h3: $(curl -s "http://127.0.0.1:${SIDECAR_PORT[$h3]}/status")"

echo
echo "==> audit trail from the sidecar logs"
grep -h 'lockkeeper::audit' "$WORK"/pod-*.log | grep -E 'acquired|released|lost' | cut -c1-220 || true
echo
echo "demo finished; stopping everything"
