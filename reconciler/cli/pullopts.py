"""Options of every command that pulls: how long a registry may take to connect and how long it
may stay silent. Small on purpose: `watch` imports it and keeps it for months."""

from __future__ import annotations

import argparse
import os


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, not {text!r}")
    return value


def timeout_options(p) -> None:
    """--connect-timeout and --stall-timeout: how long a registry may take to accept a connection
    and how long it may send nothing before a download is retried (and in the end given up)."""
    p.add_argument("--connect-timeout", type=_timeout, default=None, metavar="S",
                   help="seconds a registry may take to accept a connection (env PODPLAY_CONNECT_TIMEOUT; "
                        "default 15)")
    p.add_argument("--stall-timeout", type=_timeout, default=None, metavar="S",
                   help="seconds a registry may send nothing before the request or download is tried again "
                        "(resumed where it stopped), twice, then given up with exit code 5 (env "
                        "PODPLAY_STALL_TIMEOUT; default 30)")


def use_timeouts(args) -> None:
    """The timeout options as the environment variables every image store (and the forked
    children of a keeper) read."""
    for option, name in (("connect_timeout", "PODPLAY_CONNECT_TIMEOUT"), ("stall_timeout", "PODPLAY_STALL_TIMEOUT")):
        value = getattr(args, option, None)
        if value is not None:
            os.environ[name] = f"{value:g}"
