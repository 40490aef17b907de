"""A client for the OCI Distribution API (v2): ping, auth, manifests, blobs, tags.

Authentication: anonymous, Basic, and Bearer tokens (the ``WWW-Authenticate`` challenge names
the realm; a token per ``repository:<name>:pull`` scope is cached until it expires). Identity
tokens (OAuth2 refresh tokens in auth.json) are exchanged with a POST as docker does.

Safety rules, each with a reason:

* Plain http only for registries configured insecure or on loopback (docker's rule), and a
  token realm over plain http only for those too: a realm receives the password.
* Credentials go to the registry's own origin, never anywhere else: redirects are followed by
  hand and lose the Authorization header when they leave the origin (blob downloads are
  routinely redirected to a CDN), and a token realm gets Basic credentials (or an identity
  token) only when it is on the registry's own host and port, or listed for that registry in
  ``$PODPLAY_TOKEN_REALMS`` (``REGISTRY=REALM-URL``, space separated; Docker Hub's
  auth.docker.io and GitLab's gitlab.com are built in). Any other realm is asked anonymously,
  with a warning: the containers tools send the password to whatever realm a registry names.
* ``.netrc`` and environment auth are ignored (``trust_env`` off), proxies from the
  environment still apply.
* Manifests are read up to 4 MiB, without content decoding, and their digest is checked against
  the reference when pulling by digest and against ``Docker-Content-Digest`` when the registry
  sends one. Blobs are streamed to the content store, which verifies size and digest; a dropped
  connection resumes with a Range request when the registry honours Range (a 206 with the
  matching Content-Range), else the blob is fetched from byte 0 at most ``MAX_FULL_RESTARTS``
  more times; a failed download never leaves its partial file behind.
* 5xx, 429 and connection failures are retried with exponential back-off; after the last try a
  TemporaryImageError says what failed.
* Timeouts are sized for edge links and bounded as a whole: a connection must open within the
  connect timeout, and a read that gets no byte for the stall timeout is a *stall* (a frozen
  registry, a dead link behind a NAT that never resets). A stalled blob resumes with a Range
  request, at most ``stall_retries`` more times (with back-off) for one request or blob, the
  count starting afresh once a resumed download moved ``STALL_RESET_BYTES``; then one
  ``RegistryStallError`` names the registry, the blob and the stall time. Defaults:
  ``CONNECT_TIMEOUT``, ``STALL_TIMEOUT``, ``STALL_RETRIES``; ``$PODPLAY_CONNECT_TIMEOUT`` and
  ``$PODPLAY_STALL_TIMEOUT`` (and the CLI's --connect-timeout / --stall-timeout) change them.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin, urlsplit

from reconciler import __version__, sha
from reconciler.errors import ImageError, InputError, TemporaryImageError
from reconciler.images.blobio import BlobWriter
from reconciler.images.config import Credential, is_loopback
from reconciler.images.manifest import ACCEPT, MAX_MANIFEST_SIZE, Descriptor
from reconciler.images.progress import BlobFeed
from reconciler.images.reference import DIGEST_ALGORITHMS, validate_digest

if TYPE_CHECKING:
    from reconciler.images.httpconn import Response, Session
    from reconciler.images.store import Ingest

USER_AGENT = f"podplay/{__version__}"
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
MAX_TAGS_BYTES = 16 << 20
# Downloads of a blob from byte 0 after the first, when the registry cannot resume (ignores Range).
MAX_FULL_RESTARTS = 3
MAX_RESUMES = 1000  # Range resumes of one blob, however much each one moved
# Edge links: a cellular modem may take seconds to open a connection and a slow link to answer,
# but a registry that sends nothing for half a minute is frozen or gone. A registry frozen mid-pull
# fails it after (STALL_RETRIES + 1) × STALL_TIMEOUT plus the back-off (about 92 s), not after
# minutes; one frozen before the TLS handshake ends (bounded by the connect timeout), in about 46 s.
CONNECT_TIMEOUT = 15.0
STALL_TIMEOUT = 30.0
STALL_RETRIES = 2
STALL_RESET_BYTES = 1 << 20  # a resumed download that moved this much has recovered: stalls count afresh
READ_CHUNK = 64 << 10  # a read returns what came, up to this: progress moves and a stall loses little
ENV_CONNECT_TIMEOUT = "PODPLAY_CONNECT_TIMEOUT"
ENV_STALL_TIMEOUT = "PODPLAY_STALL_TIMEOUT"
DOCKER_HUB_API = "registry-1.docker.io"
ENV_TOKEN_REALMS = "PODPLAY_TOKEN_REALMS"
# Token realms of well-known registries that live on another host than the registry API.
KNOWN_REALMS = {"docker.io": ("https://auth.docker.io",), "registry.gitlab.com": ("https://gitlab.com",)}


def _log():
    import logging  # only for a warning: not on every pull's import path

    return logging.getLogger("podplay.images")


class ImageNotFoundError(ImageError):
    """The registry has no such repository, tag or digest (try the next candidate source)."""


class AuthenticationError(ImageError):
    """The registry refused our credentials (or wants some and we have none)."""


class RegistryStallError(TemporaryImageError):
    """The registry sent nothing for the stall timeout, every time it was asked (exit code 5)."""


def _seconds_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise InputError(f"${name}: {text!r} is not a number of seconds between 0 and 3600 (default {default:g})")
    return value


def registry_timeouts() -> tuple[float, float]:
    """(connect timeout, stall timeout) in seconds: ``$PODPLAY_CONNECT_TIMEOUT`` and
    ``$PODPLAY_STALL_TIMEOUT``, else ``CONNECT_TIMEOUT`` and ``STALL_TIMEOUT``."""
    return (_seconds_from_env(ENV_CONNECT_TIMEOUT, CONNECT_TIMEOUT),
            _seconds_from_env(ENV_STALL_TIMEOUT, STALL_TIMEOUT))


class _Stalls:
    """The stalls of one request, or of one blob across its resumes: ``hit`` counts one and
    raises once there were more than the client allows; ``moved`` forgets them once the transfer
    has recovered."""

    def __init__(self, client: RegistryClient, what: str):
        self.client, self.what = client, what
        self.count = 0
        self.moved_since = 0
        self.notice: Callable[[BaseException, int], None] | None = None  # told of each stall tried again
        self.detail: Callable[[], str] | None = None  # how far the transfer got, for the final message

    def hit(self, exc: BaseException) -> None:
        self.count += 1
        self.moved_since = 0
        if self.count > self.client.stall_retries:
            detail = self.detail() if self.detail is not None else ""
            raise RegistryStallError(self.client.stall_message(self.what, exc, self.count, detail))
        if self.notice is not None:
            self.notice(exc, self.count)

    def moved(self, n: int) -> None:
        self.moved_since += n
        if self.count and self.moved_since >= STALL_RESET_BYTES:
            self.count = 0


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` (RFC 7235): several challenges, each a scheme and
    comma-separated auth-params with optional quoting and backslash escapes."""
    out: list[Challenge] = []
    pos, n = 0, len(header)
    while pos < n:
        m = re.compile(rf"[\s,]*({_TOKEN})").match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while True:
            pm = _PARAM_RE.match(header, pos)
            if not pm:
                break
            value = pm.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else pm.group(3)
            params[pm.group(1).lower()] = value
            pos = pm.end()
            if pos < n and header[pos] == ",":
                # Either the next param of this challenge or the start of the next challenge.
                nxt = _PARAM_RE.match(header, pos + 1)
                if nxt:
                    pos += 1
                    continue
                pos += 1
            break
        out.append(Challenge(scheme, params))
    return out


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    digest: str
    content_type: str


def _registry_message(resp: Response) -> str:
    """The human part of a registry error body ({"errors": [{"code", "message"}]})."""
    try:
        body = resp.raw.read(64 << 10, decode_content=False) if resp.raw else b""
        import json

        doc = json.loads(body)
        errors = doc.get("errors") or []
        parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        return "; ".join(p for p in parts if p)
    except Exception:  # noqa: BLE001 - any unreadable body just means no detail
        return ""


DEFAULT_CERTS_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
ENV_CERTS_DIR = "PODPLAY_CERTS_DIR"


def tls_files(domain: str, certs_dirs: Sequence[str | os.PathLike] | None = None
              ) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    """The per-registry TLS files the containers tools use: ``<dir>/<host[:port]>/*.crt`` are
    extra certificate authorities, ``<name>.cert`` with ``<name>.key`` a client certificate.
    Directories: ``certs_dirs``, else ``$PODPLAY_CERTS_DIR``, else /etc/containers/certs.d and
    /etc/docker/certs.d."""
    if certs_dirs is None:
        env = os.environ.get(ENV_CERTS_DIR)
        certs_dirs = (env,) if env else DEFAULT_CERTS_DIRS
    cas: list[str] = []
    client: tuple[str, str] | None = None
    for base in certs_dirs:
        d = Path(base) / domain
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix == ".crt":
                cas.append(str(f))
            elif f.suffix == ".cert" and client is None:
                key = f.with_suffix(".key")
                if not key.is_file():
                    raise ImageError(f"client certificate {f} has no matching key {key}")
                client = (str(f), str(key))
    return tuple(cas), client


class MemoryIngest:
    """The ingest interface over a bytearray, for small blobs read without storing them
    (``inspect docker://``): same size and digest checks as the store's."""

    def __init__(self, digest: str, size: int, limit: int):
        if size > limit:
            raise ImageError(f"blob {digest} is {size} bytes, more than the {limit} allowed")
        self.digest, self.size = validate_digest(digest), size
        self.data = bytearray()

    @property
    def offset(self) -> int:
        return len(self.data)

    def write(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.size:
            raise ImageError(f"blob {self.digest} is larger than the {self.size} bytes its descriptor declares")
        self.data += chunk

    def reset(self) -> None:
        self.data = bytearray()

    def discard(self) -> None:
        self.reset()

    def commit(self) -> None:
        algorithm = self.digest.split(":", 1)[0]
        actual = f"{algorithm}:{sha.new(algorithm, bytes(self.data)).hexdigest()}"
        if len(self.data) != self.size or actual != self.digest:
            raise ImageError(f"blob {self.digest} failed verification (got {len(self.data)} bytes, digest {actual})")


class RegistryClient:
    """One registry endpoint (``host[:port]``). Thread-safe: the threads share one HTTP session
    (keep-alive connections, one per request in flight: see ``httpconn``) and the tokens."""

    def __init__(self, domain: str, *, insecure: bool = False, credential: Credential | None = None,
                 retries: int = 4, backoff: float = 0.5, timeout: float | None = None,
                 connect_timeout: float | None = None, stall_retries: int = STALL_RETRIES,
                 certs_dirs: Sequence[str | os.PathLike] | None = None,
                 trusted_realms: Sequence[str] | None = None):
        """``timeout`` is the stall timeout (no byte for that long), ``connect_timeout`` the time a
        connection may take to open; None takes them from the environment (``registry_timeouts``)."""
        self.domain = domain
        self.ca_files, self.client_cert = tls_files(domain, certs_dirs)
        self.api_host = DOCKER_HUB_API if domain == "docker.io" else domain
        # insecure: plain http and unverified TLS are allowed (configured, or loopback as docker
        # does). A loopback registry with a CA in certs.d is still verified: someone set it up.
        self.insecure = insecure or is_loopback(domain)
        self.verify_tls = not insecure and (not is_loopback(domain) or bool(self.ca_files))
        self.credential = credential if credential and not credential.empty else None
        if timeout is None or connect_timeout is None:
            env_connect, env_stall = registry_timeouts()
            timeout = env_stall if timeout is None else timeout
            connect_timeout = env_connect if connect_timeout is None else connect_timeout
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.connect_timeout, self.stall_retries = connect_timeout, max(0, stall_retries)
        self._http: Session | None = None
        self._lock = threading.Lock()
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self.token_requests = 0  # for tests and diagnostics: how often we asked the realm
        # Token realms on other origins that may receive our credentials (see realm_trusted).
        listed = trusted_realms if trusted_realms is not None else trusted_realms_from_env(domain)
        self.trusted_realms = {o for o in map(_origin_of, (*KNOWN_REALMS.get(domain, ()), *listed)) if o}
        self.withheld: set[str] = set()  # realms that got an anonymous request instead of credentials

    # --- plumbing ---------------------------------------------------------------------------

    def _session(self) -> Session:
        s = self._http
        if s is None:
            from reconciler.images.httpconn import Session

            with self._lock:
                if self._http is None:
                    self._http = Session(headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                                         ca_files=self.ca_files, client_cert=self.client_cert)
                s = self._http
        return s

    @property
    def connections_opened(self) -> int:
        """How many connections this client opened (for tests and diagnostics)."""
        return self._http.connections_opened if self._http is not None else 0

    def close(self) -> None:
        s, self._http = self._http, None
        if s is not None:
            s.close()

    def _verify(self) -> bool:
        return self.verify_tls

    def _timeouts(self) -> tuple[float, float]:
        return (self.connect_timeout, self.timeout)

    def _is_stall(self, exc: BaseException) -> bool:
        """A timeout: the connection did not open in time, or no byte came for the stall timeout."""
        from reconciler.images import httpconn

        return isinstance(exc, httpconn.Timeout | TimeoutError)

    def _connecting(self, exc: BaseException) -> bool:
        """Whether a timeout came while opening the connection (else while waiting for bytes)."""
        from reconciler.images import httpconn

        return isinstance(exc, httpconn.ConnectTimeout)

    def _silence(self, exc: BaseException) -> float:
        """How long the registry was silent: the stall timeout, but a TLS handshake is bounded by
        the connect timeout (the error says which: "read timeout=N")."""
        m = re.search(r"timeout=([0-9.]+)", str(exc))
        try:
            return float(m.group(1).rstrip(".")) if m else self.timeout
        except ValueError:
            return self.timeout

    def stall_message(self, what: str, exc: BaseException, count: int, detail: str = "") -> str:
        silence = (f"could not open a connection within {self.connect_timeout:g}s" if self._connecting(exc)
                   else f"sent nothing for {self._silence(exc):g}s")
        times = f"{count} time{'s' if count != 1 else ''} in a row"
        return (f"registry {self.domain} {silence} ({times}) while {what}{detail}; giving up. Check the link "
                f"to the registry, or allow more with --stall-timeout / ${ENV_STALL_TIMEOUT} "
                f"(--connect-timeout / ${ENV_CONNECT_TIMEOUT})")

    def _proxies(self, url: str) -> dict:
        from reconciler.images.httpconn import environ_proxies

        return environ_proxies(url)

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff * (2 ** attempt) * (0.5 + random.random())
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 30.0))
        time.sleep(delay)

    def _origin(self) -> tuple[str, str]:
        parts = urlsplit(self._base or f"https://{self.api_host}")
        return parts.scheme, parts.netloc

    def _send(self, method: str, url: str, headers: dict, *, stream: bool, data=None) -> Response:
        """One request, following redirects by hand so that credentials never leave the origin."""
        session = self._session()
        origin = self._origin()
        for _ in range(MAX_REDIRECTS + 1):
            resp = session.request(method, url, headers=headers, stream=stream, allow_redirects=False,
                                   timeout=self._timeouts(), verify=self._verify(),
                                   proxies=self._proxies(url), data=data)
            location = resp.headers.get("Location")
            if resp.status_code not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.close()
            target = urljoin(url, location)
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https"):
                raise ImageError(f"registry {self.domain} redirected to an unsupported URL {target!r}")
            if (parts.scheme, parts.netloc) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method, data = "GET", None
            url = target
        raise ImageError(f"registry {self.domain}: too many redirects for {url}")

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        from reconciler.images import httpconn

        return (httpconn.HTTPError,)

    def _is_tls_error(self, exc: BaseException) -> bool:
        from reconciler.images import httpconn

        return isinstance(exc, httpconn.SSLError)

    # --- endpoint and authentication ---------------------------------------------------------

    def ping(self) -> None:
        """Find the endpoint (https, or http for insecure/loopback registries) and its auth
        challenge. Raises TemporaryImageError when the registry cannot be reached."""
        if self._base is not None:
            return
        schemes = ["https", "http"] if self.insecure else ["https"]
        last: BaseException | None = None
        stalls = _Stalls(self, "answering /v2/")
        for attempt in range(self.retries + 1):
            tls_error: BaseException | None = None
            for scheme in schemes:
                url = f"{scheme}://{self.api_host}/v2/"
                try:
                    resp = self._session().get(url, timeout=self._timeouts(),
                                               verify=self._verify(), allow_redirects=False,
                                               proxies=self._proxies(url))
                except self._connection_errors() as exc:
                    last = exc
                    if self._is_stall(exc):
                        stalls.hit(exc)
                    if self._is_tls_error(exc):
                        tls_error = exc
                        if not self.insecure:
                            raise self._tls_failed(exc) from None
                    continue
                with resp:
                    if resp.status_code in RETRY_STATUS:
                        last = ImageError(f"HTTP {resp.status_code}")
                        break
                    if resp.status_code in (200, 401):
                        self._base = f"{scheme}://{self.api_host}"
                        if resp.status_code == 401:
                            self._challenge = self._pick_challenge(resp)
                        return
                    if tls_error is not None:
                        # https failed and the http fallback reached a TLS server: the TLS
                        # failure is the real story (client certificate, untrusted CA…).
                        raise self._tls_failed(tls_error) from None
                    if resp.status_code == 404:
                        raise ImageError(f"{self.domain} does not serve the registry API (/v2/ answered 404)")
                    raise ImageError(f"registry {self.domain}: /v2/ answered HTTP {resp.status_code}")
            if attempt < self.retries:
                self._sleep(attempt)
        raise TemporaryImageError(f"cannot reach registry {self.domain}: {_short(last)}")

    def _tls_failed(self, exc: BaseException) -> ImageError:
        return ImageError(
            f"registry {self.domain}: TLS failed ({_short(exc)}); for a private certificate authority or a "
            f"client certificate put ca.crt / client.cert + client.key in /etc/containers/certs.d/{self.domain}/; "
            "for a registry without TLS set insecure = true in registries.conf or pass --tls-verify=false")

    def _pick_challenge(self, resp: Response) -> Challenge | None:
        challenges = parse_www_authenticate(resp.headers.get("WWW-Authenticate", ""))
        for scheme in ("bearer", "basic"):
            for c in challenges:
                if c.scheme == scheme:
                    return c
        if challenges:
            raise ImageError(f"registry {self.domain} asks for unsupported authentication "
                             f"{challenges[0].scheme!r}")
        return None

    def _auth_header(self, scope: str) -> dict[str, str]:
        c = self._challenge
        if c is None:
            return {}
        if c.scheme == "basic":
            if self.credential is None or self.credential.identity_token:
                return {}
            import base64

            raw = f"{self.credential.username}:{self.credential.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {"Authorization": f"Bearer {self._token(c, scope)}"}

    def _token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scope)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
        doc = self._request_token(realm, service, scope, self._realm_credential(realm))
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ImageError(f"token service of {self.domain} returned no token")
        expires_in = doc.get("expires_in", 60)
        if not isinstance(expires_in, int | float) or expires_in < 60:
            expires_in = 60  # the token spec's minimum lifetime
        with self._lock:
            # Renew a little early: a token that expires in flight costs a retry.
            self._tokens[key] = (token, time.monotonic() + float(expires_in) - 10)
        return token

    def _realm_credential(self, realm: str) -> Credential | None:
        """The credential a token request to `realm` may carry (None: ask anonymously)."""
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ImageError(f"registry {self.domain} names an invalid token realm {realm!r}")
        if parts.scheme == "http" and not self.insecure:
            raise ImageError(f"registry {self.domain} wants credentials sent to a plain-http token realm "
                             f"{realm!r}; refusing (mark the registry insecure in registries.conf to allow it)")
        credential = self.credential
        if credential is not None and not self.realm_trusted(realm):
            # A registry can name any URL as its realm: the password goes only to the registry's
            # own origin or where the operator said. Elsewhere ask anonymously (public images
            # still pull) and say why a private one would not.
            if realm not in self.withheld:
                self.withheld.add(realm)
                _log().warning("registry %s names the token realm %s, which is not on its own host and port: "
                             "requesting a token there without the credentials of %r (to send them, add "
                             "%s=%s to $%s)", self.domain, realm, credential.username or "identity token",
                             self.domain, _origin_text(realm), ENV_TOKEN_REALMS)
            credential = None
        return credential

    def _request_token(self, realm: str, service: str, scope: str, credential: Credential | None):
        """The token service's JSON answer, with the retry policy of every registry request."""
        # Several scopes (a push that mounts from another repository) travel as repeated
        # ``scope`` parameters, as docker sends them.
        params = [("service", service)] if service else []
        params += [("scope", s) for s in scope.split()]
        if credential and credential.username and not scope:
            params.append(("account", credential.username))
        session = self._session()
        kw = dict(timeout=self._timeouts(), verify=self._verify(),
                  allow_redirects=False, proxies=self._proxies(realm))
        last: BaseException | None = None
        stalls = _Stalls(self, f"answering a token request at {realm}")
        for attempt in range(self.retries + 1):
            try:
                if credential and credential.identity_token:
                    form = {"grant_type": "refresh_token", "refresh_token": credential.identity_token,
                            "service": service, "client_id": "podplay", "access_type": "offline"}
                    if scope:
                        form["scope"] = scope
                    resp = session.post(realm, data=form, **kw)
                else:
                    auth = (credential.username, credential.password) if credential else None
                    resp = session.get(realm, params=params, auth=auth, **kw)
            except self._connection_errors() as exc:
                last = exc
                if self._is_stall(exc):
                    stalls.hit(exc)
                if attempt < self.retries:
                    self._sleep(attempt)
                continue
            with resp:
                self.token_requests += 1
                if resp.status_code in RETRY_STATUS:
                    last = ImageError(f"HTTP {resp.status_code}")
                    if attempt < self.retries:
                        self._sleep(attempt, resp.headers.get("Retry-After"))
                    continue
                if resp.status_code in (401, 403):
                    raise AuthenticationError(self._auth_failed_message())
                if resp.status_code != 200:
                    raise ImageError(f"token service of {self.domain} answered HTTP {resp.status_code}")
                try:
                    return resp.json()
                except (ValueError, *self._connection_errors()):
                    raise ImageError(f"token service of {self.domain} returned invalid JSON") from None
        raise TemporaryImageError(f"cannot reach the token service {realm} of {self.domain}: {_short(last)}")

    def realm_trusted(self, realm: str) -> bool:
        """Whether credentials may go to the token realm ``realm``: it is on the registry's own
        host and port (over https, or http for an insecure registry), or is listed for this
        registry (``$PODPLAY_TOKEN_REALMS``, and Docker Hub's and GitLab's known realms)."""
        theirs = _origin_of(realm)
        if theirs is None:
            return False
        own = _origin_of(self._base or f"https://{self.api_host}")
        if own is not None and theirs[1:] == own[1:] and (theirs[0] == "https" or self.insecure):
            return True
        return theirs in self.trusted_realms

    def _auth_failed_message(self) -> str:
        if self.credential is not None and self.withheld:
            realm = sorted(self.withheld)[0]
            return (f"registry {self.domain} refused an anonymous token: its token realm {realm} is not on the "
                    f"registry's own host and port, so the credentials of {self.credential.username!r} were not "
                    f"sent there; if that realm is the registry's, set {ENV_TOKEN_REALMS}="
                    f"\"{self.domain}={_origin_text(realm)}\"")
        if self.credential is None:
            return (f"registry {self.domain} requires authentication: run `podplay login {self.domain}` "
                    "or give the pod an imagePullSecret")
        who = self.credential.username or "identity token"
        return (f"registry {self.domain} refused the credentials of {who!r} (from {self.credential.source}): "
                "wrong username or password?")

    def check_login(self) -> None:
        """Verify the credential against the registry (what ``login`` does before saving)."""
        self.ping()
        c = self._challenge
        if c is None:
            return
        if self.credential is None:
            raise AuthenticationError(f"registry {self.domain} requires a username and password")
        if c.scheme == "bearer":
            realm = c.params.get("realm", "")
            if not self.realm_trusted(realm):
                raise AuthenticationError(
                    f"registry {self.domain} names the token realm {realm!r}, which is not on its own host and "
                    f"port: podplay does not send credentials there unless {ENV_TOKEN_REALMS} lists it (e.g. "
                    f"{ENV_TOKEN_REALMS}=\"{self.domain}={_origin_text(realm)}\")")
            self._token(c, "")
            return
        resp = self._request("GET", "/v2/", scope="")
        with resp:
            if resp.status_code != 200:
                raise AuthenticationError(self._auth_failed_message())

    # --- requests with retries ----------------------------------------------------------------

    def _request(self, method: str, path: str, *, scope: str, headers: dict | None = None,
                 stream: bool = True, data: bytes | None = None, stalls: _Stalls | None = None,
                 ) -> Response:
        """``path`` is below the registry's base URL, or an absolute URL the registry gave us (an
        upload location); credentials go only to the registry's own origin. ``stalls`` counts
        timeouts across calls (a blob's resumes), else this call counts its own."""
        self.ping()
        shown = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
        stalls = stalls or _Stalls(self, f"answering {method} {shown}")
        if path.startswith(("http://", "https://")):
            url = path
            own = (urlsplit(url).scheme, urlsplit(url).netloc) == self._origin()
        else:
            url, own = f"{self._base}{path}", True
        reauthed = False
        last: BaseException | None = None
        attempt = 0
        while attempt <= self.retries:
            h = dict(headers or {})
            if own:
                h.update(self._auth_header(scope))
            try:
                resp = self._send(method, url, h, stream=stream, data=data)
            except self._connection_errors() as exc:
                last = exc
                if self._is_stall(exc):
                    stalls.hit(exc)
                if attempt < self.retries:
                    self._sleep(attempt)
                attempt += 1
                continue
            if resp.status_code == 401 and not reauthed:
                # A first 401 (or an expired token): take the new challenge and try once more.
                reauthed = True
                challenge = self._pick_challenge(resp)
                resp.close()
                if challenge is None or (challenge == self._challenge and challenge.scheme == "basic"):
                    raise AuthenticationError(self._auth_failed_message())
                with self._lock:
                    self._challenge = challenge
                    self._tokens = {k: v for k, v in self._tokens.items() if k[2] != scope}
                continue
            if resp.status_code in RETRY_STATUS:
                last = ImageError(f"HTTP {resp.status_code} {resp.reason}")
                retry_after = resp.headers.get("Retry-After")
                resp.close()
                if attempt < self.retries:
                    self._sleep(attempt, retry_after)
                attempt += 1
                continue
            return resp
        raise TemporaryImageError(f"registry {self.domain}: {method} {shown} failed after "
                                  f"{self.retries + 1} tries: {_short(last)}")

    def _fail(self, resp: Response, what: str) -> ImageError:
        detail = _registry_message(resp)
        detail = f" ({detail})" if detail else ""
        status = resp.status_code
        resp.close()
        if status == 404:
            return ImageNotFoundError(f"{what}: not found{detail}")
        if status == 401:
            return AuthenticationError(self._auth_failed_message() + detail)
        if status == 403:
            return AuthenticationError(f"{what}: access denied by registry {self.domain}{detail}")
        return ImageError(f"{what}: registry {self.domain} answered HTTP {status}{detail}")

    # --- manifests ------------------------------------------------------------------------

    def get_manifest(self, repo: str, reference: str, *, accept: str = ACCEPT,
                     limit: int = MAX_MANIFEST_SIZE) -> FetchedManifest:
        """GET a manifest by tag or digest; verified against the digest when there is one."""
        by_digest = ":" in reference
        if by_digest:
            validate_digest(reference)
        what = f"manifest {self.domain}/{repo}{'@' if by_digest else ':'}{reference}"
        last: BaseException | None = None
        stalls = _Stalls(self, f"sending {what}")
        for attempt in range(self.retries + 1):
            resp = self._request("GET", f"/v2/{repo}/manifests/{reference}", scope=_pull_scope(repo),
                                 headers={"Accept": accept}, stalls=stalls)
            if resp.status_code != 200:
                raise self._fail(resp, what)
            try:
                data = _read_limited(resp, limit, what)
            except self._connection_errors() as exc:
                last = exc
                if self._is_stall(exc):
                    stalls.hit(exc)
                if attempt < self.retries:
                    self._sleep(attempt)
                continue
            finally:
                resp.close()
            content_type = resp.headers.get("Content-Type", "")
            algorithm = reference.split(":", 1)[0] if by_digest else "sha256"
            digest = f"{algorithm}:{sha.new(algorithm, data).hexdigest()}"
            if by_digest and digest != reference:
                raise ImageError(f"{what}: the registry sent content with digest {digest}; refusing it")
            claimed = resp.headers.get("Docker-Content-Digest", "")
            if claimed and claimed.split(":", 1)[0] in DIGEST_ALGORITHMS and claimed.split(":", 1)[0] == algorithm \
                    and claimed != digest:
                raise ImageError(f"{what}: the registry says its digest is {claimed} but the content has "
                                 f"digest {digest}; refusing it")
            return FetchedManifest(data, digest, content_type)
        raise TemporaryImageError(f"{what}: download interrupted: {_short(last)}")

    def head_manifest(self, repo: str, reference: str, *, accept: str = ACCEPT) -> str:
        """The digest the registry has for a tag, without downloading (falls back to GET when
        the registry omits Docker-Content-Digest)."""
        what = f"manifest {self.domain}/{repo}:{reference}"
        resp = self._request("HEAD", f"/v2/{repo}/manifests/{reference}", scope=_pull_scope(repo),
                             headers={"Accept": accept}, stream=False)
        with resp:
            if resp.status_code in (405, 501):  # a registry (or proxy) without HEAD: ask with GET
                return self.get_manifest(repo, reference, accept=accept).digest
            if resp.status_code != 200:
                raise self._fail(resp, what)
            digest = resp.headers.get("Docker-Content-Digest", "")
        if digest:
            try:
                return validate_digest(digest)
            except ImageError:
                pass
        return self.get_manifest(repo, reference, accept=accept).digest

    # --- blobs -----------------------------------------------------------------------------

    def get_blob_bytes(self, repo: str, desc: Descriptor, limit: int) -> bytes:
        """A small blob (a config) into memory, verified, without touching the store."""
        ingest = MemoryIngest(desc.digest, desc.size, limit)
        self.copy_blob(repo, desc, ingest)  # type: ignore[arg-type]
        return bytes(ingest.data)

    def copy_blob(self, repo: str, desc: Descriptor, ingest: Ingest,
                  progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``ingest`` (resuming what it holds) and commit it verified.

        A broken-off download resumes with a Range request only while the registry honours it
        (a 206 whose Content-Range starts where we are); a registry that answers a Range with
        the whole blob again, or with a range we did not ask for, gets at most
        ``MAX_FULL_RESTARTS`` downloads from byte 0 more. Whatever ends the copy other than
        ``progress`` raising (a cancellation: what was fetched stays for a later resume), the
        ingest is discarded: no partial download outlives a failure."""
        what = f"blob {desc.digest} of {self.domain}/{repo}"
        interrupted = False

        def advance(n: int) -> None:
            nonlocal interrupted
            if progress:
                try:
                    progress(n)
                except BaseException:
                    interrupted = True
                    raise

        stalls = _Stalls(self, f"sending blob {desc.digest} of {repo}")
        stalls.detail = lambda: f" ({ingest.offset} of {desc.size} bytes came)"
        if isinstance(progress, BlobFeed):
            def notice(exc: BaseException, count: int) -> None:
                quiet = (f"no connection within {self.connect_timeout:g}s" if self._connecting(exc)
                         else f"no data for {self._silence(exc):g}s")
                progress.retrying(ingest.offset, f"{quiet} from {self.domain}, trying again "
                                                 f"({count} of {self.stall_retries})")
            stalls.notice = notice
        try:
            self._copy_blob(repo, desc, ingest, advance, what, stalls)
        except BaseException:
            if not interrupted:
                ingest.discard()
            raise

    def _copy_blob(self, repo: str, desc: Descriptor, ingest: Ingest, advance: Callable[[int], None],
                   what: str, stalls: _Stalls) -> None:
        path = f"/v2/{repo}/blobs/{desc.digest}"
        failures = resumes = full = 0
        ranges = True  # until the registry shows that it does not honour Range
        last: BaseException | None = None
        while ingest.offset < desc.size or desc.size == 0:
            if ingest.offset and not ranges:
                ingest.reset()
            ranged = bool(ingest.offset)
            headers = {"Range": f"bytes={ingest.offset}-"} if ranged else {}
            resp = self._request("GET", path, scope=_pull_scope(repo), headers=headers, stalls=stalls)
            if resp.status_code == 206 and ranged and _content_range_matches(
                    resp.headers.get("Content-Range", ""), ingest.offset, desc.size):
                pass
            elif resp.status_code == 200:
                full += 1
                if ranged:  # the registry ignored the Range: this is a restart from byte 0
                    ranges = False
                    ingest.reset()
            elif resp.status_code in (206, 416) and ranged:
                # A range other than the one asked for, or "unsatisfiable" for a range inside
                # the blob: its ranges cannot be trusted; start over without them.
                resp.close()
                ranges = False
                continue
            else:
                raise self._fail(resp, what)
            before = ingest.offset
            last = None
            try:
                for chunk in _stream(resp, READ_CHUNK):
                    ingest.write(chunk)
                    stalls.moved(len(chunk))
                    advance(len(chunk))
            except self._connection_errors() as exc:
                last = exc
            finally:
                resp.close()
            if desc.size == 0 or ingest.offset >= desc.size:
                break
            if last is None:
                last = ImageError(f"connection closed after {ingest.offset} of {desc.size} bytes")
            elif self._is_stall(last):
                # A frozen registry: resume (or restart) a bounded number of times, then one
                # clear error; the generic failure budget below is for broken connections.
                stalls.hit(last)
                self._sleep(stalls.count - 1)
                if not ranges:
                    full -= 1  # counted as a stall, not as one of the restarts
                continue
            if not ranges:
                # Each try starts from byte 0 again: only their number bounds them.
                if full > MAX_FULL_RESTARTS:
                    raise ImageError(
                        f"{what}: the download broke off {full} times (the last time after {ingest.offset} of "
                        f"{desc.size} bytes: {_short(last)}) and the registry cannot resume it (it ignores Range "
                        f"requests), so every try started again from byte 0; gave up after "
                        f"{MAX_FULL_RESTARTS} restarts")
                self._sleep(full - 1)
                continue
            # Interrupted or short: resume from where we are. Progress resets the failure count,
            # so a flaky but moving download finishes; a stuck one gives up.
            if ingest.offset > before:
                failures = 0
            failures += 1
            resumes += 1
            if failures > self.retries or resumes > MAX_RESUMES:
                raise TemporaryImageError(f"{what}: download failed after {ingest.offset} of {desc.size} "
                                          f"bytes: {_short(last)}")
            self._sleep(failures - 1)
        ingest.commit()

    # --- tags --------------------------------------------------------------------------------

    def list_tags(self, repo: str) -> list[str]:
        import json

        tags: list[str] = []
        path = f"/v2/{repo}/tags/list?{urlencode({'n': 1000})}"
        total = 0
        for _ in range(1000):
            resp = self._request("GET", path, scope=_pull_scope(repo))
            if resp.status_code != 200:
                raise self._fail(resp, f"tags of {self.domain}/{repo}")
            try:
                data = _read_limited(resp, MAX_TAGS_BYTES - total, f"tags of {self.domain}/{repo}")
            finally:
                resp.close()
            total += len(data)
            try:
                doc = json.loads(data)
            except ValueError:
                raise ImageError(f"tags of {self.domain}/{repo}: invalid JSON") from None
            page = doc.get("tags") or [] if isinstance(doc, dict) else []
            tags += [t for t in page if isinstance(t, str)]
            link = resp.headers.get("Link", "")
            m = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link)
            if not m:
                break
            nxt = urlsplit(urljoin(f"{self._base}{path}", m.group(1)))
            path = nxt.path + (f"?{nxt.query}" if nxt.query else "")
        return tags


    # --- pushing -----------------------------------------------------------------------------
    # The OCI distribution spec's push: HEAD to see whether a blob is there, a cross-repository
    # mount when another repository of the registry has it, else an upload session (POST) filled
    # by PATCH chunks and closed by a PUT with the digest; the manifest last, by PUT.

    def blob_exists(self, repo: str, digest: str) -> bool:
        validate_digest(digest)
        resp = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=push_scope(repo), stream=False)
        with resp:
            if resp.status_code == 200:
                return True
            if resp.status_code == 404:
                return False
            raise self._fail(resp, f"blob {digest} of {self.domain}/{repo}")

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> str | None:
        """Ask the registry to link ``digest`` from ``from_repo`` into ``repo``. None when it did;
        else the location of the upload session the registry opened instead."""
        validate_digest(digest)
        query = urlencode({"mount": digest, "from": from_repo})
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/?{query}",
                             scope=f"{push_scope(repo)} {_pull_scope(from_repo)}", stream=False, data=b"")
        with resp:
            if resp.status_code == 201:
                return None
            if resp.status_code == 202:
                return self._location(resp, f"upload to {self.domain}/{repo}")
            raise self._fail(resp, f"mounting blob {digest} into {self.domain}/{repo}")

    def start_upload(self, repo: str) -> str:
        resp = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope=push_scope(repo), stream=False, data=b"")
        with resp:
            if resp.status_code != 202:
                raise self._fail(resp, f"starting an upload to {self.domain}/{repo}")
            return self._location(resp, f"upload to {self.domain}/{repo}")

    def upload_chunk(self, repo: str, location: str, data: bytes, start: int) -> str:
        """PATCH one chunk at offset ``start``; the location to use next."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                   "Content-Range": f"{start}-{start + len(data) - 1}"}
        resp = self._request("PATCH", location, scope=push_scope(repo), headers=headers, stream=False, data=data)
        with resp:
            if resp.status_code != 202:
                raise self._fail(resp, f"uploading to {self.domain}/{repo}")
            return self._location(resp, f"upload to {self.domain}/{repo}")

    def finish_upload(self, repo: str, location: str, digest: str, data: bytes = b"") -> None:
        """The closing PUT (with the last bytes, or all of them for a monolithic upload)."""
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}{urlencode({'digest': digest})}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        resp = self._request("PUT", url, scope=push_scope(repo), headers=headers, stream=False, data=data)
        with resp:
            if resp.status_code not in (201, 204):
                raise self._fail(resp, f"blob {digest} to {self.domain}/{repo}")
            claimed = resp.headers.get("Docker-Content-Digest", "")
            if claimed and claimed != digest:
                raise ImageError(f"blob {digest} to {self.domain}/{repo}: the registry stored it as {claimed}")

    def cancel_upload(self, repo: str, location: str) -> None:
        """Best effort: a registry forgets abandoned sessions by itself too."""
        with contextlib.suppress(ImageError):
            self._request("DELETE", location, scope=push_scope(repo), stream=False).close()

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest (or index) under a tag or its digest; returns its digest."""
        digest = "sha256:" + sha.sha256(data).hexdigest()
        what = f"manifest {self.domain}/{repo}:{reference}"
        resp = self._request("PUT", f"/v2/{repo}/manifests/{reference}", scope=push_scope(repo),
                             headers={"Content-Type": media_type}, stream=False, data=data)
        with resp:
            if resp.status_code not in (200, 201, 202):
                raise self._fail(resp, what)
            claimed = resp.headers.get("Docker-Content-Digest", "")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise ImageError(f"{what}: the registry stored it as {claimed}, not {digest}")
        return digest

    def delete_manifest(self, repo: str, digest: str) -> None:
        """DELETE a manifest by digest (a registry deletes by digest only; every tag naming it
        goes with it). The registry's refusal (deletes disabled: 405 UNSUPPORTED) is reported as
        it said it."""
        validate_digest(digest)
        what = f"manifest {self.domain}/{repo}@{digest}"
        resp = self._request("DELETE", f"/v2/{repo}/manifests/{digest}", scope=f"repository:{repo}:delete",
                             stream=False)
        with resp:
            if resp.status_code not in (200, 202):
                raise self._fail(resp, f"cannot delete {what}")

    def _location(self, resp: Response, what: str) -> str:
        location = resp.headers.get("Location", "")
        if not location:
            raise ImageError(f"{what}: the registry gave no upload location")
        url = urljoin(f"{self._base}/v2/", location)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ImageError(f"{what}: unsupported upload location {location!r}")
        return url


class BlobUpload(BlobWriter):
    """A blob on its way to a registry: chunks of ``chunk_size`` go out as PATCH requests as they
    come, the rest with the closing PUT, which is sent only after the content was verified
    here (the registry verifies the digest as well). Smaller blobs go in one PUT."""

    def __init__(self, client: RegistryClient, repo: str, desc: Descriptor, *, chunk_size: int,
                 location: str | None = None):
        super().__init__(desc.digest, desc.size, f"blob {desc.digest}")
        self.client, self.repo, self.chunk_size = client, repo, max(1, chunk_size)
        self.location = location
        self.buf = bytearray()
        self.sent = 0
        self.chunks = 0  # PATCH requests sent (for tests and diagnostics)

    def _put(self, chunk: bytes) -> None:
        self.buf += chunk
        # Keep at least one byte back: the closing PUT then always carries data.
        while len(self.buf) > self.chunk_size:
            if self.location is None:
                self.location = self.client.start_upload(self.repo)
            part = bytes(self.buf[: self.chunk_size])
            self.location = self.client.upload_chunk(self.repo, self.location, part, self.sent)
            del self.buf[: self.chunk_size]
            self.sent += len(part)
            self.chunks += 1

    def _truncate(self) -> None:
        if self.location is not None and self.sent:
            self.client.cancel_upload(self.repo, self.location)
            self.location = None
        self.buf = bytearray()
        self.sent = 0

    def _drop(self) -> None:
        self._truncate()
        if self.location is not None:
            self.client.cancel_upload(self.repo, self.location)
            self.location = None

    def _finish(self) -> None:
        if self.location is None:
            self.location = self.client.start_upload(self.repo)
        self.client.finish_upload(self.repo, self.location, self.digest, bytes(self.buf))
        self.buf = bytearray()


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, the port filled in; None for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def trusted_realms_from_env(domain: str) -> tuple[str, ...]:
    """The token realms ``$PODPLAY_TOKEN_REALMS`` lists for registry ``domain``: entries
    ``REGISTRY=REALM-URL`` separated by spaces or commas (only the realm's scheme, host and
    port count). podplay's own setting: registries.conf has no such key, and the containers
    tools send credentials to whatever realm a registry names."""
    out = []
    for entry in re.split(r"[\s,]+", os.environ.get(ENV_TOKEN_REALMS, "").strip()):
        if not entry:
            continue
        registry, sep, realm = entry.partition("=")
        if not sep or not registry or _origin_of(realm) is None:
            raise InputError(f"${ENV_TOKEN_REALMS}: {entry!r} is not REGISTRY=REALM-URL "
                             "(e.g. registry.example.com=https://auth.example.com)")
        if registry == domain:
            out.append(realm)
    return tuple(out)


def _pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _content_range_matches(value: str, offset: int, size: int) -> bool:
    """Whether a 206's ``Content-Range: bytes START-END/TOTAL`` is the rest of this blob from
    ``offset`` (TOTAL may be ``*``)."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        return False
    start, end, total = int(m.group(1)), int(m.group(2)), m.group(3)
    return start == offset and start <= end < size and total in ("*", str(size))


def _stream(resp: Response, amount: int = 1 << 20) -> Iterator[bytes]:
    # Raw bytes: a Content-Encoding must never change what we hash. ``read1`` returns what has
    # come (up to ``amount``) instead of waiting for all of it: on a slow link progress moves, and
    # a stall loses only what a read had not yet handed over.
    raw = resp.raw
    while True:
        chunk = raw.read1(amount, decode_content=False)
        if not chunk:
            return
        yield chunk


def _read_limited(resp: Response, limit: int, what: str) -> bytes:
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise ImageError(f"{what}: {length} bytes is more than the {limit} bytes allowed; refusing it")
    buf = bytearray()
    for chunk in _stream(resp):
        buf += chunk
        if len(buf) > limit:
            raise ImageError(f"{what}: more than the {limit} bytes allowed; refusing it")
    return bytes(buf)


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    text = str(exc)
    # The useful part may sit deep inside a long message.
    m = re.search(r"(\[SSL: [^\]]+\][^'\")]*|\[Errno [^\]]+\][^'\")]*|Connection refused|Read timed out|timed out|"
                  r"Connection aborted|Connection reset by peer|IncompleteRead\([^)]*\))", text)
    return m.group(1).strip() if m else (text[:200] or exc.__class__.__name__)
