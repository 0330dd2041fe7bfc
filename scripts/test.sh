#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run): install missing tools, then
# format check, lints, the API docs, the library's package, every test target of the workspace
# (the agent, crates/lockkeeper, crates/testkit; the agent's end-to-end Kubernetes tests against a
# real kube-apiserver among them) and the doc tests, then the library, safety and
# auth suites again against upstream etcd 3.5.1. Fails on the first failing step.
#
# The tests take etcd and etcdctl from $LOCKKEEPER_ETCD_BIN and $LOCKKEEPER_ETCDCTL_BIN, else
# from PATH (Debian's 3.4 here).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# rustup installs into ~/.cargo/bin, which non-login shells may not have on PATH.
if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# Tests that need etcd fail (never skip) when it is missing.
export LOCKKEEPER_REQUIRE_ETCD=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step() { printf '\n==> %s\n' "$*"; }

step "install dependencies"
bash scripts/install-deps.sh

# The end-to-end Kubernetes tests (tests/kube_apiserver.rs) render the chart with helm and run a
# real kube-apiserver and kubectl, built or unpacked under .tools/ (a warm machine skips the
# build). The build runs in the background while the lints compile; the tests wait for it, and a
# failed build fails the run.
step "helm"
LOCKKEEPER_HELM_BIN=$(bash scripts/install-helm.sh | tail -n 1)
export LOCKKEEPER_HELM_BIN
KUBE_VERSION=$(sed -n 's/^VERSION=//p' scripts/install-kube-apiserver.sh)
mkdir -p .tools
KUBE_LOG=.tools/install-kube-apiserver.log
step "kube-apiserver and kubectl $KUBE_VERSION (in the background; log: $KUBE_LOG)"
bash scripts/install-kube-apiserver.sh >"$KUBE_LOG" 2>&1 &
KUBE_PID=$!
wait_for_kube() {
  local rc=0
  wait "$KUBE_PID" || rc=$?
  if [ "$rc" -ne 0 ]; then
    cat "$KUBE_LOG"
    echo "kube-apiserver $KUBE_VERSION could not be installed (exit $rc)" >&2
    exit 1
  fi
  local bin
  bin=$(tail -n 1 "$KUBE_LOG")
  export LOCKKEEPER_KUBE_APISERVER_BIN=$bin/kube-apiserver LOCKKEEPER_KUBECTL_BIN=$bin/kubectl
  grep -E '^install-kube-apiserver: (built|present|done)' "$KUBE_LOG" || true
}

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc --no-deps --workspace (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace

# The library is publishable on its own: its package must build from what it ships alone.
step "cargo package -p lockkeeper"
cargo package -p lockkeeper --allow-dirty --quiet

# The etcd a run's tests start, as the harness (crates/testkit/src/etcd/setup.rs) finds it.
etcd_version() {
  local bin=${LOCKKEEPER_ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
  printf '%s: ' "$bin"
  "$bin" --version | sed -n 1p
}

step "waiting for kube-apiserver $KUBE_VERSION"
wait_for_kube

step "cargo test --workspace --all-targets (etcd: $(etcd_version))"
cargo test --workspace --all-targets

ETCD35=$PWD/.tools/etcd-3.5.1/bin
step "cargo test -p lockkeeper --test lock --test auth_tls, -p lockkeeper-agent --test safety --test auth_tls against upstream etcd 3.5.1 (etcd: $(LOCKKEEPER_ETCD_BIN=$ETCD35/etcd etcd_version))"
started=$(date +%s)
LOCKKEEPER_ETCD_BIN=$ETCD35/etcd LOCKKEEPER_ETCDCTL_BIN=$ETCD35/etcdctl \
  cargo test -p lockkeeper --test lock --test auth_tls
LOCKKEEPER_ETCD_BIN=$ETCD35/etcd LOCKKEEPER_ETCDCTL_BIN=$ETCD35/etcdctl \
  cargo test -p lockkeeper-agent --test safety --test auth_tls
echo "etcd 3.5.1 run: $(($(date +%s) - started)) s"

step "cargo test --workspace --doc"
cargo test --workspace --doc

step "Helm chart, rendered manifests, compose file"
bash scripts/check-chart.sh

step "benchmark smoke run (exercises every measurement; asserts nothing about speed)"
bash scripts/bench.sh --smoke

step "all checks passed"
