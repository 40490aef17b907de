"""The registry client's HTTP/1.1 transport, on the standard library's ``http.client``.

Why not ``requests``: importing it (with urllib3, charset_normalizer, idna, certifi and
http.cookiejar) costs about 100 ms, more than a whole pull of a small image from a nearby
registry, and the registry client uses none of what it adds: redirects are followed by hand
(credentials must not leave the origin), bodies are read raw (a Content-Encoding must never
change what is hashed), cookies and ``.netrc`` are not wanted.

What it does:

* keep-alive: a ``Session`` keeps idle connections per origin (scheme, host, port, proxy) and
  hands one to each request, so a pull opens one connection per concurrent download and reuses
  it for every manifest and blob after; a response returns its connection once its body was
  read (or, when small, drained on close). A connection the server closed while idle is noticed
  before use; a GET or HEAD that fails on a reused connection before any answer is sent once
  more on a new one (the server may have closed it just then).
* timeouts: the connection (and a proxy's CONNECT) must open within the connect timeout, the
  TLS handshake must end within it too (reported as a read timeout, as urllib3 does), and every
  later read gets the read timeout.
* TLS: verified with the system's authorities plus extra CA files, an optional client
  certificate; unverified for insecure registries (without loading any authority).
* proxies: ``http_proxy`` / ``https_proxy`` / ``no_proxy`` from the environment (CONNECT tunnels
  for https), as ``requests`` honoured them.

Errors are this module's ``ConnectionError`` family (``ConnectTimeout``, ``ReadTimeout``,
``SSLError``, ``ProtocolError``); their messages keep the phrases ``registry._short`` picks out.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode, urlsplit

from reconciler.errors import ImageError

DRAIN_LIMIT = 64 << 10  # a body this small is read to the end on close, to keep its connection
JSON_LIMIT = 4 << 20  # a token service's answer


class HTTPError(Exception):
    """Anything that went wrong on the wire."""


class ConnectionError(HTTPError):  # noqa: A001 - the name callers know from requests
    pass


class Timeout(ConnectionError):
    pass


class ConnectTimeout(Timeout):
    """The connection (or the proxy's tunnel) did not open within the connect timeout."""


class ReadTimeout(Timeout):
    """No byte came for the read timeout (or the TLS handshake took longer than the connect timeout)."""


class SSLError(ConnectionError):
    pass


class ProtocolError(ConnectionError):
    """The server broke off a response or sent something that is not HTTP."""


def _wire_error(exc: BaseException, what: str, read_timeout: float) -> HTTPError:
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, socket.timeout | TimeoutError):
        return ReadTimeout(f"{what}: Read timed out. (read timeout={read_timeout:g})")
    if isinstance(exc, ssl.SSLError):
        return SSLError(f"{what}: {exc}")
    if isinstance(exc, http.client.IncompleteRead):
        return ProtocolError(f"{what}: IncompleteRead({exc.partial and len(exc.partial)} bytes read, "
                             f"{exc.expected} more expected)")
    if isinstance(exc, http.client.HTTPException):
        return ProtocolError(f"{what}: Connection aborted ({exc.__class__.__name__}: {exc})")
    return ConnectionError(f"{what}: {exc}")


class _Connection(http.client.HTTPConnection):
    """One TCP (and TLS) connection, opened with our timeouts, maybe through a proxy."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None, connect_timeout: float,
                 read_timeout: float, proxy: tuple[str, int, str] | None = None):
        # With a proxy the socket goes to the proxy; ``host`` stays the origin for Host and TLS.
        super().__init__(proxy[0] if proxy else host, proxy[1] if proxy else port, timeout=connect_timeout)
        self.origin_host, self.origin_port = host, port
        self.tls, self.proxy = tls, proxy
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.reused = False

    def connect(self) -> None:
        where = f"{self.host}:{self.port}"
        try:
            # An ASCII name as bytes: a str goes through the idna codec (and stringprep), which
            # costs an import on every pull and changes nothing for an address or a plain name.
            host = self.host.encode() if self.host.isascii() else self.host
            sock = socket.create_connection((host, self.port), self.connect_timeout)
        except TimeoutError:
            raise ConnectTimeout(f"connection to {where} timed out. (connect timeout={self.connect_timeout:g})") \
                from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {where}: {exc}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.proxy is not None and self.tls is not None:
                self._tunnel_through(sock)
            if self.tls is not None:
                try:
                    # No SNI for an address when nothing is verified (saves the idna codec's import).
                    literal = self.origin_host.replace(".", "").isdigit() or ":" in self.origin_host
                    name = None if literal and not self.tls.check_hostname else self.origin_host
                    sock = self.tls.wrap_socket(sock, server_hostname=name)
                except TimeoutError:
                    raise ReadTimeout(f"TLS handshake with {self.origin_host}:{self.origin_port}: Read timed out. "
                                      f"(read timeout={self.connect_timeout:g})") from None
                except ssl.SSLError as exc:
                    raise SSLError(f"TLS handshake with {self.origin_host}:{self.origin_port}: {exc}") from None
                except OSError as exc:
                    raise ConnectionError(f"TLS handshake with {self.origin_host}:{self.origin_port}: {exc}") from None
            sock.settimeout(self.read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _tunnel_through(self, sock: socket.socket) -> None:
        target = f"{self.origin_host}:{self.origin_port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if self.proxy and self.proxy[2]:
            head += f"Proxy-Authorization: Basic {self.proxy[2]}\r\n"
        try:
            sock.sendall((head + "\r\n").encode("latin-1"))
            resp = http.client.HTTPResponse(sock, method="CONNECT")
            resp.begin()
        except TimeoutError:
            raise ConnectTimeout(f"proxy {self.host}:{self.port} did not open a tunnel to {target}. "
                                 f"(connect timeout={self.connect_timeout:g})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ConnectionError(f"proxy {self.host}:{self.port}: {exc}") from None
        if resp.status != 200:
            raise ConnectionError(f"proxy {self.host}:{self.port} refused a tunnel to {target}: "
                                  f"HTTP {resp.status} {resp.reason}")

    def idle_but_open(self) -> bool:
        """Whether a pooled connection can carry a request: open, and the server said nothing
        since (readable means closed, or junk we do not want)."""
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


class Response:
    """A response whose body is read on demand (``raw.read1`` / ``raw.read``, never decoded)."""

    def __init__(self, session: Session, key: tuple, conn: _Connection, resp: http.client.HTTPResponse, what: str):
        self._session, self._key, self._conn, self._resp, self._what = session, key, conn, resp, what
        self.status_code = resp.status
        self.reason = resp.reason
        self.headers = resp.msg  # case-insensitive ``get``
        self.raw = self
        self._broken = False
        self._read_timeout = conn.read_timeout

    # --- the body -------------------------------------------------------------------------

    def _guard(self, fn, *args) -> bytes:
        try:
            return fn(*args)
        except BaseException as exc:
            self._broken = True
            raise _wire_error(exc, self._what, self._read_timeout) from None

    def read1(self, amount: int = -1, decode_content: bool = False) -> bytes:
        data = self._guard(self._resp.read1, amount)
        if not data:
            self._ended(amount)
        return data

    def read(self, amount: int | None = None, decode_content: bool = False) -> bytes:
        data = self._guard(self._resp.read, amount)
        if amount is None or not data or self._complete():
            self._ended(amount if not data else None)
        return data

    def _ended(self, amount: int | None) -> None:
        # http.client hands out an empty read when the server closes before the Content-Length
        # it announced; that is a broken download, not the end of the body.
        left = self._resp.length
        if amount != 0 and left:
            self._broken = True
            self._release()
            raise ProtocolError(f"{self._what}: IncompleteRead(connection closed with {left} bytes "
                                f"of the body still to come)")
        self._release()

    def json(self, limit: int = JSON_LIMIT):
        import json

        data = self.read(limit + 1)
        if len(data) > limit:
            self._broken = True
            raise ValueError(f"{self._what}: a JSON answer of more than {limit} bytes")
        return json.loads(data)

    # --- the connection --------------------------------------------------------------------

    def _release(self) -> None:
        """The body was read to its end: the connection serves the next request (unless the
        server said it closes it, or something broke)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        reusable = not self._broken and self._complete() and not self._resp.will_close and conn.sock is not None
        self._resp.close()  # the response's file only: the connection's socket stays open
        if reusable:
            self._session._give_back(self._key, conn)
        else:
            conn.close()

    def _complete(self) -> bool:
        # http.client's read1 leaves the response open after the last byte of a Content-Length
        # body; a chunked body is closed after its last chunk.
        return self._resp.isclosed() or (self._resp.length == 0 and not self._resp.chunked)

    def close(self) -> None:
        if self._conn is None:
            return
        if not self._broken and not self._complete():
            # A small rest (an error document, a 401's body) is read so that the connection
            # stays usable; a large one (an abandoned blob) costs less as a new connection.
            length = self._resp.length
            if length is not None and length <= DRAIN_LIMIT and not self._resp.chunked:
                try:
                    self._resp.read()
                except Exception:  # noqa: BLE001 - the connection just goes
                    self._broken = True
            else:
                self._broken = True
        self._release()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Session:
    """Keep-alive connections for one registry client, shared by its threads."""

    def __init__(self, *, headers: Mapping[str, str] | None = None, ca_files: Sequence[str] = (),
                 client_cert: tuple[str, str] | None = None):
        self.headers = dict(headers or {})
        self.ca_files, self.client_cert = tuple(ca_files), client_cert
        self._idle: dict[tuple, list[_Connection]] = {}
        self._lock = threading.Lock()
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.connections_opened = 0  # for tests and diagnostics

    # --- TLS ---------------------------------------------------------------------------------

    def _context(self, verify: bool) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(verify)
        if ctx is not None:
            return ctx
        if verify:
            ctx = ssl.create_default_context()
            for ca in self.ca_files:
                try:
                    ctx.load_verify_locations(cafile=ca)
                except (OSError, ssl.SSLError) as exc:
                    raise ImageError(f"cannot load certificate authority {ca}: {exc}") from None
        else:
            # Insecure registries: no verification, so no authorities to load (that costs tens of ms).
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        if self.client_cert:
            try:
                ctx.load_cert_chain(*self.client_cert)
            except (OSError, ssl.SSLError) as exc:
                raise ImageError(f"cannot load client certificate {self.client_cert[0]} "
                                 f"(key {self.client_cert[1]}): {exc}") from None
        with self._lock:
            self._contexts[verify] = ctx
        return ctx

    # --- the pool ----------------------------------------------------------------------------

    def _take(self, key: tuple) -> _Connection | None:
        with self._lock:
            idle = self._idle.get(key) or []
            while idle:
                conn = idle.pop()
                if conn.idle_but_open():
                    conn.reused = True
                    return conn
                conn.close()
        return None

    def _give_back(self, key: tuple, conn: _Connection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def close(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()

    # --- requests ----------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, data=None,
                params=None, auth: tuple[str, str] | None = None, timeout: tuple[float, float] = (15.0, 30.0),
                verify: bool = True, proxies: Mapping[str, str] | None = None, stream: bool = True,
                allow_redirects: bool = False) -> Response:
        """One request; redirects are never followed (the caller decides where credentials go)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionError(f"unsupported URL {url!r}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = parts.path or "/"
        query = parts.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target += f"?{query}"
        h = {**self.headers, **(headers or {})}
        if auth is not None:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if isinstance(data, Mapping):
            data = urlencode(data).encode()
            h.setdefault("Content-Type", "application/x-www-form-urlencoded")
        proxy = _proxy_for(parts.scheme, host, proxies)
        if proxy is not None and parts.scheme == "http":
            target = url if not params else f"{url.split('?', 1)[0]}?{query}"  # absolute form to a plain proxy
            if proxy[2]:
                h["Proxy-Authorization"] = f"Basic {proxy[2]}"
        h.setdefault("Host", parts.netloc.rsplit("@", 1)[-1])
        tls = self._context(verify) if parts.scheme == "https" else None
        key = (parts.scheme, host, port, proxy, verify, timeout)
        what = f"{method} {parts.scheme}://{parts.netloc}{parts.path}"
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = _Connection(host, port, tls=tls, connect_timeout=timeout[0], read_timeout=timeout[1],
                                   proxy=proxy)
                conn.connect()
                with self._lock:
                    self.connections_opened += 1
            try:
                conn.request(method, target, body=data, headers=h)
                resp = conn.getresponse()
            except BaseException as exc:
                conn.close()
                if reused and method in ("GET", "HEAD") and isinstance(
                        exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                        | ConnectionAbortedError):
                    continue  # the server closed the idle connection just then: once more, on a new one
                raise _wire_error(exc, what, timeout[1]) from None
            return Response(self, key, conn, resp, what)

    def get(self, url: str, **kw) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, data=None, **kw) -> Response:
        return self.request("POST", url, data=data, **kw)


def environ_proxies(url: str) -> dict[str, str]:
    """The proxies the environment names for ``url`` (``http_proxy``, ``https_proxy``,
    ``all_proxy``, honouring ``no_proxy``), as ``requests`` read them."""
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        return {}
    import urllib.request

    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass_environment(host):
        return {}
    return {k: v for k, v in urllib.request.getproxies_environment().items() if k in ("http", "https", "all")}


def _proxy_for(scheme: str, host: str, proxies: Mapping[str, str] | None) -> tuple[str, int, str] | None:
    """(proxy host, port, base64 user:password or "") for a request to ``scheme``."""
    if not proxies:
        return None
    url = proxies.get(scheme) or proxies.get("all")
    if not url:
        return None
    if "://" not in url:
        url = f"http://{url}"
    p = urlsplit(url)
    if p.scheme != "http" or not p.hostname:
        raise ConnectionError(f"unsupported proxy {url!r} (only http:// proxies are)")
    from urllib.parse import unquote

    userinfo = ""
    if p.username is not None:
        userinfo = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
    return p.hostname, p.port or 80, userinfo
