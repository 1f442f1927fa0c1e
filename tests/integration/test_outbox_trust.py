"""Authenticated mode: every URL loaded from the database is checked where the bearer token is
attached, at the moment of the attempt. Outbox rows carry a seal of their service URL (HMAC keyed
by the app secret); a row edited or inserted while herald was stopped ends "rejected" with code
untrusted_service_url after the restart, and the attacker's endpoint receives nothing. Untampered
rows, whose URL only their seal vouches for after the restart, still deliver."""
import re
import sqlite3
import time
import unittest

from harness import AuthHeraldTestCase, FakeConnector, require_binary, tf

RESULT = r"AUTHBOT {cmd} tag={tag} id=(\S+) code=(\S+) msg=(.*)"
FINAL = ("sent", "blocked", "not_found", "rejected", "expired", "failed")

# a failed attempt is retried only after 5-10 minutes: rows stay queued until herald stops
SLOW_RETRY = {"HERALD_OUTBOX_MAX_ATTEMPTS": "5", "HERALD_RETRY_BASE_MS": "600000",
              "HERALD_RETRY_MAX_MS": "600000"}


@require_binary
class OutboxRowTrustTest(AuthHeraldTestCase):
    def setUp(self):
        super().setUp()
        self.attacker = FakeConnector().start()   # records every request that reaches it

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.attacker.stop()

    def command(self, h, conv, text, cmd, tag):
        """Posts a validated message in conv whose handler runs text; returns (id, code, msg)."""
        rx = RESULT.format(cmd=cmd, tag=re.escape(tag))
        before = len(re.findall(rx, h.log))
        st, body = h.post_activity(self.acts.message(conv, text))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        deadline = time.monotonic() + tf(15)
        while True:
            found = re.findall(rx, h.log)
            if len(found) > before:
                return found[before]
            if time.monotonic() > deadline:
                self.fail(f"no result for {text!r}; log tail:\n{h.log[-2000:]}")
            time.sleep(0.05)

    def sql(self, db, query, args=()):
        c = sqlite3.connect(db, timeout=10)
        try:
            c.row_factory = sqlite3.Row
            rows = [dict(r) for r in c.execute(query, args)]
            c.commit()
            return rows
        finally:
            c.close()

    def ops(self, db):
        return {r["id"]: r for r in self.sql(db, "SELECT * FROM outbox ORDER BY id")}

    def wait_final(self, db, ids):
        deadline = time.monotonic() + tf(20)
        while True:
            ops = self.ops(db)
            if all(ops[i]["state"] in FINAL for i in ids):
                return ops
            if time.monotonic() > deadline:
                self.fail(f"operations not final: {[(i, ops[i]['state']) for i in ids]}")
            time.sleep(0.1)

    def queue_undelivered(self, h, convs, how):
        """Runs how(conv) for each conv while the connector answers them 503: their operations stay
        queued (next attempt minutes away). Returns when every conv has had its first attempt."""
        for conv in convs:
            self.command(h, conv, "quiet seen", "quiet", "seen")          # validated: trusted, sealed
            self.fc.inject(conv, 503, body={"error": {"code": "ServiceUnavailable", "message": "x"}})
        how(convs)
        self.fc.wait_until(lambda rs: {r["conversation_id"] for r in rs if r["status"] == 503} >= set(convs),
                           timeout=15, what="a first (503) attempt for each conversation")

    def restart_due_now(self, h):
        """Stops h, makes every queued row due, lets the connector answer again; returns h's db."""
        h.stop()
        self.sql(h.db, "UPDATE outbox SET next_attempt_at = 0 WHERE state = 'queued'")
        self.fc.clear_faults()
        return h.db

    def test_edited_and_inserted_outbox_rows_never_reach_the_attacker(self):
        h = self.start_auth_herald(env=SLOW_RETRY)
        x, z, y = "a:obx-x", "a:obx-z", "a:obx-y"
        self.command(h, y, "quiet seen", "quiet", "seen")
        ids = {}

        def later(convs):
            for conv in convs:
                op, code, msg = self.command(h, y, f"later {conv}", "later", conv)
                self.assertEqual(code, "nil", msg)
                ids[conv] = int(op)

        self.queue_undelivered(h, [x, z], later)
        db = self.restart_due_now(h)
        evil = self.attacker.url + "/_connector"
        # (a) an edited row keeps its seal, which no longer matches; (b) an inserted one has none,
        # or the seal of another row
        self.sql(db, "UPDATE outbox SET service_url = ? WHERE id = ?", (evil, ids[x]))
        for i, seal_from in enumerate((None, ids[z])):
            self.sql(db, "INSERT INTO outbox (kind, queue, conversation_id, service_url, tenant_id, body,"
                         " state, attempts, next_attempt_at, created_at, expires_at, service_url_seal)"
                         " SELECT kind, ?1, ?1, ?2, tenant_id, body, 'queued', 0, 0, created_at, expires_at,"
                         " CASE WHEN ?3 THEN service_url_seal END FROM outbox WHERE id = ?4",
                     (f"a:inserted-{i}", evil, seal_from is not None, ids[z]))
        inserted = [r["id"] for r in self.sql(db, "SELECT id FROM outbox WHERE queue LIKE 'a:inserted-%'")]
        self.assertEqual(len(inserted), 2)
        h2 = self.start_auth_herald(db=db, env=SLOW_RETRY)
        ops = self.wait_final(db, [ids[x], ids[z]] + inserted)
        for op in [ids[x]] + inserted:
            with self.subTest(op=op):
                self.assertEqual((ops[op]["state"], ops[op]["last_code"]), ("rejected", "untrusted_service_url"),
                                 ops[op])
                # refused at its first attempt after the restart, never retried
                tries = self.sql(db, "SELECT code FROM outbox_attempts WHERE op_id = ?", (op,))
                self.assertEqual([t["code"] for t in tries][-1:], ["untrusted_service_url"])
                self.assertLessEqual(len(tries), 2, tries)
        time.sleep(tf(0.3))
        self.assertEqual(self.attacker.snapshot(), [], "the attacker's endpoint was contacted")
        self.assertIn("refused to send the bot's token to an untrusted service URL", h2.log)
        # (d) the untouched row's URL is trusted after the restart only through its own seal (no
        # activity came from it yet in this process), and it delivers with the real token
        self.assertEqual(ops[ids[z]]["state"], "sent", ops[ids[z]])
        sent = [r for r in self.fc.snapshot() if r["conversation_id"] == z and r["status"] == 201]
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["authorization"], "Bearer " + self.ts.issued[-1])
        self.assertNotIn(f"url={self.acts.service_url}", h2.log)
        # what herald wrote: a seal on every row it queued
        for conv in (x, z):
            self.assertRegex(ops[ids[conv]]["service_url_seal"] or "", r"^[0-9a-f]{64}$")

    def test_broadcast_rows_are_checked_when_attempted(self):
        h = self.start_auth_herald(env=SLOW_RETRY)
        x, z, y = "a:bcx-x", "a:bcx-z", "a:bcx-y"
        self.command(h, y, "quiet seen", "quiet", "seen")
        bid = []

        def broadcast(convs):
            b, code, msg = self.command(h, y, f"bcast b1 {','.join(convs)}", "bcast", "b1")
            self.assertEqual(code, "nil", msg)
            bid.append(int(b))

        self.queue_undelivered(h, [x, z], broadcast)
        db = self.restart_due_now(h)
        rows = {r["conversation_id"]: r for r in self.sql(db, "SELECT * FROM broadcast_recipients")}
        self.assertEqual(rows[x]["state"], "queued", rows)
        self.sql(db, "UPDATE outbox SET service_url = ? WHERE id = ?", (self.attacker.url + "/", rows[x]["op_id"]))
        self.start_auth_herald(db=db, env=SLOW_RETRY)
        ops = self.wait_final(db, [rows[x]["op_id"], rows[z]["op_id"]])
        self.assertEqual(ops[rows[x]["op_id"]]["last_code"], "untrusted_service_url")
        self.assertEqual(ops[rows[z]["op_id"]]["state"], "sent")
        deadline = time.monotonic() + tf(10)
        while True:
            states = {r["conversation_id"]: r["state"] for r in self.sql(db, "SELECT * FROM broadcast_recipients")}
            if states == {x: "rejected", z: "sent"} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(states, {x: "rejected", z: "sent"})
        time.sleep(tf(0.3))
        self.assertEqual(self.attacker.snapshot(), [], "the attacker's endpoint was contacted")


if __name__ == "__main__":
    unittest.main()
