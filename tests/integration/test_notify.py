"""test_notify.py — POST /api/notify/{name} (issue 8; hardening issue item 6): timestamped
signatures that are good once, bearer secrets, per-trigger secrets that never collide, 404/413/400,
the 202 answer of a long handler, authenticated mode without a secret; and scripts/notify.lua end
to end (its signed curl snippet → card broadcast, card-action opt-out)."""
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from harness import (AuthHeraldTestCase, HeraldTestCase, ROOT, bot, require_binary, tf)

BOT = bot("notify_bot.lua")
GLOBAL = "global-secret-1234"
OTHER = "other-secret-5678"


def sign(secret, body, ts=None):
    """The headers of a signed trigger: X-Herald-Timestamp and the HMAC of timestamp "." body."""
    ts = str(int(time.time()) if ts is None else ts)
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Herald-Timestamp": ts, "X-Herald-Signature": "sha256=" + mac}


def sign_body_only(secret, body):
    """The signature of the body alone: the replayable form herald used to accept."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@require_binary
class NotifyTriggerTest(HeraldTestCase):
    def setUp(self):
        super().setUp()
        self.h = self.start_herald(BOT, env={"HERALD_NOTIFY_SECRET": GLOBAL,
                                             "HERALD_NOTIFY_SECRET_OTHER": OTHER,
                                             "HERALD_MAX_BODY_BYTES": 4096,
                                             "HERALD_RESPONSE_DEADLINE_MS": 400})

    def post(self, name, body, headers=None, timeout=30):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        st, text, hdrs = self.h.request("POST", f"/api/notify/{name}", body, headers, timeout=timeout)
        return st, text

    def count(self):
        """Runs of the echo handler so far (this call included)."""
        st, text = self.post("echo", b'{"probe":true}', {"Authorization": "Bearer " + GLOBAL})
        self.assertEqual(st, 200, text)
        return json.loads(text)["count"]

    def assert_refused(self, name, body, headers, reason):
        st, text = self.post(name, body, headers)
        self.assertEqual(st, 401, f"{headers}: {st} {text}")
        doc = json.loads(text)
        self.assertEqual(doc["error"], "unauthorized", doc)
        self.assertIn(reason, doc["reason"])
        return doc

    def test_good_signature_and_bearer(self):
        body = json.dumps({"build": 42, "ok": True, "tags": ["a", "b"]}).encode()
        st, text = self.post("echo", body, sign(GLOBAL, body))
        self.assertEqual(st, 200, text)
        doc = json.loads(text)
        self.assertEqual(doc["got"], {"build": 42, "ok": True, "tags": ["a", "b"]})
        self.assertEqual(doc["count"], 1)
        # upper-case hex is accepted too (another timestamp: the same signature would be a replay)
        hdrs = sign(GLOBAL, body, int(time.time()) + 1)
        hdrs["X-Herald-Signature"] = "sha256=" + hdrs["X-Herald-Signature"][7:].upper()
        st, text = self.post("echo", body, hdrs)
        self.assertEqual(st, 200, text)
        st, text = self.post("echo", body, {"Authorization": "Bearer " + GLOBAL})
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text)["count"], 3)

    def test_refused_requests_run_nothing(self):
        before = self.count()
        body = b'{"x":1}'
        now = int(time.time())
        good = sign(GLOBAL, body)
        cases = [
            sign("wrong", body),
            {**sign(GLOBAL, body + b" "), "X-Herald-Timestamp": good["X-Herald-Timestamp"]},
            {**good, "X-Herald-Signature": good["X-Herald-Signature"][:-2]},          # truncated
            {**good, "X-Herald-Signature": good["X-Herald-Signature"].replace("sha256=", "sha1=")},
            {**good, "X-Herald-Timestamp": str(now + 1)},                               # other timestamp
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer " + GLOBAL[:-1]},
            {"Authorization": "Bearer " + GLOBAL + "x"},
            {"Authorization": "Basic " + GLOBAL},
            {},
        ]
        for hdrs in cases:
            st, text = self.post("echo", body, hdrs)
            self.assertEqual(st, 401, f"{hdrs}: {st} {text}")
        self.assertEqual(self.count(), before + 1, "a refused request ran the handler")
        self.assertNotIn(GLOBAL, self.h.log)

    def test_replayed_signature_refused(self):
        before = self.count()
        body = b'{"deploy":"v1"}'
        hdrs = sign(GLOBAL, body)
        st, text = self.post("echo", body, hdrs)
        self.assertEqual(st, 200, text)
        for _ in range(2):
            self.assert_refused("echo", body, hdrs, "signature already used (replay)")
        # the same signed request sent to another trigger with the same secret is a replay too
        self.assertEqual(self.post("audit", body, hdrs)[0], 401)
        self.assertNotIn("audit handler ran", self.h.log)
        self.assertEqual(self.count(), before + 2, "a replayed request ran the handler")
        self.assertIn("notify echo refused: signature already used (replay)", self.h.log)

    def test_body_only_signature_refused_with_a_hint(self):
        body = b'{"x":2}'
        doc = self.assert_refused("echo", body, {"X-Herald-Signature": sign_body_only(GLOBAL, body)},
                                  "X-Herald-Signature needs X-Herald-Timestamp")
        self.assertIn("<unix seconds>.<body>", doc["reason"])

    def test_timestamp_outside_the_window_or_malformed_refused(self):
        body = b'{"x":3}'
        now = int(time.time())
        for ts in (now - 400, now + 400, now - 86400):
            self.assert_refused("echo", body, sign(GLOBAL, body, ts),
                                "X-Herald-Timestamp is more than 300 s away from the server clock")
        for ts in ("", "abc", "-5", f"{now}.5", f"{now}000000"):
            hdrs = sign(GLOBAL, body, now)
            hdrs["X-Herald-Timestamp"] = ts
            st, text = self.post("echo", body, hdrs)
            self.assertEqual(st, 401, f"{ts!r}: {text}")
            self.assertIn("X-Herald-Timestamp", json.loads(text)["reason"])
        # inside the window is fine, but not before herald started (that process may have seen it)
        st, text = self.post("echo", body, sign(GLOBAL, body, now + 250))
        self.assertEqual(st, 200, text)
        self.assert_refused("echo", body, sign(GLOBAL, body, now - 250), "from before herald started")

    def test_per_trigger_secret_overrides_global(self):
        body = b'{"y":2}'
        st, text = self.post("other", body, sign(OTHER, body))
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text), {"other": True, "got": {"y": 2}})
        st, _ = self.post("other", body, {"Authorization": "Bearer " + OTHER})
        self.assertEqual(st, 200)
        for hdrs in (sign(GLOBAL, body), {"Authorization": "Bearer " + GLOBAL}):
            st, text = self.post("other", body, hdrs)
            self.assertEqual(st, 401, f"global secret accepted for a trigger with its own: {text}")
        # and the per-trigger secret does not open the other triggers
        st, _ = self.post("echo", body, {"Authorization": "Bearer " + OTHER})
        self.assertEqual(st, 401)

    def test_unknown_trigger_404(self):
        body = b'{}'
        st, text = self.post("nope", body, sign(GLOBAL, body))
        self.assertEqual(st, 404, text)
        # names outside the trigger alphabet are never triggers
        for name in ("Echo", "ec.ho", "ec_ho"):
            st, text = self.post(name, body, {"Authorization": "Bearer " + GLOBAL})
            self.assertEqual(st, 404, f"{name}: {text}")

    def test_body_too_large_413(self):
        before = self.count()
        body = json.dumps({"pad": "x" * 5000}).encode()
        st, text = self.post("echo", body, sign(GLOBAL, body))
        self.assertEqual(st, 413, text)
        self.assertEqual(self.count(), before + 1)

    def test_malformed_json_400(self):
        before = self.count()
        for body in (b'{"a":', b'not json', b'{"a":1}}', b'\xff\xfe{}'):
            st, text = self.post("echo", body, sign(GLOBAL, body))
            self.assertEqual(st, 400, f"{body!r}: {st} {text}")
        self.assertEqual(self.count(), before + 1)

    def test_long_handler_202_then_completes(self):
        conv = {"id": "a:slow-1", "service_url": self.fc.url + self.PREFIX}
        body = json.dumps({"s": 0, "conv": conv, "text": "late news"}).encode()
        # the connector holds the handler's send: the handler cannot finish before the test lets
        # it, so only the 400 ms deadline can answer (else this request times out)
        gate = self.fc.hold(method="POST")
        st, text = self.post("slow", body, sign(GLOBAL, body), timeout=10)
        self.assertEqual(st, 202, text)
        doc = json.loads(text)
        self.assertEqual(doc.get("status"), "accepted", doc)
        self.assertTrue(str(doc.get("operation", "")).isdigit(), doc)
        gate.wait_held(1)
        self.assertNotIn("notify slow finished", self.h.log)
        gate.release()
        reqs = self.fc.wait_until(lambda r: [x for x in r if x["method"] == "POST"] or None, 10,
                                  "the slow handler's send")
        self.assertEqual(reqs[0]["conversation_id"], "a:slow-1")
        self.assertEqual(reqs[0]["json"]["text"], "late news")
        self.h.wait_log(r"notify slow finished operation=" + str(doc["operation"]), 10)


def sign_get(secret, op_id, ts=None):
    """The headers of a signed GET /api/notify/operations/{id}: HMAC of timestamp "." "GET " path."""
    return sign(secret, f"GET /api/notify/operations/{op_id}".encode(), ts)


@require_binary
class NotifyOperationsTest(HeraldTestCase):
    """GET /api/notify/operations/{id}: what a notify that answered 202 ended with (issue 12)."""
    TTL = 60

    def setUp(self):
        super().setUp()
        self.h = self.start_herald(BOT, env={"HERALD_NOTIFY_SECRET": GLOBAL,
                                             "HERALD_NOTIFY_SECRET_OTHER": OTHER,
                                             "HERALD_RESPONSE_DEADLINE_MS": 400,
                                             "HERALD_NOTIFY_RESULT_TTL_S": self.TTL,
                                             "HERALD_NOTIFY_RESULTS_MAX": 2,
                                             "HERALD_TEST_CLOCK": 1})

    def start_op(self, name, payload):
        body = json.dumps(payload).encode()
        st, text, _ = self.h.request("POST", f"/api/notify/{name}", body, sign(GLOBAL, body), timeout=10)
        self.assertEqual(st, 202, text)
        return json.loads(text)["operation"]

    def get(self, op_id, headers=None):
        st, text, _ = self.h.request("GET", f"/api/notify/operations/{op_id}", None, headers)
        return st, (json.loads(text) if text else None)

    def bearer(self, secret=GLOBAL):
        return {"Authorization": "Bearer " + secret}

    def wait_done(self, op_id):
        deadline = time.monotonic() + tf(20)
        while True:
            st, doc = self.get(op_id, self.bearer())
            if st != 202 or time.monotonic() > deadline:
                return st, doc
            time.sleep(0.05)

    def test_pending_done_refused_unknown_expired(self):
        conv = {"id": "a:slow-op", "service_url": self.fc.url + self.PREFIX}
        gate = self.fc.hold(method="POST")
        op = self.start_op("slow", {"s": 0, "conv": conv, "text": "later"})
        gate.wait_held(1)
        # authenticated exactly like the trigger
        st, doc = self.get(op)
        self.assertEqual(st, 401, doc)
        self.assertEqual(doc["error"], "unauthorized")
        self.assertEqual(self.get(op, sign_get(OTHER, op))[0], 401)            # another trigger's secret
        self.assertEqual(self.get(op, self.bearer(OTHER))[0], 401)
        self.assertEqual(self.get(op, sign_get(GLOBAL, op + 1))[0], 401)       # signed for another id
        self.assertEqual(self.get(op, sign(GLOBAL, b""))[0], 401)              # the empty body alone
        self.assertEqual(self.get(op, sign_get(GLOBAL, op, int(time.time()) - 3600))[0], 401)
        hdrs = sign_get(GLOBAL, op)
        st, doc = self.get(op, hdrs)
        self.assertEqual(st, 202, doc)
        self.assertEqual((doc["operation"], doc["trigger"], doc["state"]), (op, "slow", "running"))
        st, doc = self.get(op, hdrs)                                           # good once
        self.assertEqual(st, 401, doc)
        self.assertIn("replay", doc["reason"])
        gate.release()
        st, doc = self.wait_done(op)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["operation"], doc["state"]), (op, "done"), doc)
        self.assertTrue(doc["result"]["sent"], doc)
        self.assertNotIn("error", doc)
        # unknown ids and other methods
        st, doc = self.get(op + 1000, self.bearer())
        self.assertEqual(st, 404, doc)
        self.assertEqual(self.get("abc", self.bearer())[0], 404)
        st, _, hd = self.h.request("POST", f"/api/notify/operations/{op}", b"{}", self.bearer())
        self.assertEqual(st, 405)
        # results are kept HERALD_NOTIFY_RESULT_TTL_S after the operation ended
        st, text, _ = self.h.admin_request("POST", "/-/clock", json.dumps({"advance_s": self.TTL - 5}).encode())
        self.assertEqual(st, 200, text)
        self.assertEqual(self.get(op, self.bearer())[0], 200)
        st, text, _ = self.h.admin_request("POST", "/-/clock", json.dumps({"advance_s": 10}).encode())
        self.assertEqual(st, 200, text)
        self.assertEqual(self.get(op, self.bearer())[0], 404)

    def test_failed_handler_and_count_bound(self):
        boom = self.start_op("boom", {"s": 1})
        st, doc = self.wait_done(boom)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["state"], doc["error"]), ("failed", "handler failed"), doc)
        self.assertNotIn("result", doc)
        # HERALD_NOTIFY_RESULTS_MAX=2: each newly finished one past two drops the oldest finished
        ops = []
        for i in range(2):
            conv = {"id": f"a:c{i}", "service_url": self.fc.url + self.PREFIX}
            gate = self.fc.hold(match=conv["id"], method="POST")
            ops.append(self.start_op("slow", {"s": 0, "conv": conv, "text": "x"}))
            gate.wait_held(1)
            self.assertEqual(self.get(ops[-1], self.bearer())[0], 202)
            self.assertEqual(self.get(boom, self.bearer())[0], 200, "running ones take no room")
            gate.release()
            self.assertEqual(self.wait_done(ops[-1])[0], 200)
        self.assertEqual(self.get(boom, self.bearer())[0], 404)
        self.assertEqual([self.get(op, self.bearer())[0] for op in ops], [200, 200])

@require_binary
class NotifyRestartTest(HeraldTestCase):
    def test_request_seen_before_a_restart_cannot_be_replayed_after_it(self):
        env = {"HERALD_NOTIFY_SECRET": GLOBAL}
        h = self.start_herald(BOT, env=env)
        body = b'{"deploy":"v2"}'
        hdrs = sign(GLOBAL, body)
        st, text, _ = h.request("POST", "/api/notify/echo", body, hdrs)
        self.assertEqual(st, 200, text)
        h.stop()
        # the new process starts in a later second than the request's timestamp
        while time.time() < int(hdrs["X-Herald-Timestamp"]) + 1:
            time.sleep(0.05)
        h2 = self.start_herald(BOT, env=env, db=h.db)
        st, text, _ = h2.request("POST", "/api/notify/echo", body, hdrs)
        self.assertEqual(st, 401, text)
        self.assertIn("from before herald started", json.loads(text)["reason"])
        self.assertNotIn("echo handler ran", h2.log)
        # signed again with the current time, the same event goes through
        st, text, _ = h2.request("POST", "/api/notify/echo", body, sign(GLOBAL, body))
        self.assertEqual(st, 200, text)


@require_binary
class NotifyReplayCacheFullTest(HeraldTestCase):
    def test_full_replay_cache_refuses_signed_requests_429(self):
        h = self.start_herald(BOT, env={"HERALD_NOTIFY_SECRET": GLOBAL, "HERALD_NOTIFY_REPLAY_MAX": 2})
        for i in range(2):
            body = json.dumps({"n": i}).encode()
            st, text, _ = h.request("POST", "/api/notify/echo", body, sign(GLOBAL, body))
            self.assertEqual(st, 200, text)
        body = b'{"n":2}'
        st, text, _ = h.request("POST", "/api/notify/echo", body, sign(GLOBAL, body))
        self.assertEqual(st, 429, text)
        doc = json.loads(text)
        self.assertIn("replay cache full", doc["reason"])
        self.assertTrue(1 <= doc["retry_after"] <= 301, doc)
        self.assertNotIn("echo handler ran 3", h.log)
        # the bearer form keeps no state and still works
        st, text, _ = h.request("POST", "/api/notify/echo", body, {"Authorization": "Bearer " + GLOBAL})
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text)["count"], 3)


NAMES_BOT = """
local teams = require "teams"
teams.on_notify("deploy-prod", function(ev) return { trigger = "deploy-prod" } end)
local ok, err = pcall(teams.on_notify, "deploy.prod", function(ev) return { trigger = "deploy.prod" } end)
teams.log("info", "NAMES deploy.prod registered=" .. tostring(ok) .. " " .. tostring(err))
teams.on_message(function(ev) end)
"""


@require_binary
class NotifyTriggerNamesTest(HeraldTestCase):
    def test_deploy_prod_and_deploy_dot_prod_do_not_share_a_secret(self):
        d = tempfile.mkdtemp(prefix="herald-names-")
        self.addCleanup(shutil.rmtree, d, True)
        script = os.path.join(d, "names.lua")
        with open(script, "w") as f:
            f.write(NAMES_BOT)
        h = self.start_herald(script, env={"HERALD_NOTIFY_SECRET": GLOBAL,
                                           "HERALD_NOTIFY_SECRET_DEPLOY_PROD": "prod-only"})
        h.wait_log(r"NAMES deploy\.prod registered=false .*lower-case letters, digits and -")
        st, text, _ = h.request("POST", "/api/notify/deploy-prod", b"{}", {"Authorization": "Bearer prod-only"})
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text), {"trigger": "deploy-prod"})
        st, text, _ = h.request("POST", "/api/notify/deploy-prod", b"{}", {"Authorization": "Bearer " + GLOBAL})
        self.assertEqual(st, 401, text)
        # deploy.prod is no trigger, whichever secret is offered
        for secret in ("prod-only", GLOBAL):
            st, text, _ = h.request("POST", "/api/notify/deploy.prod", b"{}", {"Authorization": "Bearer " + secret})
            self.assertEqual(st, 404, text)


@require_binary
class NotifyDevModeTest(HeraldTestCase):
    def test_dev_without_secret_allows(self):
        h = self.start_herald(BOT)
        st, text, _ = h.request("POST", "/api/notify/echo", b'{"a":1}')
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text)["got"], {"a": 1})


@require_binary
class NotifyAuthModeTest(AuthHeraldTestCase):
    def test_no_secret_outside_dev_401(self):
        h = self.start_auth_herald(BOT)
        before = h.log
        st, text, _ = h.request("POST", "/api/notify/echo", b'{"a":1}')
        self.assertEqual(st, 401, text)
        st, text, _ = h.request("POST", "/api/notify/echo", b'{"a":1}', {"Authorization": "Bearer anything"})
        self.assertEqual(st, 401, text)
        self.assertNotIn("echo handler ran", h.log)
        self.assertIn("no secret configured", h.log[len(before):])

    def test_secret_outside_dev_200(self):
        h = self.start_auth_herald(BOT, env={"HERALD_NOTIFY_SECRET_ECHO": GLOBAL})
        body = b'{"a":2}'
        st, text, _ = h.request("POST", "/api/notify/echo", body, sign(GLOBAL, body))
        self.assertEqual(st, 200, text)
        self.assertEqual(json.loads(text)["got"], {"a": 2})


def curl_snippet():
    """The signed curl snippet of scripts/notify.lua's header (from "body=" to the end of the curl
    command), as one shell script; the port is substituted later."""
    with open(os.path.join(ROOT, "scripts", "notify.lua"), encoding="utf-8") as f:
        lines = [ln[2:].strip() for ln in f if ln.startswith("--")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("body="))
    out, cont = [], False
    for ln in lines[start:]:
        out.append(ln)
        if ln.startswith("curl ") or cont:
            cont = ln.endswith("\\")
            if not cont:
                break
    return "\n".join(out)


@require_binary
class NotifyScriptTest(HeraldTestCase):
    """scripts/notify.lua end to end."""

    SECRET = "ci-secret-9"

    def test_build_event_reaches_subscribers_only(self):
        h = self.start_herald(os.path.join(ROOT, "scripts", "notify.lua"),
                              env={"HERALD_NOTIFY_SECRET": self.SECRET, "HERALD_GOVERNOR": "off"})
        users = [self.acts.user(f"29:nu-{i}", f"User {i}") for i in range(3)]
        convs = [f"a:notify-{i}" for i in range(3)]
        for c, u in zip(convs, users):
            for a in self.acts.personal_install(c, user=u):
                self.post_ok(h, a)
        self.fc.wait_until(lambda r: len([x for x in r if x["method"] == "POST"]) >= 3 or None, 10, "welcomes")
        # user 2 presses "Stop these" on a card: a message activity carrying the Action.Submit data
        click = self.acts.message(convs[2], "", user=users[2])
        click.pop("text")
        click["value"] = {"action": "opt_out", "category": "builds"}
        self.post_ok(h, click)
        self.fc.wait_until(lambda r: any(x["conversation_id"] == convs[2] and "no more build" in
                                         ((x["json"] or {}).get("text") or "") for x in r) or None,
                           10, "the opt-out confirmation")
        self.fc.clear()

        cmd = curl_snippet()
        self.assertIn("/api/notify/build", cmd)
        self.assertIn("$HERALD_NOTIFY_SECRET", cmd)
        self.assertIn("X-Herald-Timestamp", cmd)
        if shutil.which("openssl") is None:
            self.skipTest("openssl not installed")
        if shutil.which("curl") is None:
            self.skipTest("curl not installed")
        cmd = cmd.replace("http://127.0.0.1:3978", f"http://{h.host}:{h.port}")
        p = subprocess.run(["bash", "-c", cmd + " -sS -w '\\n%{http_code}'"], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "HERALD_NOTIFY_SECRET": self.SECRET})
        out, code = p.stdout.rsplit("\n", 1)
        self.assertEqual(code, "200", f"curl: {p.stdout} {p.stderr}\nlog:\n{h.log[-2000:]}")
        bid = json.loads(out)["broadcast"]
        self.assertIsInstance(bid, int)
        sends = self.fc.wait_until(lambda r: [x for x in r if x["method"] == "POST"]
                                   if len([x for x in r if x["method"] == "POST"]) >= 2 else None,
                                   10, "two build cards")
        time.sleep(tf(0.5))                   # and no third
        sends = [x for x in self.fc.snapshot() if x["method"] == "POST"]
        self.assertEqual(sorted(x["conversation_id"] for x in sends), convs[:2], self.fc.summary())
        for x in sends:
            act = x["json"]
            att = act["attachments"][0]
            self.assertEqual(att["contentType"], "application/vnd.microsoft.card.adaptive")
            body = att["content"]["body"]
            facts = {f["title"]: f["value"] for b in body if b.get("type") == "FactSet" for f in b["facts"]}
            self.assertEqual(facts.get("Project"), "herald")
            self.assertEqual(facts.get("Build"), "1234")
            self.assertEqual(facts.get("Triggered by"), "Megan")
            actions = att["content"].get("actions") or []
            self.assertTrue(any(a.get("type") == "Action.Submit" and (a.get("data") or {}).get("action") == "opt_out"
                                for a in actions), actions)
            self.assertTrue(any(a.get("type") == "Action.OpenUrl" for a in actions), actions)
            self.assertIn("1234", act.get("text", "") + act.get("summary", ""))
        rc, out, err = run_show(h, bid)
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["counts"].get("sent"), 2, doc)
        self.assertEqual(doc["counts"].get("skipped"), 1, doc)
        self.assertEqual(doc["total"], 3, doc)
        # the wrong secret is refused
        p = subprocess.run(["bash", "-c", cmd + " -sS -o /dev/null -w '%{http_code}'"], capture_output=True,
                           text=True, timeout=30, env={**os.environ, "HERALD_NOTIFY_SECRET": "nope"})
        self.assertEqual(p.stdout, "401")


def run_show(h, bid):
    from harness import run_cli, tf
    deadline = time.monotonic() + tf(10)
    while True:
        rc, out, err = run_cli(["broadcast", "show", str(bid), "--json", "--db", h.db])
        if rc != 0 or json.loads(out)["state"] in ("done", "cancelled") or time.monotonic() > deadline:
            return rc, out, err
        time.sleep(0.2)


if __name__ == "__main__":
    unittest.main()
