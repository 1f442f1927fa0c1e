"""Authenticated mode, outbound (issue 3): client-credential tokens for the Bot Connector — one
request shared by concurrent sends, refreshed ahead of expiry, the certificate (client assertion)
variant, and a token-service outage that surfaces as nil, msg, "auth" and heals by itself."""
import re
import threading
import time
import unittest

from harness import AUTH_APP_ID, AuthHeraldTestCase, require_binary, tf
from token_service import ASSERTION_TYPE, Certificate, TokenService, decode_jwt

SEND_RESULT = r"AUTHBOT send tag={tag} id=(\S+) code=(\S+) msg=(.*)"


@require_binary
class OutboundAuthTest(AuthHeraldTestCase):
    def send(self, h, conv, tag):
        st, body = h.post_activity(self.acts.message(conv, f"send {tag}"))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        m = h.wait_log(SEND_RESULT.format(tag=re.escape(tag)), timeout=20)
        return m.group(1), m.group(2), m.group(3)

    def test_one_token_request_for_many_concurrent_sends(self):
        self.ts.token_delay = 0.5          # every send arrives while the token is being fetched
        h = self.start_auth_herald(args=["--log-level", "debug"])
        n = 20
        errors = []

        def post(i):
            try:
                st, body = h.post_activity(self.acts.message(f"a:conc-{i % 4}", f"send c{i}"))
                if st != 200:
                    errors.append((i, st, body))
            except Exception as e:  # noqa: BLE001 — reported below
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        reqs = self.fc.wait_for(n, timeout=20)
        self.assertEqual(len(reqs), n)
        tr = self.ts.requests()
        self.assertEqual(len(tr), 1, f"{len(tr)} token requests for {n} concurrent sends")
        self.assertEqual(self.health(h)["token_requests"], 1)
        tok = self.ts.issued[0]
        self.assertEqual({r["authorization"] for r in reqs}, {"Bearer " + tok})
        self.assertEqual(sorted(r["json"]["text"] for r in reqs), sorted(f"sent c{i}" for i in range(n)))
        # the request itself, as Entra wants it (PROTOCOL.md §1.1)
        r = tr[0]
        self.assertEqual(r["errors"], [])
        self.assertEqual(r["path"], "/botframework.com/oauth2/v2.0/token")
        self.assertTrue((r["content_type"] or "").startswith("application/x-www-form-urlencoded"), r)
        self.assertEqual(r["form"]["grant_type"], "client_credentials")
        self.assertEqual(r["form"]["client_id"], AUTH_APP_ID)
        self.assertEqual(r["form"]["scope"], "https://api.botframework.com/.default")
        self.assertEqual(r["form"]["client_secret"], self.secret)
        self.assertNotIn("client_assertion", r["form"])
        for i in range(n):
            m = h.wait_log(SEND_RESULT.format(tag=f"c{i}"))
            self.assertEqual(m.group(2), "nil", m.group(0))

    def test_token_refreshed_before_expiry(self):
        # herald refreshes refresh_ahead (300 s, not configurable) before expiry, clamped to half
        # the lifetime, and treats expires_in below 60 as 60: the quickest observable refresh is
        # 30 s after the first token, for a 60 s token.
        self.ts.expires_in = 60
        h = self.start_auth_herald()
        self.assertEqual(self.send(h, "a:refresh", "r1")[1], "nil")
        first = self.ts.requests()
        self.assertEqual(len(first), 1)
        t0 = first[0]["time"]
        self.ts.wait_until(lambda s: len(s.token_requests) >= 2, timeout=45,
                           what="a background refresh of the 60 s token")
        tr = self.ts.requests()
        dt = tr[1]["time"] - t0
        self.assertGreaterEqual(dt, 20, f"refreshed after {dt:.1f}s")
        self.assertLess(dt, 55, f"refreshed after {dt:.1f}s: too close to the 60 s expiry")
        self.assertEqual(tr[1]["status"], 200)
        self.assertEqual(len(self.fc.snapshot()), 1, "the refresh needed no send")
        self.assertEqual(self.send(h, "a:refresh", "r2")[1], "nil")
        reqs = self.fc.wait_for(2)
        self.assertEqual(reqs[0]["authorization"], "Bearer " + self.ts.issued[0])
        self.assertEqual(reqs[1]["authorization"], "Bearer " + self.ts.issued[1])
        self.assertEqual(len(self.ts.requests()), 2)

    def test_certificate_client_assertion(self):
        cert = Certificate()
        ts = TokenService(client_id=AUTH_APP_ID, client_secret=None, certificate=cert).start()
        self._services.append(ts)
        self.fc.token_ok = ts.is_issued
        env = ts.herald_env()
        self.assertNotIn("CLIENT_SECRET", env)
        h = self.start_auth_herald(ts=ts, auth=env)
        self.assertEqual(self.send(h, "a:cert", "k1")[1], "nil")
        req = self.fc.wait_for(1)[0]
        self.assertEqual(req["authorization"], "Bearer " + ts.issued[0])
        r = ts.requests()[0]
        self.assertEqual(r["errors"], [], "the token service did not accept the client assertion")
        self.assertEqual(r["form"]["client_assertion_type"], ASSERTION_TYPE)
        self.assertNotIn("client_secret", r["form"])
        hdr, claims, _, _ = decode_jwt(r["form"]["client_assertion"])
        self.assertEqual(hdr.get("x5t"), cert.x5t)
        self.assertEqual(claims["aud"], ts.token_url())
        self.assertEqual((claims["iss"], claims["sub"]), (AUTH_APP_ID, AUTH_APP_ID))
        # neither the private key nor the assertion reaches the log
        with open(cert.key_path) as f:
            key_lines = [l for l in f.read().splitlines() if l and not l.startswith("-----")]
        log = h.log
        self.assertFalse(any(l in log for l in key_lines[:3]), "private key material in the log")
        self.assertNotIn(r["form"]["client_assertion"].rsplit(".", 1)[-1], log)

    def test_certificate_with_separate_key_file(self):
        cert = Certificate()
        ts = TokenService(client_id=AUTH_APP_ID, client_secret=None, certificate=cert).start()
        self._services.append(ts)
        self.fc.token_ok = ts.is_issued
        env = ts.herald_env()
        env["HERALD_CERTIFICATE_PATH"] = cert.cert_path
        env["HERALD_CERTIFICATE_KEY_PATH"] = cert.key_path
        h = self.start_auth_herald(ts=ts, auth=env)
        self.assertEqual(self.send(h, "a:cert2", "k2")[1], "nil")
        self.assertEqual(ts.requests()[0]["errors"], [])

    def test_certificate_the_service_does_not_know_is_refused_as_auth(self):
        registered, used = Certificate(cn="registered"), Certificate(cn="impostor")
        ts = TokenService(client_id=AUTH_APP_ID, client_secret=None, certificate=registered).start()
        self._services.append(ts)
        self.fc.token_ok = ts.is_issued
        env = ts.herald_env()
        env["HERALD_CERTIFICATE_PATH"] = used.path
        h = self.start_auth_herald(ts=ts, auth=env)
        _, code, msg = self.send(h, "a:cert3", "k3")
        self.assertEqual(code, "auth", msg)
        self.assertEqual(self.fc.snapshot(), [])
        errs = ts.requests()[0]["errors"]
        self.assertTrue(any("x5t" in e for e in errs) and any("signature" in e for e in errs), errs)

    def test_wrong_secret_is_auth_and_never_logged(self):
        h = self.start_auth_herald(auth=self.ts.herald_env(secret=False, CLIENT_SECRET=self.secret + "-wrong"))
        _, code, msg = self.send(h, "a:wrongsecret", "w1")
        self.assertEqual(code, "auth", msg)
        self.assertIn("401", msg)
        self.assertEqual(self.fc.snapshot(), [])
        h.wait_log(r"outbound token: token request failed: HTTP 401")
        self.assertNotIn(self.secret, h.log)

    def _outage_and_recovery(self, mode):
        h = self.start_auth_herald()
        self.ts.outage = mode
        _, code, msg = self.send(h, "a:outage", "o1")
        self.assertEqual(code, "auth", msg)
        self.assertEqual(self.fc.snapshot(), [], "a send went out without a token")
        h.wait_log(r"outbound token: token request failed: .*retrying in 1 s")
        # while backing off, a send fails at once with "auth" instead of hanging
        t = time.monotonic()
        _, code, msg = self.send(h, "a:outage", "o2")
        self.assertEqual(code, "auth", msg)
        self.assertLess(time.monotonic() - t, tf(5))
        # herald retries in the background (1, 2, 4 ... s), without further sends
        self.ts.wait_until(lambda s: len(s.token_requests) >= 3, timeout=10,
                           what="background token retries during the outage")
        self.ts.outage = None
        self.ts.wait_until(lambda s: any(r["status"] == 200 for r in s.token_requests), timeout=15,
                           what="the background retry after the outage")
        tr = self.ts.requests()
        # libcurl retries a POST once on a fresh connection when a reused one dies without an
        # answer (the "reset" outage), so requests closer than 0.3 s are one attempt
        attempts = [tr[0]["time"]]
        for r in tr[1:]:
            if r["time"] - attempts[-1] >= 0.3:
                attempts.append(r["time"])
        gaps = [round(b - a, 1) for a, b in zip(attempts, attempts[1:])]
        self.assertTrue(all(g >= 0.8 for g in gaps[:2]) and gaps == sorted(gaps),
                        f"retry gaps {gaps}: expected growing backoff from 1 s")
        n = len(tr)
        _, code, msg = self.send(h, "a:outage", "o3")
        self.assertEqual(code, "nil", msg)
        req = self.fc.wait_for(1)[0]
        self.assertEqual(req["authorization"], "Bearer " + self.ts.issued[0])
        self.assertEqual(len(self.ts.requests()), n, "the recovered token was not reused")
        self.assertTrue(h.alive())

    def test_token_service_outage_503_then_recovery(self):
        self._outage_and_recovery(503)

    def test_token_service_outage_connection_reset_then_recovery(self):
        self._outage_and_recovery("reset")


if __name__ == "__main__":
    unittest.main()
