"""test_reload.py — hot reload (issue 6): file watching (in-place writes, atomic renames, required
modules), SIGHUP, `herald reload`, POST /-/reload; broken versions rejected with a log line while
the old generation keeps answering (/healthz degraded, metrics); in-flight tasks of the old
generation finishing after the switch; the grace period cancelling a stuck one; durable state
untouched; no leaked refs or tasks (clean ASan exit, no leak lines in the log).

Each test writes its bot into its own temp directory (the watcher watches that directory)."""
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import unittest

from harness import HeraldTestCase, require_binary, run_cli, tf

LEAK_MARKERS = ("leaked", "registry refs still held")

# A valid version: invokes answer {"version": V} (after an optional sleep and reply), messages are
# answered with a reply "V: text". VERSION is substituted.
VALID = """\
local teams = require "teams"
local VERSION = "{version}"
teams.on_invoke(function(ev)
  local v = ev.value or {{}}
  if ev.name == "slow" then
    teams.sleep(v.seconds or 1)
    ev:reply(VERSION .. " slow done")
    return {{ version = VERSION, slow = true }}
  end
  if ev.name == "reply" then ev:reply(VERSION .. " replied") end
  return {{ version = VERSION }}
end)
teams.on_message(function(ev) ev:reply(VERSION .. ": " .. ev.text) end)
"""

# Broken versions; "line" is where the log must point (None: the error has no position).
SYNTAX_ERROR = """\
local teams = require "teams"
local VERSION = "BROKEN-syntax"
teams.on_invoke(function(ev)
  return { version = }
end)
"""
TOP_LEVEL_ERROR = """\
local teams = require "teams"
teams.on_invoke(function(ev) return { version = "BROKEN-error" } end)

error("refusing to start: BOT_SETTING missing")
"""
LOAD_LOOP = """\
local teams = require "teams"
teams.on_invoke(function(ev) return { version = "BROKEN-loop" } end)
local n = 0
while true do n = n + 1 end
"""
MEMORY_BOMB = """\
local teams = require "teams"
teams.on_invoke(function(ev) return { version = "BROKEN-memory" } end)
local t = {}
for i = 1, 1e9 do t[i] = string.rep("x", 1 << 20) .. i end
"""
NO_HOOK = """\
local teams = require "teams"
local VERSION = "BROKEN-nohook"
teams.log("info", "loaded without registering anything")
"""


def valid(version):
    return VALID.format(version=version)


class BotDir:
    """A temp directory holding the bot script (and modules); write() replaces a file atomically
    (temp file + os.replace, like deploy tools and most editors) or in place (truncate + write)."""

    def __init__(self, name="bot.lua"):
        self.dir = tempfile.mkdtemp(prefix="herald-reload-bot-")
        self.name = name
        self.path = os.path.join(self.dir, name)
        self._n = 0

    def file(self, name=None):
        return os.path.join(self.dir, name or self.name)

    def write(self, text, name=None, atomic=True):
        p = self.file(name)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if atomic:
            self._n += 1
            tmp = os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.{os.getpid()}.{self._n}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, p)
        else:
            with open(p, "r+" if os.path.exists(p) else "w", encoding="utf-8") as f:
                f.seek(0)
                f.write(text)
                f.truncate()
        return p

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class ReloadCase(HeraldTestCase):
    """Base for the reload suites: a BotDir per test, helpers to invoke, read /healthz and
    /metrics, wait for generations, and a stop that also asserts no leaked refs or tasks."""

    ENV = {"HERALD_RELOAD_DEBOUNCE_MS": "50"}

    def setUp(self):
        super().setUp()
        self.bot = BotDir()
        self.addCleanup(self.bot.cleanup)
        self.conv = "a:reload-conv"

    def start(self, text=None, env=None, **kw):
        if text is not None:
            self.bot.write(text)
        e = dict(self.ENV)
        e.update(env or {})
        return self.start_herald(self.bot.path, env=e, **kw)

    # ---- requests --------------------------------------------------------------------------------
    def invoke(self, h, name="version", value=None, timeout=30):
        st, body = h.post_activity(self.acts.invoke(self.conv, name, value or {}), timeout=timeout)
        return st, body

    def version(self, h):
        st, body = self.invoke(h)
        self.assertEqual(st, 200, f"invoke → {st} {body!r}\nlog tail:\n{h.log[-2000:]}")
        return json.loads(body)["version"]

    def health(self, h):
        st, body = h.healthz()
        self.assertEqual(st, 200, body)
        return json.loads(body)

    def metrics(self, h):
        return h.metrics()

    # ---- log -------------------------------------------------------------------------------------
    def live_lines(self, h):
        return re.findall(r"reload \(([^)]*)\): generation (\d+) live in (\d+) ms; generation (\d+) "
                          r"drains (\d+) task\(s\)", h.log)

    def failure_lines(self, h):
        return re.findall(r"reload \(([^)]*)\) failed; generation (\d+) keeps serving: ([^\n]*)", h.log)

    def wait_live(self, h, generation, why="file changed", timeout=10):
        return h.wait_log(rf"reload \({re.escape(why)}\): generation {generation} live in \d+ ms", timeout)

    def wait_failures(self, h, n, timeout=10):
        timeout = tf(timeout)
        deadline = time.monotonic() + timeout
        while True:
            got = self.failure_lines(h)
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} reload failure line(s), got {len(got)}; log tail:\n"
                                     f"{h.log[-3000:]}")
            time.sleep(0.05)

    def stop_clean(self, h):
        """SIGTERM, exit 0, sanitizer-clean (harness), and no leaked refs or tasks logged."""
        h.stop()
        log = h.log
        for m in LEAK_MARKERS:
            self.assertNotIn(m, log, f"leak reported in herald's log:\n{log[-3000:]}")

    def tearDown(self):
        for h in self._heralds:
            if h.proc is not None and h.exit_code is None and h.alive():
                try:
                    h.stop()
                except AssertionError:
                    pass  # reported by the base tearDown's own check below
        leaks = [h.tmp for h in self._heralds if any(m in h.log for m in LEAK_MARKERS)]
        super().tearDown()
        if leaks:
            self.fail(f"leaked refs/tasks logged by herald(s) in {leaks}")


@require_binary
class ReloadTest(ReloadCase):

    def test_valid_change_atomic_rename_then_in_place_write(self):
        h = self.start(valid("v1"))
        self.assertEqual(self.version(h), "v1")
        self.assertEqual(self.health(h)["reload"]["generation"], 1)
        # atomic: write a temp file beside it and rename over the script
        self.bot.write(valid("v2"), atomic=True)
        self.wait_live(h, 2)
        self.assertEqual(self.version(h), "v2")
        # in place: truncate and rewrite the same inode
        self.bot.write(valid("v3"), atomic=False)
        self.wait_live(h, 3)
        self.assertEqual(self.version(h), "v3")
        # messages run in the new generation too, and the reply goes out
        self.post_ok(h, self.acts.message(self.conv, "hello"))
        reqs = self.fc.wait_until(lambda r: [x for x in r if x["json"] and x["json"].get("text") == "v3: hello"],
                                  what="the v3 reply")
        self.assertEqual(len(reqs), 1)
        hz = self.health(h)
        self.assertEqual(hz["status"], "ok")
        self.assertEqual(hz["reload"]["generation"], 3)
        self.assertEqual(hz["reload"]["reloads"], 2)
        self.assertEqual(hz["reload"]["failures"], 0)
        self.assertIsNone(hz["reload"]["last_error"])
        m = self.metrics(h)
        self.assertEqual(m["herald_generation"], 3)
        self.assertEqual(m["herald_reloads_total"], 2)
        self.assertEqual(m["herald_reload_failures_total"], 0)
        # old generations closed once drained (they had no tasks)
        h.wait_log(r"reload: generation 2 closed")
        self.assertIn("reload: generation 1 closed", h.log)
        self.assertEqual(len(self.live_lines(h)), 2, self.live_lines(h))
        self.stop_clean(h)

    def test_burst_of_writes_reloads_once(self):
        """An editor's write + rename + chmod burst is debounced into one reload."""
        debounce = tf(1.0)
        h = self.start(valid("v1"), env={"HERALD_RELOAD_DEBOUNCE_MS": str(int(debounce * 1000))})
        t0 = time.monotonic()
        for i in range(5):
            self.bot.write(valid(f"burst{i}"), atomic=bool(i % 2))
            os.chmod(self.bot.path, 0o644)
            time.sleep(0.02)
        burst = time.monotonic() - t0
        self.assertLess(burst, debounce, "the burst outlasted the debounce: nothing tested")
        self.wait_live(h, 2)
        time.sleep(debounce + tf(0.5))      # a second reload would be live by now
        self.assertEqual(len(self.live_lines(h)), 1, h.log[-2000:])
        self.assertEqual(self.version(h), "burst4")
        self.stop_clean(h)

    def test_unrelated_file_in_directory_does_not_reload(self):
        h = self.start(valid("v1"))
        self.bot.write("just notes\n", name="NOTES.txt")
        self.bot.write("return 1\n", name="unused.lua")
        time.sleep(tf(0.6))                 # well past the 50 ms debounce
        self.assertEqual(self.live_lines(h), [])
        self.assertEqual(self.failure_lines(h), [])
        self.stop_clean(h)

    def test_broken_versions_rejected_old_generation_keeps_serving(self):
        env = {"HERALD_LOAD_DEADLINE_MS": "300", "HERALD_LUA_MEMORY_MB": "16"}
        h = self.start(valid("v1"), env=env)
        self.assertEqual(self.version(h), "v1")
        path = self.bot.path
        cases = [
            # (name, text, regex the failure line must match)
            ("syntax error", SYNTAX_ERROR, re.escape(path) + r":4: unexpected symbol near '}'"),
            ("error() at top level", TOP_LEVEL_ERROR,
             re.escape(path) + r":4: refusing to start: BOT_SETTING missing"),
            ("load deadline", LOAD_LOOP, r"CPU slice exceeded: ran for more than 300 ms"),
            ("memory cap", MEMORY_BOMB, r"not enough memory"),
            ("no hook", NO_HOOK, r"the script registered no handler"),
        ]
        for i, (what, text, rx) in enumerate(cases, 1):
            with self.subTest(what):
                self.bot.write(text, atomic=(i % 2 == 1))
                lines = self.wait_failures(h, i, timeout=15)
                why, gen, msg = lines[-1]
                self.assertEqual(why, "file changed")
                self.assertEqual(gen, "1")
                self.assertRegex(msg, rx)
                if what == "load deadline":
                    # the position is in the traceback that follows the line
                    self.assertRegex(h.log, re.escape(path) + r":4: in main chunk")
                # the old generation answers, unchanged
                self.assertEqual(self.version(h), "v1")
                hz = self.health(h)
                self.assertEqual(hz["status"], "degraded", hz)
                self.assertEqual(hz["reload"]["generation"], 1)
                self.assertEqual(hz["reload"]["failures"], i)
                self.assertIsNotNone(hz["reload"]["last_error"])
                self.assertRegex(hz["reload"]["last_error"], rx)
                m = self.metrics(h)
                self.assertEqual(m["herald_reload_failures_total"], i)
                self.assertEqual(m["herald_reload_last_failed"], 1)
                self.assertEqual(m["herald_generation"], 1)
        self.assertEqual(len(self.failure_lines(h)), len(cases), "one failure line per broken version")
        self.assertEqual(self.live_lines(h), [])
        # fixing the file reloads and clears the degraded state
        self.bot.write(valid("v2"))
        self.wait_live(h, 2)
        self.assertEqual(self.version(h), "v2")
        hz = self.health(h)
        self.assertEqual(hz["status"], "ok", hz)
        self.assertIsNone(hz["reload"]["last_error"])
        self.assertEqual(hz["reload"]["failures"], len(cases))
        m = self.metrics(h)
        self.assertEqual(m["herald_reload_last_failed"], 0)
        self.assertEqual(m["herald_reload_failures_total"], len(cases))
        # no reply from a broken version ever reached the connector
        self.assertFalse([r for r in self.fc.snapshot() if "BROKEN" in r["body"]])
        self.stop_clean(h)

    def test_failed_load_of_a_new_module_then_fixed(self):
        """A broken version that requires a module that does not exist yet: creating the module
        (a file the failed attempt looked for) is not a watched change, but fixing the script is."""
        h = self.start(valid("v1"))
        self.bot.write('local teams = require "teams"\nlocal helper = require "helper"\n'
                       'teams.on_invoke(function() return { version = helper.v } end)\n')
        lines = self.wait_failures(h, 1)
        self.assertIn("module 'helper' not found", lines[-1][2])
        self.assertIn(self.bot.path + ":2:", lines[-1][2])
        self.assertEqual(self.version(h), "v1")
        self.bot.write('return { v = "from-helper-1" }\n', name="helper.lua")
        self.bot.write('local teams = require "teams"\nlocal helper = require "helper"\n'
                       'teams.on_invoke(function() return { version = helper.v } end)\n-- touched\n')
        self.wait_live(h, 2)
        self.assertEqual(self.version(h), "from-helper-1")
        # now the module is watched: changing it alone reloads
        self.bot.write('return { v = "from-helper-2" }\n', name="helper.lua", atomic=False)
        self.wait_live(h, 3)
        self.assertEqual(self.version(h), "from-helper-2")
        self.stop_clean(h)

    def test_required_module_change_triggers_reload(self):
        self.bot.write('return { version = "m1" }\n', name="ver.lua")
        self.bot.write('return { suffix = "-s1" }\n', name="lib/suffix.lua")
        script = ('local teams = require "teams"\nlocal ver = require "ver"\n'
                  'local suffix = require "lib.suffix"\n'
                  'teams.on_invoke(function() return { version = ver.version .. suffix.suffix } end)\n')
        h = self.start(script)
        self.assertEqual(self.version(h), "m1-s1")
        # a module beside the script, replaced atomically
        self.bot.write('return { version = "m2" }\n', name="ver.lua")
        self.wait_live(h, 2)
        self.assertEqual(self.version(h), "m2-s1")
        # a module in a subdirectory, written in place
        self.bot.write('return { suffix = "-s2" }\n', name="lib/suffix.lua", atomic=False)
        self.wait_live(h, 3)
        self.assertEqual(self.version(h), "m2-s2")
        # a broken module is rejected like a broken script, naming the module's file and line
        self.bot.write('return { version = "m3" \n', name="ver.lua")
        lines = self.wait_failures(h, 1)
        self.assertIn(self.bot.file("ver.lua") + ":", lines[-1][2])
        self.assertEqual(self.version(h), "m2-s2")
        self.bot.write('return { version = "m4" }\n', name="ver.lua")
        self.wait_live(h, 4)
        self.assertEqual(self.version(h), "m4-s2")
        self.stop_clean(h)

    def test_sighup_and_herald_reload_command(self):
        h = self.start(valid("v1"), env={"HERALD_RELOAD": "off"})
        # watching is off: a change alone does nothing
        self.bot.write(valid("v2"))
        time.sleep(tf(0.6))
        self.assertEqual(self.version(h), "v1")
        self.assertEqual(self.live_lines(h), [])
        # SIGHUP
        h.proc.send_signal(signal.SIGHUP)
        self.wait_live(h, 2, why="SIGHUP")
        self.assertEqual(self.version(h), "v2")
        # herald reload --db PATH: the admin socket beside the database
        self.bot.write(valid("v3"))
        rc, out, err = run_cli(["reload", "--db", h.db])
        self.assertEqual(rc, 0, f"stdout={out!r} stderr={err!r}")
        body = json.loads(out.strip())
        self.assertEqual(body, {"reloaded": True, "generation": 3, "error": None})
        self.wait_live(h, 3, why="requested")
        self.assertEqual(self.version(h), "v3")
        # a broken file: the command fails (exit 1) and says why; the old generation keeps serving
        self.bot.write(SYNTAX_ERROR)
        rc, out, err = run_cli(["reload", "--db", h.db])
        self.assertEqual(rc, 1, f"stdout={out!r} stderr={err!r}")
        body = json.loads(out.strip())
        self.assertFalse(body["reloaded"])
        self.assertEqual(body["generation"], 3)
        self.assertIn(self.bot.path + ":4:", body["error"])
        lines = self.failure_lines(h)
        self.assertEqual([(w, g) for w, g, _ in lines], [("requested", "3")])
        # SIGHUP with the broken file: rejected too
        h.proc.send_signal(signal.SIGHUP)
        lines = self.wait_failures(h, 2)
        self.assertEqual(lines[-1][:2], ("SIGHUP", "3"))
        self.assertEqual(self.version(h), "v3")
        # the admin endpoint directly, on the admin socket
        self.bot.write(valid("v4"))
        st, text, _ = h.admin_request("POST", "/-/reload", body=b"")
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text), {"reloaded": True, "generation": 4, "error": None})
        self.assertEqual(self.version(h), "v4")
        self.stop_clean(h)

    def test_teams_call_at_top_level_of_a_new_version_is_rejected(self):
        """A version calling teams.sleep at load time must fail to load with a clean error (the
        README: misuse raises an error) while the old generation keeps serving."""
        h = self.start(valid("v1"))
        self.bot.write('local teams = require "teams"\nteams.sleep(0.1)\n'
                       'teams.on_invoke(function() return { version = "BROKEN" } end)\n')
        lines = self.wait_failures(h, 1)
        self.assertIn(self.bot.path + ":2:", lines[-1][2])
        self.assertIn("must be called from a handler", lines[-1][2])
        self.assertEqual(self.version(h), "v1")
        self.stop_clean(h)

    def test_reload_command_without_a_running_herald_fails(self):
        rc, out, err = run_cli(["reload", "--db", os.path.join(self.bot.dir, "nothing.db")])
        self.assertEqual(rc, 1)
        self.assertIn("no herald is running", err)

    def test_in_flight_handler_of_old_generation_finishes_after_switch(self):
        h = self.start(valid("v1"), env={"HERALD_RESPONSE_DEADLINE_MS": "60000"})
        result = {}
        # generation 1's handler sleeps, then replies; the connector holds the reply, so the
        # handler is in flight until the test releases it, however long the switch takes
        gate = self.fc.hold(method="POST")

        def slow():
            result["answer"] = self.invoke(h, "slow", {"seconds": 1})

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + tf(5)
        while self.health(h)["tasks"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.health(h)["tasks"], 1)
        self.bot.write(valid("v2"))
        m = self.wait_live(h, 2)
        self.assertRegex(h.log[m.start():], r"^[^\n]*generation 1 drains 1 task\(s\)")
        # new work goes to generation 2 at once (not after generation 1's task)
        self.assertEqual(self.version(h), "v2")
        hz = self.health(h)
        self.assertEqual(hz["reload"]["retired"], 1, hz)
        self.assertNotIn("generation 1 closed", h.log)
        gate.release()
        t.join(tf(15))
        self.assertFalse(t.is_alive())
        st, body = result["answer"]
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"version": "v1", "slow": True})
        self.fc.wait_until(lambda r: [x for x in r if x["json"] and x["json"].get("text") == "v1 slow done"],
                           what="generation 1's reply after the switch")
        h.wait_log(r"reload: generation 1 closed")
        self.assertNotIn("(with leaked refs)", h.log)
        self.assertEqual(self.health(h)["reload"]["retired"], 0)
        self.stop_clean(h)

    def test_grace_expiry_cancels_a_stuck_old_task(self):
        h = self.start(valid("v1"), env={"HERALD_RELOAD_GRACE_MS": "700",
                                         "HERALD_RESPONSE_DEADLINE_MS": "300"})
        result = {}

        def stuck():
            result["answer"] = self.invoke(h, "slow", {"seconds": 3600})

        t = threading.Thread(target=stuck)
        t.start()
        t.join(tf(5))
        self.assertFalse(t.is_alive(), "the response deadline answers Teams while the handler runs")
        self.assertEqual(result["answer"][0], 200)
        self.assertEqual(self.health(h)["tasks"], 1)
        t_write = time.monotonic()          # the switch, and so the grace, starts after this
        self.bot.write(valid("v2"))
        self.wait_live(h, 2)
        self.assertEqual(self.version(h), "v2")
        h.wait_log(r"generation 1 still had 1 task\(s\) after the grace period: cancelling them")
        h.wait_log(r"reload: generation 1 closed")
        self.assertGreaterEqual(time.monotonic() - t_write, 0.7, "cancelled before the 700 ms grace")
        self.assertRegex(h.log, r"handler cancelled task=invoke [^\n]*reason=the script was reloaded "
                                r"and the grace period ended")
        hz = self.health(h)
        self.assertEqual(hz["tasks"], 0, hz)
        self.assertEqual(hz["reload"]["retired"], 0, hz)
        self.assertEqual(self.version(h), "v2")
        self.assertFalse([r for r in self.fc.snapshot() if "slow done" in r["body"]])
        self.stop_clean(h)

    def test_durable_state_survives_reload(self):
        """References and message keys stored by generation 1 are used by generation 2."""
        v1 = ('local teams = require "teams"\n'
              'teams.on_message(function(ev) ev:send("status: running", { key = "job-1" }) end)\n')
        v2 = ('local teams = require "teams"\n'
              'teams.on_invoke(function(ev)\n'
              '  local ref = teams.conversation(ev.value.conv)\n'
              '  local id, msg, code = teams.update(ev.value.conv, { key = "job-1" }, "status: done")\n'
              '  return { version = "v2", known = ref ~= nil, updated = id ~= nil, code = code }\n'
              'end)\n')
        h = self.start(v1)
        other = "a:durable-conv"
        self.post_ok(h, self.acts.message(other, "go"))
        posts = self.fc.wait_for(1)
        sent_id = json.loads(posts[0]["response"])["id"]
        self.bot.write(v2)
        self.wait_live(h, 2)
        st, body = self.invoke(h, "check", {"conv": other})
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"version": "v2", "known": True, "updated": True})
        puts = [r for r in self.fc.snapshot() if r["method"] == "PUT"]
        self.assertEqual(len(puts), 1, self.fc.summary())
        self.assertEqual(puts[0]["conversation_id"], other)
        self.assertEqual(puts[0]["activity_id"], sent_id)
        self.stop_clean(h)

    def test_many_reloads_with_traffic_leave_nothing_behind(self):
        """30 reloads (valid and broken alternating) with requests in between; every old
        generation is closed without leaks, and memory does not grow with the generation count."""
        h = self.start(valid("v0"), env={"HERALD_LOAD_DEADLINE_MS": "200"})
        mem0 = None
        gen = 1
        fails = 0
        for i in range(1, 31):
            if i % 2:
                self.bot.write(valid(f"v{i}"), atomic=bool(i % 4 == 1))
                gen += 1
                self.wait_live(h, gen)
                self.assertEqual(self.version(h), f"v{i}")
                self.post_ok(h, self.acts.message(self.conv, f"m{i}"))
            else:
                self.bot.write([SYNTAX_ERROR, TOP_LEVEL_ERROR, NO_HOOK][i % 3])
                fails += 1
                self.wait_failures(h, fails)
                self.assertEqual(self.version(h), f"v{i - 1}")
            if i == 5:
                mem0 = self.health(h)["lua_memory_bytes"]
        h.wait_log(rf"reload: generation {gen - 1} closed")
        hz = self.health(h)
        self.assertEqual(hz["reload"]["retired"], 0, hz)
        self.assertEqual(hz["tasks"], 0, hz)
        self.assertLess(hz["lua_memory_bytes"], 4 * mem0 + 1_000_000, hz)
        self.assertEqual(len(re.findall(r"reload: generation \d+ closed", h.log)), gen - 1)
        self.assertEqual(len(self.failure_lines(h)), fails)
        self.stop_clean(h)


if __name__ == "__main__":
    unittest.main()
