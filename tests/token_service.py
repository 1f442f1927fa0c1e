#!/usr/bin/env python3
"""token_service.py — a local stand-in for Entra ID and the Bot Framework channel, for herald's
authentication tests (Python 3 stdlib + the openssl CLI; RSA keys are generated at test time).

Library use:

    from token_service import TokenService, mint_token, channel_claims
    ts = TokenService(client_id=APP_ID, client_secret="s3cret").start()   # 127.0.0.1:<free port>
    env = ts.herald_env()          # CLIENT_ID, CLIENT_SECRET, HERALD_LOGIN_URL, HERALD_OPENID_METADATA_URL
    tok = ts.mint(service_url)     # a channel JWT (RS256, current signing key) for an activity
    ts.rotate()                    # new key published and used for signing; the old one is dropped
    ts.outage = 503 | "reset" | None     # token endpoint outage; ts.keys_outage likewise for metadata/JWKS
    ts.token_delay, ts.keys_delay = 0.5, 2.0                   # slow answers
    ts.key_attempts()              # [{time, path: "metadata" | "jwks", status}] of every key request
    ts.stop()

It serves:
    GET  /v1/.well-known/openidconfiguration   OpenID metadata (issuer, jwks_uri, RS256)
    GET  /v1/.well-known/keys                  the JWKS: kty, use, kid, n, e, x5t?, endorsements
    POST /{tenant}/oauth2/v2.0/token           client credentials: records the form, checks
                                               client_id / grant_type / scope / client_secret, or
                                               verifies a client_assertion (RS256 with the
                                               certificate's key, x5t = base64url(SHA-1(DER)),
                                               aud = token URL, iss = sub = client id, exp/nbf)
                                               → {"access_token", "expires_in", "token_type": "Bearer"}
Counters: metadata_fetches, jwks_fetches, token_requests (records), issued (access tokens); key_log
records each metadata / JWKS request (monotonic time of arrival, what, the answer given).

Helpers: RsaKey (openssl genrsa; n/e extracted with `openssl rsa -text`), Certificate (self-signed,
PEM with certificate and key), mint_token(claims, key, kid, alg, ...) for valid and malformed JWTs.
"""

import atexit
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PUBLIC_ISSUER = "https://api.botframework.com"      # public and GCC
GOV_ISSUER = "https://api.botframework.us"          # GCC High and DoD
ISSUERS = {"public": PUBLIC_ISSUER, "gcc": PUBLIC_ISSUER, "gcch": GOV_ISSUER, "dod": GOV_ISSUER}
SCOPES = {"public": "https://api.botframework.com/.default", "gcc": "https://api.botframework.com/.default",
          "gcch": "https://api.botframework.us/.default", "dod": "https://api.botframework.us/.default"}
DEFAULT_TENANTS = {"public": "botframework.com", "gcc": "botframework.com",
                   "gcch": "MicrosoftServices.onmicrosoft.us", "dod": "MicrosoftServices.onmicrosoft.us"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_WORKDIR = None
_WORKDIR_LOCK = threading.Lock()


def _workdir():
    global _WORKDIR
    with _WORKDIR_LOCK:
        if _WORKDIR is None:
            _WORKDIR = tempfile.mkdtemp(prefix="herald-keys-")
            atexit.register(shutil.rmtree, _WORKDIR, True)
        return _WORKDIR


def _openssl(args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout


def b64url(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(s):
    if isinstance(s, bytes):
        s = s.decode("ascii")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _json(obj):
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


# ---- keys -----------------------------------------------------------------------------------------

class RsaKey:
    """An RSA private key in a PEM file, with its public JWK values. kid names it in a JWKS."""

    _pool = {}
    _pool_lock = threading.Lock()

    def __init__(self, path, kid):
        self.path = path
        self.kid = kid
        text = _openssl(["rsa", "-in", path, "-noout", "-text"]).decode()
        m = re.search(r"modulus:\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
        e = re.search(r"publicExponent:\s*(\d+)", text)
        if not m or not e:
            raise RuntimeError(f"cannot read n/e of {path}:\n{text[:400]}")
        n_bytes = bytes.fromhex(re.sub(r"[\s:]", "", m.group(1))).lstrip(b"\x00")
        e_int = int(e.group(1))
        self.n = b64url(n_bytes)
        self.e = b64url(e_int.to_bytes((e_int.bit_length() + 7) // 8, "big"))
        self.public_pem = _openssl(["rsa", "-in", path, "-pubout"], None)
        self.pub_path = path + ".pub"
        if not os.path.exists(self.pub_path):
            with open(self.pub_path, "wb") as f:
                f.write(self.public_pem)

    @classmethod
    def generate(cls, kid=None, bits=2048):
        kid = kid or "kid-" + secrets.token_hex(6)
        path = os.path.join(_workdir(), f"{kid}-{secrets.token_hex(4)}.pem")
        _openssl(["genrsa", "-out", path, str(bits)])
        return cls(path, kid)

    @classmethod
    def named(cls, name, kid=None, bits=2048):
        """A key generated once per process for name (key generation is the slow part)."""
        with cls._pool_lock:
            k = cls._pool.get((name, bits))
            if k is None:
                k = cls.generate(name, bits)
                cls._pool[(name, bits)] = k
        return k.with_kid(kid) if kid else k

    def with_kid(self, kid):
        c = object.__new__(RsaKey)
        c.__dict__.update(self.__dict__)
        c.kid = kid
        return c

    def sign(self, data):
        """RS256 (PKCS#1 v1.5, SHA-256) signature of data."""
        return _openssl(["dgst", "-sha256", "-sign", self.path], data)

    def verify(self, data, signature):
        return verify_rs256(self.pub_path, data, signature)

    def jwk(self, endorsements=("msteams",), x5t=None):
        k = {"kty": "RSA", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e}
        if x5t:
            k["x5t"] = x5t
        if endorsements is not None:
            k["endorsements"] = list(endorsements)
        return k


def verify_rs256(pub_pem_path, data, signature):
    fd, sig_path = tempfile.mkstemp(dir=_workdir(), suffix=".sig")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(signature)
        p = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub_pem_path, "-signature", sig_path],
                           input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        return p.returncode == 0 and b"Verified OK" in p.stdout
    finally:
        os.unlink(sig_path)


class Certificate:
    """A self-signed certificate and its key. path: one PEM holding both (HERALD_CERTIFICATE_PATH);
    cert_path / key_path: separate PEMs; x5t: base64url(SHA-1 of the DER certificate)."""

    def __init__(self, cn="herald-test"):
        d = tempfile.mkdtemp(dir=_workdir(), prefix="cert-")
        self.key_path = os.path.join(d, "key.pem")
        self.cert_path = os.path.join(d, "cert.pem")
        self.path = os.path.join(d, "combined.pem")
        self.pub_path = os.path.join(d, "pub.pem")
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key_path,
                  "-out", self.cert_path, "-days", "2", "-subj", f"/CN={cn}"])
        with open(self.cert_path, "rb") as c, open(self.key_path, "rb") as k, open(self.path, "wb") as out:
            out.write(c.read())
            out.write(k.read())
        self.der = _openssl(["x509", "-in", self.cert_path, "-outform", "DER"])
        self.x5t = b64url(hashlib.sha1(self.der).digest())
        with open(self.pub_path, "wb") as f:
            f.write(_openssl(["x509", "-in", self.cert_path, "-pubkey", "-noout"]))

    def verify(self, data, signature):
        return verify_rs256(self.pub_path, data, signature)


# ---- tokens ---------------------------------------------------------------------------------------

def mint_token(claims, key=None, kid=None, alg="RS256", header=None, hmac_secret=None, sign_with=None):
    """A compact JWS. key: RsaKey (its kid goes in the header unless kid is given; kid=False leaves
    it out); alg "RS256" signs with sign_with or key, "none" leaves the signature empty, "HS256"
    uses hmac_secret (bytes). header: extra/overriding header fields. claims: dict, or bytes/str
    used verbatim as the payload."""
    h = {"alg": alg, "typ": "JWT"}
    if kid is None and key is not None:
        kid = key.kid
    if kid is not False and kid is not None:
        h["kid"] = kid
    if header:
        h.update(header)
    payload = claims if isinstance(claims, (bytes, str)) else _json(claims)
    signing_input = (b64url(_json(h)) + "." + b64url(payload)).encode("ascii")
    if alg == "none":
        sig = b""
    elif alg == "HS256":
        sig = hmac.new(hmac_secret, signing_input, hashlib.sha256).digest()
    else:
        sig = (sign_with or key).sign(signing_input)
    return signing_input.decode("ascii") + "." + b64url(sig)


def decode_jwt(token):
    """(header, payload, signature bytes, signing input bytes) of a compact JWS; raises ValueError."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not three parts")
    return (json.loads(b64url_decode(parts[0])), json.loads(b64url_decode(parts[1])),
            b64url_decode(parts[2]), (parts[0] + "." + parts[1]).encode("ascii"))


def channel_claims(app_id, service_url, issuer=PUBLIC_ISSUER, now=None, lifetime=3600, **extra):
    """The claims of a Bot Framework channel token (PROTOCOL.md §2.2)."""
    now = int(time.time() if now is None else now)
    c = {"serviceurl": service_url, "nbf": now - 5, "exp": now + lifetime, "iss": issuer, "aud": app_id}
    for k, v in extra.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


# ---- the service ----------------------------------------------------------------------------------

class TokenService:
    def __init__(self, client_id="00000000-0000-0000-0000-00000000a001", client_secret=None,
                 certificate=None, issuer=PUBLIC_ISSUER, scope=None, expires_in=3600, host="127.0.0.1",
                 endorsements=("msteams",), key=None):
        self.host = host
        self.client_id = client_id
        self.client_secret = client_secret
        self.certificate = certificate
        self.issuer = issuer
        self.scope = scope                   # expected scope (None: not checked)
        self.expires_in = expires_in
        self.outage = None                   # token endpoint: None, an HTTP status, or "reset"
        self.keys_outage = None              # metadata + JWKS: None, an HTTP status, or "reset"
        self.token_delay = 0.0               # seconds before the token endpoint answers
        self.keys_delay = 0.0                # seconds before metadata / JWKS answer
        self.lock = threading.Condition()
        self.keys = []                       # [(RsaKey, endorsements or None)]
        self.signing_key = None
        self.metadata_fetches = 0
        self.jwks_fetches = 0
        self.key_log = []                    # dicts: time (monotonic, on arrival), path, status
        self.token_requests = []             # dicts: time, path, tenant, form, errors, status
        self.issued = []                     # access tokens handed out, in order
        self._server = None
        self.url = None
        k = key or RsaKey.named("channel-1")
        self.add_key(k, endorsements, sign=True)

    # ---- lifecycle ----
    def start(self):
        svc = self

        class Handler(_Handler):
            service = svc

        self._server = _Server((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="token-service", daemon=True).start()
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

    # ---- addresses ----
    @property
    def login_url(self):
        return self.url

    @property
    def metadata_url(self):
        return self.url + "/v1/.well-known/openidconfiguration"

    @property
    def jwks_url(self):
        return self.url + "/v1/.well-known/keys"

    def token_url(self, tenant="botframework.com"):
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    def herald_env(self, secret=True, cloud=None, floor=None, **extra):
        """Environment for an authenticated herald pointed at this service."""
        env = {"CLIENT_ID": self.client_id, "HERALD_LOGIN_URL": self.login_url,
               "HERALD_OPENID_METADATA_URL": self.metadata_url}
        if secret and self.client_secret:
            env["CLIENT_SECRET"] = self.client_secret
        if self.certificate and not (secret and self.client_secret):
            env["HERALD_CERTIFICATE_PATH"] = self.certificate.path
        if cloud:
            env["HERALD_CLOUD"] = cloud
        if floor is not None:
            env["HERALD_JWKS_REFRESH_FLOOR_S"] = str(floor)
        env.update({k: v for k, v in extra.items()})
        return env

    # ---- keys ----
    def add_key(self, key, endorsements=("msteams",), sign=False):
        with self.lock:
            self.keys = [(k, e) for k, e in self.keys if k.kid != key.kid] + [(key, endorsements)]
            if sign or self.signing_key is None:
                self.signing_key = key
        return key

    def remove_key(self, kid):
        with self.lock:
            self.keys = [(k, e) for k, e in self.keys if k.kid != kid]

    def rotate(self, new_key=None, endorsements=("msteams",)):
        """Publishes a new key, signs with it from now on, and drops the previous signing key."""
        old = self.signing_key
        new_key = new_key or RsaKey.named("channel-rotated-" + secrets.token_hex(3))
        self.add_key(new_key, endorsements, sign=True)
        if old is not None and old.kid != new_key.kid:
            self.remove_key(old.kid)
        return new_key

    def jwks(self):
        with self.lock:
            return {"keys": [k.jwk(e) for k, e in self.keys]}

    def metadata(self):
        return {"issuer": "https://api.botframework.com", "authorization_endpoint":
                "https://invalid.botframework.com/v1/auth", "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"]}

    # ---- channel tokens ----
    def mint(self, service_url, app_id=None, key=None, issuer=None, **claim_overrides):
        """A valid channel token for an activity with this serviceUrl (claims overridable)."""
        key = key or self.signing_key
        claims = channel_claims(app_id or self.client_id, service_url, issuer or self.issuer,
                                **claim_overrides)
        return mint_token(claims, key)

    def bearer(self, service_url, **kw):
        return "Bearer " + self.mint(service_url, **kw)

    def key_attempts(self, path=None):
        """The metadata / JWKS requests so far (optionally only "metadata" or "jwks"), in order."""
        with self.lock:
            return [dict(r) for r in self.key_log if path is None or r["path"] == path]

    # ---- outbound tokens ----
    def is_issued(self, token):
        with self.lock:
            return token in self.issued

    def requests(self):
        with self.lock:
            return list(self.token_requests)

    def wait_until(self, pred, timeout=10.0, what="condition"):
        # times the tests' factor for slow machines (tests/integration/harness.py: tf())
        timeout *= float(os.environ.get("HERALD_TEST_TIME_FACTOR", "1") or "1")
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"token service: timed out after {timeout}s waiting for {what}; "
                                         f"token requests={len(self.token_requests)} "
                                         f"metadata={self.metadata_fetches} jwks={self.jwks_fetches}")
                self.lock.wait(min(left, 0.05))

    def _note(self):
        with self.lock:
            self.lock.notify_all()

    def check_token_request(self, path, form):
        """Errors (list of str) in a client-credentials request; [] when it is good."""
        errs = []
        one = {k: v[0] for k, v in form.items() if len(v) == 1}
        for k, v in form.items():
            if len(v) != 1:
                errs.append(f"form field {k} given {len(v)} times")
        if one.get("grant_type") != "client_credentials":
            errs.append(f"grant_type={one.get('grant_type')!r}")
        if one.get("client_id") != self.client_id:
            errs.append(f"client_id={one.get('client_id')!r}")
        if self.scope is not None and one.get("scope") != self.scope:
            errs.append(f"scope={one.get('scope')!r}, expected {self.scope!r}")
        if not one.get("scope"):
            errs.append("no scope")
        if "client_assertion" in one:
            if "client_secret" in one:
                errs.append("both client_secret and client_assertion")
            if one.get("client_assertion_type") != ASSERTION_TYPE:
                errs.append(f"client_assertion_type={one.get('client_assertion_type')!r}")
            errs += self.check_assertion(one["client_assertion"], self.url + path)
        elif "client_secret" in one:
            if self.client_secret is None:
                errs.append("a client_secret, but this app has only a certificate")
            elif not hmac.compare_digest(one["client_secret"].encode(), self.client_secret.encode()):
                errs.append("wrong client_secret")
        else:
            errs.append("neither client_secret nor client_assertion")
        return errs

    def check_assertion(self, assertion, token_url):
        if self.certificate is None:
            return ["a client_assertion, but no certificate is registered"]
        try:
            h, p, sig, signing_input = decode_jwt(assertion)
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
            return [f"client_assertion is not a JWS: {e}"]
        errs = []
        now = time.time()
        if h.get("alg") != "RS256":
            errs.append(f"assertion alg={h.get('alg')!r}")
        if h.get("x5t") != self.certificate.x5t:
            errs.append(f"assertion x5t={h.get('x5t')!r}, expected {self.certificate.x5t!r}")
        if p.get("aud") != token_url:
            errs.append(f"assertion aud={p.get('aud')!r}, expected {token_url!r}")
        if p.get("iss") != self.client_id or p.get("sub") != self.client_id:
            errs.append(f"assertion iss={p.get('iss')!r} sub={p.get('sub')!r}")
        if not p.get("jti"):
            errs.append("assertion has no jti")
        if not isinstance(p.get("exp"), (int, float)) or p["exp"] < now or p["exp"] > now + 3600:
            errs.append(f"assertion exp={p.get('exp')!r}")
        if isinstance(p.get("nbf"), (int, float)) and p["nbf"] > now + 60:
            errs.append(f"assertion nbf={p.get('nbf')!r} in the future")
        if not self.certificate.verify(signing_input, sig):
            errs.append("assertion signature does not verify with the certificate's key")
        return errs


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


_TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")


class _Handler(BaseHTTPRequestHandler):
    service = None
    protocol_version = "HTTP/1.1"
    server_version = "FakeEntra/1.0"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, obj):
        body = obj if isinstance(obj, bytes) else _json(obj)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass

    def _reset(self):
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _outage(self, mode):
        if mode == "reset":
            self._reset()
            return True
        if mode:
            self._send(int(mode), {"error": "temporarily_unavailable",
                                   "error_description": "AADSTS50000: service outage (test)"})
            return True
        return False

    def do_GET(self):
        svc = self.service
        path = self.path.partition("?")[0]
        arrived = time.monotonic()
        if svc.keys_delay:
            time.sleep(svc.keys_delay)
        if path == "/v1/.well-known/openidconfiguration":
            with svc.lock:
                svc.metadata_fetches += 1
                mode = svc.keys_outage
                svc.key_log.append({"time": arrived, "path": "metadata", "status": mode or 200})
            if not self._outage(mode):
                self._send(200, svc.metadata())
        elif path == "/v1/.well-known/keys":
            with svc.lock:
                svc.jwks_fetches += 1
                mode = svc.keys_outage
                svc.key_log.append({"time": arrived, "path": "jwks", "status": mode or 200})
            if not self._outage(mode):
                self._send(200, svc.jwks())
        else:
            self._send(404, {"error": "not_found"})
        svc._note()

    def do_POST(self):
        svc = self.service
        path = self.path.partition("?")[0]
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n > 0 else b""
        m = _TOKEN_PATH.match(path)
        if not m:
            self._send(404, {"error": "not_found"})
            return
        form = urllib.parse.parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
        rec = {"time": time.monotonic(), "path": path, "tenant": urllib.parse.unquote(m.group(1)),
               "form": {k: v[0] if len(v) == 1 else v for k, v in form.items()},
               "content_type": self.headers.get("Content-Type"), "errors": [], "status": None}
        with svc.lock:
            mode = svc.outage
            delay = svc.token_delay
            expires_in = svc.expires_in
        if delay:
            time.sleep(delay)
        if mode:
            rec["status"] = mode
            with svc.lock:
                svc.token_requests.append(rec)
            svc._note()
            self._outage(mode)
            return
        rec["errors"] = svc.check_token_request(path, form)
        if rec["errors"]:
            rec["status"] = 401
            with svc.lock:
                svc.token_requests.append(rec)
            svc._note()
            self._send(401, {"error": "invalid_client", "error_description":
                             "AADSTS7000215: " + "; ".join(rec["errors"])})
            return
        token = "at-" + secrets.token_urlsafe(24)
        rec["status"] = 200
        rec["access_token"] = token
        with svc.lock:
            svc.issued.append(token)
            svc.token_requests.append(rec)
        svc._note()
        self._send(200, {"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": expires_in,
                         "access_token": token})


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="local Entra / Bot Framework token service")
    ap.add_argument("--client-id", default="00000000-0000-0000-0000-00000000a001")
    ap.add_argument("--client-secret", default="dev-secret")
    args = ap.parse_args(argv)
    ts = TokenService(client_id=args.client_id, client_secret=args.client_secret).start()
    print(json.dumps(ts.herald_env()), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    ts.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
