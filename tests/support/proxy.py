"""A TCP proxy on 127.0.0.1 that can throttle, stall or freeze what a server sends: the link of an
edge device in front of the test registry.

* ``rate``                  — bytes per second, server to client, per connection (None: as fast as it goes).
* ``stall_after(n, times)`` — the next ``times`` connections that carry more than ``n`` bytes to
  the client stop forwarding there (both ways, the connection left open): a registry that went
  silent on one download.
* ``freeze_after(n)``       — once ``n`` more bytes went to clients, everything stops, for every
  connection old and new (new ones are still accepted, as a SIGSTOPped server's kernel does):
  a frozen registry. ``freeze()`` at once, ``thaw()`` lets everything move again.
* ``requests``              — the request heads clients sent (for asserting a Range resume).

Example::

    with TcpProxy(registry.port) as proxy:
        proxy.stall_after(64 << 10)
        pull(f"{proxy.host}/{repo}:latest")
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class _Conn:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client, self.server = client, server
        self.sent = 0  # bytes forwarded to the client
        self.stalled = False


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.rate: float | None = None
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._frozen = False
        self._freeze_at: int | None = None
        self._stalls_left = 0
        self._stall_bytes = 0
        self._sent = 0
        self._conns: list[_Conn] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self._spawn(self._accept)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- switches -------------------------------------------------------------------------------

    def stall_after(self, n: int, times: int = 1) -> None:
        with self._lock:
            self._stall_bytes, self._stalls_left = n, times

    def freeze_after(self, n: int) -> None:
        with self._lock:
            self._freeze_at = self._sent + n

    def freeze(self) -> None:
        with self._lock:
            self._frozen = True

    def thaw(self) -> None:
        with self._lock:
            self._frozen, self._freeze_at = False, None
            for c in self._conns:
                c.stalled = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def connections(self) -> int:
        """Connections accepted so far (a frozen proxy accepts them too)."""
        with self._lock:
            return len(self._conns)

    def stalled_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if c.stalled)

    # --- plumbing ---------------------------------------------------------------------------------

    def _spawn(self, target, *args) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            conn = _Conn(client, server)
            with self._lock:
                self._conns.append(conn)
            self._spawn(self._pump, conn, False)
            self._spawn(self._pump, conn, True)

    def _moving(self, conn: _Conn) -> bool:
        with self._lock:
            return not (self._frozen or conn.stalled)

    def _budget(self, conn: _Conn, want: int) -> int:
        """How much may go to the client now; 0 at a stall or freeze point, which it then
        enforces (called under the lock)."""
        if self._stalls_left > 0:
            if conn.sent >= self._stall_bytes:
                conn.stalled = True
                self._stalls_left -= 1
                return 0
            want = min(want, self._stall_bytes - conn.sent)
        if self._freeze_at is not None:
            if self._sent >= self._freeze_at:
                self._frozen = True
                return 0
            want = min(want, self._freeze_at - self._sent)
        return want

    def _pump(self, conn: _Conn, down: bool) -> None:
        src, dst = (conn.server, conn.client) if down else (conn.client, conn.server)
        try:
            while not self._closed:
                if not self._moving(conn):
                    time.sleep(0.05)
                    continue
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable:
                    continue
                want = 16 << 10
                if down:
                    with self._lock:
                        want = self._budget(conn, want)
                    if want == 0:
                        continue
                data = src.recv(want)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if not down:
                    with self._lock:
                        self.requests.append(data)
                if down and self.rate:
                    time.sleep(len(data) / self.rate)
                dst.sendall(data)
                if down:
                    with self._lock:
                        conn.sent += len(data)
                        self._sent += len(data)
        except OSError:
            return

    def range_requests(self) -> list[str]:
        """The Range headers clients sent."""
        with self._lock:
            heads = list(self.requests)
        out = []
        for head in heads:
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"range:"):
                    out.append(line.split(b":", 1)[1].strip().decode())
        return out

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            for s in (c.client, c.server):
                with contextlib.suppress(OSError):
                    s.close()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
