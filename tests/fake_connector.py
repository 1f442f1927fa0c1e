#!/usr/bin/env python3
"""fake_connector.py — an in-process Bot Connector (Teams) fake for herald's tests.

Library use:

    from fake_connector import FakeConnector
    fc = FakeConnector().start()          # listens on 127.0.0.1:<free port>
    fc.url                                # "http://127.0.0.1:PORT" (use as the activity serviceUrl)
    fc.inject("a:conv-9", 403, body=MESSAGE_WRITES_BLOCKED)
    ... drive the bot ...
    reqs = fc.wait_for(2, timeout=5)      # at least 2 recorded requests
    fc.stop()

Each recorded request is a dict:
    method, path (raw, still percent-encoded, without query), query, decoded_path,
    conversation_id (decoded, or None), activity_id (decoded, or None), headers (dict, lower-case
    names), authorization (or None), body (text), json (parsed body or None), status (what the fake
    answered; "reset" for a dropped connection), response (body sent), time (monotonic); dropped
    (True) when an ACCEPT_RESET / ACCEPT_CLOSE fault acted on the request but never answered.

Answers like Teams:
    POST   /v3/conversations                            201 {"id":"a:conv-N"}  (isGroup false)
                                                        201 {"id":"<channel>;messageid=<M>","activityId":"<M>"}
                                                            (isGroup true + channelData.channel.id)
    POST   /v3/conversations/{conv}/activities[/{id}]   201 {"id":"<M>"}
    PUT    /v3/conversations/{conv}/activities/{id}     200 {"id":"<id>"}
    DELETE /v3/conversations/{conv}/activities/{id}     200 (empty body)
    anything else                                       404 {"error":{"code":"NotFound",...}}
The serviceUrl may carry a path prefix (".../amer/"): everything before "/v3/" is ignored.
Message ids (<M>) increase monotonically across the whole fake.

Teams-like mode (opt-in; off by default, so the behaviour above is unchanged):

    fc = FakeConnector(teams_limits=True, tenant_rps=50).start()
    fc.set_tenant("a:conv-1", "tenant-a")        # or put "/t/<tenant>" in the serviceUrl prefix
    fc.random_faults(0.3, (500, 503, RESET), seed=7)

enforces Teams' published limits (PROTOCOL.md §5) on writes (POST/PUT/DELETE): per conversation
7/1 s, 8/2 s, 60/30 s, 1800/1 h (TEAMS_CONVERSATION_WINDOWS) and per tenant tenant_rps/1 s. A
request that would exceed a window gets 429 {"error":{"code":"Throttled"}} with Retry-After (whole
seconds until it would fit, at least 1; or the fixed retry_after) and does not count as an
operation. A window counts accepted operations at times t with now - t < window (so the op at
exactly now - window has left it); slack_ms forgives arrivals up to that much early (transit
jitter). The tenant of a request: set_tenant()'s map by conversation id, else a "/t/<tenant>"
segment in the serviceUrl prefix, else "default". Creates (POST /v3/conversations) count for the
tenant only. Order of checks: inject()ed faults, then the limits, then random_faults(), then the
normal answer. counts() tells what was received per status and per conversation; throttled is
the number of 429s the limits produced. The limits read fc.clock() (default time.monotonic); a
self-test may set a fake clock to step time exactly.

Rosters and teams (reads; additive — routes that used to answer 404 only):

    fc.set_roster("19:team@thread.tacv2", 2500, page_max=500)   # or a list of member dicts
    fc.set_team("19:team@thread.tacv2", name="Org", channels=[{"id": "19:c1@thread.tacv2", "name": "Ops"}])

    GET /v3/conversations/{id}/pagedmembers[?pageSize=N&continuationToken=T]
        200 {"members":[...], "continuationToken": T'}  pages of min(pageSize or 200, page_max)
        members; no continuationToken on the last page. Tokens are opaque and contain "+", "/" and
        "=" (like Teams' base64 ones), so a client that does not percent-encode them gets 400.
        fail_page=K (set_roster) answers the K-th page (1-based; K >= 2 means mid-paging) with
        fail_status and a Teams error body.
    GET /v3/conversations/{id}/members/{member}  200 the member (by id, aadObjectId or
        userPrincipalName) or 404 {"error":{"code":"MemberNotFoundInConversation"}}
    GET /v3/teams/{id}/conversations             200 {"conversations":[{"id","name"}, ...]} (General
        first, its id the team's, without "name")
    GET /v3/teams/{id}                            200 {"id","name","aadGroupId","type","memberCount",
        "channelCount"}
    Unknown ids: 404 {"error":{"code":"ConversationNotFound"}} (teams: "NotFound").
    page_requests(id) lists the (pageSize, continuationToken) of each pagedmembers request seen.

Holding (for tests that must stop a flow at a known point instead of racing it):

    gate = fc.hold(method="POST")        # matching requests wait, unanswered and unrecorded
    gate.wait_held(1)                    # at least one is waiting now
    gate.release()                       # they go on: faults, limits, then the normal answer
stop() releases every hold. wait_until()/wait_for() timeouts are multiplied by
HERALD_TEST_TIME_FACTOR (the factor of tests/integration/harness.py's tf(), default 1).

Standalone: python3 tests/fake_connector.py --port N   (prints its URL, logs requests to stdout)
"""

import argparse
import json
import math
import os
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Teams error bodies (PROTOCOL.md §6).
MESSAGE_WRITES_BLOCKED = {
    "errorCode": 209,
    "message": "{\r\n  \"subCode\": \"MessageWritesBlocked\",\r\n  \"details\": \"Thread is blocked "
               "from message writes.\",\r\n  \"errorCode\": null,\r\n  \"errorSubCode\": null\r\n}",
}
CONVERSATION_NOT_FOUND = {"error": {"code": "ConversationNotFound", "message": "Conversation not found."}}
ACTIVITY_NOT_FOUND = {"error": {"code": "ActivityNotFoundInConversation", "message": "Conversation not found."}}
THROTTLED = {"error": {"code": "Throttled", "message": "Too many requests."}}
SERVICE_ERROR = {"error": {"code": "ServiceError", "message": "Internal service error."}}
BOT_NOT_IN_ROSTER = {"error": {"code": "BotNotInConversationRoster",
                               "message": "The bot isn't part of the conversation roster."}}
MESSAGE_TOO_BIG = {"error": {"code": "MessageSizeTooBig", "message": "Message size too large."}}

RESET = "reset"  # status value for inject(): close the socket without answering (RST)
# status values for inject(): do what Teams would (the message exists, an id is used up), then
# drop the connection instead of answering, with an RST or a clean close (FIN). The request is
# recorded with the status it would have had (201, ...) and "dropped": True, so a ledger of what
# Teams accepted counts it; the client never heard.
ACCEPT_RESET = "accept-reset"
ACCEPT_CLOSE = "accept-close"
SLOW = "slow"    # random_faults() choice ("slow", seconds): answer normally after a delay

# Teams' per bot per conversation windows for sends/creates (PROTOCOL.md §5.1): (seconds, max ops).
TEAMS_CONVERSATION_WINDOWS = ((1.0, 7), (2.0, 8), (30.0, 60), (3600.0, 1800))
_TENANT_IN_PREFIX = re.compile(r"/t/([^/]+)")

# The documented allowance for slow machines (tests/integration/harness.py: tf()).
TIME_FACTOR = float(os.environ.get("HERALD_TEST_TIME_FACTOR", "1") or "1")

_ROUTE = re.compile(r"^(?P<prefix>.*?)/v3/conversations"
                    r"(?:/(?P<conv>[^/]+)/activities(?:/(?P<act>[^/]+))?)?/?$")

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            412: "Precondition Failed", 413: "Request Entity Too Large", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class Fault:
    """One injected behaviour. match: conversation id (exact, decoded), a compiled regex or a
    string "re:<regex>" searched in the raw and the decoded path."""

    def __init__(self, match, status, body=None, headers=None, times=None, delay=0.0, method=None):
        self.match = match
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.times = times
        self.delay = delay
        self.method = method.upper() if method else None
        self.hits = 0
        if isinstance(match, str) and match.startswith("re:"):
            self.regex = re.compile(match[3:])
        elif isinstance(match, re.Pattern):
            self.regex = match
        else:
            self.regex = None

    def matches(self, method, raw_path, decoded_path, conv):
        if self.method and self.method != method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.regex is not None:
            return bool(self.regex.search(raw_path) or self.regex.search(decoded_path))
        return conv is not None and conv == self.match

    def __repr__(self):
        return f"Fault({self.match!r}, {self.status!r}, times={self.times}, hits={self.hits})"


class Hold:
    """Requests matching (as for inject()) wait here, unanswered and unrecorded, until release()."""

    def __init__(self, match, method, limit_s):
        self.matcher = Fault(match, None, method=method)
        self.limit_s = limit_s
        self.held = 0                # requests waiting now
        self.total = 0               # requests that have waited
        self._open = threading.Event()
        self._cond = threading.Condition()

    def matches(self, method, raw, decoded, conv):
        return not self._open.is_set() and self.matcher.matches(method, raw, decoded, conv)

    def wait(self):
        with self._cond:
            self.held += 1
            self.total += 1
            self._cond.notify_all()
        # bounded, so a test that forgets to release cannot hang the fake's threads forever
        self._open.wait(self.limit_s)
        with self._cond:
            self.held -= 1
            self._cond.notify_all()

    def wait_held(self, n=1, timeout=10.0):
        """Waits until at least n requests are waiting; returns how many are."""
        deadline = time.monotonic() + timeout * TIME_FACTOR
        with self._cond:
            while self.held < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake connector: {self.held} request(s) held, expected {n} "
                                         f"within {timeout * TIME_FACTOR}s")
                self._cond.wait(min(left, 0.1))
            return self.held

    def release(self):
        self._open.set()


class FakeConnector:
    def __init__(self, host="127.0.0.1", port=0, verbose=False, teams_limits=False, tenant_rps=50,
                 conversation_windows=TEAMS_CONVERSATION_WINDOWS, retry_after=None, slack_ms=0.0,
                 record_bodies=True):
        self.host = host
        self.port = port
        self.verbose = verbose
        self.requests = []
        self._faults = []
        self._holds = []
        # Teams-like limits (off unless teams_limits)
        self.teams_limits = teams_limits
        self.tenant_rps = tenant_rps
        self.conversation_windows = tuple(conversation_windows)
        self.retry_after = retry_after
        self.slack_ms = slack_ms
        self.record_bodies = record_bodies
        self.tenants = {}            # conversation id -> tenant (set_tenant)
        self._conv_ops = {}          # conversation id -> accepted op times (monotonic)
        self._tenant_ops = {}        # tenant -> accepted op times
        self.throttled = 0           # 429s produced by the limits
        self.clock = time.monotonic  # the limits' clock (seconds); a test may put a fake one here
        self._random = None          # (rate, choices, rng, match, methods)
        self._counts_status = {}
        self._counts_conv = {}
        self._cond = threading.Condition()
        self._next_msg = 1000
        self._next_conv = 0
        self._server = None
        self._thread = None
        self.url = None
        self.rosters = {}            # conversation/team id -> roster dict (set_roster)
        self.teams = {}              # team id -> team dict (set_team)
        self._page_log = {}          # id -> [(pageSize, token)]

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self):
        fake = self

        class Handler(_Handler):
            connector = fake

        self._server = _Server((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-connector",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        for g in list(self._holds):
            g.release()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- faults ----------------------------------------------------------------------------------
    def inject(self, match, status, body=None, headers=None, times=None, delay=0, method=None):
        """Make matching requests fail (or be slow). status: an HTTP status, RESET ("reset": close
        the socket without answering), ACCEPT_RESET / ACCEPT_CLOSE (act on the request, then
        drop the connection unanswered), or None (answer normally, after delay). body: dict (JSON),
        str or bytes; None gives an empty body. times: how many requests it applies to (None: all).
        Later injections are checked first."""
        f = Fault(match, status, body, headers, times, delay, method)
        with self._cond:
            self._faults.insert(0, f)
        return f

    def hold(self, match="re:.", method=None, limit_s=120.0):
        """Holds matching requests (match and method as for inject(); default: every request)
        unanswered until the returned Hold's release(); then they are handled as usual. Hold.held
        counts the requests waiting, Hold.wait_held(n) waits for n of them. limit_s bounds each
        wait (a forgotten release)."""
        g = Hold(match, method, limit_s)
        with self._cond:
            self._holds.append(g)
        return g

    def remove_fault(self, fault):
        """Withdraws one fault returned by inject() (no error if it is already gone)."""
        with self._cond:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear_faults(self):
        with self._cond:
            self._faults.clear()

    def clear(self):
        """Forget recorded requests and faults (ids keep increasing)."""
        with self._cond:
            self.requests.clear()
            self._faults.clear()
            self._counts_status.clear()
            self._counts_conv.clear()
            self.throttled = 0

    # ---- Teams-like mode -------------------------------------------------------------------------
    def set_tenant(self, conversation_id, tenant):
        """Counts conversation_id's requests against tenant's rate (teams_limits)."""
        with self._cond:
            self.tenants[conversation_id] = tenant

    def random_faults(self, rate, choices=(500, 502, 503, 504, RESET), seed=0, match=None,
                      methods=None):
        """Fails a fraction rate of the requests (after inject()ed faults and the limits), picking
        uniformly from choices: an HTTP status (answered with a Teams error body), RESET, or
        (SLOW, seconds) for a normal answer after a delay. seed makes the draw sequence
        repeatable. ACCEPT_RESET / ACCEPT_CLOSE are choices too: the request is acted on, then
        the connection dropped unanswered. match: None (every request) or as for inject();
        methods: e.g. ("POST",). rate 0 turns it off."""
        with self._cond:
            if not rate:
                self._random = None
                return
            m = Fault(match, None) if match is not None else None
            self._random = (float(rate), tuple(choices), random.Random(seed), m,
                            tuple(x.upper() for x in methods) if methods else None)

    def counts(self):
        """{"total": n, "by_status": {status: n}, "by_conversation": {conv: {status: n}},
        "throttled": n} over everything received (status "reset" for dropped connections)."""
        with self._cond:
            return {"total": sum(self._counts_status.values()),
                    "by_status": dict(self._counts_status),
                    "by_conversation": {c: dict(v) for c, v in self._counts_conv.items()},
                    "throttled": self.throttled}

    def tenant_for(self, conv, prefix):
        with self._cond:
            t = self.tenants.get(conv) if conv else None
        if t is None:
            m = _TENANT_IN_PREFIX.search(prefix or "")
            t = urllib.parse.unquote(m.group(1)) if m else "default"
        return t

    def accepted_times(self, conversation_id=None, tenant=None):
        """Monotonic times of the operations the limits accepted (teams_limits)."""
        with self._cond:
            if conversation_id is not None:
                return list(self._conv_ops.get(conversation_id, ()))
            return list(self._tenant_ops.get(tenant, ()))

    @staticmethod
    def _fits(times, now, window, limit, slack):
        """Seconds until one more op fits (0: now). times: ascending accepted op times."""
        if len(times) < limit:
            return 0.0
        # ops with now - t < window count; the limit-th most recent must have left
        t = times[-limit]
        wait = t + window - now - slack
        return wait if wait > 0 else 0.0

    def _limit(self, method, conv, prefix):
        """Teams-like limits: None when the request may go (and it is counted), else the seconds
        to wait."""
        if not self.teams_limits or method not in ("POST", "PUT", "DELETE"):
            return None
        tenant = self.tenant_for(conv, prefix)
        slack = self.slack_ms / 1000.0
        with self._cond:
            now = self.clock()
            wait = 0.0
            ct = self._conv_ops.setdefault(conv, []) if conv else None
            if ct is not None:
                for window, limit in self.conversation_windows:
                    wait = max(wait, self._fits(ct, now, window, limit, slack))
            tt = self._tenant_ops.setdefault(tenant, [])
            wait = max(wait, self._fits(tt, now, 1.0, self.tenant_rps, slack))
            if wait > 0:
                self.throttled += 1
                return wait
            if ct is not None:
                ct.append(now)
                if len(ct) > 4000:
                    del ct[:2000]
            tt.append(now)
            if len(tt) > 4 * self.tenant_rps + 1000:
                del tt[:len(tt) - 2 * self.tenant_rps]
            return None

    def _random_fault(self, method, raw, decoded, conv):
        with self._cond:
            r = self._random
            if r is None:
                return None
            rate, choices, rng, m, methods = r
            if methods and method not in methods:
                return None
            if m is not None and not m.matches(method, raw, decoded, conv):
                return None
            if rng.random() >= rate:
                return None
            return choices[rng.randrange(len(choices))]

    # ---- rosters and teams -----------------------------------------------------------------------
    @staticmethod
    def make_members(n, tenant="tenant-r", prefix="29:r-"):
        """n Teams-shaped member dicts with distinct ids."""
        return [{"id": f"{prefix}{i}", "name": f"User {i}", "aadObjectId": f"aad-r-{i:06d}",
                 "givenName": "User", "surname": str(i), "email": f"user{i}@example.test",
                 "userPrincipalName": f"user{i}@example.test", "tenantId": tenant, "userRole": "user"}
                for i in range(n)]

    def set_roster(self, target, members, page_max=500, fail_page=None, fail_status=500,
                   tenant="tenant-r"):
        """The members of a conversation or team: a list of member dicts, or a count (made by
        make_members). page_max caps pageSize (Teams: 500)."""
        if isinstance(members, int):
            members = self.make_members(members, tenant)
        with self._cond:
            self.rosters[target] = {"members": list(members), "page_max": int(page_max),
                                    "fail_page": fail_page, "fail_status": fail_status,
                                    "served": 0}
            self._page_log[target] = []
        return members

    def set_team(self, team_id, name="Team", aad_group_id=None, channels=(), type_="standard"):
        with self._cond:
            self.teams[team_id] = {"name": name, "aadGroupId": aad_group_id or f"aad-group-{name}",
                                   "channels": list(channels), "type": type_}

    def page_requests(self, target):
        with self._cond:
            return list(self._page_log.get(target, ()))

    @staticmethod
    def _token(target, offset):
        # opaque, base64-like: "+", "/" and "=" must survive the client's percent-encoding
        return f"ct+{offset}/{len(target)}=="

    def _read(self, method, raw, query):
        """GET routes for rosters and teams → (status, body) or None when not one of them."""
        if method != "GET":
            return None
        m = re.match(r"^.*?/v3/conversations/([^/]+)/pagedmembers/?$", raw)
        if m:
            return self._paged(urllib.parse.unquote(m.group(1)), query)
        m = re.match(r"^.*?/v3/conversations/([^/]+)/members/([^/]+)/?$", raw)
        if m:
            target, who = urllib.parse.unquote(m.group(1)), urllib.parse.unquote(m.group(2))
            with self._cond:
                r = self.rosters.get(target)
                found = None
                if r:
                    for mem in r["members"]:
                        if who in (mem.get("id"), mem.get("aadObjectId"), mem.get("userPrincipalName")):
                            found = mem
                            break
            if r is None:
                return 404, _err("ConversationNotFound", "Conversation not found.")
            if found is None:
                return 404, _err("MemberNotFoundInConversation", "The member is not in the conversation.")
            return 200, json.dumps(found).encode()
        m = re.match(r"^.*?/v3/teams/([^/]+)(/conversations)?/?$", raw)
        if m:
            team = urllib.parse.unquote(m.group(1))
            with self._cond:
                t = self.teams.get(team)
                r = self.rosters.get(team)
            if t is None:
                return 404, _err("NotFound", "Team not found.")
            if m.group(2):
                # the General channel has no "name" (PROTOCOL.md §3); its id is the team's
                convs = [{"id": team}] + [{"id": c["id"], "name": c.get("name")} for c in t["channels"]]
                return 200, json.dumps({"conversations": convs}).encode()
            return 200, json.dumps({"id": team, "name": t["name"], "aadGroupId": t["aadGroupId"],
                                    "type": t["type"], "memberCount": len(r["members"]) if r else 0,
                                    "channelCount": 1 + len(t["channels"])}).encode()
        return None

    def _paged(self, target, query):
        q = urllib.parse.parse_qs(query, keep_blank_values=True)
        size = q.get("pageSize", [""])[0]
        token = q.get("continuationToken", [None])[0]
        with self._cond:
            r = self.rosters.get(target)
            if r is None:
                return 404, _err("ConversationNotFound", "Conversation not found.")
            self._page_log[target].append((size, token))
            r["served"] += 1
            n_req = r["served"]
            members, page_max = r["members"], r["page_max"]
            fail_page, fail_status = r["fail_page"], r["fail_status"]
        if fail_page is not None and n_req >= fail_page:
            return fail_status, json.dumps(SERVICE_ERROR if fail_status >= 500 else
                                           {"error": {"code": "BadRequest", "message": "injected"}}).encode()
        try:
            n = int(size) if size else 200
        except ValueError:
            return 400, _err("BadArgument", "pageSize must be a number")
        n = max(1, min(n, page_max))
        offset = 0
        if token is not None:
            m = re.match(r"^ct\+(\d+)/(\d+)==$", token)
            if not m or int(m.group(2)) != len(target):
                return 400, _err("BadArgument", f"invalid continuation token {token!r}")
            offset = int(m.group(1))
        page = members[offset:offset + n]
        doc = {"members": page}
        if offset + n < len(members):
            doc["continuationToken"] = self._token(target, offset + n)
        return 200, json.dumps(doc).encode()

    # ---- waiting ---------------------------------------------------------------------------------
    def wait_until(self, pred, timeout=10.0, what="condition"):
        """Waits until pred(requests) is truthy; returns its value. Raises AssertionError on
        timeout (times HERALD_TEST_TIME_FACTOR), listing what was recorded."""
        timeout *= TIME_FACTOR
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                v = pred(list(self.requests))
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake connector: timed out after {timeout}s waiting for "
                                         f"{what}; recorded: {self.summary()}")
                self._cond.wait(min(left, 0.1))

    def wait_for(self, n, timeout=10.0):
        """Waits until at least n requests were recorded; returns the list."""
        return self.wait_until(lambda r: r if len(r) >= n else None, timeout, f"{n} request(s)")

    def snapshot(self):
        with self._cond:
            return list(self.requests)

    def summary(self):
        with self._cond:
            reqs = list(self.requests)
        return [f"{r['method']} {r['path']} -> {r['status']} {r['body'][:120]!r}" for r in reqs]

    # ---- internals -------------------------------------------------------------------------------
    def _next_id(self):
        with self._cond:
            self._next_msg += 1
            return str(self._next_msg)

    def _new_conv(self):
        with self._cond:
            self._next_conv += 1
            return f"a:conv-{self._next_conv}"

    def _find_fault(self, method, raw, decoded, conv):
        with self._cond:
            for f in self._faults:
                if f.matches(method, raw, decoded, conv):
                    f.hits += 1
                    return f
        return None

    def _record(self, rec):
        with self._cond:
            st = rec["status"]
            self._counts_status[st] = self._counts_status.get(st, 0) + 1
            cc = self._counts_conv.setdefault(rec["conversation_id"], {})
            cc[st] = cc.get(st, 0) + 1
            if not self.record_bodies:
                rec["body"] = rec["body"][:200]
                rec.pop("headers", None)
            self.requests.append(rec)
            self._cond.notify_all()
        if self.verbose:
            print(f"{rec['method']} {rec['path']} -> {rec['status']} {rec['body'][:200]}", flush=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a client opening many connections at once (herald
    # sending to hundreds of conversations in parallel) would see SYNs dropped and retried 1 s
    # later, which delays requests at random.
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that went away (or our own injected reset) is not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    connector = None  # set by the subclass made in start()
    protocol_version = "HTTP/1.1"
    server_version = "FakeConnector/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY the second waits ~40 ms for
        # the client's delayed ACK (Nagle), which would pace every keep-alive exchange.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_GET(self):
        self._handle("GET")

    def do_PATCH(self):
        self._handle("PATCH")

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _handle(self, method):
        fc = self.connector
        raw_full = self.path
        raw, _, query = raw_full.partition("?")
        decoded = urllib.parse.unquote(raw)
        body_bytes = self._read_body()
        m = _ROUTE.match(raw)
        conv = urllib.parse.unquote(m.group("conv")) if m and m.group("conv") else None
        with fc._cond:
            holds = [g for g in fc._holds if g.matches(method, raw, decoded, conv)]
        for g in holds:
            g.wait()
        body = body_bytes.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = None
        act = urllib.parse.unquote(m.group("act")) if m and m.group("act") else None
        headers = {k.lower(): v for k, v in self.headers.items()}
        rec = {
            "method": method, "path": raw, "query": query, "decoded_path": decoded,
            "conversation_id": conv, "activity_id": act, "headers": headers,
            "authorization": headers.get("authorization"), "body": body, "json": parsed,
            "status": None, "response": "", "time": time.monotonic(),
        }
        fault = fc._find_fault(method, raw, decoded, conv)
        if fault is not None:
            rec["fault"] = fault
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status == RESET:
                rec["status"] = RESET
                fc._record(rec)
                self._reset()
                return
            if fault.status in (ACCEPT_RESET, ACCEPT_CLOSE):
                self._accept_and_drop(rec, fault.status, method, m, conv, act, parsed, raw, query)
                return
            if fault.status is not None:
                b = fault.body
                if isinstance(b, (dict, list)):
                    b = json.dumps(b)
                if isinstance(b, str):
                    b = b.encode("utf-8")
                self._answer(rec, fault.status, b or b"", fault.headers)
                return
        wait = fc._limit(method, conv, m.group("prefix") if m else "")
        if wait is not None:
            ra = fc.retry_after if fc.retry_after is not None else max(1, math.ceil(wait))
            rec["retry_after"] = ra
            rec["limit_wait"] = wait        # seconds until it would have fitted
            self._answer(rec, 429, json.dumps(THROTTLED).encode(), {"Retry-After": str(ra)})
            return
        rf = fc._random_fault(method, raw, decoded, conv)
        if rf is not None:
            rec["random_fault"] = rf
            if isinstance(rf, tuple) and rf and rf[0] == SLOW:
                time.sleep(rf[1])
            elif rf == RESET:
                rec["status"] = RESET
                fc._record(rec)
                self._reset()
                return
            elif rf in (ACCEPT_RESET, ACCEPT_CLOSE):
                self._accept_and_drop(rec, rf, method, m, conv, act, parsed, raw, query)
                return
            else:
                body = SERVICE_ERROR if rf >= 500 else {"error": {"code": "PreconditionFailed" if rf == 412
                                                                  else "Error", "message": "injected"}}
                self._answer(rec, rf, json.dumps(body).encode(), {})
                return
        got = fc._read(method, raw, query) if m is None else None
        status, out = got if got is not None else self._route(method, m, conv, act, parsed)
        self._answer(rec, status, out, {})

    def _accept_and_drop(self, rec, how, method, m, conv, act, parsed, raw, query):
        """Acts on the request like Teams, records it (dropped), then drops the connection (how:
        ACCEPT_RESET or ACCEPT_CLOSE) instead of answering."""
        fc = self.connector
        got = fc._read(method, raw, query) if m is None else None
        status, out = got if got is not None else self._route(method, m, conv, act, parsed)
        rec["status"], rec["response"], rec["dropped"] = status, out.decode("utf-8", "replace"), True
        fc._record(rec)
        if how == ACCEPT_RESET:
            self._reset()
        else:
            self.close_connection = True      # handle() returns: the socket closes, FIN

    def _route(self, method, m, conv, act, parsed):
        fc = self.connector
        if m is None:
            return 404, _err("NotFound", "no such route")
        if conv is None:
            if method != "POST":
                return 405, _err("MethodNotAllowed", "method not allowed")
            params = parsed if isinstance(parsed, dict) else {}
            if params.get("isGroup"):
                ch = ((params.get("channelData") or {}).get("channel") or {}).get("id")
                if not ch:
                    return 400, _err("BadArgument", "channelData.channel.id required for isGroup")
                mid = fc._next_id()
                return 201, json.dumps({"id": f"{ch};messageid={mid}", "activityId": mid}).encode()
            members = params.get("members")
            if not isinstance(members, list) or len(members) != 1:
                return 400, _err("BadArgument", "exactly one member required")
            res = {"id": fc._new_conv()}
            if isinstance(params.get("activity"), dict):
                res["activityId"] = fc._next_id()
            return 201, json.dumps(res).encode()
        if method == "POST":
            return 201, json.dumps({"id": fc._next_id()}).encode()
        if act is None:
            return 405, _err("MethodNotAllowed", "method not allowed")
        if method == "PUT":
            return 200, json.dumps({"id": act}).encode()
        if method == "DELETE":
            return 200, b""
        return 405, _err("MethodNotAllowed", "method not allowed")

    def _answer(self, rec, status, body, headers):
        rec["status"] = status
        rec["response"] = body.decode("utf-8", errors="replace")
        # Record before answering: whatever herald does with the answer happens after the record.
        self.connector._record(rec)
        try:
            self.send_response(status, _REASONS.get(status, "Status"))
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Correlating-OperationId", f"fake-{id(rec):x}")
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.end_headers()
            if body:
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass

    def _reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # drop the makefile reference so close() really closes the fd
            self.connection.close()
        except OSError:
            pass


def _err(code, message):
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Teams Bot Connector")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--teams-limits", action="store_true", help="enforce Teams' published windows")
    ap.add_argument("--tenant-rps", type=int, default=50)
    ap.add_argument("--slack-ms", type=float, default=0.0)
    ap.add_argument("--quiet", action="store_true", help="do not log each request")
    ap.add_argument("--stats-every", type=float, default=0,
                    help="print counts() as JSON on stdout every N seconds")
    args = ap.parse_args(argv)
    fc = FakeConnector(args.host, args.port, verbose=not args.quiet, teams_limits=args.teams_limits,
                       tenant_rps=args.tenant_rps, slack_ms=args.slack_ms,
                       record_bodies=not args.quiet).start()
    print(fc.url, flush=True)
    try:
        while True:
            if args.stats_every > 0:
                time.sleep(args.stats_every)
                c = fc.counts()
                print(json.dumps({"total": c["total"], "throttled": c["throttled"],
                                  "by_status": {str(k): v for k, v in c["by_status"].items()}}),
                      flush=True)
            else:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
