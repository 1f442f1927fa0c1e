"""Self-test of the fake connector's Teams-like mode (windows + 429, tenants, random faults, counts);
no herald needed."""
import http.client
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fake_connector as fcm  # noqa: E402
from fake_connector import FakeConnector  # noqa: E402


def post(fc, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", fc.port, timeout=10)
    try:
        c.request("POST", path, body=json.dumps(body or {"type": "message", "text": "x"}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read().decode()
        return r.status, out, {k.lower(): v for k, v in r.getheaders()}
    except (ConnectionResetError, http.client.RemoteDisconnected):
        return fcm.RESET, "", {}
    finally:
        c.close()


def send_path(conv, prefix=""):
    return f"{prefix}/v3/conversations/{conv}/activities"


class TeamsLimitsFakeTest(unittest.TestCase):
    def test_default_is_unlimited(self):
        with FakeConnector() as fc:
            st = [post(fc, send_path("a:c"))[0] for _ in range(12)]
            self.assertEqual(st, [201] * 12)
            self.assertEqual(fc.counts()["by_status"], {201: 12})

    def test_conversation_windows_and_retry_after(self):
        with FakeConnector(teams_limits=True) as fc:
            now = [1000.0]                 # the limits' clock, stepped by the test: no real waiting
            fc.clock = lambda: now[0]
            st = [post(fc, send_path("a:c"))[0] for _ in range(7)]
            self.assertEqual(st, [201] * 7)
            now[0] += 0.5
            st, body, hdrs = post(fc, send_path("a:c"))
            self.assertEqual(st, 429)
            self.assertEqual(json.loads(body)["error"]["code"], "Throttled")
            self.assertEqual(hdrs.get("retry-after"), "1")
            self.assertEqual(post(fc, send_path("a:other"))[0], 201)   # per conversation
            now[0] += 0.52
            self.assertEqual(post(fc, send_path("a:c"))[0], 201)          # 8th after 1 s
            self.assertEqual(post(fc, send_path("a:c"))[0], 429)          # 8/2 s now full
            c = fc.counts()
            self.assertEqual(c["throttled"], 2)
            self.assertEqual(c["by_conversation"]["a:c"], {201: 8, 429: 2})
            self.assertEqual(len(fc.accepted_times("a:c")), 8)

    def test_tenant_rate_by_prefix_and_map(self):
        with FakeConnector(teams_limits=True, tenant_rps=3) as fc:
            fc.set_tenant("a:m1", "mapped")
            st = [post(fc, send_path(f"a:{i}", "/amer/t/t1"))[0] for i in range(4)]
            self.assertEqual(st, [201, 201, 201, 429])
            self.assertEqual(post(fc, send_path("a:x", "/amer/t/t2"))[0], 201)  # other tenant
            st = [post(fc, send_path(f"a:m{i}", "/t/t1"))[0] for i in (1, 1, 1, 1)]
            self.assertEqual(st, [201, 201, 201, 429])                          # map wins
            self.assertEqual(fc.tenant_for("a:zz", "/x"), "default")

    def test_slack_forgives_early_arrivals(self):
        with FakeConnector(teams_limits=True, slack_ms=2000) as fc:
            st = [post(fc, send_path("a:c"))[0] for _ in range(8)]
            self.assertEqual(st, [201] * 8)

    def test_random_faults_are_seeded(self):
        def run():
            with FakeConnector() as fc:
                fc.random_faults(0.5, (503, fcm.RESET, (fcm.SLOW, 0.01)), seed=11)
                return [post(fc, send_path("a:r"))[0] for _ in range(40)]
        a, b = run(), run()
        self.assertEqual(a, b)
        self.assertIn(503, a)
        self.assertIn(fcm.RESET, a)
        self.assertIn(201, a)

    def test_inject_wins_over_limits_and_random(self):
        with FakeConnector(teams_limits=True) as fc:
            fc.random_faults(1.0, (500,), seed=1, methods=("POST",))
            fc.inject("a:b", 403, fcm.MESSAGE_WRITES_BLOCKED)
            self.assertEqual(post(fc, send_path("a:b"))[0], 403)
            self.assertEqual(post(fc, send_path("a:c"))[0], 500)
            fc.random_faults(0)
            self.assertEqual(post(fc, send_path("a:c"))[0], 201)
            self.assertEqual(fc.counts()["by_status"], {403: 1, 500: 1, 201: 1})


if __name__ == "__main__":
    unittest.main()
