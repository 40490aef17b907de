"""Do a piece of heavy work in a short-lived forked child, for a process that runs for months.

CPython gives little memory back to the system, and a module once imported stays. A keeper
(`podplay watch`, `podplay sync`) now and then does work that needs large libraries or makes a
large heap: parsing changed manifests (YAML, jsonschema), pulling an image (requests, TLS,
OpenSSL), unpacking a layer. Done in a forked child, none of that stays in the keeper: the child
calls the function, sends back its result or its exception (pickled, over a pipe) and exits.
The cost is a fork (a few ms) on work that takes tens of ms to seconds.

The child starts from a copy of the caller: it uses only what the function reaches, writes only
to the pipe, and leaves with ``os._exit`` so that none of the parent's clean-up runs twice.
If the child cannot do the work (fork refused, the child killed before it answered), the work
is done in this process: slower to give memory back, never wrong.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Callable
from typing import TypeVar

from reconciler.errors import PodplayError

T = TypeVar("T")


def call(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)``, run in a forked child: its return value, or its exception raised here."""
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        return fn(*args, **kwargs)
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return fn(*args, **kwargs)
    if pid == 0:
        _child(w, r, fn, args, kwargs)  # never returns
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        ok, value = pickle.loads(b"".join(chunks))  # our own child's output: trusted
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError):  # the child died before it answered
        return fn(*args, **kwargs)
    if ok:
        return value
    raise value


def _child(w: int, r: int, fn, args, kwargs) -> None:
    code = 1
    try:
        os.close(r)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        try:
            answer = (True, fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as it was
            answer = (False, exc)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            if not answer[0]:
                pickle.loads(data)  # an exception that cannot be rebuilt over there goes back as words
        except Exception as exc:  # noqa: BLE001
            what = f"{type(answer[1]).__name__}: {answer[1]}" if not answer[0] else f"its result ({exc})"
            data = pickle.dumps((False, ChildError(f"{getattr(fn, '__qualname__', fn)} in a child process: {what}")))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
        code = 0
    finally:
        os._exit(code)


class ChildError(PodplayError):
    """What the child raised or returned could not be sent back; this carries it in words."""
