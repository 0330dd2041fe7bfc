#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run): install missing tools, then
# format check, lints, every test target and the doc tests. Fails on the first failing step.
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

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets

step "cargo test --doc"
cargo test --doc

step "Helm chart, rendered manifests, compose file"
bash scripts/check-chart.sh

step "benchmark smoke run (exercises every measurement; asserts nothing about speed)"
bash scripts/bench.sh --smoke

step "all checks passed"
