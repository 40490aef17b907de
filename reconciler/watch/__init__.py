"""Keep converging: `podplay watch` (files, through inotify), `podplay sync` (a git branch) and
what `podplay status` reports about them.

    keeper.py   the loop: passes on news, relist of the runtime, back-off timers, resync, signals
    files.py    manifest files cached one by one; a file's last good version stands in while it is invalid
    dirs.py     the `watch` source: directories and files, inotify, debounce
    sync.py     the `sync` source: a mirror clone, one checkout per commit, last good commit
    parse.py    manifests parsed in a short-lived child, so the long-lived keeper stays small
    backoff.py  when an exited container will be restarted
    status.py   what `podplay status` shows
    log.py      one structured line per event

This package sits between the command line and ``reconcile``; it talks to the host only
through the driver Protocols.
"""

from reconciler.watch.backoff import backoff_schedule, restart_at
from reconciler.watch.dirs import DirSource
from reconciler.watch.files import Composition, FileReport, ManifestFiles
from reconciler.watch.keeper import HealthHook, Keeper, KeeperOptions, Source
from reconciler.watch.log import EventLog

__all__ = ["Composition", "DirSource", "EventLog", "FileReport", "HealthHook", "Keeper", "KeeperOptions",
           "ManifestFiles", "Source", "backoff_schedule", "restart_at"]
