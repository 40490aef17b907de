"""A small gRPC health server (grpc.health.v1.Health/Check over cleartext HTTP/2) for tests.

Made with ``h2``, the library podplay's probe uses, but from the server side: it answers each
Check with the status set for the requested service (``statuses``; a service not in it gets
grpc-status 5 NOT_FOUND, as the reference server does). ``netns`` binds it inside a network
namespace (a pod's), so a probe's traffic never leaves the test's namespaces.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

SERVING, NOT_SERVING = 1, 2


class HealthServer:
    def __init__(self, statuses: dict[str, int], *, host: str = "127.0.0.1", port: int = 0, netns: str = ""):
        self.statuses = dict(statuses)
        self.calls: list[str] = []  # the services asked about, in order
        bound: list[socket.socket | BaseException] = []

        def bind() -> None:  # on a thread of its own: setns switches only that thread
            try:
                if netns:
                    from reconciler.health import _setns

                    _setns(netns)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(8)
                bound.append(s)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                bound.append(exc)

        t = threading.Thread(target=bind)
        t.start()
        t.join()
        if isinstance(bound[0], BaseException):
            raise bound[0]
        self.sock: socket.socket = bound[0]
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False,
                                                                           header_encoding="utf-8"))
        conn.initiate_connection()
        bodies: dict[int, bytearray] = {}
        with contextlib.suppress(OSError, h2.exceptions.H2Error), client:
            client.sendall(conn.data_to_send())
            while True:
                data = client.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        bodies[ev.stream_id] = bytearray()
                    elif isinstance(ev, h2.events.DataReceived):
                        bodies.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        self._answer(conn, ev.stream_id, bytes(bodies.pop(ev.stream_id, b"")))
                client.sendall(conn.data_to_send())

    def _answer(self, conn, sid: int, body: bytes) -> None:
        msg = body[5:]
        service = msg[2:2 + msg[1]].decode() if len(msg) >= 2 and msg[0] == 0x0A else ""
        self.calls.append(service)
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        if service not in self.statuses:
            conn.send_headers(sid, [("grpc-status", "5"), ("grpc-message", "unknown service")], end_stream=True)
            return
        reply = b"\x08" + bytes([self.statuses[service]])
        conn.send_data(sid, b"\x00" + struct.pack(">I", len(reply)) + reply)
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
