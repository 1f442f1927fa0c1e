"""test_durability.py — herald on a database it cannot always write (hardening issue items 9-11).

Disk full is real: the database lives on a small tmpfs mounted in a private mount namespace
(`unshare -m`), and the test fills it with a file until write() fails with ENOSPC, then deletes
the file. herald runs in that namespace through `nsenter -m`, so a restart sees the same files;
the test reaches them through /proc/<holder>/root. Mounting needs root (CAP_SYS_ADMIN), which CI
has; without it these cases are skipped with that reason, and the store's unit tests
(tests/unit/test_store_durable.c: a VFS shim returning SQLITE_FULL) still cover the logic.
"""
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import HERALD_BIN, Herald, HeraldTestCase, bot, require_binary, run_cli, tf

BOT = bot("durable_bot.lua")


def _can_mount():
    d = tempfile.mkdtemp(prefix="herald-nsprobe-")
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            'mount -t tmpfs -o size=1m tmpfs "$0" && touch "$0/x"', d],
                           capture_output=True, timeout=10)
        return r.returncode == 0, r.stderr.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    finally:
        shutil.rmtree(d, ignore_errors=True)


CAN_MOUNT, MOUNT_WHY = _can_mount()


class Namespace:
    """A private mount namespace kept alive by a sleeping process, with a tmpfs of size_mb at
    self.dir (and optionally the directory re-mounted read-only)."""

    def __init__(self, size_mb=8):
        self.dir = tempfile.mkdtemp(prefix="herald-tmpfs-")
        script = 'mount -t tmpfs -o size=%dm tmpfs "$0" && echo ready && exec sleep 100000' % size_mb
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                      script, self.dir], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise AssertionError(f"tmpfs namespace did not start: {self.proc.stderr.read()!r}")

    def path(self, name=""):
        """name inside the tmpfs, as this (outer) process reaches it."""
        return os.path.join(f"/proc/{self.proc.pid}/root", self.dir.lstrip("/"), name)

    def inner(self, name=""):
        """name inside the tmpfs, as processes in the namespace see it."""
        return os.path.join(self.dir, name)

    def run(self, *cmd):
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "--"] + list(cmd),
                              capture_output=True, timeout=20)

    def query(self, db, sql):
        """One integer from a read-only query run inside the namespace (SQLite resolves the
        /proc/<pid>/root link to the outer file system, so it cannot open the file from here)."""
        code = ("import sqlite3,sys; db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True);"
                " print(db.execute(sys.argv[2]).fetchone()[0])")
        r = self.run(sys.executable, "-c", code, db, sql)
        if r.returncode != 0:
            raise AssertionError(f"query {sql!r}: {r.stderr.decode(errors='replace')}")
        return int(r.stdout.decode().strip())

    def fill(self):
        """Fills the tmpfs until write() fails with ENOSPC; returns the bytes written."""
        total = 0
        with open(self.path("filler"), "wb", buffering=0) as f:
            for chunk in (1 << 20, 4096, 512, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        f.write(block)
                        total += chunk
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        return total

    def free(self):
        os.unlink(self.path("filler"))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class NsHerald(Herald):
    """A herald started inside a Namespace (its database there)."""

    def __init__(self, ns, script, **kw):
        super().__init__(script, db=ns.inner("h.db"), **kw)
        self.ns = ns

    def command(self):
        return ["nsenter", "-t", str(self.ns.proc.pid), "-m", "--"] + super().command()


def health(h):
    st, body = h.healthz()
    assert st == 200, body
    return json.loads(body)


def wait_health(h, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        j = health(h)
        if pred(j):
            return j
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz never showed {what} within {timeout}s: {j}\n"
                                 f"log tail:\n{h.log[-2500:]}")
        time.sleep(0.05)


class DurabilityBase(HeraldTestCase):
    ENV = {"HERALD_GOVERNOR": "off", "HERALD_OUTBOX_MAX_ATTEMPTS": "3",
           "HERALD_RETRY_BASE_MS": "100", "HERALD_RESPONSE_DEADLINE_MS": "300"}

    def setUp(self):
        super().setUp()
        self._namespaces = []

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            for ns in self._namespaces:
                ns.close()

    def namespace(self, size_mb=8):
        ns = Namespace(size_mb)
        self._namespaces.append(ns)
        return ns

    def ns_herald(self, ns, env=None):
        h = NsHerald(ns, BOT, env={**self.ENV, **(env or {})})
        self._heralds.append(h)
        h.start()
        return h

    def invoke(self, h, name, value):
        st, body = h.post_activity(self.acts.invoke("a:control", name, value))
        return st, (json.loads(body) if body else None)

    def sent_texts(self, prefix):
        """Texts of the new messages the fake accepted whose text starts with prefix."""
        out = []
        for r in self.fc.snapshot():
            j = r.get("json") or {}
            t = j.get("text") if isinstance(j, dict) else None
            if r["method"] == "POST" and r["status"] == 201 and t and t.startswith(prefix):
                out.append((t, r["time"]))
        return out


@require_binary
@unittest.skipUnless(CAN_MOUNT, f"cannot mount a tmpfs in a private mount namespace: {MOUNT_WHY}")
class DiskFullTest(DurabilityBase):

    def test_disk_full_refuses_new_work_keeps_what_was_accepted_and_recovers(self):
        ns = self.namespace(8)
        h = self.ns_herald(ns)
        # two senders running across the failure: A fire-and-forget, B waiting for each send
        self.post_ok(h, self.acts.message("a:control", "trickle A 0.03"))
        self.post_ok(h, self.acts.message("a:control", "trickle B 0.05 wait"))
        self.fc.wait_until(lambda r: len(self.sent_texts("A ")) >= 10 and len(self.sent_texts("B ")) >= 5,
                           20, "the trickles to run")

        ns.fill()
        j = wait_health(h, lambda j: not j.get("store", {}).get("writable", True), tf(10), "the store degraded")
        self.assertEqual(j["status"], "degraded")
        self.assertIn("full", j["store"]["last_error"])
        self.assertGreaterEqual(j["store"]["failures"], 1)

        # while full: activities are refused with 503 (not run: no reply, not stored) and answered
        # promptly; nothing new reaches Teams
        time.sleep(tf(1))
        quiet_from = time.monotonic()
        during = [self.acts.message(f"a:new-{i}", f"hello {i}") for i in range(8)]
        for a in during:
            t0 = time.monotonic()
            st, body = h.post_activity(a)
            self.assertEqual(st, 503, body)
            self.assertIn("storage unavailable", body)
            self.assertLess(time.monotonic() - t0, tf(2))
        time.sleep(tf(1.5))
        quiet_to = time.monotonic()
        during_failure = [r for r in self.fc.snapshot() if quiet_from < r["time"] < quiet_to]
        self.assertEqual(during_failure, [], "requests reached Teams while the store could not "
                                             "record them")
        self.assertFalse(health(h)["store"]["writable"])

        ns.free()
        j = wait_health(h, lambda j: j.get("store", {}).get("writable"), tf(10), "the store writable again")
        self.assertEqual(j["status"], "ok")
        self.assertIsNone(j["store"]["last_error"])
        h.wait_log(r"store: writable again after \d+ ms", 5)

        # Teams sends the refused activities again: each runs once now, and is stored
        for a in during:
            self.post_ok(h, a)
        self.fc.wait_until(lambda r: len(self.sent_texts("echo: hello")) >= len(during), 15,
                           "the echo of every redelivered activity")
        for a in during:                 # a second redelivery is acknowledged, not run
            self.post_ok(h, a)

        # stop the senders once they sent a few more, then account for every message
        n_a, n_b = len(self.sent_texts("A ")), len(self.sent_texts("B "))
        self.fc.wait_until(lambda r: len(self.sent_texts("A ")) >= n_a + 5 and
                           len(self.sent_texts("B ")) >= n_b + 3, tf(20), "the senders to go on")
        results = {}
        for tag in ("A", "B"):
            st, _ = self.invoke(h, "stop", {"tag": tag})
            self.assertEqual(st, 200)
        for tag in ("A", "B"):
            deadline = time.monotonic() + tf(20)
            while True:
                st, rep = self.invoke(h, "report", {"tag": tag})
                self.assertEqual(st, 200, rep)
                if rep["done"]:
                    break
                self.assertLess(time.monotonic(), deadline, f"trickle {tag} did not stop")
                time.sleep(0.1)
            results[tag] = rep["results"]

        def settled():
            ok = {t: {i for i, r in results[t].items() if r.get("ok") is not None} for t in results}
            got = {t: [x for x, _ in self.sent_texts(t + " ")] for t in results}
            return all(len(got[t]) >= len(ok[t]) for t in results) and (ok, got)
        ok, got = self.fc.wait_until(lambda r: settled(), 20, "every accepted send delivered")
        time.sleep(tf(0.5))
        got = {t: [x for x, _ in self.sent_texts(t + " ")] for t in results}
        for tag in ("A", "B"):
            refused = {i for i, r in results[tag].items() if r.get("ok") is None}
            codes = {r.get("code") for i, r in results[tag].items() if r.get("ok") is None}
            self.assertLessEqual(codes, {"store"}, results[tag])
            want = sorted(f"{tag} {i}" for i in ok[tag])
            # exactly once: every send the script was given an id for, nothing else
            self.assertEqual(sorted(got[tag]), want,
                             f"{tag}: delivered vs accepted differ; refused: {sorted(refused)}")
        refused_a = [i for i, r in results["A"].items() if r.get("ok") is None]
        self.assertGreater(len(refused_a), 0, "no send met the full disk: the test proved nothing")

        # the conversations that arrived during the failure are stored
        self.assertEqual(ns.query(ns.inner("h.db"), "SELECT count(*) FROM conversations"
                                                    " WHERE id LIKE 'a:new-%'"), len(during))
        self.assertEqual(ns.query(ns.inner("h.db"), "SELECT count(*) FROM outbox"
                                                    " WHERE state = 'queued'"), 0)
        echoes = [x for x, _ in self.sent_texts("echo: hello")]
        self.assertEqual(sorted(echoes), sorted(f"echo: hello {i}" for i in range(len(during))))

        # a restart sends nothing again: every outcome was recorded
        before = len(self.fc.snapshot())
        h.stop()
        h2 = self.ns_herald(ns)
        time.sleep(tf(1.5))
        self.assertEqual(len(self.fc.snapshot()), before, self.fc.summary()[before:])
        self.assertNotIn("resuming", h2.log)
        h2.stop()

    def test_stopped_while_full_repeats_at_most_the_attempts_in_flight(self):
        ns = self.namespace(8)
        env = {"HERALD_SHUTDOWN_GRACE_MS": "300", "HERALD_OUTBOX_MAX_IN_FLIGHT": "2"}
        h = self.ns_herald(ns, env)
        self.post_ok(h, self.acts.message("a:control", "trickle S 0.01"))
        self.fc.wait_until(lambda r: len(self.sent_texts("S ")) >= 20, 20, "the trickle to run")
        ns.fill()
        wait_health(h, lambda j: not j.get("store", {}).get("writable", True), tf(10),
                    "the store degraded")
        h.terminate()
        self.assertEqual(h.wait_exit(30), 1, "a stop that loses kept writes must not exit 0")
        self.assertRegex(h.log, r"store: stopping with \d+ write\(s\) that could not be committed")
        h.assert_clean(expect_code=1)
        ns.free()
        h2 = self.ns_herald(ns, env)
        h2.wait_log(r"resuming \d+ queued operation|listening on", 5)
        time.sleep(tf(2))
        h2.stop()
        texts = [x for x, _ in self.sent_texts("S ")]
        repeated = {t for t in texts if texts.count(t) > 1}
        # only an attempt that was out when the commit failed can go twice: at most
        # HERALD_OUTBOX_MAX_IN_FLIGHT of them
        self.assertLessEqual(len(repeated), 2, sorted(repeated))

    def test_full_disk_at_start_is_refused(self):
        ns = self.namespace(4)
        h = self.ns_herald(ns)
        h.stop()
        os.unlink(ns.path("h.db-wal")) if os.path.exists(ns.path("h.db-wal")) else None
        ns.fill()
        h2 = NsHerald(ns, BOT, env=self.ENV)
        self._heralds.append(h2)
        with self.assertRaises(AssertionError) as cm:
            h2.start()
        self.assertIn("cannot open the database", str(cm.exception))
        self.assertIn("No space left on device", str(cm.exception))
        self.assertEqual(h2.exit_code, 1)


@require_binary
@unittest.skipUnless(CAN_MOUNT, f"cannot mount in a private mount namespace: {MOUNT_WHY}")
class StartChecksTest(DurabilityBase):

    def refused(self, ns):
        h = NsHerald(ns, BOT, env=self.ENV)
        self._heralds.append(h)
        with self.assertRaises(AssertionError) as cm:
            h.start()
        self.assertEqual(h.exit_code, 1)
        return str(cm.exception)

    def test_read_only_database_file_is_refused_at_start(self):
        ns = self.namespace(4)
        h = self.ns_herald(ns)
        h.stop()
        # root ignores file modes, so the file itself is bind-mounted read-only
        db = ns.inner("h.db")
        r = ns.run("sh", "-c", f'mount --bind "{db}" "{db}" && mount -o remount,bind,ro "{db}"')
        self.assertEqual(r.returncode, 0, r.stderr)
        msg = self.refused(ns)
        self.assertIn(f"store: {db} is read-only; herald needs to write it", msg)

    def test_read_only_directory_is_refused_at_start(self):
        ns = self.namespace(4)
        h = self.ns_herald(ns)
        h.stop()
        r = ns.run("mount", "-o", "remount,ro", ns.inner())
        self.assertEqual(r.returncode, 0, r.stderr)
        msg = self.refused(ns)
        self.assertIn("Read-only file system", msg)


@require_binary
class CorruptionTest(DurabilityBase):

    def test_corrupted_database_is_refused_at_start(self):
        h = self.start_herald(BOT, env=self.ENV)
        h.stop()
        with sqlite3.connect(h.db) as db:       # past 1 MB, for the size limit below
            db.execute("CREATE TABLE ballast (b)")
            db.execute("INSERT INTO ballast VALUES (zeroblob(1500000))")
        h = self.start_herald(BOT, env=self.ENV, db=h.db)
        for i in range(40):
            self.post_ok(h, self.acts.message(f"a:c-{i}", "x" * 2000))
        h.stop()
        size = os.path.getsize(h.db)
        self.assertGreater(size, 1 << 20)
        with open(h.db, "r+b") as f:          # garbage over herald's newest pages, at the end
            f.seek(size - 24 * 4096)
            f.write(b"\xa5" * (20 * 4096))
        h2 = Herald(BOT, env=self.ENV, db=h.db)
        self._heralds.append(h2)
        with self.assertRaises(AssertionError) as cm:
            h2.start()
        self.assertIn(f"store: {h.db} is corrupted", str(cm.exception))
        self.assertEqual(h2.exit_code, 1)
        # the check is bounded by size: past HERALD_DB_CHECK_MAX_MB it does not run (herald may
        # still trip over the damage later, but not in quick_check)
        h3 = Herald(BOT, env={**self.ENV, "HERALD_DB_CHECK_MAX_MB": "1"}, db=h.db)
        self._heralds.append(h3)
        try:
            h3.start()
            h3.kill()
        except AssertionError as e:
            self.assertNotIn("quick_check", str(e))
        h3.exit_code = 0


@require_binary
class BusyLockTest(DurabilityBase):
    """Another process holds the write lock for a while (an operator's sqlite3 shell): the loop
    never waits for it."""

    def test_held_lock_never_stalls_the_loop_and_nothing_is_lost(self):
        h = self.start_herald(BOT, env=self.ENV)
        self.post_ok(h, self.acts.message("a:control", "trickle L 0.05"))
        self.fc.wait_until(lambda r: len(self.sent_texts("L ")) >= 3, 15, "the trickle to run")

        hold_s = tf(4)
        locked = threading.Event()
        release = threading.Event()

        def holder():
            db = sqlite3.connect(h.db, isolation_level=None, timeout=30)
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(hold_s + tf(30))
            db.execute("ROLLBACK")
            db.close()

        th = threading.Thread(target=holder, daemon=True)
        th.start()
        self.assertTrue(locked.wait(tf(10)))
        t_locked = time.monotonic()
        j = wait_health(h, lambda j: not j.get("store", {}).get("writable", True), tf(5), "the lock noticed")
        self.assertIn("locked", j["store"]["last_error"])
        worst = 0.0
        refused = []
        while time.monotonic() - t_locked < hold_s:
            t0 = time.monotonic()
            health(h)
            worst = max(worst, time.monotonic() - t0)
            a = self.acts.message(f"a:busy-{len(refused)}", "during the lock")
            t0 = time.monotonic()
            st, body = h.post_activity(a)
            worst = max(worst, time.monotonic() - t0)
            self.assertIn(st, (200, 503), body)
            if st == 503:
                refused.append(a)
            time.sleep(0.2)
        self.assertLess(worst, tf(1.0), "a request waited for the lock")
        self.assertGreater(len(refused), 0)
        release.set()
        th.join(tf(10))
        wait_health(h, lambda j: j.get("store", {}).get("writable"), tf(10), "the store writable again")
        for a in refused:                         # Teams' retries
            self.post_ok(h, a)
        self.fc.wait_until(lambda r: len(self.sent_texts("echo: during the lock")) >= len(refused),
                           15, "the refused activities to run once retried")
        st, _ = self.invoke(h, "stop", {"tag": "L"})
        self.assertEqual(st, 200)
        deadline = time.monotonic() + tf(15)
        while True:
            st, rep = self.invoke(h, "report", {"tag": "L"})
            if rep and rep.get("done"):
                break
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        ok = sorted(f"L {i}" for i, r in rep["results"].items() if r.get("ok") is not None)
        self.fc.wait_until(lambda r: len(self.sent_texts("L ")) >= len(ok), 15, "all sends")
        time.sleep(tf(0.3))
        self.assertEqual(sorted(x for x, _ in self.sent_texts("L ")), ok)
        echoes = [x for x, _ in self.sent_texts("echo: during the lock")]
        self.assertEqual(len(echoes), len(refused))


@require_binary
class SecondProcessTest(DurabilityBase):

    def test_second_herald_on_the_same_database_is_refused_and_reports_still_work(self):
        h = self.start_herald(BOT, env=self.ENV)
        self.post_ok(h, self.acts.message("a:r-1", "hi"))
        self.fc.wait_for(1, 10)
        second = Herald(BOT, env=self.ENV, db=h.db)
        self._heralds.append(second)
        with self.assertRaises(AssertionError) as cm:
            second.start()
        self.assertEqual(second.exit_code, 1)
        pid = h.proc.pid
        self.assertIn(f"another herald (pid {pid}) is running on {h.db}", str(cm.exception))
        # the lock file names the holder, and is not inherited by anything the process runs
        with open(h.db + ".lock") as f:
            self.assertEqual(f.read().strip(), str(pid))
        fds = [fd for fd in os.listdir(f"/proc/{pid}/fd")
               if os.readlink(f"/proc/{pid}/fd/{fd}") == os.path.realpath(h.db + ".lock")]
        self.assertEqual(len(fds), 1)
        with open(f"/proc/{pid}/fdinfo/{fds[0]}") as f:
            flags = int(next(l for l in f if l.startswith("flags:")).split()[1], 8)
        self.assertTrue(flags & 0o2000000, "the lock fd is not close-on-exec")
        # a second herald with an admin socket of its own is refused by the database's lock
        rc, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--db", h.db,
                                "--admin-socket", h.db + ".other.sock", BOT], timeout=20)
        self.assertEqual(rc, 1, err)
        self.assertIn(f"another herald (pid {pid}) is running on {h.db}", err)
        self.assertFalse(os.path.exists(h.db + ".other.sock"))
        for args in (["outbox", "--json"], ["blocked", "--json"], ["deliveries", "--json"],
                     ["schedules", "--json"], ["broadcast", "list"]):
            rc, out, err = run_cli(args + ["--db", h.db], timeout=20)
            self.assertEqual(rc, 0, f"herald {' '.join(args)}: {err}")
        self.assertTrue(h.alive())
        h.stop()
        # once it is gone, the next one starts
        third = Herald(BOT, env=self.ENV, db=h.db)
        self._heralds.append(third)
        third.start()
        third.stop()


if __name__ == "__main__":
    unittest.main()
