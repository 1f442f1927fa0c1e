#!/usr/bin/env bash
# tests/bench/reload.sh — hot reload under load (issue 6 acceptance, full length) and its figures.
#
# One herald (build/herald, dev mode, HERALD_GOVERNOR=off) runs a bot whose invoke handler replies
# "vN ..." through the null connector (tests/bench/null_connector.c) and answers {"version":"vN"}.
# wrk (paced, keep-alive) POSTs invoke activities; its response() tallies the version of every
# answer. In the same run:
#   A. baseline: RELOAD_BENCH_BASE_SECONDS [20] of load, no reloads;
#   B. reloads:  RELOAD_BENCH_SECONDS [60] of the same load while the script is rewritten every
#      RELOAD_BENCH_PERIOD [1] s, alternating valid versions and broken ones (syntax error, error at
#      top level, load deadline, memory cap, no hook) — checked: zero failed or dropped requests,
#      every answer from a valid version, one failure log line per broken version, one "live" line
#      per valid one;
#   B2. RELOAD_BENCH_VALID_SECONDS [20] of the same load, a valid version every period;
#   A2. the baseline again (same process, database grown like B's);
#   C. reload latency: RELOAD_BENCH_RELOADS [60] rewrites with no load, each timed from the write
#      to the "generation N live" log line and to the first answer from the new version.
# Then SIGTERM: exit status 0 and no leaked refs/tasks in the log.
# Reports p50/p99 reload latency and inbound p50/p99 latency in A vs B; appends a section to
# build/bench/results.md (and prints it). Exit status non-zero if a check failed.
#
# Env: RELOAD_BENCH_RATE [1000] req/s (paced), RELOAD_BENCH_CONNECTIONS [50],
#      RELOAD_BENCH_BIN [build/herald], HERALD_RELOAD_DEBOUNCE_MS (herald's, default 100),
#      BENCH_PIN [auto] as in run.sh, BENCH_KEEP [0] keep the scratch directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
HERE=tests/bench
OUT=build/bench
mkdir -p "$OUT"

say() { printf 'reload-bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

BIN=${RELOAD_BENCH_BIN:-build/herald}
command -v wrk >/dev/null 2>&1 || die "wrk not found (Debian package wrk; scripts/bootstrap.sh installs it)"
[ -x "$BIN" ] || die "$BIN missing: run make"

NC_BIN="$OUT/null_connector"
if [ ! -x "$NC_BIN" ] || [ "$HERE/null_connector.c" -nt "$NC_BIN" ]; then
  say "building $NC_BIN"
  # shellcheck disable=SC2046
  ${CC:-cc} -O2 -Wall -Wextra -Werror -o "$NC_BIN" "$HERE/null_connector.c" $(pkg-config --cflags --libs libevent)
fi

NCPU=$(nproc 2>/dev/null || echo 1)
PIN=${BENCH_PIN:-auto}
if [ "$PIN" = auto ]; then
  if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then PIN=1; else PIN=0; fi
fi

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/herald-reload-bench.XXXXXX")"
cleanup() {
  local rc=$?
  if [ "${BENCH_KEEP:-0}" = 1 ]; then say "logs kept in $SCRATCH"; else rm -rf "$SCRATCH"; fi
  exit "$rc"
}
trap cleanup EXIT

export RB_ROOT="$ROOT" RB_BIN="$BIN" RB_NC="$NC_BIN" RB_SCRATCH="$SCRATCH" RB_PIN="$PIN" RB_NCPU="$NCPU"
python3 - <<'PY'
import http.client, json, os, re, signal, statistics, subprocess, sys, threading, time
from datetime import datetime, timezone

ROOT, BIN, NC, SCRATCH = (os.environ[k] for k in ("RB_ROOT", "RB_BIN", "RB_NC", "RB_SCRATCH"))
PIN = os.environ["RB_PIN"] == "1"
RATE = int(os.environ.get("RELOAD_BENCH_RATE", "1000"))
CONNS = int(os.environ.get("RELOAD_BENCH_CONNECTIONS", "50"))
BASE_S = int(os.environ.get("RELOAD_BENCH_BASE_SECONDS", "20"))
LOAD_S = int(os.environ.get("RELOAD_BENCH_SECONDS", "60"))
PERIOD = float(os.environ.get("RELOAD_BENCH_PERIOD", "1"))
NRELOADS = int(os.environ.get("RELOAD_BENCH_RELOADS", "60"))
failures = []

def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"reload-bench: CHECK FAILED: {what}", file=sys.stderr, flush=True)

def pin(cpu):
    return ["taskset", "-c", str(cpu)] if PIN else []

def wait_port(path, proc, name):
    for _ in range(400):
        try:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", open(path).read())
        except FileNotFoundError:
            m = None
        if m:
            return int(m.group(1))
        if proc.poll() is not None:
            sys.exit(f"{name} exited before listening:\n{open(path).read()}")
        time.sleep(0.05)
    sys.exit(f"{name} did not listen within 20 s")

BOT = """\
local teams = require "teams"
local VERSION = "{v}"
teams.on_invoke(function(ev)
  ev:reply(VERSION .. " " .. tostring(ev.value and ev.value.n))
  return {{ version = VERSION }}
end)
"""
BROKEN = [
    ("syntax", 'local teams = require "teams"\nteams.on_invoke(function() return { version = } end)\n',
     r"unexpected symbol"),
    ("error", 'local teams = require "teams"\nteams.on_invoke(function() return { version = "BROKEN" } end)\n'
              'error("broken on purpose")\n', r"broken on purpose"),
    ("loop", 'local teams = require "teams"\nteams.on_invoke(function() return { version = "BROKEN" } end)\n'
             'while true do end\n', r"CPU slice exceeded"),
    ("memory", 'local teams = require "teams"\nteams.on_invoke(function() return { version = "BROKEN" } end)\n'
               'local t = {}\nfor i = 1, 1e9 do t[i] = string.rep("x", 1 << 20) .. i end\n', r"not enough memory"),
    ("nohook", 'local teams = require "teams"\n', r"registered no handler"),
]

botdir = os.path.join(SCRATCH, "bot")
os.makedirs(botdir)
script = os.path.join(botdir, "bot.lua")
_n = [0]
def write(text, atomic=True):
    if atomic:
        _n[0] += 1
        tmp = os.path.join(botdir, f".bot.lua.{_n[0]}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, script)
    else:
        with open(script, "w") as f:
            f.write(text)
    return time.time()

write(BOT.format(v="v0"))

# ---- null connector and herald
nc_log = os.path.join(SCRATCH, "nc.log")
nc = subprocess.Popen(pin(0) + [NC, "0"], stdout=open(nc_log, "w"), stderr=subprocess.STDOUT)
nc_port = wait_port(nc_log, nc, "null connector")
h_log = os.path.join(SCRATCH, "herald.log")
env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "CLIENT_", "Microsoft"))}
env.update(HERALD_GOVERNOR="off", HERALD_LOAD_DEADLINE_MS="300", HERALD_LUA_MEMORY_MB="64")
if "HERALD_RELOAD_DEBOUNCE_MS" in os.environ:
    env["HERALD_RELOAD_DEBOUNCE_MS"] = os.environ["HERALD_RELOAD_DEBOUNCE_MS"]
debounce = env.get("HERALD_RELOAD_DEBOUNCE_MS", "100")
herald = subprocess.Popen(pin(0) + [os.path.join(ROOT, BIN), "run", "--dev", "--listen", "127.0.0.1:0",
                                    "--db", os.path.join(SCRATCH, "h.db"), script],
                          stdout=open(h_log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)
port = wait_port(h_log, herald, "herald")
service_url = f"http://127.0.0.1:{nc_port}"
print(f"reload-bench: herald {BIN} on :{port}, null connector on :{nc_port}, "
      f"{'pinned (herald+connector CPU 0, wrk CPU 1)' if PIN else 'not pinned'}", file=sys.stderr, flush=True)

def hlog():
    return open(h_log, encoding="utf-8", errors="replace").read()

def log_time(stamp):
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()

# ---- wrk
WRK = r"""
local service_url = os.getenv("RB_SERVICE_URL")
local run = os.getenv("RB_RUN")
local rate, conns = tonumber(os.getenv("RB_RATE")), tonumber(os.getenv("RB_CONNS"))
local nthreads = tonumber(os.getenv("RB_THREADS"))
local threads = {}
function setup(thread) thread:set("tid", #threads); table.insert(threads, thread) end
local counter, prefix = 0, nil
local headers = { ["Content-Type"] = "application/json" }
local fmt = '{"type":"invoke","name":"load","id":"%s","serviceUrl":"' .. service_url .. '",' ..
  '"channelId":"msteams","from":{"id":"29:u"},"conversation":{"conversationType":"personal",' ..
  '"tenantId":"t1","id":"a:rb-%d"},"recipient":{"id":"28:b"},"channelData":{"tenant":{"id":"t1"}},' ..
  '"value":{"n":"%s"}}'
function init(args) prefix = run .. "-" .. tostring(tid) .. "-"; counts = {}; bad = 0; math.randomseed(os.time() + tid) end
function request()
  counter = counter + 1
  local id = prefix .. counter
  return wrk.format("POST", "/api/messages", headers, string.format(fmt, id, counter % 1000, id))
end
function response(status, hdrs, body)
  if status ~= 200 then bad = bad + 1; return end
  local v = body:match('"version":"([^"]*)"') or "none"
  counts[v] = (counts[v] or 0) + 1
end
-- paced closed loop (as tests/bench/activity.lua): each connection pauses ~conns/rate s, corrected
-- once a second towards this thread's share of the rate
local target, mean_ms = rate / nthreads, conns / rate * 1000
local scale, sec, in_sec, full = 1.0, nil, 0, false
function delay()
  local now = os.time()
  if sec == nil then sec = now end
  if now ~= sec then
    if full and in_sec > 0 then
      scale = scale * math.sqrt(in_sec / target)
      if scale < 0.1 then scale = 0.1 elseif scale > 10 then scale = 10 end
    end
    full, sec, in_sec = true, now, 0
  end
  in_sec = in_sec + 1
  return math.floor(mean_ms * scale * (0.5 + math.random()) + 0.5)
end
function done(summary, latency, requests)
  local agg, nbad = {}, 0
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    for k, n in pairs(t:get("counts") or {}) do agg[k] = (agg[k] or 0) + n end
  end
  for k, n in pairs(agg) do io.write(string.format("VERSION %s %d\n", k, n)) end
  io.write(string.format("LOAD requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d " ..
    "timeout=%d bad=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n", summary.requests,
    summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, nbad, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""
wrk_script = os.path.join(SCRATCH, "load.lua")
open(wrk_script, "w").write(WRK)

def run_wrk(tag, seconds):
    threads = 2 if CONNS >= 2 else 1
    e = dict(os.environ, RB_SERVICE_URL=service_url, RB_RUN=f"{tag}{time.time_ns()}", RB_RATE=str(RATE),
             RB_CONNS=str(CONNS), RB_THREADS=str(threads))
    p = subprocess.run(pin(1) + ["wrk", f"-t{threads}", f"-c{CONNS}", f"-d{seconds}s", "--timeout", "10s",
                                 "--latency", "-s", wrk_script, f"http://127.0.0.1:{port}/api/messages"],
                       capture_output=True, text=True, env=e)
    open(os.path.join(SCRATCH, f"wrk-{tag}.out"), "w").write(p.stdout + p.stderr)
    m = re.search(r"^LOAD (.*)$", p.stdout, re.M)
    if not m:
        sys.exit(f"wrk ({tag}) gave no LOAD line:\n{p.stdout}\n{p.stderr}")
    st = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    st["versions"] = {k: int(n) for k, n in re.findall(r"^VERSION (\S+) (\d+)$", p.stdout, re.M)}
    st["rps"] = st["requests"] / (st["duration_us"] / 1e6)
    st["errors"] = sum(st[k] for k in ("non2xx", "connect", "read", "write", "timeout", "bad"))
    return st

def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

# ---- A: baseline
time.sleep(0.5)
run_wrk("warmup", 3)
print(f"reload-bench: A. baseline, {BASE_S} s at ~{RATE}/s, no reloads", file=sys.stderr, flush=True)
A = run_wrk("baseline", BASE_S)
check(A["errors"] == 0, f"baseline: {A['errors']} failed requests")

# ---- B: load + rewrites
print(f"reload-bench: B. {LOAD_S} s at ~{RATE}/s, script rewritten every {PERIOD} s (valid/broken)",
      file=sys.stderr, flush=True)
stop = threading.Event()
written = []       # (kind, name, time)
live = {"v0"}
gen = [1]
def rewriter():
    i = nvalid = 0
    while not stop.wait(PERIOD):
        i += 1
        if i % 2:
            nvalid += 1
            name = f"v{nvalid}"
            live.add(name)
            written.append(("valid", name, write(BOT.format(v=name), atomic=nvalid % 2 == 0)))
        else:
            kind, text, _ = BROKEN[(i // 2 - 1) % len(BROKEN)]
            written.append(("broken", kind, write(text, atomic=i % 4 == 0)))
log_before = len(hlog())
rw = threading.Thread(target=rewriter)
rw.start()
B = run_wrk("reloads", LOAD_S)
stop.set()
rw.join()
time.sleep(1.0)
logB = hlog()[log_before:]
nbroken = sum(1 for k, _, _ in written if k == "broken")
nvalid = sum(1 for k, _, _ in written if k == "valid")
fails = re.findall(r"reload \(file changed\) failed; generation \d+ keeps serving: ([^\n]*)", logB)
lives = re.findall(r"^(\S+) info  reload \(file changed\): generation (\d+) live in (\d+) ms", logB, re.M)
check(B["errors"] == 0, f"reloads: {B['errors']} failed or dropped requests ({B})")
check(B["rps"] >= 500, f"reloads: {B['rps']:.0f} req/s < 500")
check(set(B["versions"]) <= live, f"answers from versions never valid: {set(B['versions']) - live}")
check(len(fails) == nbroken, f"{len(fails)} failure lines for {nbroken} broken versions")
check(len(lives) == nvalid, f"{len(lives)} live lines for {nvalid} valid versions")
for kind, _, rx in BROKEN:
    if any(k == kind for k, _, _ in written):
        check(any(re.search(rx, f) for f in fails), f"no failure line for the {kind} version")
# write → live (log timestamp) for the valid writes under load
valid_writes = [t for k, _, t in written if k == "valid"]
lat_load = [(log_time(s) - t) * 1000 for t, (s, _, _) in zip(valid_writes, lives)]
build_load = [int(ms) for _, _, ms in lives]

# ---- B2: valid versions only (the cost of a reload itself, without a broken version's load time)
B2_S = int(os.environ.get("RELOAD_BENCH_VALID_SECONDS", "20"))
print(f"reload-bench: B2. {B2_S} s at ~{RATE}/s, a valid version every {PERIOD} s", file=sys.stderr, flush=True)
stop2 = threading.Event()
nv2 = [0]
def rewriter2():
    while not stop2.wait(PERIOD):
        nv2[0] += 1
        live.add(f"w{nv2[0]}")
        write(BOT.format(v=f"w{nv2[0]}"), atomic=nv2[0] % 2 == 0)
before2 = len(hlog())
rw2 = threading.Thread(target=rewriter2)
rw2.start()
B2 = run_wrk("valid", B2_S)
stop2.set()
rw2.join()
time.sleep(0.5)
lives2 = re.findall(r"reload \(file changed\): generation \d+ live", hlog()[before2:])
check(B2["errors"] == 0, f"valid-only reloads: {B2['errors']} failed requests")
check(set(B2["versions"]) <= live, "valid-only reloads: answers from unknown versions")
check(len(lives2) == nv2[0], f"valid-only reloads: {len(lives2)} live lines for {nv2[0]} writes")

# ---- A2: no reloads again (the database and the process have aged like B's; same run)
print(f"reload-bench: A2. baseline again, {BASE_S} s at ~{RATE}/s, no reloads", file=sys.stderr, flush=True)
A2 = run_wrk("baseline2", BASE_S)
check(A2["errors"] == 0, f"second baseline: {A2['errors']} failed requests")

# ---- C: reload latency, no load
print(f"reload-bench: C. {NRELOADS} reloads without load", file=sys.stderr, flush=True)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
def version():
    body = json.dumps({"type": "invoke", "name": "probe", "id": f"probe-{time.time_ns()}",
                       "serviceUrl": service_url, "from": {"id": "29:u"},
                       "conversation": {"id": "a:probe"}, "recipient": {"id": "28:b"}, "value": {"n": "p"}})
    conn.request("POST", "/api/messages", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return json.loads(data)["version"] if r.status == 200 and data else None
lat_seen, lat_log, build_idle = [], [], []
for i in range(NRELOADS):
    name = f"c{i}"
    before = len(hlog())
    t0 = write(BOT.format(v=name), atomic=i % 2 == 0)
    while True:
        if version() == name:
            lat_seen.append((time.time() - t0) * 1000)
            break
        if time.time() - t0 > 10:
            check(False, f"version {name} never went live")
            break
        time.sleep(0.002)
    for _ in range(100):
        m = re.search(r"^(\S+) info  reload \(file changed\): generation \d+ live in (\d+) ms", hlog()[before:], re.M)
        if m:
            lat_log.append((log_time(m.group(1)) - t0) * 1000)
            build_idle.append(int(m.group(2)))
            break
        time.sleep(0.01)
    time.sleep(0.15)   # past the debounce, so each write is its own reload
conn.close()

# ---- stop
herald.send_signal(signal.SIGTERM)
try:
    rc = herald.wait(30)
except subprocess.TimeoutExpired:
    herald.kill()
    rc = "killed"
nc.send_signal(signal.SIGTERM)
nc.wait(10)
final = hlog()
check(rc == 0, f"herald exit status {rc} after SIGTERM")
for m in ("leaked", "registry refs still held", "handler failed"):
    check(m not in final, f"'{m}' in herald's log")
open(os.path.join(ROOT, "build/bench/reload-herald.log"), "w").write(final)

def ms(us):
    return f"{us / 1000:.2f} ms"

lines = []
P = lines.append
P(f"## herald hot reload benchmark — {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%MZ')}")
P("")
P(f"{BIN} --dev, HERALD_GOVERNOR=off, debounce {debounce} ms; invoke activities (reply to the null connector + "
  f"a body naming the version) paced at ~{RATE}/s over {CONNS} keep-alive connections (wrk); "
  f"{'herald + connector on CPU 0, wrk on CPU 1' if PIN else 'no CPU pinning'}; {os.environ['RB_NCPU']} CPUs. "
  f"Latency from send (closed loop, not corrected for coordinated omission).")
P("")
P("| inbound | requests | req/s | failed | p50 | p90 | p99 | p99.9 | max |")
P("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, s in ((f"A. no reloads ({BASE_S} s)", A),
                 (f"B. rewritten every {PERIOD:g} s, valid/broken alternating ({LOAD_S} s)", B),
                 (f"B2. a valid version every {PERIOD:g} s ({B2_S} s)", B2),
                 (f"A2. no reloads, after B and B2 ({BASE_S} s)", A2)):
    P(f"| {label} | {s['requests']} | {s['rps']:.0f} | {s['errors']} | {ms(s['p50_us'])} | {ms(s['p90_us'])} | "
      f"{ms(s['p99_us'])} | {ms(s['p999_us'])} | {ms(s['max_us'])} |")
P("")
P(f"B: {nvalid} valid versions went live ({len(lives)} live lines), {nbroken} broken versions rejected "
  f"({len(fails)} failure lines: {', '.join(sorted(set(n for k, n, _ in written if k == 'broken')))}); "
  f"answers by version: {len(B['versions'])} versions, none from a broken one"
  f"{'' if set(B['versions']) <= live else ' — BUT SOME FROM INVALID VERSIONS'}. "
  f"The new generation is built on the event loop, so the load-deadline version stalls all inbound work "
  f"for its whole deadline (HERALD_LOAD_DEADLINE_MS=300 here; 5000 by default): that is B's p99/max. "
  f"B2 ({nv2[0]} reloads, all valid) shows the cost of a reload itself.")
P("")
P("| reload latency (file write →) | n | p50 | p99 | max |")
P("| --- | ---: | ---: | ---: | ---: |")
def row(label, xs):
    if xs:
        P(f"| {label} | {len(xs)} | {pct(xs, 50):.1f} ms | {pct(xs, 99):.1f} ms | {max(xs):.1f} ms |")
row("'generation N live' log line, no load", lat_log)
row("first answer from the new version, no load", lat_seen)
row("'generation N live' log line, under load (B)", lat_load)
row("build of the new generation ('live in X ms'), no load", build_idle)
row("build of the new generation, under load (B)", build_load)
P("")
P(f"Log timestamps have 1 ms resolution. The debounce ({debounce} ms) is most of the reload latency. "
  f"Exit after SIGTERM: {rc}; checks: {'all passed' if not failures else 'FAILED: ' + '; '.join(failures)}.")
P("")
text = "\n".join(lines) + "\n"
open(os.path.join(ROOT, "build/bench/reload.md"), "w").write(text)
with open(os.path.join(ROOT, "build/bench/results.md"), "a") as f:
    f.write("\n" + text)
print(text)
sys.exit(1 if failures else 0)
PY
