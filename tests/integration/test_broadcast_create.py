"""test_broadcast_create.py — a broadcast is created whole or not at all (hardening issue, item 13):
herald killed while a broadcast of 5,000 or 13,000 recipients is being written, at exact points
(HERALD_TEST_CRASH_BROADCAST, compiled into the ASan build only: SIGKILL before the (N+1)-th
recipient or before the start) and once at a moment chosen by watching the database; after the
restart no job is left 'preparing', an interrupted one is 'abandoned' with its rows swept and
nothing of it sent, and the caller's retry (same key) gets one job that reaches every recipient
once. A message function that raises abandons the preparation at once; a key makes creation
idempotent."""
import collections
import json
import os
import signal
import sqlite3
import threading
import time
import unittest

from harness import require_binary, tf
from test_broadcast import BroadcastCase

CHUNK = 500        # recipients written per loop turn (lua/teams/init.lua)


def db_rows(path, sql, *args):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def jobs(path):
    """{id: (state, key, recipient rows)} of every broadcast in the database (key None before the
    schema had one, so the test also reads an old herald's database)."""
    has_key = any(c[1] == "key" for c in db_rows(path, "PRAGMA table_info(broadcasts)"))
    return {i: (st, k, n) for i, st, k, n in db_rows(
        path, f"SELECT id, state, {'key' if has_key else 'NULL'}, (SELECT count(*) FROM"
              " broadcast_recipients r WHERE r.broadcast_id = b.id) FROM broadcasts b")}


@require_binary
class BroadcastCreationTest(BroadcastCase):
    def trigger_and_die(self, h, **kw):
        """A broadcast whose creation kills herald: the caller gets no answer."""
        with self.assertRaises(OSError, msg="herald answered although it should have died"):
            self.ctl(h, cmd="broadcast", **kw)
        h.proc.wait(timeout=tf(20))
        h._close_files()
        h.exit_code = h.proc.returncode
        self.assertEqual(h.exit_code, -signal.SIGKILL, h.log[-2000:])

    def wait_swept(self, db, timeout=10):
        """Waits until no job is 'preparing' and no abandoned job has rows left; returns jobs()."""
        deadline = time.monotonic() + tf(timeout)
        while True:
            js = jobs(db)
            if all(st != "preparing" and (st != "abandoned" or n == 0) for st, _, n in js.values()):
                return js
            if time.monotonic() > deadline:
                self.fail(f"abandoned preparations not swept: {js}")
            time.sleep(0.05)

    def delivered_once(self, expected, allow_dups=0):
        """Every expected conversation got the message; returns the number of duplicates."""
        self.settle()
        got = collections.Counter(r["conversation_id"] for r in self.posts(lambda r: r["status"] == 201))
        self.assertEqual(set(got), expected)
        dups = sum(n - 1 for n in got.values())
        self.assertLessEqual(dups, allow_dups, self.extras())
        return dups

    def test_killed_at_exact_points_of_5000(self):
        n = 5000
        h = self.start()
        self.seed("tc", n, "a:tc-")
        h.stop()
        db = h.db
        # before anything committed, mid-chunk, at chunk boundaries, with every row but not started
        for point in (0, 1, CHUNK // 2, CHUNK, 2 * CHUNK + 7, n - 1, n):
            before = jobs(db)
            h = self.start(env={"HERALD_TEST_CRASH_BROADCAST": point}, db=db)
            self.trigger_and_die(h, to={"tenant": "tc"}, text="once", key="release-42")
            new = {i: j for i, j in jobs(db).items() if i not in before}
            # what the kill left: rows of whole turns only, never a started job
            self.assertTrue(all(st == "preparing" and k is None for st, k, _ in new.values()), new)
            rows = sum(r for _, _, r in new.values())
            self.assertEqual(rows, point - point % CHUNK if point < n else n, (point, new))
        self.assertEqual(self.fc.snapshot(), [], "a preparation sent something")

        h = self.start(db=db)
        js = self.wait_swept(db)
        self.assertEqual(collections.Counter(st for st, _, _ in js.values()),
                         {"abandoned": len(js)}, js)
        self.assertEqual(len(js), 4, js)     # points 0, 1 and 250 died before the first commit
        last = max(js)
        h.wait_log(r"broadcast %d abandoned: herald stopped while it was being prepared" % last)
        # the caller retries with the same key: one job, every recipient once
        bid = self.ctl(cmd="broadcast", to={"tenant": "tc"}, text="once", key="release-42")["id"]
        s = self.wait_state(bid, timeout=60)
        self.assertEqual((s["total"], s["sent"]), (n, n), s)
        self.delivered_once({f"a:tc-{i}" for i in range(n)})
        # and again: the key names the job that exists; nothing new is created or sent
        sent = len(self.fc.snapshot())
        self.assertEqual(self.ctl(cmd="broadcast", to={"tenant": "tc"}, text="once", key="release-42")["id"], bid)
        self.assertEqual(self.settle(settle=0.5), sent)
        js = jobs(db)
        self.assertEqual([st for st, k, _ in js.values() if k == "release-42"], ["done"], js)

    def test_killed_while_preparing_13000(self):
        n = 13000
        h = self.start()
        for t in ("ta", "tb"):
            self.seed(t, n // 2, f"a:{t}-")
        expected = {f"a:{t}-{i}" for t in ("ta", "tb") for i in range(n // 2)}

        # a real kill -9, sent the moment the database shows a preparation with rows (no key: the
        # test itself sees whether the job was started before the kill)
        answer = []
        th = threading.Thread(target=lambda: answer.append(self.try_ctl(h, cmd="broadcast",
                                                                        to={"scope": "personal"}, text="a")))
        th.start()
        deadline = time.monotonic() + tf(30)
        while not any(n_ > 0 for _, _, n_ in jobs(h.db).values()):
            self.assertLess(time.monotonic(), deadline, "no preparation seen")
            time.sleep(0.005)
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait()
        h._close_files()
        h.exit_code = -9
        th.join()
        (state, _, rows), = jobs(h.db).values()
        print(f"\n  kill -9 with the job {state}, {rows} of {n} recipients written", flush=True)

        h2 = self.start(db=h.db)
        js = self.wait_swept(h.db)
        if state == "preparing":
            self.assertEqual([st for st, _, _ in js.values()], ["abandoned"], js)
            self.assertEqual(self.fc.snapshot(), [])
            bid = self.ctl(h2, cmd="broadcast", to={"scope": "personal"}, text="a")["id"]
            dups = 0
        else:       # it had started: it goes on after the restart
            (bid,) = js
        s = self.wait_state(bid, timeout=90, h=h2)
        self.assertEqual((s["total"], s["sent"], s["pending"], s["queued"]), (n, n, 0, 0), s)
        self.delivered_once(expected, allow_dups=0 if state == "preparing" else 1000)

        # an exact point in the middle (every row of 13 turns written), then the retry by key
        self.fc.clear()
        h2.stop()
        h3 = self.start(env={"HERALD_TEST_CRASH_BROADCAST": n // 2}, db=h.db)
        self.trigger_and_die(h3, to={"scope": "personal"}, text="b", key="b")
        h4 = self.start(db=h.db)
        self.wait_swept(h.db)
        bid = self.ctl(h4, cmd="broadcast", to={"scope": "personal"}, text="b", key="b")["id"]
        s = self.wait_state(bid, timeout=90, h=h4)
        self.assertEqual((s["total"], s["sent"]), (n, n), s)
        self.delivered_once(expected)
        self.assertEqual(collections.Counter(st for st, _, _ in jobs(h.db).values()),
                         {"done": 2, "abandoned": 2 if state == "preparing" else 1})

    def try_ctl(self, h, **kw):
        try:
            st, text, _ = h.request("POST", "/api/notify/ctl", json.dumps(kw).encode(), timeout=120)
            return st, text
        except OSError as e:
            return e

    def test_a_raising_message_function_abandons_at_once(self):
        h = self.start()
        self.seed("te", 1200, "a:te-")
        # the error comes in the third chunk: two chunks are committed by then
        st, text, _ = h.request("POST", "/api/notify/ctl", json.dumps(
            {"cmd": "broadcast", "to": {"tenant": "te"}, "text": "x", "personal": True,
             "fail_at": 2 * CHUNK + 10}).encode(), timeout=60)
        self.assertEqual(st, 500, text)
        h.wait_log(r"broadcast \d+ abandoned after 1000 recipients: its creator went away")
        self.assertIn("no message for recipient 1010", h.log)
        js = self.wait_swept(h.db)
        self.assertEqual([st for st, _, _ in js.values()], ["abandoned"], js)
        self.settle(settle=0.5)
        self.assertEqual(self.fc.snapshot(), [])
        # the next one is whole
        bid = self.ctl(cmd="broadcast", to={"tenant": "te"}, text="y", personal=True)["id"]
        s = self.wait_state(bid, timeout=30)
        self.assertEqual((s["total"], s["sent"]), (1200, 1200), s)
        self.delivered_once({f"a:te-{i}" for i in range(1200)})

    def test_two_creations_under_one_key_make_one_job(self):
        h = self.start()
        self.seed("tk", 3000, "a:tk-")
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(self.try_ctl(
            h, cmd="broadcast", to={"tenant": "tk"}, text="k", key="same"))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ids = {json.loads(text)["id"] for st, text in answers}
        self.assertEqual(len(ids), 1, answers)
        s = self.wait_state(ids.pop(), timeout=60)
        self.assertEqual((s["total"], s["sent"]), (3000, 3000), s)
        self.delivered_once({f"a:tk-{i}" for i in range(3000)})
        js = self.wait_swept(h.db)
        states = collections.Counter(st for st, _, _ in js.values())
        # the second either found the key at once, or lost the race at its start and gave way
        self.assertIn(states, ({"done": 1}, {"done": 1, "abandoned": 1}), js)
        print(f"\n  two creations under one key: {dict(states)}", flush=True)

    def test_key_must_be_a_string(self):
        self.start()
        st, text, _ = self.h.request("POST", "/api/notify/ctl", json.dumps(
            {"cmd": "broadcast", "to": {"tenant": "none"}, "text": "x", "key": 7}).encode())
        self.assertEqual(st, 500, text)
        self.assertIn("teams.broadcast: 'key' must be a non-empty string", self.h.log)


if __name__ == "__main__":
    unittest.main()
