"""Inbound activities → exact outbound Bot Connector exchanges (API_DRAFT.md, PROTOCOL.md §3-4, §6)."""
import json
import os
import unittest

from harness import (BOT_ID, TENANT, HeraldTestCase, bot, fake_connector, require_binary)

MAIN = bot("main_bot.lua")


def enc(s):
    """Percent-encoding with the RFC 3986 unreserved set, as herald must do for path ids."""
    import urllib.parse
    return urllib.parse.quote(s, safe="-._~")


@require_binary
class ConversationTest(HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.h = self.start_herald(MAIN)

    # helpers ------------------------------------------------------------------------------------
    def assert_message(self, req, method, path, text, conv, reply_to=None):
        self.assertEqual((req["method"], req["path"]), (method, path),
                         f"connector saw {self.fc.summary()}")
        j = req["json"]
        self.assertIsInstance(j, dict, f"body is not a JSON object: {req['body']!r}")
        self.assertEqual(j.get("type"), "message", req["body"])
        self.assertEqual(j.get("text"), text, req["body"])
        self.assertEqual((j.get("from") or {}).get("id"), BOT_ID, req["body"])
        self.assertEqual((j.get("conversation") or {}).get("id"), conv, req["body"])
        if reply_to is None:
            self.assertNotIn("replyToId", j, req["body"])
        else:
            self.assertEqual(j.get("replyToId"), reply_to, req["body"])
        self.assertTrue(req["headers"].get("content-type", "").startswith("application/json"),
                        req["headers"])

    def reply_path(self, conv, activity_id):
        return self.p(f"/v3/conversations/{enc(conv)}/activities/{enc(activity_id)}")

    def send_path(self, conv):
        return self.p(f"/v3/conversations/{enc(conv)}/activities")

    # tests --------------------------------------------------------------------------------------
    def test_personal_install_sends_one_welcome(self):
        conv = "a:personal-install-1"
        for a in self.acts.personal_install(conv):
            self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        # on_install uses ev:send → a top-level POST (no replyToId)
        self.assert_message(req, "POST", self.send_path(conv), "welcome personal", conv)
        self.assertIsNone(req["authorization"], "dev mode must send no Authorization header")
        self.assert_no_more(1, settle=0.8)

    def test_team_install_sends_one_welcome_to_channel(self):
        team = "19:team-inst@thread.tacv2"
        for a in self.acts.team_install(team):
            self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assert_message(req, "POST", self.send_path(team), "welcome channel", team)
        self.assert_no_more(1, settle=0.8)

    def test_group_install_sends_one_welcome(self):
        conv = "19:group-inst@thread.v2"
        for a in self.acts.group_install(conv):
            self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assert_message(req, "POST", self.send_path(conv), "welcome groupChat", conv)
        self.assert_no_more(1, settle=0.8)

    def test_message_reply(self):
        conv = "a:msg-1"
        a = self.acts.message(conv, "  hello world  ", id="1485983408511")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assert_message(req, "POST", self.reply_path(conv, "1485983408511"), "echo: hello world", conv,
                            reply_to="1485983408511")
        self.assert_no_more(1)

    def test_reply_path_ids_are_percent_encoded(self):
        conv = "a:1qhN LqpU/x,y=z"
        a = self.acts.message(conv, "enc", id="f:1;2@3")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["path"],
                         self.p("/v3/conversations/a%3A1qhN%20LqpU%2Fx%2Cy%3Dz/activities/f%3A1%3B2%403"))
        self.assertEqual(req["json"]["replyToId"], "f:1;2@3")

    def test_trailing_slash_service_url(self):
        a = self.acts.message("a:slash", "hi")
        a["serviceUrl"] = self.fc.url + "/amer/"
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["path"], f"/amer/v3/conversations/a%3Aslash/activities/{enc(a['id'])}")

    def test_channel_mention_stripped(self):
        team = "19:team1@thread.tacv2"
        a = self.acts.channel_message(team, "hello channel", mention_bot=True)
        conv = a["conversation"]["id"]
        self.assertEqual(a["text"], "<at>Test Bot</at> hello channel")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["path"],
                         self.p(f"/v3/conversations/19%3Ateam1%40thread.tacv2%3Bmessageid%3D1795236879257"
                                f"/activities/{enc(a['id'])}"))
        self.assert_message(req, "POST", self.reply_path(conv, a["id"]), "echo: hello channel", conv,
                            reply_to=a["id"])

    def test_event_fields(self):
        a = self.acts.message("a:who", "whoami", timezone="Europe/Berlin")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["json"]["text"],
                         f"user=29:user-1 aad=aad-user-1 tenant={TENANT} scope=personal tz=Europe/Berlin "
                         f"locale=en-US team=nil channel=nil")
        self.fc.clear()
        team = "19:team2@thread.tacv2"
        a = self.acts.channel_message(team, "whoami")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["json"]["text"],
                         f"user=29:user-1 aad=aad-user-1 tenant={TENANT} scope=channel tz=Europe/Berlin "
                         f"locale=en-US team={team} channel={team}")

    def test_ev_send_is_top_level(self):
        conv = "a:evsend"
        a = self.acts.message(conv, "send")
        self.post_ok(self.h, a)
        reqs = self.wait_requests(2)
        self.assert_message(reqs[0], "POST", self.send_path(conv), "top level", conv)
        rid = json.loads(reqs[0]["response"])["id"]
        self.assert_message(reqs[1], "POST", self.reply_path(conv, a["id"]), f"sent top level id={rid}", conv,
                            reply_to=a["id"])

    def test_card_attachment(self):
        conv = "a:card"
        a = self.acts.message(conv, "card")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        atts = req["json"].get("attachments")
        self.assertIsInstance(atts, list, req["body"])
        self.assertEqual([x.get("contentType") for x in atts], ["application/vnd.microsoft.card.adaptive"])
        self.assertEqual(atts[0]["content"]["type"], "AdaptiveCard")
        self.assertEqual(req["json"].get("text"), "with card")

    def test_proactive_send_update_delete(self):
        conv = "a:pro-1"
        a = self.acts.message(conv, "proactive")
        self.post_ok(self.h, a)
        reqs = self.wait_requests(4)
        self.assertEqual(reqs[0]["status"], 201, self.fc.summary())
        sent_id = json.loads(reqs[0]["response"])["id"]
        self.assertEqual([(r["method"], r["path"]) for r in reqs], [
            ("POST", self.send_path(conv)),
            ("PUT", self.p(f"/v3/conversations/a%3Apro-1/activities/{sent_id}")),
            ("DELETE", self.p(f"/v3/conversations/a%3Apro-1/activities/{sent_id}")),
            ("POST", self.reply_path(conv, a["id"])),
        ], self.fc.summary())
        self.assert_message(reqs[0], "POST", self.send_path(conv), "p1", conv)
        self.assertEqual(reqs[1]["json"].get("type"), "message")
        self.assertEqual(reqs[1]["json"].get("text"), "p1 edited")
        self.assertEqual(reqs[2]["body"], "")
        self.assert_message(reqs[3], "POST", self.reply_path(conv, a["id"]),
                            f"sent={sent_id} updated={sent_id} deleted=true codes=nil,nil,nil", conv,
                            reply_to=a["id"])
        self.assert_no_more(4)

    def test_create_one_on_one(self):
        conv = "a:ctl-1"
        a = self.acts.message(conv, f"create1on1 29:target-user {TENANT}")
        self.post_ok(self.h, a)
        reqs = self.wait_requests(3)
        create, send, reply = reqs
        self.assertEqual((create["method"], create["path"]), ("POST", self.p("/v3/conversations")),
                         self.fc.summary())
        j = create["json"]
        self.assertIs(j.get("isGroup"), False, create["body"])
        self.assertEqual(j.get("members"), [{"id": "29:target-user"}], create["body"])
        self.assertEqual(j.get("tenantId"), TENANT, create["body"])
        self.assertEqual(((j.get("channelData") or {}).get("tenant") or {}).get("id"), TENANT, create["body"])
        self.assertEqual((j.get("bot") or {}).get("id"), BOT_ID, create["body"])
        self.assert_message(send, "POST", self.p("/v3/conversations/a%3Aconv-1/activities"), "hello 1:1",
                            "a:conv-1")
        sid = json.loads(send["response"])["id"]
        self.assert_message(reply, "POST", self.reply_path(conv, a["id"]),
                            f"created=a:conv-1 sent={sid} code=nil", conv, reply_to=a["id"])
        self.assert_no_more(3)

    def test_create_channel_thread(self):
        # the bot is installed in the team first (Teams requires it); herald knows the channel's serviceUrl
        for a in self.acts.team_install("19:abc@thread.tacv2"):
            self.post_ok(self.h, a)
        self.wait_requests(1)
        self.assert_no_more(1, settle=0.3)   # the welcome(s), nothing else
        self.fc.clear()
        conv = "a:ctl-2"
        a = self.acts.message(conv, "thread 19:abc@thread.tacv2")
        self.post_ok(self.h, a)
        create, reply = self.wait_requests(2)
        self.assertEqual((create["method"], create["path"]), ("POST", self.p("/v3/conversations")),
                         self.fc.summary())
        j = create["json"]
        self.assertIs(j.get("isGroup"), True, create["body"])
        self.assertEqual(j["channelData"]["channel"]["id"], "19:abc@thread.tacv2", create["body"])
        self.assertEqual((j.get("activity") or {}).get("type"), "message", create["body"])
        self.assertEqual((j.get("activity") or {}).get("text"), "thread start", create["body"])
        aid = json.loads(create["response"])["activityId"]
        self.assertEqual(reply["json"]["text"],
                         f"thread=19:abc@thread.tacv2;messageid={aid} activity={aid}")
        self.assert_no_more(2)

    def test_error_codes(self):
        for conv, user in (("a:blocked-user", "29:ub"), ("a:gone-user", "29:ug")):
            for a in self.acts.personal_install(conv, user=self.acts.user(user)):
                self.post_ok(self.h, a)
        self.wait_requests(2)
        self.assert_no_more(2, settle=0.3)   # the welcome(s), nothing else
        self.fc.clear()
        self.fc.inject("a:blocked-user", 403, body=fake_connector.MESSAGE_WRITES_BLOCKED)
        self.fc.inject("a:gone-user", 404, body=fake_connector.CONVERSATION_NOT_FOUND)
        ctl = "a:ctl-err"
        cases = [("a:blocked-user", "blocked"), ("a:gone-user", "not_found")]
        for target, code in cases:
            self.fc.clear_faults()
            self.fc.inject("a:blocked-user", 403, body=fake_connector.MESSAGE_WRITES_BLOCKED)
            self.fc.inject("a:gone-user", 404, body=fake_connector.CONVERSATION_NOT_FOUND)
            before = len(self.fc.snapshot())
            a = self.acts.message(ctl, f"probe {target}")
            self.post_ok(self.h, a)
            reqs = self.fc.wait_until(
                lambda r: r if any(x["conversation_id"] == ctl for x in r[before:]) else None,
                what=f"reply to probe {target}")
            mine = reqs[before:]
            to_target = [x for x in mine if x["conversation_id"] == target]
            self.assertEqual(len(to_target), 1, f"{target}: expected one attempt (no retry of {code}), "
                                                f"got {self.fc.summary()}")
            self.assertEqual(to_target[0]["path"], self.send_path(target))
            reply = [x for x in mine if x["conversation_id"] == ctl][0]
            self.assertEqual(reply["json"]["text"], f"probe id=nil code={code}")

    def test_error_code_through_reference_table(self):
        self.fc.inject("a:ref-gone", 404, body=fake_connector.CONVERSATION_NOT_FOUND)
        a = self.acts.message("a:ctl-ref", "proberef a:ref-gone")
        self.post_ok(self.h, a)
        reqs = self.fc.wait_until(lambda r: [x for x in r if x["conversation_id"] == "a:ctl-ref"] or None)
        self.assertEqual(reqs[0]["json"]["text"], "probe id=nil code=not_found")

    def test_unknown_conversation(self):
        a = self.acts.message("a:ctl-unk", "probe a:never-seen")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        self.assertEqual(req["json"]["text"], "probe id=nil code=unknown_conversation", self.fc.summary())
        self.assert_no_more(1)

    def test_redelivery_runs_handler_once(self):
        conv = "a:redeliver"
        a = self.acts.message(conv, "once", id="redeliver-1")
        self.assertEqual(self.h.post_activity(a)[0], 200)
        self.wait_requests(1)
        self.assertEqual(self.h.post_activity(a)[0], 200)
        self.assert_no_more(1, settle=0.8)
        b = self.acts.message(conv, "twice", id="redeliver-2")
        self.post_ok(self.h, b)
        reqs = self.wait_requests(2)
        self.assertEqual([r["json"]["text"] for r in reqs], ["echo: once", "echo: twice"])
        # same activity id in another conversation is a different activity
        c = self.acts.message("a:redeliver-other", "other", id="redeliver-1")
        self.post_ok(self.h, c)
        self.wait_requests(3)

    def test_invoke_response_body(self):
        a = self.acts.invoke("a:inv", "adaptiveCard/action", {"x": "42"})
        st, body = self.h.post_activity(a)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"statusCode": 200, "type": "application/vnd.microsoft.activity.message",
                                            "value": "invoked adaptiveCard/action x=42"})
        self.assert_no_more(0, settle=0.3)

    def test_json_integers_are_lua_integers(self):
        # Not spelled out in API_DRAFT.md: an integral JSON number in ev.value should be a Lua integer,
        # so that "x=" .. ev.value.x gives "x=42", not "x=42.0".
        a = self.acts.invoke("a:inv-int", "adaptiveCard/action", {"x": 42})
        st, body = self.h.post_activity(a)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body).get("value"), "invoked adaptiveCard/action x=42")

    def test_references_listed_and_uninstall_marks(self):
        acts = self.acts
        installs = (acts.personal_install("a:ref-A", user=acts.user("29:ua")) +
                    acts.personal_install("a:ref-B", user=acts.user("29:ub")) +
                    acts.group_install("19:gc-ref@thread.v2"))
        for a in installs:
            self.post_ok(self.h, a)
        self.wait_requests(3)
        self.assert_no_more(3, settle=0.3)   # the welcome(s), nothing else
        self.fc.clear()

        def ask(text):
            before = len(self.fc.snapshot())
            self.post_ok(self.h, acts.message("a:ref-A", text, user=acts.user("29:ua")))
            return self.fc.wait_for(before + 1)[before]["json"]["text"]

        self.assertEqual(ask("count"), "count=3 ids=19:gc-ref@thread.v2,a:ref-A,a:ref-B")
        self.post_ok(self.h, acts.uninstall("a:ref-B", user=acts.user("29:ub")))
        self.assertEqual(ask("count"), "count=2 ids=19:gc-ref@thread.v2,a:ref-A")
        self.assertEqual(ask("countall"), "count=3 ids=19:gc-ref@thread.v2,a:ref-A,a:ref-B")
        self.assertEqual(ask("countscope personal"), "count=1 ids=a:ref-A")
        self.assertEqual(ask("countscope groupChat"), "count=1 ids=19:gc-ref@thread.v2")


    # ---- hooks ----------------------------------------------------------------------------------
    def stats(self, conv="a:stats"):
        before = len(self.fc.snapshot())
        self.post_ok(self.h, self.acts.message(conv, "stats"))
        reqs = self.fc.wait_until(
            lambda r: [x for x in r[before:] if x["conversation_id"] == conv] or None, what="stats reply")
        return reqs[0]["json"]["text"]

    def test_install_and_uninstall_hooks_run_once(self):
        conv = "a:hooks-1"
        for a in self.acts.personal_install(conv):
            self.post_ok(self.h, a)
        self.wait_requests(1)
        # uninstall arrives as installationUpdate(remove) and conversationUpdate(bot in membersRemoved)
        self.post_ok(self.h, self.acts.uninstall(conv))
        cu = self.acts.envelope("conversationUpdate", conv, membersRemoved=[{"id": BOT_ID}])
        self.post_ok(self.h, cu)
        self.assertEqual(self.stats(), "install=1 uninstall=1 added=0 removed=0")
        self.assertEqual(len([r for r in self.fc.snapshot() if r["conversation_id"] == conv]), 1,
                         self.fc.summary())

    def test_members_added_sees_only_non_bot_members(self):
        gc = "19:members@thread.v2"
        for a in self.acts.group_install(gc):
            self.post_ok(self.h, a)
        self.wait_requests(1)  # welcome
        add = self.acts.members_added(gc, [{"id": "29:new-1", "aadObjectId": "aad-new-1"}, {"id": BOT_ID},
                                           {"id": "29:new-2"}], scope="groupChat")
        self.post_ok(self.h, add)
        reqs = self.wait_requests(2)
        self.assert_message(reqs[1], "POST", self.send_path(gc), "members added: 29:new-1,29:new-2", gc)
        removed = self.acts.envelope("conversationUpdate", gc, scope="groupChat",
                                     membersRemoved=[{"id": "29:new-1"}])
        self.post_ok(self.h, removed)
        self.assertEqual(self.stats(), "install=1 uninstall=0 added=1 removed=1")

    def test_members_hook_not_run_in_personal_chat(self):
        conv = "a:members-personal"
        for a in self.acts.personal_install(conv):
            self.post_ok(self.h, a)
        self.wait_requests(1)
        self.assertEqual(self.stats(), "install=1 uninstall=0 added=0 removed=0")

    def test_rich_message_fields(self):
        conv = "a:rich"
        a = self.acts.message(conv, "rich")
        self.post_ok(self.h, a)
        req = self.wait_requests(1)[0]
        j = req["json"]
        self.assertEqual(j.get("text"), "Hi <at>Alex</at>", req["body"])
        self.assertEqual(j.get("textFormat"), "markdown", req["body"])
        mentions = [e for e in j.get("entities") or [] if e.get("type") == "mention"]
        self.assertEqual(mentions, [{"type": "mention", "text": "<at>Alex</at>",
                                     "mentioned": {"id": "29:user-1", "name": "Alex"}}], req["body"])
        self.assertEqual(j.get("summary"), "sum", req["body"])
        self.assertEqual(j.get("importance"), "high", req["body"])
        self.assertIs(((j.get("channelData") or {}).get("notification") or {}).get("alert"), True, req["body"])

    # ---- connector failures ---------------------------------------------------------------------
    def probe_code(self, target, ctl):
        before = len(self.fc.snapshot())
        self.post_ok(self.h, self.acts.message(ctl, f"proberef {target}"))
        reqs = self.fc.wait_until(
            lambda r: [x for x in r[before:] if x["conversation_id"] == ctl] or None, timeout=60,
            what=f"reply to proberef {target}")
        return reqs[0]["json"]["text"]

    def test_connection_reset_gives_network(self):
        self.fc.inject("a:reset-target", fake_connector.RESET)
        self.assertEqual(self.probe_code("a:reset-target", "a:ctl-reset"), "probe id=nil code=network")

    def test_server_error_gives_unavailable(self):
        self.fc.inject("a:500-target", 500, body=fake_connector.SERVICE_ERROR)
        self.assertEqual(self.probe_code("a:500-target", "a:ctl-500"), "probe id=nil code=unavailable")

    @unittest.skipUnless(os.environ.get("HERALD_TEST_PENDING"),
                         "pending: 429 retry with Retry-After (PROTOCOL.md §5.2, DESIGN.md outbox) is not in "
                         "API_DRAFT.md yet; run with HERALD_TEST_PENDING=1")
    def test_throttled_then_ok_is_retried_after_retry_after(self):
        # PROTOCOL.md §5.2/§6.1: 429 is retryable, honour Retry-After
        self.fc.inject("a:429-target", 429, body=fake_connector.THROTTLED, headers={"Retry-After": "1"}, times=1)
        text = self.probe_code("a:429-target", "a:ctl-429")
        tries = [r for r in self.fc.snapshot() if r["conversation_id"] == "a:429-target"]
        self.assertEqual([r["status"] for r in tries], [429, 201], self.fc.summary())
        self.assertGreaterEqual(tries[1]["time"] - tries[0]["time"], 0.9, "Retry-After: 1 not honoured")
        self.assertEqual(text, f"probe id={json.loads(tries[1]['response'])['id']} code=nil")


if __name__ == "__main__":
    unittest.main()
