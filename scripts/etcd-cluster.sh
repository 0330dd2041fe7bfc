# Sourced by scripts/demo.sh and scripts/bench.sh: starts a local 3-member etcd cluster on free
# loopback ports from the `etcd` binary (no Docker).
#
#   start_etcd_cluster DIR TOKEN
#
# Data dirs and logs go under DIR; the member pids are appended to the caller's PIDS array (the
# caller stops them); ENDPOINTS is set to the comma-separated client URLs. Fails, printing the
# members' log tails, if the cluster is not healthy within 30 s.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_etcd_cluster() {
  local dir=$1 token=$2 i initial
  local -a client peer
  for i in 0 1 2; do client[i]=$(free_port); peer[i]=$(free_port); done
  initial="m0=http://127.0.0.1:${peer[0]},m1=http://127.0.0.1:${peer[1]},m2=http://127.0.0.1:${peer[2]}"
  for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$dir/m$i" \
      --listen-client-urls "http://127.0.0.1:${client[i]}" --advertise-client-urls "http://127.0.0.1:${client[i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[i]}" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "$token" \
      --logger zap --log-outputs "$dir/etcd-m$i.log" >/dev/null 2>&1 &
    PIDS+=($!)
    disown "$!" # no job-status line when the caller stops it
  done
  ENDPOINTS="http://127.0.0.1:${client[0]},http://127.0.0.1:${client[1]},http://127.0.0.1:${client[2]}"
  for _ in $(seq 1 150); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "the etcd cluster did not become healthy; log tails:" >&2
  tail -n 20 "$dir"/etcd-m*.log >&2 || true
  return 1
}
