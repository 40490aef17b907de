"""PURE  the containers signature policy (containers-policy.json(5)): parsed, scoped, matched.

The same file podman, skopeo, CRI-O and buildah read decides which images podplay accepts:

    {"default": [{"type": "reject"}],
     "transports": {"docker": {"registry.example.com/fleet": [
         {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/release.gpg"}]}}}

A reference is judged by the requirements of its most specific scope: for the docker
transport ``host/ns/repo:tag`` (or ``@digest``), ``host/ns/repo``, each parent namespace,
``host``, then ``*.example.com`` wildcards from the longest, then the transport's ``""``,
then ``default``. Every requirement of that scope must be satisfied.

This module only reads and decides what a signature must say; checking signatures (gpgv,
cryptography) and fetching them lives in ``reconciler.images.signatures``. A malformed policy
is a ``PolicyError`` naming the file and the key: never "accept".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import InputError
from reconciler.images.reference import (
    InvalidReferenceError,
    Reference,
    parse_reference,
    parse_repository_prefix,
)

SYSTEM_POLICY = Path("/etc/containers/policy.json")
ENV_POLICY = "PODPLAY_SIGNATURE_POLICY"

# Transports whose scopes are registry names (the ones podplay pulls from or reads).
DOCKER = "docker"
KNOWN_TRANSPORTS = ("docker", "atomic", "containers-storage", "dir", "docker-archive", "docker-daemon",
                    "oci", "oci-archive", "sif", "tarball")

# What a signature's identity must be, relative to the image's reference.
IDENTITY_TYPES = ("matchExact", "matchRepoDigestOrExact", "matchRepository", "exactReference",
                  "exactRepository", "remapIdentity")


class PolicyError(InputError):
    """The policy file (or a registries.d file) is malformed: names the file and the key."""


@dataclass(frozen=True)
class Identity:
    type: str = "matchRepoDigestOrExact"
    reference: str = ""  # exactReference's dockerReference
    repository: str = ""  # exactRepository's dockerRepository
    prefix: str = ""  # remapIdentity
    signed_prefix: str = ""

    def describe(self) -> str:
        if self.type == "exactReference":
            return f"exactReference {self.reference}"
        if self.type == "exactRepository":
            return f"exactRepository {self.repository}"
        if self.type == "remapIdentity":
            return f"remapIdentity {self.prefix} -> {self.signed_prefix}"
        return self.type


@dataclass(frozen=True)
class Requirement:
    """One entry of a scope's list. ``keys`` are file paths; ``key_data`` inline key bytes."""

    type: str  # insecureAcceptAnything | reject | signedBy | sigstoreSigned | signedBaseLayer
    key_type: str = ""
    key_paths: tuple[str, ...] = ()
    key_data: tuple[bytes, ...] = ()
    identity: Identity = field(default_factory=Identity)

    def describe(self) -> str:
        if self.type in ("insecureAcceptAnything", "reject", "signedBaseLayer"):
            return self.type
        keys = ", ".join(self.key_paths) or f"{len(self.key_data)} inline key(s)"
        return f"{self.type} ({keys}; identity {self.identity.describe()})"


@dataclass(frozen=True)
class Scope:
    """Where a list of requirements came from: ``transport`` "" means the global default."""

    transport: str
    scope: str
    requirements: tuple[Requirement, ...]

    def describe(self) -> str:
        if not self.transport:
            return "default"
        return f"{self.transport} {self.scope!r}" if self.scope else f"{self.transport} (transport default)"


@dataclass(frozen=True)
class Policy:
    source: str  # the file, or a description of the built-in default
    default: tuple[Requirement, ...]
    transports: dict[str, dict[str, tuple[Requirement, ...]]]

    def scope_for(self, transport: str, ref: Reference | None = None, scope_name: str = "") -> Scope:
        """The requirements that judge an image: its most specific scope. ``ref`` for the
        docker transport; ``scope_name`` (a path) for the others."""
        names = docker_scopes(ref) if ref is not None else path_scopes(scope_name)
        return self.scope_in(transport, names)

    def scope_in(self, transport: str, names: list[str]) -> Scope:
        """The first of ``names`` (most specific first) the transport has, else its ``""``,
        else the default."""
        scopes = self.transports.get(transport, {})
        for name in names:
            if name in scopes:
                return Scope(transport, name, scopes[name])
        if "" in scopes:
            return Scope(transport, "", scopes[""])
        return Scope("", "", self.default)

    def entries(self) -> list[Scope]:
        """Every scope, the default first, in file order (for ``image trust show``)."""
        out = [Scope("", "", self.default)]
        for transport, scopes in self.transports.items():
            out.extend(Scope(transport, name, reqs) for name, reqs in scopes.items())
        return out


def docker_scopes(ref: Reference) -> list[str]:
    """A docker reference's scopes, most specific first (without the transport's ``""``)."""
    out = [identity_text(ref)]
    parts = ref.repository.split("/")
    out.extend("/".join(parts[:i]) for i in range(len(parts), 0, -1))
    host = ref.domain.split(":", 1)[0] if not ref.domain.startswith("[") else ""
    labels = host.split(".")
    out.extend("*." + ".".join(labels[i:]) for i in range(1, len(labels)))
    return out


def path_scopes(path: str) -> list[str]:
    """Scopes of a path-named transport (oci, docker-archive…): the path, then its parents."""
    if not path:
        return []
    out = [path]
    p = Path(path)
    out.extend(str(parent) for parent in p.parents if str(parent) not in ("", "."))
    return out


def identity_text(ref: Reference) -> str:
    """``repo:tag`` or ``repo@digest``: the form scopes and signature identities are compared in
    (a digest wins over a tag, as containers/image treats name:tag@digest)."""
    if ref.digest:
        return f"{ref.repository}@{ref.digest}"
    return f"{ref.repository}:{ref.tag}" if ref.tag else ref.repository


# --- identity rules ---------------------------------------------------------------------------

def identity_matches(rule: Identity, image: Reference, signed: Reference) -> bool:
    """Whether a signature claiming ``signed`` is acceptable for the image pulled as ``image``."""
    if rule.type == "matchExact":
        return bool(image.tag or image.digest) and identity_text(_canon(image)) == identity_text(signed)
    if rule.type == "matchRepoDigestOrExact":
        image = _canon(image)
        if image.digest:
            return image.repository == signed.repository
        return bool(image.tag) and identity_text(image) == identity_text(signed)
    if rule.type == "matchRepository":
        return image.repository == signed.repository
    if rule.type == "exactReference":
        want = _parse_identity(rule.reference)
        return identity_text(want) == identity_text(signed)
    if rule.type == "exactRepository":
        return _parse_identity(rule.repository).repository == signed.repository
    if rule.type == "remapIdentity":
        mapped = remap(image, rule.prefix, rule.signed_prefix)
        return identity_matches(Identity("matchRepoDigestOrExact"), mapped or image, signed)
    return False


def _canon(ref: Reference) -> Reference:
    return Reference(ref.domain, ref.path, "" if ref.digest else ref.tag, ref.digest)


def remap(ref: Reference, prefix: str, signed_prefix: str) -> Reference | None:
    """``ref`` with ``prefix`` replaced by ``signed_prefix`` when the prefix matches at a
    component boundary (``host``, ``host/ns`` or ``host/ns/repo``); else None."""
    name = ref.repository
    if name != prefix and not name.startswith(prefix + "/"):
        return None
    text = signed_prefix + name[len(prefix):]
    if ref.digest:
        text += "@" + ref.digest
    elif ref.tag:
        text += ":" + ref.tag
    return parse_reference(text, default_tag="")


def _parse_identity(text: str) -> Reference:
    return parse_reference(text, default_tag="")


def parse_signed_identity(text: str) -> Reference:
    """A signature's ``docker-reference``, normalised (``busybox`` is ``docker.io/library/busybox``)."""
    return parse_reference(text, default_tag="")


# --- parsing ---------------------------------------------------------------------------------

def load_policy(path: str | Path | None = None) -> Policy:
    """The policy from ``path``; else ``$PODPLAY_SIGNATURE_POLICY``; else the user's
    ``~/.config/containers/policy.json`` (non-root) or ``/etc/containers/policy.json``.

    When no file exists the policy is insecureAcceptAnything for everything, what Debian's
    containers-common ships: podplay's own checks (digests, sizes, no foreign layers) still
    apply, and a host that wants more writes the file, which then binds podman and skopeo too.
    """
    import os

    if path is None:
        path = os.environ.get(ENV_POLICY) or None
    if path is None:
        user = Path.home() / ".config/containers/policy.json"
        candidates = [user] if os.geteuid() != 0 else []
        candidates.append(SYSTEM_POLICY)
        for cand in candidates:
            if cand.exists():
                path = cand
                break
        else:
            accept = (Requirement("insecureAcceptAnything"),)
            return Policy(f"built-in default (no {SYSTEM_POLICY})", accept, {})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(f"signature policy {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read signature policy {path}: {exc}") from None
    return parse_policy(text, str(path))


def parse_policy(text: str, source: str) -> Policy:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: must be a JSON object with a \"default\" list")
    unknown = set(doc) - {"default", "transports"}
    if unknown:
        raise PolicyError(f"{source}: unknown key {sorted(unknown)[0]!r}; a policy has \"default\" and \"transports\"")
    if "default" not in doc:
        raise PolicyError(f"{source}: \"default\" is missing: say what applies to images no scope names "
                          "(e.g. [{\"type\": \"reject\"}])")
    default = _requirements(doc["default"], source, "default", DOCKER)
    transports: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    raw = doc.get("transports", {})
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: transports: must be an object of transport names")
    for transport, scopes in raw.items():
        if transport not in KNOWN_TRANSPORTS:
            raise PolicyError(f"{source}: transports.{transport}: unknown transport; known: "
                              f"{', '.join(KNOWN_TRANSPORTS)}")
        if not isinstance(scopes, dict):
            raise PolicyError(f"{source}: transports.{transport}: must be an object of scopes")
        out = {}
        for scope, reqs in scopes.items():
            where = f"transports.{transport}[{scope!r}]"
            if transport == DOCKER and scope:
                _check_docker_scope(scope, source, where)
            out[scope] = _requirements(reqs, source, where, transport)
        transports[transport] = out
    return Policy(source, default, transports)


def _check_docker_scope(scope: str, source: str, where: str) -> None:
    if scope.startswith("*."):
        if "/" in scope or ":" in scope or "*" in scope[2:] or len(scope) < 3:
            raise PolicyError(f"{source}: {where}: a wildcard scope is *.DOMAIN with no path, port or other *")
        return
    host = scope.split("/", 1)[0]
    last = scope.rsplit("/", 1)[-1]
    try:
        if "@" in scope or (":" in last and "/" in scope):
            # A tagged or digested image: compared as written, so it must be the normal form
            # ("docker.io/busybox:1" would silently never match docker.io/library/busybox:1).
            ref = parse_reference(scope, default_tag="")
            if ref.short or identity_text(ref) != scope:
                raise PolicyError(f"{source}: {where}: a scope is a fully qualified name: write "
                                  f"{identity_text(ref)!r}")
            return
        parse_repository_prefix(scope)
    except InvalidReferenceError as exc:
        raise PolicyError(f"{source}: {where}: not a docker scope: {exc}") from None
    if "." not in host and ":" not in host and host != "localhost":
        raise PolicyError(f"{source}: {where}: a scope starts with the registry host (e.g. "
                          f"'docker.io/library/{scope}')")


def _requirements(value, source: str, where: str, transport: str) -> tuple[Requirement, ...]:
    if not isinstance(value, list):
        raise PolicyError(f"{source}: {where}: must be a list of requirements")
    if not value:
        raise PolicyError(f"{source}: {where}: an empty list of requirements (write [{{\"type\": "
                          "\"insecureAcceptAnything\"}] or [{\"type\": \"reject\"}] to say which)")
    return tuple(_requirement(item, source, f"{where}[{i}]", transport) for i, item in enumerate(value))


def _requirement(item, source: str, where: str, transport: str) -> Requirement:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise PolicyError(f"{source}: {where}: a requirement is an object with a \"type\"")
    kind = item["type"]

    def only(*keys: str) -> None:
        extra = set(item) - {"type", *keys}
        if extra:
            raise PolicyError(f"{source}: {where}.{sorted(extra)[0]}: not a field of {kind}")

    if kind in ("insecureAcceptAnything", "reject"):
        only()
        return Requirement(kind)
    if kind == "signedBaseLayer":
        only("baseLayerIdentity")
        return Requirement(kind)
    if kind == "signedBy":
        only("keyType", "keyPath", "keyPaths", "keyData", "signedIdentity")
        key_type = item.get("keyType")
        if key_type != "GPGKeys":
            raise PolicyError(f"{source}: {where}.keyType: must be \"GPGKeys\" (the only key type), not {key_type!r}")
        paths, data = _keys(item, source, where, ("keyPath", "keyPaths", "keyData"))
        return Requirement(kind, key_type, paths, data, _identity(item, source, where, transport))
    if kind == "sigstoreSigned":
        only("keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "rekorPublicKeyPath", "rekorPublicKeyData",
             "signedIdentity", "pki")
        for unsupported in ("fulcio", "pki", "rekorPublicKeyPath", "rekorPublicKeyData"):
            if unsupported in item:
                raise PolicyError(f"{source}: {where}.{unsupported}: not supported by podplay (public keys only: "
                                  "keyPath, keyPaths, keyData, keyDatas)")
        paths, data = _keys(item, source, where, ("keyPath", "keyPaths", "keyData", "keyDatas"))
        return Requirement(kind, "", paths, data, _identity(item, source, where, transport))
    raise PolicyError(f"{source}: {where}.type: unknown requirement {kind!r}; known: insecureAcceptAnything, "
                      "reject, signedBy, sigstoreSigned, signedBaseLayer")


def _keys(item: dict, source: str, where: str, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    given = [n for n in names if n in item]
    if len(given) != 1:
        raise PolicyError(f"{source}: {where}: exactly one of {', '.join(names)} is required"
                          + (f" (found {', '.join(given)})" if given else ""))
    name = given[0]
    value = item[name]
    if name in ("keyPath",):
        if not isinstance(value, str) or not value:
            raise PolicyError(f"{source}: {where}.{name}: must be a file path")
        return (value,), ()
    if name == "keyPaths":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(f"{source}: {where}.{name}: must be a non-empty list of file paths")
        return tuple(value), ()
    values = value if name == "keyDatas" else [value]
    if name == "keyDatas" and (not isinstance(value, list) or not value):
        raise PolicyError(f"{source}: {where}.{name}: must be a non-empty list of base64 keys")
    out = []
    import base64
    import binascii

    for v in values:
        if not isinstance(v, str):
            raise PolicyError(f"{source}: {where}.{name}: must be base64 text")
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise PolicyError(f"{source}: {where}.{name}: not valid base64") from None
    return (), tuple(out)


def _identity(item: dict, source: str, where: str, transport: str) -> Identity:
    raw = item.get("signedIdentity")
    if raw is None:
        return Identity()
    where = f"{where}.signedIdentity"
    if not isinstance(raw, dict) or raw.get("type") not in IDENTITY_TYPES:
        raise PolicyError(f"{source}: {where}: needs a \"type\" of {', '.join(IDENTITY_TYPES)}")
    kind = raw["type"]
    fields = {"exactReference": ("dockerReference",), "exactRepository": ("dockerRepository",),
              "remapIdentity": ("prefix", "signedPrefix")}.get(kind, ())
    extra = set(raw) - {"type", *fields}
    if extra:
        raise PolicyError(f"{source}: {where}.{sorted(extra)[0]}: not a field of {kind}")
    for f in fields:
        if not isinstance(raw.get(f), str) or not raw[f]:
            raise PolicyError(f"{source}: {where}.{f}: required for {kind}")
    if kind == "exactReference":
        ref = _checked_ref(raw["dockerReference"], source, f"{where}.dockerReference")
        if not (ref.tag or ref.digest):
            raise PolicyError(f"{source}: {where}.dockerReference: must name a tag or digest "
                              "(use exactRepository for a repository)")
        return Identity(kind, reference=identity_text(ref))
    if kind == "exactRepository":
        ref = _checked_ref(raw["dockerRepository"], source, f"{where}.dockerRepository")
        if ref.tag or ref.digest:
            raise PolicyError(f"{source}: {where}.dockerRepository: a repository has no tag or digest")
        return Identity(kind, repository=ref.repository)
    if kind == "remapIdentity":
        for f in ("prefix", "signedPrefix"):
            _check_prefix(raw[f], source, f"{where}.{f}")
        return Identity(kind, prefix=raw["prefix"], signed_prefix=raw["signedPrefix"])
    return Identity(kind)


def _checked_ref(text: str, source: str, where: str) -> Reference:
    try:
        return _parse_identity(text)
    except InvalidReferenceError as exc:
        raise PolicyError(f"{source}: {where}: {exc}") from None


def _check_prefix(text: str, source: str, where: str) -> None:
    """A remapIdentity prefix is a host, host/namespace or host/repository (no tag, digest or
    short name), as the format requires."""
    if "@" in text or text.endswith("/"):
        raise PolicyError(f"{source}: {where}: {text!r} is not a host[/namespace[/repo]] prefix")
    host, _, rest = text.partition("/")
    if "." not in host and ":" not in host and host != "localhost":
        raise PolicyError(f"{source}: {where}: {text!r} must start with a registry host")
    if rest:
        try:
            ref = parse_reference(text, default_tag="")
        except InvalidReferenceError as exc:
            raise PolicyError(f"{source}: {where}: {exc}") from None
        if ref.tag or ref.repository != text:
            raise PolicyError(f"{source}: {where}: {text!r} is not a host[/namespace[/repo]] prefix")
