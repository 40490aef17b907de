"""Parse manifest files in a short-lived child process, for a keeper that runs for months.

A watcher lives as long as the host; CPython gives little memory back to the system. Parsing and
schema-checking a file needs the YAML parser and jsonschema (several MB of modules and schemas)
and may, for a hostile or huge file, make a large heap. Done in a forked child, none of that
stays in the keeper: the child parses the files that changed, sends back the loaded objects
(pickled, over a pipe; see ``reconciler.forked``) and exits. It costs a fork and jsonschema's
import (tens of ms) per batch of changed files, never on a quiet pass.

If the child cannot do it (fork refused, the child killed), the files are parsed in the
keeper's own process: slower to give back memory, never wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler import forked
from reconciler.manifests import FileLoad, load_file

Request = tuple[str, str | None]  # (path, text; None: read the file)


def load_in_process(requests: Sequence[Request]) -> list[FileLoad]:
    return [load_file(path, text) for path, text in requests]


def load_in_child(requests: Sequence[Request]) -> list[FileLoad]:
    if not requests:
        return []
    return forked.call(load_in_process, requests)
