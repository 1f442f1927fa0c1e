"""test_sandbox_attack.py — attacks on the sandbox, the CPU slice and the watchdog that need a bot of
their own (a top level that keeps something, two handlers that meet, a reload, a restart), each a
regression test for a hole it found: the host's threads resumed or closed by a script; C bindings
reading strings only a metamethod held, or leaking C memory when they raise; a timer batch holding
freed timers; finalizers planted through an event's metatable; <close> handlers run where Lua left
hooks off; runaways and cancellations back to back adding up their slices; tracebacks and
garbage collections stalling the loop outside any slice; and quarantine keys the watchdog could not
record. The one-line probes are in test_sandbox_escape.py."""
import json
import os
import re
import signal
import tempfile
import textwrap
import threading
import time
import unittest

from harness import HeraldTestCase, bot, free_port, require_binary, tf


@require_binary
class SandboxAttackTest(HeraldTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="herald-attack-")

    def script(self, text, name="bot.lua"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def start(self, text, env=None, **kw):
        e = {"HERALD_TASK_SLICE_MS": "200"}
        e.update(env or {})
        return self.start_herald(self.script(text), env=e, **kw)

    def invoke(self, h, name, value=None, timeout=None):
        st, body = h.post_activity(self.acts.invoke("a:attack", name, value or {}),
                                   timeout=timeout or 20)
        return st, (json.loads(body) if body else None)

    def start_probe_bot(self, env=None, **kw):
        e = {"HERALD_TASK_SLICE_MS": "200", "BOT_MARKER": os.path.join(self.dir, "ESCAPED")}
        e.update(env or {})
        return self.start_herald(bot("escape_probe.lua"), env=e, **kw)

    def probe(self, h, code, timeout=None):
        """Runs code in a handler of bots/escape_probe.lua; returns its JSON answer."""
        st, body = h.post_activity(self.acts.invoke("a:attack", "probe", {"code": code}),
                                   timeout=timeout or 20)
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-3000:]}")
        return json.loads(body)

    def held(self, h, fn):
        """Runs fn() (a request); returns its result and the CPU herald spent meanwhile: how long
        the loop held it back, in a measure a busy machine does not stretch."""
        c0 = h.cpu_seconds()
        r = fn()
        return r, h.cpu_seconds() - c0

    def assert_alive(self, h, after):
        self.assertTrue(h.alive(), f"herald died after {after}:\n{h.log[-3000:]}")
        t0 = time.monotonic()
        st, body = h.healthz()
        self.assertEqual(st, 200, f"/healthz after {after}: {st} {body}")
        self.assertLess(time.monotonic() - t0, tf(2), f"/healthz slow after {after}")

    # -- the host's own threads --------------------------------------------------------------------

    def test_a_handler_resumed_by_another_cannot_run_on_and_wake_a_freed_task(self):
        # The victim catches the refused resume with pcall. It used to run on under the hijacker's
        # resume; its next teams call replaced the pending sleep, which then woke the freed task
        # (heap-use-after-free under ASan).
        h = self.start("""
            local teams = require "teams"
            local victim
            teams.on_invoke(function(ev)
              if ev.name == "victim" then
                victim = coroutine.running()
                local ok, err = pcall(teams.sleep, 0.4)
                teams.sleep(0.05)
                return { woke = ok }
              end
              local ok, err = coroutine.resume(victim, "forged")
              return { ok = ok, err = tostring(err), status = coroutine.status(victim) }
            end)
        """)
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("v", self.invoke(h, "victim")))
        t.start()
        time.sleep(0.2)
        st, r = self.invoke(h, "hijack")
        self.assertEqual(st, 200, h.log[-3000:])
        self.assertEqual((r["ok"], r["status"]), (False, "suspended"), r)
        self.assertIn("only herald may resume it", r["err"])
        t.join(tf(10))
        self.assertEqual(out["v"], (200, {"woke": True}))
        time.sleep(0.6)                       # past the first sleep's timer
        self.assert_alive(h, "a hijacked handler")

    def test_the_main_thread_cannot_be_resumed_or_closed(self):
        # coroutine.running() at the top level is the main thread. Resumed from a handler (the
        # activity table left on its stack given a __call), it ran script code as a coroutine and
        # stayed yielded under the host; closed, its stack was reset while the host used it.
        h = self.start("""
            local teams = require "teams"
            local main = coroutine.running()
            teams.on_invoke(function(ev)
              if ev.name == "resume" then
                setmetatable(ev.activity, { __call = function()
                  local x <close> = setmetatable({}, { __close = function() while true do end end })
                  coroutine.yield("parked on the main thread")
                end })
                local ok, err = coroutine.resume(main)
                return { ok = ok, err = tostring(err) }
              end
              local ok, err = coroutine.close(main)
              return { ok = ok, err = tostring(err) }
            end)
            teams.on_message(function(ev) ev:reply("echo " .. ev.text) end)
        """)
        for name in ("resume", "close"):
            st, r = self.invoke(h, name)
            self.assertEqual(st, 200, h.log[-3000:])
            self.assertFalse(r["ok"], f"coroutine.{name}(main thread) succeeded: {r}")
            self.assertIn("the main thread belongs to herald", r["err"])
        # and a reload closes the generation at once (a parked <close> would run there, unbounded)
        h.proc.send_signal(signal.SIGHUP)
        h.wait_log(r"reload: generation 1 closed", timeout=10)
        self.post_ok(h, self.acts.message("a:attack", "after"))
        self.wait_requests(1, timeout=10)
        self.assert_alive(h, "resuming the main thread")

    def test_a_binding_that_raises_holds_no_c_memory(self):
        # teams.timer.after allocated its timer, then the Lua table that can fail at the memory
        # cap; teams.send resolved the conversation (strings in C), then found it was not in a
        # handler's own coroutine. Each failing call leaked, as often as a loop liked: C memory
        # outside the cap (LeakSanitizer at exit).
        h = self.start_probe_bot(env={"HERALD_LUA_MEMORY_MB": "16", "HERALD_TASK_SLICE_MS": "2000"})
        self.post_ok(h, self.acts.message("a:attack", "hello"))   # a stored conversation
        r = self.probe(h, """
            -- everything the loop below needs exists before memory is filled: a closure made
            -- after it would itself meet the cap, outside any pcall
            local fails, after = 0, teams.timer.after
            local function f() end
            -- memory is filled with a list, not an array: an array's doubling can fail with
            -- plenty of room left, so how close to the cap it ends would depend on the baseline
            local keep
            local function big() keep = { ("x"):rep(4096), keep } end
            local function small() keep = { false, keep } end
            local function room(n) for _ = 1, n do if keep then keep = keep[2] end end end
            while pcall(big) do end
            while pcall(small) do end
            for i = 1, 200 do if not pcall(after, 3600, f) then fails = fails + 1 end end
            keep = nil
            return fails""")
        self.assertTrue(r["ok"], r)
        r = self.probe(h, """
            local ev, n = ..., 0
            coroutine.wrap(function()
              for i = 1, 100 do if not pcall(teams.send, ev.conversation, "x") then n = n + 1 end end
            end)()
            return n""")
        self.assertEqual(r.get("value"), 100, r)
        h.stop()                              # LeakSanitizer reports at exit

    def test_a_timer_with_thousands_of_arguments_gets_them_all(self):
        # A new task's thread has room for 20 values and lua_xmove does not check: a timer's
        # arguments were written past the thread's stack. liblua is not instrumented, so ASan saw
        # nothing there; the heap it trampled crashed herald later (at shutdown, in SQLite).
        h = self.start_probe_bot()
        r = self.probe(h, """
            local args = {}
            for i = 1, 5000 do args[i] = i end
            _G.timer_got = nil
            teams.timer.after(0, function(...) _G.timer_got = select("#", ...) + select(5000, ...) end,
                              table.unpack(args))
            return true""")
        self.assertTrue(r["ok"], r)
        deadline = time.monotonic() + tf(10)
        while True:
            r = self.probe(h, "return _G.timer_got")
            if r.get("value") is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(r.get("value"), 10000, r)
        self.assert_alive(h, "a timer with 5,000 arguments")
        h.stop()                              # a trampled heap shows here at the latest

    def test_timer_handles_made_at_the_memory_cap_own_exactly_their_timers(self):
        # A timer handle is made closed first, then given its timer (liolib's newprefile): at the
        # memory cap every teams.timer.after/every either returns a handle that owns its timer or
        # raises holding no C memory and leaving no timer behind (the heap counts only handed-out
        # ones; LeakSanitizer at exit). Made in the old order, each raising call leaked a timer.
        h = self.start_probe_bot(env={"HERALD_LUA_MEMORY_MB": "8", "HERALD_TASK_SLICE_MS": "2000",
                                      "HERALD_MAX_TIMERS": "100000"})
        r = self.probe(h, """
            local after, every, count = teams.timer.after, teams.timer.every, teams.timer.count
            local function f() end
            local ok, fails, handles = 0, 0, {}
            -- memory is filled with a list, not an array: an array's doubling can fail with
            -- plenty of room left, so how close to the cap it ends would depend on the baseline
            local keep
            local function big() keep = { ("x"):rep(4096), keep } end
            local function small() keep = { false, keep } end
            local function room(n) for _ = 1, n do if keep then keep = keep[2] end end end
            local function made(s, hd) if s then ok = ok + 1; handles[ok] = hd else fails = fails + 1 end end
            for i = 1, 400 do handles[i] = false end     -- room for the handles, made up front
            local before = count()
            while pcall(big) do end
            while pcall(small) do end
            for i = 1, 200 do
              made(pcall(after, 3600, f, i))
              made(pcall(every, 3600, f, i))
              if i % 4 == 0 then room(6) end   -- a little room now and then (~90 bytes a node)
            end
            local pending = count() - before
            keep = nil
            collectgarbage()
            local cancelled = 0
            for i = 1, ok do if handles[i]:cancel() then cancelled = cancelled + 1 end end
            return ("%d %d %d %d %d"):format(ok, fails, pending, cancelled, count() - before)""")
        self.assertTrue(r["ok"], r)
        v = dict(zip(["ok", "fails", "pending", "cancelled", "left"], map(int, r["value"].split())))
        self.assertGreater(v["fails"], 0, v)      # the cap was met
        self.assertGreater(v["ok"], 0, v)         # and some room was found now and then
        self.assertEqual(v["pending"], v["ok"], v)
        self.assertEqual(v["cancelled"], v["ok"], v)
        self.assertEqual(v["left"], 0, v)
        self.assert_alive(h, "timers made at the memory cap")
        h.stop()                              # LeakSanitizer reports at exit

    def test_a_refused_schedule_at_the_memory_cap_holds_no_c_memory(self):
        # teams.schedule with an expression the parser refuses: the message is made in C, then
        # pushed as a Lua string, which can raise at the memory cap. Pushed while C still owned
        # it, each such call leaked the message (LeakSanitizer at exit).
        h = self.start_probe_bot(env={"HERALD_LUA_MEMORY_MB": "8", "HERALD_TASK_SLICE_MS": "2000"})
        r = self.probe(h, """
            local schedule, spec = teams.schedule, { id = "bad", handler = "h", cron = "not a cron at all" }
            local refused, raised, res = 0, 0, {}
            for i = 1, 400 do res[i] = false end          -- messages are kept: memory stays full
            -- memory is filled with a list, not an array: an array's doubling can fail with
            -- plenty of room left, so how close to the cap it ends would depend on the baseline
            local keep
            local function big() keep = { ("x"):rep(4096), keep } end
            local function small() keep = { false, keep } end
            local function room(n) for _ = 1, n do if keep then keep = keep[2] end end end
            local function tally(s, _, msg)
              if s then refused = refused + 1; res[refused] = msg else raised = raised + 1 end
            end
            while pcall(big) do end
            while pcall(small) do end
            for i = 1, 400 do
              tally(pcall(schedule, spec))
              if i % 4 == 0 then room(2) end   -- a little room now and then (~90 bytes a node)
            end
            keep, res = nil, nil
            return ("%d %d"):format(refused, raised)""")
        self.assertTrue(r["ok"], r)
        refused, raised = map(int, r["value"].split())
        self.assertGreater(raised, 0, r)          # the cap was met
        self.assertGreater(refused, 0, r)         # and the parser was reached
        self.assert_alive(h, "schedules refused at the memory cap")
        h.stop()                              # LeakSanitizer reports at exit

    def test_schedule_queries_that_raise_at_the_memory_cap_leave_no_query_open(self):
        # teams.schedule.list/get push rows while their SQLite query steps. A push that raised at
        # the memory cap left the query stepping: it held its read snapshot, and the next list
        # carried on with the old query's remaining rows (7 of 30 schedules).
        h = self.start_probe_bot(env={"HERALD_LUA_MEMORY_MB": "8", "HERALD_TASK_SLICE_MS": "2000"})
        r = self.probe(h, """
            teams.on_schedule("h", function() end)
            for i = 1, 30 do assert(teams.schedule { id = "s" .. i, handler = "h", every = 3600 }) end
            local list, get = teams.schedule.list, teams.schedule.get
            local ok, raised, res = 0, 0, {}
            for i = 1, 800 do res[i] = false end          -- answers are kept: memory stays full
            local function tally(s, v) if s then ok = ok + 1; res[ok] = v else raised = raised + 1 end end
            -- memory is filled with a list, not an array: an array's doubling can fail with
            -- plenty of room left, so how close to the cap it ends would depend on the baseline
            local keep
            local function big() keep = { ("x"):rep(4096), keep } end
            local function small() keep = { false, keep } end
            local function room(n) for _ = 1, n do if keep then keep = keep[2] end end end
            while pcall(big) do end
            while pcall(small) do end
            for i = 1, 400 do
              tally(pcall(list))
              tally(pcall(get, "s1"))
              if i % 4 == 0 then room(40) end   -- room for a get now and then, never for a list
            end
            keep, res = nil, nil
            collectgarbage()
            local g = get("s7")
            return ("%d %d %d %s"):format(ok, raised, #list(), g and g.id or "nil")""")
        self.assertTrue(r["ok"], r)
        ok, raised, listed, got = r["value"].split()
        self.assertGreater(int(raised), 0, r)     # the cap was met
        self.assertGreater(int(ok), 0, r)
        self.assertEqual((int(listed), got), (30, "s7"), r)
        h.stop()

    def test_a_handler_the_slice_killed_does_not_run_its_close_handlers_unbounded(self):
        # The slice kills from inside Lua's hook, and Lua leaves hooks off on the thread it kills.
        # Closing that thread's <close> variables afterwards (a handler's are closed however it
        # ends) ran a looping one with no slice: the watchdog had to restart herald.
        h = self.start("""
            local teams = require "teams"
            teams.on_message(function(ev)
              local x <close> = setmetatable({}, { __close = function() while true do end end })
              while true do end
            end)
            teams.on_invoke(function(ev)
              local closed = false
              do local y <close> = setmetatable({}, { __close = function() closed = true end }) end
              return { closed = closed }
            end)
        """, env={"HERALD_WATCHDOG_GRACE_MS": "500"}, listen=f"127.0.0.1:{free_port()}")
        st, _ = h.post_activity(self.acts.message("a:attack", "run away"), timeout=20)
        self.assertEqual(st, 200)
        self.assertIn("are not run: the CPU slice killed it", h.log)
        self.assertNotIn("watchdog: restarting", h.log)
        self.assertEqual(self.invoke(h, "still closes"), (200, {"closed": True}))
        self.assert_alive(h, "a killed handler's <close>")

    # -- finalizers --------------------------------------------------------------------------------

    def test_an_events_metatable_is_out_of_reach_so_no_finalizer_can_be_planted(self):
        # Event.__index was Event itself, so ev.__index handed out the metatable every later event
        # gets from the teams module's own setmetatable; a __gc put there made each new event a
        # finalizer Lua runs with hooks off. An endless one hung the loop for good at the next
        # reload (lua_close runs every finalizer; no slice, no watchdog). Schedule events alike.
        h = self.start("""
            local teams = require "teams"
            local function plant(ev)
              return pcall(function() ev.__index.__gc = function() while true do end end end)
            end
            teams.on_invoke(function(ev)
              if ev.name == "schedule" then
                assert(teams.schedule { id = "plant", handler = "plant", every = 1 })
                return {}
              end
              return { planted = plant(ev) }
            end)
            teams.on_schedule("plant", function(ev)
              teams.log("info", "planted from a schedule event: " .. tostring(plant(ev)))
              teams.schedule.cancel("plant")
            end)
        """)
        st, r = self.invoke(h, "plant")
        self.assertEqual((st, r), (200, {"planted": False}))
        self.invoke(h, "schedule")
        h.wait_log(r"planted from a schedule event: (true|false)", timeout=10)
        self.assertIn("planted from a schedule event: false", h.log)
        self.invoke(h, "again")               # a new event: with a planted __gc, a finalizer
        h.proc.send_signal(signal.SIGHUP)
        h.wait_log(r"reload: generation 1 closed", timeout=10)
        self.assert_alive(h, "a reload")

    def test_a_timer_callback_may_cancel_any_timer_of_its_batch(self):
        # Due timers were collected into a list before any fired; a callback cancelling a later
        # one of the same batch freed what the list still held (heap-use-after-free, double free).
        h = self.start_probe_bot()
        r = self.probe(h, """
            local later, every, own
            teams.timer.after(0.05, function() later:cancel(); every:cancel() end)
            later = teams.timer.after(0.05, function() _G.later_ran = true end)
            every = teams.timer.every(0.05, function() _G.every_ran = true end)
            own = teams.timer.after(0.05, function() _G.own_cancel = own:cancel() end)
            return true""")
        self.assertTrue(r["ok"], r)
        time.sleep(0.4)
        r = self.probe(h, "return tostring(later_ran) .. tostring(every_ran) .. tostring(own_cancel)")
        self.assertEqual(r.get("value"), "nilnilfalse", r)
        self.assert_alive(h, "timers cancelled by their batch")

    # -- what the C bindings read --------------------------------------------------------------------

    def test_bindings_never_hold_a_string_only_a_metamethod_returned(self):
        # C read option, filter, reference and recipient tables with lua_getfield and kept the
        # string after popping it ("the table keeps it alive"); an __index result is held by
        # nothing, and the __index of the next field collected it (heap-use-after-free).
        collect = "collectgarbage(); collectgarbage()"
        attacks = {
            "reply options": """
                local ev = ...
                return ev:reply("hi", setmetatable({}, { __index = function(t, k)
                  if k == "key" then return ("k"):rep(20) .. math.random() end
                  if k == "category" then %(c)s end
                end }))""",
            "conversations filter": """
                local n = 0
                for ref in teams.conversations(setmetatable({}, { __index = function(t, k)
                  if k == "tenant" then return ("t"):rep(40) .. math.random() end
                  %(c)s
                end })) do n = n + 1 end
                return n""",
            "a personalised broadcast's recipient": """
                local ev = ...
                return teams.broadcast { to = { conversations = { ev.conversation } },
                  message = function(r)
                    setmetatable(r, { __index = function(t, k)
                      if k == "user" then return ("u"):rep(30) .. math.random() end
                      if k == "tenant" then %(c)s end
                    end })
                    return "hi"
                  end }""",
            "a reference table": """
                local ev = ...
                return teams.send(setmetatable({}, { __index = function(t, k)
                  if k == "id" then return ev.conversation .. "" end
                  %(c)s
                end }), "hi")""",
            "a number where a category string goes": """
                local ev = ...
                return ev:send("hi", { category = setmetatable({}, { __index = function() %(c)s end }) })""",
        }
        h = self.start_probe_bot()
        self.post_ok(h, self.acts.message("a:attack", "hello"))   # a stored conversation
        for name, code in attacks.items():
            self.probe(h, textwrap.dedent(code % {"c": collect}))
            self.assert_alive(h, name)

    # -- the loop stalled outside any slice ----------------------------------------------------------

    def test_a_failed_handlers_traceback_does_not_grow_with_the_scripts_globals(self):
        # luaL_traceback looks each frame's function up in every table of package.loaded, _G
        # among them; a task's traceback is built after its slice, so 600,000 globals made every
        # failing handler stall the loop for seconds, with no slice and no watchdog to stop it.
        h = self.start("""
            local teams = require "teams"
            teams.on_invoke(function(ev)
              if ev.name == "fill" then
                local base = #(_G.filled or "")
                for i = base + 1, base + 200000 do _G["global_" .. i] = true end
                _G.filled = ("x"):rep(base + 200000)
                return { n = #_G.filled }
              end
              local function deep(n) if n == 0 then error("boom") end return (deep(n - 1)) end
              deep(20)
            end)
        """, env={"HERALD_TASK_SLICE_MS": "3000"})
        for _ in range(3):
            st, r = self.invoke(h, "fill")
            self.assertEqual(st, 200, h.log[-2000:])
        for _ in range(2):
            (st, _), cpu = self.held(h, lambda: self.invoke(h, "fail"))
            self.assertEqual(st, 500)
            self.assertLess(cpu, tf(1.5), f"a failing handler held the loop for {cpu:.1f} s of CPU")
        self.assertIn("boom", h.log)

    def test_a_collection_the_host_triggers_is_bounded_like_script_code(self):
        # Lua's collector runs in whatever code allocates, much of it the host's outside any slice
        # (decoding an activity, a task's thread), where the watchdog did not look. The atomic
        # phase is one C call, and converging ephemeron tables (weak keys) is quadratic in a
        # chain's length: 60,000 random-ordered entries cost 10-25 s per collection, and the
        # chain lives on. A __mode cannot be refused (a script adds it to a metatable later). The
        # collector now runs only inside slices: the stall is the watchdog's (slice + grace).
        h = self.start_probe_bot(env={"HERALD_WATCHDOG_GRACE_MS": "1000"},
                                 listen=f"127.0.0.1:{free_port()}")
        self._heralds.remove(h)               # stopped here: a stalled host fails tearDown's checks
        try:
            self.probe(h, """
                local n = 60000
                local e = setmetatable({}, { __mode = "k" })
                local keys = {}
                for i = 1, n do keys[i] = {} end
                for i = n, 2, -1 do local j = math.random(i); keys[i], keys[j] = keys[j], keys[i] end
                for i = 1, n - 1 do e[keys[i]] = keys[i + 1] end
                _G.kept = { e, keys[1] }
                collectgarbage()
                return n""")
            for i in range(6):                # the host's decode allocates, the handler hardly
                a = self.acts.message("a:attack", f"m{i}")
                a["channelData"]["padding"] = [{"k": j} for j in range(30000)]
                def post():
                    try:
                        h.post_activity(a, timeout=60)
                    except (ConnectionError, OSError):
                        pass                  # the watchdog restarted herald: bounded, fine
                _, cpu = self.held(h, post)
                # a slice, the watchdog's grace and a restart at most, not the collection's 10-25 s
                self.assertLess(cpu, tf(4), f"message {i}: the loop stalled {cpu:.1f} s of CPU")
                if "watchdog: restarting" in h.log:
                    h.wait_log(r"(?s)watchdog: restarting.*listening on", timeout=10)
            self.assertLessEqual(h.log.count("watchdog: restarting"), 1)
            self.assert_alive(h, "a collection of a chain of ephemerons")
        finally:
            h.kill()
            h.cleanup()

    def test_a_burst_of_runaways_does_not_hold_the_loop_for_the_sum_of_their_slices(self):
        # Each runaway is killed at its slice, but the timer callback fired every due timer, the
        # ready list resumed every woken task and the scheduler every due row (200 a turn) in one
        # go: 60 of them held the loop for 60 slices, and no slice was ever long enough for the
        # watchdog. Each now stops after a slice's worth and lets the loop poll first.
        n = 60
        h = self.start("""
            local teams = require "teams"
            local function run_away() while true do end end
            teams.on_schedule("run_away", run_away)
            teams.on_invoke(function(ev)
              for i = 1, %d do
                if ev.name == "timers" then teams.timer.after(0.3, run_away) end
                if ev.name == "tasks" then
                  teams.timer.after(0, function() teams.sleep(0.3) run_away() end)
                end
                if ev.name == "schedules" then
                  assert(teams.schedule { id = "s" .. i, handler = "run_away",
                                          at = os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", os.time() + 1) })
                end
              end
              return {}
            end)
        """ % n, env={"HERALD_TASK_SLICE_MS": "50"})
        def killed_since(before, at_least):
            deadline = time.monotonic() + tf(30)
            while h.log.count("CPU slice exceeded") - before < at_least and time.monotonic() < deadline:
                time.sleep(0.05)
            return h.log.count("CPU slice exceeded") - before

        for burst in ("timers", "tasks", "schedules"):
            kills = h.log.count("CPU slice exceeded")
            self.invoke(h, burst)
            self.assertGreaterEqual(killed_since(kills, 1), 1, burst)   # the burst has begun
            (st, _), cpu = self.held(h, h.healthz)
            self.assertEqual(st, 200)
            self.assertLess(cpu, tf(1.0), f"/healthz waited {cpu:.1f} s of CPU behind a burst of {burst}")
            self.assertEqual(killed_since(kills, n), n, burst)

    def test_a_storm_of_cancellations_does_not_hold_the_loop_for_the_sum_of_their_slices(self):
        # A cancelled task's <close> handlers run under a slice of their own. Sixty tasks reaching
        # their deadline together (one timer callback each, back to back) or closed with their
        # generation after a reload each ran a whole slice: the sum held the loop, and no single
        # slice was long enough for the watchdog.
        n = 60
        script = """
            local teams = require "teams"
            teams.on_invoke(function(ev)
              for i = 1, %d do
                teams.timer.after(0, function()
                  local x <close> = setmetatable({}, { __close = function() while true do end end })
                  teams.sleep(3600)
                end)
              end
              return {}
            end)
        """ % n
        for storm, env in (("deadline", {"HERALD_TASK_DEADLINE_MS": "800"}),
                           ("reload", {"HERALD_RELOAD_GRACE_MS": "300"})):
            h = self.start(script, env=dict(env, HERALD_TASK_SLICE_MS="50"))
            st, _ = self.invoke(h, "park")
            self.assertEqual(st, 200)
            deadline = time.monotonic() + tf(10)
            while json.loads(h.healthz()[1])["tasks"] < n and time.monotonic() < deadline:
                time.sleep(0.05)
            if storm == "reload":
                h.proc.send_signal(signal.SIGHUP)
            h.wait_log(r"CPU slice exceeded", timeout=10)   # the storm has begun
            (st, _), cpu = self.held(h, h.healthz)
            self.assertEqual(st, 200)
            self.assertLess(cpu, tf(1.0), f"/healthz waited {cpu:.1f} s of CPU behind a {storm} storm")
            deadline = time.monotonic() + tf(30)
            while json.loads(h.healthz()[1])["tasks"] and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(json.loads(h.healthz()[1])["tasks"], 0, storm)
            h.stop()

    # -- the watchdog --------------------------------------------------------------------------------

    def test_a_culprit_key_that_is_not_utf8_is_quarantined_and_does_not_loop_the_restart(self):
        # A schedule id is any bytes. jansson refuses a string that is not UTF-8, so the watchdog
        # could not record the quarantine ("cannot record the quarantine"): after the restart the
        # schedule fired again, stalled again, and so on until 5 restarts ended herald.
        stall = 'string.find(string.rep("a", 3000), string.rep("a*", 8) .. "b")'
        h = self.start("""
            local teams = require "teams"
            teams.on_schedule("stall", function(ev) %s end)
            teams.on_message(function(ev)
              assert(teams.schedule { id = "bad\\255id", handler = "stall", every = 1 })
              ev:reply("scheduled")
            end)
        """ % stall, env={"HERALD_WATCHDOG_GRACE_MS": "300"}, listen=f"127.0.0.1:{free_port()}")
        pid = h.proc.pid
        try:
            h.post_activity(self.acts.message("a:attack", "schedule"), timeout=30)
        except (ConnectionError, OSError):
            pass                              # the first firing may stall the host first
        h.wait_log(r"schedule bad.id skipped: its handler stalled the host", timeout=30)
        time.sleep(tf(1.5))
        self.assertEqual(len(re.findall(r"watchdog: restarting herald", h.log)), 1, h.log[-3000:])
        self.assertNotIn("cannot record the quarantine", h.log)
        self.assertEqual(h.proc.pid, pid)
        with open(h.db + ".quarantine") as f:
            entries = [json.loads(line) for line in f if line.strip()]
        self.assertEqual([(e["kind"], e["key"]) for e in entries], [("schedule", "bad\\xFFid")])
        self.assert_alive(h, "a quarantined schedule")


if __name__ == "__main__":
    unittest.main()
