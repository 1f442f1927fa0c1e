"""test_admin.py — the admin endpoints (/metrics, /-/reload, /-/broadcast, /-/clock) live only on the
admin socket beside the database (mode 0600, one herald per socket, a dead one's socket replaced)
and the optional --admin-listen TCP listener (bearer token, required off loopback); the public
listener answers 404 for all of them, also behind a real nginx configured as the README says."""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (HERALD_BIN, ROOT, TENANT, Herald, HeraldTestCase, bot, free_port, http_request, require_binary, run_cli,
                     sanitizer_problems, tf)
import http.client

MAIN = bot("main_bot.lua")
ADMIN_BOT = bot("admin_bot.lua")
ADMIN_TCP_RE = r"admin endpoints also on http://127\.0\.0\.1:(\d+) \(([^)]*)\)"
NOT_FOUND = {"error": "no such endpoint"}
# herald's own 404s on the public listener (an /api/notify/ name with a '/' or '%' is no trigger)
HERALD_404 = ({"error": "no such endpoint"}, {"error": "no such trigger"})


def public_paths_answer_404(test, h):
    """Every admin route on the public listener, by every method: 404, never a handler."""
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
        for path in ("/metrics", "/-/reload", "/-/broadcast", "/-/clock"):
            st, body, _ = h.request(method, path, body=b'{"id":1,"action":"cancel","advance_s":60}'
                                    if method != "HEAD" else None)
            test.assertEqual(st, 404, f"{method} {path} on the public listener → {st} {body!r}")
            if method != "HEAD":
                test.assertEqual(json.loads(body), NOT_FOUND, f"{method} {path}")


@require_binary
class AdminSocketTest(HeraldTestCase):
    def test_socket_is_0600_and_the_public_listener_has_no_admin_routes(self):
        h = self.start_herald(MAIN)
        self.assertIn(f"admin endpoints (/metrics, /-/…) on the unix socket {h.admin_socket}", h.log)
        st = os.lstat(h.admin_socket)
        self.assertTrue(stat.S_ISSOCK(st.st_mode), oct(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))
        self.assertEqual(stat.S_IMODE(os.lstat(h.admin_socket + ".lock").st_mode), 0o600)
        public_paths_answer_404(self, h)
        # the same routes on the admin socket
        m = h.metrics()
        self.assertEqual(m["herald_generation"], 1)
        st_, body, hdrs = h.admin_request("GET", "/metrics")
        self.assertTrue(hdrs["content-type"].startswith("text/plain"), hdrs)
        st_, body, hdrs = h.admin_request("POST", "/metrics", body=b"")
        self.assertEqual((st_, hdrs.get("allow")), (405, "GET"), body)
        st_, body, hdrs = h.admin_request("GET", "/-/reload")
        self.assertEqual((st_, hdrs.get("allow")), (405, "POST"), body)
        st_, body, _ = h.admin_request("POST", "/-/reload", body=b"")
        self.assertEqual((st_, json.loads(body)["generation"]), (200, 2), body)
        self.assertIn("admin: POST /-/reload on the admin socket", h.log)
        st_, body, _ = h.admin_request("POST", "/-/clock", body=b'{"advance_s": 60}')
        self.assertEqual(st_, 404, "HERALD_TEST_CLOCK is off: " + body)
        st_, body, _ = h.admin_request("GET", "/healthz")
        self.assertEqual(json.loads(body)["status"], "ok")
        st_, body, _ = h.admin_request("POST", "/api/messages", body=b"{}")
        self.assertEqual(st_, 404, "activities are not served on the admin socket")
        # a clean exit removes the socket and its lock
        h.stop()
        self.assertFalse(os.path.exists(h.admin_socket))
        self.assertFalse(os.path.exists(h.admin_socket + ".lock"))

    def test_one_herald_per_socket_and_a_dead_ones_socket_is_replaced(self):
        h = self.start_herald(MAIN)
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--db", h.db, MAIN])
        self.assertEqual(code, 1, err)
        # the database's lock refuses it first (it covers a second herald with its own socket too)
        self.assertIn(f"another herald (pid {h.proc.pid}) is running on {h.db}", err)
        self.assertNotIn("listening on http", err)
        self.assertEqual(h.metrics()["herald_generation"], 1, "the first herald lost its socket")
        # SIGKILL leaves the socket and the lock file behind; the next start replaces them
        h.proc.send_signal(signal.SIGKILL)
        h.wait_exit()
        self.assertTrue(stat.S_ISSOCK(os.lstat(h.admin_socket).st_mode))
        rc, out, err = run_cli(["reload", "--db", h.db])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("no herald is running here", err)
        h2 = self.start_herald(MAIN, db=h.db)
        self.assertIn(f"replaced the admin socket {h.admin_socket} left by a process that is gone", h2.log)
        self.assertEqual(stat.S_IMODE(os.lstat(h2.admin_socket).st_mode), 0o600)
        rc, out, err = run_cli(["reload", "--db", h2.db])
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(json.loads(out)["generation"], 2)

    def test_refuses_to_replace_what_is_not_a_socket(self):
        tmp = tempfile.mkdtemp(prefix="herald-admin-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = os.path.join(tmp, "h.db")
        path = os.path.join(tmp, "not-a-socket")
        with open(path, "w") as f:
            f.write("keep me")
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--db", db,
                                  "--admin-socket", path, MAIN])
        self.assertEqual(code, 1, err)
        self.assertIn(f"{path} exists and is not a socket; refusing to replace it", err)
        with open(path) as f:
            self.assertEqual(f.read(), "keep me")
        # a socket that another live process serves is not replaced either
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        sock_path = os.path.join(tmp, "busy.sock")
        other.bind(sock_path)
        other.listen(1)
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--db", db,
                                  "--admin-socket", sock_path, MAIN])
        self.assertEqual(code, 1, err)
        self.assertIn(f"another process serves the socket {sock_path}", err)
        self.assertTrue(stat.S_ISSOCK(os.lstat(sock_path).st_mode))
        # a path too long for a unix socket is refused with what to do
        long_path = os.path.join(tmp, "x" * 120 + ".sock")
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--db", db,
                                  "--admin-socket", long_path, MAIN])
        self.assertEqual(code, 1, err)
        self.assertIn("set --admin-socket (HERALD_ADMIN_SOCKET) to a shorter one", err)
        self.assertFalse(sanitizer_problems(err), err)

    def test_cli_finds_the_socket_like_run_and_says_when_no_herald_runs(self):
        tmp = tempfile.mkdtemp(prefix="herald-admin-")
        self.addCleanup(shutil.rmtree, tmp, True)
        script = os.path.join(tmp, "bot.lua")
        shutil.copy(MAIN, script)
        # nothing running: exit 1 and a clear line, for the script, --db and HERALD_DB
        for args, env in ((["reload", script], None),
                          (["reload", "--db", os.path.join(tmp, "herald.db")], None),
                          (["reload"], {"HERALD_DB": os.path.join(tmp, "herald.db")}),
                          (["broadcast", "pause", "7", script], None)):
            rc, out, err = run_cli(args, env=env)
            self.assertEqual(rc, 1, f"{args}: {out}{err}")
            self.assertIn(f"no herald is running here: no admin socket at {tmp}/herald.db.admin.sock",
                          err, args)
        rc, out, err = run_cli(["reload"])
        self.assertEqual(rc, 2, err)
        self.assertIn("give --db PATH (or HERALD_DB) or the bot script", err)
        rc, out, err = run_cli(["reload", "--listen", "127.0.0.1:3978"])
        self.assertEqual(rc, 2, err)
        self.assertIn("does not use --listen", err)
        # herald run with no --db: herald.db beside the script, its socket beside that
        h = Herald(script, db=os.path.join(tmp, "herald.db"))
        h.command = lambda: [HERALD_BIN, "run", "--dev", "--listen", "127.0.0.1:0", script]
        self._heralds.append(h)
        h.start()
        self.assertTrue(stat.S_ISSOCK(os.lstat(os.path.join(tmp, "herald.db.admin.sock")).st_mode))
        for args in (["reload", script], ["reload", "--db", h.db], ["reload", f"--db={h.db}"],
                     ["reload", "--admin-socket", h.admin_socket]):
            rc, out, err = run_cli(args)
            self.assertEqual(rc, 0, f"{args}: {out}{err}")
        self.assertEqual(h.metrics()["herald_generation"], 5)
        rc, out, err = run_cli(["broadcast", "pause", "7", "--db", h.db])
        self.assertEqual(rc, 1, out + err)          # no such broadcast: the handler's answer
        self.assertIn('"ok":false', out)

    def test_admin_socket_stays_up_while_draining_and_refuses_a_reload(self):
        h = self.start_herald(ADMIN_BOT, env={"HERALD_RESPONSE_DEADLINE_MS": "60000"})
        done = {}
        # the handler's send is held at the connector: herald drains until the test releases it
        gate = self.fc.hold(method="POST")
        conv = {"id": "a:drain", "service_url": self.fc.url + self.PREFIX}
        t = threading.Thread(target=lambda: done.update(r=h.request(
            "POST", "/api/notify/slow", json.dumps({"s": 0.1, "conv": conv}).encode())))
        t.start()
        self.addCleanup(t.join)
        deadline = time.monotonic() + tf(10)
        while h.metrics()["herald_tasks"] < 1:
            self.assertLess(time.monotonic(), deadline, "the slow handler never started")
            time.sleep(0.02)
        h.terminate()
        h.wait_log(r"SIGTERM received")
        st, body, _ = h.admin_request("POST", "/-/reload", body=b"")
        self.assertEqual((st, json.loads(body)), (503, {"reloaded": False, "error": "herald is stopping"}))
        self.assertEqual(h.metrics()["herald_generation"], 1)
        gate.release()
        t.join(tf(30))
        self.assertEqual(done["r"][0], 200, done)
        self.assertEqual(h.wait_exit(), 0)
        self.assertFalse(os.path.exists(h.admin_socket))

    def test_admin_socket_flag_and_env(self):
        tmp = tempfile.mkdtemp(prefix="herald-admin-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "ctl.sock")
        h = self.start_herald(MAIN, env={"HERALD_ADMIN_SOCKET": path})
        self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
        self.assertFalse(os.path.exists(h.admin_socket), "the default socket was made too")
        rc, out, err = run_cli(["reload", "--admin-socket", path])
        self.assertEqual(rc, 0, out + err)
        rc, out, err = run_cli(["reload", "--db", h.db], env={"HERALD_ADMIN_SOCKET": path})
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(json.loads(out)["generation"], 3)


@require_binary
class AdminTcpTest(HeraldTestCase):
    TOKEN = "adm~" + "k3y" * 12

    def auth_env(self):
        return {"CLIENT_ID": "00000000-0000-0000-0000-00000000a11d", "CLIENT_SECRET": "not-used"}

    def test_off_loopback_without_a_token_refuses_to_start(self):
        tmp = tempfile.mkdtemp(prefix="herald-admin-")
        self.addCleanup(shutil.rmtree, tmp, True)
        db = os.path.join(tmp, "h.db")
        for spec in ("0.0.0.0:0", "[::]:0"):
            args = ["run", "--listen", "127.0.0.1:0", "--admin-listen", spec, "--db", db, MAIN]
            code, out, err = run_cli(args, env=self.auth_env())
            self.assertEqual(code, 1, err)
            self.assertIn("is not on loopback: set HERALD_ADMIN_TOKEN", err)
            self.assertNotIn("listening on http", err)
            code, out, err = run_cli(["check"] + args[1:], env=self.auth_env())
            self.assertEqual(code, 1, err)
            # HERALD_ADMIN_LISTEN is the same setting
            code, out, err = run_cli(["run", "--listen", "127.0.0.1:0", "--db", db, MAIN],
                                     env={**self.auth_env(), "HERALD_ADMIN_LISTEN": spec})
            self.assertEqual(code, 1, err)
            self.assertIn("HERALD_ADMIN_TOKEN", err)
        self.assertFalse(os.path.exists(db + ".admin.sock"))
        # dev mode: loopback only, token or not
        code, out, err = run_cli(["run", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0",
                                  "--db", db, MAIN], env={"HERALD_ADMIN_TOKEN": self.TOKEN})
        self.assertEqual(code, 1, err)
        self.assertIn("not a loopback address", err)
        # with a token it is accepted, and herald check masks the token
        code, out, err = run_cli(["check", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:9464",
                                  "--db", db, MAIN], env={**self.auth_env(), "HERALD_ADMIN_TOKEN": self.TOKEN})
        self.assertEqual(code, 0, err)
        self.assertIn("admin listen           0.0.0.0:9464 (bearer token required)", out)
        self.assertIn("admin token            ******** (set)", out)
        self.assertIn(f"admin socket           {db}.admin.sock (mode 0600)", out)
        self.assertNotIn(self.TOKEN, out + err)

    def admin_tcp(self, port, method, path, token=None, body=None, header=None):
        headers = {}
        if header is not None:
            headers["Authorization"] = header
        elif token is not None:
            headers["Authorization"] = "Bearer " + token
        return http_request(http.client.HTTPConnection("127.0.0.1", port, timeout=30), method, path,
                            body, headers)

    def test_token_is_required_and_checked(self):
        h = self.start_herald(MAIN, args=["--admin-listen", "127.0.0.1:0"],
                              env={"HERALD_ADMIN_TOKEN": self.TOKEN, "HERALD_LOG_LEVEL": "debug"})
        m = re.search(ADMIN_TCP_RE, h.log)
        self.assertIsNotNone(m, h.log[-2000:])
        port = int(m.group(1))
        self.assertEqual(m.group(2), "bearer token required")
        self.assertNotEqual(port, h.port)
        refused = [None, "", "wrong", self.TOKEN[:-1], self.TOKEN + "x", self.TOKEN.upper()]
        for tok in refused:
            for method, path in (("GET", "/metrics"), ("POST", "/-/reload"), ("GET", "/healthz"),
                                 ("GET", "/nothing")):
                st, body, hdrs = self.admin_tcp(port, method, path, token=tok,
                                                body=b"" if method == "POST" else None)
                self.assertEqual(st, 401, f"{method} {path} with {tok!r}: {body}")
                self.assertTrue(hdrs.get("www-authenticate", "").startswith("Bearer"), hdrs)
        for header in ("Basic " + self.TOKEN, self.TOKEN, "Bearer", "Bearer  "):
            st, body, _ = self.admin_tcp(port, "GET", "/metrics", header=header)
            self.assertEqual(st, 401, f"Authorization: {header!r}")
        self.assertEqual(h.metrics()["herald_generation"], 1, "a refused reload ran")
        self.assertNotIn("admin: POST", h.log)
        # the right token
        st, body, _ = self.admin_tcp(port, "GET", "/metrics", token=self.TOKEN)
        self.assertEqual(st, 200, body)
        self.assertIn("herald_generation 1", body)
        st, body, _ = self.admin_tcp(port, "GET", "/metrics", header="bearer " + self.TOKEN)
        self.assertEqual(st, 200, "the scheme is case-insensitive")
        st, body, _ = self.admin_tcp(port, "POST", "/-/reload", token=self.TOKEN, body=b"")
        self.assertEqual((st, json.loads(body)["generation"]), (200, 2), body)
        self.assertIn("admin: POST /-/reload on the TCP admin listener", h.log)
        # the CLI over TCP: the token from the environment
        rc, out, err = run_cli(["reload", "--admin-listen", f"127.0.0.1:{port}"],
                               env={"HERALD_ADMIN_TOKEN": self.TOKEN})
        self.assertEqual((rc, json.loads(out)["generation"]), (0, 3), out + err)
        rc, out, err = run_cli(["reload", "--admin-listen", f"127.0.0.1:{port}"])
        self.assertEqual(rc, 1, out + err)
        self.assertIn("set HERALD_ADMIN_TOKEN to its token", err)
        rc, out, err = run_cli(["reload", "--admin-listen", f"127.0.0.1:{port}"],
                               env={"HERALD_ADMIN_TOKEN": "wrong"})
        self.assertEqual(rc, 1, out + err)
        # the public listener stays without admin routes; the socket needs no token
        public_paths_answer_404(self, h)
        self.assertEqual(h.metrics()["herald_generation"], 3)
        h.stop()
        self.assertNotIn(self.TOKEN, h.log + h.stdout)

    def test_loopback_without_a_token_is_open(self):
        h = self.start_herald(MAIN, env={"HERALD_ADMIN_LISTEN": "127.0.0.1:0"})
        m = re.search(ADMIN_TCP_RE, h.log)
        self.assertEqual(m.group(2), "loopback, no token")
        st, body, _ = self.admin_tcp(int(m.group(1)), "POST", "/-/reload", body=b"")
        self.assertEqual(st, 200, body)
        st, body, _ = self.admin_tcp(int(m.group(1)), "POST", "/api/messages", body=b"{}")
        self.assertEqual(st, 404, body)


# ---- a real nginx in front, configured as the README recommends ------------------------------------

def find_nginx():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.access(p, os.X_OK):
            return p
    return None


def readme_server_block(nginx_port, herald_port):
    """The README's recommended nginx `server` block, TLS lines replaced by a plain listener on
    nginx_port and the upstream pointed at herald_port. Fails if the README no longer has it."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    m = re.search(r"### Behind a reverse proxy\n.*?```nginx\n(.*?)```", readme, re.S)
    assert m, "README.md: no nginx block under '### Behind a reverse proxy'"
    block = m.group(1)
    out, n_listen, n_ssl = [], 0, 0
    for line in block.splitlines():
        if re.match(r"\s*ssl_", line):
            n_ssl += 1
            continue
        if re.match(r"\s*listen\s+443\s+ssl;", line):
            n_listen += 1
            line = f"    listen 127.0.0.1:{nginx_port};"
        out.append(line)
    text = "\n".join(out)
    assert (n_listen, n_ssl) == (1, 2), f"README nginx block changed shape: {block}"
    assert text.count("proxy_pass http://127.0.0.1:3978;") == 1, block
    return text.replace("proxy_pass http://127.0.0.1:3978;", f"proxy_pass http://127.0.0.1:{herald_port};")


class Nginx:
    """nginx as an unprivileged foreground process with its whole prefix in a temp dir."""

    def __init__(self, binary, herald_port):
        self.binary = binary
        self.herald_port = herald_port
        self.dir = tempfile.mkdtemp(prefix="herald-nginx-")
        self.proc = None

    def start(self, timeout=20):
        for _ in range(3):   # the free port may be taken between probe and bind: try another
            self.port = free_port()
            d = self.dir
            conf = os.path.join(d, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{readme_server_block(self.port, self.herald_port)}
}}
""")
            self.proc = subprocess.Popen([self.binary, "-p", d, "-c", conf, "-e", f"{d}/error.log"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(d, "stderr.log"), "wb"))
            deadline = time.monotonic() + tf(timeout)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    st, _, _ = self.request("GET", "/healthz")
                    if st == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
            if "Address already in use" not in self.log():
                raise AssertionError(f"nginx did not come up:\n{self.log()}")
        raise AssertionError(f"nginx could not bind a free port:\n{self.log()}")

    def log(self):
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text[-4000:]

    def raw(self, data, timeout=10):
        """Sends raw bytes; returns (status, body bytes) of the answer (the connection closes)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            s.sendall(data)
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        finally:
            s.close()
        resp = b"".join(chunks)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
        assert m, f"not an HTTP answer: {resp[:200]!r}"
        head, _, body = resp.partition(b"\r\n\r\n")
        if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
            out, rest = b"", body
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0] or b"0", 16)
                if n == 0:
                    break
                out, rest = out + rest[:n], rest[n + 2:]
            body = out
        return int(m.group(1)), body

    def request(self, method, target, body=b"", headers=None):
        h = {"Host": "bot.example.com", "Connection": "close", **(headers or {})}
        if method not in ("GET", "HEAD") or body:
            h["Content-Length"] = str(len(body))
            h.setdefault("Content-Type", "application/json")
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        st, data = self.raw(head.encode() + b"\r\n" + body)
        return st, data, method

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(tf(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# Admin paths and the spellings a proxy or a router might normalise into one of them.
ATTACK_PATHS = [
    "/metrics", "/-/reload", "/-/broadcast", "/-/clock",
    "//metrics", "/./metrics", "/metrics/", "/metrics?x=1", "/metrics?", "/metrics;x", "/metrics%20",
    "/metrics%00", "/METRICS", "/Metrics", "/%6detrics", "/%6Detrics",
    "//-/reload", "/-//reload", "/./-/./reload", "/-/reload/", "/-/reload?x=1", "/-/RELOAD", "/-/Reload",
    "/%2D/reload", "/%2d/reload", "/%2Dreload", "/-%2Freload", "/-%2freload", "/-/%72eload",
    "/-/reload%3F", "/-/reload%23x", "/api/../-/reload", "/api/../metrics", "/api/messages/../../metrics",
    "/api/notify/../../-/clock", "/api/notify/%2E%2E/%2E%2E/-/reload", "/api/notify/..%2F..%2F-/reload",
    "/-/broadcast?id=1&action=cancel", "/-/BROADCAST", "/-/clock/", "/%2D/clock", "/-/./broadcast",
]
ATTACK_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]


@require_binary
class NginxFrontTest(HeraldTestCase):
    """nginx forwards everything (the README's configuration); no admin path reaches a handler."""

    def test_no_admin_path_is_reachable_through_nginx(self):
        binary = find_nginx()
        if not binary:
            self.fail("nginx is not installed: scripts/bootstrap.sh installs it (Debian package nginx)")
        h = self.start_herald(ADMIN_BOT, env={"HERALD_TEST_CLOCK": "1"})
        ngx = Nginx(binary, h.port)
        self.addCleanup(ngx.cleanup)
        ngx.start()

        # the public endpoints work through nginx: activities store three conversations, a trigger
        # starts a broadcast to them (paused at once: only a control that reaches herald changes it)
        for i in range(3):
            for act in self.acts.personal_install(f"a:ngx-{i}"):
                st, body, _ = ngx.request("POST", "/api/messages", json.dumps(act).encode())
                self.assertEqual(st, 200, body)
        st, body, _ = ngx.request("POST", "/api/notify/broadcast",
                                  json.dumps({"tenant": TENANT, "text": "all hands"}).encode())
        self.assertEqual(st, 200, body)
        ans = json.loads(body)
        self.assertEqual((ans.get("paused"), ans.get("state")), (True, "paused"), ans)
        bid = ans["id"]
        st, body, _ = ngx.request("GET", "/healthz")
        self.assertEqual((st, json.loads(body)["status"]), (200, "ok"), body)
        log_before = len(h.log)

        # every admin path and spelling, by every method, through nginx
        payload = json.dumps({"id": bid, "action": "cancel", "advance_s": 86400 * 30}).encode()
        reached_herald = 0
        for path in ATTACK_PATHS:
            for method in ATTACK_METHODS:
                st, body, _ = ngx.request(method, path, payload if method in ("POST", "PUT") else b"")
                self.assertIn(st, (400, 404), f"{method} {path} through nginx → {st} {body[:300]!r}")
                if st == 404 and body.startswith(b"{"):
                    self.assertIn(json.loads(body), HERALD_404, f"{method} {path}")
                    reached_herald += 1
        # absolute-form targets and headers that claim a local client change nothing
        for target in (f"http://127.0.0.1:{h.port}/-/reload", "http://localhost/metrics",
                       f"http://127.0.0.1:{ngx.port}/-/broadcast"):
            st, body, _ = ngx.request("POST", target, payload,
                                      {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"})
            self.assertIn(st, (400, 404), f"POST {target} → {st} {body[:300]!r}")
        # the plain spellings were forwarded and herald itself said 404 (nginx did not filter them)
        for path in ("/metrics", "/-/reload", "/-/broadcast", "/-/clock"):
            for method in ("GET", "POST"):
                st, body, _ = ngx.request(method, path, payload if method == "POST" else b"")
                self.assertEqual((st, json.loads(body)), (404, NOT_FOUND), f"{method} {path}")
        self.assertGreaterEqual(reached_herald, len(ATTACK_PATHS) * 2)

        # nothing happened: no admin handler ran; the generation, the paused broadcast (the payload
        # said cancel) and the clock (it said +30 days) are as they were
        self.assertNotIn("admin:", h.log[log_before:])
        m = h.metrics()
        self.assertEqual((m["herald_generation"], m["herald_reloads_total"]), (1, 0), m)
        st, body, _ = h.request("POST", "/api/notify/status", json.dumps({"id": bid}).encode())
        self.assertEqual(json.loads(body)["state"], "paused", body)
        st, body, _ = h.admin_request("POST", "/-/clock", json.dumps({"advance_s": 0}))
        self.assertEqual(st, 200, body)
        self.assertLess(abs(json.loads(body)["now_ms"] / 1000 - time.time()), 3600, "the clock moved")

        # the same requests on the admin socket do act (so the payloads above were not inert)
        st, body, _ = h.admin_request("POST", "/-/broadcast", payload)
        self.assertEqual((st, json.loads(body)["ok"]), (200, True), body)
        st, body, _ = h.request("POST", "/api/notify/status", json.dumps({"id": bid}).encode())
        self.assertEqual(json.loads(body)["state"], "cancelled", body)
        st, body, _ = h.admin_request("POST", "/-/reload", b"")
        self.assertEqual((st, json.loads(body)["generation"]), (200, 2), body)
        st, body, _ = h.admin_request("POST", "/-/clock", json.dumps({"advance_s": 7200}))
        self.assertGreater(json.loads(body)["now_ms"] / 1000 - time.time(), 3600, body)
        ngx.stop()
        self.assertFalse(sanitizer_problems(h.log))


if __name__ == "__main__":
    unittest.main()
