"""The registry client's HTTP transport (``reconciler.images.httpconn``) against a scripted
server on 127.0.0.1: connections are kept and reused, a connection the server dropped while
idle is replaced without the caller noticing, an abandoned large body is not reused, the
timeouts say which one struck, and proxies are used as the environment names them (https
through a CONNECT tunnel)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading

import pytest

from reconciler.images import httpconn


class Server:
    """Answers each request on a connection with ``reply(path)`` (a full HTTP response as bytes,
    or None to say nothing); records (connection number, request line). ``close_after`` closes
    each connection after that many responses."""

    def __init__(self, reply, close_after: int | None = None):
        self.reply, self.close_after = reply, close_after
        self.seen: list[tuple[int, str]] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, self.connections), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int):
        buf = b""
        answered = 0
        with sock:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                self.seen.append((number, line))
                answer = self.reply(line.split()[1])
                if answer is None:
                    threading.Event().wait(30)  # silent: the client's read timeout strikes
                    return
                try:
                    sock.sendall(answer)
                except OSError:
                    return
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    return

    def close(self):
        self.listener.close()
        for s in self._socks:
            s.close()


def ok(body: bytes = b"hello") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
def serve():
    servers = []

    def make(reply, **kw):
        s = Server(reply, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _get(session, url, **kw):
    with session.get(url, timeout=(5, 5), **kw) as resp:
        return resp.status_code, resp.raw.read()


def test_requests_in_turn_share_one_kept_connection(serve):
    srv = serve(lambda path: ok(path.encode()))
    session = httpconn.Session()
    assert [_get(session, f"{srv.url}/{i}") for i in range(4)] == [(200, f"/{i}".encode()) for i in range(4)]
    assert srv.connections == 1 and session.connections_opened == 1
    session.close()


def test_a_small_unread_body_is_drained_and_the_connection_kept(serve):
    srv = serve(lambda path: b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
    session = httpconn.Session()
    for _ in range(3):
        with session.get(f"{srv.url}/x", timeout=(5, 5)) as resp:
            assert resp.status_code == 404  # body never read
    assert srv.connections == 1


def test_an_abandoned_large_body_costs_its_connection_not_a_wrong_answer(serve):
    big = b"x" * (httpconn.DRAIN_LIMIT * 4)
    srv = serve(lambda path: ok(big) if path == "/big" else ok(b"small"))
    session = httpconn.Session()
    with session.get(f"{srv.url}/big", timeout=(5, 5)) as resp:
        assert resp.raw.read1(10) == b"x" * 10  # then given up
    assert _get(session, f"{srv.url}/small") == (200, b"small")
    assert srv.connections == 2


def test_a_connection_the_server_dropped_while_idle_is_replaced(serve):
    srv = serve(lambda path: ok(path.encode()), close_after=1)  # keep-alive promised, then closed
    session = httpconn.Session()
    assert [_get(session, f"{srv.url}/{i}") for i in range(3)] == [(200, f"/{i}".encode()) for i in range(3)]
    assert srv.connections == 3


def test_a_server_that_says_close_is_not_asked_again_on_that_connection(serve):
    srv = serve(lambda path: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    session = httpconn.Session()
    assert [_get(session, f"{srv.url}/a") for _ in range(2)] == [(200, b"ok"), (200, b"ok")]
    assert srv.connections == 2


def test_threads_never_share_a_connection_at_once(serve):
    srv = serve(lambda path: ok(path.encode() * 1000))
    session = httpconn.Session()
    results, errors = [], []

    def work(n):
        try:
            for i in range(5):
                results.append(_get(session, f"{srv.url}/{n}-{i}")[1] == f"/{n}-{i}".encode() * 1000)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [True] * 15
    assert srv.connections <= 3 < len(srv.seen)


def test_silence_is_a_read_timeout_that_names_its_length(serve):
    srv = serve(lambda path: None)
    session = httpconn.Session()
    with pytest.raises(httpconn.ReadTimeout, match=r"read timeout=0\.3"):
        session.get(f"{srv.url}/v2/", timeout=(5, 0.3))


def test_a_body_cut_short_is_a_protocol_error_and_the_connection_goes(serve):
    srv = serve(lambda path: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close_after=1)
    session = httpconn.Session()
    with session.get(f"{srv.url}/blob", timeout=(5, 5)) as resp, \
            pytest.raises(httpconn.ProtocolError, match="IncompleteRead"):
        while resp.raw.read1(65536):
            pass
    assert session._idle == {} or all(not v for v in session._idle.values())


def test_a_refused_connection_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # a port nobody listens on
        port = s.getsockname()[1]
    with pytest.raises(httpconn.ConnectionError, match="Connection refused"):
        httpconn.Session().get(f"http://127.0.0.1:{port}/", timeout=(5, 5))


def test_https_to_a_plain_http_server_is_a_tls_error():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer():
            sock, _ = listener.accept()
            with sock:
                sock.recv(4096)  # a TLS ClientHello, answered as a plain-http server does
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(httpconn.SSLError):
            httpconn.Session().get(f"https://127.0.0.1:{listener.getsockname()[1]}/v2/", timeout=(5, 5),
                                   verify=False)


def test_proxies_come_from_the_environment_and_honour_no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert httpconn.environ_proxies("https://registry.example.com/v2/") == {}
    monkeypatch.setenv("https_proxy", "http://user:pw@proxy.example:3128")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert httpconn.environ_proxies("https://registry.example.com/v2/") == {"https": "http://user:pw@proxy.example:3128"}
    assert httpconn.environ_proxies("https://registry.internal.example/v2/") == {}
    assert httpconn._proxy_for("https", "registry.example.com", {"https": "http://user:pw@proxy.example:3128"}) \
        == ("proxy.example", 3128, "dXNlcjpwdw==")


def test_requests_go_through_a_plain_proxy_in_absolute_form(serve):
    proxy = serve(lambda path: ok(path.encode()))
    session = httpconn.Session()
    with session.get("http://registry.example:5000/v2/?n=1", timeout=(5, 5), proxies={"http": proxy.url}) as resp:
        assert resp.raw.read() == b"http://registry.example:5000/v2/?n=1"


def _relay(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_https_goes_through_a_connect_tunnel_of_the_proxy(tmp_path):
    # A TLS server (a throwaway self-signed certificate, not verified: verify=False) behind a
    # CONNECT proxy that alone knows where "registry.example" is.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=registry.example",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls_listener = socket.create_server(("127.0.0.1", 0))
    proxy_listener = socket.create_server(("127.0.0.1", 0))
    heads = []

    def tls_server():
        sock, _ = tls_listener.accept()
        with ctx.wrap_socket(sock, server_side=True) as s:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += s.recv(4096)
            heads.append(buf.split(b"\r\n\r\n")[0].decode())
            s.sendall(ok(b"through the tunnel"))

    def proxy():
        client, _ = proxy_listener.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += client.recv(4096)
        heads.append(buf.split(b"\r\n\r\n")[0].decode())
        upstream = socket.create_connection(("127.0.0.1", tls_listener.getsockname()[1]))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=_relay, args=(upstream, client), daemon=True).start()
        _relay(client, upstream)

    for fn in (tls_server, proxy):
        threading.Thread(target=fn, daemon=True).start()
    try:
        port = tls_listener.getsockname()[1]
        proxy_url = f"http://user:pw@127.0.0.1:{proxy_listener.getsockname()[1]}"
        with httpconn.Session().get(f"https://registry.example:{port}/v2/", timeout=(5, 5), verify=False,
                                    proxies={"https": proxy_url}) as resp:
            assert resp.raw.read() == b"through the tunnel"
        connect, request = heads
        assert connect.startswith(f"CONNECT registry.example:{port} HTTP/1.1\r\n")
        assert "Proxy-Authorization: Basic dXNlcjpwdw==" in connect
        assert request.startswith("GET /v2/ HTTP/1.1\r\n") and "Proxy-Authorization" not in request
    finally:
        tls_listener.close()
        proxy_listener.close()


def test_an_unreadable_certificate_authority_is_a_clear_error(tmp_path):
    from reconciler.errors import ImageError

    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    with pytest.raises(ImageError, match=f"cannot load certificate authority {bad}"):
        httpconn.Session(ca_files=[str(bad)]).get("https://127.0.0.1:1/v2/", timeout=(5, 5))
