"""The build's layer cache: (the stage so far, the instruction, its inputs) → a layer blob.

A key hashes the stage's layers (diff_ids), its config and ARGs (RUN sees them), the expanded
instruction, and for COPY/ADD every copied entry's path, type, mode, owner, link target and
content digest (not its mtime, as Docker's cache does not). A hit is used only while the layer's
blob is still in the content store; entries are small JSON files written atomically, so a
crash leaves an old entry or none. ``--no-cache`` skips lookups but still records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from reconciler.build.layer import Entry, WrittenLayer

CHUNK = 1 << 20


def content_digest(entries: Iterable[Entry]) -> str:
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        h.update(json.dumps([e.path, e.type.decode(), e.mode, e.uid, e.gid, e.linkname, e.devmajor, e.devminor,
                             sorted(e.xattrs.items())]).encode())
        if e.data is not None:
            h.update(hashlib.sha256(e.data).digest())
        elif e.opener is not None:
            fh = hashlib.sha256()
            with e.opener() as f:  # type: ignore[operator]
                while chunk := f.read(CHUNK):
                    fh.update(chunk)
            h.update(fh.digest())
    return h.hexdigest()


class LayerCache:
    def __init__(self, store, directory: Path, *, enabled: bool = True, salt: str = ""):
        self.store, self.dir, self.enabled, self.salt = store, directory, enabled, salt

    def key(self, state, instruction: list[str], inputs: str = "") -> str:
        parent = {"diff_ids": state.doc.get("rootfs", {}).get("diff_ids", []), "config": state.config,
                  "args": state.args, "platform": [state.doc.get("os"), state.doc.get("architecture")]}
        doc = json.dumps([parent, instruction, inputs, self.salt], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode()).hexdigest()

    def get(self, key: str) -> tuple[WrittenLayer, str] | None:
        """(the layer, the history text it was made with), or None."""
        if not self.enabled:
            return None
        try:
            doc = json.loads((self.dir / f"{key}.json").read_text())
            layer = WrittenLayer(doc["diff_id"], doc["digest"], int(doc["size"]), doc["media_type"])
            text = str(doc.get("created_by", ""))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (layer, text) if self.store.store.has_blob(layer.digest) else None

    def put(self, key: str, layer: WrittenLayer, created_by: str = "") -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.dir / f".{key}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps({"diff_id": layer.diff_id, "digest": layer.digest, "size": layer.size,
                                       "media_type": layer.media_type, "created_by": created_by}))
            os.replace(tmp, self.dir / f"{key}.json")
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
