"""The gRPC probe (grpc.health.v1.Health/Check over cleartext HTTP/2) against a small health
server on 127.0.0.1 (host namespace; the pod's namespace is the host e2e test's): SERVING passes,
every other answer fails with the kubelet's words, and what is not a gRPC server fails cleanly."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from reconciler.drivers.fake import fake_drivers
from reconciler.health import Target, grpc_check, run_probe
from reconciler.model.kube import Container, GRPCAction, Probe
from tests.support.grpc_health import NOT_SERVING, SERVING, HealthServer


@pytest.fixture(scope="module")
def server():
    with HealthServer({"": SERVING, "db": NOT_SERVING, "cache": 0}) as srv:
        yield srv


def probe(port: int, service: str = "", timeout: int = 1) -> tuple[bool, str]:
    drivers = fake_drivers()
    drivers.probe = None  # the real prober
    target = Target("c1", "app", Container("app", "img"), netns="", pod_ip="127.0.0.1")
    return run_probe(drivers, target, "liveness", Probe(grpc=GRPCAction(port, service), timeout_seconds=timeout))


def test_serving_passes_and_the_service_name_is_sent(server):
    assert probe(server.port) == (True, "")
    assert server.calls[-1] == ""
    assert probe(server.port, "db") == (False, 'service unhealthy (responded with "NOT_SERVING")')
    assert server.calls[-1] == "db"


@pytest.mark.parametrize(("service", "message"), [
    ("cache", 'service unhealthy (responded with "UNKNOWN")'),  # a status left at its default
    ("nope", "health rpc failed with status 5: unknown service"),
])
def test_every_other_answer_fails(server, service, message):
    assert probe(server.port, service) == (False, message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_fails_with_the_address():
    port = _free_port()
    ok, message = probe(port)
    assert not ok and message.startswith(f'failed to connect service "127.0.0.1:{port}" within 1s')


def test_a_server_that_never_answers_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        ok, message = grpc_check("127.0.0.1", s.getsockname()[1], "", 0.3)
    assert (ok, message) == (False, "timeout: health rpc did not complete within 0.3s")


def test_an_http1_server_is_not_mistaken_for_a_grpc_one():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ok, message = grpc_check("127.0.0.1", srv.server_address[1], "", 2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert (ok, message) == (False, "the server closed the connection before answering")
