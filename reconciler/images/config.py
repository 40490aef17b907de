"""Where to pull from and as whom: registries.conf (v2, and v1 for old hosts) and auth files.

registries.conf is read like the containers tools read it: ``$PODPLAY_REGISTRIES_CONF`` alone
when set (tests use it), else ``/etc/containers/registries.conf`` (or ``~/.config/containers/
registries.conf`` when that exists) followed by the ``registries.conf.d/*.conf`` drop-ins in
name order. Supported: ``unqualified-search-registries``, ``short-name-mode``, ``[aliases]``,
``[[registry]]`` with ``prefix`` (incl. ``*.example.com``), ``location``, ``insecure``,
``blocked``, ``mirror`` (``location``, ``insecure``, ``pull-from-mirror``) and
``mirror-by-digest-only``. Credential helpers are not supported.

Credentials come, in this order, from pod imagePullSecrets (``RegistryCredential``), then the
auth file given (``--authfile`` / ``$REGISTRY_AUTH_FILE``, exclusively), else
``${XDG_RUNTIME_DIR}/containers/auth.json`` (``/run/containers/$UID/auth.json`` for root),
``~/.config/containers/auth.json``, ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``,
``~/.dockercfg``. An entry keyed by ``host/namespace/repo`` beats one keyed by ``host``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import ImageError, InputError
from reconciler.fsutil import atomic_write
from reconciler.images.reference import (
    DEFAULT_DOMAIN,
    InvalidReferenceError,
    Reference,
    parse_reference,
    parse_repository_prefix,
    validate_domain,
)

SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")
ENV_REGISTRIES_CONF = "PODPLAY_REGISTRIES_CONF"
ENV_AUTH_FILE = "REGISTRY_AUTH_FILE"

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")

if TYPE_CHECKING:  # only a type here: the CLI's pull path need not import the kube model
    from reconciler.desired import RegistryCredential


def is_loopback(domain: str) -> bool:
    """``localhost``, ``127.x.y.z`` or ``[::1]``, with or without a port."""
    host = domain
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"  # all | digest-only | tag-only


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Mirror, ...] = ()
    mirror_by_digest_only: bool = False


@dataclass(frozen=True)
class PullSource:
    """One place to try for a logical reference: the reference rewritten to the endpoint."""

    ref: Reference
    insecure: bool
    mirror: bool = False
    logical: Reference | None = None  # the name asked for (what the signature policy judges)


@dataclass
class RegistriesConfig:
    search: list[str] = field(default_factory=list)
    short_name_mode: str = "permissive"
    aliases: dict[str, str] = field(default_factory=dict)
    registries: list[RegistryEntry] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    # --- lookups -----------------------------------------------------------------------------

    def entry_for(self, ref: Reference) -> RegistryEntry | None:
        """The [[registry]] table with the longest prefix matching ``ref``."""
        text = str(ref)
        best: tuple[int, RegistryEntry] | None = None
        for entry in self.registries:
            if _prefix_matches(entry.prefix, text, ref.domain):
                score = len(entry.prefix)
                if best is None or score > best[0]:
                    best = (score, entry)
        return best[1] if best else None

    def insecure(self, domain: str) -> bool:
        entry = self.entry_for(Reference(domain, "x"))
        return bool(entry and entry.insecure)

    def pull_sources(self, ref: Reference) -> list[PullSource]:
        """Where to fetch ``ref`` from, in order: mirrors, then the (possibly rewritten) primary."""
        entry = self.entry_for(ref)
        if entry is None:
            return [PullSource(ref, False, logical=ref)]
        if entry.blocked:
            raise ImageError(f"registry {ref.domain} is blocked for {ref} in {self._where()}")
        out = []
        by_digest = bool(ref.digest)
        for m in entry.mirrors:
            if entry.mirror_by_digest_only and not by_digest:
                continue
            if m.pull_from_mirror == "digest-only" and not by_digest:
                continue
            if m.pull_from_mirror == "tag-only" and by_digest:
                continue
            out.append(PullSource(_rewrite(ref, entry.prefix, m.location), m.insecure, mirror=True, logical=ref))
        primary = _rewrite(ref, entry.prefix, entry.location) if entry.location else ref
        out.append(PullSource(primary, entry.insecure, logical=ref))
        return out

    def candidates(self, ref: Reference) -> list[Reference]:
        """The fully qualified names a reference may mean. A qualified reference means itself;
        a short name means its alias if one is set, else each unqualified-search registry in
        order, else Docker Hub (which is what Kubernetes means by a short name)."""
        if not ref.short:
            return [ref]
        short_path = ref.path
        if short_path.startswith("library/"):
            # "busybox" was expanded to docker.io/library/busybox; aliases use the name as written.
            plain = short_path[len("library/"):]
        else:
            plain = short_path
        alias = self.aliases.get(plain) or self.aliases.get(short_path)
        if alias:
            target = parse_reference(alias, default_tag="")
            return [Reference(target.domain, target.path, ref.tag, ref.digest)]
        if not self.search:
            return [Reference(ref.domain, ref.path, ref.tag, ref.digest)]
        if self.short_name_mode == "enforcing" and len(self.search) > 1:
            raise ImageError(
                f"short name {plain!r} is ambiguous: short-name-mode is enforcing and it could come from "
                f"any of {', '.join(self.search)}; write the full name (e.g. {self.search[0]}/{plain}) "
                f"or add an alias in {self._where()}")
        out = []
        for registry in self.search:
            path = short_path if registry == DEFAULT_DOMAIN else plain
            out.append(Reference(registry, path, ref.tag, ref.digest))
        return out

    def _where(self) -> str:
        return ", ".join(self.files) or "registries.conf"


def _prefix_matches(prefix: str, text: str, domain: str) -> bool:
    if prefix.startswith("*."):
        host = domain.rsplit(":", 1)[0] if not domain.startswith("[") else domain
        return host.endswith(prefix[1:])
    if not text.startswith(prefix):
        return False
    rest = text[len(prefix):]
    return rest == "" or rest[0] in "/:@"


def _rewrite(ref: Reference, prefix: str, location: str) -> Reference:
    if prefix.startswith("*."):
        return ref
    rest = str(Reference(ref.domain, ref.path))[len(prefix):]
    target = location + rest
    domain, _, path = target.partition("/")
    return Reference(domain, path, ref.tag, ref.digest)


# --- loading registries.conf -------------------------------------------------------------------

def _bool(value, where: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{where}: {name} must be true or false, not {value!r}")
    return value


def _location(value, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {name} must be a string")
    value = value.strip().rstrip("/")
    if "://" in value:
        raise InputError(f"{where}: {name} {value!r} must not include a scheme")
    if value.startswith("*.") and "/" in value:
        raise InputError(f"{where}: wildcard {name} {value!r} may not contain a path")
    try:
        if value.startswith("*."):
            validate_domain(value[2:])
            return value
        base = value.split("@", 1)[0]
        head, sep, last = base.rpartition("/")
        if sep and ":" in last:
            base = f"{head}/{last.split(':', 1)[0]}"
        parse_repository_prefix(base)
    except InvalidReferenceError as exc:
        raise InputError(f"{where}: {name}: {exc}") from None
    return value


def _parse_entry(raw: dict, where: str) -> RegistryEntry:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: [[registry]] must be a table")
    location = _location(raw.get("location", ""), where, "location") if raw.get("location") else ""
    prefix = _location(raw["prefix"], where, "prefix") if raw.get("prefix") else location
    if not prefix:
        raise InputError(f"{where}: a [[registry]] table needs a prefix or a location")
    mirrors = []
    for i, m in enumerate(raw.get("mirror") or []):
        if not isinstance(m, dict) or not m.get("location"):
            raise InputError(f"{where}: mirror {i} of {prefix!r} needs a location")
        pfm = m.get("pull-from-mirror", "") or "all"
        if pfm not in ("all", "digest-only", "tag-only"):
            raise InputError(f"{where}: pull-from-mirror must be all, digest-only or tag-only, not {pfm!r}")
        mirrors.append(Mirror(_location(m["location"], where, "mirror location"),
                              _bool(m.get("insecure", False), where, "insecure"), pfm))
    return RegistryEntry(prefix, location, _bool(raw.get("insecure", False), where, "insecure"),
                         _bool(raw.get("blocked", False), where, "blocked"), tuple(mirrors),
                         _bool(raw.get("mirror-by-digest-only", False), where, "mirror-by-digest-only"))


def _merge_file(cfg: RegistriesConfig, path: Path) -> None:
    where = str(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: invalid TOML: {exc}") from None
    cfg.files.append(where)
    v1 = doc.get("registries")
    if isinstance(v1, dict):
        if "registry" in doc or "unqualified-search-registries" in doc:
            raise InputError(f"{where}: mixes the version 1 [registries.*] format with version 2 keys")
        search = (v1.get("search") or {}).get("registries", [])
        cfg.search = [validate_domain(s) for s in search]
        for name in (v1.get("insecure") or {}).get("registries", []):
            cfg.registries.append(RegistryEntry(name, name, insecure=True))
        for name in (v1.get("block") or {}).get("registries", []):
            cfg.registries.append(RegistryEntry(name, name, blocked=True))
        return
    if "unqualified-search-registries" in doc:
        search = doc["unqualified-search-registries"]
        if not isinstance(search, list) or not all(isinstance(s, str) for s in search):
            raise InputError(f"{where}: unqualified-search-registries must be a list of host[:port] strings")
        try:
            cfg.search = [validate_domain(s) for s in search]
        except InvalidReferenceError as exc:
            raise InputError(f"{where}: unqualified-search-registries: {exc}") from None
    if "short-name-mode" in doc:
        mode = doc["short-name-mode"] or "permissive"
        if mode not in ("enforcing", "permissive", "disabled"):
            raise InputError(f"{where}: short-name-mode must be enforcing, permissive or disabled, not {mode!r}")
        cfg.short_name_mode = mode
    aliases = doc.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise InputError(f"{where}: [aliases] must be a table")
    for name, value in aliases.items():
        if not isinstance(value, str):
            raise InputError(f"{where}: alias {name!r} must be a string")
        if not value:
            cfg.aliases.pop(name, None)  # an empty value erases an alias from an earlier file
            continue
        try:
            target = parse_reference(value, default_tag="")
        except InvalidReferenceError as exc:
            raise InputError(f"{where}: alias {name!r}: {exc}") from None
        if target.short or target.tag or target.digest:
            raise InputError(f"{where}: alias {name!r} must be a fully qualified name without tag or digest")
        cfg.aliases[name] = value
    entries = doc.get("registry") or []
    if not isinstance(entries, list):
        raise InputError(f"{where}: registry must be an array of tables ([[registry]])")
    for raw in entries:
        entry = _parse_entry(raw, where)
        # A drop-in replaces a table with the same prefix from an earlier file.
        cfg.registries = [e for e in cfg.registries if e.prefix != entry.prefix] + [entry]


def load_registries_conf(path: str | os.PathLike | None = None) -> RegistriesConfig:
    cfg = RegistriesConfig()
    explicit = path or os.environ.get(ENV_REGISTRIES_CONF)
    if explicit:
        if not Path(explicit).exists():
            raise InputError(f"registries configuration {explicit} does not exist")
        _merge_file(cfg, Path(explicit))
        return cfg
    home = Path(os.environ.get("HOME") or "/root")
    user_conf = home / ".config/containers/registries.conf"
    main = user_conf if user_conf.exists() else SYSTEM_REGISTRIES_CONF
    _merge_file(cfg, main)
    dropin_dirs = [SYSTEM_REGISTRIES_CONF.parent / "registries.conf.d", home / ".config/containers/registries.conf.d"]
    for d in dropin_dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.conf")):
                _merge_file(cfg, f)
    return cfg


# --- credentials -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credential:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    source: str = ""  # where it came from, for error messages

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


def default_auth_file() -> Path:
    """Where login writes when no --authfile is given (podman's default)."""
    if os.environ.get(ENV_AUTH_FILE):
        return Path(os.environ[ENV_AUTH_FILE])
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "containers/auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def auth_files(explicit: str | os.PathLike | None = None) -> list[tuple[Path, bool]]:
    """Auth files to read, in order, each with whether it has the legacy ~/.dockercfg layout."""
    if explicit:
        return [(Path(explicit), False)]
    if os.environ.get(ENV_AUTH_FILE):
        return [(Path(os.environ[ENV_AUTH_FILE]), False)]
    home = Path(os.environ.get("HOME") or "/root")
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    docker_dir = Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG") else home / ".docker"
    return [(default_auth_file(), False), (config_home / "containers/auth.json", False),
            (docker_dir / "config.json", False), (home / ".dockercfg", True)]


def normalize_auth_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``http://host:5000/v2/`` → ``host:5000``;
    ``host/ns/repo`` stays as it is."""
    if key.startswith(("http://", "https://")):
        key = key.split("://", 1)[1].split("/", 1)[0]
    if key in ("index.docker.io", "registry-1.docker.io"):
        key = DEFAULT_DOMAIN
    return key.rstrip("/")


def _decode_entry(entry: dict, where: str) -> Credential | None:
    if not isinstance(entry, dict):
        return None
    user, password = entry.get("username", "") or "", entry.get("password", "") or ""
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=False).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise InputError(f"{where}: the 'auth' value is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise InputError(f"{where}: the 'auth' value is not base64 of user:password")
    token = entry.get("identitytoken", "") or ""
    cred = Credential(user, password, token, where)
    return None if cred.empty else cred


def _read_auths(path: Path, legacy: bool) -> dict[str, dict]:
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except PermissionError:
        raise InputError(f"cannot read auth file {path}: permission denied") from None
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"auth file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"auth file {path} is not a JSON object")
    auths = doc if legacy else doc.get("auths", {})
    return auths if isinstance(auths, dict) else {}


def _match_key(key: str, domain: str, path: str) -> int:
    """How specifically an auth key matches ``domain/path``: 0 = no match, higher = better."""
    key_domain, _, key_path = key.partition("/")
    if "*" in key_domain:
        if not fnmatch.fnmatchcase(domain, key_domain):
            return 0
    elif key_domain != domain:
        return 0
    if not key_path:
        return 1
    if path == key_path or path.startswith(key_path + "/"):
        return 1 + key_path.count("/") + 1
    return 0


def find_credential(domain: str, path: str, *, pull_secrets: Sequence[RegistryCredential] = (),
                    auth_file: str | os.PathLike | None = None) -> Credential | None:
    """The credential for repository ``domain/path``: pull secrets first, then the auth files."""
    best: tuple[int, Credential] | None = None
    for secret in pull_secrets:
        score = _match_key(normalize_auth_key(secret.registry), domain, path)
        cred = Credential(secret.username, secret.password, secret.identity_token,
                          f"imagePullSecret for {secret.registry}")
        if score and not cred.empty and (best is None or score > best[0]):
            best = (score, cred)
    if best:
        return best[1]
    for file, legacy in auth_files(auth_file):
        auths = _read_auths(file, legacy)
        for key, entry in auths.items():
            score = _match_key(normalize_auth_key(key), domain, path)
            if score and (best is None or score > best[0]):
                cred = _decode_entry(entry, f"{file} ({key})")
                if cred:
                    best = (score, cred)
        if best:
            return best[1]
    return None


def write_credential(key: str, cred: Credential | None, auth_file: str | os.PathLike | None = None) -> Path:
    """Store (or with ``cred=None`` remove) the entry for ``key`` in the auth file, atomically,
    mode 0600, keeping every other entry and key of the file. Returns the file written."""
    path = Path(auth_file) if auth_file else default_auth_file()
    try:
        raw = path.read_bytes()
        doc = json.loads(raw) if raw.strip() else {}
    except FileNotFoundError:
        doc = {}
    except ValueError as exc:
        raise InputError(f"auth file {path} is not valid JSON ({exc}); not overwriting it") from None
    if not isinstance(doc, dict):
        raise InputError(f"auth file {path} is not a JSON object; not overwriting it")
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InputError(f"auth file {path}: 'auths' is not an object; not overwriting it")
    # Entries written by docker for the same registry under a URL key count as the same key.
    for k in [k for k in auths if k != key and normalize_auth_key(k) == key]:
        del auths[k]
    if cred is None:
        auths.pop(key, None)
    elif cred.identity_token:
        auths[key] = {"identitytoken": cred.identity_token}
    else:
        token = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        auths[key] = {"auth": token}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(doc, indent=2, sort_keys=True) + "\n", mode=0o600)
    return path


def list_auth_keys(auth_file: str | os.PathLike | None = None) -> list[str]:
    path = Path(auth_file) if auth_file else default_auth_file()
    return sorted(_read_auths(path, False))


def auth_key(text: str) -> str:
    """The auth.json key for what a user passes to login/logout: ``registry[/ns[/repo]]``."""
    domain, path = parse_repository_prefix(text)
    return f"{domain}/{path}" if path else domain
