"""Schema-checked dicts → frozen dataclasses, driven by the dataclasses' own type hints.

The model's fields *are* the list of fields podplay acts on: any key of the input that no
dataclass field takes is reported back as "accepted but not acted on", so the warning list
can never drift from the code. Field names are the Kubernetes JSON names in snake_case
(``hostIPC`` → ``host_ipc``); a field can override its JSON name with ``json_name``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any


def json_name(name: str, **kwargs: Any) -> Any:
    """A dataclass field whose Kubernetes name is not the camelCase of its Python name."""
    return dataclasses.field(metadata={"json": name}, **kwargs)


@cache
def _fields(cls: type) -> dict[str, tuple[str, Any]]:
    """JSON name → (python name, resolved type) for a dataclass."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        jname = f.metadata.get("json")
        if jname is None:
            head, *rest = f.name.split("_")
            jname = head + "".join(p[:1].upper() + p[1:] for p in rest)
        out[jname] = (f.name, hints[f.name])
    return out


def fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


class Unused(list):
    """Collects paths of input keys that no model field consumed."""


def build(cls: type, data: Any, path: tuple = (), unused: Unused | None = None,
          hooks: dict[type, Callable[[Any], Any]] | None = None) -> Any:
    """Build `cls` from `data` (already validated by the JSON schema)."""
    return _build(cls, data, path, unused if unused is not None else Unused(), hooks or {})


def _build(tp: Any, data: Any, path: tuple, unused: Unused, hooks: dict) -> Any:
    if tp in hooks:
        return hooks[tp](data)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        if len(args) == 1:
            return _build(args[0], data, path, unused, hooks)
        # int | str and friends: keep the value as given (the schema already checked it).
        return data
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        return tuple(_build(item, v, path + (i,), unused, hooks) for i, v in enumerate(data or ()))
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {str(k): _build(vt, v, path + (k,), unused, hooks) for k, v in (data or {}).items()}
    if dataclasses.is_dataclass(tp):
        if data is None:
            data = {}
        kwargs = {}
        for key, value in data.items():
            found = _fields(tp).get(key)
            if found is None:
                unused.append(path + (key,))
                continue
            pyname, ftype = found
            if value is None:
                continue
            kwargs[pyname] = _build(ftype, value, path + (key,), unused, hooks)
        return tp(**kwargs)
    if tp is str:
        return data if isinstance(data, str) else str(data)
    if tp is int and isinstance(data, bool):
        return int(data)
    if tp is float:
        return float(data)
    return data
