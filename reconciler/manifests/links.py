"""Symbolic links among the files of a manifest directory: which ones podplay follows.

podplay runs as root, and a manifest directory is often writable by someone else (a git
checkout, a shared folder). A ``*.yaml`` there that is a symbolic link to ``/etc/shadow`` must
not make podplay read that file and quote it back in an error. A link found in a directory is
followed only when its target is inside that directory (or beside the link) and the link's owner
could read the target itself. A file named on the command line is the caller's choice and is
always read; so are symlinked sub-directories (a common way to share manifests), whose files
are checked like any other.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from reconciler.errors import Diagnostic, Severity


def refuse_links(paths: Sequence[str], files: list[str]) -> tuple[list[str], list[Diagnostic]]:
    """(the files podplay may read, one error for each link it refuses). A refused file's objects
    are unknown: the caller lists it as unreadable, so nothing it might describe is pruned."""
    tops = [p for p in paths if p != "-" and os.path.isdir(p)]
    kept, refused = [], []
    for f in files:
        top = next((t for t in tops if f.startswith(os.path.join(t, ""))), None)
        why = _why_not_follow(f, top) if top is not None and f not in paths else None
        if why is None:
            kept.append(f)
        else:
            refused.append(Diagnostic(Severity.ERROR, f, 0, 0, "", why))
    return kept, refused


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(os.path.join(directory, ""))


def _why_not_follow(file: str, top: str) -> str | None:
    try:
        link = os.lstat(file)
        if not stat.S_ISLNK(link.st_mode):
            return None
        target = os.path.realpath(file)
        st = os.stat(target)
    except OSError:
        return None  # gone or dangling: the read says why, and there is nothing to quote
    if not (_inside(target, os.path.realpath(top)) or _inside(target, os.path.realpath(os.path.dirname(file)))):
        return (f"a symbolic link to {target}, outside the manifest directory: podplay does not follow it "
                "(copy the file into the directory, or name it on the command line)")
    if not _can_read(link.st_uid, st):
        return (f"a symbolic link (owned by uid {link.st_uid}) to {target}, which its owner cannot read: "
                "podplay does not follow it")
    return None


def _can_read(uid: int, st: os.stat_result) -> bool:
    """Could user `uid` read a file with this stat (by its mode bits, as the kernel decides)?"""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid in _groups(uid):
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def _groups(uid: int) -> set[int]:
    import pwd

    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return set()  # no such user: only "others" applies
    return set(os.getgrouplist(user.pw_name, user.pw_gid))
