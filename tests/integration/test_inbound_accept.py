"""test_inbound_accept.py — when an activity counts as accepted (hardening issue items 12 and 8).

An activity refused with 503 must run when Teams sends it again: its id is recorded as seen only
once it is stored and its handler started. Service URLs are checked where they enter, dev mode
included: http and https only.
"""
import json
import sqlite3
import threading
import time

from harness import Herald, HeraldTestCase, bot, require_binary, tf

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
        "https://s}ba.trafficmanager.net/amer/": "serviceUrl is not a URL libcurl accepts (a malformed host?)",
    }

    def test_only_http_and_https_service_urls_are_accepted_in_dev_mode(self):
        h = self.start_herald(BOT)
        for i, (url, reason) in enumerate(self.BAD.items()):
            with self.subTest(url=url):
                a = self.acts.message(f"a:bad-{i}", "x")
                a["serviceUrl"] = url
                st, body = h.post_activity(a)
                self.assertEqual(st, 400, body)
                self.assertEqual(json.loads(body), {"error": reason, "field": "serviceUrl"})
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


@require_binary
class AnswerWhileDegradedTest(HeraldTestCase):
    """An answer whose handler wrote into a batch that then failed to commit waits until the store
    has recovered and replayed those writes: a kill -9 before that loses them, so the caller must
    not have heard "done". Found by the fault suite (jepsen.py, JEPSEN_DISK=shim, seeds 13 and 32:
    fire-and-forget sends whose operation ids a notify answer had reported never went out after a
    kill -9 while the disk was full). The full disk is the LD_PRELOAD shim's (tests/fault_shim.c):
    the next write to the database fails, which is the commit of the notify's own batch."""

    def setUp(self):
        super().setUp()
        import jepsen
        self.jepsen = jepsen
        self.storage = jepsen.Storage(disk="shim")
        self.url = self.fc.url + "/t/tx/"

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.storage.close()

    def herald(self):
        h = Herald(self.jepsen.BOT, db=self.storage.db,
                   env={**self.jepsen.ENV, **self.storage.env(), "HERALD_SHUTDOWN_GRACE_MS": "500"})
        self._heralds.append(h)
        h.start()
        return h

    def send_async(self, h, tag, n=5):
        """POST /api/notify/ctl sending "m a:<tag>-i 1" fire-and-forget, from a thread; the box
        gets (status, body) or the exception."""
        box = []
        body = json.dumps({"cmd": "send", "items": [[f"a:{tag}-{i}", self.url, 1] for i in range(n)]})

        def run():
            try:
                st, text, _ = h.request("POST", "/api/notify/ctl", body.encode(), timeout=tf(60))
                box.append((st, text))
            except OSError as e:
                box.append(e)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th, box

    def wait_writable(self, h, want):
        deadline = time.monotonic() + tf(15)
        while json.loads(h.healthz()[1])["store"]["writable"] != want:
            self.assertLess(time.monotonic(), deadline, f"/healthz store writable never {want}")
            time.sleep(0.02)

    def delivered(self, tag):
        return {(r.get("json") or {}).get("text") for r in self.fc.snapshot()
                if r["method"] == "POST" and r["status"] == 201 and r["conversation_id"].startswith(f"a:{tag}-")}

    def test_answer_waits_for_the_replay_of_a_failed_commit(self):
        # killed while degraded: whatever the caller heard must still go out after the restart
        h = self.herald()
        self.storage.set_full(True)
        th, box = self.send_async(h, "k")
        self.wait_writable(h, False)
        th.join(tf(1))                       # an answer given at the failed commit is here by now
        h.proc.kill()
        h.wait_exit(tf(10))
        th.join(tf(10))
        self.storage.set_full(False)
        h2 = self.herald()
        answered = box and isinstance(box[0], tuple) and box[0][0] == 200
        if answered:
            ops = [op for op, _ in json.loads(box[0][1])["r"] if op]
            want = {f"m a:k-{i} 1" for i in range(len(ops))}
            deadline = time.monotonic() + tf(10)
            while not want <= self.delivered("k") and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(self.delivered("k"), want, "the answer reported operations that were lost")
        self.assertFalse(answered, f"answered while its batch was not committed: {box}")

        # the store recovers by itself: the parked answer goes then, and its sends go out
        self.storage.set_full(True)
        th, box = self.send_async(h2, "r")
        self.wait_writable(h2, False)
        self.assertEqual(box, [], "answered while degraded")
        self.storage.set_full(False)
        th.join(tf(15))
        self.assertEqual(box[0][0], 200, box)
        self.assertEqual(len([op for op, _ in json.loads(box[0][1])["r"] if op]), 5, box)
        self.fc.wait_until(lambda r: len(self.delivered("r")) == 5, tf(15), "the 5 sends of the answer")

        # stopped while degraded: the writes go with the process (exit 1), and the caller never
        # hears "done" (503, or the connection closes at exit)
        self.storage.set_full(True)
        th, box = self.send_async(h2, "s")
        self.wait_writable(h2, False)
        h2.terminate()
        self.assertEqual(h2.wait_exit(tf(30)), 1, h2.log[-2000:])
        h2.assert_clean(expect_code=1)
        th.join(tf(10))
        self.assertTrue(isinstance(box[0], OSError) or box[0][0] == 503, box)
        self.storage.set_full(False)


@require_binary
class ScriptOutOfMemoryTest(HeraldTestCase):
    """Issue 13: the script's copy of an accepted activity is built before anything is written, so
    a script at its memory cap refuses the activity with 503 and stores nothing of it (a stored
    install signal whose hook never ran would make Teams' redelivery look like a second install);
    the same install without the bulk then runs its hook once."""

    def test_activity_too_big_for_the_script_gets_503_and_is_not_stored(self):
        h = self.start_herald(bot("main_bot.lua"),
                              env={"HERALD_LUA_MEMORY_MB": "4", "HERALD_MAX_BODY_BYTES": str(16 << 20)})
        a = self.acts.personal_install("a:oom")[0]
        big = dict(a, entities=[{"type": "junk", "i": i, "s": "abcdefgh"} for i in range(60000)])
        st, body = h.post_activity(big)
        self.assertEqual(st, 503, body)
        self.assertEqual(json.loads(body), {"error": "out of memory"})
        self.post_ok(h, a)
        self.wait_requests(1)
        self.assert_no_more(1)
        h.stop()
        db = sqlite3.connect(h.db)
        rows = db.execute("SELECT id, installed FROM conversations").fetchall()
        db.close()
        self.assertEqual(rows, [("a:oom", 1)])
