"""PURE  image references and digests, parsed and normalised the way the containers tools do.

``busybox`` means ``docker.io/library/busybox:latest``; ``library/busybox:1.36`` means
``docker.io/library/busybox:1.36``; a first component with a dot or a port, or ``localhost``,
is a registry host. ``localhost/…`` names podman's local images: there is no registry behind it.

The grammar is distribution's reference grammar (the one docker, podman, containerd and
Kubernetes accept). A digest is validated (known algorithm, exact lowercase hex length) before
it is ever used, because the store turns digests into file names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from reconciler.errors import ImageError, InputError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
LOCAL_DOMAIN = "localhost"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

# Algorithms the OCI image-spec registers, with their hex lengths.
DIGEST_ALGORITHMS = {"sha256": 64, "sha512": 128}

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

_REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$")
_TAG_RE = re.compile(rf"^{_TAG}$")
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_IMAGE_ID_RE = re.compile(r"^[a-f0-9]{64}$")


class InvalidReferenceError(InputError, ImageError):
    """A reference or digest the user wrote is malformed (exit code of bad input)."""


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain/path[:tag][@digest]``.

    ``short`` remembers that the user wrote no registry (``busybox``), which is what makes
    registries.conf aliases and unqualified-search registries apply; it does not take part in
    equality.
    """

    domain: str
    path: str
    tag: str = ""
    digest: str = ""
    short: bool = field(default=False, compare=False)

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def is_local(self) -> bool:
        """``localhost/…`` without a port: podman's name space for images built or loaded locally."""
        return self.domain == LOCAL_DOMAIN

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def name(self) -> str:
        """What the store records for this reference: ``repo@digest`` when a digest is given (a
        tag next to a digest was never verified), else ``repo:tag``."""
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    @property
    def familiar(self) -> str:
        """The short form docker prints: ``busybox:latest`` for ``docker.io/library/busybox:latest``."""
        text = str(self)
        if self.domain == DEFAULT_DOMAIN:
            text = text[len(DEFAULT_DOMAIN) + 1:]
            if text.startswith(OFFICIAL_PREFIX):
                text = text[len(OFFICIAL_PREFIX):]
        return text

    def with_domain(self, domain: str, path: str | None = None) -> Reference:
        return replace(self, domain=domain, path=self.path if path is None else path, short=False)

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest="")

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=validate_digest(digest, error=InvalidReferenceError))


def looks_like_image_id(text: str) -> bool:
    """A bare 64-hex string is an image id, never a repository name (docker's rule)."""
    return bool(_IMAGE_ID_RE.match(text))


def _split_domain(name: str) -> tuple[str, str, bool]:
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != LOCAL_DOMAIN
                   and first.lower() == first):
        domain, remainder, short = DEFAULT_DOMAIN, name, True
    else:
        domain, remainder, short = first, rest, False
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder, short


def parse_reference(text: str, *, default_tag: str = DEFAULT_TAG) -> Reference:
    """Parse and normalise a reference; a reference with neither tag nor digest gets
    ``default_tag`` (pass ``""`` to keep it bare, e.g. for a repository given to ``login``).

    Raises InvalidReferenceError with the reason, e.g. for upper case, a bare image id, an
    empty string, a bad digest.
    """
    if not isinstance(text, str) or not text:
        raise InvalidReferenceError("invalid reference: empty image name")
    if text != text.strip():
        raise InvalidReferenceError(f"invalid reference {text!r}: leading or trailing white space")
    if looks_like_image_id(text):
        raise InvalidReferenceError(
            f"invalid reference {text!r}: a 64-character hexadecimal string is an image id, "
            "not a repository name")
    if text.startswith("docker://"):
        raise InvalidReferenceError(f"invalid reference {text!r}: drop the transport prefix 'docker://'")
    domain, remainder, short = _split_domain(text)
    candidate = f"{domain}/{remainder}"
    m = _REFERENCE_RE.match(candidate)
    if not m:
        raise InvalidReferenceError(_explain(text))
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReferenceError(
            f"invalid reference {text!r}: repository name longer than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        digest = validate_digest(digest, error=InvalidReferenceError)
    if not tag and not digest:
        tag = default_tag
    path = name[len(domain) + 1:]
    return Reference(domain, path, tag, digest, short=short)


def _explain(text: str) -> str:
    """Say what is wrong with a reference that did not match the grammar."""
    _, remainder, _ = _split_domain(text)
    name = remainder.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repo = name[: len(name) - len(last)] + last.split(":", 1)[0]
    if repo.lower() != repo:
        return f"invalid reference {text!r}: repository name must be lowercase"
    if "@" in text:
        digest = text.split("@", 1)[1]
        if ":" not in digest:
            return f"invalid reference {text!r}: digest {digest!r} must look like 'sha256:<64 hex digits>'"
    if ":" in last and not _TAG_RE.match(last.split(":", 1)[1]):
        return (f"invalid reference {text!r}: tag must be 1 to 128 characters of letters, digits, "
                "'_', '.' and '-', not starting with '.' or '-'")
    if "//" in text or text.endswith("/") or text.startswith("/"):
        return f"invalid reference {text!r}: empty path component"
    return (f"invalid reference {text!r}: expected [registry[:port]/]name[:tag][@digest] with a lowercase "
            "name of letters, digits and separators ('.', '_', '__', '-')")


def validate_digest(digest: str, *, error: Callable[[str], Exception] = ImageError) -> str:
    """Return ``digest`` when it is ``<algorithm>:<hex>`` with a registered algorithm and exactly
    the right number of lowercase hex digits; raise ``error`` otherwise.

    Content from a registry goes through here before a digest names a file, so that a
    hostile ``sha256:../../x`` can never become a path.
    """
    if not isinstance(digest, str):
        raise error(f"invalid digest {digest!r}: not a string")
    algorithm, sep, hexpart = digest.partition(":")
    if not sep:
        raise error(f"invalid digest {digest!r}: expected '<algorithm>:<hex>'")
    length = DIGEST_ALGORITHMS.get(algorithm)
    if length is None:
        raise error(f"invalid digest {digest!r}: unsupported algorithm {algorithm!r} "
                    f"(supported: {', '.join(DIGEST_ALGORITHMS)})")
    if len(hexpart) != length or not all(c in "0123456789abcdef" for c in hexpart):
        raise error(f"invalid digest {digest!r}: {algorithm} needs exactly {length} lowercase hex digits")
    return digest


def split_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest that ``validate_digest`` accepts."""
    validate_digest(digest)
    algorithm, _, hexpart = digest.partition(":")
    return algorithm, hexpart


def validate_domain(domain: str) -> str:
    """A registry host as registries.conf and login take it: ``host[:port]``."""
    if not _DOMAIN_RE.match(domain):
        raise InvalidReferenceError(f"invalid registry {domain!r}: expected host[:port]")
    return domain


def parse_repository_prefix(text: str) -> tuple[str, str]:
    """``registry[/namespace[/repo]]`` as used by login, auth.json keys and registries.conf
    prefixes: (domain, path); path may be empty. ``docker.io/busybox`` is not expanded, since
    a prefix names a namespace rather than an image."""
    text = text.strip()
    url_form = text.startswith(("https://", "http://"))
    if url_form:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    domain, _, path = text.partition("/")
    if url_form:
        path = ""  # docker's URL keys (https://index.docker.io/v1/) name a whole registry
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    validate_domain(domain)
    if path and not _PATH_RE.match(path):
        raise InvalidReferenceError(f"invalid repository {text!r}")
    return domain, path
