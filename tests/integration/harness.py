"""harness.py — runs the herald binary under test against tests/fake_connector.py.

    fc = FakeConnector().start()
    h = Herald(bot("main_bot.lua"), env={...}).start()
    acts = Activities(fc.url)
    for a in acts.personal_install("a:p1"): h.post_activity(a)
    h.stop()          # SIGTERM; asserts exit 0 and a sanitizer-clean stderr

HERALD_BIN (env) names the binary; default build/asan/herald. Each Herald gets its own temp dir
(database h.db, stderr.log, stdout.log); h.log is the stderr text so far. The admin endpoints
(/metrics, /-/…) answer only on the admin socket beside the database: h.admin_request(...).

Time: HERALD_TEST_TIME_FACTOR (env, default 1) is the one allowance for slow machines. The waiting
helpers here and in fake_connector.py / token_service.py multiply their timeout by it themselves
(Herald.start, wait_log, wait_exit, stop, request / post_activity / admin_request / healthz / raw,
run_cli, wait_requests, assert_no_more's settle, fc.wait_until / wait_for, ts.wait_until): pass
them plain seconds. A test scales its own bounds with tf(seconds): polling deadlines, sleeps that
give something time to (not) happen, latency asserts. Tests assert outcomes, never which of two
timers or threads wins; where a flow must stop at a known point, fc.hold() holds the connector's
answers instead of racing the flow.
"""
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from fake_connector import FakeConnector  # noqa: E402,F401  (re-exported for tests)
import fake_connector  # noqa: E402,F401

HERALD_BIN = os.path.abspath(os.path.join(ROOT, os.environ.get("HERALD_BIN", "build/asan/herald")))
BOTS = os.path.join(HERE, "bots")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
LISTEN_RE = re.compile(r"listening on http://([0-9.]+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d+)")

# Variables that would change how herald starts; never inherited from the caller's environment.
_SCRUB = ("CLIENT_ID", "CLIENT_SECRET", "TENANT_ID", "MicrosoftAppId", "MicrosoftAppPassword",
          "MicrosoftAppTenantId", "MicrosoftAppType", "HERALD_DEV", "HERALD_LISTEN", "HERALD_DB",
          "HERALD_LOG_LEVEL", "HERALD_MAX_BODY_BYTES", "HERALD_RESPONSE_DEADLINE_MS",
          "HERALD_REDELIVERY_WINDOW_S", "HERALD_SHUTDOWN_GRACE_MS", "HERALD_CONNECTOR_TIMEOUT_MS",
          # authenticated mode (issue 3)
          "HERALD_CLOUD", "HERALD_LOGIN_URL", "HERALD_OAUTH_SCOPE", "HERALD_OPENID_METADATA_URL",
          "HERALD_TOKEN_ISSUER", "HERALD_PROACTIVE_SERVICE_URL", "HERALD_TRUSTED_SERVICE_URLS",
          "HERALD_CERTIFICATE_PATH", "HERALD_CERTIFICATE_KEY_PATH", "HERALD_JWKS_REFRESH_FLOOR_S",
          "HERALD_JWKS_REFRESH_S", "HERALD_APP_TYPE",
          # admin endpoints (hardening issue, item 4)
          "HERALD_ADMIN_SOCKET", "HERALD_ADMIN_LISTEN", "HERALD_ADMIN_TOKEN")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket (herald's admin socket)."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def http_request(conn, method, path, body=None, headers=None):
    """One request on conn (closed after); returns (status, body text, lower-cased headers dict)."""
    try:
        h = dict(headers or {})
        if body is not None and not any(k.lower() == "content-type" for k in h):
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, data.decode("utf-8", errors="replace"), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


# The one documented allowance for slow machines: every time bound a test waits for is multiplied by
# HERALD_TEST_TIME_FACTOR (default 1; the suite passes at 1 on 2 contended cores; a much slower
# machine, valgrind or qemu may want 3). Tests assert outcomes, never which of two timers wins; this
# only stretches how long they wait for an outcome. fake_connector.py reads the same variable.
TIME_FACTOR = float(os.environ.get("HERALD_TEST_TIME_FACTOR", "1") or "1")


def tf(seconds):
    """seconds scaled by HERALD_TEST_TIME_FACTOR."""
    return seconds * TIME_FACTOR


def free_port():
    """A TCP port free on 127.0.0.1 now, for a process that must keep its port across a restart."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bot(name):
    """Absolute path of tests/integration/bots/NAME."""
    return os.path.join(BOTS, name)


def have_binary():
    return os.path.isfile(HERALD_BIN) and os.access(HERALD_BIN, os.X_OK)


def require_binary(testcase_cls):
    """Class decorator: skip when the binary is missing (run_all.sh counts skips as neither)."""
    return unittest.skipUnless(have_binary(), f"{HERALD_BIN} not built")(testcase_cls)


def base_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    # Most suites assert what one failed attempt returns (the code of a 5xx, a reset, a timeout).
    # The outbox retries such failures, so they run with one attempt; the outbox suites, which
    # test retries, pass their own HERALD_OUTBOX_MAX_ATTEMPTS.
    env["HERALD_OUTBOX_MAX_ATTEMPTS"] = "1"
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


def sanitizer_problems(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def line_of(path, needle):
    """1-based number of the first line of file path containing needle."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if needle in line:
                return i
    raise AssertionError(f"{needle!r} not in {path}")


def run_cli(args, env=None, timeout=20, cwd=None):
    """Runs HERALD_BIN with args to completion; returns (exit code, stdout, stderr). A process
    still running after tf(timeout) is killed and reported as an AssertionError."""
    timeout = tf(timeout)
    p = subprocess.Popen([HERALD_BIN] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=base_env(env), cwd=cwd or ROOT, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"herald {' '.join(args)} still running after {timeout}s; stderr:\n"
                             f"{err.decode(errors='replace')[-3000:]}")
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Herald:
    def __init__(self, script, env=None, args=None, dev=True, listen="127.0.0.1:0", db=None, auth=None,
                 authorize=None):
        """auth: environment for authenticated mode (e.g. TokenService.herald_env()); when given,
        herald runs without --dev. authorize: activity dict → Authorization header value, used by
        post_activity when the caller passes no Authorization header."""
        self.script = script
        self.env_extra = dict(env or {})
        self.extra_args = list(args or [])
        self.dev = dev
        self.auth = dict(auth) if auth is not None else None
        self.authorize = authorize
        if self.auth is not None:
            self.dev = False
            self.env_extra = {**self.auth, **self.env_extra}
        self.listen = listen
        self.tmp = tempfile.mkdtemp(prefix="herald-it-")
        self.db = db or os.path.join(self.tmp, "h.db")
        self.stderr_path = os.path.join(self.tmp, "stderr.log")
        self.stdout_path = os.path.join(self.tmp, "stdout.log")
        self.proc = None
        self.host = None
        self.port = None
        self.exit_code = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def command(self):
        cmd = [HERALD_BIN, "run"]
        if self.dev:
            cmd.append("--dev")
        cmd += ["--listen", self.listen, "--db", self.db] + self.extra_args + [self.script]
        return cmd

    def start(self, timeout=20):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=base_env(self.env_extra), cwd=ROOT)
        timeout = tf(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.log) or LISTEN_RE.search(self.stdout)
            if m:
                self.host = m.group(1).strip("[]")
                self.port = int(m.group(2))
                return self
            if self.proc.poll() is not None:
                self.exit_code = self.proc.returncode
                self._close_files()
                raise AssertionError(f"herald exited with {self.proc.returncode} before listening; "
                                     f"stderr:\n{self.log[-4000:]}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"no 'listening on http://HOST:PORT' line within {timeout}s; stderr:\n"
                             f"{self.log[-4000:]}")

    def _close_files(self):
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f and not f.closed:
                f.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self):
        """CPU time (user + system, every thread) herald has used so far, from /proc/PID/stat.
        Unlike wall time it does not grow while the machine runs something else, so bounds on
        it (the CPU slice) hold on a busy machine too."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def terminate(self, sig=signal.SIGTERM):
        if self.alive():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        timeout = tf(timeout)
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_files()
            raise AssertionError(f"herald did not exit within {timeout}s of SIGTERM; stderr tail:\n"
                                 f"{self.log[-3000:]}")
        self._close_files()
        return self.exit_code

    def stop(self, timeout=30, expect_code=0):
        """SIGTERM, wait, and assert exit code and sanitizer-clean stderr."""
        if self.proc is None:
            return None
        if self.exit_code is None:
            self.terminate()
            self.wait_exit(timeout)
        self.assert_clean(expect_code)
        return self.exit_code

    def assert_clean(self, expect_code=0):
        log = self.log
        bad = sanitizer_problems(log)
        if bad:
            raise AssertionError(f"sanitizer report(s) {bad} in herald stderr:\n{_around(log, bad[0])}")
        if expect_code is not None and self.exit_code != expect_code:
            raise AssertionError(f"herald exit code {self.exit_code}, expected {expect_code}; "
                                 f"stderr tail:\n{log[-3000:]}")

    def kill(self):
        """Hard stop for cleanup paths (no assertions)."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._close_files()

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- logs ------------------------------------------------------------------------------------
    @property
    def log(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10):
        """Waits until the stderr text matches regex pattern; returns the match."""
        timeout = tf(timeout)
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log)
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"log never matched {pattern!r} within {timeout}s; tail:\n"
                                     f"{self.log[-3000:]}")
            time.sleep(0.05)

    # ---- HTTP ------------------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=30):
        """One request to the public listener on a fresh connection; returns (status, body text,
        headers dict)."""
        return http_request(http.client.HTTPConnection(self.host, self.port, timeout=tf(timeout)),
                            method, path, body, headers)

    @property
    def admin_socket(self):
        """The admin socket herald makes beside its database (unless --admin-socket says else)."""
        return self.db + ".admin.sock"

    def admin_request(self, method, path, body=None, headers=None, timeout=30):
        """One request to the admin socket (/metrics, /-/reload, /-/broadcast, /-/clock)."""
        return http_request(UnixHTTPConnection(self.admin_socket, timeout=tf(timeout)), method, path, body,
                            headers)

    def metrics(self):
        """GET /metrics on the admin socket, as {name: value}."""
        st, body, _ = self.admin_request("GET", "/metrics")
        if st != 200:
            raise AssertionError(f"GET /metrics on the admin socket → {st} {body!r}")
        out = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.partition(" ")
                out[k] = float(v)
        return out

    def post_activity(self, activity, headers=None, path="/api/messages", timeout=30):
        """POSTs an activity (dict → JSON, or raw bytes/str); returns (status, body text)."""
        if (self.authorize is not None and isinstance(activity, dict) and
                not any(k.lower() == "authorization" for k in (headers or {}))):
            headers = dict(headers or {})
            headers["Authorization"] = self.authorize(activity)
        if isinstance(activity, (dict, list)):
            body = json.dumps(activity).encode("utf-8")
        elif isinstance(activity, str):
            body = activity.encode("utf-8")
        else:
            body = activity
        st, text, _ = self.request("POST", path, body, headers, timeout)
        return st, text

    def post_all(self, activities, expect=200):
        """Posts each activity in order; asserts each status is expect; returns the bodies."""
        out = []
        for a in activities:
            st, body = self.post_activity(a)
            if expect is not None and st != expect:
                raise AssertionError(f"POST /api/messages {a.get('type')} → {st} {body!r}, expected {expect}")
            out.append(body)
        return out

    def healthz(self):
        st, body, _ = self.request("GET", "/healthz", timeout=10)
        return st, body

    def raw(self, data, timeout=10, shut_wr=True):
        """Sends raw bytes on a new socket; returns everything the server sent before closing
        (b"" when it closed without answering). Raises socket.timeout when it neither answers
        nor closes within timeout."""
        s = socket.create_connection((self.host, self.port), timeout=tf(timeout))
        try:
            try:
                s.sendall(data)
                if shut_wr:
                    s.shutdown(socket.SHUT_WR)
            except OSError:  # the server may already have answered and closed
                pass
            chunks = []
            while True:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    break
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks)
        finally:
            s.close()


def raw_status(resp):
    """Status code of the first final (non-1xx) HTTP response in raw bytes, or None."""
    for m in re.finditer(rb"(?:^|\r?\n)HTTP/1\.[01] (\d{3})", resp):
        st = int(m.group(1))
        if st >= 200:
            return st
    return None


def _around(text, needle, before=300, after=3000):
    i = text.find(needle)
    return text[max(0, i - before):i + after]


# ---- activities ----------------------------------------------------------------------------------

TENANT = "00000000-0000-0000-0000-0000000000001"
BOT_ID = "28:00000000-0000-0000-0000-00000000000011"
BOT_NAME = "Test Bot"


class Activities:
    """Builds Teams activities like the Agents Playground / Teams send them (PLAYGROUND.md §2)."""

    _seq = itertools.count(1)

    def __init__(self, service_url, tenant=TENANT, bot_id=BOT_ID, bot_name=BOT_NAME):
        self.service_url = service_url
        self.tenant = tenant
        self.bot_id = bot_id
        self.bot_name = bot_name

    def next_id(self):
        return f"act-{os.getpid()}-{next(self._seq)}"

    @staticmethod
    def user(uid="29:user-1", name="Alex Wilber", aad=None):
        return {"id": uid, "name": name, "aadObjectId": aad or ("aad-" + uid.split(":")[-1])}

    def envelope(self, type_, conv, scope="personal", user=None, team=None, channel=None, **extra):
        user = user or self.user()
        conversation = {"conversationType": scope, "tenantId": self.tenant, "id": conv}
        if scope != "personal":
            conversation["isGroup"] = True
        cd = {"tenant": {"id": self.tenant}}
        if team:
            cd["team"] = dict(team)
        if channel:
            cd["channel"] = dict(channel)
        a = {
            "type": type_,
            "id": self.next_id(),
            "timestamp": "2026-11-21T04:54:32.807Z",
            "serviceUrl": self.service_url,
            "channelId": "msteams",
            "from": user,
            "conversation": conversation,
            "recipient": {"id": self.bot_id, "name": self.bot_name},
            "locale": "en-US",
            "channelData": cd,
        }
        a.update(extra)
        return a

    # installs -----------------------------------------------------------------------------------
    def personal_install(self, conv, user=None):
        """installationUpdate(add), then conversationUpdate with the user and the bot in membersAdded."""
        user = user or self.user()
        inst = self.envelope("installationUpdate", conv, user=user, action="add",
                             entities=[{"type": "clientInfo", "locale": "en-US"}])
        inst["channelData"].update({"source": {"name": "message"},
                                    "settings": {"selectedChannel": {"id": conv}}})
        cu = self.envelope("conversationUpdate", conv, user=user,
                           membersAdded=[{"id": user["id"], "aadObjectId": user["aadObjectId"]},
                                         {"id": self.bot_id}])
        return [inst, cu]

    def team_install(self, team_id, team_name="My Team", channel_id=None, user=None):
        """installationUpdate(add) in the team's channel, then conversationUpdate(teamMemberAdded, bot)."""
        channel_id = channel_id or team_id
        team = {"id": team_id, "name": team_name, "aadGroupId": "aad-group-" + team_name.replace(" ", "")}
        inst = self.envelope("installationUpdate", channel_id, scope="channel", user=user, team=team,
                             channel={"id": channel_id}, action="add",
                             entities=[{"type": "clientInfo", "locale": "en-US"}])
        inst["channelData"].update({"source": {"name": "message"},
                                    "settings": {"selectedChannel": {"id": channel_id}}})
        cu = self.envelope("conversationUpdate", channel_id, scope="channel", user=user, team=team,
                           membersAdded=[{"id": self.bot_id}])
        cu["channelData"].update({"eventType": "teamMemberAdded",
                                  "settings": {"selectedChannel": {"id": channel_id}}})
        return [inst, cu]

    def group_install(self, conv, user=None):
        inst = self.envelope("installationUpdate", conv, scope="groupChat", user=user, action="add")
        cu = self.envelope("conversationUpdate", conv, scope="groupChat", user=user,
                           membersAdded=[{"id": self.bot_id}])
        return [inst, cu]

    def uninstall(self, conv, scope="personal", user=None, team=None):
        return self.envelope("installationUpdate", conv, scope=scope, user=user, action="remove",
                             team=team)

    def members_added(self, conv, members, scope="groupChat", team=None):
        a = self.envelope("conversationUpdate", conv, scope=scope, team=team, membersAdded=members)
        if team:
            a["channelData"]["eventType"] = "teamMemberAdded"
        return a

    # messages -----------------------------------------------------------------------------------
    def message(self, conv, text, scope="personal", user=None, mention_bot=False, timezone="Europe/Berlin",
                client_info=True, team=None, channel=None, id=None):
        entities = []
        if mention_bot:
            tag = f"<at>{self.bot_name}</at>"
            text = f"{tag} {text}"
            entities.append({"type": "mention", "text": tag,
                             "mentioned": {"id": self.bot_id, "name": self.bot_name}})
        if client_info:
            entities.append({"type": "clientInfo", "locale": "en-US", "country": "DE",
                             "platform": "Web", "timezone": timezone})
        extra = {"text": text, "textFormat": "plain", "entities": entities}
        if timezone:
            extra["localTimezone"] = timezone
            extra["localTimestamp"] = "2026-11-21T05:54:32.807+01:00"
        a = self.envelope("message", conv, scope=scope, user=user, team=team, channel=channel, **extra)
        if id:
            a["id"] = id
        return a

    def channel_message(self, team_id, text, root_id="1795236879257", mention_bot=True, **kw):
        conv = f"{team_id};messageid={root_id}"
        a = self.message(conv, text, scope="channel", mention_bot=mention_bot,
                         team={"id": team_id}, channel={"id": team_id}, **kw)
        a["channelData"].update({"teamsChannelId": team_id, "teamsTeamId": team_id})
        return a

    def invoke(self, conv, name, value, scope="personal", user=None):
        return self.envelope("invoke", conv, scope=scope, user=user, name=name, value=value)


class HeraldTestCase(unittest.TestCase):
    """Base: a fake connector per test; self.start_herald(script, env) starts herald (stopped and
    checked for a clean exit in tearDown unless the test stopped it itself)."""

    # Like the Playground's serviceUrl (".../_connector", no trailing slash): outbound paths carry it.
    PREFIX = "/_connector"

    def setUp(self):
        self.fc = FakeConnector().start()
        self.acts = Activities(self.fc.url + self.PREFIX)
        self._heralds = []

    def p(self, path):
        """Expected raw outbound path: the serviceUrl prefix + path."""
        return self.PREFIX + path

    def start_herald(self, script, env=None, **kw):
        h = Herald(script, env=env, **kw)
        self._heralds.append(h)
        h.start()
        return h

    def tearDown(self):
        errors = []
        for h in self._heralds:
            try:
                if h.proc is not None and h.exit_code is None:
                    h.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                h.kill()
        if not errors:
            for h in self._heralds:
                shutil.rmtree(h.tmp, ignore_errors=True)
        else:
            errors.append("kept herald temp dirs: " + ", ".join(h.tmp for h in self._heralds))
        self.fc.stop()
        if errors:
            self.fail("\n".join(errors))

    # helpers --------------------------------------------------------------------------------------
    def post_ok(self, h, activity):
        st, body = h.post_activity(activity)
        self.assertEqual(st, 200, f"POST /api/messages ({activity.get('type')}): {st} {body!r}\n"
                                  f"log tail:\n{h.log[-2000:]}")
        return body

    def outbound(self, method=None):
        """Recorded connector requests (optionally of one method)."""
        return [r for r in self.fc.snapshot() if method is None or r["method"] == method]

    def wait_requests(self, n, timeout=10):
        return self.fc.wait_for(n, timeout)

    def assert_no_more(self, n, settle=0.5):
        """Nothing beyond n connector requests arrives within tf(settle) seconds."""
        time.sleep(tf(settle))
        got = self.fc.snapshot()
        self.assertEqual(len(got), n, f"expected exactly {n} connector request(s), got {self.fc.summary()}")
        return got


# ---- authenticated mode (issue 3) ----------------------------------------------------------------

AUTH_APP_ID = "6f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b"


class _AuthCheckingHandler(fake_connector._Handler):
    """Answers 401 before routing when the request's bearer token is not one the token service
    issued; such requests are recorded with auth_ok False."""

    def _handle(self, method):
        fc = self.connector
        if fc.auth_ok(self.headers.get("Authorization")):
            return super()._handle(method)
        raw, _, query = self.path.partition("?")
        body = self._read_body().decode("utf-8", errors="replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = {"method": method, "path": raw, "query": query,
               "decoded_path": urllib.parse.unquote(raw), "conversation_id": None, "activity_id": None,
               "headers": headers, "authorization": headers.get("authorization"), "body": body,
               "json": None, "status": None, "response": "", "time": time.monotonic(), "auth_ok": False}
        self._answer(rec, 401, json.dumps({"error": {"code": "Unauthorized",
                                                     "message": "bearer token not issued (test)"}}).encode(), {})


class AuthCheckingConnector(FakeConnector):
    """A FakeConnector that checks the bearer token it receives: Authorization must be exactly
    "Bearer <token>" with token_ok(token) true (e.g. TokenService.is_issued); anything else gets 401
    and is recorded with auth_ok False. Accepted requests are recorded as by FakeConnector."""

    def __init__(self, token_ok, **kw):
        super().__init__(**kw)
        self.token_ok = token_ok

    def auth_ok(self, value):
        if not value or not value.startswith("Bearer ") or " " in value[7:]:
            return False
        return bool(self.token_ok(value[7:]))

    def start(self):
        fake = self

        class Handler(_AuthCheckingHandler):
            connector = fake

        self._server = fake_connector._Server((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="auth-fake-connector",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self


class AuthHeraldTestCase(HeraldTestCase):
    """Base for the authenticated-mode tests: per test a TokenService (self.ts: client id
    AUTH_APP_ID, a fresh secret self.secret), a bearer-checking fake connector (self.fc) and
    start_auth_herald(). tearDown stops every herald (exit 0, sanitizer-clean) and asserts that
    neither the secret, an issued access token nor a minted inbound token appears in its output,
    and that the connector saw no request with a bad bearer token (unless self.allow_bad_bearer)."""

    def setUp(self):
        from token_service import TokenService
        self.secret = "hsec~" + secrets.token_urlsafe(24)
        self.ts = TokenService(client_id=AUTH_APP_ID, client_secret=self.secret).start()
        self.fc = AuthCheckingConnector(self.ts.is_issued).start()
        self.acts = Activities(self.fc.url + self.PREFIX)
        self._heralds = []
        self._services = [self.ts]
        self.minted = []
        self.allow_bad_bearer = False

    def mint(self, service_url, ts=None, **kw):
        tok = (ts or self.ts).mint(service_url, **kw)
        self.minted.append(tok)
        return tok

    def bearer(self, service_url, **kw):
        return "Bearer " + self.mint(service_url, **kw)

    def start_auth_herald(self, script=None, env=None, ts=None, auth=None, start=True, **kw):
        ts = ts or self.ts
        h = Herald(script or bot("auth_bot.lua"), auth=auth if auth is not None else ts.herald_env(),
                   env=env, authorize=lambda a: self.bearer(a.get("serviceUrl"), ts=ts), **kw)
        self._heralds.append(h)
        if start:
            h.start()
        return h

    def health(self, h):
        st, body = h.healthz()
        self.assertEqual(st, 200, body)
        return json.loads(body)

    def leaks(self, text):
        """Secrets found in text: the app secret, issued access tokens, minted inbound tokens (or
        their signatures)."""
        found = []
        if self.secret and self.secret in text:
            found.append("the client secret")
        for s in list(self._services):
            for t in list(s.issued):
                if t in text:
                    found.append(f"access token {t[:8]}…")
        for t in self.minted:
            sig = t.rsplit(".", 1)[-1]
            if t in text or (len(sig) >= 40 and sig in text):
                found.append(f"inbound token …{sig[-8:]}")
        return found

    def tearDown(self):
        errors = []
        for h in self._heralds:
            try:
                if h.proc is not None and h.exit_code is None:
                    h.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                h.kill()
            leaked = self.leaks(h.log + h.stdout)
            if leaked:
                errors.append(f"secrets in herald output ({h.tmp}): {', '.join(sorted(set(leaked)))}")
        if not self.allow_bad_bearer:
            bad = [r for r in self.fc.snapshot() if r.get("auth_ok") is False]
            if bad:
                errors.append(f"connector got {len(bad)} request(s) without a valid bearer token: "
                              f"{[(r['method'], r['path'], (r['authorization'] or '')[:16]) for r in bad]}")
        if not errors:
            for h in self._heralds:
                shutil.rmtree(h.tmp, ignore_errors=True)
        else:
            errors.append("kept herald temp dirs: " + ", ".join(h.tmp for h in self._heralds))
        self.fc.stop()
        for s in self._services:
            s.stop()
        if errors:
            self.fail("\n".join(errors))
