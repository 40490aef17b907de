"""The same context built by podplay and by ``buildah bud``: the same files, modes, owners, link
targets and contents, and the same config, except buildah's own label and timestamps.

buildah gets its own root (vfs driver, no mounts) and the base image from podplay's store
through an OCI layout, so both start from the very same layers. What buildah's RUN leaves that
is not the Containerfile's doing is named and left out of the comparison: the mount points its
runtime made (/dev, /proc, /sys, /run) and the empty /etc/hosts, /etc/hostname and
/etc/resolv.conf it bind-mounted over (podplay's RUN mounts nothing into /etc and leaves out
the empty mount points runc had to make).
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from reconciler.build.builder import BuildOptions, build_image
from reconciler.images.transports import copy_image
from tests.host.build.conftest import apply_layer, image_tree
from tests.host.build.test_build_config_copy import make_context
from tests.support.images import _tool_env

BUILDAH_RUN_ARTEFACTS = {"dev", "proc", "sys", "run", "etc/hosts", "etc/hostname", "etc/resolv.conf"}
BUILDAH_LABELS = {"io.buildah.version"}


@pytest.fixture
def buildah(store, tmp_path):
    # Letters and digits only: buildah makes an image name from an oci: path (no '_' at the end).
    work = Path(f"/tmp/pp-bud-{uuid.uuid4().hex[:12]}")
    work.mkdir()
    base = ["buildah", "--root", str(work / "root"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]

    def run(*args: str) -> str:
        res = subprocess.run([*base, *args], capture_output=True, text=True, env=_tool_env())
        if res.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)}: {res.stderr}")
        return res.stdout.strip()

    copy_image(store, "podplay:localhost/busybox:latest", f"oci:{work / 'base'}:busybox")
    image = run("pull", "-q", f"oci:{work / 'base'}:busybox")
    run("tag", image, "localhost/busybox:latest")

    def bud(ctx: Path, *extra: str) -> tuple[dict, dict]:
        run("bud", "-q", "--layers", *extra, "-t", "localhost/out", str(ctx))
        run("push", "-q", "localhost/out", f"oci:{work / 'out'}:out")
        layout = work / "out"
        index = json.loads((layout / "index.json").read_text())

        def blob(digest: str) -> Path:
            return layout / "blobs" / "sha256" / digest.split(":")[1]

        manifest = json.loads(blob(index["manifests"][-1]["digest"]).read_text())
        config = json.loads(blob(manifest["config"]["digest"]).read_text())
        tree: dict = {}
        for layer in manifest["layers"]:
            tree = apply_layer(tree, open(blob(layer["digest"]), "rb"))  # noqa: SIM115 - closed by apply_layer
        shutil.rmtree(layout)
        return config, tree

    yield bud
    subprocess.run([*base, "rm", "--all"], capture_output=True, env=_tool_env())
    subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True, env=_tool_env())
    shutil.rmtree(work, ignore_errors=True)


def files(tree: dict, base: dict) -> dict:
    out = {}
    for path, n in tree.items():
        if path in BUILDAH_RUN_ARTEFACTS and path not in base:
            continue
        out[path] = (n.type, stat.S_IMODE(n.mode), n.uid, n.gid, n.linkname, n.data)
    return out


def compare(store, buildah, ctx: Path, **kw) -> None:
    build_image(store, BuildOptions(context=str(ctx), tags=["mine"], **kw))
    _, base = image_tree(store, "localhost/busybox")
    doc, mine = image_tree(store, "mine")
    theirs_doc, theirs = buildah(ctx, *[f"--build-arg={k}={v}" for k, v in kw.get("build_args", {}).items()])
    a, b = files(mine, base), files(theirs, base)
    assert sorted(set(a) ^ set(b)) == []
    different = {p: (a[p][:5], b[p][:5], a[p][5], b[p][5]) for p in a if a[p] != b[p]}
    assert different == {}
    theirs_config = dict(theirs_doc["config"])
    theirs_config["Labels"] = {k: v for k, v in (theirs_config.get("Labels") or {}).items()
                               if k not in BUILDAH_LABELS}
    if not theirs_config["Labels"]:
        del theirs_config["Labels"]
    assert doc["config"] == theirs_config
    assert [h.get("empty_layer", False) for h in doc["history"]] == \
        [h.get("empty_layer", False) for h in theirs_doc["history"]]
    assert len(doc["rootfs"]["diff_ids"]) == len(theirs_doc["rootfs"]["diff_ids"])


def test_same_as_buildah_run_copy_stages_args_user_workdir_ignore(store, buildah, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a.txt": "hello\n", "dir/x": "x\n", "dir/sub/y": "y\n",
                                          "secret.key": "s", "logs/l.log": "l"}, """\
FROM localhost/busybox AS builder
ARG MSG=built
ENV OUT=/out
RUN mkdir -p $OUT && echo $MSG > $OUT/artifact && ln -s artifact $OUT/link && chmod 0600 $OUT/artifact
FROM localhost/busybox
ARG V=2
ENV A=b C="d e" F=${V}x
LABEL org.example.x=y
WORKDIR /app
COPY a.txt ./
COPY dir /tree/
COPY --chown=1000:1000 --chmod=0640 a.txt /owned
COPY --chown=app a.txt /named
COPY --chown=root:app a.txt /named-group
COPY --from=builder /out /from/
RUN mkdir -p /gone/deep && touch /gone/deep/f && echo data > /app/made && ln /app/made /app/hard && \\
    chown 1000:1000 /app/made && chmod 0751 /app/made
RUN rm /etc/group && rm -rf /gone && rm -rf /tree/sub && mkdir /tree/sub && touch /tree/sub/new && \\
    echo appended >> /etc/passwd
USER app
RUN echo $A $C $F > /tmp/as-app && id > /tmp/id
USER 1000:1000
EXPOSE 8080 53/udp
VOLUME /data
STOPSIGNAL SIGINT
ENTRYPOINT ["sh", "-c"]
CMD ["cat /app/made"]
""")
    (ctx / ".containerignore").write_text("*.key\nlogs\n")
    (ctx / "dir/x").chmod(0o755)
    (ctx / "dir/x-link").symlink_to("x")
    (ctx / "dir/x-hard").hardlink_to(ctx / "dir/x")
    compare(store, buildah, ctx, build_args={"V": "3"})


def test_same_as_buildah_scratch_and_add(store, buildah, tmp_path):
    import io
    import tarfile

    ctx = make_context(tmp_path / "ctx", {"f": "F"}, """\
FROM scratch
ADD files.tar /opt/
COPY f /f
ENV K=v
CMD ["/f"]
""")
    with tarfile.open(ctx / "files.tar", "w") as t:
        for name, data, mode in (("pkg/one", b"1", 0o644), ("pkg/run", b"#!/bin/sh\n", 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))
    compare(store, buildah, ctx)
