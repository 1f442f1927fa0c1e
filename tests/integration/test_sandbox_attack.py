"""test_sandbox_attack.py — attacks on the sandbox, the CPU slice and the watchdog that need a bot of
their own (a top level that keeps something, two handlers that meet, a reload, a restart), each a
regression test for a hole it found: the host's threads resumed or closed by a script, C bindings
reading strings that only a metamethod held, finalizers reached through an event's metatable,
garbage-collector settings and tracebacks that stall the loop outside any slice, and quarantine keys
the watchdog could not record. The one-line probes are in test_sandbox_escape.py."""
import json
import os
import re
import signal
import socket
import tempfile
import textwrap
import threading
import time
import unittest

from harness import HeraldTestCase, bot, require_binary, tf


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
                                   timeout=timeout or tf(20))
        return st, (json.loads(body) if body else None)

    def start_probe_bot(self, env=None):
        e = {"HERALD_TASK_SLICE_MS": "200", "BOT_MARKER": os.path.join(self.dir, "ESCAPED")}
        e.update(env or {})
        return self.start_herald(bot("escape_probe.lua"), env=e)

    def probe(self, h, code, timeout=None):
        """Runs code in a handler of bots/escape_probe.lua; returns its JSON answer."""
        st, body = h.post_activity(self.acts.invoke("a:attack", "probe", {"code": code}),
                                   timeout=timeout or tf(20))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-3000:]}")
        return json.loads(body)

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
        h.wait_log(r"reload: generation 1 closed", timeout=tf(10))
        self.post_ok(h, self.acts.message("a:attack", "after"))
        self.wait_requests(1, timeout=tf(10))
        self.assert_alive(h, "resuming the main thread")

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


if __name__ == "__main__":
    unittest.main()
