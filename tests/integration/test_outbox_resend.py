"""test_outbox_resend.py — libcurl's silent re-send (hardening issue, item 14). A request that goes
out on a reused keep-alive connection which then closes or resets before one byte of answer is sent
again by libcurl on a fresh connection (curl lib/transfer.c Curl_retry_request). When the first
copy had been acted on (the fake connector's ACCEPT_RESET / ACCEPT_CLOSE faults), Teams holds two
messages; herald must say so: the operation counts both attempts, `herald deliveries` marks one
"resent", and /healthz and /metrics count it."""
import json
import unittest

from harness import HeraldTestCase, bot, require_binary, run_cli
import fake_connector

ENV = {"HERALD_UNSAFE_LUA": 1, "HERALD_GOVERNOR": "off"}


@require_binary
class ResendTest(HeraldTestCase):
    def ctl(self, **kw):
        st, text, _ = self.h.request("POST", "/api/notify/ctl", json.dumps(kw).encode(), timeout=60)
        self.assertEqual(st, 200, f"{kw.get('cmd')}: {st} {text}\n{self.h.log[-2000:]}")
        return json.loads(text)

    def deliveries(self):
        rc, out, err = run_cli(["deliveries", "--json", "--db", self.h.db])
        self.assertEqual(rc, 0, err)
        return json.loads(out)

    def test_a_request_libcurl_sends_twice_is_counted_twice(self):
        self.h = self.start_herald(bot("broadcast_bot.lua"), env=ENV)
        self.ctl(cmd="seed", n=2, prefix="a:rs-", tenant="tr", service_url=self.fc.url + "/t/tr/",
                 user_prefix="29:rs-")
        for n, (conv, fault) in enumerate((("a:rs-0", fake_connector.ACCEPT_RESET),
                                           ("a:rs-1", fake_connector.ACCEPT_CLOSE)), 1):
            with self.subTest(fault=fault):
                # one exchange leaves a kept-alive connection; the next request reuses it, the fake
                # acts on it and drops the connection unanswered, libcurl sends it again
                warm = self.ctl(cmd="send", conv=conv, text=f"warm {n}")["r"]
                self.assertIn("a", warm, warm)
                self.fc.inject(conv, fault, times=1, method="POST")
                r = self.ctl(cmd="send", conv=conv, text=f"twice {n}")["r"]
                copies = [x for x in self.fc.snapshot() if x["json"] and x["json"].get("text") == f"twice {n}"]
                self.assertEqual([(x["status"], x.get("dropped", False)) for x in copies],
                                 [(201, True), (201, False)], copies)
                self.assertEqual(r.get("a"), json.loads(copies[1]["response"])["id"], r)

                warm_op, twice_op = [o for o in self.deliveries() if o["conversation"] == conv]
                self.assertEqual((twice_op["state"], twice_op["attempts"], twice_op.get("resent"),
                                  twice_op["result_id"]), ("sent", 2, 1, r["a"]), twice_op)
                self.assertEqual((warm_op["attempts"], warm_op.get("resent")), (1, 0), warm_op)
                st, body = self.h.healthz()
                self.assertEqual(json.loads(body)["outbox"]["resends"], n, body)
                self.assertEqual(self.h.metrics().get("herald_outbox_resends_total"), n)
                self.h.wait_log(r"op %d to conversation=%s went out 1 more time\(s\): libcurl re-sent it"
                                % (twice_op["id"], conv))
        rc, out, err = run_cli(["deliveries", "--db", self.h.db])
        self.assertEqual(out.count("(1 re-sent by libcurl)"), 2, out)
        rc, out, err = run_cli(["deliveries", "--csv", "--db", self.h.db])
        self.assertTrue(out.startswith("id,kind,conversation,state,attempts,created_at,finished_at,status,"
                                       "code,error,result_id,resent\n"), out)

    def test_a_fresh_connection_is_never_resent(self):
        # the first request of a connection that dies is herald's to retry (a counted attempt), not
        # libcurl's: nothing was reused
        self.h = self.start_herald(bot("broadcast_bot.lua"), env={**ENV, "HERALD_OUTBOX_MAX_ATTEMPTS": 2})
        self.ctl(cmd="seed", n=1, prefix="a:fr-", tenant="tr", service_url=self.fc.url + "/t/tr/",
                 user_prefix="29:fr-")
        self.fc.inject("a:fr-0", fake_connector.ACCEPT_RESET, times=1, method="POST")
        r = self.ctl(cmd="send", conv="a:fr-0", text="first")["r"]
        self.assertIn("a", r, r)
        (op,) = self.deliveries()
        self.assertEqual((op["attempts"], op.get("resent")), (2, 0), op)
        self.assertEqual(json.loads(self.h.healthz()[1])["outbox"]["resends"], 0)


if __name__ == "__main__":
    unittest.main()
