"""A cache of the methods ``dataclasses`` generates, so that a podplay process does not compile
them again.

``@dataclass`` writes the source text of the methods it adds (``__init__``, ``__repr__``,
``__eq__``, a frozen class's ``__setattr__``…) and hands it to ``exec``, which compiles it, when
the class is created. podplay defines some two hundred dataclasses; compiling their thousand
small methods is half of what importing the engine costs, in every command. This module gives
the ``dataclasses`` module an ``exec`` that looks the text up among code objects compiled
before and compiles only texts it has not seen. A code object is what compiling exactly that
text gives (same file name, no inherited flags), so a class behaves the same either way.

The code objects are kept beside the package's bytecode, in its ``__pycache__``, one file per
module that defines dataclasses (read when its first class is made, so a command reads only
what it imports), written under the same rule as the ``.pyc`` files there: only when writing
bytecode is allowed, as an atomic rename. A file that others than its owner (or root) may write
is ignored.

A class without a docstring gets one from ``dataclasses`` too, its signature as text, which
takes ``inspect.signature`` as long as making the rest of the class. It is made when it is
first read instead (``__doc__`` is rarely read: help(), pydoc), with the same text.
"""

import builtins
import contextlib
import marshal
import os
import sys

_DIR = os.path.join(os.path.dirname(__file__), "__pycache__", f"dataclass-methods.{sys.implementation.cache_tag}")
_LIMIT = 2_000  # texts kept per module (a rewrite keeps the newest)
_codes: dict[str, dict] = {}  # module → source text → code, read on the module's first class
_new: dict[str, dict] = {}  # module → what this process compiled


def _exec(source, globals=None, locals=None, /):  # noqa: A002 - exec's own parameter names
    if type(source) is str:
        module = str(globals.get("__name__", "")) if isinstance(globals, dict) else ""
        codes = _codes.get(module)
        if codes is None:
            codes = _codes[module] = _read(module)
        code = codes.get(source)
        if code is None:
            code = codes[source] = compile(source, "<string>", "exec", dont_inherit=True)
            _new.setdefault(module, {})[source] = code
        source = code
    return builtins.exec(source, globals, locals)


def _path(module: str) -> str:
    return os.path.join(_DIR, f"{module or '-'}.marshal")


def _read(module: str) -> dict:
    try:
        fd = os.open(_path(module), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
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
    """Add the texts compiled by this process to the modules' files (at exit; best effort)."""
    if not _new or sys.dont_write_bytecode:
        return
    for module, new in list(_new.items()):
        if not module or "/" in module or module.startswith("."):
            continue
        merged = {k: v for k, v in _read(module).items() if k not in new}
        merged.update(new)
        keep = dict(list(merged.items())[-_LIMIT:])
        path = _path(module)
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(_DIR, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(keep))
            os.replace(tmp, path)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
    _new.clear()


class _Doc:
    """A dataclass's generated docstring, ``Name(field: type = default, …)``, made when first read
    (as ``dataclasses`` makes it: the class's signature as text, without its return)."""

    def __init__(self):
        self.text: str | None = None
        self.ready = False  # while ``dataclasses`` makes the class: it must see a docstring

    def __get__(self, obj, cls=None):
        if not self.ready:
            return "(being made)"
        if self.text is None:
            import inspect

            cls = cls if cls is not None else type(obj)
            try:
                sig = str(inspect.signature(cls)).replace(" -> None", "")
            except (TypeError, ValueError):
                sig = ""
            self.text = cls.__name__ + sig
        return self.text


def _lazy_doc(process):
    def _process_class(cls, *args, **kwargs):
        if cls.__dict__.get("__doc__") is not None:
            return process(cls, *args, **kwargs)
        doc = _Doc()
        cls.__doc__ = doc
        try:
            return process(cls, *args, **kwargs)
        finally:
            doc.ready = True

    _process_class.lazy_doc = True
    return _process_class


def install() -> None:
    """Once per process, before the package's dataclasses are defined."""
    import dataclasses

    if getattr(dataclasses, "exec", None) is _exec:
        return
    dataclasses.exec = _exec  # the module's global, found before the builtin
    process = getattr(dataclasses, "_process_class", None)
    if process is not None and not getattr(process, "lazy_doc", False):
        dataclasses._process_class = _lazy_doc(process)  # the name ``dataclass`` calls at class creation
    import atexit

    atexit.register(save)
