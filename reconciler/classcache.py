"""A cache of the methods ``dataclasses`` generates, so that a podplay process does not compile
them again.

``@dataclass`` writes the source text of the methods it adds (``__init__``, ``__repr__``,
``__eq__``, a frozen class's ``__setattr__``…) and hands it to ``exec``, which compiles it, when
the class is created. podplay defines some two hundred dataclasses; compiling their thousand
small methods is half of what importing the engine costs, in every command. This module gives
the ``dataclasses`` module an ``exec`` that looks the text up among code objects compiled
before and compiles only texts it has not seen. A code object is what compiling exactly that
text gives (same file name, no inherited flags), so a class behaves the same either way.

The code objects are kept beside the package's bytecode, in its ``__pycache__``, and written
under the same rule as the ``.pyc`` files there: only when writing bytecode is allowed, as an
atomic rename. A file that others than its owner (or root) may write is ignored.
"""

import builtins
import contextlib
import marshal
import os
import sys

_PATH = os.path.join(os.path.dirname(__file__), "__pycache__",
                     f"dataclass-methods.{sys.implementation.cache_tag}.marshal")
_LIMIT = 10_000  # texts kept (a rewrite keeps the newest)
_codes: dict = {}
_new: dict = {}


def _exec(source, globals=None, locals=None, /):  # noqa: A002 - exec's own parameter names
    if type(source) is str:
        code = _codes.get(source)
        if code is None:
            code = _new[source] = _codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
        source = code
    return builtins.exec(source, globals, locals)


def _read() -> dict:
    try:
        fd = os.open(_PATH, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
            return {}
        with os.fdopen(os.dup(fd), "rb") as f:
            data = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else {}


def save() -> None:
    """Add the texts compiled by this process to the file (at exit; best effort)."""
    if not _new or sys.dont_write_bytecode:
        return
    merged = {k: v for k, v in _read().items() if k not in _new}
    merged.update(_new)
    keep = dict(list(merged.items())[-_LIMIT:])
    tmp = f"{_PATH}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(_PATH), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps(keep))
        os.replace(tmp, _PATH)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    _new.clear()


def install() -> None:
    """Once per process, before the package's dataclasses are defined."""
    import dataclasses

    if getattr(dataclasses, "exec", None) is _exec:
        return
    _codes.update(_read())
    dataclasses.exec = _exec  # the module's global, found before the builtin
    import atexit

    atexit.register(save)
