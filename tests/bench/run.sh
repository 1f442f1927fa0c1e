#!/usr/bin/env bash
# tests/bench/run.sh — what `make bench` runs (after building build/herald).
#
# Inbound benchmark, end to end on loopback: wrk POSTs Teams message activities (unique activity ids,
# spread over 1,000 conversations) to a bot; the bot replies to each through a null Bot Connector
# (tests/bench/null_connector.c, libevent, 201 {"id":"1"} to every POST). Measured for
#   - herald in dev mode running tests/bench/echo_bot.lua, and
#   - the honest baseline: a Bot Framework SDK v4 (botbuilder-js, pinned in tests/bench/sdk/) echo bot,
#     CloudAdapter, auth off, on Node's http module,
# under the same load in the same run: throughput and latency at a fixed connection count (median of
# BENCH_RUNS runs), latency at a paced ~1,000 req/s, replies received by the connector, idle and peak RSS.
# Results: a markdown table on stdout and in build/bench/results.md (raw per-run lines in build/bench/runs.txt).
#
# Env knobs (defaults in brackets):
#   BENCH_DURATION [10s]  BENCH_RUNS [3]  BENCH_CONNECTIONS [50]  BENCH_THREADS [1]  BENCH_WARMUP [3s]
#   BENCH_RATE [1000] BENCH_RATE_CONNECTIONS [50] BENCH_RATE_DURATION [10s]   the paced run
#   BENCH_CONVERSATIONS [1000]  BENCH_TENANTS [1]
#   BENCH_HERALD_GOVERNOR [off]  HERALD_GOVERNOR for the main herald run (herald's Teams-rate pacing:
#                         50/s per tenant by default, which would cap this load; the SDK paces nothing)
#   BENCH_GOVERNOR_RUN [1] one extra herald run with the governor on and the load spread over
#                         BENCH_GOV_TENANTS [1000] tenants x BENCH_GOV_CONVERSATIONS [10000] conversations
#   BENCH_PIN [auto]      1: bot + null connector on CPU 0, wrk on CPU 1 (default when >= 2 CPUs); 0: no pinning
#   BENCH_SKIP_SDK [0]    1: herald only (also skipped, with a message, when node/npm are missing)
#   BENCH_KEEP [0]        1: keep the scratch directory (logs) instead of deleting it
#   BENCH_SKIP_OUTBOX [0] 1: skip the outbox benchmark (tests/bench/outbox.sh, OUTBOX_* knobs there)
#   BENCH_SKIP_RELOAD [0] 1: skip the hot reload benchmark (tests/bench/reload.sh, RELOAD_BENCH_* knobs there)
#   BENCH_SKIP_AUTH [0]   1: skip the inbound authentication benchmark (tests/bench/auth.sh: validated vs dev
#                         mode with the BENCH_* load above; BENCH_AUTH_TOKENS [100000] tokens for its uncached run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=tests/bench
OUT=build/bench
mkdir -p "$OUT"

DURATION=${BENCH_DURATION:-10s}
RUNS=${BENCH_RUNS:-3}
CONNS=${BENCH_CONNECTIONS:-50}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-3s}
RATE=${BENCH_RATE:-1000}
RATE_CONNS=${BENCH_RATE_CONNECTIONS:-50}
RATE_DURATION=${BENCH_RATE_DURATION:-10s}
export BENCH_CONVERSATIONS=${BENCH_CONVERSATIONS:-1000}
export BENCH_TENANTS=${BENCH_TENANTS:-1}
HERALD_GOVERNOR_MAIN=${BENCH_HERALD_GOVERNOR:-off}
GOV_RUN=${BENCH_GOVERNOR_RUN:-1}
GOV_CONVERSATIONS=${BENCH_GOV_CONVERSATIONS:-10000}
GOV_TENANTS=${BENCH_GOV_TENANTS:-1000}
SDK_VERSION=4.23.3   # keep in step with tests/bench/sdk/package.json

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v wrk >/dev/null 2>&1 || die "wrk not found (Debian package wrk; scripts/bootstrap.sh installs it)"
command -v curl >/dev/null 2>&1 || die "curl not found"
[ -x build/herald ] || die "build/herald missing: run make (make bench builds it first)"

NCPU=$(nproc 2>/dev/null || echo 1)
PIN=${BENCH_PIN:-auto}
if [ "$PIN" = auto ]; then
  if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; else PIN=0; fi
fi
if [ "$PIN" = 1 ]; then
  SERVER_PIN=(taskset -c 0)
  LOAD_PIN=(taskset -c 1)
  PIN_DESC="bot + null connector pinned to CPU 0, wrk to CPU 1 (taskset)"
else
  SERVER_PIN=()
  LOAD_PIN=()
  PIN_DESC="no CPU pinning ($NCPU CPUs shared by all)"
fi

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/herald-bench.XXXXXX")"
PIDS=()
cleanup() {
  local rc=$? p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then say "logs kept in $SCRATCH"; else rm -rf "$SCRATCH"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

forget_pid() {  # drop $1 from PIDS once it is reaped
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# wait_port LOGFILE PID NAME -> prints the port from the first "listening on http://HOST:PORT" line
wait_port() {
  local log=$1 pid=$2 name=$3 port=""
  for _ in $(seq 1 200); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" 2>/dev/null | head -1)
    [ -n "$port" ] && { echo "$port"; return 0; }
    kill -0 "$pid" 2>/dev/null || { say "$name exited before listening; its log:"; cat "$log" >&2; return 1; }
    sleep 0.05
  done
  say "$name did not report a listening port within 10 s; its log:"; cat "$log" >&2
  return 1
}

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# utime + stime of a process (and its reaped children) in clock ticks
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK=$(getconf CLK_TCK)

nc_stats() { curl -s --max-time 5 "http://127.0.0.1:$NC_PORT/__stats"; }
nc_field() { nc_stats | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
nc_reset() { curl -s --max-time 5 -X POST "http://127.0.0.1:$NC_PORT/__reset" >/dev/null; }
# wait until the connector's POST count stops moving (in-flight replies after wrk stopped), max ~5 s
nc_settle() {
  local a b
  a=$(nc_field post)
  for _ in $(seq 1 25); do
    sleep 0.2
    b=$(nc_field post)
    [ "$a" = "$b" ] && return 0
    a=$b
  done
}

median() { awk 'NF' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }   # from a "BENCH k=v ..." line

RUNS_TXT="$OUT/runs.txt"
rm -f "$OUT/herald.log" "$OUT/hgov.log" "$OUT/sdk.log" "$OUT/results.md"
: >"$RUNS_TXT"

# ----------------------------------------------------------------- null connector
NC_BIN="$OUT/null_connector"
if [ ! -x "$NC_BIN" ] || [ "$HERE/null_connector.c" -nt "$NC_BIN" ]; then
  say "building $NC_BIN"
  # shellcheck disable=SC2046
  ${CC:-cc} -O2 -Wall -Wextra -Werror -o "$NC_BIN" "$HERE/null_connector.c" $(pkg-config --cflags --libs libevent)
fi
"${SERVER_PIN[@]}" "$NC_BIN" 0 >"$SCRATCH/null_connector.log" 2>&1 &
NC_PID=$!
PIDS+=("$NC_PID")
NC_PORT=$(wait_port "$SCRATCH/null_connector.log" "$NC_PID" "null connector")
export BENCH_SERVICE_URL="http://127.0.0.1:$NC_PORT"
say "null connector on $BENCH_SERVICE_URL; $PIN_DESC"

# ----------------------------------------------------------------- SDK peer install
SDK_OK=0
SDK_WHY=""
if [ "${BENCH_SKIP_SDK:-0}" = 1 ]; then
  SDK_WHY="BENCH_SKIP_SDK=1"
elif ! command -v node >/dev/null 2>&1; then
  SDK_WHY="node not found"
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
  SDK_WHY="node $(node --version) older than 18"
else
  have=$(node -p "try { require('./$OUT/node_modules/botbuilder/package.json').version } catch (e) { '' }" 2>/dev/null || true)
  if [ "$have" != "$SDK_VERSION" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      SDK_WHY="npm not found (needed once to install botbuilder@$SDK_VERSION into $OUT/node_modules)"
    else
      say "installing botbuilder@$SDK_VERSION into $OUT/node_modules (npm ci, pinned by tests/bench/sdk/package-lock.json)"
      cp "$HERE/sdk/package.json" "$HERE/sdk/package-lock.json" "$OUT/"
      if (cd "$OUT" && npm ci --no-audit --no-fund --loglevel=error) >"$SCRATCH/npm.log" 2>&1; then
        have=$(node -p "require('./$OUT/node_modules/botbuilder/package.json').version" 2>/dev/null || true)
      else
        cat "$SCRATCH/npm.log" >&2
      fi
      [ "$have" = "$SDK_VERSION" ] || SDK_WHY="npm could not install botbuilder@$SDK_VERSION (see above)"
    fi
  fi
  [ -z "$SDK_WHY" ] && SDK_OK=1
fi
[ "$SDK_OK" = 1 ] || say "SDK peer SKIPPED: $SDK_WHY"

# ----------------------------------------------------------------- one target

# wrk_run TAG URL CONNS DURATION [extra wrk args...] -> prints the BENCH line
wrk_run() {
  local tag=$1 url=$2 conns=$3 dur=$4
  shift 4
  local threads=$THREADS
  [ "$threads" -gt "$conns" ] && threads=$conns
  BENCH_RUN="$tag" BENCH_THREADS_N="$threads" "${LOAD_PIN[@]}" wrk -t"$threads" -c"$conns" -d"$dur" --timeout 5s \
    -s "$HERE/activity.lua" "$@" "$url" >"$SCRATCH/wrk-$tag.out" 2>&1 || {
      say "wrk failed ($tag):"; cat "$SCRATCH/wrk-$tag.out" >&2; return 1; }
  grep '^BENCH ' "$SCRATCH/wrk-$tag.out" || { say "no BENCH line from wrk ($tag):"; cat "$SCRATCH/wrk-$tag.out" >&2; return 1; }
}

# bench_target NAME URL PID LOG [RUNS [PACED]] — sets R_<name>_* variables
bench_target() {
  local name=$1 url=$2 pid=$3 log=$4 nruns=${5:-$RUNS} paced=${6:-1} i line req dur rps p50 p99 non2xx errs replies t0 t1 turns rss
  sleep 1
  eval "R_${name}_idle=$(rss_kb "$pid" VmRSS)"

  nc_reset
  wrk_run "$name-warmup" "$url" "$CONNS" "$WARMUP" >/dev/null
  nc_settle

  local rps_l="" p50_l="" p99_l="" cpu_l="" ok=1 total_2xx=0 total_replies=0 total_non2xx=0 total_errs=0 total_conns=0 conns
  for i in $(seq 1 "$nruns"); do
    nc_reset
    t0=$(cpu_ticks "$pid")
    line=$(wrk_run "$name-$i" "$url" "$CONNS" "$DURATION") || return 1
    nc_settle
    t1=$(cpu_ticks "$pid")
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name DIED during run $i ($(wc -l <"$log") log lines); last lines of its log:"
      tail -20 "$log" >&2
      return 1
    fi
    rss=$(rss_kb "$pid" VmRSS)
    replies=$(nc_field reply)
    conns=$(nc_field connections)
    req=$(field requests <<<"$line"); dur=$(field duration_us <<<"$line")
    non2xx=$(field non2xx <<<"$line")
    errs=$(( $(field connect <<<"$line") + $(field read <<<"$line") + $(field write <<<"$line") + $(field timeout <<<"$line") ))
    rps=$(awk -v r="$req" -v n="$non2xx" -v d="$dur" 'BEGIN { printf "%.0f", (r - n) / (d / 1e6) }')
    p50=$(awk -v v="$(field p50_us <<<"$line")" 'BEGIN { printf "%.2f", v / 1000 }')
    p99=$(awk -v v="$(field p99_us <<<"$line")" 'BEGIN { printf "%.2f", v / 1000 }')
    turns=$(( req - non2xx ))
    cpu=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$replies" 'BEGIN { printf "%.1f", n ? t / hz * 1e6 / n : 0 }')
    rps_l+="$rps"$'\n'; p50_l+="$p50"$'\n'; p99_l+="$p99"$'\n'; cpu_l+="$cpu"$'\n'
    total_2xx=$((total_2xx + turns)); total_replies=$((total_replies + replies))
    total_non2xx=$((total_non2xx + non2xx)); total_errs=$((total_errs + errs)); total_conns=$((total_conns + conns))
    # every 2xx answer comes after its reply was sent; the connections in flight when wrk stops add a few
    if [ "$replies" -lt "$turns" ] || [ "$replies" -gt $((turns + CONNS)) ]; then ok=0; fi
    printf '%s run %d: %s req/s p50 %s ms p99 %s ms | 2xx %d non-2xx %d socket errors %d | replies at connector %d over %d new connection(s) | server CPU %s us/turn | RSS %d kB\n' \
      "$name" "$i" "$rps" "$p50" "$p99" "$turns" "$non2xx" "$errs" "$replies" "$conns" "$cpu" "$rss" | tee -a "$RUNS_TXT" >&2
  done
  eval "R_${name}_rps=$(median <<<"$rps_l")"
  eval "R_${name}_p50=$(median <<<"$p50_l")"
  eval "R_${name}_p99=$(median <<<"$p99_l")"
  eval "R_${name}_cpu=$(median <<<"$cpu_l")"
  eval "R_${name}_2xx=$total_2xx R_${name}_replies=$total_replies R_${name}_non2xx=$total_non2xx R_${name}_errs=$total_errs R_${name}_ok=$ok R_${name}_conns=$total_conns"

  eval "R_${name}_ran=1"
  if [ "$paced" = 1 ]; then
    bench_paced "$name" "$url" || return 1
  fi
  eval "R_${name}_peak=$(rss_kb "$pid" VmHWM)"
  eval "R_${name}_after=$(rss_kb "$pid" VmRSS)"
}

bench_paced() {
  local name=$1 url=$2 line req dur non2xx
  # paced run: RATE_CONNS connections, each waiting RATE_CONNS/RATE s (jittered) between requests
  nc_reset
  line=$(BENCH_RATE="$RATE" BENCH_PACED_CONNS="$RATE_CONNS" wrk_run "$name-paced" "$url" "$RATE_CONNS" "$RATE_DURATION") || return 1
  nc_settle
  req=$(field requests <<<"$line"); dur=$(field duration_us <<<"$line"); non2xx=$(field non2xx <<<"$line")
  eval "R_${name}_prate=$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
  eval "R_${name}_pp50=$(awk -v v="$(field p50_us <<<"$line")" 'BEGIN { printf "%.2f", v / 1000 }')"
  eval "R_${name}_pp99=$(awk -v v="$(field p99_us <<<"$line")" 'BEGIN { printf "%.2f", v / 1000 }')"
  eval "R_${name}_pnon2xx=$non2xx R_${name}_preplies=$(nc_field reply) R_${name}_preq=$req"
  printf '%s paced: %s req/s p50 %s ms p99 %s ms | 2xx %d non-2xx %d | replies at connector %d\n' \
    "$name" "$(eval echo "\$R_${name}_prate")" "$(eval echo "\$R_${name}_pp50")" "$(eval echo "\$R_${name}_pp99")" \
    "$((req - non2xx))" "$non2xx" "$(eval echo "\$R_${name}_preplies")" | tee -a "$RUNS_TXT" >&2
}

# stop_target NAME PID LOG — SIGTERM, wait, report exit status and error lines
stop_target() {
  local name=$1 pid=$2 log=$3 rc=0 n
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not exit within 15 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  forget_pid "$pid"
  eval "R_${name}_exit=$rc"
  n=$(grep -ciE '(^|[ "])(error|fatal|panic)([ :=]|$)|Segmentation|Aborted|AddressSanitizer' "$log" || true)
  eval "R_${name}_errlines=$n"
  if [ "$rc" -ne 0 ] || [ "$n" -gt 0 ]; then
    say "$name: exit status $rc after SIGTERM, $n error line(s) in its log; first ones:"
    grep -iE '(^|[ "])(error|fatal|panic)([ :=]|$)|Segmentation|Aborted|AddressSanitizer' "$log" | head -10 >&2 || true
  fi
  cp "$log" "$OUT/$name.log"
}

# ----------------------------------------------------------------- rig floor
# The same paced load as a bare GET to the null connector: the latency the machine, loopback and wrk
# add with no bot in the path (p99 here is the floor under any bot's paced p99).
sleep 0.5
FLOOR_LINE=$(BENCH_FLOOR=1 BENCH_RATE="$RATE" BENCH_PACED_CONNS="$RATE_CONNS" \
  wrk_run floor "http://127.0.0.1:$NC_PORT/floor" "$RATE_CONNS" "$RATE_DURATION") || FLOOR_LINE=""
F_rate=$(awk -v r="$(field requests <<<"$FLOOR_LINE")" -v d="$(field duration_us <<<"$FLOOR_LINE")" 'BEGIN { if (d) printf "%.0f", r / (d / 1e6) }')
F_p50=$(awk -v v="$(field p50_us <<<"$FLOOR_LINE")" 'BEGIN { printf "%.2f", v / 1000 }')
F_p99=$(awk -v v="$(field p99_us <<<"$FLOOR_LINE")" 'BEGIN { printf "%.2f", v / 1000 }')
printf 'rig floor (paced GET to the null connector): %s req/s p50 %s ms p99 %s ms\n' "$F_rate" "$F_p50" "$F_p99" | tee -a "$RUNS_TXT" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ----------------------------------------------------------------- herald
HLOG="$SCRATCH/herald.log"
say "herald: $(build/herald --version) run --dev tests/bench/echo_bot.lua (HERALD_GOVERNOR=$HERALD_GOVERNOR_MAIN)"
HERALD_GOVERNOR="$HERALD_GOVERNOR_MAIN" "${SERVER_PIN[@]}" build/herald run --dev --listen 127.0.0.1:0 --db "$SCRATCH/bench.db" --log-level info \
  "$HERE/echo_bot.lua" >"$HLOG" 2>&1 &
H_PID=$!
PIDS+=("$H_PID")
H_PORT=$(wait_port "$HLOG" "$H_PID" herald)
bench_target herald "http://127.0.0.1:$H_PORT/api/messages" "$H_PID" "$HLOG" || say "herald benchmark failed"
stop_target herald "$H_PID" "$HLOG"

# ----------------------------------------------------------------- herald, governor on
# herald paces sends to Teams' limits (50/s per tenant, per-conversation windows) by default; the
# main run above turns that off to measure the host like the SDK (which paces nothing). Here a fresh
# herald with the governor on, the load spread so that no limit is reached: its bookkeeping cost.
if [ "$GOV_RUN" = 1 ]; then
  GLOG="$SCRATCH/herald-governor.log"
  say "herald, governor on: $GOV_TENANTS tenants x $GOV_CONVERSATIONS conversations, 1 run"
  env -u HERALD_GOVERNOR "${SERVER_PIN[@]}" build/herald run --dev --listen 127.0.0.1:0 \
    --db "$SCRATCH/bench-governor.db" --log-level info "$HERE/echo_bot.lua" >"$GLOG" 2>&1 &
  G_PID=$!
  PIDS+=("$G_PID")
  G_PORT=$(wait_port "$GLOG" "$G_PID" "herald (governor on)")
  BENCH_CONVERSATIONS=$GOV_CONVERSATIONS BENCH_TENANTS=$GOV_TENANTS \
    bench_target hgov "http://127.0.0.1:$G_PORT/api/messages" "$G_PID" "$GLOG" 1 0 || say "herald (governor on) benchmark failed"
  stop_target hgov "$G_PID" "$GLOG"
fi

# ----------------------------------------------------------------- SDK peer
if [ "$SDK_OK" = 1 ]; then
  SLOG="$SCRATCH/sdk.log"
  say "SDK peer: botbuilder@$SDK_VERSION on node $(node --version), CloudAdapter, auth off"
  NODE_PATH="$ROOT/$OUT/node_modules" "${SERVER_PIN[@]}" node "$HERE/sdk/echo_bot.js" 0 >"$SLOG" 2>&1 &
  S_PID=$!
  PIDS+=("$S_PID")
  S_PORT=$(wait_port "$SLOG" "$S_PID" "SDK peer")
  bench_target sdk "http://127.0.0.1:$S_PORT/api/messages" "$S_PID" "$SLOG" || say "SDK benchmark failed"
  stop_target sdk "$S_PID" "$SLOG"
fi

# ----------------------------------------------------------------- results
v() { eval "echo \"\${R_$1_$2:-}\""; }
mib() { [ -n "$1" ] && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo "-"; }
ratio() {  # herald / sdk
  [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f×", a / b }' || echo "-"
}
verdict() {
  [ "$(v "$1" ran)" = 1 ] || { echo "-"; return; }
  local s
  s="$(v "$1" replies) / $(v "$1" 2xx)"
  [ "$(v "$1" ok)" = 1 ] && s+=" ✓" || s+=" ✗ MISMATCH"
  echo "$s"
}
col() {  # metric-key herald-formatter
  local h s r
  h=$(v herald "$1"); s=$(v sdk "$1")
  r=$(ratio "$h" "$s")
  echo "$h|$s|$r"
}
row() {  # label key unit
  local h s r
  IFS='|' read -r h s r <<<"$(col "$2")"
  printf '| %s | %s | %s | %s |\n' "$1" "${h:--}${h:+$3}" "${s:--}${s:+$3}" "$r"
}

{
  echo "## herald inbound benchmark — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "herald $(build/herald --version | awk '{print $2}') --dev, tests/bench/echo_bot.lua (one ev:reply per message) vs"
  if [ "$SDK_OK" = 1 ]; then
    echo "Bot Framework SDK botbuilder@$SDK_VERSION (CloudAdapter + ActivityHandler, auth off, node $(node --version) http)."
  else
    echo "Bot Framework SDK peer: SKIPPED ($SDK_WHY)."
  fi
  echo "Load: wrk, $THREADS thread(s), $CONNS connections, $DURATION × $RUNS runs (medians; $WARMUP warm-up first), unique activity ids,"
  echo "$BENCH_CONVERSATIONS conversations in $BENCH_TENANTS tenant(s), herald with HERALD_GOVERNOR=$HERALD_GOVERNOR_MAIN; replies POSTed to a libevent null connector. $PIN_DESC. $NCPU CPUs."
  echo "Paced run: $RATE_CONNS connections each sleeping ~$RATE_CONNS/$RATE s between requests (wrk delay(); closed loop,"
  echo "latency from send, not corrected for coordinated omission — wrk2 is not in Debian). Rig floor (same pacing,"
  echo "bare GET to the null connector, no bot): ${F_rate:-?} req/s, p50 ${F_p50:-?} ms, p99 ${F_p99:-?} ms."
  echo "Load average before / after: ${LOAD_BEFORE:-?} / $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)."
  echo
  echo "| metric | herald | SDK | herald/SDK |"
  echo "| --- | ---: | ---: | ---: |"
  row "inbound turns/s, c=$CONNS (median)" rps ""
  row "p50 latency, c=$CONNS" p50 " ms"
  row "p99 latency, c=$CONNS" p99 " ms"
  row "server CPU per turn" cpu " µs"
  row "paced run: achieved req/s" prate ""
  row "paced run: p50 latency" pp50 " ms"
  row "paced run: p99 latency" pp99 " ms"
  printf '| idle RSS (VmRSS after start) | %s | %s | %s |\n' "$(mib "$(v herald idle)")" "$(mib "$(v sdk idle)")" "$(ratio "$(v herald idle)" "$(v sdk idle)")"
  printf '| peak RSS (VmHWM after load) | %s | %s | %s |\n' "$(mib "$(v herald peak)")" "$(mib "$(v sdk peak)")" "$(ratio "$(v herald peak)" "$(v sdk peak)")"
  printf '| RSS after load (VmRSS) | %s | %s | %s |\n' "$(mib "$(v herald after)")" "$(mib "$(v sdk after)")" "$(ratio "$(v herald after)" "$(v sdk after)")"
  printf '| replies at connector / 2xx answers (timed runs) | %s | %s | |\n' "$(verdict herald)" "$(verdict sdk)"
  row "new connections to the connector (timed runs)" conns ""
  printf '| non-2xx / socket errors (timed runs) | %s | %s | |\n' \
    "$(v herald non2xx) / $(v herald errs)" "$( [ "$(v sdk ran)" = 1 ] && echo "$(v sdk non2xx) / $(v sdk errs)" || echo -)"
  printf '| exit after SIGTERM / error lines in log | %s | %s | |\n' \
    "$(v herald exit) / $(v herald errlines)" "$( [ -n "$(v sdk exit)" ] && echo "$(v sdk exit) / $(v sdk errlines)" || echo -)"
  echo
  if [ "$(v hgov ran)" = 1 ]; then
    echo "herald with its governor ON (default config; fresh process; $GOV_TENANTS tenants × $GOV_CONVERSATIONS conversations so"
    echo "no Teams limit is reached), one $DURATION run, c=$CONNS: $(v hgov rps) turns/s, p50 $(v hgov p50) ms, p99 $(v hgov p99) ms,"
    echo "$(v hgov cpu) µs CPU/turn, replies at connector / 2xx: $(verdict hgov), non-2xx / socket errors $(v hgov non2xx) / $(v hgov errs),"
    echo "peak RSS $(mib "$(v hgov peak)"), exit after SIGTERM / error lines $(v hgov exit) / $(v hgov errlines)."
    echo
  fi
  echo "Throughput ratio > 1 and latency/RSS/CPU ratios < 1 favour herald. Per-run lines: build/bench/runs.txt;"
  echo "server logs: build/bench/herald.log, build/bench/hgov.log, build/bench/sdk.log."
} >"$OUT/results.md"

echo
cat "$OUT/results.md"

# ----------------------------------------------------------------- inbound authentication (issue 3)
# tests/bench/auth.sh: the same load against herald validating every request's JWT (one token, cached;
# BENCH_AUTH_TOKENS distinct tokens, uncached) vs dev mode, in one run (~2 min with the defaults);
# appends its section to build/bench/results.md. BENCH_SKIP_AUTH=1 skips it.
if [ "${BENCH_SKIP_AUTH:-0}" != 1 ]; then
  say "inbound authentication benchmark (tests/bench/auth.sh)"
  BENCH_DURATION="$DURATION" BENCH_RUNS="$RUNS" BENCH_CONNECTIONS="$CONNS" BENCH_THREADS="$THREADS" \
    BENCH_WARMUP="$WARMUP" BENCH_PIN="$PIN" bash "$HERE/auth.sh" || die "authentication benchmark failed"
fi

# ----------------------------------------------------------------- outbox (issue 4)
# tests/bench/outbox.sh: 100,000 queued + delivered messages with limits off, and the Teams-like
# limits run (~100 s); appends its section to build/bench/results.md. BENCH_SKIP_OUTBOX=1 skips it.
if [ "${BENCH_SKIP_OUTBOX:-0}" != 1 ]; then
  say "outbox benchmark (tests/bench/outbox.sh)"
  bash "$HERE/outbox.sh" || die "outbox benchmark failed"
fi

# ----------------------------------------------------------------- hot reload (issue 6)
# tests/bench/reload.sh: reload latency p50/p99 and inbound p99 with vs without reloads (~2.5 min);
# appends its section to build/bench/results.md. BENCH_SKIP_RELOAD=1 skips it.
if [ "${BENCH_SKIP_RELOAD:-0}" != 1 ]; then
  say "hot reload benchmark (tests/bench/reload.sh)"
  bash "$HERE/reload.sh" || die "reload benchmark failed"
fi
[ "${BENCH_SKIP_BROADCAST:-0}" = 1 ] || bash "$HERE/broadcast.sh" || die "broadcast benchmark failed"   # issue 8
[ "${BENCH_SKIP_SCHEDULES:-0}" = 1 ] || bash "$HERE/schedules.sh" || die "schedules benchmark failed"   # issue 5 (SC_* knobs there)
