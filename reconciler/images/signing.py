"""Signing what push and copy send to a registry, as skopeo does with the same options.

``--sign-by FINGERPRINT``: a simple-signing signature (containers-signature(5)) made by ``gpg``
with the user's own keyring (GNUPGHOME), written to the destination's lookaside-staging (else
lookaside) storage from registries.d: file:// only, as skopeo writes it; publishing that
directory at the lookaside URL readers use is the operator's part.

``--sign-by-sigstore-private-key FILE``: a cosign signature over the cosign payload, made with
the key (cosign's encrypted "ENCRYPTED SIGSTORE/COSIGN PRIVATE KEY" PEM, or a plain PKCS#8 PEM)
and attached to the image in the registry as ``sha256-<hex>.sig`` (registries.d must enable
use-sigstore-attachments for the destination, as containers/image requires).

``SignOptions.check`` runs before anything is copied, so a missing key or passphrase fails
the command before the image is pushed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler import __version__
from reconciler.errors import ImageError, InputError
from reconciler.images.reference import Reference, parse_reference
from reconciler.images.signatures import (
    COSIGN_PAYLOAD_TYPE,
    COSIGN_SIGNATURE_ANNOTATION,
    COSIGN_TYPE,
    SIMPLE_SIGNING_TYPE,
    attachment_tag,
    load_registries_d,
    write_lookaside,
)


@dataclass(frozen=True)
class SignOptions:
    gpg_key: str = ""  # --sign-by
    sigstore_key: str = ""  # --sign-by-sigstore-private-key
    passphrase_file: str = ""  # --sign-passphrase-file

    def __bool__(self) -> bool:
        return bool(self.gpg_key or self.sigstore_key)

    def check(self, destination: str) -> Reference:
        """The destination's reference once the options make sense for it; InputError else."""
        if self.gpg_key and self.sigstore_key:
            raise InputError("--sign-by and --sign-by-sigstore-private-key: give one of them")
        if not destination.startswith("docker://"):
            raise InputError(f"signing needs a registry destination (docker://REF), not {destination}")
        ref = parse_reference(destination[len("docker://"):])
        if self.passphrase_file:
            self.passphrase()
        if self.sigstore_key and not Path(self.sigstore_key).is_file():
            raise InputError(f"--sign-by-sigstore-private-key: {self.sigstore_key} does not exist")
        if self.gpg_key:
            res = _gpg(["--list-secret-keys", self.gpg_key])
            if res.returncode != 0:
                raise InputError(f"--sign-by {self.gpg_key}: no such secret key in gpg's keyring "
                                 f"({os.environ.get('GNUPGHOME', '~/.gnupg')})")
        return ref

    def passphrase(self) -> bytes:
        try:
            data = Path(self.passphrase_file).read_bytes()
        except OSError as exc:
            raise InputError(f"--sign-passphrase-file {self.passphrase_file}: {exc.strerror or exc}") from None
        return data.split(b"\n", 1)[0]  # the first line, as skopeo reads it


def payload(kind: str, ref: Reference, digest: str) -> bytes:
    body = {"critical": {"identity": {"docker-reference": _identity(ref)},
                         "image": {"docker-manifest-digest": digest}, "type": kind},
            "optional": {"creator": f"podplay {__version__}", "timestamp": int(time.time())}}
    return json.dumps(body, separators=(",", ":")).encode()


def _identity(ref: Reference) -> str:
    return f"{ref.repository}@{ref.digest}" if ref.digest else f"{ref.repository}:{ref.tag or 'latest'}"


def sign_pushed(store, opts: SignOptions, ref: Reference, digest: str, credentials=()) -> str:
    """Sign the image pushed as ``ref`` (manifest ``digest``); where the signature went."""
    if opts.gpg_key:
        sig = _gpg_sign(opts, payload(SIMPLE_SIGNING_TYPE, ref, digest))
        base = load_registries_d().lookaside(ref, write=True)
        return write_lookaside(base, ref, digest, sig)
    data = payload(COSIGN_TYPE, ref, digest)
    sig = _sigstore_sign(opts, data)
    rd = load_registries_d()
    if not rd.use_attachments(ref):
        raise ImageError(f"cannot store the sigstore signature of {ref}: registries.d does not enable "
                         f"use-sigstore-attachments for it (add it under docker: {ref.domain} or default-docker)")
    return attach(store.client(ref.domain, ref.path, credentials=credentials), ref, digest, data, sig)


def _gpg(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["gpg", "--batch", "--no-tty", *args], input=data, capture_output=True, timeout=120)
    except FileNotFoundError:
        raise InputError("gpg is not installed: --sign-by needs it (apt-get install gnupg)") from None


def _gpg_sign(opts: SignOptions, data: bytes) -> bytes:
    args = ["--local-user", opts.gpg_key, "--sign", "--output", "-"]
    if opts.passphrase_file:
        args = ["--pinentry-mode", "loopback", "--passphrase-file", opts.passphrase_file, *args]
    # gpg reads the data from a file given to it: stdin may carry nothing else then.
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="podplay-sign-") as f:
        f.write(data)
        f.flush()
        res = _gpg([*args, f.name])
    if res.returncode != 0 or not res.stdout:
        raise ImageError(f"gpg could not sign with {opts.gpg_key}: "
                         f"{res.stderr.decode('utf-8', 'replace').strip() or 'no output'}")
    return res.stdout


def _sigstore_sign(opts: SignOptions, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    key = load_sigstore_private_key(Path(opts.sigstore_key), opts.passphrase() if opts.passphrase_file else None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise InputError(f"{opts.sigstore_key}: unsupported key type {type(key).__name__}")


ENCRYPTED_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")


def load_sigstore_private_key(path: Path, passphrase: bytes | None):
    """A private key from cosign's encrypted PEM (scrypt + nacl/secretbox around PKCS#8 DER) or
    a plain PEM private key."""
    import base64
    import binascii

    from cryptography.hazmat.primitives import serialization

    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--sign-by-sigstore-private-key {path}: cannot read it: {exc}") from None
    kind = next((t for t in ENCRYPTED_TYPES if f"-----BEGIN {t}-----" in text), "")
    if not kind:
        try:
            return serialization.load_pem_private_key(text.encode(), passphrase)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: not a private key: {exc}") from None
    body = text.split(f"-----BEGIN {kind}-----", 1)[1].split(f"-----END {kind}-----", 1)[0]
    try:
        envelope = json.loads(base64.b64decode("".join(body.split())))
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise ValueError(f"unsupported kdf {kdf['name']!r} or cipher {cipher['name']!r}")
        params = kdf["params"]
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(envelope["ciphertext"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a sigstore private key: {exc}") from None
    if passphrase is None:
        raise InputError(f"{path} is encrypted: give its passphrase with --sign-passphrase-file")
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    secret = Scrypt(salt=salt, length=32, n=int(params["N"]), r=int(params["r"]), p=int(params["p"])).derive(passphrase)
    try:
        import nacl.exceptions
        import nacl.secret
    except ImportError:
        raise InputError("decrypting a sigstore private key needs PyNaCl (pip install 'podplay[sign]'): "
                         "its cipher, XSalsa20-Poly1305, is not in cryptography") from None
    try:
        der = nacl.secret.SecretBox(secret).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise InputError(f"{path}: wrong passphrase (or a damaged key)") from None
    return serialization.load_der_private_key(der, None)


def attach(client, ref: Reference, digest: str, data: bytes, sig: bytes) -> str:
    """Add a cosign layer (payload + signature annotation) to ``ref``'s ``sha256-<hex>.sig``
    manifest in the registry, keeping the signatures already there."""
    import base64

    from reconciler.images.manifest import OCI_MANIFEST
    from reconciler.images.registry import ImageNotFoundError
    from reconciler.sha import new as sha_new

    tag = attachment_tag(digest)
    try:
        current = json.loads(client.get_manifest(ref.path, tag, accept=OCI_MANIFEST).data)
        layers = list(current.get("layers") or [])
    except ImageNotFoundError:
        layers = []
    config = b"{}"

    def upload(blob: bytes) -> str:
        d = f"sha256:{sha_new('sha256', blob).hexdigest()}"
        if not client.blob_exists(ref.path, d):
            location = client.start_upload(ref.path)
            client.finish_upload(ref.path, location, d, blob)
        return d

    layers.append({"mediaType": COSIGN_PAYLOAD_TYPE, "size": len(data), "digest": upload(data),
                   "annotations": {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(sig).decode()}})
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                           "digest": upload(config)},
                "layers": layers}
    client.put_manifest(ref.path, tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return f"docker://{ref.domain}/{ref.path}:{tag}"
