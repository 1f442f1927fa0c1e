#!/usr/bin/env bash
# `make run`: herald (dev mode) with the example bot, plus Microsoft's Agents Playground as a local
# Teams to chat with it. Both listen on 127.0.0.1 only. Ctrl-C (or SIGTERM) stops both.
#
#   scripts/run_playground.sh [SCRIPT.lua]        (default scripts/welcome.lua)
#
# Env: HERALD_PORT (3978), PLAYGROUND_PORT (56150), HERALD_BIN (build/herald),
#      HERALD_SCRIPT (scripts/welcome.lua), HERALD_RUN_DIR (build/run: db and playground log),
#      HERALD_SHUTDOWN_GRACE_MS (3000 here), and herald's other HERALD_* variables (e.g.
#      HERALD_LOG_LEVEL=debug).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERALD_PORT="${HERALD_PORT:-3978}"
PLAYGROUND_PORT="${PLAYGROUND_PORT:-56150}"
HERALD_BIN="${HERALD_BIN:-$ROOT/build/herald}"
SCRIPT="${1:-${HERALD_SCRIPT:-$ROOT/scripts/welcome.lua}}"
RUN_DIR="${HERALD_RUN_DIR:-$ROOT/build/run}"
# Ctrl-C should not wait herald's production grace (10 s) for a demo bot's sleeping tasks.
export HERALD_SHUTDOWN_GRACE_MS="${HERALD_SHUTDOWN_GRACE_MS:-3000}"
PG_CLI="$ROOT/node_modules/@microsoft/m365agentsplayground/cli.js"
PRELOAD="$ROOT/scripts/loopback-preload.cjs"

if [ -t 2 ]; then
  say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
  say() { printf '==> %s\n' "$*" >&2; }
fi
die() { printf 'run_playground: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ checks
[ -x "$HERALD_BIN" ] || die "$HERALD_BIN not found: run 'make' first"
[ -f "$SCRIPT" ] || die "bot script $SCRIPT not found"
NODE="$(command -v node || command -v nodejs || true)"
[ -n "$NODE" ] || die "node not found: run scripts/bootstrap.sh (the Agents Playground needs Node.js >= 18)"
[ -f "$PG_CLI" ] || die "Agents Playground not installed: run scripts/bootstrap.sh (without HERALD_SKIP_PLAYGROUND)"
for p in "$HERALD_PORT" "$PLAYGROUND_PORT"; do
  [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] && [ "$p" -lt 65536 ] || die "bad port '$p'"
done

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_status PORT PATH -> prints the HTTP status code (or nothing)
http_status() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
  IFS= read -r -t 3 line <&3 || true
  while IFS= read -r -t 3 _ <&3; do :; done  # drain to EOF: no reset on the server's side
  exec 3<&- 3>&-
  line="${line#HTTP/1.? }"
  printf '%s' "${line%% *}"
}

# The playground silently takes a random port when its port is busy, and the URL we print would be
# wrong: refuse instead. herald reports its own port-in-use error.
port_open "$PLAYGROUND_PORT" && die "port $PLAYGROUND_PORT is in use (set PLAYGROUND_PORT=...)"
port_open "$HERALD_PORT" && die "port $HERALD_PORT is in use (set HERALD_PORT=...)"

mkdir -p "$RUN_DIR"

# ------------------------------------------------------------------ process handling
HERALD_PID=""
PG_PID=""
STOPPING=0

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

stop_all() {
  [ "$STOPPING" = 1 ] && return 0
  STOPPING=1
  # herald first, so that its in-flight tasks can still reach the playground's connector while it
  # drains (bounded by HERALD_SHUTDOWN_GRACE_MS), then the playground.
  stop_one "$HERALD_PID" $(( (HERALD_SHUTDOWN_GRACE_MS + 999) / 1000 + 3 ))
  stop_one "$PG_PID" 5
  wait 2>/dev/null || true
}

stop_one() {  # PID SECONDS
  local pid="$1" deadline=$((SECONDS + $2))
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if alive "$pid"; then
    printf 'run_playground: pid %s did not stop in %s s, killing it\n' "$pid" "$2" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

on_signal() {
  printf '\n' >&2
  say "stopping herald and the Agents Playground"
  stop_all
  exit 0
}
trap on_signal INT TERM HUP
trap stop_all EXIT

# Children get their own session (setsid): only this script signals them, exactly once, so a
# terminal Ctrl-C doesn't hit them twice. A background child of a non-interactive shell is no
# group leader, so setsid (and env) exec in place and $! is the real pid.
DETACH=()
command -v setsid >/dev/null 2>&1 && DETACH=(setsid)

# ------------------------------------------------------------------ herald
say "starting herald: $HERALD_BIN run --dev --listen 127.0.0.1:$HERALD_PORT $SCRIPT"
"${DETACH[@]}" "$HERALD_BIN" run --dev --listen "127.0.0.1:$HERALD_PORT" \
  --db "${HERALD_DB:-$RUN_DIR/herald.db}" "$SCRIPT" </dev/null &
HERALD_PID=$!

deadline=$((SECONDS + 20))
until [ "$(http_status "$HERALD_PORT" /healthz || true)" = "200" ]; do
  alive "$HERALD_PID" || { wait "$HERALD_PID" 2>/dev/null; die "herald exited before it was ready (see its log above)"; }
  [ "$SECONDS" -lt "$deadline" ] || die "herald did not answer GET /healthz on 127.0.0.1:$HERALD_PORT within 20 s"
  sleep 0.1
done

# ------------------------------------------------------------------ Agents Playground
PG_LOG="$RUN_DIR/playground.log"
: >"$PG_LOG"
# cwd = RUN_DIR: its devTools/ and config lookups (.m365agentsplayground.yml) stay out of the tree.
"${DETACH[@]}" env -C "$RUN_DIR" TEAMSAPPTESTER_BROWSER=none M365_AGENTS_PLAYGROUND_LOGFILE="$PG_LOG" \
  "$NODE" -r "$PRELOAD" "$PG_CLI" start \
  -e "http://127.0.0.1:$HERALD_PORT/api/messages" -c msteams --dt \
  -p "$PLAYGROUND_PORT" --su "http://127.0.0.1:$PLAYGROUND_PORT/_connector" \
  </dev/null >"$RUN_DIR/playground.stdout" 2>&1 &
PG_PID=$!

deadline=$((SECONDS + 30))
until [ "$(http_status "$PLAYGROUND_PORT" /_debug/ping || true)" = "200" ]; do
  if ! alive "$PG_PID"; then
    cat "$RUN_DIR/playground.stdout" >&2 || true
    tail -n 20 "$PG_LOG" >&2 || true
    die "the Agents Playground exited before it was ready"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "the Agents Playground did not answer on 127.0.0.1:$PLAYGROUND_PORT within 30 s"
  sleep 0.2
done

say "herald:      http://127.0.0.1:$HERALD_PORT/api/messages  (bot: ${SCRIPT#"$ROOT"/}, dev mode)"
say "playground:  log in ${PG_LOG#"$ROOT"/}"
say "Open http://127.0.0.1:$PLAYGROUND_PORT in your browser to chat with the bot. Ctrl-C stops both."
say "herald's log follows:"

# herald logs to stderr, inherited: it streams here. Wait until either process ends.
while alive "$HERALD_PID" && alive "$PG_PID"; do
  wait -n "$HERALD_PID" "$PG_PID" 2>/dev/null || true
done
if ! alive "$HERALD_PID"; then
  rc=0; wait "$HERALD_PID" 2>/dev/null || rc=$?
  say "herald exited (status $rc); stopping the Agents Playground"
else
  rc=1
  say "the Agents Playground exited; stopping herald (its log: ${PG_LOG#"$ROOT"/})"
fi
stop_all
exit "$rc"
