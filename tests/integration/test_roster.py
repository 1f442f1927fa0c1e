"""test_roster.py — teams.members / members_page / member / channels / team (issue 8) against the
fake connector's paged roster: 2,500 members in pages of at most 500, continuation tokens with
"+", "/" and "=", an error in the middle of paging."""
import json
import unittest

from harness import HeraldTestCase, bot, require_binary

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

    def test_error_mid_paging_raises(self):
        self.fc.set_roster(TEAM, N, page_max=500, fail_page=3, fail_status=500)
        r = self.ctl(cmd="members", target=TEAM, page_size=500)
        self.assertEqual(r["count"], 1000, r)               # two pages came before the failure
        self.assertIsNotNone(r.get("error"), r)
        self.assertRegex(r["error"], r"teams\.members: .+ \(.+\)")
        self.fc.set_roster(TEAM, N, page_max=500, fail_page=2, fail_status=403)
        r = self.ctl(cmd="members", target=TEAM, page_size=500)
        self.assertEqual(r["count"], 500, r)
        self.assertRegex(r.get("error") or "", r"teams\.members: ")
        # unknown target: no request at all, an error
        r = self.ctl(cmd="members", target="19:unknown@thread.tacv2")
        self.assertRegex(r.get("error") or "", r"unknown_conversation")

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


if __name__ == "__main__":
    unittest.main()
