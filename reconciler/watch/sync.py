"""`podplay sync URL`: a git branch as a keeper's source (GitOps), with a last good commit.

Layout under the storage root, one directory per URL::

    sync/<id>/mirror.git        bare single-branch clone; fetched every --interval (works offline)
    sync/<id>/commits/<sha>/    one checkout per commit, written to a temp dir then renamed
    sync/<id>/current           symlink → commits/<sha>: the commit the host runs

Pods record their source under ``current/…``, a path that stays the same across commits, so a
new commit looks like "these files changed", not "every file was deleted and others created".
The whole checkout is this source's scope: a file dropped from the repository (or from
``--path``) is pruned.

A commit is refused — the host stays on the last good commit and status says why — when it is
unsigned (``--verify``), holds a symbolic link out of the repository, or has any invalid
manifest (a commit is applied whole or not at all). A commit whose apply fails is rolled back to
the last good commit, and tried again at the next resync (the failure may be temporary: a
registry that was down). ``current`` is switched only to a commit that passed validation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from reconciler.desired import build_desired
from reconciler.diff import Scope
from reconciler.errors import EXIT_APPLY_FAILED, EXIT_INVALID, InputError, ManifestError, PodplayError
from reconciler.manifests import FileLoad, ManifestSet, combine_files
from reconciler.paths import HostPaths
from reconciler.redact import redact_url
from reconciler.sources import find_manifest_files
from reconciler.state import StateStore
from reconciler.watch.dirs import source_id
from reconciler.watch.files import Composition, digest_text, empty_composition
from reconciler.watch.log import EventLog
from reconciler.watch.parse import load_in_child, load_in_process

GIT_TIMEOUT = 600.0  # a clone of a big repository over a slow link
MAX_REASON = 2000
KEEP_REFUSED = 20


class SyncError(PodplayError):
    """git could not clone, fetch or check out (the remote is down, the branch is missing…)."""

    temporary = True


# The user and password of a URL (`https://user:TOKEN@host/…`) never reach git's command line,
# the mirror's config, the state store, a log or a message: git gets the bare URL and asks this
# script for them, which answers from its environment (only root and the git child read that).
ASKPASS = """#!/bin/sh
# podplay sync: git's credential prompt, answered from the environment of this git process.
case "$1" in
  Username*) printf '%s\\n' "$PODPLAY_GIT_USERNAME" ;;
  *) printf '%s\\n' "$PODPLAY_GIT_PASSWORD" ;;
esac
"""
def split_credentials(url: str) -> tuple[str, str, str]:
    """(the URL without userinfo, user, password) of an http(s) URL; other URLs come back whole
    (an ssh user names an account, not a secret, and ssh takes no password in the URL)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, "", ""
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return bare, urllib.parse.unquote(user), urllib.parse.unquote(password)


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_HTTP_LOW_SPEED_LIMIT="1000", GIT_HTTP_LOW_SPEED_TIME="60")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    return env


def check_url(url: str) -> str:
    url = url.strip()
    if not url or url.startswith("-") or any(ch in url for ch in "\0\n\r"):
        raise InputError(f"{redact_url(url)!r} is not a git URL (file://, git://, https://, ssh:// or a path)")
    if url.startswith("ext::") or "::" in url.split("/", 1)[0]:
        raise InputError(f"{redact_url(url)}: git remote helpers ('<transport>::') are not allowed; use "
                         "file://, git://, https:// or ssh://")
    return url


def check_path(path: str) -> str:
    norm = os.path.normpath(path or ".")
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or "\0" in norm:
        raise InputError(f"--path {path!r} must be a directory inside the repository (relative, no '..')")
    return norm


def _rel(text: str, root: str) -> str:
    """Messages name files as paths in the repository, not as paths on this host."""
    return text.replace(root.rstrip("/") + "/", "")


class GitSource:
    kind = "sync"
    news = "git"

    def __init__(self, url: str, host_paths: HostPaths, state: StateStore, *, branch: str | None = None,
                 path: str = ".", interval: float = 60.0, verify: bool = False, retry: float = 300.0,
                 log: EventLog | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, git: str = "git", isolate_parsing: bool = False,
                 strict: bool = False):
        # `url` is the URL without credentials (what git, the mirror, status and logs see);
        # the credentials stay in memory and reach git through ASKPASS.
        self.url, self._user, self._password = split_credentials(check_url(url))
        if not (self._user or self._password) and self.url.lower().startswith(("http://", "https://")):
            # Or from the environment: unlike a URL, not on the command line other users can list.
            self._user = os.environ.get("PODPLAY_GIT_USERNAME", "")
            self._password = os.environ.get("PODPLAY_GIT_PASSWORD", "")
        self.path = check_path(path)
        if branch is not None and (not branch or branch.startswith("-") or any(c in branch for c in " \0\n~^:?*[\\")):
            raise InputError(f"--branch {branch!r} is not a branch name")
        self.branch = branch
        self._branch = ""
        self.interval, self.retry, self.verify = interval, retry, verify
        self.log = log or EventLog(fmt="text")
        self.clock, self.mono = clock, monotonic
        self.git = git
        self.loader = load_in_child if isolate_parsing else load_in_process
        self.strict = strict  # --strict: a commit in podman's dialect is refused
        self.id = source_id("sync", self.url)  # not the credentials: a new token is the same source
        self.base = host_paths.root / "sync" / self.id
        self.mirror = self.base / "mirror.git"
        self.commits = self.base / "commits"
        self.current = self.base / "current"
        self.scope_paths = (str(self.current),)
        self.next_fetch: float | None = 0.0
        self.comps: dict[str, Composition] = {}
        self.cache: dict[tuple[str, str], FileLoad] = {}
        self.refused: dict[str, dict] = {}  # commit → why (permanent: never tried again)
        self.failed: dict[str, dict] = {}  # commit → why its apply failed, and when to try again
        self.pending: str | None = None
        self.fetched_at = 0.0
        self.fetch_error = ""
        self.fetch_failed_at = 0.0
        self.head = ""
        self.applied = self._current_target()
        prev = (state.keepers.sources().get(self.id) or {}).get("source") or {}
        self.last_good: str = prev.get("last_good") or ""
        if self.applied and not self.last_good and prev.get("applied") == self.applied:
            self.last_good = self.applied
        for r in prev.get("refused", []):
            self.refused[r["commit"]] = r
        if prev.get("url") == self.url and prev.get("branch") and prev.get("branch") == (branch or prev["branch"]):
            self._branch = prev["branch"]

    # --- git ----------------------------------------------------------------------------------------

    def _run(self, *args: str, git_dir: bool = True, env: dict | None = None,
             timeout: float = GIT_TIMEOUT) -> subprocess.CompletedProcess:
        env = env or _git_env()
        extra: list[str] = []
        if self._user or self._password:
            env = {**env, "GIT_ASKPASS": str(self._askpass()), "PODPLAY_GIT_USERNAME": self._user,
                   "PODPLAY_GIT_PASSWORD": self._password}
            extra = ["-c", "credential.helper="]  # no configured helper may store them (e.g. `store`)
        argv = [self.git] + extra + (["--git-dir", str(self.mirror)] if git_dir else []) + list(args)
        try:
            res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                                 stdin=subprocess.DEVNULL)
            # git's own messages may quote a URL as it was typed somewhere (a config, a redirect)
            res.stdout, res.stderr = redact_url(res.stdout or ""), redact_url(res.stderr or "")
            return res
        except FileNotFoundError:
            raise SyncError(f"{self.git}: command not found; podplay sync needs git") from None
        except subprocess.TimeoutExpired:
            raise SyncError(f"git {args[0]} took more than {timeout:.0f}s; gave up") from None

    def _askpass(self) -> Path:
        """The ASKPASS script (no secret in it), owner-only like everything under the root."""
        path = self.base.parent / "askpass"
        try:
            if path.read_text() == ASKPASS:
                return path
        except OSError:
            pass
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".askpass-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(ASKPASS)
        os.replace(tmp, path)
        return path

    @staticmethod
    def _why(res: subprocess.CompletedProcess) -> str:
        lines = [ln.strip() for ln in (res.stderr or res.stdout or "").splitlines() if ln.strip()]
        text = " ".join(ln.removeprefix("fatal: ").removeprefix("error: ") for ln in lines[-3:])
        return text[:MAX_REASON] or f"exit status {res.returncode}"

    def fetch(self) -> None:
        """Clone the branch (the first time) or fetch it; raises SyncError when the remote is out of reach."""
        # Owner-only: a mirror holds every file of a private repository.
        self.base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.base.parent, 0o700)
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not (self.mirror / "HEAD").exists():
            tmp = self.base / "mirror.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            args = ["clone", "--bare", "--single-branch", "--no-tags", "--quiet"]
            if self.branch:
                args += ["--branch", self.branch]
            res = self._run(*args, "--", self.url, str(tmp), git_dir=False)
            if res.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise SyncError(f"cannot clone {self.url}: {self._why(res)}")
            os.rename(tmp, self.mirror)
            return
        self._scrub_mirror()
        branch = self.branch_name()
        res = self._run("fetch", "--quiet", "--no-tags", "--prune", "--", self.url,
                        f"+refs/heads/{branch}:refs/heads/{branch}")
        if res.returncode != 0:
            raise SyncError(f"cannot fetch {branch} from {self.url}: {self._why(res)}")

    def _scrub_mirror(self) -> None:
        """A mirror cloned by an older podplay kept the URL as typed, credentials and all, in its
        config: store it without them (once; a fetch names the URL itself anyway)."""
        if getattr(self, "_scrubbed", False):
            return
        self._scrubbed = True
        res = self._run("config", "--get", "remote.origin.url")
        if res.returncode == 0 and res.stdout.strip() != self.url:
            self._run("config", "remote.origin.url", self.url)

    def branch_name(self) -> str:
        """--branch, else the remote's default branch as the clone recorded it."""
        if not self._branch:
            if self.branch:
                self._branch = self.branch
            else:
                res = self._run("symbolic-ref", "--short", "HEAD")
                if res.returncode != 0:
                    raise SyncError(f"the mirror of {self.url} has no default branch: {self._why(res)}")
                self._branch = res.stdout.strip()
        return self._branch

    def resolve(self) -> str:
        """The branch's newest commit in the local mirror ('' when there is none yet)."""
        if not (self.mirror / "HEAD").exists():
            return ""
        res = self._run("rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch_name()}^{{commit}}")
        return res.stdout.strip() if res.returncode == 0 else ""

    def _verify(self, commit: str) -> str:
        res = self._run("verify-commit", commit)
        if res.returncode == 0:
            return ""
        if not (res.stderr.strip() or res.stdout.strip()):
            return "the commit is not signed (--verify accepts only signed commits)"
        return f"no valid signature: {self._why(res)}"

    def checkout(self, commit: str) -> Path:
        """The commit's files under commits/<sha>, written whole before they appear."""
        final = self.commits / commit
        if final.is_dir():
            return final
        self.commits.mkdir(parents=True, exist_ok=True)
        tmp = self.commits / f".tmp-{commit}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        env = _git_env()
        env["GIT_INDEX_FILE"] = str(self.base / f".index-{os.getpid()}")
        try:
            for args in (("read-tree", commit), ("checkout-index", "--all", "--force")):
                res = self._run("--work-tree", str(tmp), *args, env=env)
                if res.returncode != 0:
                    raise SyncError(f"cannot check out {commit[:12]}: {self._why(res)}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
        os.rename(tmp, final)
        return final

    # --- the commit the host runs --------------------------------------------------------------------

    def _current_target(self) -> str:
        try:
            return os.path.basename(os.readlink(self.current))
        except OSError:
            return ""

    def _switch(self, commit: str) -> None:
        """Point `current` at a commit atomically (a rename over the old link)."""
        tmp = self.base / f".current-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.join("commits", commit), tmp)
        os.replace(tmp, self.current)

    def _cleanup(self) -> None:
        keep = {self.applied, self.last_good, self.pending}
        for d in self.commits.iterdir() if self.commits.is_dir() else ():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
        self.comps = {c: v for c, v in self.comps.items() if c in keep}

    # --- reading a commit --------------------------------------------------------------------------

    def _escaping_links(self, root: Path) -> list[str]:
        real_root = os.path.realpath(root)
        bad = []
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    target = os.path.realpath(p)
                    if target != real_root and not target.startswith(real_root + os.sep):
                        bad.append(f"{os.path.relpath(p, root)} is a symbolic link to {os.readlink(p)}, "
                                   "outside the repository")
        return bad

    def load(self, commit: str, root: Path) -> tuple[Composition | None, list[str]]:
        """The commit's manifests as they will be recorded (under `current`), or why it is refused."""
        problems = self._escaping_links(root)
        if problems:
            return None, problems
        top = root / self.path
        if not top.is_dir():
            return None, [f"{self.path}: no such directory in commit {commit[:12]}"]
        files, found = find_manifest_files([str(top)])
        # A directory with no manifests describes nothing: a commit may remove every pod.
        errors = [str(d) for d in found if not (d.file == str(top) and not files)]
        keys: list[tuple[str, str]] = []
        todo: list[tuple[tuple[str, str], str, str | None]] = []
        for f in files:
            recorded = str(self.current / os.path.relpath(f, root))
            try:
                data = Path(f).read_bytes()
            except OSError as exc:
                errors.append(f"{os.path.relpath(f, root)}: cannot read: {exc.strerror}")
                continue
            key = (recorded, digest_text(data))
            keys.append(key)
            if key not in self.cache:
                try:
                    todo.append((key, recorded, data.decode("utf-8-sig")))
                except UnicodeDecodeError:
                    todo.append((key, f, None))  # the loader's own message about the encoding
        parsed = dict(zip((k for k, _, _ in todo), self.loader([(p, t) for _, p, t in todo]), strict=True))
        self.cache = {k: self.cache.get(k) or parsed[k] for k in keys}  # only the files of this commit
        loads = [self.cache[k] for k in keys]
        combined = combine_files(loads, complete=True, strict=self.strict)
        errors += [str(d) for d in combined.errors]
        if errors:
            return None, [_rel(_rel(e, str(self.current)), str(root)) for e in errors]
        try:
            desired = build_desired(combined.objects)
        except ManifestError as exc:
            return None, [_rel(str(exc), str(self.current))]
        manifests = ManifestSet(objects=combined.objects, diagnostics=list(combined.warnings),
                                files=[fl.file for fl in loads])
        return Composition(manifests, desired, Scope(self.scope_paths, prune=True), commit), []

    def _comp(self, commit: str) -> Composition | None:
        """The composition of a commit that was accepted before (read again after a restart)."""
        if commit not in self.comps:
            try:
                root = self.checkout(commit)  # already there, unless someone cleaned up by hand
            except SyncError as exc:
                self.log.error("checkout_failed", commit=commit[:12], error=str(exc))
                return None
            comp, _ = self.load(commit, root)
            if comp is None:
                return None
            self.comps[commit] = comp
        return self.comps[commit]

    def _standing(self, held: str = "") -> Composition:
        comp = self._comp(self.applied) if self.applied else None
        if comp is None:
            return empty_composition(self.scope_paths, held or "no commit applied yet")
        return comp

    def _refuse(self, commit: str, reasons: list[str]) -> None:
        reason = "; ".join(reasons)[:MAX_REASON]
        self.refused[commit] = {"commit": commit, "reason": reason, "at": self.clock()}
        while len(self.refused) > KEEP_REFUSED:
            del self.refused[next(iter(self.refused))]
        self.log.error("commit_refused", commit=commit[:12], reason=reason,
                       staying_on=(self.applied[:12] or None))
        shutil.rmtree(self.commits / commit, ignore_errors=True)

    # --- Source ----------------------------------------------------------------------------------

    def start(self, wake: Callable[[], None]) -> None:
        self.next_fetch = 0.0  # fetch at the first refresh

    def close(self) -> None:
        pass

    def due(self) -> float | None:
        return self.next_fetch

    def refresh(self, full: bool) -> Composition:
        self.next_fetch = self.mono() + self.interval
        try:
            self.fetch()
            self.fetched_at, self.fetch_error = self.clock(), ""
        except SyncError as exc:
            if str(exc) != self.fetch_error:
                self.log.warning("fetch_failed", url=self.url, error=str(exc),
                                 using=(self.resolve()[:12] or None) if self.applied or self.head else None)
            self.fetch_error, self.fetch_failed_at = str(exc), self.clock()
        head = self.resolve()
        if head != self.head and head:
            self.log.info("fetched", branch=self.branch_name(), commit=head[:12])
        self.head = head
        if not head:
            return self._standing(self.fetch_error or "no commit fetched yet")
        if head == self.applied or head in self.refused:
            return self._standing()
        failed = self.failed.get(head)
        if failed and self.mono() < failed["retry_at"]:
            return self._standing()
        if self.verify:
            why = self._verify(head)
            if why:
                self._refuse(head, [why])
                return self._standing()
        root = self.checkout(head)
        comp, errors = self.load(head, root)
        if comp is None:
            self._refuse(head, errors)
            return self._standing()
        self.comps[head] = comp
        self.pending = head
        self._switch(head)
        self.log.info("commit", commit=head[:12], previous=self.applied[:12] or None)
        return comp

    def settle(self, comp: Composition, result, error: str) -> Composition | None:
        if self.pending is None or comp.revision != self.pending:
            return None
        commit, self.pending = self.pending, None
        if not error:
            self.applied = self.last_good = commit
            self.failed.pop(commit, None)
            self.log.info("applied", commit=commit[:12])
            self._cleanup()
            return None
        self.failed[commit] = {"commit": commit, "reason": f"apply failed: {error}"[:MAX_REASON], "at": self.clock(),
                               "retry_at": self.mono() + self.retry}
        good = self._comp(self.last_good) if self.last_good and self.last_good != commit else None
        if good is None:
            # Nothing to return to: stay on this commit (partly applied) and try it again later.
            self.applied = commit
            self.log.error("apply_failed_no_rollback", commit=commit[:12], error=error)
            return None
        self.log.error("rollback", commit=commit[:12], to=self.last_good[:12], error=error)
        self._switch(self.last_good)
        self.applied = self.last_good
        return good

    def rebuild(self) -> bool:
        return False  # every new commit is a new composition, which builds anew anyway

    def describe(self) -> dict:
        problem, code = "", 0
        if self.head and self.head != self.applied:
            why = self.refused.get(self.head) or self.failed.get(self.head)
            problem = f"commit {self.head[:12]} not applied: {why['reason']}" if why else ""
            code = EXIT_INVALID if self.head in self.refused else EXIT_APPLY_FAILED
        elif not self.head:
            problem, code = self.fetch_error or "nothing fetched", EXIT_APPLY_FAILED
        return {
            "url": self.url, "branch": self._branch or self.branch or "", "path": self.path, "head": self.head,
            "applied": self.applied, "last_good": self.last_good, "fetched_at": self.fetched_at,
            "fetch_error": self.fetch_error, "fetch_failed_at": self.fetch_failed_at,
            "refused": list(self.refused.values()),
            "failed": [{k: v for k, v in f.items() if k != "retry_at"} for f in self.failed.values()],
            "verify": self.verify, "problem": problem, "exit_code": code,
        }
