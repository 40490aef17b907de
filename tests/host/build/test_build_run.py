"""RUN in a one-shot runc container on an overlay snapshot; its upper directory as the layer."""

from __future__ import annotations

import os
import tarfile

import pytest

from reconciler.build.builder import BuildOptions, build_image
from reconciler.build.parse import BuildError
from tests.host.build.conftest import image_tree, layer_entries
from tests.host.build.test_build_config_copy import make_context


def build(store, ctx, **kw):
    out: list[bytes] = []
    result = build_image(store, BuildOptions(context=str(ctx), **kw), output=out.append)
    return result, b"".join(out).decode()


def test_run_shell_and_exec_forms_env_workdir_user(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, """\
FROM localhost/busybox
ARG GREETING=hi
ENV WHO=world
WORKDIR /work
RUN echo "$GREETING $WHO from $(pwd)" > out && id -u > uid
RUN ["sh", "-c", "echo exec form > /work/exec"]
USER app
RUN id -u > /tmp/as-app && touch /tmp/owned
USER 0
RUN <<EOF
echo heredoc script > /work/heredoc
EOF
""")
    result, output = build(store, ctx, tags=["run"], build_args={"GREETING": "hello"})
    doc, tree = image_tree(store, "run")
    assert tree["work/out"].data == b"hello world from /work\n"
    assert tree["work/uid"].data == b"0\n"
    assert tree["work/exec"].data == b"exec form\n"
    assert tree["tmp/as-app"].data == b"1000\n"
    assert (tree["tmp/owned"].uid, tree["tmp/owned"].gid) == (1000, 1000)
    assert tree["work/heredoc"].data == b"heredoc script\n"
    assert tree["tmp"].mode == 0o1777
    # History like buildah's: RUN with its build args, no #(nop); one layer per RUN.
    runs = [h for h in doc["history"] if not h.get("empty_layer")][1:]
    assert runs[0]["created_by"] == '|1 GREETING=hello /bin/sh -c echo "$GREETING $WHO from $(pwd)" > out && ' \
        "id -u > uid"
    assert len(doc["rootfs"]["diff_ids"]) == 1 + 4
    assert "proc" not in tree and "dev" not in tree and "sys" not in tree  # runc's mount points


def test_run_whiteouts_opaque_dirs_links_modes(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, """\
FROM localhost/busybox
RUN mkdir -p /d/sub /gone/deep && touch /d/keep /d/sub/f /gone/deep/f && echo x > /file && \\
    ln -s /file /link && ln /file /hard && chmod 0700 /d/sub && chown 1000:1000 /d/keep
RUN rm /etc/group && rm -rf /gone && rm -rf /d/sub && mkdir /d/sub && touch /d/sub/new
""")
    result, _ = build(store, ctx, tags=["wh"])
    _, tree = image_tree(store, "wh")
    assert "etc/group" not in tree and "etc/passwd" in tree
    assert not any(p == "gone" or p.startswith("gone/") for p in tree)
    assert "d/sub/f" not in tree and "d/sub/new" in tree  # the re-made directory is opaque
    assert tree["d/keep"].uid == 1000
    assert tree["link"].type == tarfile.SYMTYPE and tree["link"].linkname == "/file"
    assert tree["hard"].type == tarfile.LNKTYPE or tree["file"].type == tarfile.LNKTYPE
    info = store.get_image("wh")
    last = {e.name.rstrip("/"): e for e in layer_entries(store, info.layers[-1].digest)}
    assert "etc/.wh.group" in last and ".wh.gone" in last
    assert "d/sub/.wh..wh..opq" in last
    first = {e.name.rstrip("/"): e for e in layer_entries(store, info.layers[-2].digest)}
    assert first["d/sub"].mode == 0o700


def test_run_setuid_and_device_node_follow_the_pulled_layer_rules(store, host_paths, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, """\
FROM localhost/busybox
RUN cp /bin/busybox /suid && chmod 4755 /suid && mknod /node c 1 3
RUN ls -l /node /suid
""")
    result, output = build(store, ctx, tags=["hostile"])
    _, tree = image_tree(store, "hostile")
    assert tree["suid"].mode == 0o4755
    assert tree["node"].type == tarfile.CHRTYPE
    # The second RUN ran on the secure unpacker's output: the layer directories are root-only and
    # the snapshot nodev, so the node exists but cannot be opened through it.
    assert "/node" in output


def test_run_is_network_isolated_by_default(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM localhost/busybox\nRUN ls /sys/class/net > /ifaces\n")
    build(store, ctx, tags=["net"])
    _, tree = image_tree(store, "net")
    assert tree["ifaces"].data.split() == [b"lo"]


def test_failing_run_names_the_line_and_leaves_nothing(store, host_paths, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM localhost/busybox\nENV A=1\nRUN echo failing; exit 3\n")
    with pytest.raises(BuildError, match=r"Containerfile:3: RUN: .* exited with status 3"):
        build(store, ctx)
    assert not os.listdir(host_paths.snapshots) or all(n.startswith(".") for n in os.listdir(host_paths.snapshots))
    assert not (host_paths.runroot / "build").exists() or not os.listdir(host_paths.runroot / "build")


def test_unknown_user_is_an_error(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM localhost/busybox\nUSER nobody-here\nRUN true\n")
    with pytest.raises(BuildError, match=r"Containerfile:3: RUN: USER nobody-here: no user 'nobody-here'"):
        build(store, ctx)
