"""A real registry for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

Three flavours, each a pytest fixture (session-scoped: one process per xdist worker):

* ``registry``        — anonymous pull and push.
* ``auth_registry``   — htpasswd basic auth (bcrypt, cost 4); ``.username`` / ``.password``.
* ``tls_registry``    — https with a test CA, client certificates required (``.tls_dir``).
* ``token_registry``  — bearer token auth against ``TokenServer``, a small token service written
  here: it checks Basic credentials (or an identity/refresh token) and issues RS256 JWTs. The
  signing key and the self-signed certificate the registry trusts (``rootcertbundle``) are made
  with the ``openssl`` CLI, and tokens are signed with ``openssl dgst -sha256 -sign``, so no
  Python crypto library is needed. The certificate travels in the JWT's ``x5c`` header.

Tests share a registry, so each uses its own repository names: ``unique_repo(request)`` (or the
``repo`` fixture) gives one derived from the test name.

Example::

    def test_pull(registry, repo, busybox_factory):
        pushed = busybox_factory.push(registry, repo)
        ...  # pushed.ref == "127.0.0.1:PORT/<repo>:latest"
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
TEST_USER = "podplay"
TEST_PASSWORD = "s3cret-Passw0rd"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def unique_repo(request_or_name, prefix: str = "t") -> str:
    """A repository name unique to this test (and run): lowercase, registry-safe."""
    name = request_or_name if isinstance(request_or_name, str) else request_or_name.node.name
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "x"
    return f"{prefix}/{slug}-{uuid.uuid4().hex[:8]}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker-style token service (https://distribution.github.io/distribution/spec/auth/token/).

    ``GET /token?service=…&scope=repository:NAME:ACTIONS`` with Basic credentials, or ``POST``
    with ``grant_type=refresh_token``; answers ``{"token", "access_token", "expires_in",
    "issued_at"}``. Grants every requested action to the known user, ``pull`` to anonymous
    callers only when ``anonymous_pull`` is set. ``requests`` records every call."""

    def __init__(self, workdir: Path, *, service: str, issuer: str, users: dict[str, str],
                 refresh_tokens: dict[str, str] | None = None, anonymous_pull: bool = False,
                 expires_in: int = 300, host: str = "127.0.0.1"):
        self.workdir, self.service, self.issuer = workdir, service, issuer
        self.users, self.refresh_tokens = dict(users), dict(refresh_tokens or {})
        self.anonymous_pull, self.expires_in = anonymous_pull, expires_in
        self.requests: list[dict] = []
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=podplay-test-token-issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self._x5c = base64.b64encode(der).decode()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server._handle(self, "GET", b"")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                server._handle(self, "POST", self.rfile.read(length))

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.realm = f"http://{host}:{self.port}/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def _identify(self, handler, method: str, body: bytes) -> tuple[str | None, dict]:
        from urllib.parse import parse_qs, urlsplit

        query = {k: v[-1] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        # Several scopes come as repeated parameters (a push that mounts from another repository).
        query["scope"] = " ".join(parse_qs(urlsplit(handler.path).query).get("scope", []))
        if method == "POST":
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            query.update(form)
            if form.get("grant_type") == "refresh_token":
                user = self.refresh_tokens.get(form.get("refresh_token", ""))
                return (user, query) if user else ("!", query)
            if form.get("grant_type") == "password":
                user, pw = form.get("username", ""), form.get("password", "")
                return (user, query) if self.users.get(user) == pw else ("!", query)
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "!", query
            return (user, query) if self.users.get(user) == pw else ("!", query)
        return None, query

    def _handle(self, handler, method: str, body: bytes) -> None:
        user, query = self._identify(handler, method, body)
        with self._lock:
            self.requests.append({"method": method, "path": handler.path, "user": user,
                                  "scope": query.get("scope", ""), "headers": dict(handler.headers)})
        if not handler.path.startswith("/token"):
            handler.send_error(404)
            return
        if user == "!":
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"details":"incorrect username or password"}')
            return
        access = []
        for scope in query.get("scope", "").split():
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            granted = actions if user else [a for a in actions if a == "pull" and self.anonymous_pull]
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        token = self.sign(claims)
        doc = {"token": token, "access_token": token, "expires_in": self.expires_in,
               "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
        payload = json.dumps(doc).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def token_requests(self, scope_contains: str = "") -> list[dict]:
        with self._lock:
            return [r for r in self.requests if scope_contains in r["scope"]]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_tls_files(pki: Path, client_dir: Path) -> None:
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate, all
    signed by that CA. ``pki`` keeps the CA and server files; ``client_dir`` gets what a client
    needs, in certs.d layout: ca.crt, client.cert, client.key."""
    pki.mkdir(parents=True, exist_ok=True)
    client_dir.mkdir(parents=True, exist_ok=True)
    ca, ca_key = pki / "ca.crt", pki / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=podplay-test-ca")
    for name, usage, san in (("server", "serverAuth", "IP:127.0.0.1,DNS:localhost"),
                             ("client", "clientAuth", "DNS:podplay-test-client")):
        ext = pki / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / f"{name}.key"), "-out",
                 str(pki / f"{name}.csr"), "-subj", f"/CN=podplay-test-{name}")
        _openssl("x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-out", str(pki / f"{name}.crt"), "-days", "2", "-extfile", str(ext))
    shutil.copy(ca, client_dir / "ca.crt")
    shutil.copy(pki / "client.crt", client_dir / "client.cert")
    shutil.copy(pki / "client.key", client_dir / "client.key")


@dataclass
class Registry:
    """A running docker-registry. ``host`` is ``127.0.0.1:PORT``, what references start with."""

    workdir: Path
    auth: str = ""  # "" | "htpasswd" | "token"
    username: str = ""
    password: str = ""
    token_server: TokenServer | None = None
    tls: bool = False  # https with a test CA, client certificates required
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def tls_dir(self) -> Path:
        """ca.crt, client.cert and client.key: what skopeo's --cert-dir and certs.d take."""
        return self.workdir / "tls"

    def certs_d(self, base: Path, *, ca: bool = True, client: bool = True) -> Path:
        """Write a certs.d tree for this registry under ``base`` (``base/HOST:PORT/…``)."""
        d = base / self.host
        d.mkdir(parents=True, exist_ok=True)
        if ca:
            shutil.copy(self.tls_dir / "ca.crt", d / "ca.crt")
        if client:
            shutil.copy(self.tls_dir / "client.cert", d / "client.cert")
            shutil.copy(self.tls_dir / "client.key", d / "client.key")
        return base

    @property
    def trust_entry(self) -> str:
        """``HOST=REALM``: what ``$PODPLAY_TOKEN_REALMS`` needs to send this registry's token
        service credentials (it runs on another port)."""
        return f"{self.host}={self.token_server.realm}" if self.token_server else ""

    @property
    def creds(self) -> str:
        """``user:password`` for skopeo's --creds / --dest-creds ('' when anonymous)."""
        return f"{self.username}:{self.password}" if self.username else ""

    def ref(self, repo: str, tag: str = "latest") -> str:
        return f"{self.host}/{repo}:{tag}"

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'data'}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.tls:
            t = self.workdir / "pki"
            lines += ["  tls:", f"    certificate: {t / 'server.crt'}", f"    key: {t / 'server.key'}",
                      "    clientcas:", f"      - {t / 'ca.crt'}"]
        if self.auth == "htpasswd":
            lines += ["auth:", "  htpasswd:", "    realm: podplay-test", f"    path: {self.workdir / 'htpasswd'}"]
        elif self.auth == "token":
            ts = self.token_server
            assert ts is not None
            lines += ["auth:", "  token:", f"    realm: {ts.realm}", f"    service: {ts.service}",
                      f"    issuer: {ts.issuer}", f"    rootcertbundle: {ts.cert}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.auth == "htpasswd":
            import bcrypt

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
            (self.workdir / "htpasswd").write_text(f"{self.username}:{hashed}\n")
        if self.tls:
            make_tls_files(self.workdir / "pki", self.tls_dir)
        for _ in range(20):
            self.port = free_port()
            cfg = self.workdir / "config.yml"
            cfg.write_text(self._config())
            log = open(self.workdir / "registry.log", "wb")  # noqa: SIM115 - owned by the process
            # distribution reads REGISTRY_<SECTION>_<KEY> variables as configuration (a test's
            # REGISTRY_AUTH_FILE would become "auth.file"): start it without any of them.
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
            log.close()
            if self._wait_ready():
                return self
            self._kill()
        raise RuntimeError(f"docker-registry did not start; log:\n{(self.workdir / 'registry.log').read_text()}")

    def _wait_ready(self) -> bool:
        # Readiness poll (not a timed assertion): the process either answers or exits.
        for _ in range(400):
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=self._ssl_context()):
                    return True
            except urllib.error.HTTPError:
                return True  # 401: up, wants auth
            except OSError:
                time.sleep(0.025)
        return False

    def _ssl_context(self):
        if not self.tls:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.tls_dir / "client.cert"), str(self.tls_dir / "client.key"))
        return ctx

    def _kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop(self) -> None:
        self._kill()
        if self.token_server:
            self.token_server.stop()

    # --- raw HTTP helpers for tests that craft content ---------------------------------------

    def _auth_headers(self, scope: str) -> dict[str, str]:
        if self.auth == "htpasswd":
            raw = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if self.auth == "token":
            ts = self.token_server
            now = int(time.time())
            name, actions = scope.split(":")[1], ["pull", "push", "delete"]
            token = ts.sign({"iss": ts.issuer, "sub": self.username, "aud": ts.service, "exp": now + 300,
                             "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                             "access": [{"type": "repository", "name": name, "actions": actions}]})
            return {"Authorization": f"Bearer {token}"}
        return {}

    def request(self, method: str, path: str, *, data: bytes | None = None, headers: dict | None = None,
                repo: str = "") -> tuple[int, dict, bytes]:
        h = dict(headers or {})
        if repo:
            h.update(self._auth_headers(f"repository:{repo}:pull,push"))
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl_context()) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def put_manifest(self, repo: str, tag: str, data: bytes, media_type: str) -> str:
        """Upload raw manifest bytes (e.g. a hand-edited one); returns their digest."""
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", data=data, repo=repo,
                                       headers={"Content-Type": media_type})
        if status not in (200, 201):
            raise RuntimeError(f"PUT manifest {repo}:{tag} → {status}: {body[:500]!r}")
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def put_blob(self, repo: str, data: bytes) -> str:
        """Monolithic blob upload; returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"", repo=repo)
        if status != 202:
            raise RuntimeError(f"blob upload start → {status}: {body[:300]!r}")
        location = headers.get("Location", "")
        sep = "&" if "?" in location else "?"
        target = location if location.startswith("http") else f"{self.url}{location}"
        path = target[len(self.url):] + f"{sep}digest={digest}"
        status, _, body = self.request("PUT", path, data=data, repo=repo,
                                       headers={"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"blob upload → {status}: {body[:300]!r}")
        return digest

    def get_manifest(self, repo: str, reference: str, accept: str) -> tuple[bytes, str]:
        status, headers, body = self.request("GET", f"/v2/{repo}/manifests/{reference}", repo=repo,
                                             headers={"Accept": accept})
        if status != 200:
            raise RuntimeError(f"GET manifest {repo}:{reference} → {status}")
        return body, headers.get("Content-Type", "")

    def delete_manifest(self, repo: str, digest: str) -> None:
        status, _, body = self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo=repo)
        if status != 202:
            raise RuntimeError(f"DELETE manifest → {status}: {body[:300]!r}")


def start_registry(workdir: Path, auth: str = "", *, tls: bool = False, **token_kw) -> Registry:
    """Start a registry outside of a fixture (benchmarks, one-off tests); call ``stop()``."""
    reg = Registry(workdir, auth, tls=tls)
    if auth in ("htpasswd", "token"):
        reg.username, reg.password = TEST_USER, TEST_PASSWORD
    if auth == "token":
        reg.token_server = TokenServer(workdir, service="podplay-test-registry", issuer="podplay-test-issuer",
                                       users={TEST_USER: TEST_PASSWORD}, **token_kw)
    try:
        return reg.start()
    except BaseException:
        reg.stop()
        raise


@contextlib.contextmanager
def running_registry(auth: str = "", *, tls: bool = False, **token_kw):
    workdir = Path(tempfile.mkdtemp(prefix="pp-registry-"))
    try:
        reg = start_registry(workdir, auth, tls=tls, **token_kw)
        try:
            yield reg
        finally:
            reg.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    """Anonymous docker-registry on 127.0.0.1, one per xdist worker."""
    with running_registry() as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry():
    """docker-registry with htpasswd basic auth; credentials in ``.username`` / ``.password``."""
    with running_registry("htpasswd") as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry():
    """docker-registry with bearer-token auth; ``.token_server`` records every token request;
    ``.token_server.refresh_tokens`` maps identity tokens to users (add to it in a test).

    The token service listens on another port than the registry, so podplay sends it
    credentials only because ``$PODPLAY_TOKEN_REALMS`` lists it (set for the worker's session,
    so that podplay commands the tests run inherit it)."""
    with running_registry("token") as reg:
        before = os.environ.get("PODPLAY_TOKEN_REALMS")
        os.environ["PODPLAY_TOKEN_REALMS"] = f"{before or ''} {reg.trust_entry}".strip()
        try:
            yield reg
        finally:
            if before is None:
                os.environ.pop("PODPLAY_TOKEN_REALMS", None)
            else:
                os.environ["PODPLAY_TOKEN_REALMS"] = before


@pytest.fixture(scope="session")
def tls_registry():
    """docker-registry over https with a test CA that also requires a client certificate;
    ``.tls_dir`` holds ca.crt, client.cert and client.key, ``.certs_d(base)`` writes a certs.d tree."""
    with running_registry(tls=True) as reg:
        yield reg


@pytest.fixture
def repo(request) -> str:
    """A repository name no other test uses."""
    return unique_repo(request)
