"""Signed images for trust tests, made by the field's tools: throwaway GPG keys (gpg in a
temporary GNUPGHOME, never the user's) and ``skopeo copy --sign-by`` into the test registry,
with signatures written where a test's own registries.d says.

Example::

    key = GpgKey.make(tmp_path / "release")
    trust = TrustDir.make(tmp_path, registry)            # policy.json + registries.d + lookaside dir
    trust.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/fleet": [trust.signed_by(key)]}}})
    digest = sign_and_push(registry, "fleet/app", "v1", key, trust.registries_d)
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import _tool_env, factory
from tests.support.registry import Registry


@dataclass(frozen=True)
class GpgKey:
    home: Path  # its own GNUPGHOME (mode 0700), inside the test's temporary directory
    fingerprint: str
    public: Path  # ASCII-armored public key
    public_binary: Path

    @classmethod
    def make(cls, home: Path, name: str = "Release") -> GpgKey:
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o700)
        env = {**_tool_env(), "GNUPGHOME": str(home)}
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
                        f"{name} <{name.lower()}@example.com>", "ed25519", "sign", "never"],
                       env=env, check=True, capture_output=True)
        out = subprocess.run(["gpg", "--batch", "--list-keys", "--with-colons"], env=env, check=True,
                             capture_output=True, text=True).stdout
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        public = home / "public.asc"
        public.write_bytes(subprocess.run(["gpg", "--batch", "--armor", "--export", fpr], env=env, check=True,
                                          capture_output=True).stdout)
        binary = home / "public.gpg"
        binary.write_bytes(subprocess.run(["gpg", "--batch", "--export", fpr], env=env, check=True,
                                          capture_output=True).stdout)
        return cls(home, fpr, public, binary)

    def close(self) -> None:
        # gpg may have started an agent for the key generation: stop it with the home it serves.
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True)


@dataclass(frozen=True)
class TrustDir:
    root: Path

    @classmethod
    def make(cls, root: Path) -> TrustDir:
        (root / "registries.d").mkdir(parents=True, exist_ok=True)
        (root / "sigstore").mkdir(exist_ok=True)
        t = cls(root)
        t.lookaside(t.sigstore)
        t.policy({"default": [{"type": "insecureAcceptAnything"}]})
        return t

    @property
    def policy_file(self) -> Path:
        return self.root / "policy.json"

    @property
    def registries_d(self) -> Path:
        return self.root / "registries.d"

    @property
    def sigstore(self) -> Path:
        return self.root / "sigstore"

    def policy(self, doc: dict) -> None:
        self.policy_file.write_text(json.dumps(doc))

    def lookaside(self, directory: Path | str, *, staging: Path | None = None) -> None:
        """Where signatures are read (a directory, or a URL) and written."""
        url = directory if isinstance(directory, str) else f"file://{directory}"
        text = f"default-docker:\n  lookaside: {url}\n"
        if staging is not None:
            text += f"  lookaside-staging: file://{staging}\n"
        (self.registries_d / "default.yaml").write_text(text)

    @staticmethod
    def signed_by(key: GpgKey, identity: dict | None = None, *, binary: bool = False) -> dict:
        req = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key.public_binary if binary else key.public)}
        if identity:
            req["signedIdentity"] = identity
        return req

    def env(self) -> dict[str, str]:
        return {"PODPLAY_SIGNATURE_POLICY": str(self.policy_file), "PODPLAY_REGISTRIES_D": str(self.registries_d)}


def busybox_layout() -> str:
    """An OCI layout source (``oci:DIR:img``) of the worker's busybox image."""
    f = factory()
    return f"oci:{f.layout(f.build())}:img"


def skopeo_copy(*args: str, key: GpgKey | None = None) -> None:
    env = _tool_env()
    if key is not None:
        env["GNUPGHOME"] = str(key.home)
    res = subprocess.run(["skopeo", "copy", "-q", *args], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"skopeo copy {' '.join(args)} failed: {res.stderr.strip()}")


def sign_and_push(registry: Registry, repo: str, tag: str, key: GpgKey | None, registries_d: Path,
                  source: str | None = None) -> str:
    """Push busybox (or ``source``) to ``registry/repo:tag`` with skopeo, signed by ``key``
    (unsigned when None); the digest its tag points at."""
    digestfile = registries_d.parent / f"digest-{uuid.uuid4().hex}"
    sign = ["--sign-by", key.fingerprint] if key is not None else []
    skopeo_copy("--dest-tls-verify=false", "--registries.d", str(registries_d), "--preserve-digests",
                "--digestfile", str(digestfile), *sign, source or busybox_layout(),
                f"docker://{registry.host}/{repo}:{tag}", key=key)
    digest = digestfile.read_text().strip()
    os.unlink(digestfile)
    return digest


# --- sigstore ----------------------------------------------------------------------------------
# Debian's skopeo is built with sigstore disabled ("Debian-local change"), so these signatures are
# made here, in the documented cosign format: the payload is containers-signature(5)'s JSON with
# type "cosign container image signature", signed over its exact bytes, attached to the image as
# an OCI manifest tagged sha256-<hex>.sig whose layer carries the signature in an annotation.

def sigstore_key(kind: str = "ecdsa"):
    """(private key object, PEM public key bytes) of a fresh ``ecdsa`` (P-256) or ``ed25519`` key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public


def cosign_payload(identity: str, digest: str) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": identity},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":")).encode()


def sign_payload(key, payload: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return key.sign(payload)


def attach_sigstore(registry: Registry, repo: str, digest: str, identity: str, key, *,
                    payload: bytes | None = None, signature: bytes | None = None) -> str:
    """Attach a cosign signature of ``identity``/``digest`` (or the ``payload`` given) to
    ``repo``'s image ``digest``; ``signature`` overrides the one ``key`` makes. The tag."""
    import base64
    import hashlib

    payload = payload if payload is not None else cosign_payload(identity, digest)
    sig = signature if signature is not None else sign_payload(key, payload)
    config = b"{}"
    registry.put_blob(repo, config)
    registry.put_blob(repo, payload)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                           "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
                "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(payload),
                            "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
                            "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}}]}
    tag = digest.replace(":", "-") + ".sig"
    registry.put_manifest(repo, tag, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    return tag


def encrypted_sigstore_key(path: Path, key, passphrase: bytes) -> Path:
    """Write ``key`` in the encrypted format skopeo/cosign use (scrypt + nacl/secretbox around
    PKCS#8 DER, PEM type ENCRYPTED SIGSTORE PRIVATE KEY)."""
    import base64

    import nacl.secret
    import nacl.utils
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = os.urandom(32), nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    secret = Scrypt(salt=salt, length=32, n=32768, r=8, p=1).derive(passphrase)
    sealed = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    envelope = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                        "salt": base64.b64encode(salt).decode()},
                "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
                "ciphertext": base64.b64encode(sealed).decode()}
    body = base64.encodebytes(json.dumps(envelope).encode()).decode()
    kind = "ENCRYPTED SIGSTORE PRIVATE KEY"
    path.write_text(f"-----BEGIN {kind}-----\n{body}-----END {kind}-----\n")
    return path
