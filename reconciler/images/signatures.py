"""Image trust: judge an image by the signature policy before any of its layers is fetched.

``check_image`` is the one entry: given the policy (``reconciler.images.policy``), the name the
image was asked for, the digest of the manifest that name resolved to, and a way to read the
image's signatures, it returns what was decided or raises ``SignatureRefused`` naming the
policy file, the scope and why.

Where signatures live is what ``registries.d`` (containers-registries.d(5)) says: a lookaside
URL (``lookaside``, or the older ``sigstore``) per registry, namespace or repository, else
``default-docker``, else the built-in ``file:///var/lib/containers/sigstore``. Signature N of a
manifest is ``BASE/<repository path>@sha256=<hex>/signature-N``, N from 1 until one is missing
(the layout skopeo and podman write).

Simple signing signatures are OpenPGP messages checked by ``gpgv`` against a keyring made in a
temporary directory from the policy's keys only, as containers/image does with gpgme: no
user keyring and no secret key is ever read. The payload must then name the manifest digest
pulled and an identity the requirement's ``signedIdentity`` accepts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from reconciler.errors import ImageError, InputError
from reconciler.images.policy import (
    DOCKER,
    Policy,
    PolicyError,
    Requirement,
    Scope,
    docker_scopes,
    identity_matches,
    identity_text,
    parse_signed_identity,
)
from reconciler.images.reference import InvalidReferenceError, Reference

SYSTEM_REGISTRIES_D = Path("/etc/containers/registries.d")
ENV_REGISTRIES_D = "PODPLAY_REGISTRIES_D"
BUILTIN_LOOKASIDE = "file:///var/lib/containers/sigstore"
MAX_SIGNATURE_SIZE = 4 << 20  # containers/image's limit on one signature
MAX_SIGNATURES = 128
SIMPLE_SIGNING_TYPE = "atomic container signature"


COSIGN_TYPE = "cosign container image signature"
COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


class SignatureRefused(ImageError):
    """The policy refuses the image (permanent: retrying will not sign it)."""

    def __init__(self, message: str, *, scope: Scope | None = None, reason: str = ""):
        super().__init__(message)
        self.scope, self.reason = scope, reason


@dataclass(frozen=True)
class Signature:
    """One signature of an image: a simple-signing OpenPGP message (``payload`` empty: it is
    inside ``data``), or a sigstore payload with its raw signature bytes."""

    format: str  # "simple" | "sigstore"
    data: bytes
    payload: bytes = b""
    where: str = ""


# --- registries.d ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignatureStorage:
    lookaside: str = ""
    lookaside_staging: str = ""
    use_sigstore_attachments: bool | None = None


@dataclass(frozen=True)
class RegistriesD:
    default: SignatureStorage = field(default_factory=SignatureStorage)
    docker: dict[str, SignatureStorage] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def storage_for(self, ref: Reference) -> SignatureStorage:
        for scope in docker_scopes(ref):
            if scope in self.docker:
                return self.docker[scope]
        return self.default

    def lookaside(self, ref: Reference, *, write: bool = False) -> str:
        """The lookaside base URL for reading (or with ``write``, for writing) ``ref``'s
        signatures: the most specific entry that sets one, else the built-in directory."""
        for entry in (*(self.docker[s] for s in docker_scopes(ref) if s in self.docker), self.default):
            url = (entry.lookaside_staging or entry.lookaside) if write else entry.lookaside
            if url:
                return url
        return BUILTIN_LOOKASIDE

    def use_attachments(self, ref: Reference) -> bool:
        for entry in (*(self.docker[s] for s in docker_scopes(ref) if s in self.docker), self.default):
            if entry.use_sigstore_attachments is not None:
                return entry.use_sigstore_attachments
        return False


def load_registries_d(directory: str | os.PathLike | None = None) -> RegistriesD:
    """Every ``*.yaml`` of ``directory`` (else ``$PODPLAY_REGISTRIES_D``, else the user's
    ``~/.config/containers/registries.d`` or ``/etc/containers/registries.d``), in name order.
    A scope set in two files, or ``default-docker`` twice, is an error (as in containers/image)."""
    if directory is None:
        directory = os.environ.get(ENV_REGISTRIES_D) or None
    if directory is None:
        user = Path.home() / ".config/containers/registries.d"
        directory = user if os.geteuid() != 0 and user.is_dir() else SYSTEM_REGISTRIES_D
    directory = Path(directory)
    if not directory.is_dir():
        return RegistriesD()
    default: SignatureStorage | None = None
    docker: dict[str, SignatureStorage] = {}
    seen: dict[str, str] = {}
    files = sorted(p for p in directory.iterdir() if p.suffix == ".yaml" and p.is_file())
    if files:
        import yaml  # only when there is something to read: every pull asks
    for path in files:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{path}: not valid YAML: {exc}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise PolicyError(f"{path}: must be a mapping with default-docker and/or docker")
        for key in doc:
            if key not in ("default-docker", "docker"):
                raise PolicyError(f"{path}: unknown key {key!r}; known: default-docker, docker")
        if doc.get("default-docker") is not None:
            if default is not None:
                raise PolicyError(f"{path}: default-docker: already set in {seen['default-docker']}")
            default = _storage(doc["default-docker"], path, "default-docker")
            seen["default-docker"] = str(path)
        scopes = doc.get("docker") or {}
        if not isinstance(scopes, dict):
            raise PolicyError(f"{path}: docker: must map scopes to settings")
        for scope, raw in scopes.items():
            if scope in docker:
                raise PolicyError(f"{path}: docker.{scope}: already set in {seen[scope]}")
            docker[scope] = _storage(raw, path, f"docker.{scope}")
            seen[scope] = str(path)
    return RegistriesD(default or SignatureStorage(), docker, tuple(str(p) for p in files))


def _storage(raw, path: Path, where: str) -> SignatureStorage:
    if raw is None:
        return SignatureStorage()
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: {where}: must be a mapping")
    known = ("lookaside", "lookaside-staging", "sigstore", "sigstore-staging", "use-sigstore-attachments")
    for key in raw:
        if key not in known:
            raise PolicyError(f"{path}: {where}.{key}: unknown; known: {', '.join(known)}")
    values = {}
    for new, old in (("lookaside", "sigstore"), ("lookaside-staging", "sigstore-staging")):
        if new in raw and old in raw:
            raise PolicyError(f"{path}: {where}: both {new} and its older name {old} are set")
        value = raw.get(new, raw.get(old, ""))
        if value and not isinstance(value, str):
            raise PolicyError(f"{path}: {where}.{new if new in raw else old}: must be a URL")
        if value and urlparse(value).scheme not in ("file", "http", "https"):
            raise PolicyError(f"{path}: {where}.{new if new in raw else old}: {value!r} is not a file://, "
                              "http:// or https:// URL")
        values[new] = value or ""
    attach = raw.get("use-sigstore-attachments")
    if attach is not None and not isinstance(attach, bool):
        raise PolicyError(f"{path}: {where}.use-sigstore-attachments: must be true or false")
    return SignatureStorage(values["lookaside"], values["lookaside-staging"], attach)


def signature_url(base: str, ref: Reference, digest: str, index: int) -> str:
    """Where signature ``index`` (1-based) of ``digest`` lives below a lookaside base URL."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{base.rstrip('/')}/{ref.path}@{algorithm}={hexpart}/signature-{index}"


def read_lookaside(base: str, ref: Reference, digest: str) -> list[Signature]:
    """The signatures stored for ``digest`` (none when the first is missing). Lookaside storage
    holds simple-signing signatures only (sigstore ones travel as attachments)."""
    out: list[Signature] = []
    for index in range(1, MAX_SIGNATURES + 1):
        url = signature_url(base, ref, digest, index)
        data = _read_url(url)
        if data is None:
            break
        out.append(Signature("simple", data, where=url))
    return out


def attachment_tag(digest: str) -> str:
    """The tag cosign and containers/image give an image's signature manifest."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}-{hexpart}.sig"


def parse_attachment(manifest: bytes, where: str) -> list[tuple[dict, bytes]]:
    """(payload layer descriptor JSON, signature bytes) of each cosign signature in an
    attachment manifest; other layers are not signatures and are skipped."""
    import base64
    import binascii

    try:
        doc = json.loads(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ImageError(f"signature attachment {where} is not JSON") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise ImageError(f"signature attachment {where} has no layers list")
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != COSIGN_PAYLOAD_TYPE:
            continue
        annotations = layer.get("annotations") or {}
        sig = annotations.get(COSIGN_SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(sig, str):
            continue
        try:
            out.append((layer, base64.b64decode(sig, validate=True)))
        except (binascii.Error, ValueError):
            continue  # judged as no signature, like a missing one
    return out


def _read_url(url: str) -> bytes | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            with path.open("rb") as f:
                data = f.read(MAX_SIGNATURE_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ImageError(f"cannot read signature {path}: {exc.strerror or exc}") from None
    else:
        import requests

        try:
            with requests.get(url, timeout=30, stream=True) as resp:
                if resp.status_code == 404:
                    return None
                if resp.status_code != 200:
                    raise ImageError(f"reading signature {url}: HTTP {resp.status_code}")
                data = resp.raw.read(MAX_SIGNATURE_SIZE + 1, decode_content=True)
        except requests.RequestException as exc:
            from reconciler.errors import TemporaryImageError

            raise TemporaryImageError(f"reading signature {url}: {exc}") from None
    if len(data) > MAX_SIGNATURE_SIZE:
        raise ImageError(f"signature {url} is larger than {MAX_SIGNATURE_SIZE} bytes; refusing it")
    return data


def write_lookaside(base: str, ref: Reference, digest: str, signature: bytes) -> str:
    """Add ``signature`` after the ones stored (file:// only, as skopeo writes them)."""
    parsed = urlparse(base)
    if parsed.scheme != "file":
        raise ImageError(f"cannot write signatures to {base}: only file:// lookaside storage can be written; "
                         "set lookaside-staging in registries.d")
    from reconciler.fsutil import atomic_write

    for index in range(1, MAX_SIGNATURES + 1):
        path = Path(unquote(urlparse(signature_url(base, ref, digest, index)).path))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, signature)
            return str(path)
    raise ImageError(f"{ref}@{digest} already has {MAX_SIGNATURES} signatures")


# --- the decision ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    accepted: bool
    scope: Scope
    reason: str  # what was decided, for `inspect` and the log


def check_image(policy: Policy, ref: Reference | None, digest: str, signatures: Callable[[], list[Signature]],
                *, transport: str = DOCKER, scope_names: list[str] | None = None, subject: str = "",
                unsigned: str = "") -> Verdict:
    """Judge the image ``ref`` resolved to manifest ``digest``; raise SignatureRefused unless
    every requirement of its scope is met. ``signatures`` is asked only when a requirement
    needs them (so an insecureAcceptAnything scope costs no lookup). Other transports than
    docker give their ``scope_names`` (most specific first), a ``subject`` for messages and,
    since they carry no signatures, why (``unsigned``)."""
    if transport == DOCKER and ref is not None:
        scope = policy.scope_for(transport, ref)
        subject = identity_text(ref)
    else:
        scope = policy.scope_in(transport, scope_names or [])
    cached: list[list[Signature]] = []

    def sigs() -> list[Signature]:
        if not cached:
            cached.append(signatures())
        return cached[0]

    reasons = []
    for req in scope.requirements:
        ok, why = _requirement_met(req, ref, digest, sigs, unsigned)
        if not ok:
            raise SignatureRefused(f"image {subject} ({digest}) is refused by the signature policy "
                                   f"{policy.source}, scope {scope.describe()}: {why}", scope=scope, reason=why)
        reasons.append(why)
    return Verdict(True, scope, "; ".join(reasons))


def _requirement_met(req: Requirement, ref: Reference | None, digest: str, sigs: Callable[[], list[Signature]],
                     unsigned: str = "") -> tuple[bool, str]:
    if req.type == "insecureAcceptAnything":
        return True, "accepted without signatures (insecureAcceptAnything)"
    if req.type == "reject":
        return False, "the scope's requirement is reject"
    if req.type == "signedBaseLayer":
        return False, "signedBaseLayer is not implemented (by containers/image either), so nothing satisfies it"
    if req.type not in ("signedBy", "sigstoreSigned"):
        return False, f"unknown requirement {req.type}"
    if ref is None:
        return False, f"{req.type} requires a signature and {unsigned or 'this transport carries none'}"
    fmt = "simple" if req.type == "signedBy" else "sigstore"
    found = [s for s in sigs() if s.format == fmt]
    if not found:
        where = "in the lookaside storage" if fmt == "simple" else "as a sigstore attachment"
        return False, f"{req.type} requires a signature and none was found {where}"
    keys = _key_material(req)
    verify = verify_simple_signing if fmt == "simple" else verify_sigstore
    problems = []
    for i, sig in enumerate(found, 1):
        try:
            signer = verify(req, keys, sig, ref, digest)
        except _Bad as exc:
            problems.append(f"signature {i}: {exc}")
            continue
        return True, f"signed by {signer} ({req.type})"
    return False, f"no signature satisfies {req.type}: " + "; ".join(problems)


class _Bad(Exception):
    """One signature does not satisfy one requirement (others may)."""


def _key_material(req: Requirement) -> list[tuple[str, bytes]]:
    out = []
    for path in req.key_paths:
        try:
            out.append((path, Path(path).read_bytes()))
        except OSError as exc:
            raise InputError(f"signature policy key {path}: cannot read it: {exc.strerror or exc}") from None
    out.extend((f"keyData #{i + 1}", data) for i, data in enumerate(req.key_data))
    return out


def verify_simple_signing(req: Requirement, keys: list[tuple[str, bytes]], signature: Signature, ref: Reference,
                          digest: str) -> str:
    """The fingerprint of the policy key that made ``signature``, once its payload is checked
    against ``digest`` and ``ref``; raises _Bad with the reason otherwise."""
    payload, fingerprint = _gpgv(keys, signature.data)
    _check_payload(req, parse_simple_signing(payload), ref, digest)
    return fingerprint


def verify_sigstore(req: Requirement, keys: list[tuple[str, bytes]], signature: Signature, ref: Reference,
                    digest: str) -> str:
    """The name of the policy public key that verifies ``signature`` (ECDSA with SHA-256,
    ed25519, or RSA PKCS#1 v1.5 with SHA-256 over the payload bytes, as cosign signs), once
    the payload is checked against ``digest`` and ``ref``."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    signer = ""
    for name, data in keys:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise InputError(f"signature policy key {name}: not a PEM public key") from None
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature.data, signature.payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature.data, signature.payload)
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature.data, signature.payload, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise InputError(f"signature policy key {name}: unsupported key type {type(key).__name__}")
        except InvalidSignature:
            continue
        signer = name
        break
    if not signer:
        raise _Bad("it is not signed by a key the policy names (or its bytes were altered)")
    _check_payload(req, parse_simple_signing(signature.payload, COSIGN_TYPE), ref, digest)
    return signer


def _check_payload(req: Requirement, signed: tuple[Reference, str], ref: Reference, digest: str) -> None:
    signed_ref, signed_digest = signed
    if signed_digest != digest:
        raise _Bad(f"it signs manifest {signed_digest}, not the pulled {digest}")
    if not identity_matches(req.identity, ref, signed_ref):
        raise _Bad(f"it signs the identity {identity_text(signed_ref)}, which {req.identity.describe()} "
                   f"does not accept for {identity_text(ref)}")


def parse_simple_signing(payload: bytes, kind: str = SIMPLE_SIGNING_TYPE) -> tuple[Reference, str]:
    """(identity, manifest digest) of a simple-signing payload (containers-signature(5); cosign's
    is the same with its own type); the critical section must be exactly what the format defines."""
    try:
        doc = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Bad("its payload is not JSON") from None
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict) or set(critical) != {"type", "image", "identity"}:
        raise _Bad("its payload's critical section is not {type, image, identity}")
    if critical["type"] != kind:
        raise _Bad(f"its payload type is {critical['type']!r}, not {kind!r}")
    image, identity = critical["image"], critical["identity"]
    if not isinstance(image, dict) or set(image) != {"docker-manifest-digest"} \
            or not isinstance(image["docker-manifest-digest"], str):
        raise _Bad("its payload's critical.image is not {docker-manifest-digest}")
    if not isinstance(identity, dict) or set(identity) != {"docker-reference"} \
            or not isinstance(identity["docker-reference"], str):
        raise _Bad("its payload's critical.identity is not {docker-reference}")
    try:
        signed = parse_signed_identity(identity["docker-reference"])
    except InvalidReferenceError as exc:
        raise _Bad(f"its identity is not a reference: {exc}") from None
    return signed, image["docker-manifest-digest"]


def _gpgv(keys: list[tuple[str, bytes]], signature: bytes) -> tuple[bytes, str]:
    """(signed payload, signing key fingerprint) from gpgv over a keyring of ``keys`` only."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podplay-gpgv-") as tmp:
        home = Path(tmp)
        keyring = home / "trusted.gpg"
        with keyring.open("wb") as f:
            for name, data in keys:
                f.write(_dearmor(home, name, data) if data.lstrip().startswith(b"-----BEGIN") else data)
        sig = home / "signature"
        sig.write_bytes(signature)
        out = home / "payload"
        try:
            res = subprocess.run(["gpgv", "--homedir", str(home), "--keyring", str(keyring), "--status-fd", "1",
                                  "--output", str(out), str(sig)], capture_output=True, timeout=60)
        except FileNotFoundError:
            raise ImageError("gpgv is not installed: it is needed to check signedBy signatures "
                             "(apt-get install gpgv)") from None
        status = res.stdout.decode("utf-8", "replace").splitlines()
        words = [line.split()[1] for line in status if line.startswith("[GNUPG:] ") and len(line.split()) > 1]
        valid = [line.split()[2] for line in status if line.startswith("[GNUPG:] VALIDSIG ")]
        bad = {"BADSIG", "ERRSIG", "EXPKEYSIG", "REVKEYSIG", "EXPSIG", "NO_PUBKEY"} & set(words)
        if res.returncode != 0 or bad or len(valid) != 1 or words.count("GOODSIG") != 1:
            if "NO_PUBKEY" in words or "ERRSIG" in words:
                raise _Bad("it is not signed by a key the policy names")
            if "BADSIG" in words:
                raise _Bad("its OpenPGP signature does not verify (the bytes were altered)")
            if bad:
                raise _Bad(f"gpgv reports {', '.join(sorted(bad))}")
            detail = res.stderr.decode("utf-8", "replace").strip().splitlines()
            raise _Bad(f"it is not a valid OpenPGP signature ({detail[-1] if detail else 'gpgv failed'})")
        try:
            payload = out.read_bytes()
        except OSError:
            raise _Bad("gpgv produced no signed payload") from None
        return payload, valid[0]


def _dearmor(home: Path, name: str, data: bytes) -> bytes:
    import subprocess

    try:
        res = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-options", "--dearmor"],
                             input=data, capture_output=True, timeout=60)
    except FileNotFoundError:
        raise ImageError(f"signature policy key {name} is ASCII-armored and gpg (to convert it) is not "
                         "installed; apt-get install gnupg, or give the binary key") from None
    if res.returncode != 0 or not res.stdout:
        raise InputError(f"signature policy key {name}: not an OpenPGP public key "
                         f"({res.stderr.decode('utf-8', 'replace').strip()})")
    return res.stdout
