"""Image trust on pull: the containers signature policy against signatures skopeo made.

Each test has its own throwaway GPG keys, policy.json, registries.d and lookaside directory
(all under tmp_path); a refused image leaves no blob in the store."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from reconciler.images.driver import LocalImageStore
from reconciler.images.reference import parse_reference
from reconciler.images.signatures import SignatureRefused, signature_url
from tests.support.signing import GpgKey, TrustDir, sign_and_push, skopeo_copy

pytestmark = pytest.mark.skipif(shutil.which("gpgv") is None or shutil.which("gpg") is None,
                                reason="needs gpg and gpgv")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    base = tmp_path_factory.mktemp("gpg")
    release, other = GpgKey.make(base / "release", "Release"), GpgKey.make(base / "other", "Other")
    yield release, other
    release.close()
    other.close()


@pytest.fixture
def trust(tmp_path, registry, keys, monkeypatch):
    t = TrustDir.make(tmp_path / "trust")
    t.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/signed": [t.signed_by(keys[0])]}}})
    for name, value in t.env().items():
        monkeypatch.setenv(name, value)
    return t


def _store(host_paths) -> LocalImageStore:
    return LocalImageStore(host_paths, tls_verify=False)


def _refused(host_paths, ref: str) -> str:
    store = _store(host_paths)
    with pytest.raises(SignatureRefused) as err:
        store.pull(ref)
    assert store.list_images() == []
    assert not any(store.store.has_blob(d) for d in _all_blobs(store)), "a refused image downloads no blob"
    store.close()
    return str(err.value)


def _all_blobs(store) -> list[str]:
    root = store.store.root / "blobs" / "sha256"
    return [f"sha256:{p.name}" for p in root.iterdir()] if root.is_dir() else []


def test_signed_image_is_pulled_and_by_digest_too(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    digest = sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    store = _store(host_paths)
    info = store.pull(f"{registry.host}/{name}:v1")
    assert info.layers
    # matchRepoDigestOrExact (the default identity): by digest the repository is enough.
    store.pull(f"{registry.host}/{name}@{digest}")
    store.close()


def test_unsigned_image_is_refused_naming_scope_and_reason(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", None, trust.registries_d)
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert str(trust.policy_file) in msg
    assert f"scope docker '{registry.host}/signed'" in msg
    assert "signedBy requires a signature and none was found" in msg


def test_image_signed_by_another_key_is_refused(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", keys[1], trust.registries_d)
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert "not signed by a key the policy names" in msg


def test_signature_for_another_digest_is_refused(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    signed = sign_and_push(registry, f"{name}-a", "v1", keys[0], trust.registries_d)
    other = sign_and_push(registry, name, "v1", None, trust.registries_d, source=_different_image())
    assert signed != other
    # The real signature of -a, copied to where the other image's signatures are looked up.
    ref_a, ref_b = parse_reference(f"{registry.host}/{name}-a:v1"), parse_reference(f"{registry.host}/{name}:v1")
    src = _path(signature_url(f"file://{trust.sigstore}", ref_a, signed, 1))
    dst = _path(signature_url(f"file://{trust.sigstore}", ref_b, other, 1))
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    trust.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/signed": [trust.signed_by(keys[0], {"type": "matchRepository"})]}}})
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert f"it signs manifest {signed}, not the pulled {other}" in msg


def test_signature_for_another_identity_is_refused(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    digest = sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    # The same manifest under another tag: its signature names :v1, not :v2.
    skopeo_copy("--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests",
                f"docker://{registry.host}/{name}:v1", f"docker://{registry.host}/{name}:v2")
    msg = _refused(host_paths, f"{registry.host}/{name}:v2")
    assert f"it signs the identity {registry.host}/{name}:v1, which matchRepoDigestOrExact does not accept " \
           f"for {registry.host}/{name}:v2" in msg
    # matchRepository accepts any tag of the signed repository; exactReference only what it names.
    for identity, ok in (({"type": "matchRepository"}, True),
                         ({"type": "exactReference", "dockerReference": f"{registry.host}/{name}:v1"}, True),
                         ({"type": "exactReference", "dockerReference": f"{registry.host}/{name}:v3"}, False)):
        trust.policy({"default": [{"type": "reject"}], "transports": {"docker": {
            f"{registry.host}/signed": [trust.signed_by(keys[0], identity)]}}})
        store = _store(host_paths)
        if ok:
            assert store.pull(f"{registry.host}/{name}:v2").manifest_digest
        else:
            with pytest.raises(SignatureRefused):
                store.pull(f"{registry.host}/{name}:v2")
        store.close()
    assert digest


def test_forged_signature_bytes_are_refused(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    digest = sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    sig = _path(signature_url(f"file://{trust.sigstore}", parse_reference(f"{registry.host}/{name}:v1"), digest, 1))
    data = bytearray(sig.read_bytes())
    data[len(data) // 2] ^= 0x01
    sig.write_bytes(bytes(data))
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert "no signature satisfies signedBy: signature 1:" in msg


def test_missing_lookaside_is_refused(host_paths, registry, repo, keys, trust, tmp_path):
    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    trust.lookaside(tmp_path / "nowhere")
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert "none was found" in msg


def test_reject_scope_and_binary_keys(host_paths, registry, repo, keys, trust):
    name = repo  # t/… : not under /signed, so the default (reject) applies
    sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    msg = _refused(host_paths, f"{registry.host}/{name}:v1")
    assert "scope default: the scope's requirement is reject" in msg
    trust.policy({"default": [trust.signed_by(keys[0], binary=True)]})
    store = _store(host_paths)
    assert store.pull(f"{registry.host}/{name}:v1").layers
    store.close()


def test_pull_command_reports_refusal_without_traceback(host_paths, registry, repo, keys, trust):
    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", None, trust.registries_d)
    res = subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root), "--runroot",
                          str(host_paths.runroot), "--signature-policy", str(trust.policy_file), "--registries.d",
                          str(trust.registries_d), "pull", "--tls-verify=false", f"{registry.host}/{name}:v1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 5, res.stderr
    assert "Traceback" not in res.stderr
    assert "refused by the signature policy" in res.stderr
    trust.policy({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]})
    res = subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root), "--runroot",
                          str(host_paths.runroot), "--signature-policy", str(trust.policy_file),
                          "pull", "--tls-verify=false", f"{registry.host}/{name}:v1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "default[0]: exactly one of keyPath, keyPaths, keyData" in res.stderr


def _path(url: str):
    from pathlib import Path

    return Path(url[len("file://"):])


def _different_image() -> str:
    """Another image than busybox's default (one more layer): an oci: source for skopeo."""
    from tests.support.images import factory

    f = factory()
    return f"oci:{f.layout(f.build(layers=2))}:img"


# --- sigstoreSigned (attachments) -----------------------------------------------------------------

@pytest.fixture
def sigstore_trust(tmp_path, registry, monkeypatch):
    from tests.support.signing import sigstore_key

    t = TrustDir.make(tmp_path / "trust")
    (t.registries_d / "attach.yaml").write_text(f"docker:\n  {registry.host}/cosigned:\n"
                                                "    use-sigstore-attachments: true\n")
    ecdsa, ed = sigstore_key("ecdsa"), sigstore_key("ed25519")
    (t.root / "ecdsa.pub").write_bytes(ecdsa[1])
    (t.root / "ed25519.pub").write_bytes(ed[1])
    t.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/cosigned": [{"type": "sigstoreSigned",
                                        "keyPaths": [str(t.root / "ecdsa.pub"), str(t.root / "ed25519.pub")]}]}}})
    for name, value in t.env().items():
        monkeypatch.setenv(name, value)
    return t, ecdsa[0], ed[0]


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519"])
def test_sigstore_signed_image_is_pulled(host_paths, registry, repo, sigstore_trust, kind):
    from tests.support.signing import attach_sigstore

    t, ecdsa, ed = sigstore_trust
    name = f"cosigned/{repo.split('/')[-1]}"
    digest = sign_and_push(registry, name, "v1", None, t.registries_d)
    attach_sigstore(registry, name, digest, f"{registry.host}/{name}:v1", ecdsa if kind == "ecdsa" else ed)
    store = _store(host_paths)
    assert store.pull(f"{registry.host}/{name}:v1").layers
    store.close()


def test_sigstore_refusals_name_the_reason(host_paths, registry, repo, sigstore_trust):
    from tests.support.signing import attach_sigstore, cosign_payload, sigstore_key

    t, ecdsa, _ = sigstore_trust
    name = f"cosigned/{repo.split('/')[-1]}"
    ref = f"{registry.host}/{name}:v1"
    digest = sign_and_push(registry, name, "v1", None, t.registries_d)
    assert "sigstoreSigned requires a signature and none was found as a sigstore attachment" in \
        _refused(host_paths, ref)
    attach_sigstore(registry, name, digest, ref, sigstore_key()[0])  # another key
    assert "not signed by a key the policy names" in _refused(host_paths, ref)
    good = cosign_payload(ref, digest)
    forged = good.replace(b"v1", b"v2")  # the payload altered after signing
    from tests.support.signing import sign_payload

    attach_sigstore(registry, name, digest, ref, ecdsa, payload=forged, signature=sign_payload(ecdsa, good))
    assert "not signed by a key the policy names (or its bytes were altered)" in _refused(host_paths, ref)
    other = "sha256:" + "e" * 64
    attach_sigstore(registry, name, digest, ref, ecdsa, payload=cosign_payload(ref, other))
    assert f"it signs manifest {other}, not the pulled {digest}" in _refused(host_paths, ref)
    attach_sigstore(registry, name, digest, f"{registry.host}/{name}:v9", ecdsa)
    assert f"it signs the identity {registry.host}/{name}:v9" in _refused(host_paths, ref)
    # Attachments are read only where registries.d says so.
    attach_sigstore(registry, name, digest, ref, ecdsa)
    (t.registries_d / "attach.yaml").unlink()
    assert "none was found as a sigstore attachment" in _refused(host_paths, ref)


# --- copy and load ------------------------------------------------------------------------------

def test_copy_judges_registry_sources_before_copying(host_paths, registry, repo, keys, trust, tmp_path):
    from reconciler.images.transports import copy_image

    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, f"{name}-good", "v1", keys[0], trust.registries_d)
    sign_and_push(registry, f"{name}-bad", "v1", None, trust.registries_d)
    store = _store(host_paths)
    with pytest.raises(SignatureRefused, match="signedBy requires a signature and none was found"):
        copy_image(store, f"docker://{registry.host}/{name}-bad:v1", f"oci:{tmp_path / 'out'}:x")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SignatureRefused):
        copy_image(store, f"docker://{registry.host}/{name}-bad:v1", "podplay:localhost/bad:1")
    assert store.list_images() == []
    copy_image(store, f"docker://{registry.host}/{name}-good:v1", "podplay:localhost/good:1")
    assert store.get_image("localhost/good:1") is not None
    # What is in the store was judged on the way in: copying it out is not judged again.
    copy_image(store, "podplay:localhost/good:1", f"oci:{tmp_path / 'out'}:x")
    store.close()


def test_copy_and_load_judge_layouts_and_archives_by_path(host_paths, trust, tmp_path, keys):
    from reconciler.images.transports import copy_image, load_images
    from tests.support.signing import busybox_layout

    (tmp_path / "images").mkdir()
    layout = tmp_path / "images" / "layout"
    skopeo_copy(busybox_layout(), f"oci:{layout}:app")
    archive = tmp_path / "images" / "app.tar"
    skopeo_copy(busybox_layout(), f"docker-archive:{archive}:example.com/app:1")
    store = _store(host_paths)
    # The default (reject) applies to both.
    with pytest.raises(SignatureRefused, match=rf"oci:{layout}:app .* scope default"):
        copy_image(store, f"oci:{layout}:app", "podplay:localhost/app:1")
    with pytest.raises(SignatureRefused, match=rf"docker-archive:{archive} .* scope default"):
        load_images(store, archive)
    assert store.list_images() == []
    # A layout or archive carries no signatures: signedBy cannot be met there.
    trust.policy({"default": [{"type": "reject"}], "transports": {
        "oci": {str(layout): [trust.signed_by(keys[0])]},
        "docker-archive": {str(tmp_path / "images"): [{"type": "insecureAcceptAnything"}]}}})
    with pytest.raises(SignatureRefused, match=f"scope oci '{layout}': signedBy requires a signature and oci "
                                               "carries none"):
        copy_image(store, f"oci:{layout}:app", "podplay:localhost/app:1")
    loaded = load_images(store, archive)  # a parent directory's scope
    assert [i.names for i in loaded] == [("example.com/app:1",)]
    trust.policy({"default": [{"type": "reject"}], "transports": {
        "oci": {f"{layout}:app": [{"type": "insecureAcceptAnything"}]}}})
    copy_image(store, f"oci:{layout}:app", "podplay:localhost/app:1")  # path:name, the most specific scope
    store.close()


# --- signing on push and copy: interoperability ---------------------------------------------------

def _podplay(host_paths, trust, *args, env=None, check=True):
    res = subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root), "--runroot",
                          str(host_paths.runroot), "--signature-policy", str(trust.policy_file), "--registries.d",
                          str(trust.registries_d), *args], capture_output=True, text=True, timeout=180,
                         env={**__import__("os").environ, **(env or {})})
    if check:
        assert res.returncode == 0, res.stderr
    return res


def test_podplay_signs_with_gpg_and_skopeo_verifies_under_the_same_policy(host_paths, registry, repo, keys, trust,
                                                                         tmp_path):
    name = f"signed/{repo.split('/')[-1]}"
    source = sign_and_push(registry, f"{repo}-src", "v1", None, trust.registries_d)
    assert source
    policy = {"default": [{"type": "reject"}], "transports": {
        "docker": {f"{registry.host}/signed": [trust.signed_by(keys[0])], f"{registry.host}/t": [
            {"type": "insecureAcceptAnything"}]},
        "oci": {"": [{"type": "insecureAcceptAnything"}]}}}
    trust.policy(policy)
    gnupg = {"GNUPGHOME": str(keys[0].home)}
    # Refused before anything is pushed: a key gpg does not have.
    res = _podplay(host_paths, trust, "copy", "--tls-verify=false", "--sign-by", "0" * 40,
                   f"docker://{registry.host}/{repo}-src:v1", f"docker://{registry.host}/{name}:v1", env=gnupg,
                   check=False)
    assert res.returncode == 1 and "no such secret key" in res.stderr
    _podplay(host_paths, trust, "copy", "--tls-verify=false", "--sign-by", keys[0].fingerprint,
             f"docker://{registry.host}/{repo}-src:v1", f"docker://{registry.host}/{name}:v1", env=gnupg)
    # skopeo, under the same policy.json and registries.d, accepts what podplay signed ...
    skopeo_copy("--src-tls-verify=false", "--remove-signatures", "--policy", str(trust.policy_file), "--registries.d",
                str(trust.registries_d), f"docker://{registry.host}/{name}:v1", f"oci:{tmp_path / 'out'}:x")
    # ... and refuses the same image under another tag (the signature names :v1).
    skopeo_copy("--src-tls-verify=false", "--dest-tls-verify=false", f"docker://{registry.host}/{name}:v1",
                f"docker://{registry.host}/{name}:v2")
    with pytest.raises(RuntimeError, match="(?i)signature"):
        skopeo_copy("--src-tls-verify=false", "--remove-signatures", "--policy", str(trust.policy_file),
                    "--registries.d", str(trust.registries_d), f"docker://{registry.host}/{name}:v2",
                    f"oci:{tmp_path / 'out'}:y")
    # And podplay accepts it too, and pushes from its store with a signature.
    store = _store(host_paths)
    store.pull(f"{registry.host}/{name}:v1")
    store.close()
    _podplay(host_paths, trust, "push", "--tls-verify=false", "--sign-by", keys[0].fingerprint,
             f"{registry.host}/{name}:v1", f"docker://{registry.host}/{name}-pushed:v3", env=gnupg)
    skopeo_copy("--src-tls-verify=false", "--remove-signatures", "--policy", str(trust.policy_file), "--registries.d",
                str(trust.registries_d), f"docker://{registry.host}/{name}-pushed:v3", f"oci:{tmp_path / 'out'}:z")


def test_podplay_signs_with_a_sigstore_key_and_verifies_it(host_paths, registry, repo, trust, tmp_path):
    from tests.support.signing import encrypted_sigstore_key, sigstore_key

    key, public = sigstore_key("ecdsa")
    private = encrypted_sigstore_key(tmp_path / "cosign.key", key, b"secret words")
    (tmp_path / "cosign.pub").write_bytes(public)
    (tmp_path / "pass").write_text("secret words\n")
    name = f"cosigned/{repo.split('/')[-1]}"
    sign_and_push(registry, f"{repo}-src", "v1", None, trust.registries_d)
    trust.policy({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{registry.host}/cosigned": [{"type": "sigstoreSigned", "keyPath": str(tmp_path / "cosign.pub")}],
        f"{registry.host}/t": [{"type": "insecureAcceptAnything"}]}}})
    args = ["copy", "--tls-verify=false", "--sign-by-sigstore-private-key", str(private),
            f"docker://{registry.host}/{repo}-src:v1", f"docker://{registry.host}/{name}:v1"]
    res = _podplay(host_paths, trust, *args, check=False)
    assert res.returncode == 1 and "give its passphrase with --sign-passphrase-file" in res.stderr
    res = _podplay(host_paths, trust, *args, "--sign-passphrase-file", str(tmp_path / "pass"), check=False)
    assert res.returncode == 5 and "use-sigstore-attachments" in res.stderr, res.stderr
    (trust.registries_d / "attach.yaml").write_text(f"docker:\n  {registry.host}/cosigned:\n"
                                                    "    use-sigstore-attachments: true\n")
    _podplay(host_paths, trust, *args, "--sign-passphrase-file", str(tmp_path / "pass"))
    store = _store(host_paths)
    assert store.pull(f"{registry.host}/{name}:v1").layers
    store.close()


def test_inspect_shows_signature_status(host_paths, registry, repo, keys, trust):
    import json

    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    ref = f"{registry.host}/{name}:v1"
    store = _store(host_paths)
    digest = store.pull(ref).manifest_digest
    store.close()
    (doc,) = json.loads(_podplay(host_paths, trust, "inspect", ref).stdout)
    (sig,) = doc["Signatures"]
    assert sig["Accepted"] is True and sig["Digest"] == digest
    assert sig["Reason"] == f"signed by {keys[0].fingerprint} (signedBy)"
    assert sig["Scope"] == f"docker '{registry.host}/signed'"
    remote = json.loads(_podplay(host_paths, trust, "inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert remote["Signatures"][0]["Accepted"] is True
    # The policy changed since the pull: inspect says what it says now.
    trust.policy({"default": [{"type": "reject"}]})
    (doc,) = json.loads(_podplay(host_paths, trust, "inspect", ref).stdout)
    assert doc["Signatures"][0] | {"Policy": ""} == {"Name": ref, "Digest": digest, "Accepted": False,
                                                     "Scope": "default", "Policy": "",
                                                     "Reason": "the scope's requirement is reject"}


def test_lookaside_over_http(host_paths, registry, repo, keys, trust):
    """Signatures published by a plain web server (the staging directory served as is)."""
    import functools
    import http.server
    import threading

    name = f"signed/{repo.split('/')[-1]}"
    sign_and_push(registry, name, "v1", keys[0], trust.registries_d)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(trust.sigstore))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        trust.lookaside(f"http://127.0.0.1:{server.server_address[1]}")
        sign_and_push(registry, f"{name}-unsigned", "v1", None, trust.registries_d)
        assert "none was found" in _refused(host_paths, f"{registry.host}/{name}-unsigned:v1")  # a 404
        store = _store(host_paths)
        assert store.pull(f"{registry.host}/{name}:v1").layers
        store.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
