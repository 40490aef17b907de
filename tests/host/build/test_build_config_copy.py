"""podplay build without RUN: config instructions, COPY and ADD from a context, its ignore file
and its safety, deterministic layers."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from reconciler.build.builder import DEFAULT_PATH, BuildOptions, build_image
from reconciler.build.parse import BuildError
from reconciler.cli import main
from tests.host.build.conftest import image_tree, layer_entries


def make_context(root: Path, files: dict[str, str | bytes], containerfile: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    (root / "Containerfile").write_text(containerfile)
    return root


def build(store, ctx: Path, **kw):
    return build_image(store, BuildOptions(context=str(ctx), **kw))


def test_config_instructions(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, """\
ARG BASE=localhost/busybox
FROM ${BASE}
ARG V=1
ARG TARGETARCH
ENV A=b C="d e" \\
    F=${V}x ARCH=$TARGETARCH
LABEL org.example.x=y "with space"=z
WORKDIR app
WORKDIR sub
USER 1000:1000
EXPOSE 80 53/udp 8000-8001
VOLUME /data /cache
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=30s --retries=3 CMD wget -q localhost
ONBUILD COPY . /src
MAINTAINER someone
ENTRYPOINT echo $A
""")
    result = build(store, ctx, tags=["cfg"], build_args={"V": "2"}, labels={"extra": "1"})
    doc, _ = image_tree(store, "cfg")
    cfg = doc["config"]
    arch = store.platform.architecture
    # The default PATH first, as buildah gives an image without one.
    assert cfg["Env"] == [f"PATH={DEFAULT_PATH}", "A=b", "C=d e", "F=2x", f"ARCH={arch}"]
    assert cfg["Labels"] == {"org.example.x": "y", "with space": "z", "extra": "1"}
    assert cfg["WorkingDir"] == "/app/sub"
    assert cfg["User"] == "1000:1000"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}}
    assert set(cfg["Volumes"]) == {"/data", "/cache"}
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 30_000_000_000,
                                  "Retries": 3}
    assert cfg["OnBuild"] == ["COPY . /src"]
    assert doc["author"] == "someone"
    # The shell form runs with the stage's SHELL; an ENTRYPOINT drops the base image's CMD.
    assert cfg["Entrypoint"] == ["/bin/sh", "-ec", "echo $A"]
    assert "Cmd" not in cfg
    assert all(h.get("empty_layer") for h in doc["history"][1:])
    assert [h["created_by"] for h in doc["history"][1:4]] == [  # as written, as buildah records them
        "/bin/sh -c #(nop) ARG V", "/bin/sh -c #(nop) ARG TARGETARCH",
        '/bin/sh -c #(nop) ENV A=b C="d e"     F=${V}x ARCH=$TARGETARCH']
    assert len(doc["rootfs"]["diff_ids"]) == 1  # the base's layer only
    assert result.names == ("localhost/cfg:latest",)


def test_copy_files_dirs_globs_owner_mode_and_heredoc(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a.txt": "A", "b.txt": "B", "dir/x": "X", "dir/sub/y": "Y",
                                          "c.log": "L"}, """\
FROM localhost/busybox
ENV NAME=world
WORKDIR /app
COPY a.txt ./
COPY *.txt /many/
COPY dir /tree
COPY --chown=1000:1000 --chmod=0640 dir/x /owned
COPY a.txt /tmp/a
COPY <<EOF /etc/greeting
hello $NAME
EOF
""")
    os.chmod(ctx / "dir/x", 0o755)
    os.link(ctx / "dir/x", ctx / "dir/x-hard")
    os.symlink("x", ctx / "dir/x-link")
    build(store, ctx, tags=["cp"])
    _, tree = image_tree(store, "cp")
    assert tree["app/a.txt"].data == b"A"
    assert tree["many/a.txt"].data == b"A" and tree["many/b.txt"].data == b"B"
    assert "many/c.log" not in tree
    assert tree["tree/x"].data == b"X" and tree["tree/sub/y"].data == b"Y"
    assert "tree/dir" not in tree  # a directory source copies its contents
    assert tree["tree/x"].mode == 0o755
    assert tree["tree/x-link"].type == tarfile.SYMTYPE and tree["tree/x-link"].linkname == "x"
    assert tree["tree/x-hard"].type == tarfile.LNKTYPE and tree["tree/x-hard"].linkname == "tree/x"
    owned = tree["owned"]
    assert (owned.uid, owned.gid, owned.mode, owned.data) == (1000, 1000, 0o640, b"X")
    assert tree["tree/x"].uid == 0
    assert tree["etc/greeting"].data == b"hello world\n"
    # The parent a copy goes into keeps the lower layer's mode (a copy-up keeps it too).
    assert tree["tmp"].mode == 0o1777
    assert tree["tmp/a"].data == b"A"


def test_copy_into_an_existing_or_new_directory(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"f": "F"}, "FROM localhost/busybox\nCOPY f /tmp\nCOPY f /new/\n")
    build(store, ctx, tags=["dirs"])
    _, tree = image_tree(store, "dirs")
    # /tmp exists as a directory: the file goes into it; /new/ is made.
    assert tree["tmp/f"].data == b"F" and tree["tmp"].mode == 0o1777
    assert tree["new"].type == tarfile.DIRTYPE and tree["new/f"].data == b"F"


def test_containerignore(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"keep.txt": "k", "secret.key": "s", "logs/a.log": "l",
                                          "docs/README.md": "r", "docs/other.md": "o"}, """\
FROM localhost/busybox
COPY . /src/
""")
    (ctx / ".containerignore").write_text("*.key\nlogs\ndocs\n!docs/README.md\n")
    build(store, ctx, tags=["ign"])
    _, tree = image_tree(store, "ign")
    files = {p for p in tree if p.startswith("src/")}
    assert "src/keep.txt" in files and "src/docs/README.md" in files
    assert not {"src/secret.key", "src/logs", "src/logs/a.log", "src/docs/other.md"} & files
    (ctx / "Containerfile").write_text("FROM localhost/busybox\nCOPY secret.key /\n")
    with pytest.raises(BuildError, match=r"Containerfile:2: COPY: secret.key: no such file .* excluded by "
                                         r"\.containerignore"):
        build(store, ctx)


def test_dockerignore_when_no_containerignore(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a": "1", "b": "2"}, "FROM localhost/busybox\nCOPY . /s/\n")
    (ctx / ".dockerignore").write_text("b\n")
    build(store, ctx, tags=["dign"])
    _, tree = image_tree(store, "dign")
    assert "s/a" in tree and "s/b" not in tree


def test_add_unpacks_a_local_tar(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM localhost/busybox\nADD files.tar.gz /opt/\nADD plain.txt /opt/\n")
    (ctx / "plain.txt").write_text("p")
    with tarfile.open(ctx / "files.tar.gz", "w:gz") as t:
        for name, data in (("pkg/one", b"1"), ("../../escape", b"e")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    build(store, ctx, tags=["add"])
    _, tree = image_tree(store, "add")
    assert tree["opt/pkg/one"].data == b"1"
    assert tree["opt/escape"].data == b"e"  # `..` stays inside the destination
    assert tree["opt/plain.txt"].data == b"p"
    assert "escape" not in tree


def test_the_context_never_escapes(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    ctx = make_context(tmp_path / "ctx", {"ok": "fine"}, "FROM localhost/busybox\nCOPY ../outside/secret /x\n")
    with pytest.raises(BuildError, match="no such file"):
        build(store, ctx)
    # A symlink to outside, named as the source, is resolved inside the context.
    os.symlink(str(outside / "secret"), ctx / "evil")
    os.symlink("../outside", ctx / "evildir")
    (ctx / "Containerfile").write_text("FROM localhost/busybox\nCOPY evil /x\n")
    with pytest.raises(BuildError, match="no such file"):
        build(store, ctx)
    (ctx / "Containerfile").write_text("FROM localhost/busybox\nCOPY evildir/secret /x\n")
    with pytest.raises(BuildError, match="no such file"):
        build(store, ctx)
    # ../ as a source is the context itself; links inside a copied tree stay links.
    (ctx / "Containerfile").write_text("FROM localhost/busybox\nCOPY ../ /all/\n")
    build(store, ctx, tags=["esc"])
    _, tree = image_tree(store, "esc")
    assert tree["all/ok"].data == b"fine"
    assert tree["all/evil"].type == tarfile.SYMTYPE
    assert not any(n.data == b"host secret" for n in tree.values())


def test_deterministic_with_timestamp(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"a": "1", "d/b": "2"}, "FROM localhost/busybox\nCOPY . /s/\nENV X=1\n")
    first = build(store, ctx, timestamp=1_700_000_000)
    os.utime(ctx / "a", (2_000_000_000, 2_000_000_000))  # newer than the timestamp: clamped
    second = build(store, ctx, timestamp=1_700_000_000)
    assert first.image_id == second.image_id
    info = store.get_image(first.image_id)
    entries = layer_entries(store, info.layers[-1].digest)
    assert [e.name.rstrip("/") for e in entries] == ["s", "s/Containerfile", "s/a", "s/d", "s/d/b"]
    assert max(e.mtime for e in entries) <= 1_700_000_000
    assert all(e.uname == "" and e.gname == "" for e in entries)


def test_scratch_and_from_a_stage(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {"f": "F"}, """\
FROM scratch AS base
COPY f /f
ENV A=1
FROM base
ENV B=2
""")
    build(store, ctx, tags=["stages"])
    doc, tree = image_tree(store, "stages")
    assert set(tree) == {"f"}
    assert doc["config"]["Env"] == [f"PATH={DEFAULT_PATH}", "A=1", "B=2"]
    ctx2 = make_context(tmp_path / "ctx2", {}, "FROM scratch AS one\nENV A=1\nFROM scratch AS two\nENV B=2\n")
    build(store, ctx2, tags=["t1"], target="one")
    doc, _ = image_tree(store, "t1")
    assert doc["config"]["Env"] == [f"PATH={DEFAULT_PATH}", "A=1"]


@pytest.mark.parametrize(("containerfile", "message"), [
    ("FROM localhost/busybox\nCOPY missing /x\n", "Containerfile:2: COPY: missing: no such file"),
    ("FROM localhost/busybox\nEXPOSE 99999\n", "Containerfile:2: EXPOSE: '99999' is not PORT"),
    ("FROM localhost/busybox\nRUN --mount=type=cache,target=/c true\n",
     "Containerfile:2: RUN: --mount and --security are not supported"),
    ("FROM localhost/busybox\nCOPY --from=localhost/none /a /b\n",
     "Containerfile:2: COPY: cannot get image localhost/none: image localhost/none is not present"),
    ("FROM localhost/nonexistent-image\n", "Containerfile:1: FROM: cannot get the base image"),
    ("ENV A=1\nFROM scratch\n", "Containerfile:1: ENV: only ARG may come before the first FROM"),
    ("FROM localhost/busybox\nCOPY --chown=nosuch Containerfile /y\n",
     "Containerfile:2: COPY: --chown nosuch: no user 'nosuch' in the image's /etc/passwd"),
])
def test_errors_name_file_line_and_instruction(store, tmp_path, containerfile, message):
    ctx = make_context(tmp_path / "ctx", {}, containerfile)
    with pytest.raises(BuildError) as err:
        build(store, ctx)
    assert message in str(err.value)


def test_cli_build(store, host_paths, tmp_path, capsys):
    ctx = make_context(tmp_path / "ctx", {"a": "1"}, "FROM localhost/busybox\nCOPY a /a\nCMD [\"cat\", \"/a\"]\n")
    argv = ["--root", str(host_paths.root), "--runroot", str(host_paths.runroot)]
    assert main([*argv, "build", "-t", "app", "-t", "app:v1", str(ctx)]) == 0
    out, err = capsys.readouterr()
    assert "STEP 1/3: FROM localhost/busybox" in err and "COMMIT localhost/app:v1" in err
    image_id = out.strip()
    info = store.get_image("localhost/app:v1")
    assert info is not None and info.id == "sha256:" + image_id
    assert main([*argv, "build", "-q", "-f", str(ctx / "Containerfile"), "--target", "nope", str(ctx)]) == 1
    out, err = capsys.readouterr()
    assert "--target 'nope': no stage has that name" in err and "Traceback" not in err
    # Through the real entry point too: a bad Containerfile is one line, exit 1.
    (ctx / "Containerfile").write_text("FROM scratch\nFROB\n")
    proc = subprocess.run([".venv/bin/podplay", *argv, "build", str(ctx)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[3])
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: {ctx / 'Containerfile'}:2: unknown instruction 'FROB'")
    assert "Traceback" not in proc.stderr


def test_add_refuses_an_archive_writing_through_its_own_symlink(store, tmp_path):
    ctx = make_context(tmp_path / "ctx", {}, "FROM localhost/busybox\nADD evil.tar /opt/\n")
    with tarfile.open(ctx / "evil.tar", "w") as t:
        link = tarfile.TarInfo("escape")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        t.addfile(link)
        data = b"root::0:0::/:/bin/sh\n"
        info = tarfile.TarInfo("escape/passwd")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with pytest.raises(BuildError, match=r"Containerfile:2: ADD: evil.tar: escape/passwd is below escape, a "
                                         "symbolic link the archive made"):
        build(store, ctx)
