"""SHA-2 for podplay's own small digests, without loading OpenSSL.

``import hashlib`` loads libcrypto, which adds about 3.5 MB to the resident size of every
process, most of all to the long-running `podplay watch`. The digests podplay makes of its own
data (spec hashes, file fingerprints, cache keys, chain IDs, CNI chain names) are a few hundred
bytes to a few kB, where CPython's built-in SHA-2 is as fast as OpenSSL's. Hashing image blobs
(megabytes, where OpenSSL is several times faster) uses hashlib, imported where the blob is read.
"""

from __future__ import annotations

try:  # CPython >= 3.12
    from _sha2 import sha256, sha512  # type: ignore[import-not-found]
except ImportError:
    try:  # CPython 3.11
        from _sha256 import sha256  # type: ignore[import-not-found,no-redef]
        from _sha512 import sha512  # type: ignore[import-not-found,no-redef]
    except ImportError:  # an interpreter built without them
        from hashlib import sha256, sha512  # type: ignore[assignment]

__all__ = ["new", "sha256", "sha512", "streaming"]

_BUILTIN = {"sha256": sha256, "sha512": sha512}


def new(algorithm: str, data: bytes = b""):
    """A hash object for small data (up to some kB), by the name a digest carries."""
    try:
        return _BUILTIN[algorithm](data)
    except KeyError:
        raise ValueError(f"unsupported hash type {algorithm}") from None


def streaming(algorithm: str):
    """A hash object for a blob of megabytes: OpenSSL's, loaded on first use."""
    import hashlib

    return hashlib.new(algorithm)
