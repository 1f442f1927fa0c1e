#!/usr/bin/env python3
"""jepsen.py — herald's fault suite, in the manner of Jepsen: a seeded workload and a seeded plan
of faults against the real binary, then an account of every message at the fake connector (the
independent witness), checked against what herald accepted and against herald's own report.
test_jepsen.py runs it short under `make test`; `make soak` runs it for SOAK_MINUTES against
build/herald (python3 tests/integration/jepsen.py --minutes N [--seed S]).

Workload (bots/jepsen_bot.lua, driven through POST /api/notify/ctl):
  - sequenced sends: NM conversations (a:jm-*, tenants tA and tB), markers "m <conv> <seq>" with
    seq increasing per conversation, sent fire-and-forget in batches from two threads (each with its
    own conversations) that never stop while the faults happen;
  - a schedule firing every second that sends "s <conv> <due>" to a:js-0..2 (tenant tS);
  - broadcasts "b <key>" to the R seeded conversations of tenant tC, each under a key (a caller
    that got no answer retries with the same key).
Faults (the plan is a seeded shuffle; a soak repeats it):
  - 25 % of POSTs fail at random at the fake: 500, 503, RESET, ACCEPT_RESET (acted on, then the
    connection dropped: libcurl may send it again), ACCEPT_CLOSE, or slow answers;
  - 429 storms: every POST of one tenant answered 429 with Retry-After: 1 for 1 to 2.5 s;
  - kill -9 at random points (half of them while a ctl call is out), and at three chosen ones:
    while a broadcast is being created (HERALD_TEST_CRASH_BROADCAST in the ASan build; a short
    random delay after the call in a build without test hooks), while a schedule firing's sends are
    in flight (the fake holds one of them unanswered and the kill lands then), and while the disk
    is full; every restart is on the same database;
  - a full disk (a tmpfs in a private mount namespace, test_durability's, when mount works: real
    ENOSPC; else the LD_PRELOAD shim tests/fault_shim.c) that herald runs through and recovers
    from by itself (/healthz store writable again), and a failing fsync (the shim: EIO; with
    synchronous=NORMAL only checkpoints sync, so if none came within 4 s a graceful restart makes
    one at close);
  - a second herald started on the same database: refused, and the first goes on.
Account (after herald drained: /healthz outbox queued 0, in_flight 0, every broadcast done):
  - accepted: a marker whose send returned an operation id in an answered ctl call; refused: the
    send returned nil and a code, or the ctl call was answered 503; unknown: the call got no answer
    (a kill). Unknown markers may or may not arrive and are never counted lost.
  - lost: accepted, never answered 201 by the fake (also: a recipient of an accepted broadcast, or
    a schedule firing delivered to only some of its conversations). Must be 0.
  - phantom: refused, yet the fake has it. Must be 0.
  - reordered: within a conversation, markers sorted by the time of their first 201 must have
    increasing sequence numbers (m: seq, s: due). Must be 0.
  - duplicated: 201 copies beyond the first. herald explains a copy when the operation's own record
    (outbox_attempts) has an attempt after which Teams may hold the message: a network error or a
    timeout (the request may have arrived), or a re-send libcurl made. The rest is the crash window
    of a kill: attempts out (at most HERALD_OUTBOX_MAX_IN_FLIGHT, one per conversation) and attempts
    answered in the loop turn whose commit the kill prevented (they were out at the turn's start,
    so at most as many again; a next attempt of the same conversation can start in that turn
    before the commit, so two per conversation). WINDOW = 2 x HERALD_OUTBOX_MAX_IN_FLIGHT per kill.
    Checked: in all at most kills x WINDOW such copies, and per conversation at most two per kill,
    in both cases plus the copies the fake accepted and dropped (libcurl's re-send of one of those,
    during an attempt out at a kill, was never counted); and no operation has such copies all
    before the first kill. Which kill left an operation unrecorded is not always knowable (after the
    restart it may wait behind a backlog through more kills), so the operations per kill are
    printed, approximately, rather than checked.
  - herald's report agrees with the fake: `herald deliveries --json` has one sent operation per
    distinct marker the fake accepted and nothing in another state; each sent operation's result id
    is a 201 the fake gave for that very marker (for m markers: the operation id the send returned);
    no operation claims more attempts than the fake received; the re-sends it counted are no more
    than the connections the fake dropped; `herald outbox --json` says the same; the schedule's
    run count equals the firings the fake received; each broadcast's status counts every recipient.
Nothing here depends on speed: waits are outcomes bounded by tf(); kills land wherever they land,
and every assertion holds for every interleaving. The seed fixes the plan, the batches and the
fake's fault draws; thread timing is not reproducible, so a failure names its seed and prints the
evidence (markers, fake records, herald log tails) rather than relying on a replay.
"""
import argparse
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import HERALD_BIN, ROOT, Herald, base_env, bot, sanitizer_problems, tf  # noqa: E402
import fake_connector as fcm  # noqa: E402
# the tmpfs in a private mount namespace is test_durability's (one copy of it)
from test_durability import CAN_MOUNT, MOUNT_WHY, Namespace  # noqa: E402

BOT = bot("jepsen_bot.lua")
SHIM = os.path.join(ROOT, "build", "fault_shim.so")
MAX_IN_FLIGHT = 8
WINDOW = 2 * MAX_IN_FLIGHT      # operations a kill can leave sent but unrecorded (see the account)
SCHED_ID = "jepsen-tick"
SCHED_CONVS = [f"a:js-{k}" for k in range(3)]
CHOICES = (500, 503, fcm.RESET, fcm.ACCEPT_RESET, fcm.ACCEPT_CLOSE, (fcm.SLOW, 0.3))
STORE_ERROR = re.compile(r"disk is full|No space left|SQLITE_FULL|store: writes are failing|"
                         r"commit failed|disk I/O error")

ENV = {
    "HERALD_UNSAFE_LUA": "1",                 # the bot seeds broadcast recipients through herald.core
    "HERALD_RESPONSE_DEADLINE_MS": "60000",   # a ctl call answers with its result, not 202
    "HERALD_TASK_SLICE_MS": "10000",
    "HERALD_OUTBOX_MAX_ATTEMPTS": "1000",     # 25 % faults and storms never exhaust an operation
    "HERALD_RETRY_BASE_MS": "50",
    "HERALD_RETRY_MAX_MS": "1000",
    "HERALD_OUTBOX_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),   # the in-flight window, kept small
    "HERALD_TENANT_RPS": "300",
    "HERALD_CONNECTOR_TIMEOUT_MS": "10000",
    "HERALD_SHUTDOWN_GRACE_MS": "3000",
}


def has_test_hooks(binary=HERALD_BIN):
    """The ASan build has HERALD_TEST_CRASH_BROADCAST (-DHERALD_TEST_HOOKS); build/herald has not."""
    try:
        with open(binary, "rb") as f:
            return b"HERALD_TEST_CRASH_BROADCAST" in f.read()
    except OSError:
        return False


# ---- where the database lives, and how its disk fails -------------------------------------------

class Storage:
    """The database and its faults. A full disk is a real one (a tmpfs filled to the last byte)
    when this process may mount, else the shim's ENOSPC; a failing fsync is always the shim's EIO
    (a tmpfs never fails fsync). disk = "tmpfs" | "shim" | None (choose)."""

    def __init__(self, size_mb=64, disk=None):
        if not os.path.exists(SHIM):
            raise AssertionError(f"{SHIM} is missing: run make asan (or make {SHIM})")
        self.work = tempfile.mkdtemp(prefix="herald-jepsen-")
        self.control = os.path.join(self.work, "fault.control")
        self.fault_log = os.path.join(self.work, "fault.log")
        self.modes = set()
        self.ns = None
        disk = disk or os.environ.get("JEPSEN_DISK") or None
        ok, why = (CAN_MOUNT, MOUNT_WHY) if disk in (None, "tmpfs") else (False, "JEPSEN_DISK=shim")
        if disk == "tmpfs" and not ok:
            raise AssertionError(f"JEPSEN_DISK=tmpfs but no tmpfs can be mounted: {why}")
        if ok:
            self.ns = Namespace(size_mb)
            self.db = self.ns.inner("h.db")
            self.full_how = f"tmpfs of {size_mb} MB in a private mount namespace (real ENOSPC)"
        else:
            os.mkdir(os.path.join(self.work, "db"))
            self.db = os.path.join(self.work, "db", "h.db")
            self.full_how = f"LD_PRELOAD shim ENOSPC (no tmpfs: {why})"
        self.fsync_how = "LD_PRELOAD shim EIO on fsync/fdatasync"

    @property
    def disk(self):
        return "tmpfs" if self.ns else "shim"

    def prefix(self):
        return ["nsenter", "-t", str(self.ns.proc.pid), "-m", "--"] if self.ns else []

    def env(self):
        return {"LD_PRELOAD": SHIM, "HERALD_FAULT_PREFIX": self.db, "HERALD_FAULT_CONTROL": self.control,
                "HERALD_FAULT_LOG": self.fault_log,
                # the shim comes before the ASan runtime in the library list
                "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}

    def _write_control(self):
        if self.modes:
            with open(self.control + ".tmp", "w") as f:
                f.write(" ".join(sorted(self.modes)))
            os.replace(self.control + ".tmp", self.control)
        elif os.path.exists(self.control):
            os.unlink(self.control)

    def set_full(self, on):
        if self.ns:
            if on:
                self.filled = self.ns.fill()
            else:
                self.ns.free()
            return
        (self.modes.add if on else self.modes.discard)("full")
        self._write_control()

    def set_fsync(self, on):
        (self.modes.add if on else self.modes.discard)("fsync")
        self._write_control()

    def injected(self):
        """Calls the shim failed so far: {"full": n, "fsync": n}."""
        out = collections.Counter()
        try:
            with open(self.fault_log) as f:
                for line in f:
                    out[line.split(" ", 1)[0]] += 1
        except FileNotFoundError:
            pass
        return out

    def cli(self, *args, timeout=60):
        """Runs a herald report on the database (inside the namespace when there is one)."""
        p = subprocess.run(self.prefix() + [HERALD_BIN] + list(args) + ["--db", self.db],
                           capture_output=True, timeout=tf(timeout), env=base_env(), cwd=ROOT)
        if p.returncode != 0:
            raise AssertionError(f"herald {' '.join(args)} → {p.returncode}: {p.stderr.decode(errors='replace')}")
        return p.stdout.decode(errors="replace")

    def query(self, sql):
        """Rows of a read-only query on the database, run where the database is visible (SQLite
        resolves /proc/PID/root to the outer file system, so it cannot open the tmpfs from here)."""
        code = ("import json, sqlite3, sys; db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True);"
                " print(json.dumps(db.execute(sys.argv[2]).fetchall()))")
        p = subprocess.run(self.prefix() + [sys.executable, "-c", code, self.db, sql],
                           capture_output=True, timeout=tf(60))
        if p.returncode != 0:
            raise AssertionError(f"query {sql!r}: {p.stderr.decode(errors='replace')}")
        return json.loads(p.stdout)

    def close(self, keep=False):
        if self.ns and keep:                  # the database outlives its tmpfs, for a post-mortem
            for name in os.listdir(self.ns.path()):
                if name in ("h.db", "h.db-wal", "h.db-shm"):
                    shutil.copy(self.ns.path(name), self.work)
        if self.ns:
            self.ns.close()
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)


class JHerald(Herald):
    """A herald on the storage's database (through nsenter when it is on a tmpfs)."""

    def __init__(self, storage, env):
        super().__init__(BOT, env={**ENV, **storage.env(), **(env or {})}, db=storage.db)
        self.storage = storage

    def command(self):
        return self.storage.prefix() + super().command()


# ---- the fake's records -------------------------------------------------------------------------

def marker(rec):
    """("m", conv, seq) | ("s", conv, due) | ("b", conv, key) of a send recorded by the fake."""
    j = rec.get("json")
    t = j.get("text") if isinstance(j, dict) else None
    if rec["method"] != "POST" or not rec.get("conversation_id") or not isinstance(t, str):
        return None
    p = t.split()
    try:
        if len(p) == 3 and p[0] in ("m", "s"):
            return (p[0], p[1], int(p[2]))
        if len(p) == 2 and p[0] == "b":
            return ("b", rec["conversation_id"], p[1])
    except ValueError:
        pass
    return None


def result_id(rec):
    try:
        return json.loads(rec["response"]).get("id")
    except (ValueError, AttributeError, TypeError):
        return None


class Scenario:
    """One run: setup, the plan under load, drain, account. minutes=None is the short run."""

    def __init__(self, seed=None, minutes=None, out=sys.stderr, disk=None):
        self.seed = seed if seed is not None else int(os.environ.get("SEED") or random.randrange(1, 10**9))
        self.minutes = minutes
        self.short = minutes is None
        self.out = out
        self.rng = random.Random(self.seed)
        self.nm = 40 if self.short else 100            # sequenced conversations
        self.nr = 600 if self.short else 1000          # broadcast recipients (2 chunks of 500 short)
        self.disk = disk
        self.hooks = has_test_hooks()
        self.lock = threading.Lock()
        self.current = None                            # the herald serving now
        self.incarnations = []
        self.kills = []                                # (monotonic time, why)
        self.events = []                               # what the plan did, for the summary
        self.seq = collections.Counter()
        self.accepted = {}                             # marker → op id
        self.answered_at = {}                          # marker → when its batch was answered
        self.refused = {}                              # marker → code
        self.unknown = set()
        self.unsent = set()                            # the ctl call could not even connect
        self.batches = collections.Counter()
        self.broadcasts = {}                           # key → job id
        self.creation_kills = []
        self.firing_kills = 0
        self.seconds = []                              # what each second herald did
        self.store_errors_seen = collections.Counter()   # store errors herald logged / fsyncs failed
        self.failures = []
        self.phases = []                               # [what, from, to] (monotonic)

    # ---- output -------------------------------------------------------------------------------
    def say(self, msg):
        print(f"  [jepsen {time.monotonic() - self.t0:6.1f}s] {msg}", file=self.out, flush=True)

    # ---- herald -------------------------------------------------------------------------------
    def start(self, env=None):
        h = JHerald(self.storage, env)
        self.incarnations.append(h)
        h.start(timeout=tf(60))
        with self.lock:
            self.current = h
        return h

    def kill(self, why, restart=True, env=None):
        with self.lock:
            h = self.current
            self.current = None
        t = time.monotonic()
        h.proc.send_signal(signal.SIGKILL)
        self._reap(h, -signal.SIGKILL)
        self.kills.append((t, why))
        self.say(f"kill -9 #{len(self.kills)} ({why})")
        if restart:
            self.start(env)

    def restart_gracefully(self, why):
        """SIGTERM (exit 0, sanitizer-clean), then a new herald on the same database."""
        with self.lock:
            h = self.current
            self.current = None
        h.stop(timeout=tf(60))
        self.say(f"SIGTERM and restart ({why})")
        self.start()

    @staticmethod
    def _reap(h, code):
        h.proc.wait(timeout=tf(30))
        h.exit_code = h.proc.returncode
        h._close_files()
        h.assert_clean(expect_code=code)

    def ctl(self, payload, h=None, timeout=60):
        """POST /api/notify/ctl → (status, decoded body or text). Raises OSError/HTTPException
        when herald does not answer."""
        h = h or self.current
        if h is None:
            raise ConnectionError("no herald running")
        conn = http.client.HTTPConnection(h.host, h.port, timeout=tf(timeout))
        try:
            conn.request("POST", "/api/notify/ctl", body=json.dumps(payload).encode(),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text

    def ctl_ok(self, payload, timeout=60, what=None):
        """A ctl call that must answer 200 now (no kill is under way)."""
        st, body = self.ctl(payload, timeout=timeout)
        if st != 200 or not isinstance(body, dict):
            raise AssertionError(f"{what or payload.get('cmd')}: {st} {body!r}\n"
                                 f"log tail:\n{self.current.log[-3000:]}")
        return body

    def health(self, h=None):
        h = h or self.current
        st, body = h.healthz()
        if st != 200:
            raise AssertionError(f"/healthz → {st} {body}")
        return json.loads(body)

    def url(self, tenant):
        return f"{self.fc.url}/t/{tenant}/"

    # ---- the load -----------------------------------------------------------------------------
    def count(self, what):
        with self.lock:
            self.batches[what] += 1

    def sender(self, idx):
        """One of SENDERS threads, each with its own conversations (so that seq order is the order
        of enqueueing: one caller per conversation), so that one blocked call (an answer held
        while the store recovers) does not stop the load."""
        rng = random.Random(self.seed * 7919 + 1 + idx)
        convs = [(f"a:jm-{i}", self.url("tA" if i % 2 else "tB")) for i in range(self.nm)
                 if i % self.SENDERS == idx]
        while not self.stop_sending.is_set():
            with self.lock:
                h = self.current
            if h is None or not h.alive():
                time.sleep(0.02)
                continue
            items = []
            for _ in range(rng.randint(1, 8)):
                conv, url = convs[rng.randrange(len(convs))]
                self.seq[conv] += 1
                items.append([conv, url, self.seq[conv]])
            marks = [("m", c, s) for c, _, s in items]
            self.calling.set()
            try:
                st, body = self.ctl({"cmd": "send", "items": items}, h=h, timeout=60)
            except ConnectionRefusedError:
                # nothing reached herald (it is down): these markers were never offered
                self.unsent.update(marks)
                self.count("refused connection")
                time.sleep(0.02)
                continue
            except (OSError, http.client.HTTPException):
                self.unknown.update(marks)
                self.count("unknown")
                continue
            if st == 200 and isinstance(body, dict) and isinstance(body.get("r"), list) \
                    and len(body["r"]) == len(marks):
                now = time.monotonic()
                for mk, (op, code) in zip(marks, body["r"]):
                    self.answered_at[mk] = now
                    if op:
                        self.accepted[mk] = op
                    else:
                        self.refused[mk] = code
                self.count("answered")
            elif st == 503:
                for mk in marks:
                    self.refused[mk] = "503"
                self.count("503")
            else:
                self.unknown.update(marks)
                self.count(f"status {st}")
            time.sleep(rng.uniform(0.02, 0.12))

    # ---- the faults ---------------------------------------------------------------------------
    def ev_kill(self):
        # half the time while a ctl call is out, so that some batches get no answer (unknown)
        if self.rng.random() < 0.5:
            self.calling.clear()
            if self.calling.wait(tf(5)):
                self.kill("random point, a batch out")
                return
        self.kill("random point")

    def ev_bcast_create(self):
        key = f"jb-{len(self.broadcasts) + len(self.creation_kills) + 1}"
        if self.hooks:
            point = self.rng.randint(0, self.nr)
            # this incarnation kills itself inside the preparation, before recipient point + 1
            self.kill("random point, to start one armed with HERALD_TEST_CRASH_BROADCAST",
                      env={"HERALD_TEST_CRASH_BROADCAST": str(point)})
            h = self.current
            try:
                st, body = self.ctl({"cmd": "broadcast", "key": key, "tenant": "tC"}, timeout=120)
                raise AssertionError(f"HERALD_TEST_CRASH_BROADCAST={point} did not kill herald: {st} {body}")
            except (OSError, http.client.HTTPException):
                pass
            with self.lock:
                self.current = None
            t = time.monotonic()
            self._reap(h, -signal.SIGKILL)
            self.kills.append((t, f"creating broadcast {key} (before recipient {point + 1} of {self.nr})"))
            self.creation_kills.append(key)
            self.say(f"kill -9 #{len(self.kills)} inside the creation of broadcast {key}, at recipient {point}")
            self.start()
        else:
            box = []
            th = threading.Thread(target=lambda: box.append(self._try_ctl(
                {"cmd": "broadcast", "key": key, "tenant": "tC"})))
            th.start()
            time.sleep(self.rng.uniform(0.0, 0.05))
            self.kill(f"while broadcast {key} is being created (timed)")
            th.join()
            self.creation_kills.append(key)
        self.broadcast(key)

    def _try_ctl(self, payload):
        try:
            return self.ctl(payload, timeout=120)
        except (OSError, http.client.HTTPException) as e:
            return e

    def broadcast(self, key):
        """Creates (or, after a kill, retries) broadcast key until herald answers with its id."""
        deadline = time.monotonic() + tf(60)
        while True:
            r = self._try_ctl({"cmd": "broadcast", "key": key, "tenant": "tC"})
            if isinstance(r, tuple) and r[0] == 200 and isinstance(r[1], dict) and r[1].get("id"):
                self.broadcasts[key] = r[1]["id"]
                self.say(f"broadcast {key} → job {r[1]['id']}")
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"broadcast {key} never answered with an id: {r!r}\n"
                                     f"{self.current.log[-3000:]}")
            time.sleep(0.2)             # a full disk refuses it for now (store); it will pass

    def ev_broadcast(self):
        self.broadcast(f"jb-{len(self.broadcasts) + len(self.creation_kills) + 1}")

    def ev_sched_kill(self):
        # the fake holds the firing's send to a:js-0 unanswered; the kill lands while it is out
        f = self.fc.inject(SCHED_CONVS[0], None, delay=tf(1.5), times=1, method="POST")
        deadline = time.monotonic() + tf(20)
        while f.hits < 1:
            if time.monotonic() > deadline:
                self.fc.remove_fault(f)
                raise AssertionError("no schedule firing reached the fake within 20 s")
            time.sleep(0.005)
        self.firing_kills += 1
        self.kill("schedule firing in flight")
        self.fc.remove_fault(f)

    def ev_storm(self):
        # a tenant that always has traffic, and half the time the broadcasts' too
        tenant = self.rng.choice(["tA", "tB"]) + ("|tC" if self.rng.random() < 0.5 else "")
        f = self.fc.inject(f"re:/t/({tenant})/", 429, body=fcm.THROTTLED, headers={"Retry-After": "1"},
                           method="POST")
        d = self.rng.uniform(1.0, 2.5)
        self.say(f"429 storm on tenant {tenant} for {d:.1f} s")
        self.phases.append([f"429 storm {tenant}", time.monotonic(), None])
        time.sleep(d)
        self.fc.remove_fault(f)
        self.phases[-1][2] = time.monotonic()
        self.events.append(f"429 storm {tenant} {d:.1f}s ({f.hits} answered)")

    def store_errors(self):
        return sum(len(STORE_ERROR.findall(h.log)) for h in self.incarnations)

    def disk_full(self):
        """Fills the disk and waits until herald met it (a write failed: it logged a store error),
        at least 1.5 s; returns the number of store errors it logged."""
        before = self.store_errors()
        self.storage.set_full(True)
        self.say(f"disk full ({self.storage.full_how})")
        t0 = time.monotonic()
        self.phases.append(["disk full", t0, None])
        deadline = t0 + tf(30)
        while self.store_errors() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
        seen = self.store_errors() - before
        self.store_errors_seen["full"] += seen
        return seen

    def disk_freed(self):
        self.storage.set_full(False)
        self.phases[-1][2] = time.monotonic()
        self.say("the disk has space again")

    def ev_disk_full(self):
        # herald runs through it and recovers by itself: /healthz says the store is writable again
        t0 = time.monotonic()
        seen = self.disk_full()
        self.disk_freed()
        deadline = time.monotonic() + tf(30)
        while True:
            store = self.health().get("store")
            if store is None or store.get("writable"):
                break
            if time.monotonic() > deadline:
                self.failures.append(f"the store did not recover by itself within 30 s of the disk "
                                     f"being freed: {store}")
                break
            time.sleep(0.05)
        self.events.append(f"disk full {time.monotonic() - t0:.1f}s, herald logged {seen} store "
                           f"error(s) and recovered{' (/healthz has no store state)' if store is None else ''}")

    def ev_kill_full(self):
        # kill -9 while the store cannot commit: what herald accepted before must still go out
        seen = self.disk_full()
        self.kill("while the disk is full", restart=False)
        self.disk_freed()
        self.start()
        self.events.append(f"disk full, herald logged {seen} store error(s), killed in it")

    def ev_fsync(self):
        before = self.storage.injected()["fsync"]
        self.storage.set_fsync(True)
        self.say("fsync fails (EIO)")
        t0 = time.monotonic()
        self.phases.append(["fsync failing", t0, None])
        # with synchronous=NORMAL only a checkpoint syncs: one comes when the WAL has grown enough,
        # and if none came by then, a graceful restart makes one (SQLite checkpoints at close)
        deadline = t0 + tf(4)
        while self.storage.injected()["fsync"] == before and time.monotonic() < deadline:
            time.sleep(0.05)
        how = "a checkpoint on the way"
        if self.storage.injected()["fsync"] == before:
            self.restart_gracefully("to make SQLite checkpoint while fsync fails")
            how = "the checkpoint of a graceful stop"
        time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
        self.storage.set_fsync(False)
        self.phases[-1][2] = time.monotonic()
        n = self.storage.injected()["fsync"] - before
        self.store_errors_seen["fsync"] += n
        self.events.append(f"fsync failing {time.monotonic() - t0:.1f}s, {n} fsync(s) failed (first in {how})")
        self.say(f"fsync works again ({n} fsync call(s) failed meanwhile)")

    def ev_second(self):
        first = self.current
        n0 = self.batches["answered"]
        h2 = JHerald(self.storage, None)
        self.incarnations.append(h2)
        try:
            h2.start(timeout=tf(30))
            started = True
        except AssertionError:
            started = False
        if started:
            h2.kill()
            what = f"a second herald STARTED on the same database (pid {h2.proc.pid})"
        else:
            m = re.search(r"another herald[^\n]*", h2.log)
            ok = h2.exit_code == 1 and m is not None and first.alive()
            what = ("refused: " + m.group(0)) if ok else \
                (f"not refused as expected: exit {h2.exit_code}, first alive {first.alive()}, "
                 f"stderr:\n{h2.log[-2000:]}")
        self.say(f"second herald: {what}")
        # the first goes on: one more batch answered by it
        deadline = time.monotonic() + tf(30)
        while self.batches["answered"] == n0 and time.monotonic() < deadline and self.current is first:
            time.sleep(0.05)
        if self.batches["answered"] == n0:
            what += "; but the first answered no batch after it"
        self.seconds.append(what)

    # ---- the run --------------------------------------------------------------------------------
    SENDERS = 2
    PLAN = ["kill", "kill", "kill", "bcast_create", "sched_kill", "kill_full", "storm", "storm",
            "disk_full", "fsync", "second", "broadcast"]

    def run(self):
        self.t0 = time.monotonic()
        self.storage = Storage(size_mb=64 if self.short else 1024, disk=self.disk)
        self.fc = fcm.FakeConnector(record_bodies=False).start()
        try:
            self._run()
        except BaseException:
            self.keep = True
            raise
        finally:
            self.stop_sending.set() if hasattr(self, "stop_sending") else None
            for th in getattr(self, "threads", ()):
                th.join(tf(120))
            for h in self.incarnations:
                h.kill()
            self.fc.stop()
            keep = getattr(self, "keep", False) or bool(self.failures) or \
                bool(getattr(self, "result", None) and self.problems())
            self.storage.close(keep=keep)
            if not keep:
                for h in self.incarnations:
                    shutil.rmtree(h.tmp, ignore_errors=True)
        return self

    def _run(self):
        self.say(f"seed {self.seed}; binary {HERALD_BIN} ({'with' if self.hooks else 'without'} test "
                 f"hooks); disk full: {self.storage.full_how}; fsync: {self.storage.fsync_how}")
        self.start()
        self.ctl_ok({"cmd": "seed", "n": self.nr, "prefix": "a:jb-", "tenant": "tC",
                     "service_url": self.url("tC")}, timeout=120)
        self.ctl_ok({"cmd": "schedule", "id": SCHED_ID, "convs": SCHED_CONVS,
                     "service_url": self.url("tS")})
        self.fc.random_faults(0.25, CHOICES, seed=self.seed, methods=("POST",))
        self.stop_sending = threading.Event()
        self.calling = threading.Event()
        self.threads = [threading.Thread(target=self.sender, args=(i,), name=f"jepsen-sender-{i}", daemon=True)
                        for i in range(self.SENDERS)]
        for th in self.threads:
            th.start()
        rounds = 0
        deadline = None if self.short else time.monotonic() + 60 * self.minutes
        while True:
            plan = list(self.PLAN)
            self.rng.shuffle(plan)
            # JEPSEN_SKIP=disk_full,fsync: leave events out (to tell one fault's effect from another's)
            plan = [e for e in plan if e not in os.environ.get("JEPSEN_SKIP", "").split(",")]
            rounds += 1
            self.say(f"round {rounds}: {' '.join(plan)}")
            for ev in plan:
                time.sleep(self.rng.uniform(0.3, 1.5))
                getattr(self, "ev_" + ev)()
            if deadline is None or time.monotonic() > deadline:
                break
        self.rounds = rounds
        time.sleep(self.rng.uniform(0.3, 1.0))
        self.drain()
        self.account()

    def drain(self):
        self.stop_sending.set()
        for th in self.threads:
            th.join(tf(120))
        self.fc.random_faults(0)
        self.fc.clear_faults()
        self.storage.set_fsync(False)
        self.ctl_ok({"cmd": "park", "id": SCHED_ID})
        self.say(f"load stopped: {len(self.accepted)} accepted, {len(self.refused)} refused, "
                 f"{len(self.unknown)} unknown; draining")
        deadline = time.monotonic() + tf(180)
        for key, bid in self.broadcasts.items():
            while True:
                s = self.ctl_ok({"cmd": "bstatus", "id": bid})
                if s.get("state") == "done":
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"broadcast {key} (job {bid}) not done: {s}")
                time.sleep(0.2)
        while True:
            o = self.health()["outbox"]
            if o["queued"] == 0 and o["in_flight"] == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"herald did not drain: {o}\n{self.current.log[-3000:]}")
            time.sleep(0.1)
        self.bstatus = {key: self.ctl_ok({"cmd": "bstatus", "id": bid}) for key, bid in self.broadcasts.items()}
        # the fake has seen everything once nothing arrives for a while
        n, t = len(self.fc.snapshot()), time.monotonic()
        while time.monotonic() - t < 0.5:
            time.sleep(0.1)
            m = len(self.fc.snapshot())
            if m != n:
                n, t = m, time.monotonic()
        h = self.current
        h.stop(timeout=tf(60))
        self.say("drained; herald stopped cleanly")
        self.deliveries = json.loads(self.storage.cli("deliveries", "--json"))
        # herald's record of each attempt: the outcomes after which Teams may hold the message
        self.ambiguous = collections.Counter({op: n for op, n in self.storage.query(
            "SELECT op_id, count(*) FROM outbox_attempts WHERE code IN ('network', 'timeout', 'resent')"
            " GROUP BY op_id")})
        self.outbox_report = json.loads(self.storage.cli("outbox", "--json"))
        self.schedules = {s["id"]: s for s in json.loads(self.storage.cli("schedules", "--json"))}
        self.bjobs = json.loads(self.storage.cli("broadcast", "list", "--json"))   # one array
        for x in self.incarnations:
            bad = sanitizer_problems(x.log)
            if bad:
                self.failures.append(f"sanitizer report in {x.tmp}: {bad}")

    # ---- the account ----------------------------------------------------------------------------
    def account(self):
        recs = self.fc.snapshot()
        self.recs = recs
        copies = collections.defaultdict(list)        # marker → its 201 records (dropped ones too)
        reqs = collections.Counter()                  # marker → requests the fake received
        by_result = {}                                # result id → (marker, record)
        wrong_conv = []
        for r in recs:
            mk = marker(r)
            if mk is None:
                continue
            if mk[1] != r["conversation_id"]:
                wrong_conv.append((mk, r["conversation_id"]))
            reqs[mk] += 1
            if r["status"] == 201:
                copies[mk].append(r)
                rid = result_id(r)
                if rid:
                    by_result[rid] = (mk, r)
        delivered = set(copies)
        first = {mk: min(x["time"] for x in v) for mk, v in copies.items()}

        # lost
        lost_m = sorted(mk for mk in self.accepted if mk not in delivered)
        bkeys = set(self.broadcasts)
        recipients = {f"a:jb-{i}" for i in range(self.nr)}
        lost_b = sorted((c, k) for k in bkeys for c in recipients if ("b", c, k) not in delivered)
        firings = collections.defaultdict(set)
        for mk in delivered:
            if mk[0] == "s":
                firings[mk[2]].add(mk[1])
        partial = sorted((due, sorted(set(SCHED_CONVS) - cs)) for due, cs in firings.items()
                         if cs != set(SCHED_CONVS))
        phantom = sorted(mk for mk in list(self.refused) + list(self.unsent) if mk in delivered)
        stray = sorted({mk for mk in delivered if mk[0] == "b" and (mk[2] not in bkeys and mk[2] not in self.creation_kills)})

        # order
        reordered = []
        by_conv = collections.defaultdict(list)
        for mk in delivered:
            if mk[0] in ("m", "s"):
                by_conv[mk[1]].append((first[mk], mk[2]))
        for conv, xs in by_conv.items():
            xs.sort()
            for (t1, a), (t2, b) in zip(xs, xs[1:]):
                if b <= a:
                    reordered.append((conv, a, b, round(t2 - t1, 3)))

        # herald's report
        ops = self.deliveries
        not_sent = [o for o in ops if o["state"] != "sent"]
        op_marker = {}
        report_bad = []
        for o in ops:
            if o["state"] != "sent":
                continue
            got = by_result.get(o["result_id"])
            if got is None:
                report_bad.append(f"op {o['id']} sent as {o['result_id']}, an id the fake never gave")
                continue
            mk, r = got
            if r["conversation_id"] != o["conversation"]:
                report_bad.append(f"op {o['id']} to {o['conversation']}: its result id was given in {r['conversation_id']}")
            if mk in op_marker.values():
                report_bad.append(f"op {o['id']}: a second operation sent {mk}")
            op_marker[o["id"]] = mk
        marker_op = {mk: oid for oid, mk in op_marker.items()}
        for mk, oid in self.accepted.items():
            if mk in marker_op and marker_op[mk] != oid:
                report_bad.append(f"{mk}: the send returned op {oid}, the fake's copy is op {marker_op[mk]}'s")
        undelivered_ops = delivered - set(marker_op)
        if undelivered_ops:
            report_bad.append(f"{len(undelivered_ops)} marker(s) the fake accepted have no sent operation "
                              f"in herald deliveries, e.g. {sorted(undelivered_ops)[:5]}")
        op_by_id = {o["id"]: o for o in ops}
        over_claimed = []
        for oid, mk in op_marker.items():
            if op_by_id[oid]["attempts"] > reqs[mk]:
                over_claimed.append((oid, mk, op_by_id[oid]["attempts"], reqs[mk]))
        if over_claimed:
            report_bad.append(f"operations claiming more attempts than the fake received: {over_claimed[:5]}")
        resent = sum(o.get("resent") or 0 for o in ops)
        drops = sum(1 for r in recs if r["status"] == fcm.RESET or r.get("dropped"))
        if resent > drops:
            report_bad.append(f"herald counts {resent} libcurl re-sends, the fake dropped only {drops} connection(s)")
        states = {k: v for k, v in (self.outbox_report.get("states") or {}).items() if v}
        n_sent = sum(1 for o in ops if o["state"] == "sent")
        if states.get("sent", 0) != n_sent or set(states) - {"sent"}:
            report_bad.append(f"herald outbox --json states {states} vs {n_sent} sent in deliveries")
        if n_sent != len(delivered):
            report_bad.append(f"herald sent {n_sent} operation(s), the fake accepted {len(delivered)} distinct marker(s)")
        runs = (self.schedules.get(SCHED_ID) or {}).get("runs")
        if runs != len(firings):
            report_bad.append(f"herald schedules: {runs} run(s), the fake received {len(firings)} firing(s)")
        for key, s in self.bstatus.items():
            if s.get("sent") != self.nr or s.get("total") != self.nr:
                report_bad.append(f"broadcast {key} status {s}: {self.nr} recipients expected sent")

        # duplicates: copies herald's own record explains, and the crash window
        dups = {mk: len(v) - 1 for mk, v in copies.items() if len(v) > 1}
        explained = unexplained_total = allowance = 0
        per_conv = collections.Counter()
        conv_allow = collections.Counter()
        per_kill = collections.Counter()
        early = 0
        by_kind = collections.Counter()
        kill_times = [t for t, _ in self.kills]
        self.unexplained = {}
        for mk, d in dups.items():
            by_kind[mk[0]] += d
            oid = marker_op.get(mk)
            e = min(d, self.ambiguous[oid]) if oid is not None else 0
            u = d - e
            explained += e
            if not u:
                continue
            self.unexplained[mk] = u
            unexplained_total += u
            per_conv[mk[1]] += u
            # an attempt out at a kill may have been sent again by libcurl before the kill, uncounted
            nd = sum(1 for x in copies[mk] if x.get("dropped"))
            allowance += nd
            conv_allow[mk[1]] += nd
            if not kill_times or max(x["time"] for x in copies[mk]) < kill_times[0]:
                early += 1
            # which kill left it unrecorded is not always knowable (after a restart it may wait
            # behind a backlog through more kills): for the report, the first kill after its
            # first copy
            t = min(x["time"] for x in copies[mk])
            per_kill[min((i for i, kt in enumerate(kill_times) if kt > t), default=None)] += 1
        nkills = len(self.kills)
        dup_bad = []
        if unexplained_total > nkills * WINDOW + allowance:
            dup_bad.append(f"{unexplained_total} duplicate(s) herald's records do not explain: more than "
                           f"{nkills} kill(s) × {WINDOW} (+{allowance} copies dropped by the fake)")
        over = {c: n for c, n in per_conv.items() if n > 2 * nkills + conv_allow[c]}
        if over:
            dup_bad.append(f"conversations with more unexplained duplicates than two per kill: {over}")
        if early:
            dup_bad.append(f"{early} operation(s) with duplicates herald's records do not explain, "
                           f"all copies before the first kill")

        self.result = {
            "lost": lost_m, "lost_broadcast": lost_b, "partial_firings": partial, "phantom": phantom,
            "stray": stray, "wrong_conversation": wrong_conv, "reordered": reordered,
            "not_sent": not_sent, "report": report_bad, "duplicates": dup_bad,
            "herald": self.failures,
        }
        self.numbers = {
            "markers": sum(self.seq.values()), "accepted": len(self.accepted), "refused": len(self.refused),
            "unknown": len(self.unknown), "unknown_delivered": len(self.unknown & delivered),
            "delivered": len(delivered), "firings": len(firings), "broadcasts": len(self.broadcasts),
            "dup": sum(dups.values()), "dup_markers": len(dups), "dup_explained": explained,
            "dup_crash_window": unexplained_total,
            "dup_per_kill_max": max((n for k, n in per_kill.items() if k is not None), default=0),
            "dup_by_kind": dict(by_kind), "dup_per_kill": {k: n for k, n in per_kill.items()},
            "requests": len(recs), "random_faults": sum(1 for r in recs if r.get("random_fault") is not None),
            "status_429": sum(1 for r in recs if r["status"] == 429), "drops": drops,
            "herald_sent": n_sent, "herald_resent": resent, "herald_runs": runs,
            "herald_attempts": sum(o["attempts"] for o in ops),
            "abandoned": sum(1 for j in self.bjobs if j.get("state") == "abandoned"),
        }
        if os.environ.get("JEPSEN_DUMP"):
            import pickle
            with open(os.environ["JEPSEN_DUMP"], "wb") as f:
                pickle.dump({"t0": self.t0, "recs": [{k: v for k, v in r.items() if k != "fault"} for r in recs],
                             "deliveries": ops, "accepted": self.accepted,
                             "refused": self.refused, "unknown": self.unknown, "kills": self.kills,
                             "phases": self.phases, "broadcasts": self.broadcasts, "result": self.result,
                             "unexplained": self.unexplained, "ambiguous": self.ambiguous,
                             "logs": [h.tmp for h in self.incarnations]}, f)
        n = self.numbers
        self.summary = (
            f"jepsen: seed={self.seed} {'short' if self.short else f'soak {self.minutes} min'} "
            f"rounds={self.rounds} msgs={n['markers']} (accepted {n['accepted']}, refused {n['refused']}, "
            f"unknown {n['unknown']} of which {n['unknown_delivered']} arrived) firings={n['firings']} "
            f"broadcasts={n['broadcasts']}x{self.nr} (abandoned {n['abandoned']}) kills={len(self.kills)} (creation {len(self.creation_kills)}, "
            f"firing {self.firing_kills}) faults: random={n['random_faults']} 429={n['status_429']} "
            f"dropped={n['drops']} disk={self.storage.disk} full-errors={self.store_errors_seen['full']} "
            f"fsync-failed={self.store_errors_seen['fsync']} second={self.second_verdict()} | "
            f"lost={len(lost_m) + len(lost_b) + len(partial)} dup={n['dup']} (herald-explained {n['dup_explained']}, "
            f"crash window {n['dup_crash_window']} ≤ {len(self.kills)} kills×{WINDOW}, ~{n['dup_per_kill_max']} op(s) at "
            f"the worst kill) "
            f"reordered={len(reordered)} phantom={len(phantom)} | herald: sent={n['herald_sent']} "
            f"attempts={n['herald_attempts']} resent={n['herald_resent']} runs={n['herald_runs']}")
        print(self.summary, file=self.out, flush=True)
        for e in self.events:
            self.say(e)
        self.say("operations repeated after each kill (approximate: the first kill after their first copy): " + ", ".join(
            f"#{i + 1} {n}" for i, n in sorted((k, n) for k, n in per_kill.items() if k is not None)))

    def second_verdict(self):
        """"refused" when every second herald was refused and the first went on."""
        bad = [w for w in self.seconds if not w.startswith("refused") or "; but" in w]
        return "refused" if self.seconds and not bad else f"FAILED: {bad or 'never tried'}"

    def problems(self, *keys):
        """{name: evidence} of the named checks that failed (all when none named)."""
        return {k: v for k, v in self.result.items() if (not keys or k in keys) and v}

    def evidence(self, mks, limit=8):
        """What the driver and the fake know of some markers, the kills and the fault phases (times
        in seconds from the start), for a failure message."""
        want = list(mks)[:limit]
        lines = []
        for mk in want:
            acc = self.answered_at.get(mk)
            lines.append(f"  {mk}: op {self.accepted.get(mk)}, answered at "
                         f"{'-' if acc is None else f'{acc - self.t0:.3f}'}")
            for r in self.recs:
                if marker(r) == mk:
                    lines.append(f"    fake t={r['time'] - self.t0:.3f} {r['status']}"
                                 f"{' dropped' if r.get('dropped') else ''}"
                                 f"{' fault=' + str(r.get('random_fault')) if r.get('random_fault') is not None else ''}")
        lines += [f"  kill at {t - self.t0:.3f}: {why}" for t, why in self.kills]
        lines += [f"  {what} from {a - self.t0:.3f} to {b - self.t0 if b else float('nan'):.3f}"
                  for what, a, b in self.phases]
        lines.append("herald logs (kept): " + " ".join(h.tmp for h in self.incarnations))
        return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=None, help="soak this long (default: the short run)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--disk", choices=("tmpfs", "shim"), default=None)
    args = ap.parse_args()
    s = Scenario(seed=args.seed, minutes=args.minutes, disk=args.disk)
    try:
        s.run()
    except BaseException as e:
        print(f"jepsen: seed={s.seed} ABORTED: {e}", file=sys.stderr)
        return 2
    bad = s.problems()
    if s.second_verdict() != "refused":
        bad["second_herald"] = s.second_verdict()
    for k, v in bad.items():
        print(f"FAILED {k}: {v if isinstance(v, str) else v[:20]}", file=sys.stderr)
        if k in ("lost", "phantom"):
            print(s.evidence(v), file=sys.stderr)
    print(f"jepsen: {'PASS' if not bad else 'FAIL'} (seed {s.seed})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
