"""RUN: a one-shot container on an overlay snapshot of the stage so far; its upper directory
becomes the step's layer.

The snapshot is prepared by the same snapshotter pods use, from the stage's layers as they
are in the content store, so every layer a build made (COPY's, earlier RUNs') goes through the
secure unpacker before anything runs on it. The upper directory is then read without following
anything (``lstat``, ``O_NOFOLLOW``): overlay whiteouts (0:0 character devices) become
``.wh.`` entries, opaque directories a ``.wh..wh..opq`` entry, hardlinks within the layer tar
hardlinks, extended attributes filtered as the unpacker filters them (``trusted.*`` never
leaves: it is overlay's own bookkeeping). Device nodes and setuid bits are recorded as they
are, the same as a pulled layer's: snapshots are mounted ``nodev`` and layer directories are
root-only. Mount points the runtime had to make (``/proc``, ``/dev``, ``/sys`` in an image
without them) are left out when they are empty, as buildah leaves them out.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
from typing import TYPE_CHECKING

from reconciler.build.layer import OPAQUE, WHITEOUT, Entry, LowerTree, WrittenLayer
from reconciler.errors import ContainerRuntimeError, StorageError
from reconciler.observed import ImageConfig, ImageInfo, LayerInfo
from reconciler.runtime.oneshot import MOUNT_POINTS, OneshotRunner
from reconciler.storage.snapshots import OverlaySnapshotter
from reconciler.storage.unpack import OPAQUE_XATTR, is_whiteout, keep_xattr

if TYPE_CHECKING:
    from reconciler.build.builder import Builder, StageState
    from reconciler.build.parse import Instruction


def stage_image(state: StageState) -> ImageInfo:
    diff_ids = state.doc.get("rootfs", {}).get("diff_ids", [])
    layers = tuple(LayerInfo(d["digest"], diff_id, d["mediaType"], d["size"])
                   for d, diff_id in zip(state.layers, diff_ids))
    return ImageInfo(id="sha256:" + "0" * 64, manifest_digest="", names=(), config=ImageConfig(), layers=layers)


def run_step(builder: Builder, state: StageState, ins: Instruction, argv: list[str], env: list[str], *,
             network_host: bool) -> tuple[list[Entry], WrittenLayer]:
    """Run ``argv`` on the stage; (the layer's entries, the layer written into the store)."""
    from reconciler.build.parse import BuildError

    paths = builder.store.paths
    lower = builder.lower(state)
    key = f"build-{os.urandom(8).hex()}"
    snapshots = OverlaySnapshotter(paths, builder.store)
    try:
        try:
            rootfs = snapshots.prepare(key, stage_image(state))
        except StorageError as exc:
            raise BuildError(f"cannot prepare the stage's file system: {exc}", builder.cf.path, ins.line,
                             "RUN") from None
        if snapshots.mode(key) != "overlay":
            raise BuildError("needs overlayfs (this storage root cannot mount it)", builder.cf.path, ins.line, "RUN")
        uid, gid, groups = resolve_user(rootfs, lower, state.config.get("User") or "", builder, ins)
        cwd = state.config.get("WorkingDir") or "/"
        runner = OneshotRunner(paths)
        spec = runner.host_spec(args=argv, env=env, cwd=cwd, rootfs=rootfs, uid=uid, gid=gid,
                                additional_gids=groups, network_host=network_host)
        try:
            code = runner.run(key, spec, builder.output)
        except ContainerRuntimeError as exc:
            raise BuildError(str(exc), builder.cf.path, ins.line, "RUN") from None
        if code != 0:
            raise BuildError(f"{argv!r} exited with status {code}", builder.cf.path, ins.line, "RUN")
        upper = paths.snapshots / key / "upper"
        entries = upper_entries(str(upper), lower)
        return entries, builder._write_layer(state, entries)  # read before the snapshot goes
    finally:
        snapshots.remove(key)


def resolve_user(rootfs: str, lower: LowerTree, user: str, builder: Builder, ins: Instruction, *,
                 what: str = "USER") -> tuple[int, int, tuple[int, ...]]:
    """USER (or --chown) as numbers, names looked up in the image's /etc/passwd and /etc/group
    (read without following a link out of the rootfs)."""
    from reconciler.build.parse import BuildError
    from reconciler.runtime.users import parse_group, parse_passwd

    name, _, group = (user or "0").partition(":")
    passwd = parse_passwd(read_in_root(rootfs, lower, "etc/passwd"))
    groups = parse_group(read_in_root(rootfs, lower, "etc/group"))
    entry = None
    if name.isdigit():
        uid = int(name)
        entry = next((p for p in passwd if p.uid == uid), None)
    else:
        entry = next((p for p in passwd if p.name == name), None)
        if entry is None:
            raise BuildError(f"{what} {user}: no user {name!r} in the image's /etc/passwd", builder.cf.path,
                             ins.line, ins.command)
        uid = entry.uid
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            g = next((g for g in groups if g.name == group), None)
            if g is None:
                raise BuildError(f"{what} {user}: no group {group!r} in the image's /etc/group", builder.cf.path,
                                 ins.line, ins.command)
            gid = g.gid
    else:
        gid = entry.gid if entry is not None else 0
    # As buildah: the primary group is among the supplementary ones too.
    extra = tuple(sorted({gid} | {g.gid for g in groups if entry is not None and entry.name in g.members}))
    return uid, gid, extra


def read_in_root(rootfs: str, lower: LowerTree, path: str, limit: int = 1 << 20) -> str:
    """A small file of the image, "" when missing, resolved in the image (never on the host)."""
    resolved = lower.resolve(path)
    parts = [p for p in resolved.split("/") if p]
    if not parts:
        return ""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
        ffd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
        with os.fdopen(ffd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return ""
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _xattrs(path: str) -> dict[str, str]:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for name in names:
        if keep_xattr(name):
            with contextlib.suppress(OSError):
                out[name] = os.getxattr(path, name, follow_symlinks=False).decode("utf-8", "surrogateescape")
    return out


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def upper_entries(upper: str, lower: LowerTree) -> list[Entry]:
    entries: list[Entry] = []
    links: dict[int, str] = {}

    def walk(rel: str) -> None:
        d = os.path.join(upper, rel) if rel else upper
        for name in sorted(os.listdir(d)):
            path = f"{rel}/{name}" if rel else name
            full = os.path.join(upper, path)
            st = os.lstat(full)
            mtime = int(st.st_mtime)
            if is_whiteout(st):
                parent = posixpath.dirname(path)
                entries.append(Entry(posixpath.join(parent, WHITEOUT + name), tarfile.REGTYPE, 0, 0, 0,
                                     mtime, data=b""))
                continue
            e = Entry(path, tarfile.REGTYPE, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, mtime,
                      xattrs=_xattrs(full))
            if stat.S_ISDIR(st.st_mode):
                e.type = tarfile.DIRTYPE
                entries.append(e)
                if _opaque(full):
                    entries.append(Entry(f"{path}/{OPAQUE}", tarfile.REGTYPE, 0, 0, 0, mtime, data=b""))
                walk(path)
                continue
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1 and st.st_ino in links:
                    e.type, e.linkname = tarfile.LNKTYPE, links[st.st_ino]
                else:
                    if st.st_nlink > 1:
                        links[st.st_ino] = path
                    e.size = st.st_size
                    e.opener = (lambda p=full: os.fdopen(os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC),
                                                         "rb"))
            elif stat.S_ISLNK(st.st_mode):
                e.type, e.linkname = tarfile.SYMTYPE, os.readlink(full)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                e.devmajor, e.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            elif stat.S_ISFIFO(st.st_mode):
                e.type = tarfile.FIFOTYPE
            else:
                continue  # sockets are not layer material
            entries.append(e)

    walk("")
    # Mount points runc made for /proc, /dev and /sys in an image without them.
    made = {m.lstrip("/") for m in MOUNT_POINTS if lower.get(m.lstrip("/")) is None}
    drop = {e.path for e in entries if e.path in made and e.type == tarfile.DIRTYPE and
            not any(o.path.startswith(e.path + "/") for o in entries)}
    return [e for e in entries if e.path not in drop]


@contextlib.contextmanager
def mounted_stage(builder: Builder, state: StageState, ins: Instruction):
    """The file system of ``state`` (an earlier stage or an image), mounted while the block runs."""
    from reconciler.build.parse import BuildError

    key = f"build-from-{os.urandom(8).hex()}"
    snapshots = OverlaySnapshotter(builder.store.paths, builder.store)
    try:
        try:
            rootfs = snapshots.prepare(key, stage_image(state))
        except StorageError as exc:
            raise BuildError(f"cannot prepare the --from file system: {exc}", builder.cf.path, ins.line,
                             ins.command) from None
        yield rootfs
    finally:
        snapshots.remove(key)
