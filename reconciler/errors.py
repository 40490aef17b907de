"""The error tree and the diagnostic record every stage reports through.

Each error is either permanent (bad input: report, do not retry) or temporary (a registry is
down: retry with back-off). The CLI maps classes to exit codes; nothing below it prints.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about one place in one file. `path` is a field path like
    ``spec.containers[0].image``; line and column are 1-based (0 when unknown)."""

    severity: Severity
    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line:
            where += f":{self.line}:{self.column}" if self.column else f":{self.line}"
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {field}{self.message}"

    def to_json(self) -> dict:
        return {
            "severity": str(self.severity),
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


# Exit codes (documented in the README). 1 is the only code for bad input.
EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_APPLY_FAILED = 3
EXIT_LOCKED = 4
EXIT_IMAGE = 5
EXIT_NOT_FOUND = 6
EXIT_ENVIRONMENT = 7
EXIT_NO_SPACE = 8
EXIT_INTERRUPTED = 130


class PodplayError(Exception):
    """Base of every error podplay reports to a user. `str(err)` is the whole user message."""

    exit_code = EXIT_APPLY_FAILED
    temporary = False


class InputError(PodplayError):
    """A value the user gave (flag, reference, path) is wrong."""

    exit_code = EXIT_INVALID


class ManifestError(InputError):
    """The manifests are invalid; carries every diagnostic found, not only the first."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == Severity.ERROR]
        super().__init__("\n".join(str(d) for d in errors) or "invalid manifests")


class ImageError(PodplayError):
    """An image could not be resolved, pulled, verified or stored."""

    exit_code = EXIT_IMAGE


class TemporaryImageError(ImageError):
    """Registry unreachable, 5xx, dropped connection: worth retrying later."""

    temporary = True


class StorageError(PodplayError):
    """Layer unpack, snapshot or volume failure (including refused hostile layers)."""


class ContainerRuntimeError(PodplayError):
    """runc/conmon/infra failure. Named so that it never shadows the builtin RuntimeError."""


class NetworkError(PodplayError):
    """CNI failure, port conflict, bad network configuration."""


class StateError(PodplayError):
    """The state store is unreadable or inconsistent."""


class NoSpaceError(PodplayError):
    """A file system podplay writes to is full: nothing more can be recorded or created."""

    exit_code = EXIT_NO_SPACE
    temporary = True


def no_space(path, need: int = 0) -> NoSpaceError:
    """The one message for ENOSPC anywhere: which file system, how much is free (and needed)."""
    import os

    where = str(path)
    probe = where
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    try:
        st = os.statvfs(probe or "/")
        free = f"{st.f_bavail * st.f_frsize / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    needed = f", need {need / 1e6:.1f} MB" if need else ""
    return NoSpaceError(f"no space left on the file system of {where}: {free}{needed}; free some space "
                        "(`podplay image prune` removes unused images) and run the command again")


def as_no_space(exc: BaseException, root) -> NoSpaceError | None:
    """`exc` as the one no-space error when a full file system is what it comes down to: an
    ENOSPC/EDQUOT OSError in its chain, or a tool's "no space left on device" (runc, conmon
    and the CNI plugins report it as text). The message names the OSError's file when there
    is one, else `root`."""
    import errno

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, NoSpaceError):
            return cause
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return no_space(cause.filename or root)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if "no space left on device" in str(exc).lower() or "disk quota exceeded" in str(exc).lower():
        return no_space(root)
    return None


class LockedError(PodplayError):
    """Another podplay process is applying; carries who holds the lock."""

    exit_code = EXIT_LOCKED
    temporary = True


class NotFoundError(PodplayError):
    """A pod, container or image the user named does not exist."""

    exit_code = EXIT_NOT_FOUND


class EnvironmentProblem(PodplayError):
    """The host lacks something podplay needs (root, runc, a kernel feature)."""

    exit_code = EXIT_ENVIRONMENT


class ApplyError(PodplayError):
    """At least one pod could not be brought to its desired state (it was compensated)."""

    exit_code = EXIT_APPLY_FAILED
