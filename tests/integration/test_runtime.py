"""Handler timing, handler errors and graceful shutdown (API_DRAFT.md: HTTP, SIGTERM, handler errors)."""
import os
import re
import time
import unittest

from harness import HeraldTestCase, bot, line_of, require_binary, tf

MAIN = bot("main_bot.lua")


@require_binary
class RuntimeTest(HeraldTestCase):
    def test_slow_handler_answers_at_deadline_and_still_replies(self):
        h = self.start_herald(MAIN, env={"HERALD_RESPONSE_DEADLINE_MS": "300"})
        a = self.acts.message("a:slow", "sleep 3")
        t0 = time.monotonic()
        st, body = h.post_activity(a)
        elapsed = time.monotonic() - t0
        self.assertEqual(st, 200, body)
        # at the 300 ms deadline, well before the handler's 3 s sleep ends
        self.assertLess(elapsed, tf(2.0), f"response took {elapsed:.2f}s with a 300 ms deadline")
        req = self.wait_requests(1, timeout=15)[0]
        self.assertGreaterEqual(req["time"] - t0, 2.8)
        self.assertEqual(req["json"]["text"], "slept 3")
        self.assertEqual(req["json"]["replyToId"], a["id"])

    def test_fast_handler_answers_after_it_finishes(self):
        h = self.start_herald(MAIN)  # default deadline 4 s
        a = self.acts.message("a:fast", "sleep 0.5")
        t0 = time.monotonic()
        st, _ = h.post_activity(a)
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45, "answered before the handler finished")
        # the reply was sent by the handler before it finished, hence before the HTTP answer
        self.assertEqual(len(self.fc.snapshot()), 1, self.fc.summary())

    def test_handler_error_logged_with_file_and_line_and_host_keeps_serving(self):
        h = self.start_herald(MAIN)
        n = line_of(MAIN, "HANDLER_ERROR_LINE")
        st, _ = h.post_activity(self.acts.message("a:err", "boom"))
        self.assertLess(st, 600)
        m = h.wait_log(rf"main_bot\.lua:{n}: boom from handler")
        line = h.log[h.log.rfind("\n", 0, m.start()) + 1:h.log.find("\n", m.end())]
        self.assertRegex(line, r"(?i)\berror\b", f"handler error not logged at level error: {line!r}")
        self.assertIn("traceback", h.log.lower(), "no traceback logged for the handler error")
        self.assertEqual(self.fc.snapshot(), [])
        self.post_ok(h, self.acts.message("a:err", "after boom"))
        req = self.wait_requests(1)[0]
        self.assertEqual(req["json"]["text"], "echo: after boom")
        st, _ = h.healthz()
        self.assertEqual(st, 200)

    def test_sigterm_waits_for_in_flight_handler(self):
        h = self.start_herald(MAIN, env={"HERALD_RESPONSE_DEADLINE_MS": "200"})
        a = self.acts.message("a:term", "sleep 1.5")
        # the connector holds the handler's reply, so the handler is in flight at the SIGTERM
        gate = self.fc.hold(method="POST")
        st, _ = h.post_activity(a)
        self.assertEqual(st, 200)
        h.terminate()
        h.wait_log(r"SIGTERM received")
        gate.release()
        code = h.wait_exit(timeout=20)
        self.assertEqual(code, 0, h.log[-2000:])
        h.assert_clean(0)
        # herald waited for it (the grace is 10 s), and its reply went out
        self.assertIn("SIGTERM received: no new connections; finishing 1 task(s)", h.log)
        reqs = self.fc.snapshot()
        self.assertEqual(len(reqs), 1, f"in-flight reply lost at shutdown: {self.fc.summary()}")
        self.assertEqual(reqs[0]["json"]["text"], "slept 1.5")

    def test_sigterm_idle_exits_promptly(self):
        h = self.start_herald(MAIN)
        t0 = time.monotonic()
        h.terminate()
        self.assertEqual(h.wait_exit(timeout=10), 0, h.log[-2000:])
        self.assertLess(time.monotonic() - t0, tf(5), "idle, it waited as if for a handler")
        h.assert_clean(0)

    def test_sigint_also_graceful(self):
        import signal
        h = self.start_herald(MAIN)
        self.post_ok(h, self.acts.message("a:int", "hi"))
        self.wait_requests(1)
        h.terminate(signal.SIGINT)
        self.assertEqual(h.wait_exit(timeout=10), 0, h.log[-2000:])
        h.assert_clean(0)

    def test_redelivery_window_expires(self):
        window = max(2, round(tf(2)))
        h = self.start_herald(MAIN, env={"HERALD_REDELIVERY_WINDOW_S": str(window)})
        a = self.acts.message("a:window", "again", id="window-1")
        t0 = time.monotonic()
        self.post_ok(h, a)
        t1 = time.monotonic()                 # herald saw it between t0 and t1
        self.wait_requests(1)
        self.post_ok(h, a)
        inside = time.monotonic() - t0
        self.assertLess(inside, window, "the redelivery came after the window: nothing tested")
        self.assert_no_more(1, settle=0.3)
        time.sleep(max(0.0, window + 0.2 - (time.monotonic() - t1)))
        self.post_ok(h, a)
        self.wait_requests(2)

    def test_state_survives_restart(self):
        h = self.start_herald(MAIN)
        for a in self.acts.personal_install("a:persist"):
            self.post_ok(h, a)
        self.wait_requests(1)
        h.stop()
        h2 = self.start_herald(MAIN, db=h.db)
        self.fc.clear()
        self.post_ok(h2, self.acts.message("a:persist", "count"))
        req = self.wait_requests(1)[0]
        self.assertEqual(req["json"]["text"], "count=1 ids=a:persist")


@require_binary
class ConnectorTimeoutTest(HeraldTestCase):
    def test_slow_connector_gives_timeout(self):
        from harness import fake_connector  # noqa: F401
        h = self.start_herald(MAIN, env={"HERALD_CONNECTOR_TIMEOUT_MS": "500"})
        self.fc.inject("a:slow-target", None, delay=3)
        t0 = time.monotonic()
        self.post_ok(h, self.acts.message("a:ctl-timeout", "proberef a:slow-target"))
        reqs = self.fc.wait_until(lambda r: [x for x in r if x["conversation_id"] == "a:ctl-timeout"] or None,
                                  timeout=60, what="probe reply")
        self.assertEqual(reqs[0]["json"]["text"], "probe id=nil code=timeout")
        self.assertLess(time.monotonic() - t0, tf(30))


if __name__ == "__main__":
    unittest.main()
