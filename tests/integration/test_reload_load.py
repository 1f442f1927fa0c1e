"""test_reload_load.py — the issue 6 acceptance load test, scaled for make test: inbound invokes at
>= 500 activities/s (wrk with keep-alive; a threaded Python client when wrk is missing) while the
script is rewritten every RELOAD_LOAD_PERIOD_S seconds, alternating valid versions (the reply and
the invoke response name the version) and broken ones (syntax error, error at top level, load
deadline, memory cap, no hook). Asserts: every POST answered 200 (no failed or dropped request),
every response and every reply at the fake connector from a valid version, one reply per request,
one failure log line per broken version and one "live" line per valid one, ASan-clean exit, no
leaked refs or tasks. The 60 s version is tests/bench/reload.sh.

The rate is measured against herald's own CPU time (requests answered per second of CPU herald
used, reloads included): that is its capacity, which a busy machine does not change, whereas the
requests per wall second depend on the share of the CPU the scheduler gives it next to the load
generator and the fake connector (two contended cores give a third of the uncontended rate). The
wall rate must still be high enough for every reload to land among requests in flight.

Env: RELOAD_LOAD_SECONDS (default 16), RELOAD_LOAD_MIN_RPS (default 500, per second of herald's
CPU), RELOAD_LOAD_MIN_WALL_RPS (default 100); both divided by HERALD_TEST_TIME_FACTOR."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import http.client

from harness import HeraldTestCase, require_binary, tf
from test_reload import (BotDir, LEAK_MARKERS, LOAD_LOOP, MEMORY_BOMB, NO_HOOK, SYNTAX_ERROR,
                         TOP_LEVEL_ERROR)

SECONDS = float(os.environ.get("RELOAD_LOAD_SECONDS", "16"))
MIN_RPS = float(os.environ.get("RELOAD_LOAD_MIN_RPS", "500")) / tf(1)
MIN_WALL_RPS = float(os.environ.get("RELOAD_LOAD_MIN_WALL_RPS", "100")) / tf(1)
CONNECTIONS = 32

LOAD_BOT = """\
local teams = require "teams"
local VERSION = "{version}"
teams.on_invoke(function(ev)
  ev:reply(VERSION .. " " .. tostring(ev.value and ev.value.n))
  return {{ version = VERSION }}
end)
"""
# the load-deadline version last: it is the slow one (its 300 ms of CPU), so a busy machine still
# gets through every kind early in the run
BROKEN = [("syntax", SYNTAX_ERROR), ("error", TOP_LEVEL_ERROR), ("memory", MEMORY_BOMB),
          ("nohook", NO_HOOK), ("loop", LOAD_LOOP)]
FAILS_RX = r"reload \(file changed\) failed; generation \d+ keeps serving"
LIVES_RX = r"reload \(file changed\): generation \d+ live"

WRK_SCRIPT = r"""
local service_url = os.getenv("LOAD_SERVICE_URL")
local run = os.getenv("LOAD_RUN") or "r"
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
local counter, prefix = 0, nil
local headers = { ["Content-Type"] = "application/json" }
local fmt = '{"type":"invoke","name":"load","id":"%s","serviceUrl":"' .. service_url .. '",' ..
  '"channelId":"msteams","from":{"id":"29:load-user","name":"Load"},' ..
  '"conversation":{"conversationType":"personal","tenantId":"t1","id":"a:load-%d"},' ..
  '"recipient":{"id":"28:load-bot","name":"Bot"},"channelData":{"tenant":{"id":"t1"}},' ..
  '"value":{"n":"%s"}}'
function init(args)
  prefix = run .. "-" .. tostring(tid) .. "-"
  counts = {}
  bad = 0
end
function request()
  counter = counter + 1
  local id = prefix .. counter
  return wrk.format("POST", "/api/messages", headers, string.format(fmt, id, counter % 50, id))
end
function response(status, hdrs, body)
  if status ~= 200 then
    bad = bad + 1
    return
  end
  local v = body:match('"version":"([^"]*)"') or "none"
  counts[v] = (counts[v] or 0) + 1
end
function done(summary, latency, requests)
  local agg, nbad = {}, 0
  for _, t in ipairs(threads) do
    nbad = nbad + (t:get("bad") or 0)
    for k, n in pairs(t:get("counts") or {}) do agg[k] = (agg[k] or 0) + n end
  end
  for k, n in pairs(agg) do io.write(string.format("VERSION %s %d\n", k, n)) end
  io.write(string.format("LOAD requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d " ..
    "timeout=%d bad=%d p50_us=%d p99_us=%d max_us=%d\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, nbad, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def run_wrk(port, service_url, seconds, tmp):
    script = os.path.join(tmp, "load.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    env = dict(os.environ, LOAD_SERVICE_URL=service_url, LOAD_RUN=f"run{os.getpid()}{time.time_ns()}")
    p = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--timeout", "10s",
                        "-s", script, f"http://127.0.0.1:{port}/api/messages"],
                       capture_output=True, text=True, env=env, timeout=seconds + 60)
    out = p.stdout
    m = re.search(r"^LOAD (.*)$", out, re.M)
    if not m:
        raise AssertionError(f"wrk gave no LOAD line (exit {p.returncode}):\n{out}\n{p.stderr}")
    stats = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    versions = {k: int(n) for k, n in re.findall(r"^VERSION (\S+) (\d+)$", out, re.M)}
    return stats, versions


def run_python_client(port, service_url, seconds):
    """Fallback without wrk: CONNECTIONS threads, each with one keep-alive connection."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    stats = {"requests": 0, "non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0, "bad": 0}
    versions = {}
    lat = []

    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while time.monotonic() < stop:
            n += 1
            aid = f"py{os.getpid()}-{i}-{n}"
            body = json.dumps({"type": "invoke", "name": "load", "id": aid, "serviceUrl": service_url,
                               "channelId": "msteams", "from": {"id": "29:u"},
                               "conversation": {"id": f"a:load-{n % 50}", "tenantId": "t1"},
                               "recipient": {"id": "28:b"}, "value": {"n": aid}})
            t0 = time.monotonic()
            try:
                c.request("POST", "/api/messages", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read().decode()
            except OSError:
                with lock:
                    stats["requests"] += 1
                    stats["read"] += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            with lock:
                stats["requests"] += 1
                lat.append(time.monotonic() - t0)
                if r.status != 200:
                    stats["non2xx"] += 1
                    stats["bad"] += 1
                else:
                    v = json.loads(data).get("version", "none") if data else "none"
                    versions[v] = versions.get(v, 0) + 1
        c.close()

    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stats["duration_us"] = int((time.monotonic() - t0) * 1e6)
    lat.sort()
    stats["p99_us"] = int(lat[int(len(lat) * 0.99)] * 1e6) if lat else 0
    return stats, versions


@require_binary
class ReloadUnderLoadTest(HeraldTestCase):

    def test_rewrites_every_second_under_load(self):
        bot = BotDir()
        self.addCleanup(bot.cleanup)
        bot.write(LOAD_BOT.format(version="v0"))
        h = self.start_herald(bot.path, env={
            "HERALD_RELOAD_DEBOUNCE_MS": "50", "HERALD_LOAD_DEADLINE_MS": "300",
            "HERALD_LUA_MEMORY_MB": "32", "HERALD_GOVERNOR": "off", "HERALD_LOG_LEVEL": "info"})
        service_url = self.fc.url + self.PREFIX
        period = float(os.environ.get("RELOAD_LOAD_PERIOD_S", "1"))
        stop = threading.Event()
        written = []          # (kind, name) in order
        live_versions = {"v0"}

        def attempts():
            log = h.log
            return len(re.findall(FAILS_RX, log)) + len(re.findall(LIVES_RX, log))

        def rewriter():
            i = 0
            nvalid = 0
            while not stop.wait(period):
                # one reload attempt per write: the previous one is over before the next write,
                # else a write made while herald still loads the last one (a busy machine, the
                # load-deadline version's 300 ms of CPU) is folded into it by the debounce
                deadline = time.monotonic() + tf(30)
                while attempts() < len(written) and time.monotonic() < deadline and not stop.is_set():
                    time.sleep(0.05)
                if stop.is_set():
                    break
                i += 1
                if i % 2:
                    nvalid += 1
                    name = f"v{nvalid}"
                    bot.write(LOAD_BOT.format(version=name), atomic=(nvalid % 2 == 0))
                    live_versions.add(name)
                    written.append(("valid", name))
                else:
                    kind, text = BROKEN[(i // 2 - 1) % len(BROKEN)]
                    bot.write(text.replace("BROKEN-", f"BROKEN{i}-"), atomic=(i % 4 == 0))
                    written.append(("broken", kind))

        rw = threading.Thread(target=rewriter)
        tmp = tempfile.mkdtemp(prefix="herald-load-")
        self.addCleanup(shutil.rmtree, tmp, True)
        rw.start()
        cpu0 = h.cpu_seconds()
        try:
            if shutil.which("wrk"):
                stats, versions = run_wrk(h.port, service_url, SECONDS, tmp)
            else:
                stats, versions = run_python_client(h.port, service_url, SECONDS)
        finally:
            cpu = h.cpu_seconds() - cpu0
            stop.set()
            rw.join()
        # let the last reload attempt finish: one log line per write
        nbroken = sum(1 for k, _ in written if k == "broken")
        nvalid = sum(1 for k, _ in written if k == "valid")
        deadline = time.monotonic() + tf(15)
        while attempts() < len(written) and time.monotonic() < deadline:
            time.sleep(0.1)
        n = stats["requests"]
        ok = sum(versions.values())
        rps = n / (stats["duration_us"] / 1e6)
        cpu_rps = ok / cpu
        report = (f"{n} requests in {stats['duration_us'] / 1e6:.1f}s = {rps:.0f}/s ({cpu:.1f}s of herald CPU: "
                  f"{cpu_rps:.0f} per CPU second), p99 {stats['p99_us'] / 1000:.1f} ms, stats {stats}, "
                  f"versions {versions}, writes {written}")
        print("\nreload under load: " + report, flush=True)
        errors = stats["non2xx"] + stats["connect"] + stats["read"] + stats["write"] + stats["timeout"] + stats["bad"]
        self.assertEqual(errors, 0, "failed or dropped requests: " + report)
        self.assertGreaterEqual(cpu_rps, MIN_RPS, report)
        self.assertGreaterEqual(rps, MIN_WALL_RPS, report)
        # every response from a valid generation
        self.assertTrue(set(versions) <= live_versions, report)
        # wrk counts requests still in flight when it stops as sent; every answered one is 200
        self.assertGreaterEqual(ok, n - CONNECTIONS, report)
        self.assertGreaterEqual(len(versions), 3, "several generations served: " + report)
        # the connector got exactly one reply per answered request, all from valid versions
        texts = self.fc.wait_until(
            lambda r: r if len(r) >= ok else None, timeout=30, what=f"{ok} replies")
        texts = [r["json"]["text"] for r in self.fc.snapshot() if r["json"]]
        by_version = {}
        for t in texts:
            by_version[t.split(" ")[0]] = by_version.get(t.split(" ")[0], 0) + 1
        self.assertTrue(set(by_version) <= live_versions, f"replies by version {by_version}")
        self.assertFalse([t for t in texts if "BROKEN" in t])
        ids = [t.split(" ", 1)[1] for t in texts]
        self.assertEqual(len(ids), len(set(ids)), "no activity replied to twice")
        self.assertGreaterEqual(len(texts), ok)
        self.assertLessEqual(len(texts), n + CONNECTIONS)
        # one log line per reload attempt
        log = h.log
        fails = re.findall(FAILS_RX, log)
        lives = re.findall(LIVES_RX, log)
        self.assertEqual(len(fails), nbroken, f"{written}\n{log[-3000:]}")
        self.assertEqual(len(lives), nvalid, f"{written}\n{log[-3000:]}")
        self.assertGreaterEqual(nbroken, 5)
        # every broken kind was rejected at least once, with its own message
        for kind, rx in (("syntax", r"unexpected symbol"), ("error", r"refusing to start"),
                         ("loop", r"CPU slice exceeded"), ("memory", r"not enough memory"),
                         ("nohook", r"registered no handler")):
            if any(k == kind for _, k in written):
                self.assertRegex(log, r"keeps serving: [^\n]*" + rx)
        h.stop()
        for m in LEAK_MARKERS:
            self.assertNotIn(m, h.log)
        self.assertNotIn("handler failed", h.log)


if __name__ == "__main__":
    unittest.main()
