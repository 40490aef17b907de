"""Credentials out of what podplay shows: URLs with their userinfo as ``***``.

Light on purpose (``podplay status`` imports it): a regular expression and nothing else.
"""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def redact_url(text: str) -> str:
    """`text` with every URL's userinfo shown as ***: ``https://***@host/repo.git``."""
    return _USERINFO.sub(r"\1***@", text)


def redact_urls_in(value: Any) -> Any:
    """A JSON-like value with redact_url applied to every string in it."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact_urls_in(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_urls_in(v) for v in value]
    return value
