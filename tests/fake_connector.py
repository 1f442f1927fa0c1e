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
    answered; "reset" for a dropped connection), response (body sent), time (monotonic).

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

Standalone: python3 tests/fake_connector.py --port N   (prints its URL, logs requests to stdout)
"""

import argparse
import json
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


class FakeConnector:
    def __init__(self, host="127.0.0.1", port=0, verbose=False):
        self.host = host
        self.port = port
        self.verbose = verbose
        self.requests = []
        self._faults = []
        self._cond = threading.Condition()
        self._next_msg = 1000
        self._next_conv = 0
        self._server = None
        self._thread = None
        self.url = None

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
        the socket without answering), or None (answer normally, after delay). body: dict (JSON),
        str or bytes; None gives an empty body. times: how many requests it applies to (None: all).
        Later injections are checked first."""
        f = Fault(match, status, body, headers, times, delay, method)
        with self._cond:
            self._faults.insert(0, f)
        return f

    def clear_faults(self):
        with self._cond:
            self._faults.clear()

    def clear(self):
        """Forget recorded requests and faults (ids keep increasing)."""
        with self._cond:
            self.requests.clear()
            self._faults.clear()

    # ---- waiting ---------------------------------------------------------------------------------
    def wait_until(self, pred, timeout=10.0, what="condition"):
        """Waits until pred(requests) is truthy; returns its value. Raises AssertionError on
        timeout, listing what was recorded."""
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
            self.requests.append(rec)
            self._cond.notify_all()
        if self.verbose:
            print(f"{rec['method']} {rec['path']} -> {rec['status']} {rec['body'][:200]}", flush=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

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
        body = body_bytes.decode("utf-8", errors="replace")
        try:
            parsed = json.loads(body) if body.strip() else None
        except ValueError:
            parsed = None
        m = _ROUTE.match(raw)
        conv = urllib.parse.unquote(m.group("conv")) if m and m.group("conv") else None
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
            if fault.status is not None:
                b = fault.body
                if isinstance(b, (dict, list)):
                    b = json.dumps(b)
                if isinstance(b, str):
                    b = b.encode("utf-8")
                self._answer(rec, fault.status, b or b"", fault.headers)
                return
        status, out = self._route(method, m, conv, act, parsed)
        self._answer(rec, status, out, {})

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
    args = ap.parse_args(argv)
    fc = FakeConnector(args.host, args.port, verbose=True).start()
    print(fc.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
