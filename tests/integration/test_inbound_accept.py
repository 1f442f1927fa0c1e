"""test_inbound_accept.py — when an activity counts as accepted (hardening issue items 12 and 8).

An activity refused with 503 must run when Teams sends it again: its id is recorded as seen only
once it is stored and its handler started. Service URLs are checked where they enter, dev mode
included: http and https only.
"""
import json
import sqlite3
import time

from harness import HeraldTestCase, bot, require_binary, tf

BOT = bot("durable_bot.lua")


@require_binary
class RedeliveryAfterRefusalTest(HeraldTestCase):

    def echoes(self, text):
        return [r for r in self.fc.snapshot()
                if r["method"] == "POST" and (r.get("json") or {}).get("text") == "echo: " + text]

    def test_redelivery_after_503_runs_once(self):
        h = self.start_herald(BOT, env={"HERALD_MAX_TASKS": "1", "HERALD_RESPONSE_DEADLINE_MS": "200"})
        # the one task slot is busy until the test lets its reply through
        gate = self.fc.hold(method="POST")
        self.post_ok(h, self.acts.message("a:hold", "hold 0"))
        gate.wait_held(1)
        m = self.acts.message("a:m", "hello once")
        st, body = h.post_activity(m)
        self.assertEqual(st, 503, body)
        self.assertIn("too busy", body)
        gate.release()
        deadline = time.monotonic() + tf(15)
        while json.loads(h.healthz()[1])["tasks"] > 0:
            self.assertLess(time.monotonic(), deadline, "the holding task never ended")
            time.sleep(0.05)
        # Teams' retry of the refused activity (same id) runs it
        self.post_ok(h, m)
        self.fc.wait_until(lambda r: self.echoes("hello once"), 10, "the retried activity's echo")
        # and a redelivery of the accepted one does not run it again
        self.post_ok(h, m)
        time.sleep(tf(0.5))
        self.assertEqual(len(self.echoes("hello once")), 1)
        health = json.loads(h.healthz()[1])
        self.assertEqual(health["redelivered"], 1)


@require_binary
class ServiceUrlTest(HeraldTestCase):

    BAD = {
        "file:///etc/passwd": "serviceUrl must be an http or https URL",
        "javascript:alert(1)": "serviceUrl must be an http or https URL",
        "ftp://files.example/": "serviceUrl must be an http or https URL",
        "notaurl": "serviceUrl must be an http or https URL",
        "//smba.trafficmanager.net/amer/": "serviceUrl must be an http or https URL",
        "https://": "serviceUrl has no host",
        "https:///amer/": "serviceUrl has no host",
        "http://:80/": "serviceUrl has no host",
        "https://user:pw@smba.trafficmanager.net/": "serviceUrl must not carry credentials",
        "https://smba.trafficmanager.net:x443/": "serviceUrl has a malformed port",
        "https://[::1/": "serviceUrl has a malformed host",
        "https://smba.traffic manager.net/": "serviceUrl contains spaces or control characters",
        "https://smba.trafficmanager.net/\n": "serviceUrl contains spaces or control characters",
    }

    def test_only_http_and_https_service_urls_are_accepted_in_dev_mode(self):
        h = self.start_herald(BOT)
        for i, (url, reason) in enumerate(self.BAD.items()):
            with self.subTest(url=url):
                a = self.acts.message(f"a:bad-{i}", "x")
                a["serviceUrl"] = url
                st, body = h.post_activity(a)
                self.assertEqual(st, 400, body)
                self.assertEqual(json.loads(body), {"error": reason})
        good = ["https://smba.trafficmanager.net/amer/", "HTTPS://SMBA.trafficmanager.net",
                "http://127.0.0.1:1/x", "https://[::1]:8443/p?q#f", self.fc.url + self.PREFIX]
        for i, url in enumerate(good):
            with self.subTest(url=url):
                a = self.acts.message(f"a:good-{i}", "quiet")
                a["serviceUrl"] = url
                st, body = h.post_activity(a)
                self.assertEqual(st, 200, body)
        h.stop()
        with sqlite3.connect(f"file:{h.db}?mode=ro", uri=True) as db:
            ids = {r[0] for r in db.execute("SELECT id FROM conversations")}
        self.assertEqual(ids, {f"a:good-{i}" for i in range(len(good))})


@require_binary
class AnswerAfterCommitTest(HeraldTestCase):
    """An answer means "done": what the handler wrote is committed before the caller hears it, so a
    kill -9 the moment the answer arrives loses nothing. HERALD_TEST_COMMIT_DELAY_MS (ASan build
    only) holds every group commit, which opens the window an answer sent too early would fall in."""

    N = 20

    def test_kill_right_after_the_answer_loses_no_send(self):
        h = self.start_herald(bot("outbox_bot.lua"), env={"HERALD_TEST_COMMIT_DELAY_MS": "400",
                                                          "HERALD_RESPONSE_DEADLINE_MS": "60000"})
        value = {"cmd": "blast", "n": self.N, "m": 4, "tag": "k", "wait": False}
        st, body = h.post_activity(self.acts.invoke("a:ctl", "outbox", value), timeout=30)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body).get("ops"), self.N, body)
        h.proc.kill()                      # at once: the answer is all the caller knows
        h.wait_exit(10)
        h2 = self.start_herald(bot("outbox_bot.lua"), db=h.db)
        want = {f"k {i} {i % 4}" for i in range(self.N)}

        def delivered(reqs):
            got = {(r.get("json") or {}).get("text") for r in reqs if r["method"] == "POST"}
            return want <= got
        self.fc.wait_until(delivered, 20, f"all {self.N} sends the answer reported")
        h2.stop()
