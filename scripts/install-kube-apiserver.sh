#!/usr/bin/env bash
# Installs a real Kubernetes API server (and a kubectl of the same version) for the end-to-end
# tests of the sidecar's Kubernetes reporting, repo-locally under .tools/:
#
#   .tools/kube-1.20.2/bin/kube-apiserver   built from Debian bookworm's `kubernetes` source
#                                           package (upstream v1.20.2 with its vendor/ tree),
#                                           offline, with Debian's Go
#   .tools/kube-1.20.2/bin/kubectl          from Debian's `kubernetes-client` package, unpacked
#                                           here (not installed: it would clash with another
#                                           /usr/bin/kubectl)
#
# The build needs Debian's golang-go, jq and rsync, plus dpkg-dev for `apt-get source` and a
# `deb-src` entry for the machine's Debian suites (added under /etc/apt/sources.list.d/ when
# missing). One change to the upstream tree: its vendored github.com/modern-go/reflect2 1.0.1
# crashes under Go >= 1.18 (a fault in reflect2.UnsafeIterate the first time the server encodes
# a reply to a PATCH); Debian's golang-github-modern-go-reflect2-dev (1.0.2) replaces it.
#
# Idempotent and keyed by version: a warm machine whose binaries report v1.20.2 skips everything.
# A cold build takes about 4 minutes on 2 cores and 1.3 GB of memory; the source tree and Go's
# build cache (both under .tools/) are removed afterwards. Prints the bin directory on the last
# line of stdout. Needs root, or sudo, for apt-get.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
PREFIX="$ROOT/.tools/kube-$VERSION"
BIN="$PREFIX/bin"
BUILD="$ROOT/.tools/kube-build"

log() { printf 'install-kube-apiserver: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
  as_root() { sudo "$@"; }
else
  as_root() { die "need root (or sudo) to run: $*"; }
fi
apt() { as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 "$@"; }

# `vX.Y.Z` from `--version` output such as "Kubernetes v1.20.2" or "Client Version: v1.20.2".
reports_version() {
  local out
  out=$("$@" 2>/dev/null) || return 1
  grep -q "v$VERSION\b" <<<"$out"
}

apiserver_ok() { [ -x "$BIN/kube-apiserver" ] && reports_version "$BIN/kube-apiserver" --version; }
kubectl_ok() { [ -x "$BIN/kubectl" ] && reports_version "$BIN/kubectl" version --client; }

if apiserver_ok && kubectl_ok; then
  log "present: kube-apiserver and kubectl v$VERSION ($BIN)"
  echo "$BIN"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "no apt-get (not Debian?): cannot build kube-apiserver v$VERSION"

# A deb-src twin of each `Types: deb` stanza (deb822) or `deb` line (one-line format), so that
# `apt-get source` finds the package in the suites the machine already uses.
ensure_deb_src() {
  if apt-get source --print-uris "kubernetes=$DEB_VERSION" >/dev/null 2>&1; then
    return
  fi
  local dir=/etc/apt/sources.list.d src_file=/etc/apt/sources.list.d/lockkeeper-deb-src.sources tmp
  tmp=$(mktemp)
  local f
  for f in "$dir"/*.sources; do
    [ -e "$f" ] && [ "$f" != "$src_file" ] || continue
    grep -q 'debian' "$f" || continue
    sed -n '/^Types:/,$p' "$f" | sed 's/^Types: deb$/Types: deb-src/' >>"$tmp"
    printf '\n' >>"$tmp"
  done
  for f in /etc/apt/sources.list "$dir"/*.list; do
    [ -e "$f" ] || continue
    grep -E '^deb [^ ]*debian' "$f" | sed 's/^deb /deb-src /' | while read -r line; do
      printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' \
        "$(awk '{print $2}' <<<"$line")" "$(awk '{print $3}' <<<"$line")" \
        "$(cut -d' ' -f4- <<<"$line")"
    done >>"$tmp" || true
  done
  grep -q '^Types: deb-src' "$tmp" || die "no Debian entry in the apt sources to make a deb-src entry from"
  log "adding deb-src entries ($src_file)"
  as_root install -m 644 "$tmp" "$src_file"
  rm -f "$tmp"
  apt update >/dev/null
}

BUILD_DEPS=(golang-go jq rsync dpkg-dev golang-github-modern-go-reflect2-dev)
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2

install_build_deps() {
  local missing=() pkg
  for pkg in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    # rsync's postinst would start its daemon; without an init system that can fail the
    # install. A policy-rc.d answering 101 ("action forbidden") stops it, for this install only.
    local policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
      as_root sh -c "printf '#!/bin/sh\nexit 101\n' >'$policy' && chmod 755 '$policy'"
      trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt update >/dev/null
    apt install -y --no-install-recommends "${missing[@]}" >&2
  fi
  [ -d "$REFLECT2" ] || die "$REFLECT2 missing after installing golang-github-modern-go-reflect2-dev"
}

build_apiserver() {
  ensure_deb_src
  install_build_deps
  rm -rf "$BUILD"
  mkdir -p "$BUILD"
  log "fetching the source of kubernetes $DEB_VERSION"
  (cd "$BUILD" && apt-get source -q "kubernetes=$DEB_VERSION" >&2) || die "apt-get source kubernetes failed"
  local tree
  tree=$(find "$BUILD" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
  [ -n "$tree" ] && [ -f "$tree/cmd/kube-apiserver/apiserver.go" ] || die "no kube-apiserver source in $BUILD"
  [ -d "$tree/vendor/github.com/modern-go/reflect2" ] || die "the source has no vendored reflect2 to replace"
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r "$REFLECT2" "$tree/vendor/github.com/modern-go/reflect2"

  log "building kube-apiserver v$VERSION (about 4 minutes on 2 cores)"
  local started=$SECONDS
  (
    cd "$tree"
    export GOCACHE="$BUILD/go-cache" GOTOOLCHAIN=local
    export CGO_ENABLED=0 KUBE_GIT_VERSION="v$VERSION" KUBE_GIT_TREE_STATE=clean
    make WHAT=cmd/kube-apiserver >&2
  ) || die "building kube-apiserver failed"
  mkdir -p "$BIN"
  install -m 755 "$tree/_output/bin/kube-apiserver" "$BIN/kube-apiserver"
  log "built in $((SECONDS - started)) s"
}

install_kubectl() {
  local dir
  dir=$(mktemp -d)
  log "unpacking kubectl from kubernetes-client $DEB_VERSION"
  (cd "$dir" && apt-get download -q "kubernetes-client=$DEB_VERSION" >&2) ||
    die "apt-get download kubernetes-client failed"
  dpkg-deb -x "$dir"/kubernetes-client_*.deb "$dir/root"
  mkdir -p "$BIN"
  install -m 755 "$dir/root/usr/bin/kubectl" "$BIN/kubectl"
  rm -rf "$dir"
}

if ! apiserver_ok; then
  build_apiserver
  apiserver_ok || die "the built kube-apiserver does not report v$VERSION"
  rm -rf "$BUILD"
fi
if ! kubectl_ok; then
  install_kubectl
  kubectl_ok || die "the unpacked kubectl does not report v$VERSION"
fi
log "done: kube-apiserver and kubectl v$VERSION in $BIN"
echo "$BIN"
