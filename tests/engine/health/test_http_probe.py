"""The HTTP and TCP probes' semantics against a server on 127.0.0.1 (host namespace: the
netns switch itself is exercised by the host e2e tests): status ranges, redirects (followed on
the same host only), headers, HTTPS without verification, named ports, timeouts."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading

import pytest

from reconciler.drivers.fake import fake_drivers
from reconciler.health import Target, run_probe
from reconciler.model.kube import Container, ContainerPort, HTTPGetAction, HTTPHeader, Probe, TCPSocketAction


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        Handler.seen.append(dict(self.headers))
        routes = {"/ok": (200, {}), "/teapot": (418, {}), "/moved": (302, {"Location": "/ok"}),
                  "/away": (302, {"Location": "http://192.0.2.1:9/elsewhere"}), "/loop": (302, {"Location": "/loop"}),
                  "/broken-after": (301, {"Location": "/teapot"}), "/big": (200, {})}
        code, headers = routes.get(self.path, (404, {}))
        body = b"x" * (1 << 20) if self.path == "/big" else b"hi"
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the probe stops reading after its cap
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def probe_http(server_port: int, path: str, *, port=None, **kw) -> tuple[bool, str]:
    drivers = fake_drivers()
    drivers.probe = None  # the real prober
    spec = Container("app", "img", ports=(ContainerPort(server_port, name="web"),))
    target = Target("c1", "app", spec, netns="", pod_ip="127.0.0.1")
    action = HTTPGetAction(server_port if port is None else port, path, **kw)
    return run_probe(drivers, target, "readiness", Probe(http_get=action))


@pytest.mark.parametrize(("path", "ok", "message"), [
    ("/ok", True, "HTTP 200"),
    ("/teapot", False, "status 418"),
    ("/missing", False, "status 404"),
    ("/moved", True, "HTTP 200"),  # same host: followed
    ("/away", True, "not followed"),  # another host: the 302 itself counts, as the kubelet does
    ("/broken-after", False, "status 418"),
    ("/loop", False, "redirects"),
    ("/big", True, "HTTP 200"),
])
def test_http_probe_outcomes(server, path, ok, message):
    got_ok, got = probe_http(server, path)
    assert got_ok is ok and message in got, got


def test_http_probe_sends_headers_and_resolves_named_ports(server):
    Handler.seen.clear()
    ok, _ = probe_http(server, "/ok", port="web", http_headers=(HTTPHeader("X-Probe", "yes"),))
    assert ok
    assert Handler.seen[-1]["X-Probe"] == "yes" and Handler.seen[-1]["User-Agent"].startswith("kube-probe/")


def test_unknown_named_port_and_closed_port_fail_with_a_reason():
    ok, msg = probe_http(1, "/ok", port="nope")
    assert not ok and "not a named port" in msg
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    drivers = fake_drivers()
    drivers.probe = None
    target = Target("c1", "app", Container("app", "img"), pod_ip="127.0.0.1")
    ok, msg = run_probe(drivers, target, "liveness", Probe(tcp_socket=TCPSocketAction(closed)))
    assert not ok and "refused" in msg.lower()


def test_https_probe_does_not_verify_the_certificate(tmp_path):
    import ssl
    import subprocess

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=self-signed"], check=True, capture_output=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ok, msg = probe_http(srv.server_address[1], "/ok", scheme="HTTPS")
        assert ok, msg
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_server_that_never_answers_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)  # accepts the connection in the kernel, never answers
        ok, msg = probe_http(s.getsockname()[1], "/ok", scheme="HTTP")
    assert not ok and "timed out" in msg
