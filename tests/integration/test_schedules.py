"""test_schedules.py — durable schedules against the real binary (issue 5 acceptance):

- restart in the middle of a schedule's life: a 1 s `every` fires, SIGTERM, herald stays down for
  several intervals, restart with the same --db. missed = "once" fires exactly one late run at
  start and then resumes the grid; missed = "skip" does not fire the missed run. Never a burst.
- the same after an hour-long outage, on the test clock (HERALD_TEST_CLOCK=1 + POST /-/clock,
  advanced right after the restart, before anything is due: herald sees itself an hour late).
- reload with a schedule whose handler disappeared: version 2 has no handler → one clear log line,
  the row is kept (`herald schedules --json` shows it waiting, runs 0); version 3 registers the
  handler again → it fires, once.
- `herald schedules` (text, --json, --csv): UTC and local times for a tz = "user" schedule.

Bots are written into a temp directory per test (ReloadCase/BotDir)."""
import csv
import datetime
import io
import json
import re
import time
import unittest
import zoneinfo

from harness import require_binary, run_cli, tf
from test_reload import ReloadCase

BOT = """\
local teams = require "teams"
local VERSION = "{version}"
teams.on_invoke(function(ev)
  local v = ev.value or {{}}
  if ev.name == "schedule" then
    local spec = {{ id = v.id, handler = v.handler or "tick", conversation = ev.conversation,
                   missed = v.missed, tz = v.tz, payload = {{ id = v.id }} }}
    spec[v.kind] = v.expr
    local id, nxt, code = teams.schedule(spec)
    return {{ id = id, next = nxt, err = code }}
  end
  if ev.name == "now" then return {{ now = teams.now() // 1000 }} end
  return {{ version = VERSION }}
end)
{handlers}
"""

TICK = """\
teams.on_schedule("tick", function(ev)
  ev:send(("%s %s due=%d fired=%d"):format(VERSION, ev.payload.id, ev.due, ev.fired_at))
end)
"""


def bot(version, handlers=TICK):
    return BOT.format(version=version, handlers=handlers)


FIRE_RE = re.compile(r"^(\S+) (\S+) due=(\d+) fired=(\d+)$")


@require_binary
class SchedulesCase(ReloadCase):
    ENV = {"HERALD_RELOAD_DEBOUNCE_MS": "50", "HERALD_OUTBOX_MAX_ATTEMPTS": "3"}

    def setUp(self):
        super().setUp()
        self.conv = "a:sched-conv"

    def store_conv(self, h, timezone="Europe/Berlin"):
        st, body = h.post_activity(self.acts.message(self.conv, "hello", timezone=timezone))
        self.assertEqual(st, 200, body)

    def schedule(self, h, **v):
        st, body = self.invoke(h, "schedule", v)
        self.assertEqual(st, 200, body)
        ans = json.loads(body)
        self.assertIsNotNone(ans.get("id"), ans)
        return ans

    def fires(self, sid=None):
        """(version, id, due, fired) of every schedule send the fake connector got, in order."""
        out = []
        for r in self.fc.requests:
            body = r.get("json") or {}
            m = FIRE_RE.match(body.get("text") or "") if isinstance(body, dict) else None
            if m and (sid is None or m.group(2) == sid):
                out.append((m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
        return out

    def wait_fires(self, n, sid=None, timeout=10):
        timeout = tf(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.fires(sid)
            if len(f) >= n:
                return f
            time.sleep(0.05)
        self.fail(f"{n} firing(s) of {sid} expected within {timeout}s, got {self.fires(sid)}")

    def schedules_json(self, h):
        rc, out, err = run_cli(["schedules", "--db", h.db, "--json"])
        self.assertEqual(rc, 0, err)
        return {s["id"]: s for s in json.loads(out)}


class RestartTest(SchedulesCase):
    """SIGTERM in the middle of a 1 s `every`, down for ~5 intervals, restart on the same --db."""

    ENV = dict(SchedulesCase.ENV, HERALD_SCHEDULE_MISFIRE_S="1")
    DOWN_S = 5.0

    def run_restart(self, missed):
        h1 = self.start(bot("v1"))
        self.store_conv(h1)
        ans = self.schedule(h1, id="tick", kind="every", expr="1", missed=missed)
        anchor = ans["next"]                      # an `every` fires at once: its anchor
        before = self.wait_fires(3, "tick")
        self.assertEqual([f[2] for f in before[:3]], [anchor, anchor + 1, anchor + 2], before)
        self.stop_clean(h1)
        n_before = len(self.fires("tick"))
        stored = self.schedules_json(h1)["tick"]
        down_from = time.time()
        time.sleep(self.DOWN_S)
        up_at = time.time()          # herald 2 starts after this: what is due later is not missed
        h2 = self.start(db=h1.db)
        self.wait_fires(n_before + 3, "tick", timeout=10)
        time.sleep(tf(0.3))
        after = self.fires("tick")[n_before:]
        self.stop_clean(h2)
        return anchor, down_from, up_at, stored, after, h2

    def test_missed_once_fires_one_late_run_then_resumes_the_grid(self):
        anchor, down_from, up_at, stored, after, h2 = self.run_restart("once")
        dues = [f[2] for f in after]
        # exactly one run for the ~5 missed ones: the first stored due time, late
        late = [d for d in dues if d < up_at - 1]
        self.assertEqual(len(late), 1, f"missed runs fired after the restart: {after}")
        self.assertEqual(dues[0], late[0])
        self.assertLessEqual(dues[0], down_from + 1.5)
        self.assertGreaterEqual(after[0][3] - dues[0], int(self.DOWN_S) - 1, after[0])
        # then the grid of the anchor, one per second, no gap and no repeat
        rest = dues[1:]
        self.assertGreaterEqual(len(rest), 2, after)
        self.assertTrue(all((d - anchor) % 1 == 0 and d >= up_at - 1 for d in rest), after)
        self.assertEqual(rest, list(range(rest[0], rest[0] + len(rest))), after)

    def test_missed_skip_does_not_fire_the_missed_run(self):
        anchor, down_from, up_at, stored, after, h2 = self.run_restart("skip")
        dues = [f[2] for f in after]
        self.assertFalse([d for d in dues if d < up_at - 1],
                         f"a missed run fired after the restart despite missed = skip: {after}")
        self.assertEqual(dues, list(range(dues[0], dues[0] + len(dues))), after)
        for f in after:                          # each on time
            self.assertLessEqual(f[3] - f[2], 1, f)


class LongOutageTest(SchedulesCase):
    """An hour-long outage on the test clock: restart, then move herald's wall clock an hour on
    before anything is due. A 10-minute `every` then finds 6 missed runs."""

    def run_outage(self, missed):
        h1 = self.start(bot("v1"))
        self.store_conv(h1)
        ans = self.schedule(h1, id="ten", kind="every", expr="10m", missed=missed)
        anchor = ans["next"]
        self.wait_fires(1, "ten")
        self.stop_clean(h1)
        h2 = self.start(db=h1.db, env={"HERALD_TEST_CLOCK": "1"})
        h2.wait_log(r"HERALD_TEST_CLOCK=1")
        st, body, _ = h2.admin_request("POST", "/-/clock", json.dumps({"advance_s": 3600}))
        self.assertEqual(st, 200, body)
        now = json.loads(body)["now_ms"] // 1000
        return h1, h2, anchor, now

    def test_once_after_an_hour_fires_one_run_not_six(self):
        h1, h2, anchor, now = self.run_outage("once")
        self.wait_fires(2, "ten")
        time.sleep(tf(1.0))
        f = self.fires("ten")
        self.assertEqual(len(f), 2, f"burst of missed runs: {f}")
        self.assertEqual(f[1][2], anchor + 600, f)          # the first missed due time, late
        self.assertGreaterEqual(f[1][3] - f[1][2], 3000, f)
        s = self.schedules_json(h2)["ten"]
        self.assertEqual((s["runs"], s["last_result"]), (2, "fired late (missed)"), s)
        nxt = self.next_fire(h2, "ten")
        self.assertEqual((nxt - anchor) % 600, 0, "the grid moved")
        self.assertTrue(now < nxt <= now + 600, (now, nxt))
        # and the grid goes on: ten minutes later, one more run
        st, body, _ = h2.admin_request("POST", "/-/clock", json.dumps({"advance_s": 600}))
        self.assertEqual(st, 200, body)
        self.wait_fires(3, "ten")
        time.sleep(tf(0.5))
        f = self.fires("ten")
        self.assertEqual(len(f), 3, f)
        self.assertEqual(f[2][2], nxt)
        self.stop_clean(h2)

    def test_skip_after_an_hour_fires_nothing_and_keeps_the_grid(self):
        h1, h2, anchor, now = self.run_outage("skip")
        h2.wait_log(r"HERALD_TEST_CLOCK")
        deadline = time.monotonic() + tf(5)
        while time.monotonic() < deadline:
            s = self.schedules_json(h2)["ten"]
            if s["last_result"] == "skipped (missed while down)":
                break
            time.sleep(0.1)
        self.assertEqual(s["last_result"], "skipped (missed while down)", s)
        self.assertEqual(s["runs"], 1, s)
        time.sleep(tf(0.5))
        self.assertEqual(len(self.fires("ten")), 1, self.fires("ten"))
        nxt = self.next_fire(h2, "ten")
        self.assertEqual((nxt - anchor) % 600, 0)
        self.assertTrue(now < nxt <= now + 600, (now, nxt))
        self.stop_clean(h2)

    def next_fire(self, h, sid):
        s = self.schedules_json(h)[sid]
        return int(datetime.datetime.strptime(s["next_utc"], "%Y-%m-%dT%H:%M:%SZ")
                   .replace(tzinfo=datetime.timezone.utc).timestamp())


V_NO_HANDLER = """\
teams.on_schedule("other", function(ev) ev:send(VERSION .. " other") end)
"""
REMIND = """\
teams.on_schedule("remind", function(ev)
  ev:send(("%s %s due=%d fired=%d"):format(VERSION, ev.payload.id, ev.due, ev.fired_at))
end)
"""


class HandlerGoneTest(SchedulesCase):
    """Reload to a version without the schedule's handler, then to one that has it again."""

    LINE = r"schedule (\S+) is due but no handler '(\w+)' in the live script \(kept; retried when one registers\)"

    def test_waits_for_its_handler_and_fires_once_when_it_returns(self):
        h = self.start(bot("v1", TICK + REMIND))
        self.store_conv(h)
        now = json.loads(self.invoke(h, "now")[1])["now"]
        at = datetime.datetime.fromtimestamp(now + 3, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.schedule(h, id="r1", kind="at", expr=at, handler="remind")
        self.schedule(h, id="e1", kind="every", expr="1", handler="remind")
        self.wait_fires(1, "e1")
        self.bot.write(bot("v2", V_NO_HANDLER))
        h.wait_log(r"generation 2 live", timeout=10)
        self.assertEqual(self.version(h), "v2")
        m = h.wait_log(self.LINE.replace(r"(\S+)", "r1"), timeout=10)
        h.wait_log(self.LINE.replace(r"(\S+)", "e1"), timeout=10)
        time.sleep(tf(1.5))                   # e1 is due every second: still one line each
        self.assertEqual(len(re.findall(self.LINE.replace(r"(\S+)", "r1"), h.log)), 1, h.log[-2000:])
        self.assertEqual(len(re.findall(self.LINE.replace(r"(\S+)", "e1"), h.log)), 1, h.log[-2000:])
        self.assertEqual(m.group(1), "remind")
        self.assertEqual(self.fires("r1"), [])
        v2_fires = [f for f in self.fires("e1") if f[0] != "v1"]
        self.assertEqual(v2_fires, [])
        s = self.schedules_json(h)
        self.assertEqual(s["r1"]["waiting_for_handler"], True, s["r1"])
        self.assertEqual(s["r1"]["runs"], 0)
        self.assertIsNotNone(s["r1"]["next_utc"], "the row lost its fire time")
        self.assertEqual(s["e1"]["waiting_for_handler"], True, s["e1"])
        rc, text, _ = run_cli(["schedules", "--db", h.db])
        self.assertEqual(rc, 0)
        self.assertRegex(text, r"r1\n  handler remind, at \S+\n  next    \S+  \|  [^\n]+\n  owner   "
                               + re.escape(self.conv) + r"\n  runs    0, last: waiting for its handler")
        e1_runs = s["e1"]["runs"]
        # version 3 brings the handler back: r1 fires once, e1 resumes with one run, no burst
        v3_at = time.time()                   # generation 3 goes live after this
        self.bot.write(bot("v3", TICK + REMIND))
        h.wait_log(r"generation 3 live", timeout=10)
        self.wait_fires(1, "r1")
        deadline = time.monotonic() + tf(10)
        while len([f for f in self.fires("e1") if f[0] == "v3"]) < 3:
            self.assertLess(time.monotonic(), deadline, f"e1 did not resume: {self.fires('e1')}")
            time.sleep(0.05)
        r1 = self.fires("r1")
        self.assertEqual(len(r1), 1, r1)
        self.assertEqual(r1[0][0], "v3")
        self.assertEqual(r1[0][2], now + 3)
        e1_v3 = [f for f in self.fires("e1") if f[0] == "v3"]
        dues = [f[2] for f in e1_v3]
        self.assertEqual(len(dues), len(set(dues)), f"a due time fired twice: {e1_v3}")
        # no burst: of the runs e1 missed while it waited, one fires; the rest are on the grid
        self.assertLessEqual(len([d for d in dues if d < v3_at - 1]), 1, e1_v3)
        self.assertEqual(dues[1:], list(range(dues[1], dues[1] + len(dues) - 1)), e1_v3)
        s = self.schedules_json(h)
        self.assertEqual((s["r1"]["runs"], s["r1"]["waiting_for_handler"]), (1, False), s["r1"])
        self.assertIsNone(s["r1"]["next_utc"])
        self.assertEqual(s["e1"]["waiting_for_handler"], False)
        self.assertGreater(s["e1"]["runs"], e1_runs)
        self.stop_clean(h)


    def test_a_skip_at_waiting_for_its_handler_is_not_lost(self):
        """missed = "skip" is for runs missed while herald was down; herald was up, the schedule
        waited for its handler, so it still fires when the handler returns (nothing lost)."""
        h = self.start(bot("v1", REMIND), env={"HERALD_SCHEDULE_MISFIRE_S": "1"})
        self.store_conv(h)
        now = json.loads(self.invoke(h, "now")[1])["now"]
        at = datetime.datetime.fromtimestamp(now + 2, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.bot.write(bot("v2", V_NO_HANDLER))
        h.wait_log(r"generation 2 live", timeout=10)
        self.schedule(h, id="r2", kind="at", expr=at, handler="remind", missed="skip")
        h.wait_log(self.LINE.replace(r"(\S+)", "r2"), timeout=10)
        time.sleep(2.5)                       # past HERALD_SCHEDULE_MISFIRE_S while waiting
        self.bot.write(bot("v3", REMIND))
        h.wait_log(r"generation 3 live", timeout=10)
        deadline = time.monotonic() + tf(5)
        while time.monotonic() < deadline and not self.fires("r2"):
            time.sleep(0.05)
        s = self.schedules_json(h)["r2"]
        self.assertEqual(len(self.fires("r2")), 1,
                         f"the at schedule that waited for its handler never fired: {s}")
        self.stop_clean(h)


class CliTest(SchedulesCase):
    """herald schedules: text, --json and --csv, with UTC and local next fire times."""

    def test_lists_utc_and_local_times_of_a_user_zone_schedule(self):
        h = self.start(bot("v1"))
        self.store_conv(h, timezone="Asia/Kathmandu")
        ans = self.schedule(h, id="digest", kind="cron", expr="0 9 * * *", tz="user")
        self.schedule(h, id="paris", kind="cron", expr="30 8 * * 1-5", tz="Europe/Paris")
        self.schedule(h, id="later", kind="every", expr="1d@2030-01-01T00:00:00Z")
        zone = zoneinfo.ZoneInfo("Asia/Kathmandu")
        nxt = datetime.datetime.fromtimestamp(ans["next"], zone)
        self.assertEqual((nxt.hour, nxt.minute), (9, 0))
        self.assertLess(ans["next"] - time.time(), 86400 + 5)
        utc = datetime.datetime.fromtimestamp(ans["next"], datetime.timezone.utc)
        next_utc = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        next_local = nxt.strftime("%Y-%m-%d 09:00 +0545 (+05:45)")
        s = self.schedules_json(h)
        d = s["digest"]
        self.assertEqual(d["kind"], "cron")
        self.assertEqual(d["expr"], "0 9 * * *")
        self.assertEqual(d["tz"], "user")
        self.assertEqual(d["zone"], "Asia/Kathmandu")
        self.assertEqual(d["conversation"], self.conv)
        self.assertEqual(d["next_utc"], next_utc)
        self.assertEqual(utc.strftime("%H:%M"), "03:15")
        self.assertEqual(d["next_local"], next_local)
        self.assertEqual((d["runs"], d["last_result"], d["waiting_for_handler"]), (0, None, False))
        p = s["paris"]
        self.assertEqual(p["zone"], "Europe/Paris")
        self.assertRegex(p["next_local"], r"^\d{4}-\d\d-\d\d 08:30 CES?T \(\+0[12]:00\)$")
        self.assertEqual(s["later"]["next_utc"], "2030-01-01T00:00:00Z")
        self.assertIsNone(s["later"]["zone"])
        # ordered by next fire time
        rc, out, _ = run_cli(["schedules", "--db", h.db, "--json"])
        self.assertEqual([x["id"] for x in json.loads(out)][-1], "later")

        rc, text, err = run_cli(["schedules", "--db", h.db])
        self.assertEqual(rc, 0, err)
        self.assertIn("digest\n  handler tick, cron 0 9 * * * tz=user\n"
                      f"  next    {next_utc}  |  {next_local}\n"
                      f"  owner   {self.conv}\n  runs    0, last: -\n", text)

        rc, out, err = run_cli(["schedules", "--db", h.db, "--csv"])
        self.assertEqual(rc, 0, err)
        rows = list(csv.DictReader(io.StringIO(out)))
        row = [r for r in rows if r["id"] == "digest"][0]
        self.assertEqual((row["tz"], row["zone"], row["next_utc"], row["next_local"], row["runs"]),
                         ("user", "Asia/Kathmandu", next_utc, next_local, "0"))

        # the user moves: the listing follows the stored zone of the conversation
        self.store_conv(h, timezone="America/New_York")
        d = self.schedules_json(h)["digest"]
        self.assertEqual(d["zone"], "America/New_York")
        self.stop_clean(h)


if __name__ == "__main__":
    unittest.main()
