"""Multi-stage builds (COPY --from, --target, only the stages needed) and the layer cache."""

from __future__ import annotations

import tarfile

import pytest

from reconciler.build.builder import BuildOptions, build_image
from reconciler.build.parse import BuildError
from tests.host.build.conftest import image_tree
from tests.host.build.test_build_config_copy import make_context

MULTI = """\
FROM localhost/busybox AS builder
ARG MSG=built
RUN mkdir -p /out && echo $MSG > /out/artifact && ln -s artifact /out/link
FROM localhost/busybox AS unused
RUN echo this stage is not needed && exit 1
FROM scratch AS final
COPY --from=builder /out /app/
COPY --from=0 /bin/busybox /bin/
COPY --from=localhost/busybox /etc/passwd /etc/passwd
COPY a.txt /
CMD ["/bin/busybox", "cat", "/app/artifact"]
"""


def build(store, ctx, **kw):
    logs: list[str] = []
    result = build_image(store, BuildOptions(context=str(ctx), **kw), log=logs.append)
    return result, logs


def test_multi_stage_copy_from_builds_only_needed_stages(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a.txt": "A"}, MULTI)
    result, logs = build(store, ctx, tags=["multi"])
    doc, tree = image_tree(store, "multi")
    assert tree["app/artifact"].data == b"built\n"
    assert tree["app/link"].type == tarfile.SYMTYPE and tree["app/link"].linkname == "artifact"
    assert tree["bin/busybox"].data[:4] == b"\x7fELF" and tree["bin/busybox"].mode == 0o755
    assert tree["etc/passwd"].data.startswith(b"root:")
    assert tree["a.txt"].data == b"A"
    assert not any("not needed" in line for line in logs)
    assert doc["config"]["Cmd"] == ["/bin/busybox", "cat", "/app/artifact"]
    assert len(doc["rootfs"]["diff_ids"]) == 4


def test_target_stops_at_the_named_stage(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a.txt": "A"}, MULTI)
    build(store, ctx, tags=["b"], target="builder")
    _, tree = image_tree(store, "b")
    assert tree["out/artifact"].data == b"built\n" and "bin/busybox" in tree and "a.txt" not in tree


def test_unchanged_rebuild_runs_nothing_and_a_change_rebuilds_from_there(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a.txt": "A"}, MULTI)
    first, _ = build(store, ctx, tags=["c"], timestamp=1_700_000_000)
    second, logs = build(store, ctx, tags=["c"], timestamp=1_700_000_000)
    assert sum("Using cache" in line for line in logs) == 5  # the RUN and the four COPYs
    assert second.image_id == first.image_id  # same timestamp, same layers: the same image
    (ctx / "a.txt").write_text("changed")
    third, logs = build(store, ctx, tags=["c"], timestamp=1_700_000_000)
    assert sum("Using cache" in line for line in logs) == 4  # only COPY a.txt was redone
    _, tree = image_tree(store, "c")
    assert tree["a.txt"].data == b"changed"
    # A build arg the RUN sees changes its key; --no-cache runs everything again.
    _, logs = build(store, ctx, tags=["c"], build_args={"MSG": "other"})
    assert not any("Using cache" in line for line in logs[:3])
    _, tree = image_tree(store, "c")
    assert tree["app/artifact"].data == b"other\n"
    _, logs = build(store, ctx, tags=["c"], no_cache=True)
    assert not any("Using cache" in line for line in logs)


def test_copy_from_a_later_stage_is_refused(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM scratch AS one\nCOPY --from=two /x /x\nFROM scratch AS two\n")
    with pytest.raises(BuildError, match=r"Containerfile:2: COPY: --from=two: a stage can copy only from an "
                                         "earlier stage"):
        build(store, ctx, target="one")
