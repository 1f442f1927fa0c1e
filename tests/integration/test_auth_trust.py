"""Authenticated mode, serviceUrl trust (issue 3): the bearer token goes only to service URLs that
came in a validated activity, the cloud's own endpoint, HERALD_TRUSTED_SERVICE_URLS, or a stored
reference whose seal (HMAC keyed by the app secret) verifies. A tampered database row or a
script-supplied URL is refused with "untrusted_service_url" and the attacker receives nothing."""
import json
import re
import sqlite3
import time
import unittest

from harness import AuthHeraldTestCase, FakeConnector, require_binary, tf

RESULT = r"AUTHBOT {cmd} tag={tag} id=(\S+) code=(\S+) msg=(.*)"


@require_binary
class ServiceUrlTrustTest(AuthHeraldTestCase):
    def setUp(self):
        super().setUp()
        self.attacker = FakeConnector().start()   # records whatever reaches it, token or not

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.attacker.stop()

    def command(self, h, conv, text, cmd, tag):
        """Posts a validated message whose handler runs text; returns (id, code, msg) it logged."""
        before = len(re.findall(RESULT.format(cmd=cmd, tag=re.escape(tag)), h.log))
        st, body = h.post_activity(self.acts.message(conv, text))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        deadline = time.monotonic() + tf(15)
        while True:
            found = re.findall(RESULT.format(cmd=cmd, tag=re.escape(tag)), h.log)
            if len(found) > before:
                return found[before]
            if time.monotonic() > deadline:
                self.fail(f"no result for {text!r}; log tail:\n{h.log[-2000:]}")
            time.sleep(0.05)

    def tamper(self, db, conv, **cols):
        c = sqlite3.connect(db, timeout=10)
        try:
            sets = ", ".join(f"{k} = ?" for k in cols)
            n = c.execute(f"UPDATE conversations SET {sets} WHERE id = ?", (*cols.values(), conv)).rowcount
            c.commit()
        finally:
            c.close()
        self.assertEqual(n, 1, f"no row for {conv}")

    def row(self, db, conv):
        c = sqlite3.connect(db, timeout=10)
        try:
            c.row_factory = sqlite3.Row
            r = c.execute("SELECT * FROM conversations WHERE id = ?", (conv,)).fetchone()
            return dict(r) if r else None
        finally:
            c.close()

    def test_tampered_service_url_in_the_database_is_refused(self):
        h = self.start_auth_herald()
        x, y = "a:victim-x", "a:operator-y"
        self.command(h, x, "quiet seen", "quiet", "seen")        # a validated activity for X
        stored = self.row(h.db, x)
        self.assertEqual(stored["service_url"], self.acts.service_url)
        self.assertRegex(stored.get("service_url_seal") or "", r"^[0-9a-f]{64}$", stored)
        # before tampering: a proactive send to X goes to the real connector with the token
        _, code, msg = self.command(h, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "nil", msg)
        self.fc.wait_until(lambda rs: [r for r in rs if r["conversation_id"] == x], what="the send to X")
        evil = self.attacker.url + "/_connector"
        self.tamper(h.db, x, service_url=evil)
        for cmd, text in (("probe", f"probe {x}"), ("update", f"update {x} 1001"), ("delete", f"delete {x} 1001")):
            with self.subTest(call=cmd):
                _, code, msg = self.command(h, y, text, cmd, x)
                self.assertEqual(code, "untrusted_service_url", msg)
        time.sleep(tf(0.3))                   # nothing reaches the attacker late
        self.assertEqual(self.attacker.snapshot(), [], "the attacker's endpoint was contacted")
        self.assertIn("refused to send the bot's token to an untrusted service URL", h.log)
        # also with the seal of another (genuine) row, and with a made-up seal
        other = self.row(h.db, y)["service_url_seal"]
        for seal in (other, "0" * 64, None):
            with self.subTest(seal=seal):
                self.tamper(h.db, x, service_url=evil, service_url_seal=seal)
                _, code, msg = self.command(h, y, f"probe {x}", "probe", x)
                self.assertEqual(code, "untrusted_service_url", msg)
        self.assertEqual(self.attacker.snapshot(), [])

    def test_tampering_is_refused_after_a_restart(self):
        h = self.start_auth_herald()
        x, z, y = "a:sealed-x", "a:sealed-z", "a:sealed-y"
        for conv in (x, z):
            self.command(h, conv, "quiet seen", "quiet", "seen")
        h.stop()
        self.tamper(h.db, x, service_url=self.attacker.url + "/_connector")
        # a fresh process: Z (untouched) still works, X (tampered while herald was down) does not
        h2 = self.start_auth_herald(db=h.db)
        _, code, msg = self.command(h2, y, f"probe {z}", "probe", z)
        self.assertEqual(code, "nil", msg)
        _, code, msg = self.command(h2, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "untrusted_service_url", msg)
        time.sleep(tf(0.3))                   # nothing reaches the attacker late
        self.assertEqual(self.attacker.snapshot(), [])

    def test_seal_is_keyed_by_the_secret(self):
        from harness import AUTH_APP_ID, Activities, AuthCheckingConnector
        from token_service import TokenService
        # X's activity comes from a second ("regional") connector URL: after a restart, only X's
        # seal can make that URL trusted
        ts2 = TokenService(client_id=AUTH_APP_ID, client_secret=self.secret + "-rotated").start()
        self._services.append(ts2)
        regional = AuthCheckingConnector(lambda t: self.ts.is_issued(t) or ts2.is_issued(t)).start()
        self.addCleanup(regional.stop)
        racts = Activities(regional.url + "/emea")
        x, y = "a:regional-x", "a:regional-y"
        h = self.start_auth_herald()
        st, body = h.post_activity(racts.message(x, "quiet seen"))
        self.assertEqual(st, 200, body)
        h.wait_log(r"AUTHBOT quiet tag=seen")
        h.stop()
        # another secret (same app id, same database, untouched row): the seal does not verify
        self.fc.token_ok = lambda t: self.ts.is_issued(t) or ts2.is_issued(t)
        h2 = self.start_auth_herald(ts=ts2, db=h.db)
        _, code, msg = self.command(h2, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "untrusted_service_url", msg)
        h2.stop()
        self.assertEqual(regional.snapshot(), [])
        # the original secret: the same row is trusted through its seal
        h3 = self.start_auth_herald(db=h.db)
        _, code, msg = self.command(h3, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "nil", msg)
        got = regional.wait_for(1)
        self.assertEqual(got[0]["authorization"], "Bearer " + self.ts.issued[-1])
        self.assertTrue(got[0]["path"].startswith("/emea/v3/conversations/"), got[0]["path"])

    def test_script_supplied_reference_with_untrusted_service_url_is_refused(self):
        h = self.start_auth_herald()
        y = "a:script-y"
        self.command(h, y, "quiet seen", "quiet", "seen")
        a = self.attacker
        fc_host = self.fc.url[len("http://"):]
        urls = [
            a.url + "/_connector",
            a.url,
            "https://smba.trafficmanager.net.evil.example/teams/",   # look-alike of the cloud host
            f"http://{fc_host}@127.0.0.1:{a.port}/_connector",     # userinfo naming the trusted host
            self.acts.service_url + "@127.0.0.1:%d" % a.port,
            "ftp://127.0.0.1/_connector",
        ]
        for i, url in enumerate(urls):
            with self.subTest(url=url):
                conv = f"a:script-ref-{i}"
                _, code, msg = self.command(h, y, f"proberef {conv} {url}", "proberef", conv)
                self.assertEqual(code, "untrusted_service_url", msg)
        time.sleep(tf(0.3))                   # nothing reaches the attacker late
        self.assertEqual(a.snapshot(), [], "the attacker's endpoint was contacted")
        # the validated URL itself is fine in a reference table
        _, code, msg = self.command(h, y, f"proberef a:script-ok {self.acts.service_url}", "proberef",
                                    "a:script-ok")
        self.assertEqual(code, "nil", msg)

    def test_forged_activity_cannot_plant_a_service_url(self):
        h = self.start_auth_herald()
        x, y = "a:plant-x", "a:plant-y"
        self.command(h, x, "quiet seen", "quiet", "seen")
        evil = self.attacker.url + "/_connector"
        forged = self.acts.message(x, "attack-plant")
        forged["serviceUrl"] = evil
        for auth in (None, "Bearer " + self.mint(self.acts.service_url),   # token for the real URL
                     "Bearer " + self.mint(evil, aud="someone-else")):    # token naming evil, bad aud
            st, _, _ = h.request("POST", "/api/messages", json.dumps(forged).encode(),
                                 {} if auth is None else {"Authorization": auth})
            self.assertEqual(st, 401)
        self.assertEqual(self.row(h.db, x)["service_url"], self.acts.service_url)
        _, code, msg = self.command(h, y, f"proberef {x} {evil}", "proberef", x)
        self.assertEqual(code, "untrusted_service_url", msg)
        _, code, msg = self.command(h, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "nil", msg)
        time.sleep(tf(0.3))                   # nothing reaches the attacker late
        self.assertEqual(self.attacker.snapshot(), [])

    def broadcast_rows(self, db, bid):
        """Waits until broadcast bid is done; returns its recipient rows in order."""
        deadline = time.monotonic() + tf(15)
        while True:
            c = sqlite3.connect(db, timeout=10)
            try:
                c.row_factory = sqlite3.Row
                job = c.execute("SELECT state FROM broadcasts WHERE id = ?", (bid,)).fetchone()
                rows = [dict(r) for r in c.execute(
                    "SELECT * FROM broadcast_recipients WHERE broadcast_id = ? ORDER BY seq", (bid,))]
            finally:
                c.close()
            if job and job["state"] == "done":
                return rows
            if time.monotonic() > deadline:
                self.fail(f"broadcast {bid} not done: {job and dict(job)} {rows}")
            time.sleep(0.1)

    def test_a_broadcast_gets_the_refusal_a_send_gets(self):
        """send_policy.c (issue 13): a broadcast recipient passes the checks teams.send passes and
        ends with the code teams.send returns, before anything is queued, for a stored
        conversation and for a 1:1 it would create from a tenant's (tampered) reference."""
        from harness import Activities
        h = self.start_auth_herald()
        x, y, x2 = "a:bc-victim-x", "a:bc-operator-y", "a:bc-victim-x2"
        self.command(h, x, "quiet seen", "quiet", "seen")
        self.command(h, y, "quiet seen", "quiet", "seen")
        other = Activities(self.acts.service_url, tenant="tenant-tampered")   # x2: its only conversation
        st, body = h.post_activity(other.message(x2, "quiet seen-x2"))
        self.assertEqual(st, 200, body)
        h.wait_log(r"AUTHBOT quiet tag=seen-x2")
        evil = self.attacker.url + "/_connector"
        self.tamper(h.db, x, service_url=evil)
        self.tamper(h.db, x2, service_url=evil)
        _, code, msg = self.command(h, y, f"probe {x}", "probe", x)
        self.assertEqual(code, "untrusted_service_url", msg)
        bid, code, msg = self.command(h, y, f"bcast b1 {x},{y}", "bcast", "b1")
        self.assertEqual(code, "nil", msg)
        rows = {r["conversation_id"]: r for r in self.broadcast_rows(h.db, int(bid))}
        self.assertEqual((rows[x]["state"], rows[x].get("code"), rows[x]["op_id"]),
                         ("rejected", "untrusted_service_url", None), rows[x])
        self.assertEqual(rows[y]["state"], "sent", rows[y])
        # a user of that tenant: no 1:1 is even queued at the tampered URL
        bid, code, msg = self.command(h, y, "bcastu b2 tenant-tampered 29:bc-new", "bcastu", "b2")
        self.assertEqual(code, "nil", msg)
        rows = self.broadcast_rows(h.db, int(bid))
        self.assertEqual([(r["state"], r.get("code"), r["op_id"]) for r in rows],
                         [("rejected", "untrusted_service_url", None)], rows)
        time.sleep(tf(0.3))                   # nothing reaches the attacker late
        self.assertEqual(self.attacker.snapshot(), [], "the attacker's endpoint was contacted")

    def test_a_broadcast_creates_a_1to1_where_create_conversation_may(self):
        """After a restart a regional service URL is trusted only through its stored seal:
        teams.create_conversation passes the tenant reference's seal, and so does a broadcast to a
        user with no 1:1 yet (it was refused before send_policy.c); the 1:1 it stores is sealed."""
        from harness import Activities, AuthCheckingConnector
        regional = AuthCheckingConnector(self.ts.is_issued).start()
        self.addCleanup(regional.stop)
        racts = Activities(regional.url + "/emea", tenant="tenant-emea")
        x, y = "a:emea-x", "a:emea-y"
        h = self.start_auth_herald()
        st, body = h.post_activity(racts.message(x, "quiet seen"))
        self.assertEqual(st, 200, body)
        h.wait_log(r"AUTHBOT quiet tag=seen")
        h.stop()
        h2 = self.start_auth_herald(db=h.db)
        bid, code, msg = self.command(h2, y, "bcastu b3 tenant-emea 29:emea-new", "bcastu", "b3")
        self.assertEqual(code, "nil", msg)
        rows = self.broadcast_rows(h2.db, int(bid))
        self.assertEqual([(r["state"], r.get("code")) for r in rows], [("sent", None)], rows)
        got = regional.snapshot()
        self.assertEqual([(r["method"], r["path"].split("/v3/")[0]) for r in got],
                         [("POST", "/emea"), ("POST", "/emea")], got)
        made = self.row(h2.db, rows[0]["conversation_id"])
        self.assertEqual(made["service_url"], racts.service_url)
        self.assertRegex(made.get("service_url_seal") or "", r"^[0-9a-f]{64}$", made)

    def test_configured_trusted_prefix(self):
        partner = self.attacker   # here a legitimate, configured endpoint: it must get the real token
        prefix = partner.url + "/teams"
        h = self.start_auth_herald(env={"HERALD_TRUSTED_SERVICE_URLS": f"https://example.invalid/x, {prefix}"})
        y = "a:prefix-y"
        self.command(h, y, "quiet seen", "quiet", "seen")
        _, code, msg = self.command(h, y, f"proberef a:prefix-ok {prefix}/amer/", "proberef", "a:prefix-ok")
        self.assertEqual(code, "nil", msg)
        got = partner.wait_for(1)
        self.assertEqual(got[0]["authorization"], "Bearer " + self.ts.issued[0])
        self.assertTrue(got[0]["path"].startswith("/teams/amer/v3/conversations/"), got[0]["path"])
        # a prefix matches at a path boundary only
        _, code, msg = self.command(h, y, f"proberef a:prefix-bad {partner.url}/teamsevil/", "proberef",
                                    "a:prefix-bad")
        self.assertEqual(code, "untrusted_service_url", msg)
        self.assertEqual(len(partner.snapshot()), 1)


if __name__ == "__main__":
    unittest.main()
