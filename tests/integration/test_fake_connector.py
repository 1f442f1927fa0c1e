"""Self-test of tests/fake_connector.py (no herald needed)."""
import http.client
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fake_connector as fcmod  # noqa: E402
from fake_connector import FakeConnector  # noqa: E402


def call(fc, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", fc.port, timeout=10)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    out = r.read().decode()
    hdrs = dict(r.getheaders())
    c.close()
    return r.status, out, hdrs


class FakeConnectorTest(unittest.TestCase):
    def setUp(self):
        self.fc = FakeConnector().start()

    def tearDown(self):
        self.fc.stop()

    def test_create_send_update_delete(self):
        fc = self.fc
        st, body, _ = call(fc, "POST", "/v3/conversations",
                           {"isGroup": False, "members": [{"id": "29:u"}], "tenantId": "t"},
                           {"Authorization": "Bearer xyz"})
        self.assertEqual((st, json.loads(body)), (201, {"id": "a:conv-1"}))
        st, body, _ = call(fc, "POST", "/v3/conversations",
                           {"isGroup": True, "channelData": {"channel": {"id": "19:c@thread.tacv2"}},
                            "activity": {"type": "message", "text": "x"}})
        j = json.loads(body)
        self.assertEqual(st, 201)
        self.assertEqual(j["id"], "19:c@thread.tacv2;messageid=" + j["activityId"])
        st, body, _ = call(fc, "POST", "/amer/v3/conversations/a%3Aconv-1/activities",
                           {"type": "message", "text": "hi"})
        id1 = json.loads(body)["id"]
        self.assertEqual(st, 201)
        st, body, _ = call(fc, "POST", "/v3/conversations/a%3Aconv-1/activities/" + id1,
                           {"type": "message", "text": "re", "replyToId": id1})
        id2 = json.loads(body)["id"]
        self.assertGreater(int(id2), int(id1))
        st, body, _ = call(fc, "PUT", "/v3/conversations/a%3Aconv-1/activities/" + id1, {"type": "message"})
        self.assertEqual((st, json.loads(body)), (200, {"id": id1}))
        st, body, _ = call(fc, "DELETE", "/v3/conversations/a%3Aconv-1/activities/" + id1)
        self.assertEqual((st, body), (200, ""))
        reqs = fc.wait_for(6, 2)
        self.assertEqual(reqs[0]["authorization"], "Bearer xyz")
        self.assertIsNone(reqs[1]["authorization"])
        self.assertEqual(reqs[2]["path"], "/amer/v3/conversations/a%3Aconv-1/activities")
        self.assertEqual(reqs[2]["decoded_path"], "/amer/v3/conversations/a:conv-1/activities")
        self.assertEqual(reqs[2]["conversation_id"], "a:conv-1")
        self.assertEqual(reqs[3]["activity_id"], id1)
        self.assertEqual(reqs[3]["json"]["replyToId"], id1)
        self.assertEqual([r["method"] for r in reqs], ["POST", "POST", "POST", "POST", "PUT", "DELETE"])

    def test_faults(self):
        fc = self.fc
        fc.inject("a:blocked", 403, body=fcmod.MESSAGE_WRITES_BLOCKED)
        fc.inject("re:/v3/conversations/a%3Athrottled/", 429, body=fcmod.THROTTLED,
                  headers={"Retry-After": "2"}, times=1)
        st, body, _ = call(fc, "POST", "/v3/conversations/a%3Ablocked/activities", {"type": "message"})
        self.assertEqual(st, 403)
        self.assertIn("MessageWritesBlocked", json.loads(json.loads(body)["message"])["subCode"])
        st, _, h = call(fc, "POST", "/v3/conversations/a%3Athrottled/activities", {"type": "message"})
        self.assertEqual((st, h.get("Retry-After")), (429, "2"))
        st, _, _ = call(fc, "POST", "/v3/conversations/a%3Athrottled/activities", {"type": "message"})
        self.assertEqual(st, 201)  # times=1 used up
        fc.inject("a:slow", None, delay=0.3)
        t0 = time.monotonic()
        st, _, _ = call(fc, "POST", "/v3/conversations/a%3Aslow/activities", {"type": "message"})
        self.assertEqual(st, 201)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        fc.inject("a:reset", fcmod.RESET)
        with self.assertRaises((ConnectionError, http.client.RemoteDisconnected, OSError)):
            call(fc, "POST", "/v3/conversations/a%3Areset/activities", {"type": "message"})
        reqs = fc.wait_for(5, 2)
        self.assertEqual([r["status"] for r in reqs], [403, 429, 201, 201, "reset"])
        fc.clear()
        self.assertEqual(fc.requests, [])
        st, _, _ = call(fc, "POST", "/v3/conversations/a%3Ablocked/activities", {"type": "message"})
        self.assertEqual(st, 201)

    def test_wait_timeout_and_unknown_route(self):
        st, _, _ = call(self.fc, "GET", "/nope")
        self.assertEqual(st, 404)
        with self.assertRaises(AssertionError):
            self.fc.wait_for(5, 0.2)

    def test_hold_until_released(self):
        import threading
        fc = self.fc
        gate = fc.hold(method="POST")
        got = {}
        t = threading.Thread(target=lambda: got.update(
            r=call(fc, "POST", "/v3/conversations/a%3Aheld/activities", {"type": "message"})))
        t.start()
        self.assertEqual(gate.wait_held(1), 1)
        st, _, _ = call(fc, "PUT", "/v3/conversations/a%3Aheld/activities/1", {"type": "message"})
        self.assertEqual(st, 200, "only the held method waits")
        self.assertEqual([r["method"] for r in fc.snapshot()], ["PUT"], "a held request is not recorded yet")
        self.assertTrue(t.is_alive())
        gate.release()
        t.join(10)
        self.assertEqual(got["r"][0], 201)
        self.assertEqual([r["method"] for r in fc.wait_for(2)], ["PUT", "POST"])
        self.assertEqual((gate.held, gate.total), (0, 1))
        st, _, _ = call(fc, "POST", "/v3/conversations/a%3Aheld/activities", {"type": "message"})
        self.assertEqual(st, 201, "a released hold holds nothing more")

    def test_standalone(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fake_connector.py")
        p = subprocess.Popen([sys.executable, script, "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            url = p.stdout.readline().strip()
            self.assertRegex(url, r"^http://127\.0\.0\.1:\d+$")
            port = int(url.rsplit(":", 1)[1])
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/v3/conversations/x/activities", body=b"{}")
            self.assertEqual(c.getresponse().status, 201)
            c.close()
        finally:
            p.terminate()
            p.wait(5)
            p.stdout.close()


if __name__ == "__main__":
    unittest.main()
