"""test_inbound_rules.py — what herald accepts and answers at its edges (issue 12, bugs 2, 4 and 9,
and empty arrays in JSON answers): a 2xx without an activity id, a time zone the system does not
know, malformed activities, and the JSON herald writes from Lua tables."""
import json
import sqlite3
import time

from harness import HeraldTestCase, bot, require_binary, tf

OUTBOX_BOT = bot("outbox_bot.lua")


def db_rows(path, sql, args=()):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


@require_binary
class AcceptedWithoutIdTest(HeraldTestCase):
    """Bug 2: the Agents Playground answers a text-plus-card message 202 with an empty body. The
    message was accepted, so herald records it sent (no id), never sends it again, and an update or
    delete of it returns nil, msg, "no_activity_id"."""

    def invoke(self, h, value):
        st, body = h.post_activity(self.acts.invoke("a:control", "outbox", value), timeout=tf(30))
        self.assertEqual(st, 200, f"invoke {value}: {st} {body!r}\nlog tail:\n{h.log[-2000:]}")
        return json.loads(body)["r"]

    def test_2xx_without_id_is_sent_once_and_not_updatable(self):
        h = self.start_herald(OUTBOX_BOT, env={"HERALD_RESPONSE_DEADLINE_MS": "60000",
                                               "HERALD_RETRY_BASE_MS": "50"})
        ref = {"id": "a:noid", "service_url": self.fc.url + self.PREFIX}
        cases = [(202, ""), (200, {}), (201, "<html>ok</html>")]
        for i, (status, body) in enumerate(cases):
            with self.subTest(status=status, body=body):
                self.fc.inject("a:noid", status, body=body, times=1, method="POST")
                before = len(self.outbound("POST"))
                r = self.invoke(h, {"cmd": "send", "conv": ref, "text": f"hello {i}", "key": f"k{i}"})
                self.assertEqual(r, {"a": True}, "a send accepted without an id returns true")
                # the update of that message, by the returned value and by its key
                r = self.invoke(h, {"cmd": "update", "conv": ref, "id": True, "text": "edited"})
                self.assertEqual(r.get("c"), "no_activity_id", r)
                self.assertIsNone(r.get("a"))
                r = self.invoke(h, {"cmd": "update", "conv": ref, "key": f"k{i}", "text": "edited"})
                self.assertEqual(r.get("c"), "no_activity_id", r)
                r = self.invoke(h, {"cmd": "delete", "conv": ref, "key": f"k{i}"})
                self.assertEqual(r.get("c"), "no_activity_id", r)
                r = self.invoke(h, {"cmd": "delete", "conv": ref, "id": True})
                self.assertEqual(r.get("c"), "no_activity_id", r)
                # exactly one request reached the fake for this message: no retry
                self.assert_no_more(len(self.fc.snapshot()), settle=0.3)
                self.assertEqual(len(self.outbound("POST")) - before, 1, self.fc.summary())
                self.assertEqual(self.outbound("PUT") + self.outbound("DELETE"), [])
        h.stop()
        sends = db_rows(h.db, "SELECT state, result_id, attempts, last_status FROM outbox "
                              "WHERE kind = 'send' ORDER BY id")
        self.assertEqual([(s["state"], s["result_id"], s["attempts"]) for s in sends],
                         [("sent", None, 1)] * len(cases))
        self.assertEqual([s["last_status"] for s in sends], [c[0] for c in cases])
        self.assertEqual(h.log.count("without an activity id: recorded sent"), len(cases), h.log)
