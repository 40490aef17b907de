"""Where the signature policy meets the pull path: small hooks the transports call.

A pull resolves its reference to a manifest first; ``CheckedRegistrySource`` judges that
manifest's digest (of the index when the tag names one: that is what skopeo and podman sign)
before ``ingest_image`` asks for any blob, so a refused image costs one manifest request and
leaves nothing in the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reconciler.images.ingest import RegistrySource
from reconciler.images.policy import Policy, load_policy
from reconciler.images.reference import Reference
from reconciler.images.registry import FetchedManifest, RegistryClient
from reconciler.images.signatures import RegistriesD, Verdict, check_image, load_registries_d, read_lookaside


@dataclass
class ImageTrust:
    policy: Policy
    registries_d: RegistriesD

    @classmethod
    def load(cls, policy: str | os.PathLike | None = None, registries_d: str | os.PathLike | None = None
             ) -> ImageTrust:
        return cls(load_policy(policy), load_registries_d(registries_d))

    def check_registry_image(self, logical: Reference, digest: str) -> Verdict:
        """Judge the image ``logical`` (the name asked for, after aliases and search registries;
        a mirror serves it but the name is what the policy and registries.d know) resolved to
        manifest ``digest``. Raises SignatureRefused."""
        base = self.registries_d.lookaside(logical)
        return check_image(self.policy, logical, digest, lambda: read_lookaside(base, logical, digest))


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
            self.verdict = self._trust.check_registry_image(self._logical, fetched.digest)
        return fetched
