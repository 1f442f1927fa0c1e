"""test_reports.py — the operator reports (issue 12, bugs 3 and 6).

- Every report (`herald outbox`, `blocked`, `deliveries`, `schedules`, `broadcast list`,
  `broadcast show ID`) prints exactly one JSON document with --json and one CSV table (header row,
  RFC 4180 quoting) with --csv, on a database with no data (an empty array / a header alone) and
  with data holding commas, quotes and line breaks. The list of reports is read from
  `herald --help`, so a new report without both formats fails here.
- One definition of each outbox state: operations are put in every state (sent, blocked,
  not_found, rejected, failed, expired, queued and in flight), and /healthz `outbox.states` equals
  `herald outbox --json` `states`, state by state, within a run and after a restart (counted from
  the database at start)."""
import csv
import io
import json
import os
import re
import sqlite3
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HeraldTestCase, bot, require_binary, run_cli, tf  # noqa: E402
import fake_connector as fcm  # noqa: E402

OUTBOX_BOT = bot("outbox_bot.lua")
SCHEDULE_BOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "bots",
                            "schedule_user_bot.lua")
STATES = ["queued", "sent", "blocked", "not_found", "rejected", "expired", "failed"]
# a value that needs every kind of CSV quoting
NASTY = 'Doe, "Jane"\nsecond line'


def reports_in_help():
    """The report commands `herald --help` lists with --csv|--json: [(argv...), ...]."""
    rc, out, err = run_cli(["--help"])
    assert rc == 0, err
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*herald (\w+)\s+(list\|show ID )?.*\[--csv\|--json\]", line)
        if m:
            found.append(m.group(1))
    return found


@require_binary
class ReportFormatsCase(HeraldTestCase):
    def report(self, db, args, fmt):
        rc, out, err = run_cli(list(args) + [f"--{fmt}", "--db", db])
        self.assertEqual(rc, 0, f"herald {' '.join(args)} --{fmt}: {err}")
        return out

    def one_json(self, db, args):
        out = self.report(db, args, "json")
        try:
            return json.loads(out)            # one document, nothing around it
        except ValueError as e:
            self.fail(f"herald {' '.join(args)} --json is not one JSON document ({e}):\n{out[:2000]}")

    def csv_rows(self, db, args):
        out = self.report(db, args, "csv")
        self.assertTrue(out.endswith("\n"), repr(out[-200:]))
        rows = list(csv.reader(io.StringIO(out, newline="")))
        self.assertGreaterEqual(len(rows), 1, f"herald {' '.join(args)} --csv printed no header")
        header = rows[0]
        self.assertTrue(header and all(re.fullmatch(r"[a-z_]+", h) for h in header), header)
        for r in rows[1:]:
            self.assertEqual(len(r), len(header), (header, r))
        return [dict(zip(header, r)) for r in rows[1:]]

    def seed(self, db):
        """Rows with awkward text in every table a report reads."""
        now = int(time.time())
        con = sqlite3.connect(db)
        with con:
            con.execute("INSERT INTO conversations (id, service_url, user_id, user_name, tenant_id,"
                        " installed, created_at, updated_at, uninstalled_at)"
                        " VALUES ('a:gone, \"x\"', 'http://127.0.0.1:9/', '29:u1', ?, 't1', 0, ?, ?, ?)",
                        (NASTY, now * 1000, now * 1000, now * 1000))
            con.execute("INSERT INTO ledger (conversation_id, state, user_name, tenant_id, at)"
                        " VALUES ('a:blocked', 'blocked', ?, 't1', ?)", (NASTY, now * 1000))
            for state in ("sent", "blocked", "failed"):
                con.execute("INSERT INTO outbox (kind, queue, conversation_id, service_url, state,"
                            " attempts, next_attempt_at, created_at, expires_at, finished_at,"
                            " last_error) VALUES ('send', 'q', 'a:1', 'http://x/', ?, 1, ?, ?, ?, ?, ?)",
                            (state, now * 1000, now * 1000, now * 1000 + 3600000, now * 1000, NASTY))
            con.execute("INSERT INTO schedules (id, handler, kind, expr, tz, conversation_id,"
                        " next_fire_at, created_at, updated_at, last_result)"
                        " VALUES ('daily, \"standup\"', 'tick', 'cron', '0 9 * * 1-5', 'Europe/Berlin',"
                        " 'a:1', ?, ?, ?, ?)", (now + 3600, now, now, NASTY))
            for bid, name in ((1, NASTY), (2, "plain")):
                con.execute("INSERT INTO broadcasts (id, name, state, total, created_at, updated_at)"
                            " VALUES (?, ?, 'running', 2, ?, ?)", (bid, name, now * 1000, now * 1000))
                con.execute("INSERT INTO broadcast_recipients (broadcast_id, seq, conversation_id, state)"
                            " VALUES (?, 0, 'a:1', 'sent'), (?, 1, 'a:2', 'pending')", (bid, bid))
        con.close()

    def test_every_report_is_one_json_document_and_a_csv_table(self):
        commands = reports_in_help()
        self.assertEqual(sorted(commands), sorted(["broadcast", "outbox", "blocked", "deliveries",
                                                   "schedules"]), commands)
        h = self.start_herald(OUTBOX_BOT)
        h.stop()
        db = h.db
        lists = [["blocked"], ["deliveries"], ["schedules"], ["broadcast", "list"]]
        # no data: an empty array and a header alone, never nothing
        for args in lists:
            self.assertEqual(self.one_json(db, args), [], args)
            self.assertEqual(self.csv_rows(db, args), [], args)
        o = self.one_json(db, ["outbox"])
        self.assertEqual(o["states"], {s: 0 for s in STATES})
        self.assertEqual(o["tenants"], [])
        self.assertEqual({r["state"]: r["count"] for r in self.csv_rows(db, ["outbox"])},
                         {s: "0" for s in STATES})
        rc, out, err = run_cli(["broadcast", "show", "7", "--json", "--db", db])
        self.assertEqual((rc, out), (1, ""), err)
        self.assertIn("no broadcast 7", err)

        self.seed(db)
        blocked = self.one_json(db, ["blocked"])
        self.assertEqual(sorted(e["conversation"] for e in blocked), ['a:blocked', 'a:gone, "x"'])
        rows = self.csv_rows(db, ["blocked"])
        self.assertEqual(sorted((r["conversation"], r["user_name"]) for r in rows),
                         [("a:blocked", NASTY), ('a:gone, "x"', NASTY)])
        dl = self.one_json(db, ["deliveries"])
        self.assertEqual(sorted(d["state"] for d in dl), ["blocked", "failed", "sent"])
        self.assertEqual([r["error"] for r in self.csv_rows(db, ["deliveries"])], [NASTY] * 3)
        sch = self.one_json(db, ["schedules"])
        self.assertEqual([s["id"] for s in sch], ['daily, "standup"'])
        rows = self.csv_rows(db, ["schedules"])
        self.assertEqual([(r["id"], r["last_result"]) for r in rows], [('daily, "standup"', NASTY)])
        bl = self.one_json(db, ["broadcast", "list"])
        self.assertEqual([(b["id"], b["name"], b["counts"]) for b in bl],
                         [(2, "plain", {"pending": 1, "sent": 1}), (1, NASTY, {"pending": 1, "sent": 1})])
        rows = self.csv_rows(db, ["broadcast", "list"])
        self.assertEqual([(r["id"], r["name"], r["total"], r["delivered"]) for r in rows],
                         [("2", "plain", "2", "1"), ("1", NASTY, "2", "1")])
        show = self.one_json(db, ["broadcast", "show", "1"])
        self.assertEqual((show["id"], show["name"], show["total"]), (1, NASTY, 2))
        self.assertEqual([r["name"] for r in self.csv_rows(db, ["broadcast", "show", "1"])], [NASTY])
        o = self.one_json(db, ["outbox"])
        self.assertEqual({k: v for k, v in o["states"].items() if v}, {"sent": 1, "blocked": 1, "failed": 1})
        self.assertEqual({r["state"]: r["count"] for r in self.csv_rows(db, ["outbox"]) if r["count"] != "0"},
                         {"sent": "1", "blocked": "1", "failed": "1"})
        # --watch draws a bar: it takes no format
        rc, _, err = run_cli(["broadcast", "show", "1", "--watch", "--json", "--db", db])
        self.assertEqual(rc, 2, err)


@require_binary
class SchedulePausedCase(HeraldTestCase):
    """`herald schedules` says why a schedule does not fire (issue 12, bug 5)."""

    def schedules(self, h):
        rc, out, err = run_cli(["schedules", "--json", "--db", h.db])
        self.assertEqual(rc, 0, err)
        return json.loads(out)

    def test_schedules_report_shows_paused_uninstalled(self):
        h = self.start_herald(SCHEDULE_BOT)
        conv = "a:megan"
        for a in self.acts.personal_install(conv):
            self.post_ok(h, a)
        self.post_ok(h, self.acts.message(conv, "every 1d daily"))
        [s] = self.schedules(h)
        self.assertEqual((s["state"], s["reason"]), ("active", None), s)
        self.post_ok(h, self.acts.uninstall(conv))
        [s] = self.schedules(h)
        self.assertEqual((s["state"], s["reason"], s["next_utc"]), ("paused", "uninstalled", None), s)
        rc, out, err = run_cli(["schedules", "--csv", "--db", h.db])
        self.assertEqual(rc, 0, err)
        [row] = list(csv.DictReader(io.StringIO(out, newline="")))
        self.assertEqual((row["state"], row["reason"], row["next_utc"]), ("paused", "uninstalled", ""), row)
        rc, out, err = run_cli(["schedules", "--db", h.db])
        self.assertEqual(rc, 0, err)
        self.assertIn("state   paused (uninstalled: resumes when the conversation is installed again)", out)
        # heard from again: it resumes at its next occurrence
        for a in self.acts.personal_install(conv):
            self.post_ok(h, a)
        [s] = self.schedules(h)
        self.assertEqual((s["state"], s["reason"]), ("active", None), s)
        self.assertIsNotNone(s["next_utc"], s)


@require_binary
class OutboxStatesCase(HeraldTestCase):
    """/healthz and `herald outbox` count the same operations in the same states."""

    def invoke(self, h, value, conv="a:control"):
        st, body = h.post_activity(self.acts.invoke(conv, "outbox", value), timeout=tf(60))
        self.assertEqual(st, 200, f"invoke {value}: {st} {body!r}\n{h.log[-2000:]}")
        return json.loads(body)

    def send(self, h, conv, wait=True):
        ref = {"id": conv, "service_url": self.fc.url + self.PREFIX}
        return self.invoke(h, {"cmd": "send", "conv": ref, "text": "x", "wait": wait})["r"]

    def agree(self, h, expect):
        st, body = h.healthz()
        self.assertEqual(st, 200)
        health = json.loads(body)["outbox"]["states"]
        rc, out, err = run_cli(["outbox", "--json", "--db", h.db])
        self.assertEqual(rc, 0, err)
        cli = json.loads(out)["states"]
        self.assertEqual(list(health), STATES, health)
        for s in STATES:
            self.assertEqual(health[s], cli[s], f"state {s}: /healthz {health} vs herald outbox {cli}")
        self.assertEqual({k: v for k, v in health.items() if v}, expect)
        return health

    def test_healthz_and_cli_count_every_state_alike(self):
        env = {"HERALD_RESPONSE_DEADLINE_MS": 60000, "HERALD_OUTBOX_MAX_ATTEMPTS": 1}
        h = self.start_herald(OUTBOX_BOT, env=env)
        self.fc.inject("a:blk", 403, fcm.MESSAGE_WRITES_BLOCKED)
        self.fc.inject("a:gone", 404, fcm.CONVERSATION_NOT_FOUND)
        self.fc.inject("a:bad", 400, {"error": {"code": "BadArgument", "message": "no"}})
        self.fc.inject("a:down", 503, fcm.SERVICE_ERROR)
        for conv, state in (("a:ok", "sent"), ("a:blk", "blocked"), ("a:blk", "blocked"),
                            ("a:gone", "not_found"), ("a:bad", "rejected"), ("a:down", "failed")):
            r = self.send(h, conv)
            self.assertEqual(r.get("d", {}).get("state", "sent" if r.get("a") else None), state, r)
        # the bug: /healthz said failed 2 for what `herald outbox` called blocked 2
        self.agree(h, {"sent": 1, "blocked": 2, "not_found": 1, "rejected": 1, "failed": 1})
        h.stop()
        # a second run counts what the first left in the database; expiry and queued ones join
        env.update({"HERALD_OUTBOX_MAX_ATTEMPTS": 8, "HERALD_OUTBOX_MAX_AGE_S": 1,
                    "HERALD_RETRY_BASE_MS": 4000, "HERALD_RETRY_MAX_MS": 8000})
        h2 = self.start_herald(OUTBOX_BOT, env=env, db=h.db)
        self.agree(h2, {"sent": 1, "blocked": 2, "not_found": 1, "rejected": 1, "failed": 1})
        self.fc.inject("a:exp", 503, fcm.SERVICE_ERROR, times=1)
        self.assertEqual(self.send(h2, "a:exp")["d"]["state"], "expired")
        hold = self.fc.hold("a:slow")
        try:
            self.send(h2, "a:slow", wait=False)
            self.send(h2, "a:slow", wait=False)
            hold.wait_held(1)
            o = json.loads(h2.healthz()[1])["outbox"]
            self.assertEqual((o["queued"], o["in_flight"]), (2, 1), o)
            self.agree(h2, {"queued": 2, "sent": 1, "blocked": 2, "not_found": 1, "rejected": 1,
                            "expired": 1, "failed": 1})
        finally:
            hold.release()
        deadline = time.monotonic() + tf(30)
        while json.loads(h2.healthz()[1])["outbox"]["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        o = self.agree(h2, {"sent": 3, "blocked": 2, "not_found": 1, "rejected": 1, "expired": 1,
                            "failed": 1})
        # this run's finals, per state under the same names
        fin = json.loads(h2.healthz()[1])["outbox"]["finished"]
        self.assertEqual({k: v for k, v in fin.items() if v}, {"sent": 2, "expired": 1}, fin)
        m = h2.metrics()
        for s in STATES:
            self.assertEqual(m.get(f'herald_outbox_operations{{state="{s}"}}'), o[s], s)


if __name__ == "__main__":
    unittest.main()
