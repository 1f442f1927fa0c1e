"""Signing-key fetching, hardened (hardening issue, item 5): every numeric setting is bounded at
start (a JWKS refetch floor of 0 used to loop), an unknown kid costs at most one fetch per floor
however slow the key service is, a request waiting for keys is answered within
HERALD_JWKS_TIMEOUT_MS, and a failed fetch is retried in the background with growing intervals, so
recovery needs no request to prod it."""
import json
import os
import re
import threading
import time
import unittest

from harness import AUTH_APP_ID, AuthHeraldTestCase, bot, require_binary, run_cli, tf
from token_service import b64url, channel_claims

AUTH_BOT = bot("auth_bot.lua")
ROW = re.compile(r"^    (HERALD_[A-Z0-9_]+)\s+(\d+) (.+?) \((\d+)\.\.(\d+)\)$", re.M)


@require_binary
class SettingBoundsTest(unittest.TestCase):
    def test_floor_zero_refused_at_start(self):
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", AUTH_BOT],
                                 env={"HERALD_JWKS_REFRESH_FLOOR_S": "0"})
        self.assertNotEqual(code, 0, err)
        self.assertNotIn("listening on", err)
        self.assertIn("HERALD_JWKS_REFRESH_FLOOR_S must be an integer from 1 to 86400 (s), got '0'", err)

    def test_every_setting_in_check_refuses_zero_and_past_its_maximum(self):
        code, out, err = run_cli(["check", "--dev", AUTH_BOT])
        self.assertEqual(code, 0, err)
        rows = ROW.findall(out)
        self.assertGreaterEqual(len(rows), 20, out)
        for name, value, unit, lo, hi in rows:
            self.assertTrue(int(lo) >= 1 and int(lo) <= int(value) <= int(hi), (name, value, lo, hi))
            for bad in ("0", str(int(hi) + 1)):
                with self.subTest(setting=name, value=bad):
                    code, out, err = run_cli(["check", "--dev", AUTH_BOT], env={name: bad})
                    self.assertEqual(code, 2, f"{name}={bad} accepted:\n{out[-500:]}")
                    self.assertIn(f"{name} must be an integer from {lo} to {hi} ({unit}), got '{bad}'", err)


def unknown_kid_token(service_url, kid):
    """Claims that pass every check before the key lookup, a kid nobody publishes, junk signature."""
    h = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}))
    return f"{h}.{b64url(json.dumps(channel_claims(AUTH_APP_ID, service_url)))}.{b64url(os.urandom(256))}"


@require_binary
class KeyFetchTest(AuthHeraldTestCase):
    def post(self, h, conv, text, authorization=None, timeout=30):
        headers = {"Authorization": authorization} if authorization else None
        st, body = h.post_activity(self.acts.message(conv, text), headers=headers, timeout=timeout)
        return st, body

    def test_unknown_kid_with_a_key_service_slower_than_the_floor_fetches_once(self):
        # the floor used to count from the start of the last fetch: a fetch slower than the floor
        # made the recheck fetch again, forever, and the request was never answered
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=1))
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1, what="the start-up key fetch")
        self.ts.keys_delay = 0.7                # metadata + JWKS: 1.4 s, longer than the floor
        time.sleep(1.1)                         # past the floor since the start-up fetch ended
        t0 = time.monotonic()
        st, _ = self.post(h, "a:slowkid", "attack", "Bearer " + unknown_kid_token(self.acts.service_url, "nope"),
                          timeout=15)
        took = time.monotonic() - t0
        self.assertEqual(st, 401)
        self.assertLess(took, tf(6), "the request waited for more than one fetch")
        time.sleep(tf(2.0))                     # a looping recheck would have fetched again by now
        self.assertEqual(self.ts.jwks_fetches, 2, self.ts.key_attempts())
        self.assertIn('reason="unknown signing key (kid)"', h.log)

    def test_flood_of_unknown_kids_with_a_slow_key_service_stays_bounded(self):
        floor = 1
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=floor))
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1, what="the start-up key fetch")
        self.ts.keys_delay = 0.6                # a fetch takes 1.2 s, longer than the floor
        statuses, lock = [], threading.Lock()
        t0 = time.monotonic()

        def flood(tag):
            end = time.monotonic() + 3.0
            i = 0
            while time.monotonic() < end:
                i += 1
                tok = unknown_kid_token(self.acts.service_url, f"flood-{tag}-{i}")
                st, _ = self.post(h, f"a:flood-{tag}", "attack", "Bearer " + tok, timeout=15)
                with lock:
                    statuses.append(st)

        threads = [threading.Thread(target=flood, args=(j,)) for j in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dur = time.monotonic() - t0
        self.assertEqual(set(statuses), {401}, statuses)
        self.assertGreaterEqual(len(statuses), 8)
        # one fetch at most per (floor + a fetch's 1.2 s); the start-up fetch is the first
        refetches = self.ts.jwks_fetches - 1
        self.assertGreaterEqual(refetches, 1)
        self.assertLessEqual(refetches, 1 + int(dur // (floor + 1.2)),
                             f"{refetches} refetches in {dur:.1f}s for {len(statuses)} requests")

    def test_request_waiting_for_keys_is_answered_within_the_fetch_timeout(self):
        self.ts.keys_delay = tf(3.0)            # far beyond the 1 s fetch timeout
        h = self.start_auth_herald(env={"HERALD_JWKS_TIMEOUT_MS": "1000"})
        t0 = time.monotonic()
        st, body = self.post(h, "a:wait", "quiet waited", timeout=20)
        took = time.monotonic() - t0
        self.assertEqual(st, 503, body)
        self.assertLess(took, tf(2.9), "the request waited for the slow key service, not the timeout")
        self.assertNotIn("AUTHBOT run", h.log)
        h.wait_log(r"cannot refresh the channel's signing keys: .*retrying in \d+ ms", 5)
        # the key service recovers: the background retry brings the keys without a request
        self.ts.keys_delay = 0
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1 and any(
            a["path"] == "jwks" for a in s.key_log if a["time"] > t0), timeout=15, what="a retried fetch")
        h.wait_log(r"channel signing keys refreshed", 5)
        st, body = self.post(h, "a:wait", "quiet later")
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")

    def test_failed_start_is_retried_in_the_background_with_growing_intervals(self):
        self.ts.keys_outage = 503
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=300))
        # no request is sent: every attempt after the first comes from the background retry
        self.ts.wait_until(lambda s: s.metadata_fetches >= 3, timeout=10, what="three failed attempts")
        self.ts.keys_outage = None
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1, timeout=15, what="the keys after the outage")
        h.wait_log(r"channel signing keys refreshed", 5)
        times = [a["time"] for a in self.ts.key_attempts("metadata")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreaterEqual(len(gaps), 3, self.ts.key_attempts())
        # backoff 0.5 s, 1 s, 2 s …, each stretched by up to half: lower bounds cannot flake on a
        # slow machine, and they grow
        for i, g in enumerate(gaps[:3]):
            self.assertGreaterEqual(g, 0.5 * 2 ** i - 0.05, f"attempt gaps {gaps}")
        self.assertEqual(self.health(h)["activities"], 0)
        self.assertEqual(self.health(h)["unauthorized"], 0)
        st, body = self.post(h, "a:bg", "quiet after")
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        self.assertEqual(self.ts.jwks_fetches, 1, "the accepted activity needed another fetch")


    def test_success_resets_the_backoff(self):
        self.ts.keys_outage = 503
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=1))
        self.ts.wait_until(lambda s: s.metadata_fetches >= 3, timeout=10, what="three failed attempts")
        self.ts.keys_outage = None                 # the next step would be 2 s, then 4 s
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1, timeout=15, what="the keys after the outage")
        h.wait_log(r"channel signing keys refreshed", 5)
        self.ts.keys_outage = 503
        time.sleep(1.2)                            # past the floor: an unknown kid may fetch
        n = len(self.ts.key_attempts("metadata"))
        st, _ = self.post(h, "a:reset", "attack", "Bearer " + unknown_kid_token(self.acts.service_url, "x"))
        self.assertEqual(st, 401)
        self.ts.wait_until(lambda s: len(s.key_attempts("metadata")) >= n + 2, timeout=10,
                           what="the prodded fetch and its background retry")
        times = [a["time"] for a in self.ts.key_attempts("metadata")][n:n + 2]
        # after a reset the retry comes 0.5–0.75 s later; without one it would be 4 s or more
        self.assertLess(times[1] - times[0], 3.0, self.ts.key_attempts())
        self.assertGreaterEqual(times[1] - times[0], 0.45)
        self.ts.keys_outage = None


if __name__ == "__main__":
    unittest.main()
