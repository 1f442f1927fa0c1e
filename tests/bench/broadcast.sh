#!/usr/bin/env bash
# tests/bench/broadcast.sh — the broadcast benchmark (issue 8); make bench runs it from tests/bench/run.sh.
#
#  (a) limits off: build/herald (HERALD_GOVERNOR=off) broadcasts to BC_N (100,000) stored personal
#      conversations in BC_TENANTS (10) tenants through the libevent null connector
#      (tests/bench/null_connector.c): messages/s from teams.broadcast{} to the job's "done"
#      (materialising the recipient list included), POSTs counted at the connector, peak RSS (VmHWM).
#  (b) Teams-like limits: governor on (HERALD_TENANT_RPS=50) against tests/fake_connector.py with
#      teams_limits (50/s per tenant, per-conversation windows, BC_SLACK_MS of transit jitter
#      forgiven): BC_LIMITS_TENANTS (10) x BC_LIMITS_PER (500) recipients (~10 s). Per tenant: the
#      achieved rate of accepted sends as a fraction of 50/s; total 429s (target 0).
# Recipients are seeded with tests/integration/bots/broadcast_bot.lua (its "ctl" trigger).
# Writes build/bench/broadcast.md and appends it to build/bench/results.md when that exists.
# Env: BC_N [100000] BC_TENANTS [10] BC_LIMITS_TENANTS [10] BC_LIMITS_PER [500] BC_SLACK_MS [100]
#      BC_SKIP_LIMITS [0]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT=build/bench
mkdir -p "$OUT"
[ -x build/herald ] || { echo "broadcast bench: build/herald missing (run make)" >&2; exit 1; }
NC_BIN="$OUT/null_connector"
if [ ! -x "$NC_BIN" ] || [ tests/bench/null_connector.c -nt "$NC_BIN" ]; then
  # shellcheck disable=SC2046
  ${CC:-cc} -O2 -Wall -Wextra -Werror -o "$NC_BIN" tests/bench/null_connector.c $(pkg-config --cflags --libs libevent)
fi

python3 - "$NC_BIN" >"$OUT/broadcast.md" <<'PY'
import json, os, re, signal, subprocess, sys, time, urllib.request
ROOT = os.getcwd()
os.environ.setdefault("HERALD_BIN", os.path.join(ROOT, "build", "herald"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Herald, bot          # noqa: E402
from fake_connector import FakeConnector  # noqa: E402

E = os.environ.get
N, TENANTS = int(E("BC_N", 100000)), int(E("BC_TENANTS", 10))
LT, LPER, SLACK = int(E("BC_LIMITS_TENANTS", 10)), int(E("BC_LIMITS_PER", 500)), float(E("BC_SLACK_MS", 100))
RPS = 50
nc_bin = sys.argv[1]


def log(*a):
    print("broadcast bench:", *a, file=sys.stderr, flush=True)


def kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def env(extra):
    e = {"HERALD_RESPONSE_DEADLINE_MS": 60000, "HERALD_TASK_SLICE_MS": 60000, "HERALD_LOAD_DEADLINE_MS": 10000,
         "HERALD_LUA_MEMORY_MB": 1024, "HERALD_OUTBOX_MAX_ATTEMPTS": 8, "ASAN_OPTIONS": None, "UBSAN_OPTIONS": None,
         "HERALD_UNSAFE_LUA": "1"}   # the bot seeds recipients through herald's internal core
    e.update(extra)
    return e


def ctl(h, **kw):
    st, text, _ = h.request("POST", "/api/notify/ctl", json.dumps(kw).encode(), timeout=600)
    if st != 200:
        raise SystemExit(f"ctl {kw.get('cmd')}: {st} {text}\n{h.log[-2000:]}")
    return json.loads(text)


def seed(h, url_of, tenants, per):
    for t in range(tenants):
        for start in range(0, per, 10000):
            ctl(h, cmd="seed", n=min(10000, per - start), start=start, prefix=f"a:t{t}-", tenant=f"t{t}",
                service_url=url_of(t), user_prefix=f"29:t{t}-")


def wait_done(h, bid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        s = ctl(h, cmd="status", id=bid)
        if s["state"] == "done" or time.monotonic() > deadline:
            return s
        time.sleep(0.05)


lines = ["## broadcast benchmark (issue 8) — " + time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), ""]

# ---- (a) null connector, limits off ------------------------------------------------------------
nc = subprocess.Popen([nc_bin, "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    port = int(re.search(r":(\d+)", nc.stdout.readline()).group(1))
    nc_url = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(nc_url + "/__reset", method="POST")).read()
    h = Herald(bot("broadcast_bot.lua"), env=env({"HERALD_GOVERNOR": "off"})).start()
    try:
        t0 = time.monotonic()
        seed(h, lambda t: f"{nc_url}/t/t{t}/", TENANTS, N // TENANTS)
        seed_s = time.monotonic() - t0
        rss_seeded = kb(h.proc.pid, "VmRSS")
        log(f"(a) seeded {N} conversations in {seed_s:.1f} s; broadcasting")
        t0 = time.monotonic()
        bid = ctl(h, cmd="broadcast", to={"scope": "personal"}, text="all hands", name="bench")["id"]
        t_start = time.monotonic() - t0
        s = wait_done(h, bid, 600)
        took = time.monotonic() - t0
        stats = json.loads(urllib.request.urlopen(nc_url + "/__stats").read())
        peak = kb(h.proc.pid, "VmHWM")
        h.stop(expect_code=None)
        ok = s["state"] == "done" and s["sent"] == N and stats["post"] == N
        lines += [f"(a) limits off: build/herald, HERALD_GOVERNOR=off, libevent null connector; {N:,} stored personal",
                  f"conversations in {TENANTS} tenants (seeded in {seed_s:.1f} s), one `teams.broadcast{{to={{scope=\"personal\"}}}}`.",
                  "",
                  "| metric | value |", "| --- | ---: |",
                  f"| recipients sent / POSTs at the connector | {s['sent']:,} / {stats['post']:,} {'✓' if ok else '✗'} |",
                  f"| teams.broadcast{{}} call (materialise + store {N:,} recipients) | {t_start:.2f} s |",
                  f"| call to job done | {took:.2f} s |",
                  f"| messages/s (call to done) | {N / took:,.0f} |",
                  f"| RSS after seeding (VmRSS) | {rss_seeded / 1024:.1f} MiB |",
                  f"| peak RSS (VmHWM) | {peak / 1024:.1f} MiB |", ""]
        print(f"BENCH_BROADCAST null n={N} secs={took:.2f} rate={N / took:.0f} peak_kb={peak} ok={int(ok)}",
              file=sys.stderr, flush=True)
    finally:
        h.kill()
finally:
    nc.send_signal(signal.SIGTERM)
    nc.wait()

# ---- (b) Teams-like limits ---------------------------------------------------------------------
if E("BC_SKIP_LIMITS", "0") != "1":
    fc = FakeConnector(teams_limits=True, tenant_rps=RPS, slack_ms=SLACK, record_bodies=False).start()
    h = Herald(bot("broadcast_bot.lua"), env=env({"HERALD_TENANT_RPS": RPS})).start()
    try:
        seed(h, lambda t: f"{fc.url}/t/t{t}/", LT, LPER)
        log(f"(b) Teams-like: {LT} tenants x {LPER} recipients at {RPS}/s per tenant")
        t0 = time.monotonic()
        bid = ctl(h, cmd="broadcast", to={"scope": "personal"}, text="paced", name="paced")["id"]
        s = wait_done(h, bid, 60 + 3 * LPER / RPS)
        took = time.monotonic() - t0
        time.sleep(0.3)
        reqs = fc.snapshot()
        c = fc.counts()
        h.stop(expect_code=None)
    finally:
        h.kill()
        fc.stop()
    rows, fracs = [], []
    for t in range(LT):
        times = sorted(r["time"] for r in reqs if r["method"] == "POST" and r["status"] == 201
                       and r["path"].startswith(f"/t/t{t}/"))
        n = len(times)
        span = times[-1] - times[0] if n > 1 else 0
        rate = (n - 1) / span if span > 0 else 0
        # the fastest schedule under 50 per sliding second: n ops need at least (n-1)//50 s
        best = (n - 1) // RPS
        fracs.append(rate / RPS)
        rows.append(f"| t{t} | {n} | {span:.2f} s | {best} s | {rate:.1f}/s | {rate / RPS:.2f} |")
    n429 = c["throttled"]
    lines += [f"(b) Teams-like limits: build/herald, governor on (HERALD_TENANT_RPS={RPS}), tests/fake_connector.py",
              f"with teams_limits ({RPS}/s per tenant + per-conversation windows, {SLACK:.0f} ms jitter forgiven);",
              f"{LT} tenants × {LPER} recipients, one broadcast: {s['sent']:,} of {LT * LPER:,} sent in {took:.1f} s,",
              f"**429s from the limits: {n429}** (target 0); statuses at the fake: "
              + ", ".join(f"{k}: {v}" for k, v in sorted(c["by_status"].items(), key=lambda kv: str(kv[0]))) + ".",
              "", "| tenant | sent | first→last | allowed minimum | achieved | fraction of 50/s |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"] + rows + [
              f"| all | {sum(1 for r in reqs if r['status'] == 201):,} | | | "
              f"| mean {sum(fracs) / len(fracs):.2f}, min {min(fracs):.2f} |", "",
              f"Whole job: {LT * LPER:,} in {took:.1f} s = {LT * LPER / took:.0f}/s against {LT * RPS}/s allowed for "
              f"{LT} tenants in parallel (fraction {LT * LPER / took / (LT * RPS):.2f}; allowed minimum "
              f"{(LPER - 1) // RPS} s). The per-tenant rows are each tenant's own first→last span.", ""]
    print(f"BENCH_BROADCAST limits tenants={LT} per={LPER} secs={took:.1f} throttled={n429} "
          f"mean_fraction={sum(fracs) / len(fracs):.3f} min_fraction={min(fracs):.3f}", file=sys.stderr, flush=True)

print("\n".join(lines))
PY
cat "$OUT/broadcast.md"
if [ -f "$OUT/results.md" ]; then
  { echo; cat "$OUT/broadcast.md"; } >>"$OUT/results.md"
fi
