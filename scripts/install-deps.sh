#!/usr/bin/env bash
# Installs what lockkeeper's build and tests need on a Debian machine: etcd + etcdctl (the tests
# run real clusters), protoc (etcd-client compiles etcd's protos), promtool (metrics checks),
# faketime (clock-skew tests), curl, and a C linker for cargo.
#
# Idempotent: checks each tool by command presence and installs only the missing packages;
# `apt-get update` runs once, and only when something is missing. Needs root, or sudo.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# "command package..." — the packages that provide the command on Debian.
REQUIRED=(
  "etcd etcd-server"
  "etcdctl etcd-client"
  "protoc protobuf-compiler libprotobuf-dev"
  "promtool prometheus"
  "faketime faketime"
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

if [ "${#missing[@]}" -eq 0 ]; then
  log "all dependencies present; nothing installed"
  exit 0
fi
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
