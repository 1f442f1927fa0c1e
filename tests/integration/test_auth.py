"""Authenticated mode, inbound (issue 3): every /api/messages request must carry a channel JWT that
passes PROTOCOL.md §2.2; anything else is 401, the handler does not run, and the log gives the
reason (never the token). Also: each cloud's issuer, key rotation and the JWKS refetch floor,
`herald check` and refusing to start without credentials."""
import base64
import json
import os
import re
import threading
import time
import unittest

from harness import (AUTH_APP_ID, AuthHeraldTestCase, bot, require_binary, run_cli, tf)
from token_service import (DEFAULT_TENANTS, GOV_ISSUER, ISSUERS, PUBLIC_ISSUER, SCOPES, RsaKey,
                           TokenService, b64url, channel_claims, mint_token)

AUTH_BOT = bot("auth_bot.lua")
REJECTED = 'unauthenticated activity rejected reason="{reason}" conversation={conv}'


def unsigned_token(claims, kid, alg="RS256"):
    """Header and payload as given, and 256 bytes of junk for a signature (checks that stop before
    the signature never look at it)."""
    h = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}))
    return f"{h}.{b64url(json.dumps(claims))}.{b64url(os.urandom(256))}"


def socket_inodes(h):
    """Inodes of the sockets herald has open now."""
    out = set()
    d = f"/proc/{h.proc.pid}/fd"
    for fd in os.listdir(d):
        try:
            link = os.readlink(os.path.join(d, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def read_connections(h, before=()):
    """herald's accepted connections on its listening port (sockets opened since before) whose
    request it has read: established, with nothing left in the receive queue."""
    mine = socket_inodes(h) - set(before)
    port = f"{h.port:04X}"
    found = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, state, queues, inode = cols[1], cols[3], cols[4], cols[9]
            if local.endswith(":" + port) and state == "01" and inode in mine and int(queues.split(":")[1], 16) == 0:
                found.append(inode)
    return found


@require_binary
class InboundAuthTest(AuthHeraldTestCase):
    def post(self, h, activity, authorization=None, no_header=False):
        headers = {} if no_header else {"Authorization": authorization}
        st, body, _ = h.request("POST", "/api/messages", json.dumps(activity).encode(), headers)
        return st, body

    def assert_rejected(self, h, activity, authorization, reason, no_header=False):
        conv = activity["conversation"]["id"]
        st, body = self.post(h, activity, authorization, no_header)
        self.assertEqual(st, 401, f"{conv}: expected 401, got {st} {body!r}\nlog tail:\n{h.log[-1500:]}")
        self.assertEqual(json.loads(body), {"error": "unauthorized"}, body)
        reasons = reason if isinstance(reason, (list, tuple)) else [reason]
        lines = [REJECTED.format(reason=r, conv=conv) for r in reasons]
        log = h.log
        self.assertTrue(any(l in log for l in lines),
                        f"no log line {lines!r}; rejections logged:\n" +
                        "\n".join(l for l in log.splitlines() if "rejected" in l)[-2000:])

    # ---- the attack matrix -------------------------------------------------------------------
    def test_attack_matrix_each_401_without_running_the_handler(self):
        skype = RsaKey.named("skype-only", kid="skype-key-1")
        self.ts.add_key(skype, endorsements=["skype"])
        h = self.start_auth_herald()
        su = self.acts.service_url
        k = self.ts.signing_key
        attacker = RsaKey.named("attacker", kid=k.kid)   # same kid, other key material
        now = int(time.time())

        def claims(**kw):
            return channel_claims(AUTH_APP_ID, su, **kw)

        valid = self.mint(su)
        vh, vp, vs = valid.split(".")
        tampered_payload = b64url(json.dumps(claims(exp=now + 7200)))
        cases = [
            ("no-header", None, "no Authorization header"),
            ("empty-header", "", "no Authorization header"),
            ("not-bearer", "Basic " + base64.b64encode(b"app:secret").decode(),
             "Authorization is not a Bearer token"),
            ("bearer-without-token", "Bearer", "Authorization is not a Bearer token"),
            # (the HTTP server trims the trailing space, so herald may see just "Bearer")
            ("bearer-empty", "Bearer ", ["malformed Bearer token", "Authorization is not a Bearer token"]),
            ("bearer-two-tokens", "Bearer " + valid + " " + valid, "malformed Bearer token"),
            ("alg-none", "Bearer " + mint_token(claims(), kid=k.kid, alg="none"),
             "token algorithm is not RS256"),
            ("alg-none-valid-sig", "Bearer " + mint_token(claims(), key=k, header={"alg": "none"}),
             "token algorithm is not RS256"),
            ("hs256-public-key-as-secret",
             "Bearer " + mint_token(claims(), kid=k.kid, alg="HS256", hmac_secret=k.public_pem),
             "token algorithm is not RS256"),
            ("alg-rs512-header", "Bearer " + mint_token(claims(), key=k, header={"alg": "RS512"}),
             "token algorithm is not RS256"),
            ("no-kid", "Bearer " + mint_token(claims(), key=k, kid=False), "token header has no kid"),
            ("unknown-kid", "Bearer " + mint_token(claims(), key=k, kid="no-such-kid"),
             "unknown signing key (kid)"),
            ("signature-of-another-key", "Bearer " + mint_token(claims(), key=k, sign_with=attacker),
             "bad signature"),
            ("tampered-payload", f"Bearer {vh}.{tampered_payload}.{vs}", "bad signature"),
            ("signature-stripped", f"Bearer {vh}.{vp}.", "bad signature"),
            ("expired", "Bearer " + mint_token(claims(nbf=now - 7200, exp=now - 400), key=k),
             "token expired"),
            ("not-yet-valid", "Bearer " + mint_token(claims(nbf=now + 400, exp=now + 4000), key=k),
             "token not yet valid (nbf)"),
            ("no-exp", "Bearer " + mint_token(claims(exp=None), key=k), "token has no exp"),
            ("wrong-issuer", "Bearer " + mint_token(claims(issuer="https://api.botframework.evil"), key=k),
             "wrong issuer"),
            ("gov-issuer-on-public-cloud", "Bearer " + mint_token(claims(issuer=GOV_ISSUER), key=k),
             "wrong issuer"),
            ("wrong-audience", "Bearer " + mint_token(claims(aud="11111111-2222-3333-4444-555555555555"), key=k),
             "wrong audience"),
            ("no-audience", "Bearer " + mint_token(claims(aud=None), key=k), "wrong audience"),
            ("missing-serviceurl", "Bearer " + mint_token(claims(serviceurl=None), key=k),
             "token has no serviceurl claim"),
            ("serviceurl-differs", "Bearer " + mint_token(claims(serviceurl="http://127.0.0.1:9/_connector"), key=k),
             "serviceurl claim differs from the activity's serviceUrl"),
            ("other-channel-endorsement", "Bearer " + mint_token(claims(), key=skype),
             "signing key is not endorsed for the activity's channelId"),
            ("truncated-signature", f"Bearer {vh}.{vp}.{vs[:100]}", "bad signature"),
            ("truncated-two-parts", f"Bearer {vh}.{vp}",
             "token is not a compact JWS (three dot-separated parts)"),
            ("truncated-mid-payload", f"Bearer {vh}.{vp[:len(vp) // 2]}",
             "token is not a compact JWS (three dot-separated parts)"),
            ("four-parts", f"Bearer {valid}.{vs}", "token is not a compact JWS (three dot-separated parts)"),
            ("bad-base64", f"Bearer {vh}.{vp[:10]}*!{vp[12:]}.{vs}", "token part is not base64url"),
            ("standard-base64-padding", f"Bearer {vh}.{vp}.{vs}==", "token part is not base64url"),
            ("header-not-json", f"Bearer {b64url(b'not json')}.{vp}.{vs}", "token header is not a JSON object"),
            ("payload-not-json", "Bearer " + mint_token(b"[1,2,3]", key=k), "token payload is not a JSON object"),
            ("64KiB-header", "Bearer " + "A" * 65536, "token too large"),
            ("64KiB-token-shaped", f"Bearer {vh}.{'A' * 65536}.{vs}", "token too large"),
        ]
        self.minted += [c[1][7:] for c in cases if c[1] and c[1].startswith("Bearer ") and len(c[1]) > 60]
        for name, auth, reason in cases:
            with self.subTest(case=name):
                act = self.acts.message(f"a:attack-{name}", f"attack-{name}")
                self.assert_rejected(h, act, auth, reason, no_header=auth is None)
        # no handler ran: nothing logged by the bot, nothing sent, nothing stored
        self.assertNotIn("AUTHBOT run", h.log)
        self.assertEqual(self.fc.snapshot(), [], "a rejected activity made herald call the connector")
        hz = self.health(h)
        self.assertEqual(hz["unauthorized"], len(cases), hz)
        self.assertEqual(hz["activities"], 0, hz)
        # and a valid activity still works: its handler is the first run
        self.assertEqual(h.post_activity(self.acts.message("a:attack-control", "stats"))[0], 200)
        req = self.fc.wait_for(1)[0]
        self.assertEqual(req["json"]["text"], "runs=1", self.fc.summary())
        self.assertEqual(self.ts.jwks_fetches, 1, "a bad token made herald refetch the keys")

    def test_valid_token_runs_the_handler_and_cached_token_is_reused(self):
        h = self.start_auth_herald()
        conv = "a:happy-1"
        tok = "Bearer " + self.mint(self.acts.service_url)
        for i in range(3):   # the same token again (cache) with new activity ids
            st, body = self.post(h, self.acts.message(conv, f"echo {i}"), tok)
            self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        reqs = self.fc.wait_for(3)
        self.assertEqual(sorted(r["json"]["text"] for r in reqs), ["echo echo 0", "echo echo 1", "echo echo 2"])
        # the cached verification still checks the activity: same token, other serviceUrl → 401
        other = dict(self.acts.message("a:happy-2", "attack-cached-other-url"))
        other["serviceUrl"] = "http://127.0.0.1:9/_connector"
        self.assert_rejected(h, other, tok, "serviceurl claim differs from the activity's serviceUrl")
        self.assertNotIn("text=attack-cached", h.log)

    def test_service_url_comparison_ignores_case_and_one_trailing_slash(self):
        h = self.start_auth_herald()
        su = self.acts.service_url
        a = self.acts.message("a:slash", "echo slash")
        st, body = self.post(h, a, "Bearer " + self.mint(su.upper().replace("HTTP://", "http://") + "/"))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        self.fc.wait_for(1)

    def test_endorsed_key_for_its_own_channel_is_accepted(self):
        # positive control for the endorsement case: the skype-only key is fine for channelId skype
        skype = RsaKey.named("skype-only", kid="skype-key-1")
        self.ts.add_key(skype, endorsements=["skype"])
        h = self.start_auth_herald()
        a = self.acts.message("a:skype-1", "quiet skype")
        a["channelId"] = "skype"
        st, body = self.post(h, a, "Bearer " + self.mint(self.acts.service_url, key=skype))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        h.wait_log(r"AUTHBOT quiet tag=skype")

    def test_exp_near_int64_max_is_safe_on_repeat(self):
        # exp far in the future (a number jansson reads fine); the second use hits the verified-token
        # cache, whose expiry arithmetic must not overflow (UBSan: -fno-sanitize-recover)
        h = self.start_auth_herald()
        su = self.acts.service_url
        for exp in (9223372036854774784, 1e300):
            tok = "Bearer " + self.mint(su, exp=exp)
            for i in range(2):
                with self.subTest(exp=exp, attempt=i):
                    st, body = self.post(h, self.acts.message("a:bigexp", f"quiet big-{i}"), tok)
                    self.assertIn(st, (200, 401), f"{st} {body!r}")
                    self.assertTrue(h.alive(), f"herald died:\n{h.log[-3000:]}")

    def test_rejected_activity_cannot_forge_log_lines(self):
        # the conversation id of an unauthenticated request is attacker-chosen; it must not be able
        # to start a new log line
        h = self.start_auth_herald()
        act = self.acts.message("a:x\n2026-01-01T00:00:00.000Z info  FORGED herald stopped cleanly", "x")
        st, _ = self.post(h, act, None, no_header=True)
        self.assertEqual(st, 401)
        starts = [l for l in h.log.splitlines() if l.startswith("2026-01-01T00:00:00.000Z info  FORGED")]
        self.assertEqual(starts, [], "an unauthenticated conversation id forged a log line:\n" +
                         "\n".join(l for l in h.log.splitlines() if "FORGED" in l or "rejected" in l))

    # ---- clouds ------------------------------------------------------------------------------
    def test_happy_path_for_each_cloud(self):
        for cloud in ("public", "gcc", "gcch", "dod"):
            with self.subTest(cloud=cloud):
                ts = TokenService(client_id=AUTH_APP_ID, client_secret=self.secret, issuer=ISSUERS[cloud],
                                  scope=SCOPES[cloud]).start()
                self._services.append(ts)
                self.fc.token_ok = lambda t: any(s.is_issued(t) for s in self._services)
                h = self.start_auth_herald(ts=ts, auth=ts.herald_env(cloud=cloud))
                conv = f"a:cloud-{cloud}"
                st, body = h.post_activity(self.acts.message(conv, f"send {cloud}"))
                self.assertEqual(st, 200, f"{cloud}: {st} {body!r}\n{h.log[-1500:]}")
                req = self.fc.wait_until(lambda rs: [r for r in rs if r["conversation_id"] == conv],
                                         what=f"the {cloud} send")[0]
                self.assertEqual(req["authorization"], "Bearer " + ts.issued[0])
                tr = ts.requests()
                self.assertEqual(len(tr), 1, tr)
                self.assertEqual(tr[0]["tenant"], DEFAULT_TENANTS[cloud], tr[0]["path"])
                self.assertEqual(tr[0]["form"].get("scope"), SCOPES[cloud])
                self.assertEqual(tr[0]["errors"], [])
                # the other clouds' issuer is refused
                wrong = PUBLIC_ISSUER if ISSUERS[cloud] == GOV_ISSUER else GOV_ISSUER
                tok = "Bearer " + self.mint(self.acts.service_url, ts=ts, issuer=wrong)
                self.assert_rejected(h, self.acts.message(f"a:cloud-{cloud}-x", "attack"), tok, "wrong issuer")
                h.stop()

    def test_single_tenant_authority_and_bot_framework_names(self):
        env = self.ts.herald_env(secret=False)
        del env["CLIENT_ID"]
        env.update({"MicrosoftAppId": AUTH_APP_ID, "MicrosoftAppPassword": self.secret,
                    "MicrosoftAppTenantId": "7a1e0c00-0000-4000-8000-0000000000aa"})
        h = self.start_auth_herald(auth=env)
        self.assertEqual(h.post_activity(self.acts.message("a:st-1", "send st"))[0], 200)
        self.fc.wait_for(1)
        tr = self.ts.requests()
        self.assertEqual([r["tenant"] for r in tr], ["7a1e0c00-0000-4000-8000-0000000000aa"])
        self.assertEqual(tr[0]["errors"], [])

    # ---- keys --------------------------------------------------------------------------------
    def test_key_rotation_picked_up_on_unknown_kid_without_restart(self):
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=1))
        pid = h.proc.pid
        self.assertEqual(h.post_activity(self.acts.message("a:rot", "quiet before"))[0], 200)
        self.assertEqual(self.ts.jwks_fetches, 1)
        old = self.ts.signing_key
        new = self.ts.rotate()
        self.assertNotEqual(old.kid, new.kid)
        time.sleep(1.2)    # past the floor since the start-up fetch
        st, body = h.post_activity(self.acts.message("a:rot", "quiet after"))
        self.assertEqual(st, 200, f"new key not picked up: {st} {body!r}\n{h.log[-1500:]}")
        h.wait_log(r"AUTHBOT quiet tag=after")
        self.assertEqual(self.ts.jwks_fetches, 2)
        self.assertEqual(self.health(h)["jwks_fetches"], 2)
        # the dropped key no longer validates (within the floor: no further fetch)
        tok = "Bearer " + self.mint(self.acts.service_url, key=old)
        st, _, _ = h.request("POST", "/api/messages",
                             json.dumps(self.acts.message("a:rot-old", "attack-old-key")).encode(),
                             {"Authorization": tok})
        self.assertEqual(st, 401)
        self.assertIn(REJECTED.format(reason="unknown signing key (kid)", conv="a:rot-old"), h.log)
        self.assertEqual(self.ts.jwks_fetches, 2)
        self.assertEqual(h.proc.pid, pid)
        self.assertTrue(h.alive())

    def test_flood_of_unknown_kids_respects_the_refetch_floor(self):
        floor = 3
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=floor))
        self.ts.wait_until(lambda s: s.jwks_fetches >= 1, what="the start-up key fetch")
        started = time.monotonic()
        su = self.acts.service_url
        statuses = []
        lock = threading.Lock()

        def flood(seconds, tag):
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                i += 1
                tok = unsigned_token(channel_claims(AUTH_APP_ID, su), f"flood-{tag}-{i}")
                st, _, _ = h.request("POST", "/api/messages",
                                     json.dumps(self.acts.message(f"a:flood-{tag}", "attack")).encode(),
                                     {"Authorization": "Bearer " + tok}, timeout=15)
                with lock:
                    statuses.append(st)

        def run(seconds, tag):
            ts = [threading.Thread(target=flood, args=(seconds, f"{tag}{j}")) for j in range(6)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        run(1.5, "a")            # within the floor of the start-up fetch: no refetch at all
        self.assertLess(time.monotonic() - started, floor - 0.3,
                        "the first flood outlasted the refetch floor: nothing tested")
        self.assertEqual(self.ts.jwks_fetches, 1, "refetched within the floor of the start-up fetch")
        time.sleep(max(0, floor + 0.3 - (time.monotonic() - started)))
        t0 = time.monotonic()
        run(2.5, "b")            # past the floor: exactly one refetch for the whole flood
        dur = time.monotonic() - t0
        self.assertGreaterEqual(len(statuses), 50, "the flood was too small to mean anything")
        self.assertEqual(set(statuses), {401}, f"statuses {sorted(set(statuses))}")
        allowed = 1 + int(dur // floor)
        self.assertGreaterEqual(self.ts.jwks_fetches, 2, "an unknown kid past the floor did not refetch")
        self.assertLessEqual(self.ts.jwks_fetches - 1, allowed,
                             f"{self.ts.jwks_fetches - 1} refetches in {dur:.1f}s with a {floor}s floor "
                             f"({len(statuses)} bad-kid requests)")
        self.assertEqual(self.ts.metadata_fetches, self.ts.jwks_fetches)
        self.assertEqual(self.health(h)["unauthorized"], len(statuses))

    def test_keys_unavailable_gives_503_then_recovers(self):
        self.ts.keys_outage = 503
        h = self.start_auth_herald(auth=self.ts.herald_env(floor=1))
        self.ts.wait_until(lambda s: s.metadata_fetches >= 1, what="the start-up metadata fetch")
        h.wait_log(r"cannot refresh the channel's signing keys")
        st, body = h.post_activity(self.acts.message("a:nokeys", "quiet during"))
        self.assertEqual(st, 503, f"{st} {body!r}")
        self.assertNotIn("AUTHBOT run", h.log)
        self.ts.keys_outage = None
        time.sleep(1.2)
        st, body = h.post_activity(self.acts.message("a:nokeys", "quiet after"))
        self.assertEqual(st, 200, f"{st} {body!r}\n{h.log[-1500:]}")
        h.wait_log(r"AUTHBOT quiet tag=after")

    def test_activities_wait_for_a_slow_key_fetch(self):
        self.ts.keys_delay = 1.0     # the start-up fetch is still running when activities arrive
        h = self.start_auth_herald()
        results = []

        def post(i):
            results.append(h.post_activity(self.acts.message(f"a:slow-{i}", f"quiet slow{i}"))[0])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 10, h.log[-2000:])
        self.assertEqual(self.ts.jwks_fetches, 1)
        for i in range(10):
            h.wait_log(rf"AUTHBOT quiet tag=slow{i}\b")

    def test_sigterm_while_activities_wait_for_keys(self):
        self.ts.keys_delay = 4.0
        h = self.start_auth_herald()
        results = []

        def post(i):
            try:
                results.append(h.post_activity(self.acts.message(f"a:term-{i}", f"quiet term{i}"), timeout=20)[0])
            except Exception as e:  # noqa: BLE001 — a dropped connection is the failure reported below
                results.append(f"no answer: {e!r}")

        conns = socket_inodes(h)
        threads = [threading.Thread(target=post, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        # all three read by herald (and so parked, waiting for the 4 s key fetch) before the SIGTERM
        deadline = time.monotonic() + tf(10)
        while len(read_connections(h, conns)) < 3:
            self.assertLess(time.monotonic(), deadline, "herald never read the three activities")
            time.sleep(0.02)
        h.terminate()
        for t in threads:
            t.join()
        self.assertEqual(h.wait_exit(20), 0, h.log[-2000:])
        self.assertEqual(results, [503] * 3, "activities waiting for keys at SIGTERM must get 503:\n" +
                         h.log[-2000:])
        self.assertNotIn("AUTHBOT run", h.log)

    # ---- configuration -----------------------------------------------------------------------
    def test_check_prints_config_with_the_secret_masked(self):
        db = os.path.join(self._tmpdir(), "c.db")
        for cloud in ("public", "gcch"):
            with self.subTest(cloud=cloud):
                env = self.ts.herald_env(cloud=cloud)
                code, out, err = run_cli(["check", "--db", db, AUTH_BOT], env=env)
                self.assertEqual(code, 0, err)
                self.assertNotIn(self.secret, out + err)
                self.assertRegex(out, r"app secret\s+\*+ \(set\)")
                self.assertRegex(out, r"mode\s+authenticated")
                self.assertIn(AUTH_APP_ID, out)
                self.assertIn(f"token endpoint         {self.ts.url}/{DEFAULT_TENANTS[cloud]}/oauth2/v2.0/token", out)
                self.assertRegex(out, rf"oauth scope\s+{re.escape(SCOPES[cloud])}")
                self.assertRegex(out, rf"token issuer\s+{re.escape(ISSUERS[cloud])}")
                self.assertRegex(out, rf"openid metadata\s+{re.escape(self.ts.metadata_url)}")
        # the Bot Framework variable names are masked too
        env = self.ts.herald_env(secret=False)
        env.update({"MicrosoftAppPassword": self.secret})
        code, out, err = run_cli(["check", "--db", db, AUTH_BOT], env=env)
        self.assertEqual(code, 0, err)
        self.assertNotIn(self.secret, out + err)
        self.assertRegex(out, r"app secret\s+\*+ \(set\)")

    def test_refuses_to_start_without_credentials(self):
        db = os.path.join(self._tmpdir(), "r.db")
        base = {"HERALD_LOGIN_URL": self.ts.url, "HERALD_OPENID_METADATA_URL": self.ts.metadata_url}
        cases = [
            ("no app id", dict(base), "CLIENT_ID"),
            ("app id without secret", dict(base, CLIENT_ID=AUTH_APP_ID), "CLIENT_SECRET"),
            ("missing certificate file", dict(base, CLIENT_ID=AUTH_APP_ID,
                                              HERALD_CERTIFICATE_PATH="/nonexistent/cert.pem"), "cert"),
            ("plain http to a non-loopback login URL",
             dict(base, CLIENT_ID=AUTH_APP_ID, CLIENT_SECRET=self.secret,
                  HERALD_LOGIN_URL="http://login.example.com"), "HERALD_LOGIN_URL"),
            ("unknown cloud", dict(base, CLIENT_ID=AUTH_APP_ID, CLIENT_SECRET=self.secret,
                                   HERALD_CLOUD="mars"), "HERALD_CLOUD"),
        ]
        for name, env, needle in cases:
            with self.subTest(case=name):
                code, out, err = run_cli(["run", "--listen", "127.0.0.1:0", "--db", db, AUTH_BOT], env=env)
                self.assertIn(code, (1, 2), f"{name}: exit {code}\n{err}")
                self.assertNotIn("listening on", err)
                self.assertIn(needle, err)
                self.assertNotIn(self.secret, out + err)

    def _tmpdir(self):
        import tempfile
        d = tempfile.mkdtemp(prefix="herald-auth-")
        self.addCleanup(__import__("shutil").rmtree, d, True)
        return d


@require_binary
class UnauthenticatedFloodTest(AuthHeraldTestCase):
    """Bodies refused before any script runs must not pile up in the script's heap: they are
    parsed and refused in C (activity.c) and never enter it."""

    def test_refused_bodies_are_collected(self):
        h = self.start_auth_herald()
        a = self.acts.message("a:flood", "x")
        a["entities"] = [{"type": "junk", "i": i, "s": "abcdefgh"} for i in range(8000)]
        body = json.dumps(a)               # ~370 KB, ~1.7 MB of Lua tables once decoded
        for _ in range(40):
            st, _ = h.post_activity(body, headers={"Authorization": "Bearer not.a.token"})
            self.assertEqual(st, 401)
        used = self.health(h)["lua_memory_bytes"]
        self.assertLess(used, 16 << 20, f"{used} bytes of Lua memory after 40 refused bodies")

    def test_unauthenticated_body_never_reaches_the_script(self):
        """Issue 13: the body is parsed, validated and its token checked in C (activity.c), so a
        refused 1 MB activity leaves the script's Lua memory exactly as it was: not a byte of it
        was decoded into the generation's state."""
        h = self.start_auth_herald()
        a = self.acts.message("a:unauth-1mb", "x")
        a["entities"] = []
        body = json.dumps(a)
        while len(body) < 1_000_000:       # under the default 1 MiB body limit
            a["entities"] += [{"type": "junk", "i": i, "s": "abcdefgh" * 4} for i in range(500)]
            body = json.dumps(a)
        self.assertLess(len(body), 1 << 20)
        before = self.health(h)["lua_memory_bytes"]
        for auth in ("Bearer not.a.token", None):
            st, _ = h.post_activity(body, headers={"Authorization": auth} if auth else {})
            self.assertEqual(st, 401)
        after = self.health(h)["lua_memory_bytes"]
        self.assertEqual(after, before, f"Lua memory {before} → {after} bytes for refused bodies")
        self.assertNotIn("AUTHBOT run", h.log)


if __name__ == "__main__":
    unittest.main()
