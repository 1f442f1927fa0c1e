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

from harness import HeraldTestCase, require_binary, tf


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


if __name__ == "__main__":
    unittest.main()
