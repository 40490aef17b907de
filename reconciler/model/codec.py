"""Frozen dataclasses ⇄ plain JSON data, driven by type hints.

``to_data`` leaves out every field that still has its default: the canonical form of an
object then does not change when a later podplay adds a field with a default, which keeps
spec hashes (and so running pods) stable across upgrades. Bytes travel as base64 text.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import types
import typing
from functools import cache
from typing import Any

from reconciler import sha

_MISSING = dataclasses.MISSING


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def to_data(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value == _default(f):
                continue
            out[f.name] = to_data(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    if isinstance(obj, tuple | list):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    return obj


def from_data(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            if dataclasses.is_dataclass(a) and isinstance(data, dict):
                return from_data(a, data)
        return data
    if origin is tuple:
        args = typing.get_args(tp)
        return tuple(from_data(args[0], v) for v in data)
    if origin is dict:
        _, vt = typing.get_args(tp)
        return {k: from_data(vt, v) for k, v in data.items()}
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        return tp(**{k: from_data(hints[k], v) for k, v in data.items() if k in hints})
    if tp is bytes:
        return base64.b64decode(data)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(data)
    return data


def canonical_json(obj: Any) -> str:
    return json.dumps(to_data(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(obj: Any) -> str:
    """sha256 hex of the canonical form: same meaning, same digest."""
    return sha.sha256(canonical_json(obj).encode()).hexdigest()
