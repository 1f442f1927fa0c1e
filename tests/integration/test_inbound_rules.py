"""test_inbound_rules.py — what herald accepts and answers at its edges (issue 12, bugs 2, 4 and 9,
and empty arrays in JSON answers): a 2xx without an activity id, a time zone the system does not
know, malformed activities, and the JSON herald writes from Lua tables."""
import json
import os
import sqlite3

from harness import AuthHeraldTestCase, HeraldTestCase, bot, require_binary, tf

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


def _bad_activities(acts):
    """(label, activity, field) for activities /api/messages must refuse with 400 naming field."""
    out = []

    def bad(label, field, change, base=None):
        a = base or acts.message(f"a:bad-{len(out)}", "hello")
        change(a)
        out.append((label, a, field))

    def set_(path, value):
        def change(a):
            d = a
            for k in path[:-1]:
                d = d.setdefault(k, {})
            d[path[-1]] = value
        return change

    for url in ("", "notaurl", "http://", "file:///etc/passwd", "https://", "ftp://x.example/"):
        bad(f"serviceUrl={url!r}", "serviceUrl", set_(["serviceUrl"], url))
    bad("serviceUrl=7", "serviceUrl", set_(["serviceUrl"], 7))
    for v in (42, 4.5, True, {}, ["hello"]):
        bad(f"text={v!r}", "text", set_(["text"], v))
    bad("type=3", "type", set_(["type"], 3))
    bad("id=12", "id", set_(["id"], 12))
    bad("conversation.id=5", "conversation.id", set_(["conversation", "id"], 5))
    bad("conversation=[...]", "conversation", set_(["conversation"], [{"id": "a:x"}]))
    bad("from='bob'", "from", set_(["from"], "bob"))
    bad("from.id=7", "from.id", set_(["from", "id"], 7))
    bad("from.aadObjectId=[]", "from.aadObjectId", set_(["from", "aadObjectId"], []))
    bad("recipient.id=1", "recipient.id", set_(["recipient", "id"], 1))
    bad("channelId=0", "channelId", set_(["channelId"], 0))
    bad("locale=1", "locale", set_(["locale"], 1))
    bad("localTimezone=60", "localTimezone", set_(["localTimezone"], 60))
    bad("channelData.tenant='t'", "channelData.tenant", set_(["channelData", "tenant"], "t"))
    bad("channelData.tenant.id=9", "channelData.tenant.id", set_(["channelData", "tenant", "id"], 9))
    bad("entities={'a':1}", "entities", set_(["entities"], {"a": 1}))
    bad("membersAdded=[5]", "membersAdded", set_(["membersAdded"], [5]),
        acts.members_added("a:bad-members", [acts.user("29:x")]))
    bad("membersAdded=[{id:5}]", "membersAdded", set_(["membersAdded"], [{"id": 5}]),
        acts.members_added("a:bad-members2", [acts.user("29:x")]))
    bad("membersAdded=[[1]]", "membersAdded", set_(["membersAdded"], [[1]]),
        acts.members_added("a:bad-members3", [acts.user("29:x")]))
    return out


class _MalformedCase:
    """Every malformed activity gets 400 with {"error": reason, "field": path}, and nothing of it
    is stored; well-formed ones (odd but legal: nulls, empty lists) still get 200."""

    def check_table(self, h, extra_bad=(), extra_good=()):
        cases = _bad_activities(self.acts) + list(extra_bad)
        for i, (label, a, field) in enumerate(cases):
            a["conversation"] = a["conversation"] if label.startswith("conversation") else {
                **a["conversation"], "id": f"a:bad-{i}"}
            with self.subTest(label):
                st, body = h.post_activity(a)
                self.assertEqual(st, 400, body)
                j = json.loads(body)
                self.assertEqual(j.get("field"), field, body)
                self.assertIn(field, j.get("error", ""), body)
        good = [self.acts.message("a:good-0", "plain"),
                {**self.acts.message("a:good-1", "nulls"), "locale": None, "localTimezone": None,
                 "replyToId": None},
                {**self.acts.message("a:good-2", "empty lists"), "entities": []},
                self.acts.members_added("a:good-3", [self.acts.user("29:y")])]
        for a in good + list(extra_good):
            with self.subTest(good=a["conversation"]["id"]):
                st, body = h.post_activity(a)
                self.assertEqual(st, 200, body)
        h.stop()
        ids = {r["id"] for r in db_rows(h.db, "SELECT id FROM conversations")}
        self.assertEqual(ids, {a["conversation"]["id"] for a in good + list(extra_good)})


@require_binary
class MalformedActivityDevTest(_MalformedCase, HeraldTestCase):
    """Bug 9, dev mode: http service URLs to any host are allowed there (the Playground)."""

    def test_malformed_activities_get_400_in_dev_mode(self):
        h = self.start_herald(bot("durable_bot.lua"))
        other = self.acts.message("a:good-http", "quiet")
        other["serviceUrl"] = "http://playground.example:56150/_connector"
        self.check_table(h, extra_good=[other])


@require_binary
class MalformedActivityAuthTest(_MalformedCase, AuthHeraldTestCase):
    """Bug 9 outside dev mode: the same table, refused before the token is even looked at, plus a
    plain-http serviceUrl on a host that is not loopback (the token would never go there)."""

    def test_malformed_activities_get_400_with_authentication(self):
        h = self.start_auth_herald(bot("durable_bot.lua"))
        plain = self.acts.message("a:bad-http", "hello")
        plain["serviceUrl"] = "http://smba.trafficmanager.net/amer/"
        self.check_table(h, extra_bad=[("plain http", plain, "serviceUrl")])


@require_binary
class UnknownTimeZoneTest(HeraldTestCase):
    """Bug 4: "Mars/Olympus" from a client must not replace a stored Europe/Berlin; it is logged
    once per conversation and zone, however many activities carry it. (The schedule that keeps
    firing at 09:00 Berlin is tests/spec/inbound_rules_spec.lua, on the virtual clock.)"""

    def test_unknown_zone_keeps_the_stored_one_and_is_logged_once(self):
        h = self.start_herald(bot("durable_bot.lua"))
        self.post_ok(h, self.acts.message("a:tz", "quiet", timezone="Europe/Berlin"))
        for i in range(3):
            self.post_ok(h, self.acts.message("a:tz", f"quiet {i}", timezone="Mars/Olympus"))
            # only the clientInfo entity carries it
            self.post_ok(h, {**self.acts.message("a:tz", "quiet", timezone="Mars/Olympus"),
                             "localTimezone": None})
        self.post_ok(h, self.acts.message("a:tz2", "quiet", timezone="Mars/Olympus"))
        h.stop()
        rows = {r["id"]: r["timezone"] for r in db_rows(h.db, "SELECT id, timezone FROM conversations")}
        self.assertEqual(rows, {"a:tz": "Europe/Berlin", "a:tz2": None})
        lines = [l for l in h.log.splitlines() if 'unknown time zone "Mars/Olympus" ignored' in l]
        self.assertEqual(len(lines), 2, "\n".join(lines))      # one per conversation
        self.assertIn("conversation=a:tz", lines[0])


@require_binary
class EmptyArrayTest(HeraldTestCase):
    """An empty table a script marks with teams.array is [] in the HTTP answers herald writes (an
    invoke's body, a notify result); an unmarked one stays {}."""

    BOT = os.path.join(os.path.dirname(__file__), "..", "spec", "bots", "inbound_rules_bot.lua")

    def test_invoke_and_notify_answers_keep_empty_arrays(self):
        h = self.start_herald(os.path.abspath(self.BOT))
        st, body = h.post_activity(self.acts.invoke("a:arr", "arrays", {}))
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"items": [], "also": [], "meta": {}, "full": [1, 2]})
        st, body = h.post_activity(self.acts.invoke("a:arr", "top", {}))
        self.assertEqual((st, body), (200, "[]"))
        st, body, _ = h.request("POST", "/api/notify/arrays", b"{}")
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"items": [], "meta": {}})
