"""HTTP surface of herald (API_DRAFT.md: HTTP)."""
import json
import unittest

from harness import FakeConnector  # noqa: F401
from harness import Activities, Herald, bot, require_binary

MAX_BODY = 4096


@require_binary
class HttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fc = FakeConnector().start()
        cls.acts = Activities(cls.fc.url)
        cls.h = Herald(bot("main_bot.lua"), env={"HERALD_MAX_BODY_BYTES": str(MAX_BODY)})
        try:
            cls.h.start()
        except Exception:
            cls.h.kill()
            cls.fc.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.h.stop()
        finally:
            cls.h.kill()
            cls.fc.stop()

    def assert_400(self, body, what):
        st, text = self.h.post_activity(body)
        self.assertEqual(st, 400, f"{what}: got {st} {text!r}")
        try:
            j = json.loads(text)
        except ValueError:
            self.fail(f"{what}: 400 body is not JSON: {text!r}")
        self.assertIsInstance(j, dict, text)
        self.assertIsInstance(j.get("error"), str, text)
        self.assertTrue(0 < len(j["error"]) <= 200, f"{what}: reason not short: {text!r}")

    def valid(self, **over):
        a = self.acts.message("a:http", "x")
        a.update(over)
        return a

    def test_healthz(self):
        st, body = self.h.healthz()
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body).get("status"), "ok")

    def test_wrong_path_404(self):
        for method, path in (("GET", "/"), ("GET", "/nope"), ("POST", "/nope"), ("POST", "/api/message"),
                             ("POST", "/api/messages/extra"), ("GET", "/healthz/x"), ("POST", "/api")):
            with self.subTest(method=method, path=path):
                st, _, _ = self.h.request(method, path, b"{}" if method == "POST" else None)
                self.assertEqual(st, 404)

    def test_wrong_method_405(self):
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                st, _, _ = self.h.request(method, "/api/messages", b"{}" if method in ("PUT", "PATCH") else None)
                self.assertEqual(st, 405)

    def test_valid_activity_200_empty_body(self):
        st, body = self.h.post_activity(self.valid())
        self.assertEqual((st, body), (200, ""))

    def test_query_string_is_ignored(self):
        st, body = self.h.post_activity(self.valid(), path="/api/messages?x=1")
        self.assertEqual(st, 200, body)

    def test_malformed_json(self):
        for body in (b"{", b"", b"not json", b'{"type":"message",}', b'{"type":"message"', b"\xff\xfe",
                     b'{"a":1}{"b":2}'):
            with self.subTest(body=body):
                self.assert_400(body, f"malformed {body!r}")

    def test_not_an_object(self):
        for body in (b"[]", b"[1,2]", b'"str"', b"42", b"null", b"true"):
            with self.subTest(body=body):
                self.assert_400(body, f"non-object {body!r}")

    def test_missing_or_bad_required_fields(self):
        cases = []
        for key in ("type", "conversation", "serviceUrl"):
            a = self.valid()
            del a[key]
            cases.append((f"missing {key}", a))
        for v in ("", 5, None, [], {}, True):
            cases.append((f"type={v!r}", self.valid(type=v)))
            cases.append((f"serviceUrl={v!r}", self.valid(serviceUrl=v)))
        for v in ("", 5, None, [], {}):
            a = self.valid()
            a["conversation"] = dict(a["conversation"], id=v)
            cases.append((f"conversation.id={v!r}", a))
        a = self.valid()
        del a["conversation"]["id"]
        cases.append(("missing conversation.id", a))
        for v in ("a:x", 5, None, [], True):
            cases.append((f"conversation={v!r}", self.valid(conversation=v)))
        for what, a in cases:
            with self.subTest(what=what):
                self.assert_400(json.dumps(a).encode(), what)

    def test_body_too_large_413(self):
        a = self.valid(text="x" * (MAX_BODY + 10))
        st, body = self.h.post_activity(a)
        self.assertEqual(st, 413, body)
        st, body = self.h.post_activity(b"y" * (MAX_BODY * 4))
        self.assertEqual(st, 413, body)

    def test_body_just_under_limit_ok(self):
        a = self.valid()
        base = len(json.dumps(a, separators=(",", ":")).encode())
        a["text"] = "x" * (MAX_BODY - base - 1)
        body = json.dumps(a, separators=(",", ":")).encode()
        self.assertLessEqual(len(body), MAX_BODY)
        st, text = self.h.post_activity(body)
        self.assertEqual(st, 200, text)

    def test_unknown_activity_type_200(self):
        # "respond 200 to unknown types/eventTypes" (PROTOCOL.md §4.4)
        st, body = self.h.post_activity(self.valid(type="somethingNew"))
        self.assertEqual(st, 200, body)

    def test_head_probe_answers(self):
        # the Agents Playground probes the bot with HEAD /api/messages and accepts any status
        st, body, _ = self.h.request("HEAD", "/api/messages")
        self.assertTrue(400 <= st < 500 or 200 <= st < 300, st)
        self.assertEqual(self.h.healthz()[0], 200)

    def test_still_healthy_after_errors(self):
        self.h.post_activity(b"{")
        self.h.request("GET", "/api/messages")
        st, _ = self.h.healthz()
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()
