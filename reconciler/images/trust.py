"""Where the signature policy meets the pull path: small hooks the transports call.

A pull resolves its reference to a manifest first; ``CheckedRegistrySource`` judges that
manifest's digest (of the index when the tag names one: that is what skopeo and podman sign)
before ``ingest_image`` asks for any blob, so a refused image costs one manifest request and
leaves nothing in the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reconciler.errors import ImageError
from reconciler.images.ingest import RegistrySource
from reconciler.images.manifest import OCI_MANIFEST, parse_descriptor
from reconciler.images.policy import Policy, load_policy
from reconciler.images.reference import Reference
from reconciler.images.registry import FetchedManifest, ImageNotFoundError, RegistryClient
from reconciler.images.signatures import (
    MAX_SIGNATURE_SIZE,
    RegistriesD,
    Signature,
    Verdict,
    attachment_tag,
    check_image,
    load_registries_d,
    parse_attachment,
    read_lookaside,
)


@dataclass
class ImageTrust:
    policy: Policy
    registries_d: RegistriesD

    @classmethod
    def load(cls, policy: str | os.PathLike | None = None, registries_d: str | os.PathLike | None = None
             ) -> ImageTrust:
        return cls(load_policy(policy), load_registries_d(registries_d))

    def check_registry_image(self, logical: Reference, digest: str, client: RegistryClient | None = None,
                             repo: str = "") -> Verdict:
        """Judge the image ``logical`` (the name asked for, after aliases and search registries;
        a mirror serves it but the name is what the policy and registries.d know) resolved to
        manifest ``digest``. Sigstore attachments are read from ``client``/``repo``, where the
        image itself came from, when registries.d says to use them. Raises SignatureRefused."""
        base = self.registries_d.lookaside(logical)

        def signatures() -> list[Signature]:
            found = read_lookaside(base, logical, digest)
            if client is not None and self.registries_d.use_attachments(logical):
                found += read_attachments(client, repo, digest)
            return found

        return check_image(self.policy, logical, digest, signatures)


def read_attachments(client: RegistryClient, repo: str, digest: str) -> list[Signature]:
    """The sigstore signatures attached to ``digest`` (its ``sha256-….sig`` manifest)."""
    tag = attachment_tag(digest)
    where = f"{client.domain}/{repo}:{tag}"
    try:
        fetched = client.get_manifest(repo, tag, accept=OCI_MANIFEST)
    except ImageNotFoundError:
        return []
    out = []
    for layer, sig in parse_attachment(fetched.data, where):
        desc = parse_descriptor(layer, f"signature attachment {where}")
        if desc.size > MAX_SIGNATURE_SIZE:
            raise ImageError(f"signature attachment {where}: a payload of {desc.size} bytes; refusing it")
        payload = client.get_blob_bytes(repo, desc, MAX_SIGNATURE_SIZE)
        out.append(Signature("sigstore", sig, payload, where))
    return out


class CheckedRegistrySource(RegistrySource):
    def __init__(self, client: RegistryClient, repo: str, trust: ImageTrust, logical: Reference,
                 physical: Reference):
        super().__init__(client, repo)
        self._trust, self._logical = trust, logical
        self._top = physical.digest or physical.tag
        self.verdict: Verdict | None = None

    def get_manifest(self, reference: str) -> FetchedManifest:
        fetched = super().get_manifest(reference)
        if reference == self._top and self.verdict is None:
            self.verdict = self._trust.check_registry_image(self._logical, fetched.digest, self.client, self.repo)
        return fetched
