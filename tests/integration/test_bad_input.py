"""≥ 1,000 malformed or random requests against one herald (fixed seed, deterministic).

Strict cases must get a 4xx (or, for unparseable HTTP, a closed connection). Lenient cases are
structurally valid activities with odd optional fields, or odd-but-legal HTTP: they may get 2xx or
4xx, never 5xx. After every case the process must still run; at the end /healthz answers 200 and
herald exits 0 under ASan with a clean stderr.
"""
import http.client
import json
import random
import socket
import time
import unittest

from harness import FakeConnector  # noqa: F401
from harness import Activities, Herald, bot, raw_status, require_binary

SEED = 20261121
STRICT, LENIENT, RAW = "strict", "lenient", "raw"


def _valid(acts, rnd):
    a = acts.message(f"a:fuzz-{rnd.randrange(50)}", "hello fuzz", mention_bot=rnd.random() < 0.3)
    a["id"] = f"fuzz-{rnd.randrange(10**9)}"
    return a


def _deep(kind, depth):
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def build_cases(service_url):
    """Returns a list of (kind, label, payload) where payload is bytes (body) for STRICT/LENIENT
    (with optional headers) or raw request bytes for RAW."""
    rnd = random.Random(SEED)
    acts = Activities(service_url)
    cases = []

    def body(kind, label, data, headers=None):
        cases.append((kind, label, (data, headers or {})))

    def raw(label, data, shut_wr=True, allow_501=False):
        cases.append((RAW, label, (data, shut_wr, allow_501)))

    # 1. random bytes (200)
    for i in range(200):
        n = rnd.choice([0, 1, 2, 10, 100, 1000, 3000])
        data = bytes(rnd.randrange(256) for _ in range(n))
        body(STRICT, f"random bytes #{i} len={n}", data)

    # 2. truncated JSON of valid activities (150)
    for i in range(150):
        full = json.dumps(_valid(acts, rnd)).encode()
        cut = rnd.randrange(0, len(full) - 1)
        body(STRICT, f"truncated #{i} at {cut}/{len(full)}", full[:cut])

    # 3. required fields with wrong types / missing (strict)
    bad_type = [None, 0, 1.5, True, False, "", [], {}, ["message"], {"type": "message"}]
    bad_conv = [None, 0, "a:x", "", [], True, {}, {"id": None}, {"id": ""}, {"id": 5}, {"id": []},
                {"id": {}}, {"id": True}, [{"id": "a:x"}]]
    bad_url = [None, 0, 1.5, True, "", [], {}, ["http://x"], {"url": "http://x"}]
    for v in bad_type:
        for _ in range(3):
            a = _valid(acts, rnd)
            a["type"] = v
            body(STRICT, f"type={v!r}", json.dumps(a).encode())
    for v in bad_conv:
        for _ in range(3):
            a = _valid(acts, rnd)
            a["conversation"] = v
            body(STRICT, f"conversation={v!r}", json.dumps(a).encode())
    for v in bad_url:
        for _ in range(3):
            a = _valid(acts, rnd)
            a["serviceUrl"] = v
            body(STRICT, f"serviceUrl={v!r}", json.dumps(a).encode())
    for key in ("type", "conversation", "serviceUrl"):
        for _ in range(5):
            a = _valid(acts, rnd)
            del a[key]
            body(STRICT, f"missing {key}", json.dumps(a).encode())
    for _ in range(5):
        a = _valid(acts, rnd)
        del a["conversation"]["id"]
        body(STRICT, "missing conversation.id", json.dumps(a).encode())
    for top in ([], [_valid(acts, rnd)], "activity", 42, None, True, 1e308):
        body(STRICT, f"non-object top {str(top)[:30]}", json.dumps(top).encode())

    # 4. optional fields with wrong types (lenient; the handler runs and reads every ev field)
    odd_values = [None, 0, -1, 1.5, 1e308, -1e308, True, "", "x" * 300, [], {}, [1, "x", None, {}],
                  {"id": 5}, {"id": None, "name": []}, [[[[]]]], "\u202e\u0000\uffff"]
    optional = ["id", "from", "recipient", "text", "textFormat", "entities", "channelData", "membersAdded",
                "membersRemoved", "action", "value", "name", "locale", "localTimezone", "localTimestamp",
                "attachments", "timestamp", "channelId", "replyToId"]
    for field in optional:
        for v in odd_values:
            a = _valid(acts, rnd)
            a["type"] = rnd.choice(["message", "installationUpdate", "conversationUpdate", "invoke", "event",
                                    "messageReaction"])
            a[field] = v
            body(LENIENT, f"{a['type']} {field}={str(v)[:40]!r}", json.dumps(a).encode())
    nested = [("conversation", "conversationType"), ("conversation", "tenantId"), ("conversation", "isGroup"),
              ("channelData", "tenant"), ("channelData", "team"), ("channelData", "channel"),
              ("channelData", "eventType"), ("from", "id"), ("from", "aadObjectId"), ("recipient", "id")]
    for parent, field in nested:
        for v in odd_values[:12]:
            a = _valid(acts, rnd)
            a["type"] = rnd.choice(["message", "installationUpdate", "conversationUpdate"])
            if not isinstance(a.get(parent), dict):
                a[parent] = {}
            a[parent][field] = v
            body(LENIENT, f"{a['type']} {parent}.{field}={str(v)[:40]!r}", json.dumps(a).encode())
    for i in range(20):  # odd entity lists (mentions / clientInfo)
        a = _valid(acts, rnd)
        ents = []
        for _ in range(rnd.randrange(1, 6)):
            e = {"type": rnd.choice(["mention", "clientInfo", 5, None, "x"])}
            for k in ("mentioned", "text", "timezone", "locale"):
                if rnd.random() < 0.6:
                    e[k] = rnd.choice(odd_values)
            ents.append(e)
        a["entities"] = ents
        body(LENIENT, f"odd entities #{i}", json.dumps(a).encode())

    # 5. deep nesting (100k deep) and merely deep values
    for kind in ("array", "object"):
        body(STRICT, f"root {kind} 100k deep", _deep(kind, 100000).encode())
        body(STRICT, f"root {kind} 100k deep unclosed", _deep(kind, 100000).encode()[:-50000])
        a = _valid(acts, rnd)
        s = json.dumps(a)
        for field in ("value", "channelData", "text"):
            deep = s[:-1] + f', "{field}x": ' + _deep(kind, 100000) + "}"
            body(LENIENT, f"{field}x {kind} 100k deep inside valid activity", deep.encode())
        for depth in (64, 200, 1000, 2000):
            deep = s[:-1] + ', "value": ' + _deep(kind, depth) + "}"
            body(LENIENT, f"value {kind} {depth} deep", deep.encode())

    # 6. huge (over the default 1 MiB limit) and large-but-allowed strings
    for n in (1 << 20, (1 << 20) + 1, 3 << 20):
        a = _valid(acts, rnd)
        a["text"] = "h" * n
        body(STRICT, f"huge text {n}", json.dumps(a).encode())
    body(STRICT, "huge key", ('{"' + "k" * (2 << 20) + '":1}').encode())
    body(STRICT, "huge garbage", b"\x00" * (2 << 20))
    for n in (100_000, 500_000):
        a = _valid(acts, rnd)
        a["text"] = "\u00e9" * (n // 2)
        body(LENIENT, f"large text {n}", json.dumps(a, ensure_ascii=False).encode())
        a = _valid(acts, rnd)
        a["type"] = "t" * n
        body(LENIENT, f"large type {n}", json.dumps(a).encode())
        a = _valid(acts, rnd)
        a["conversation"]["id"] = "c" * n
        body(LENIENT, f"large conversation id {n}", json.dumps(a).encode())

    # 7. invalid UTF-8 (strict: not JSON) and 8. NUL bytes
    bad_utf8 = [b"\xff", b"\xc3\x28", b"\xe2\x28\xa1", b"\xf0\x90\x28\xbc", b"\xed\xa0\x80", b"\xc0\xaf",
                b"\xf8\x88\x80\x80\x80", b"\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\xaf"]
    for i, bad in enumerate(bad_utf8):
        for field in ("type", "text", "serviceUrl"):
            a = _valid(acts, rnd)
            a[field] = "@@BAD@@"
            data = json.dumps(a).encode().replace(b"@@BAD@@", b"ok" + bad + b"ok")
            body(STRICT, f"invalid utf-8 #{i} in {field}", data)
        a = _valid(acts, rnd)
        data = json.dumps(a).encode().replace(b'"text"', b'"te' + bad + b'xt"')
        body(STRICT, f"invalid utf-8 #{i} in a key", data)
    for i in range(10):
        a = _valid(acts, rnd)
        data = json.dumps(a).encode()
        pos = rnd.randrange(len(data))
        body(STRICT, f"raw NUL at {pos}", data[:pos] + b"\x00" + data[pos:])
        field = rnd.choice(["text", "type", "serviceUrl", "id"])
        a[field] = "nul\u0000inside"
        body(LENIENT, f"escaped NUL in {field}", json.dumps(a).encode())
    body(LENIENT, "lone surrogate escape", json.dumps(_valid(acts, rnd)).encode().replace(b'"hello', b'"\\ud800hello'))
    body(LENIENT, "overlong numbers", json.dumps(_valid(acts, rnd)).encode()[:-1] + b', "n": ' + b"9" * 5000 + b"}")
    body(LENIENT, "duplicate keys", json.dumps(_valid(acts, rnd)).encode()[:-1] + b', "type": "message"}')

    # 9. header sets: invalid bodies with every kind of header must still be 4xx
    header_sets = [
        {}, {"Content-Type": "text/plain"}, {"Content-Type": "application/json; charset=latin1"},
        {"Content-Type": "\x01\x02"}, {"Content-Type": "application/xml"}, {"Content-Encoding": "gzip"},
        {"Authorization": "Bearer garbage"}, {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer " + "A" * 8000}, {"Accept": "*/*"}, {"X-Ms-Agents-Playground": "true"},
        {"Expect": "100-continue"}, {"Connection": "keep-alive"}, {"Connection": "close"},
        {"X-Huge": "h" * 7000}, {"Cookie": "a=b; " * 200},
    ]
    for i, hs in enumerate(header_sets):
        for _ in range(3):
            bad = rnd.choice([b"{", b"[]", b"null", b'{"type":1}', b"\xff\xfe\xfd", b""])
            body(STRICT, f"headers #{i} {list(hs)} + invalid body {bad!r}", bad, hs)
        body(LENIENT, f"headers #{i} {list(hs)} + valid body", json.dumps(_valid(acts, rnd)).encode(), hs)

    # 10. raw sockets: broken HTTP, garbage methods, absurd lengths, chunked encoding
    valid = json.dumps(_valid(acts, rnd)).encode()

    def req(method=b"POST", path=b"/api/messages", headers=(), data=b"", version=b"HTTP/1.1"):
        lines = [method + b" " + path + b" " + version, b"Host: 127.0.0.1"] + list(headers)
        return b"\r\n".join(lines) + b"\r\n\r\n" + data

    for m in (b"FOO", b"GARBAGE", b"P0ST", b"post", b"GET\x00", b"\xff\xfe", b"PROPFIND", b"MKCOL", b"BREW",
              b"X" * 5000, b"", b" ", b"POST POST", b"TRACE", b"CONNECT"):
        raw(f"method {m[:20]!r}", req(method=m, headers=[b"Content-Length: 2", b"Connection: close"],
                                       data=b"{}"), allow_501=True)
    for v in (b"HTTP/9.9", b"HTTP/1", b"HTTPS/1.1", b"", b"HTTP/1.1 extra", b"http/1.1", b"HTTP/0.9"):
        raw(f"version {v!r}", req(version=v, headers=[b"Content-Length: 2", b"Connection: close"], data=b"{}"))
    for cl in (b"99999999999999999999", b"18446744073709551616", b"9223372036854775807", b"-1", b"abc",
               b"1e3", b"0x10", b" 5", b"5 5", b"", b"+5", b"4294967297", b"1048577", b"999999999"):
        raw(f"content-length {cl!r}", req(headers=[b"Content-Length: " + cl, b"Connection: close"],
                                          data=b'{"type":"message"}'))
    raw("two different content-lengths", req(headers=[b"Content-Length: 2", b"Content-Length: 20",
                                                       b"Connection: close"], data=b"{}"))
    raw("content-length shorter than body", req(headers=[b"Content-Length: 3", b"Connection: close"],
                                                data=b'{"type":"message"}'))
    raw("content-length longer than body (then EOF)", req(headers=[b"Content-Length: 500"], data=b"{}"))
    raw("no content-length POST", req(headers=[b"Connection: close"], data=b""))

    def chunked(parts):
        out = b""
        for p in parts:
            out += b"%x\r\n" % len(p) + p + b"\r\n"
        return out + b"0\r\n\r\n"

    for i in range(10):
        bad = rnd.choice([b"{", b"[1]", b"nope", b'{"type":""}', b"\xff" * 10])
        raw(f"chunked invalid json #{i}", req(headers=[b"Transfer-Encoding: chunked", b"Connection: close"],
                                              data=chunked([bad[:1], bad[1:]])))
    for junk in (b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc\r\n0\r\n\r\n", b"fffffffffffffffffff\r\nx\r\n",
                 b"-5\r\nabcde\r\n0\r\n\r\n", b"3\r\nabc", b"2;ext=" + b"e" * 9000 + b"\r\n{}\r\n0\r\n\r\n",
                 b"7fffffff\r\n{}"):
        raw(f"chunked framing {junk[:24]!r}",
            req(headers=[b"Transfer-Encoding: chunked", b"Connection: close"], data=junk))
    raw("chunked huge declared size", req(headers=[b"Transfer-Encoding: chunked"], data=b"100000000\r\n{"))
    raw("chunked + content-length", req(headers=[b"Transfer-Encoding: chunked", b"Content-Length: 2",
                                                 b"Connection: close"], data=chunked([b"{}"])))
    raw("transfer-encoding gzip", req(headers=[b"Transfer-Encoding: gzip", b"Connection: close"], data=b"{}"))
    raw("header without colon", req(headers=[b"NoColonHere", b"Content-Length: 2"], data=b"{}"))
    raw("header with NUL", req(headers=[b"X-A: a\x00b", b"Content-Length: 2"], data=b"{}"))
    raw("header invalid utf-8", req(headers=[b"X-A: \xff\xfe", b"Content-Length: 2", b"Connection: close"],
                                    data=b"{}"))
    raw("huge header line", req(headers=[b"X-Big: " + b"b" * 200_000, b"Content-Length: 2"], data=b"{}"))
    raw("many headers", req(headers=[b"X-H%d: v" % i for i in range(5000)] + [b"Content-Length: 2"], data=b"{}"))
    raw("huge path", req(path=b"/api/messages?" + b"q" * 200_000, headers=[b"Content-Length: 2"], data=b"{}"))
    raw("path with NUL", req(path=b"/api/mess\x00ages", headers=[b"Content-Length: 2", b"Connection: close"],
                             data=b"{}"))
    raw("path invalid utf-8", req(path=b"/api/\xff\xfe", headers=[b"Content-Length: 2", b"Connection: close"],
                                  data=b"{}"))
    raw("path percent garbage", req(path=b"/api/%zz%00%", headers=[b"Content-Length: 2",
                                                                   b"Connection: close"], data=b"{}"))
    raw("absolute-form path", req(path=b"http://evil.example/api/messages",
                                  headers=[b"Content-Length: 2", b"Connection: close"], data=b"{}"))
    raw("bare LF line endings", b"POST /api/messages HTTP/1.1\nHost: x\nContent-Length: 2\nConnection: close\n\n{}")
    raw("request line only then EOF", b"POST /api/messages HTTP/1.1\r\n")
    raw("half a request line", b"POST /api/mes")
    raw("empty connection", b"")
    raw("only CRLFs", b"\r\n" * 100)
    raw("TLS client hello on plain port", bytes.fromhex("16030100a5010000a10303") + bytes(rnd.randrange(256)
                                                                                           for _ in range(160)))
    raw("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    raw("obs-fold header", req(headers=[b"X-A: a", b" folded", b"Content-Length: 2", b"Connection: close"],
                               data=b"{}"))
    raw("pipelined invalid then valid", req(headers=[b"Content-Length: 1"], data=b"{") +
        req(headers=[b"Content-Length: %d" % len(valid), b"Connection: close"], data=valid))
    for i in range(60):  # random request lines and header soup
        parts = [bytes(rnd.randrange(32, 127) for _ in range(rnd.randrange(1, 40))) for _ in range(3)]
        line = b" ".join(parts)
        hdrs = [bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(0, 60))) for _ in range(rnd.randrange(4))]
        raw(f"random request #{i}", b"\r\n".join([line] + hdrs) + b"\r\n\r\n", allow_501=True)
    for i in range(40):  # valid request line + random body bytes + lying lengths
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 400)))
        n = rnd.choice([0, len(data), max(0, len(data) - 7)])
        raw(f"random body with length {n}/{len(data)} #{i}",
            req(headers=[b"Content-Length: %d" % n, b"Content-Type: application/json", b"Connection: close"],
                data=data))
    return cases


@require_binary
class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fc = FakeConnector().start()
        cls.h = Herald(bot("fuzz_bot.lua"), env={"HERALD_RESPONSE_DEADLINE_MS": "2000"})
        try:
            cls.h.start()
        except Exception:
            cls.h.kill()
            cls.fc.stop()
            raise
        cls.cases = build_cases(cls.fc.url)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.h.stop(timeout=60)
        finally:
            cls.h.kill()
            cls.fc.stop()

    def _post(self, data, headers):
        c = http.client.HTTPConnection(self.h.host, self.h.port, timeout=30)
        try:
            h = {"Content-Type": "application/json"}
            h.update(headers)
            c.putrequest("POST", "/api/messages", skip_accept_encoding=True)
            for k, v in h.items():
                c.putheader(k, v)
            c.putheader("Content-Length", str(len(data)))
            c.endheaders()
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer 413 and close before reading everything
            r = c.getresponse()
            r.read()
            return r.status
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return None
        finally:
            c.close()

    def _raw(self, data, shut_wr):
        try:
            return raw_status(self.h.raw(data, timeout=15, shut_wr=shut_wr))
        except socket.timeout:
            return "timeout"

    def test_bad_input_corpus(self):
        cases = self.cases
        self.assertGreaterEqual(len(cases), 1000)
        failures = []
        counts = {STRICT: 0, LENIENT: 0, RAW: 0}
        accepted = 0               # lenient cases answered 2xx: a field of the wrong type gets 400
        t0 = time.monotonic()
        for i, (kind, label, payload) in enumerate(cases):
            counts[kind] += 1
            if kind == RAW:
                data, shut_wr, allow_501 = payload
                st = self._raw(data, shut_wr)
                ok = st is None or (isinstance(st, int) and 400 <= st < 500) or (allow_501 and st == 501)
                want = "4xx or closed" + (" (or 501)" if allow_501 else "")
            else:
                data, headers = payload
                st = self._post(data, headers)
                if kind == STRICT:
                    ok = st is not None and 400 <= st < 500
                    want = "4xx"
                else:
                    ok = st is not None and (200 <= st < 300 or 400 <= st < 500)
                    want = "2xx or 4xx"
                    accepted += st is not None and 200 <= st < 300
            if not ok:
                failures.append(f"#{i} [{kind}] {label}: got {st}, want {want}")
            if not self.h.alive():
                self.fail(f"herald died at case #{i} [{kind}] {label} (exit {self.h.proc.returncode}); "
                          f"stderr tail:\n{self.h.log[-4000:]}")
            if i % 100 == 99:
                st, _ = self.h.healthz()
                self.assertEqual(st, 200, f"/healthz after case #{i}")
        st, body = self.h.healthz()
        self.assertEqual(st, 200, body)
        # the lenient cases really ran handlers: the bot counts them and reports through the connector
        report = Activities(self.fc.url).message("a:fuzz-report", "fuzz-report")
        st, body = self.h.post_activity(report)
        self.assertEqual(st, 200, body)
        reqs = self.fc.wait_until(lambda r: [x for x in r if x["conversation_id"] == "a:fuzz-report"] or None,
                                  what="fuzz-report reply")
        handled = int(reqs[0]["json"]["text"].split("=")[1])
        self.assertGreaterEqual(accepted, counts[LENIENT] // 4,
                                f"only {accepted} of {counts[LENIENT]} lenient activities accepted")
        self.assertGreaterEqual(handled, accepted // 2,
                                f"only {handled} handler runs for {accepted} accepted lenient activities")
        elapsed = time.monotonic() - t0
        print(f"\n  bad input: {len(cases)} cases ({counts}) in {elapsed:.1f}s, {handled} handler runs, "
              f"{len(failures)} unexpected",
              flush=True)
        if failures:
            self.fail(f"{len(failures)} case(s) answered wrongly:\n" + "\n".join(failures[:60]))


if __name__ == "__main__":
    unittest.main()
