#!/usr/bin/env bash
# Fuzzes configuration parsing with cargo-fuzz (libFuzzer + AddressSanitizer):
#
#   scripts/fuzz.sh [config_yaml|cli_args] [seconds]     (default: both targets, 120 s each)
#
# cargo-fuzz needs nightly compiler flags (-Zsanitizer); on a stable toolchain this script sets
# RUSTC_BOOTSTRAP=1, which makes stable rustc accept them. Needs a C++ compiler (libFuzzer is
# built from source). Crashes land in fuzz/artifacts/<target>/. The seeds in fuzz/corpus/ also
# run in CI, with deterministic mutations, in tests/safety.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

targets=("${1:-config_yaml}")
[ $# -eq 0 ] && targets=(config_yaml cli_args)
secs="${2:-120}"
for t in "${targets[@]}"; do
  # Finds go to a scratch corpus so the checked-in seeds stay as they are.
  work="target/corpus-$t"
  mkdir -p "$work"
  echo "fuzz: $t for ${secs}s"
  cargo fuzz run "$t" "$work" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10
done
