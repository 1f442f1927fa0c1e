#!/usr/bin/env python3
"""outbox_bench.py — the outbox benchmark (issue 4); run by tests/bench/outbox.sh from make bench.

1. Limits off: build/herald with HERALD_GOVERNOR=off against the libevent null connector queues and
   delivers N (100,000) messages over M (1,000) conversations given as reference tables, sent by
   tests/integration/bots/outbox_bot.lua with wait=false in invokes of CHUNK messages. Reports
   messages/s (first enqueue to last POST at the connector), SQLite commits per message
   (/healthz outbox.commits / N), peak RSS (VmHWM).
2. Limits on: the same bot, governor on (HERALD_TENANT_RPS=50), against the Teams-like fake
   connector (tests/fake_connector.py, teams_limits): a burst of BURST (100) to one conversation
   (tenant "solo") and BULK (5,000) over BULK_CONVS (500) conversations of tenant "bulk", at once;
   the fake forgives SLACK_MS (100) of transit jitter. Beside them, in the same herald, EXACT (500)
   over 50 conversations of tenant "exact" go to a second fake with no slack at all (Teams'
   windows to the millisecond). Reports per group: time, allowed minimum (greedy schedule under
   the windows), achieved fraction of the allowed rate, 429 count.

Prints a markdown section on stdout; "BENCH_OUTBOX ..." key=value lines on stderr.
Env: OUTBOX_N OUTBOX_M OUTBOX_CHUNK OUTBOX_BURST OUTBOX_BULK OUTBOX_BULK_CONVS OUTBOX_EXACT
     OUTBOX_SLACK_MS OUTBOX_LIMITS_TIMEOUT (s, default 200) OUTBOX_SKIP_LIMITS=1
usage: outbox_bench.py NULL_CONNECTOR_BIN
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
os.environ.setdefault("HERALD_BIN", os.path.join(ROOT, "build", "herald"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Activities, Herald, bot  # noqa: E402
from fake_connector import FakeConnector  # noqa: E402
from test_outbox import min_schedule  # noqa: E402

E = os.environ.get
N = int(E("OUTBOX_N", 100000))
M = int(E("OUTBOX_M", 1000))
CHUNK = int(E("OUTBOX_CHUNK", 10000))
BURST = int(E("OUTBOX_BURST", 100))
BULK = int(E("OUTBOX_BULK", 5000))
BULK_CONVS = int(E("OUTBOX_BULK_CONVS", 500))
EXACT = int(E("OUTBOX_EXACT", 500))
EXACT_CONVS = 50
SLACK_MS = float(E("OUTBOX_SLACK_MS", 100))
LIMITS_TIMEOUT = float(E("OUTBOX_LIMITS_TIMEOUT", 200))
RPS = 50


def log(*a):
    print("outbox bench:", *a, file=sys.stderr, flush=True)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def health(h):
    return json.loads(h.healthz()[1])["outbox"]


def invoke(h, acts, value):
    st, body = h.post_activity(acts.invoke("a:control", "outbox", value), timeout=120)
    if st != 200:
        raise SystemExit(f"invoke {value.get('cmd')}: {st} {body}")
    return json.loads(body)


def herald_env(extra):
    e = {"HERALD_OUTBOX_MAX_ATTEMPTS": 8, "HERALD_RESPONSE_DEADLINE_MS": 60000,
         "HERALD_TASK_SLICE_MS": 10000, "HERALD_LOAD_DEADLINE_MS": 10000,
         "ASAN_OPTIONS": None, "UBSAN_OPTIONS": None,
         # one blast queues all of N at once: above the default bounds on outstanding operations
         "HERALD_MAX_QUEUED_PER_TENANT": 10000000, "HERALD_MAX_QUEUED_TOTAL": 10000000}
    e.update(extra)
    return e


def bench_throughput(nc_bin):
    nc = subprocess.Popen([nc_bin, "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = nc.stdout.readline()
    port = int(line.strip().rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}"

    def posts():
        with urllib.request.urlopen(url + "/__stats", timeout=10) as r:
            return json.loads(r.read())["post"]

    h = Herald(bot("outbox_bot.lua"), env=herald_env({"HERALD_GOVERNOR": "off"}))
    try:
        h.start()
        acts = Activities(url)
        urllib.request.urlopen(urllib.request.Request(url + "/__reset", method="POST"), timeout=10).read()
        rss0 = status_kb(h.proc.pid, "VmRSS")
        t0 = time.monotonic()
        enq = 0.0
        for start in range(0, N, CHUNK):
            a = time.monotonic()
            r = invoke(h, acts, {"cmd": "blast", "n": min(CHUNK, N - start), "m": M, "start": start,
                                 "prefix": "a:tp-", "tag": "t"})
            enq += time.monotonic() - a
            if r.get("ops") != min(CHUNK, N - start):
                raise SystemExit(f"blast failed: {r}")
        t_enq = time.monotonic() - t0
        deadline = time.monotonic() + 300
        while True:
            p = posts()
            if p >= N:
                break
            if time.monotonic() > deadline or not h.alive():
                raise SystemExit(f"only {p} of {N} delivered; herald log:\n{h.log[-2000:]}")
            time.sleep(0.05)
        took = time.monotonic() - t0
        o = health(h)
        for _ in range(100):                      # the last answers' rows commit a turn later
            if o["finished"]["sent"] >= N and o["queued"] == 0:
                break
            time.sleep(0.05)
            o = health(h)
        res = {"n": N, "m": M, "seconds": took, "rate": N / took, "enqueue_s": t_enq,
               "commits": o["commits"], "commits_per_msg": o["commits"] / N, "sent": o["finished"]["sent"],
               "failed": sum(o["finished"].values()) - o["finished"]["sent"], "connector_posts": posts(), "rss_idle_kb": rss0,
               "peak_rss_kb": status_kb(h.proc.pid, "VmHWM"), "rss_after_kb": status_kb(h.proc.pid, "VmRSS")}
        h.stop(timeout=60)
        res["db_mb"] = sum(os.path.getsize(os.path.join(h.tmp, f)) for f in os.listdir(h.tmp)
                           if f.startswith("h.db")) / 1e6
        return res
    finally:
        h.cleanup()
        nc.terminate()
        nc.wait()


def group_figures(fc, prefix, n, m):
    reqs = [x for x in fc.snapshot() if (x["conversation_id"] or "").startswith(prefix)]
    ok = sorted(x["time"] for x in reqs if x["status"] == 201)
    n429 = sum(1 for x in reqs if x["status"] == 429)
    first, last = min_schedule([n // m + (1 if k < n % m else 0) for k in range(m)], tenant_rps=RPS)
    allowed = (last - first) / 1000.0
    took = ok[-1] - ok[0] if len(ok) > 1 else float("nan")
    return {"delivered": len(ok), "n": n, "m": m, "seconds": took, "allowed_s": allowed,
            "fraction": (allowed / took) if len(ok) == n and took > 0 else float("nan"), "n429": n429}


def bench_limits():
    fc = FakeConnector(teams_limits=True, tenant_rps=RPS, slack_ms=SLACK_MS, record_bodies=False).start()
    fx = FakeConnector(teams_limits=True, tenant_rps=RPS, slack_ms=0, record_bodies=False).start()
    h = Herald(bot("outbox_bot.lua"), env=herald_env({"HERALD_TENANT_RPS": RPS}))
    try:
        h.start()
        acts = Activities(fc.url)
        groups = [("a:solo-", BURST, 1, fc, "solo"), ("a:bulk-", BULK, BULK_CONVS, fc, "bulk"),
                  ("a:exact-", EXACT, EXACT_CONVS, fx, "exact")]
        for prefix, n, m, f, tenant in groups:
            if n:
                invoke(h, acts, {"cmd": "blast", "n": n, "m": m, "prefix": prefix, "tenant": tenant,
                                 "service_url": f"{f.url}/t/{tenant}", "tag": "l"})
        want = {id(fc): BURST + BULK, id(fx): EXACT}
        deadline = time.monotonic() + LIMITS_TIMEOUT
        while time.monotonic() < deadline:
            if all(f.counts()["by_status"].get(201, 0) >= want[id(f)] for f in (fc, fx)):
                break
            time.sleep(0.2)
        out = {}
        for prefix, n, m, f, tenant in groups:
            if n:
                out[tenant] = group_figures(f, prefix, n, m)
        out["throttled_healthz"] = health(h)["throttled"]
        h.stop(timeout=60)
        return out
    finally:
        h.cleanup()
        fc.stop()
        fx.stop()


def main():
    nc_bin = sys.argv[1]
    log(f"limits off: {N} messages over {M} conversations (HERALD_GOVERNOR=off, null connector)")
    tp = bench_throughput(nc_bin)
    print("BENCH_OUTBOX " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in tp.items()), file=sys.stderr)
    lim = None
    if E("OUTBOX_SKIP_LIMITS") != "1":
        log(f"limits on: burst {BURST} to 1 conversation + {BULK} over {BULK_CONVS} (slack {SLACK_MS:g} ms), "
            f"{EXACT} over {EXACT_CONVS} at an exact-window fake; ~{min_schedule([BULK // BULK_CONVS] * BULK_CONVS)[1] / 1000 + 1:.0f} s")
        lim = bench_limits()
        for k, v in lim.items():
            print(f"BENCH_OUTBOX_LIMITS {k} {v}", file=sys.stderr)

    mib = lambda kb: f"{kb / 1024:.1f} MiB"  # noqa: E731
    print(f"## herald outbox benchmark — {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}")
    print()
    print(f"Limits off (HERALD_GOVERNOR=off), build/herald → libevent null connector: {tp['n']:,} messages over "
          f"{tp['m']:,} conversations, queued by invokes of {CHUNK:,} `teams.send(ref, text, {{wait=false}})` each.")
    print()
    print("| metric | value |")
    print("| --- | ---: |")
    print(f"| messages/s, first enqueue → last POST at the connector | {tp['rate']:,.0f} |")
    print(f"| total time (enqueue part) | {tp['seconds']:.2f} s ({tp['enqueue_s']:.2f} s) |")
    print(f"| SQLite commits per message (/healthz outbox.commits ÷ messages) | {tp['commits_per_msg']:.4f} ({tp['commits']:,} commits) |")
    print(f"| peak RSS (VmHWM) / idle / after | {mib(tp['peak_rss_kb'])} / {mib(tp['rss_idle_kb'])} / {mib(tp['rss_after_kb'])} |")
    print(f"| sent / failed (healthz), POSTs at connector | {tp['sent']:,} / {tp['failed']} , {tp['connector_posts']:,} |")
    print(f"| database size after | {tp['db_mb']:.1f} MB |")
    print()
    if lim:
        print(f"Limits on (governor on, HERALD_TENANT_RPS={RPS}) against the Teams-like fake connector "
              f"(7/1 s, 8/2 s, 60/30 s, 1800/1 h per conversation, {RPS}/s per tenant; 429 + Retry-After), all groups at once. "
              f"Allowed minimum = greedy schedule under the windows (first to last op); achieved = allowed ÷ actual.")
        print()
        print("| group | delivered | time | allowed minimum | achieved fraction of allowed rate | 429s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        names = {"solo": f"burst to 1 conversation (slack {SLACK_MS:g} ms)",
                 "bulk": f"{BULK_CONVS} conversations, 1 tenant (slack {SLACK_MS:g} ms)",
                 "exact": f"{EXACT_CONVS} conversations, exact windows (slack 0)"}
        for k in ("solo", "bulk", "exact"):
            g = lim.get(k)
            if not g:
                continue
            print(f"| {names[k]} | {g['delivered']:,}/{g['n']:,} | {g['seconds']:.2f} s | {g['allowed_s']:.2f} s | "
                  f"{g['fraction'] * 100:.1f} % | {g['n429']} |")
        print()
        print(f"herald's /healthz outbox.throttled (429s it saw, all groups): {lim['throttled_healthz']}.")
        print()


if __name__ == "__main__":
    main()
