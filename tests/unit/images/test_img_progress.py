"""Pull progress is drawn for terminals: one line per layer, redrawn in place."""

from __future__ import annotations

import io

from reconciler.images.progress import TerminalProgress


def test_terminal_progress_lines():
    out = io.StringIO()
    p = TerminalProgress(out, interval=0)
    p.begin("quay.io/a/b:c")
    p.blob_queued("sha256:" + "a" * 64, 2048, present=True)
    p.blob_queued("sha256:" + "b" * 64, 4 << 20, present=False)
    p.blob_start("sha256:" + "b" * 64, 4 << 20)
    p.blob_advance("sha256:" + "b" * 64, 2 << 20)
    text = out.getvalue()
    assert text.startswith("Pulling quay.io/a/b:c\n")
    assert "aaaaaaaaaaaa: exists 2.0KiB" in text
    assert "bbbbbbbbbbbb: [" in text and "2.0MiB/4.0MiB" in text
    p.blob_done("sha256:" + "b" * 64)
    p.end()
    last = out.getvalue().rsplit("\x1b[2A", 1)[-1]  # the final redraw of both lines
    assert "bbbbbbbbbbbb: done 4.0MiB" in last
