#!/usr/bin/env bash
# End-to-end: herald against the real Microsoft 365 Agents Playground, no browser.
# See tests/e2e/playground.test.cjs. Skips (exit 0, "0 passed, 0 failed") when node, the playground
# (scripts/bootstrap.sh installs it) or the herald binary is absent. Whole run bounded to ~60 s.
# Env: HERALD_BIN (default build/asan/herald if present, else build/herald), E2E_VERBOSE=1,
# HERALD_TEST_TIME_FACTOR (multiplies the time limit and the driver's budgets, default 1).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PG_CLI="$ROOT/node_modules/@microsoft/m365agentsplayground/cli.js"
LIMIT_S="${E2E_TIME_LIMIT_S:-$(awk -v f="${HERALD_TEST_TIME_FACTOR:-1}" 'BEGIN { if (f + 0 <= 0) f = 1; printf "%d", 60 * f }')}"

skip() {
  echo "SKIP e2e (Agents Playground): $*"
  echo "0 passed, 0 failed"
  exit 0
}

NODE="$(command -v node || command -v nodejs || true)"
[ -n "$NODE" ] || skip "node not found (scripts/bootstrap.sh installs it)"
major="$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
[ "$major" -ge 18 ] 2>/dev/null || skip "node $("$NODE" --version 2>/dev/null) is too old (need >= 18)"
[ -f "$PG_CLI" ] || skip "the Agents Playground is not installed (run scripts/bootstrap.sh without HERALD_SKIP_PLAYGROUND=1)"
if [ -n "${HERALD_BIN:-}" ]; then
  case "$HERALD_BIN" in /*) BIN="$HERALD_BIN" ;; *) BIN="$ROOT/$HERALD_BIN" ;; esac
elif [ -x "$ROOT/build/asan/herald" ]; then
  BIN="$ROOT/build/asan/herald"
else
  BIN="$ROOT/build/herald"
fi
[ -x "$BIN" ] || skip "$BIN not built"
export HERALD_BIN="$BIN"

# The driver and everything it starts (herald, the playground) run in their own process group, so
# that whatever happens (time limit, Ctrl-C, a crash of the driver) nothing is left behind.
PGID=""
cleanup() {
  if [ -n "$PGID" ]; then
    kill -TERM -- "-$PGID" 2>/dev/null || true
    sleep 0.2
    kill -KILL -- "-$PGID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'cleanup; echo "e2e: interrupted"; echo "0 passed, 1 failed"; exit 130' INT TERM HUP

cd "$ROOT"
setsid timeout -k 3 "$LIMIT_S" "$NODE" "$ROOT/tests/e2e/playground.test.cjs" </dev/null &
PGID=$!
rc=0
wait "$PGID" || rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "FAIL e2e: killed at the ${LIMIT_S} s time limit"
  echo "0 passed, 1 failed"
fi
exit "$rc"
