"""Parse manifest files in a short-lived child process, for a keeper that runs for months.

A watcher lives as long as the host; CPython gives little memory back to the system. Parsing and
schema-checking a file needs the YAML parser and jsonschema (several MB of modules and schemas)
and may, for a hostile or huge file, make a large heap. Done in a forked child, none of that
stays in the keeper: the child parses the files that changed, sends back the loaded objects
(pickled, over a pipe) and exits. It costs a fork and jsonschema's import (tens of ms) per batch
of changed files, never on a quiet pass.

If the child cannot do it (fork refused, the child killed), the files are parsed in the
keeper's own process: slower to give back memory, never wrong.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Sequence

from reconciler.manifests import FileLoad, load_file

Request = tuple[str, str | None]  # (path, text; None: read the file)


def load_in_process(requests: Sequence[Request]) -> list[FileLoad]:
    return [load_file(path, text) for path, text in requests]


def load_in_child(requests: Sequence[Request]) -> list[FileLoad]:
    if not requests:
        return []
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        return load_in_process(requests)
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return load_in_process(requests)
    if pid == 0:  # the child: parse, send, and leave without running any of the parent's clean-up
        code = 1
        try:
            os.close(r)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            data = memoryview(pickle.dumps(load_in_process(requests), protocol=pickle.HIGHEST_PROTOCOL))
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        return load_in_process(requests)
    return pickle.loads(b"".join(chunks))  # our own child's output: trusted
