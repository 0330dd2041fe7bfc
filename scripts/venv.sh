# Sourced by the scripts that keep Python tools in a virtualenv under .tools/ (never
# system-wide): scripts/install-deps.sh (etcd 3.5 for the tests) and scripts/bench.sh
# (python-etcd3).
#
#   venv_python          prints a python3 that can make virtualenvs ($PYTHON, else python3),
#                        installing Debian's python3 and python3-venv first when there is none
#   make_venv DIR PKG... (re)creates the virtualenv DIR and pip-installs PKG... into it
#
# Progress goes to stderr, so that callers can capture what these print on stdout.

venv_log() { printf 'venv: %s\n' "$*" >&2; }

venv_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    venv_log "not root and no sudo: cannot run $*"
    return 1
  fi
}

venv_python() {
  local py=${PYTHON:-python3}
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    command -v "$py"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || {
    venv_log "no python3 with venv and ensurepip, and no apt-get to install one"
    return 1
  }
  venv_log "installing python3 and python3-venv (Debian)"
  venv_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null || return 1
  venv_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
    python3 python3-venv >&2 || return 1
  /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || {
    venv_log "python3 still cannot make virtualenvs"
    return 1
  }
  echo /usr/bin/python3
}

make_venv() {
  local dir=$1 py
  shift
  py=$(venv_python) || return 1
  venv_log "creating $dir with $py, installing $*"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$py" -m venv "$dir" || return 1
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
}
