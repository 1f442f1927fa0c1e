#!/usr/bin/env bash
# herald bootstrap: install what a fresh Debian 12 machine lacks to build, test and run herald.
# Idempotent and fast when everything is present (no apt call at all then).
#   - Debian packages (apt-get update only when something is missing; as root, or via sudo).
#   - The Microsoft 365 Agents Playground (a dev/test tool, never a runtime dependency), pinned in
#     package.json/package-lock.json at the repo root, into ./node_modules.
# Env: HERALD_SKIP_PLAYGROUND=1 skips the npm part; HERALD_SKIP_APT=1 skips the apt part.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PLAYGROUND_PKG="@microsoft/m365agentsplayground"
PLAYGROUND_VERSION="0.2.28"

say() { printf 'bootstrap: %s\n' "$*" >&2; }

# nginx: tests/integration/test_admin.py runs its own unprivileged nginx (own prefix and port) in
# front of herald with the README's reverse-proxy configuration; the packaged service is not used.
APT_PACKAGES=(
  build-essential pkg-config libevent-dev libcurl4-openssl-dev liblua5.4-dev lua5.4 lua-cjson
  lua-cjson-dev libsqlite3-dev libssl-dev libjansson-dev lua-busted python3 tzdata wrk ca-certificates
  nginx
  clang libclang-rt-dev
)

pkg_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

run_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    say "need root to run: $* (not root and no sudo)"
    return 1
  fi
}

# ---------------------------------------------------------------- Debian packages
apt_part() {
  if [ "${HERALD_SKIP_APT:-0}" = "1" ]; then
    say "HERALD_SKIP_APT=1: not checking Debian packages"
    return 0
  fi
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "no dpkg/apt-get here (not Debian?): install by hand: ${APT_PACKAGES[*]} nodejs npm"
    return 0
  fi

  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
  done
  # Node.js: any node on PATH will do (e.g. NodeSource's nodejs, which bundles npm and conflicts
  # with Debian's npm package). Only when absent, take Debian's (18.x) nodejs and npm.
  if ! command -v node >/dev/null 2>&1 && ! command -v nodejs >/dev/null 2>&1; then
    missing+=(nodejs)
  fi
  if ! command -v npm >/dev/null 2>&1; then
    # Debian's npm conflicts with a NodeSource nodejs (which already provides npm).
    if pkg_installed nodejs && dpkg-query -W -f='${Version}' nodejs 2>/dev/null | grep -q nodesource; then
      say "warning: NodeSource nodejs is installed but npm is missing; not installing Debian's npm (conflicts)"
    else
      missing+=(npm)
    fi
  fi

  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  run_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  run_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    case "$p" in
      nodejs|npm) ;;  # checked below by command -v
      *) pkg_installed "$p" || { say "failed to install $p"; return 1; } ;;
    esac
  done
}

# ---------------------------------------------------------------- Agents Playground (npm)
node_bin() {
  if command -v node >/dev/null 2>&1; then command -v node
  elif command -v nodejs >/dev/null 2>&1; then command -v nodejs
  else return 1
  fi
}

playground_installed_version() {
  local pj="$ROOT/node_modules/$PLAYGROUND_PKG/package.json"
  [ -f "$pj" ] || return 1
  "$1" -e 'process.stdout.write(require(process.argv[1]).version)' "$pj" 2>/dev/null
}

playground_part() {
  if [ "${HERALD_SKIP_PLAYGROUND:-0}" = "1" ]; then
    say "HERALD_SKIP_PLAYGROUND=1: skipping the Agents Playground (make run and tests/e2e need it)"
    return 0
  fi
  local node
  if ! node="$(node_bin)"; then
    say "node not available: skipping the Agents Playground (make run and tests/e2e need it)"
    return 0
  fi
  local major
  major="$("$node" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if [ "$major" -lt 18 ]; then
    say "node $("$node" --version) is older than 18: skipping the Agents Playground (needs node >= 18)"
    return 0
  fi
  if [ "$(playground_installed_version "$node" || true)" = "$PLAYGROUND_VERSION" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    say "npm not available: skipping the Agents Playground (make run and tests/e2e need it)"
    return 0
  fi
  say "installing $PLAYGROUND_PKG@$PLAYGROUND_VERSION into $ROOT/node_modules (node $("$node" --version))"
  local npmlog rc=0
  npmlog="$(mktemp)"
  (
    cd "$ROOT"
    if [ -f package-lock.json ]; then
      npm ci --include=dev --no-audit --no-fund --loglevel=error
    else
      npm install --include=dev --no-audit --no-fund --loglevel=error --save-exact --save-dev \
        "$PLAYGROUND_PKG@$PLAYGROUND_VERSION"
    fi
  ) >"$npmlog" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    grep -v 'Unknown user config "nodedir"' "$npmlog" >&2 || true
    rm -f "$npmlog"
    say "npm failed (exit $rc) installing $PLAYGROUND_PKG@$PLAYGROUND_VERSION"
    return 1
  fi
  rm -f "$npmlog"
  local got
  got="$(playground_installed_version "$node" || true)"
  if [ "$got" != "$PLAYGROUND_VERSION" ]; then
    say "failed to install $PLAYGROUND_PKG@$PLAYGROUND_VERSION (found '${got:-nothing}')"
    return 1
  fi
}

# The Makefile asks pkg-config for its PKGS; say plainly which one is still missing (a new
# dependency added to the Makefile but not to APT_PACKAGES above) instead of a later compile error.
check_pkg_config() {
  command -v pkg-config >/dev/null 2>&1 || return 0
  local pkgs p missing=()
  pkgs="$(sed -n 's/^PKGS[[:space:]]*:\{0,1\}=[[:space:]]*//p' "$ROOT/Makefile" 2>/dev/null | head -n 1)"
  for p in $pkgs; do
    pkg-config --exists "$p" 2>/dev/null || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "error: pkg-config cannot find: ${missing[*]} (Makefile PKGS); add its -dev package to scripts/bootstrap.sh"
    return 1
  fi
}

apt_part
check_pkg_config
playground_part
