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
from reconciler.images.policy import Policy, load_policy, path_scopes
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


    def check_file_image(self, transport: str, path: str, name: str, digest: str) -> Verdict:
        """Judge an image read from an OCI layout or an archive (``transport`` oci, oci-archive,
        docker-archive): scoped by its absolute path (with ``:name`` first when one is given),
        then the parent directories. These formats carry no signatures, so only
        insecureAcceptAnything lets them in where a policy asks for more."""
        path = os.path.abspath(path) if path and path != "-" else ""
        names = ([f"{path}:{name}"] if path and name else []) + path_scopes(path)
        subject = f"{transport}:{path or '-'}" + (f":{name}" if name else "")
        return check_image(self.policy, None, digest, list, transport=transport, scope_names=names, subject=subject,
                           unsigned=f"{transport} carries none (sign it where it is pushed: docker://)")


def check_source(store, loc, opened) -> Verdict | None:
    """The copy and load hook: judge what ``open_source`` opened, before anything is copied.
    Images already in podplay's store were judged when they came in, and are not again."""
    if loc.transport == "podplay":
        return None
    if loc.transport == "docker":
        source = opened.source
        return store.trust.check_registry_image(opened.names[0], opened.resolved, source.client, source.repo)
    return store.trust.check_file_image(loc.transport, loc.path, loc.ref, opened.resolved or opened.reference)


def check_archive(store, transport: str, path: str, digest: str) -> Verdict:
    """The load hook: each image of an archive is judged before any is loaded."""
    return store.trust.check_file_image(transport, path, "", digest)


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


def signature_status(store, name: Reference, digest: str, *, remote: bool = True) -> dict:
    """What ``inspect`` shows: whether the current policy accepts image ``name`` at manifest
    ``digest`` now, by which scope, and why (a refusal is a status here, not an error). With
    ``remote`` sigstore attachments are read from the registry too."""
    from reconciler.errors import PodplayError
    from reconciler.images.signatures import SignatureRefused

    try:
        trust = store.trust
        client = store.client(name.domain, name.path) if remote and trust.registries_d.use_attachments(name) else None
        verdict = trust.check_registry_image(name, digest, client, name.path)
    except SignatureRefused as exc:
        return {"Name": str(name), "Digest": digest, "Accepted": False,
                "Scope": exc.scope.describe() if exc.scope else "", "Reason": exc.reason or str(exc),
                "Policy": trust.policy.source}
    except PodplayError as exc:
        return {"Name": str(name), "Digest": digest, "Accepted": None, "Reason": f"cannot tell: {exc}"}
    return {"Name": str(name), "Digest": digest, "Accepted": True, "Scope": verdict.scope.describe(),
            "Reason": verdict.reason, "Policy": trust.policy.source}
