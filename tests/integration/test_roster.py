"""test_roster.py — teams.members / members_page / member / channels / team (issue 8) against the
fake connector's paged roster: 2,500 members in pages of at most 500, continuation tokens with
"+", "/" and "=", errors and timeouts on the first page and in the middle of paging (issue 12,
bug 7: they end the loop with members.error / members.code, never raise)."""
import json
import unittest


from harness import TENANT, HeraldTestCase, bot, fake_connector, require_binary, tf

TEAM = "19:roster-team@thread.tacv2"
N = 2500


@require_binary
class RosterTest(HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.h = self.start_herald(bot("broadcast_bot.lua"), env={"HERALD_RESPONSE_DEADLINE_MS": 30000})
        for a in self.acts.team_install(TEAM, "Roster Team"):
            self.post_ok(self.h, a)
        self.fc.set_team(TEAM, name="Roster Team", aad_group_id="aad-group-roster",
                         channels=[{"id": "19:ops@thread.tacv2", "name": "Ops"},
                                   {"id": "19:dev@thread.tacv2", "name": "Dev"}])
        self.fc.clear()

    def ctl(self, **kw):
        st, text, _ = self.h.request("POST", "/api/notify/ctl", json.dumps(kw).encode(), timeout=60)
        self.assertEqual(st, 200, f"{kw}: {st} {text}\n{self.h.log[-2000:]}")
        return json.loads(text)

    def gets(self):
        return [r for r in self.fc.snapshot() if r["method"] == "GET"]

    def test_members_iterator_pages_2500(self):
        self.fc.set_roster(TEAM, N, page_max=500)
        r = self.ctl(cmd="members", target=TEAM, page_size=500)
        self.assertIsNone(r.get("error"), r)
        self.assertEqual(r["count"], N)
        self.assertEqual(r["unique"], N, "duplicate members")
        self.assertEqual(r["first"]["id"], "29:r-0")
        self.assertEqual(r["last"]["id"], f"29:r-{N - 1}")
        self.assertEqual(r["first"]["aad_object_id"], "aad-r-000000")
        self.assertEqual(r["first"]["user_principal_name"], "user0@example.test")
        self.assertEqual(r["first"]["tenant"], "tenant-r")
        pages = self.fc.page_requests(TEAM)
        self.assertEqual(len(pages), N // 500, pages)
        self.assertEqual(pages[0], ("500", None))
        self.assertEqual([p[1] for p in pages[1:]], [f"ct+{k}/{len(TEAM)}==" for k in range(500, N, 500)])
        for g in self.gets():
            self.assertRegex(g["path"], r"^/_connector/v3/conversations/[^/]+/pagedmembers$")
            self.assertEqual(g["decoded_path"], f"/_connector/v3/conversations/{TEAM}/pagedmembers")

    def test_default_page_size_and_server_cap(self):
        self.fc.set_roster(TEAM, N, page_max=500)
        r = self.ctl(cmd="members", target=TEAM)            # default page size
        self.assertEqual((r["count"], r["unique"]), (N, N), r)
        n_default = len(self.fc.page_requests(TEAM))
        self.fc.set_roster(TEAM, N, page_max=300)            # the server gives less than asked
        r = self.ctl(cmd="members", target=TEAM, page_size=500)
        self.assertEqual((r["count"], r["unique"]), (N, N), r)
        self.assertEqual(len(self.fc.page_requests(TEAM)), -(-N // 300))
        self.assertGreaterEqual(n_default, N // 500)

    def test_members_page_by_hand(self):
        self.fc.set_roster(TEAM, 700, page_max=500)
        r = self.ctl(cmd="page", target=TEAM, size=500)
        self.assertEqual(r["members"], 500)
        self.assertIsInstance(r["token"], str)
        r2 = self.ctl(cmd="page", target=TEAM, token=r["token"], size=500)
        self.assertEqual(r2["members"], 200)
        self.assertIsNone(r2.get("token"), r2)
        self.assertEqual(r2["first"]["id"], "29:r-500")

    def test_error_ends_the_loop_with_its_code(self):
        """Bug 7 (issue 12): a connector error while paging ends the loop after the members read
        so far and leaves members.error / members.code; the handler goes on (it used to raise)."""
        for fail_page, status, code, count in ((1, 500, "unavailable", 0), (3, 500, "unavailable", 1000),
                                               (1, 404, "not_found", 0), (2, 404, "not_found", 500),
                                               (2, 403, "forbidden", 500)):
            with self.subTest(fail_page=fail_page, status=status):
                self.fc.set_roster(TEAM, N, page_max=500, fail_page=fail_page, fail_status=status)
                r = self.ctl(cmd="members", target=TEAM, page_size=500)
                self.assertEqual(r["count"], count, r)      # the pages before the failure
                self.assertEqual(r.get("code"), code, r)
                self.assertIsInstance(r.get("error"), str, r)
        self.assertIn("the roster ended early, after 1000 members", self.h.log)
        self.assertNotIn("handler failed", self.h.log)
        # unknown target: no request at all, the same form
        n = len(self.gets())
        r = self.ctl(cmd="members", target="19:unknown@thread.tacv2")
        self.assertEqual((r["count"], r.get("code")), (0, "unknown_conversation"), r)
        self.assertEqual(len(self.gets()), n)

    def test_member_channels_team_errors_are_answers(self):
        self.fc.inject("re:/members/", 500, body={"error": {"code": "ServiceError"}})
        self.fc.inject("re:/v3/teams/", 404, body={"error": {"code": "NotFound"}})
        r = self.ctl(cmd="member", target=TEAM, id="29:r-7")["r"]
        self.assertEqual(r.get("c"), "unavailable", r)
        self.assertIsInstance(r.get("b"), str, r)
        self.assertEqual(self.ctl(cmd="channels", team=TEAM)["r"].get("c"), "not_found")
        self.assertEqual(self.ctl(cmd="team", team=TEAM)["r"].get("c"), "not_found")
        self.assertNotIn("handler failed", self.h.log)


    def test_member_channels_team(self):
        self.fc.set_roster(TEAM, 50)
        r = self.ctl(cmd="member", target=TEAM, id="29:r-7")["r"]
        self.assertEqual(r["a"]["id"], "29:r-7")
        self.assertEqual(r["a"]["name"], "User 7")
        self.assertEqual(r["a"]["aad_object_id"], "aad-r-000007")
        self.assertEqual(r["a"]["email"], "user7@example.test")
        self.assertEqual(r["a"]["given_name"], "User")
        self.assertEqual(r["a"]["surname"], "7")
        self.assertEqual(r["a"]["role"], "user")
        r = self.ctl(cmd="member", target=TEAM, id="user8@example.test")["r"]   # by UPN
        self.assertEqual(r["a"]["id"], "29:r-8")
        r = self.ctl(cmd="member", target=TEAM, id="29:nobody")["r"]
        self.assertNotIn("a", r)
        self.assertIsInstance(r.get("b"), str)
        self.assertIsInstance(r.get("c"), str)

        r = self.ctl(cmd="channels", team=TEAM)["r"]["a"]
        self.assertEqual([c["id"] for c in r], [TEAM, "19:ops@thread.tacv2", "19:dev@thread.tacv2"])
        self.assertEqual([c["name"] for c in r], ["General", "Ops", "Dev"])

        r = self.ctl(cmd="team", team=TEAM)["r"]["a"]
        self.assertEqual(r["id"], TEAM)
        self.assertEqual(r["name"], "Roster Team")
        self.assertEqual(r["aad_group_id"], "aad-group-roster")
        self.assertEqual(r["member_count"], 50)
        self.assertEqual(r["channel_count"], 3)
        self.assertEqual(r["type"], "standard")
        paths = sorted(g["decoded_path"] for g in self.gets())
        self.assertIn(f"/_connector/v3/teams/{TEAM}/conversations", paths)
        self.assertIn(f"/_connector/v3/teams/{TEAM}", paths)
        self.assertIn(f"/_connector/v3/conversations/{TEAM}/members/29:r-7", paths)

    def test_dm_from_roster_keeps_name_and_aad(self):
        """Bug 8 (issue 12): a 1:1 created for a roster member stores the member's name and
        Entra id, given the id (recalled from the roster read) or the member table."""
        self.fc.set_roster(TEAM, 3, tenant=TENANT)     # the roster's tenant is the team's
        for whole in (False, True):
            r = self.ctl(cmd="dm", team=TEAM, whole=whole)
            self.assertNotIn("error", r, r)
            self.assertEqual([(x["name"], x["aad"]) for x in r["list"]],
                             [(f"User {i}", f"aad-r-{i:06d}") for i in range(3)], r)

    def test_ledger(self):
        self.fc.set_roster(TEAM, 2, tenant=TENANT)
        convs = [x["conversation"] for x in self.ctl(cmd="dm", team=TEAM)["list"]]
        self.fc.inject(convs[0], 403, body=fake_connector.MESSAGE_WRITES_BLOCKED)
        self.fc.inject(convs[1], 404, body={"error": {"code": "ConversationNotFound", "message": "gone"}})
        for c in convs:
            self.ctl(cmd="send", conv=c)
        entries = self.ctl(cmd="ledger")["entries"]
        self.assertEqual(sorted((e["conversation"], e["state"]) for e in entries),
                         sorted([(convs[0], "blocked"), (convs[1], "gone")]), entries)
        blocked = self.ctl(cmd="ledger", filter={"state": "blocked"})["entries"]
        self.assertEqual([e["conversation"] for e in blocked], [convs[0]])
        self.assertEqual(blocked[0]["user_name"], "User 0")
        self.assertEqual(blocked[0]["code"], "MessageWritesBlocked")   # Teams' own code
        self.assertIsInstance(blocked[0]["since"], int)


@require_binary
class RosterTimeoutTest(HeraldTestCase):
    """A roster page that never comes: the connector timeout ends the loop with code timeout,
    on the first page and on a later one."""
    def setUp(self):
        super().setUp()
        self.h = self.start_herald(bot("broadcast_bot.lua"), env={
            "HERALD_RESPONSE_DEADLINE_MS": 60000, "HERALD_CONNECTOR_TIMEOUT_MS": int(tf(2) * 1000)})
        for a in self.acts.team_install(TEAM, "Roster Team"):
            self.post_ok(self.h, a)
        self.fc.set_roster(TEAM, 1200, page_max=500)

    def ctl(self, **kw):
        st, text, _ = self.h.request("POST", "/api/notify/ctl", json.dumps(kw).encode(), timeout=tf(60))
        self.assertEqual(st, 200, f"{kw}: {st} {text}\n{self.h.log[-2000:]}")
        return json.loads(text)

    def test_first_page_times_out(self):
        gate = self.fc.hold(match="re:/pagedmembers", limit_s=tf(30))
        try:
            r = self.ctl(cmd="members", target=TEAM, page_size=500)
        finally:
            gate.release()
        self.assertEqual((r["count"], r.get("code")), (0, "timeout"), r)

    def test_later_page_times_out(self):
        # answered normally once, then held past the timeout: injections are checked newest first
        self.fc.inject("re:/pagedmembers", None, delay=tf(2) + 5)
        self.fc.inject("re:/pagedmembers", None, times=1)
        r = self.ctl(cmd="members", target=TEAM, page_size=500)
        self.assertEqual((r["count"], r.get("code")), (500, "timeout"), r)
        self.assertNotIn("handler failed", self.h.log)


if __name__ == "__main__":
    unittest.main()
