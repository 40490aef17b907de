"""The signature policy (containers-policy.json(5)) and registries.d: parsing, scopes, identity rules.

Tables follow the format's documented examples: the man page's sample policy (reject by default,
docker.io/openshift accepted, a vendor mirror remapped, *.int.example.com wildcards) and each
signedIdentity type's description."""

from __future__ import annotations

import base64
import json

import pytest

from reconciler.images.policy import Identity, PolicyError, identity_matches, parse_policy, remap
from reconciler.images.reference import parse_reference
from reconciler.images.signatures import (
    BUILTIN_LOOKASIDE,
    load_registries_d,
    parse_simple_signing,
    signature_url,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64

SIGNED = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/release.gpg"}

# The man page's example policy, shortened to one requirement per scope.
MAN_PAGE_POLICY = {
    "default": [{"type": "reject"}],
    "transports": {
        "docker": {
            "docker.io/openshift": [{"type": "insecureAcceptAnything"}],
            "docker.io/openshift/origin-web-console": [SIGNED],
            "docker.io/library/busybox:1.36": [{"type": "reject"}],
            "private-mirror:5000/vendor-mirror": [dict(SIGNED, signedIdentity={
                "type": "remapIdentity", "prefix": "private-mirror:5000/vendor-mirror",
                "signedPrefix": "vendor.example.com"})],
            "*.int.example.com": [{"type": "insecureAcceptAnything"}],
            "*.example.com": [SIGNED],
            "registry.int.example.com/secure": [SIGNED],
        },
        "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
    },
}


def _policy(doc=MAN_PAGE_POLICY):
    return parse_policy(json.dumps(doc), "/etc/containers/policy.json")


@pytest.mark.parametrize(("ref", "scope"), [
    ("docker.io/openshift/origin:latest", "docker.io/openshift"),            # namespace
    ("docker.io/openshift/origin-web-console:v3", "docker.io/openshift/origin-web-console"),  # repository
    ("busybox:1.36", "docker.io/library/busybox:1.36"),                      # tag beats everything
    ("busybox:latest", ""),                                                  # nothing: default
    ("private-mirror:5000/vendor-mirror/app:1", "private-mirror:5000/vendor-mirror"),
    ("registry.int.example.com/team/app:1", "*.int.example.com"),            # longest wildcard
    ("registry.int.example.com/secure/app:1", "registry.int.example.com/secure"),  # a name beats a wildcard
    ("cdn.example.com/app:1", "*.example.com"),
    ("example.com/app:1", ""),                                               # *.example.com: subdomains only
    ("quay.io/x/y@" + D1, ""),
])
def test_most_specific_scope_wins(ref, scope):
    got = _policy().scope_for("docker", parse_reference(ref))
    assert got.scope == scope
    if not scope:
        assert got.transport == "" and got.requirements[0].type == "reject"


def test_transport_default_beats_the_global_default():
    doc = {"default": [{"type": "reject"}], "transports": {"docker": {"": [{"type": "insecureAcceptAnything"}]}}}
    got = _policy(doc).scope_for("docker", parse_reference("quay.io/a/b:1"))
    assert (got.transport, got.scope, got.requirements[0].type) == ("docker", "", "insecureAcceptAnything")


def test_path_transport_scopes_use_the_path_and_its_parents():
    doc = {"default": [{"type": "reject"}],
           "transports": {"oci": {"/srv/images": [{"type": "insecureAcceptAnything"}]}}}
    assert _policy(doc).scope_for("oci", scope_name="/srv/images/app").scope == "/srv/images"
    assert _policy(doc).scope_for("oci", scope_name="/tmp/app").transport == ""


@pytest.mark.parametrize(("rule", "image", "signed", "ok"), [
    # matchExact: the same tag or digest, nothing else
    ("matchExact", "busybox:latest", "docker.io/library/busybox:latest", True),
    ("matchExact", "busybox:latest", "busybox:latest", True),                  # signatures normalise names
    ("matchExact", "busybox:latest", "docker.io/library/busybox:1.36", False),
    ("matchExact", "busybox@" + D1, "docker.io/library/busybox@" + D1, True),
    ("matchExact", "busybox@" + D1, "docker.io/library/busybox:latest", False),
    ("matchExact", "busybox:latest", "docker.io/library/busybox", False),
    # matchRepoDigestOrExact: by digest any identity of the repository, by tag exactly
    ("matchRepoDigestOrExact", "busybox@" + D1, "docker.io/library/busybox:latest", True),
    ("matchRepoDigestOrExact", "busybox@" + D1, "docker.io/library/alpine:latest", False),
    ("matchRepoDigestOrExact", "busybox:latest", "docker.io/library/busybox:latest", True),
    ("matchRepoDigestOrExact", "busybox:latest", "docker.io/library/busybox:1.36", False),
    ("matchRepoDigestOrExact", "quay.io/a/b:1", "quay.io/a/bb:1", False),
    # matchRepository: any tag of the repository
    ("matchRepository", "busybox:1.36", "docker.io/library/busybox:latest", True),
    ("matchRepository", "busybox:1.36", "quay.io/library/busybox:1.36", False),
])
def test_identity_rules(rule, image, signed, ok):
    assert identity_matches(Identity(rule), parse_reference(image), parse_reference(signed, default_tag="")) is ok


@pytest.mark.parametrize(("identity", "image", "signed", "ok"), [
    ({"type": "exactReference", "dockerReference": "quay.io/a/b:release"}, "mirror.local/x:1", "quay.io/a/b:release",
     True),
    ({"type": "exactReference", "dockerReference": "quay.io/a/b:release"}, "quay.io/a/b:release", "quay.io/a/b:dev",
     False),
    ({"type": "exactRepository", "dockerRepository": "quay.io/a/b"}, "mirror.local/x:1", "quay.io/a/b:any", True),
    ({"type": "exactRepository", "dockerRepository": "quay.io/a/b"}, "quay.io/a/b:1", "quay.io/a/c:1", False),
    # remapIdentity: the image's prefix is rewritten, then matchRepoDigestOrExact
    ({"type": "remapIdentity", "prefix": "private-mirror:5000/vendor-mirror", "signedPrefix": "vendor.example.com"},
     "private-mirror:5000/vendor-mirror/app:1", "vendor.example.com/app:1", True),
    ({"type": "remapIdentity", "prefix": "private-mirror:5000/vendor-mirror", "signedPrefix": "vendor.example.com"},
     "private-mirror:5000/vendor-mirror/app:1", "private-mirror:5000/vendor-mirror/app:1", False),
    ({"type": "remapIdentity", "prefix": "private-mirror:5000/vendor-mirror", "signedPrefix": "vendor.example.com"},
     "private-mirror:5000/vendor-mirrors/app:1", "private-mirror:5000/vendor-mirrors/app:1", True),  # no match: as is
    ({"type": "remapIdentity", "prefix": "mirror.local", "signedPrefix": "docker.io"},
     "mirror.local/library/busybox@" + D1, "docker.io/library/busybox:latest", True),
])
def test_identity_rules_with_arguments(identity, image, signed, ok):
    doc = {"default": [dict(SIGNED, signedIdentity=identity)]}
    rule = _policy(doc).default[0].identity
    assert identity_matches(rule, parse_reference(image), parse_reference(signed, default_tag="")) is ok


def test_remap_is_on_component_boundaries():
    assert remap(parse_reference("a.example/ns/x:1"), "a.example/ns", "b.example") == parse_reference("b.example/x:1")
    assert remap(parse_reference("a.example/nsx/x:1"), "a.example/ns", "b.example") is None


def test_signed_by_takes_every_key_form():
    doc = {"default": [
        dict(SIGNED),
        {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/k/a.gpg", "/k/b.gpg"]},
        {"type": "signedBy", "keyType": "GPGKeys", "keyData": base64.b64encode(b"KEY").decode()},
        {"type": "sigstoreSigned", "keyPath": "/k/cosign.pub"},
        {"type": "sigstoreSigned", "keyDatas": [base64.b64encode(b"PEM").decode()]},
    ]}
    reqs = _policy(doc).default
    assert reqs[0].key_paths == ("/keys/release.gpg",)
    assert reqs[1].key_paths == ("/k/a.gpg", "/k/b.gpg")
    assert reqs[2].key_data == (b"KEY",)
    assert reqs[3].type == "sigstoreSigned" and reqs[4].key_data == (b"PEM",)
    assert all(r.identity.type == "matchRepoDigestOrExact" for r in reqs)  # the documented default


@pytest.mark.parametrize(("doc", "names"), [
    ("not json", ":1:1"),
    ([], "must be a JSON object"),
    ({}, "\"default\" is missing"),
    ({"default": []}, "default: an empty list"),
    ({"default": [{"type": "acceptAll"}]}, "default[0].type: unknown requirement 'acceptAll'"),
    ({"default": [{"type": "reject", "keyPath": "/x"}]}, "default[0].keyPath: not a field of reject"),
    ({"default": [{"type": "signedBy", "keyPath": "/x"}]}, "default[0].keyType: must be \"GPGKeys\""),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}, "exactly one of keyPath, keyPaths, keyData"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/a", "keyData": "QQ=="}]},
     "(found keyPath, keyData)"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "%%%"}]}, "keyData: not valid base64"),
    ({"default": [dict(SIGNED, signedIdentity={"type": "matchSomething"})]}, "default[0].signedIdentity: needs"),
    ({"default": [dict(SIGNED, signedIdentity={"type": "exactReference"})]},
     "signedIdentity.dockerReference: required"),
    ({"default": [dict(SIGNED, signedIdentity={"type": "exactReference", "dockerReference": "quay.io/a/b"})]},
     "must name a tag or digest"),
    ({"default": [dict(SIGNED, signedIdentity={"type": "remapIdentity", "prefix": "busybox", "signedPrefix": "x.io"})]},
     "signedIdentity.prefix: 'busybox' must start with a registry host"),
    ({"default": [{"type": "sigstoreSigned", "fulcio": {}}]}, "default[0].fulcio: not supported"),
    ({"default": [{"type": "reject"}], "transports": {"dockr": {}}}, "transports.dockr: unknown transport"),
    ({"default": [{"type": "reject"}], "transports": {"docker": {"busybox": [{"type": "reject"}]}}},
     "transports.docker['busybox']: a scope starts with the registry host"),
    ({"default": [{"type": "reject"}], "transports": {"docker": {"docker.io/busybox:1": [{"type": "reject"}]}}},
     "write 'docker.io/library/busybox:1'"),
    ({"default": [{"type": "reject"}], "transports": {"docker": {"*.a/b": [{"type": "reject"}]}}}, "wildcard scope"),
    ({"default": [{"type": "reject"}], "extra": 1}, "unknown key 'extra'"),
])
def test_a_malformed_policy_names_file_and_key(doc, names):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "/etc/containers/policy.json")
    assert str(err.value).startswith("/etc/containers/policy.json")
    assert names in str(err.value)


# --- registries.d ----------------------------------------------------------------------------

def test_registries_d_picks_the_most_specific_lookaside(tmp_path):
    (tmp_path / "default.yaml").write_text("default-docker:\n  lookaside: https://sigs.example/default\n"
                                           "  lookaside-staging: file:///var/lib/staging\n")
    (tmp_path / "fleet.yaml").write_text("docker:\n  registry.example/fleet:\n    sigstore: file:///srv/fleet\n"
                                         "  registry.example:\n    use-sigstore-attachments: true\n"
                                         "  ignored.txt: {}\n")
    (tmp_path / "notes.txt").write_text("not read")
    rd = load_registries_d(tmp_path)
    fleet, other = parse_reference("registry.example/fleet/app:1"), parse_reference("registry.example/x:1")
    assert rd.lookaside(fleet) == "file:///srv/fleet"              # the older name still works
    assert rd.lookaside(other) == "https://sigs.example/default"   # default-docker
    assert rd.lookaside(fleet, write=True) == "file:///srv/fleet"  # no staging at that scope: its lookaside
    assert rd.lookaside(parse_reference("quay.io/a/b:1"), write=True) == "file:///var/lib/staging"
    assert rd.use_attachments(fleet) and not rd.use_attachments(parse_reference("quay.io/a/b:1"))
    assert load_registries_d(tmp_path / "absent").lookaside(fleet) == BUILTIN_LOOKASIDE


@pytest.mark.parametrize(("files", "names"), [
    ({"a.yaml": "docker: [1]"}, "a.yaml: docker: must map"),
    ({"a.yaml": "default-docker:\n  lookaside: ftp://x\n"}, "a.yaml: default-docker.lookaside: 'ftp://x'"),
    ({"a.yaml": "default-docker:\n  lookaside: file:///a\n  sigstore: file:///b\n"}, "both lookaside and"),
    ({"a.yaml": "docker:\n  r.example:\n    lookasid: file:///a\n"}, "docker.r.example.lookasid: unknown"),
    ({"a.yaml": "docker:\n  r.example: {}\n", "b.yaml": "docker:\n  r.example: {}\n"}, "already set in"),
    ({"a.yaml": "default-docker: [\n"}, "a.yaml: not valid YAML"),
])
def test_a_malformed_registries_d_names_file_and_key(tmp_path, files, names):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(PolicyError, match=r".*") as err:
        load_registries_d(tmp_path)
    assert names in str(err.value)


def test_signature_urls_are_skopeos_layout():
    ref = parse_reference("127.0.0.1:5000/fleet/app:v1")
    assert signature_url("file:///sigs/", ref, D1, 2) == f"file:///sigs/fleet/app@sha256={'1' * 64}/signature-2"


@pytest.mark.parametrize(("payload", "ok"), [
    ({"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": D1},
                   "identity": {"docker-reference": "quay.io/a/b:1"}}, "optional": {"creator": "x"}}, True),
    ({"critical": {"type": "cosign container image signature", "image": {"docker-manifest-digest": D1},
                   "identity": {"docker-reference": "quay.io/a/b:1"}}}, False),
    ({"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": D1},
                   "identity": {"docker-reference": "quay.io/a/b:1"}, "extra": 1}}, False),
    ({"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": D1, "x": 1},
                   "identity": {"docker-reference": "quay.io/a/b:1"}}}, False),
])
def test_simple_signing_payload_is_exactly_the_format(payload, ok):
    from reconciler.images.signatures import _Bad

    if ok:
        ref, digest = parse_simple_signing(json.dumps(payload).encode())
        assert (str(ref), digest) == ("quay.io/a/b:1", D1)
    else:
        with pytest.raises(_Bad):
            parse_simple_signing(json.dumps(payload).encode())


# --- podplay image trust show --------------------------------------------------------------------

def test_trust_show_prints_each_scope_with_its_lookaside(tmp_path, monkeypatch, capsys):
    from reconciler.cli import main

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {
        "registry.example/fleet": [SIGNED], "": [{"type": "insecureAcceptAnything"}]}}}))
    rd = tmp_path / "registries.d"
    rd.mkdir()
    (rd / "a.yaml").write_text("docker:\n  registry.example:\n    lookaside: https://sigs.example/\n")
    # main() exports the options to the environment: let monkeypatch restore it afterwards.
    monkeypatch.setenv("PODPLAY_SIGNATURE_POLICY", "unset")
    monkeypatch.setenv("PODPLAY_REGISTRIES_D", "unset")
    argv = ["--root", str(tmp_path / "r"), "--runroot", str(tmp_path / "rr"), "--signature-policy", str(policy),
            "--registries.d", str(rd), "image", "trust", "show"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"policy: {policy}"
    assert out[1].split() == ["TRANSPORT", "SCOPE", "TYPE", "KEYS", "IDENTITY", "LOOKASIDE"]
    assert out[2].split() == ["all", "default", "reject"]
    assert out[3].split() == ["docker", "registry.example/fleet", "signedBy", "/keys/release.gpg",
                              "matchRepoDigestOrExact", "https://sigs.example/"]
    assert out[4].split() == ["docker", "default", "insecureAcceptAnything"]
    assert main([*argv, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"] == str(policy) and len(doc["scopes"]) == 3

    policy.write_text('{"default": [{"type": "signedBy"}]}')
    assert main(argv) == 1
    assert "policy.json: default[0].keyType: must be \"GPGKeys\"" in capsys.readouterr().err


def test_no_policy_file_accepts_as_debians_default_does(tmp_path, monkeypatch):
    import reconciler.images.policy as policy_module

    monkeypatch.delenv("PODPLAY_SIGNATURE_POLICY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(policy_module, "SYSTEM_POLICY", tmp_path / "absent.json")
    p = policy_module.load_policy()
    assert p.source.startswith("built-in default")
    assert [r.type for r in p.scope_for("docker", parse_reference("quay.io/a/b:1")).requirements] == \
        ["insecureAcceptAnything"]
    # A file that is named but missing is an error, never "accept".
    with pytest.raises(PolicyError, match="does not exist"):
        policy_module.load_policy(tmp_path / "named.json")


def test_an_oversized_lookaside_signature_is_refused(tmp_path):
    from reconciler.errors import ImageError
    from reconciler.images.signatures import MAX_SIGNATURE_SIZE, read_lookaside

    ref = parse_reference("registry.example/fleet/app:1")
    path = tmp_path / f"fleet/app@sha256={'1' * 64}/signature-1"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * (MAX_SIGNATURE_SIZE + 1))
    with pytest.raises(ImageError, match="larger than"):
        read_lookaside(f"file://{tmp_path}", ref, D1)
    path.write_bytes(b"sig")
    (path.parent / "signature-3").write_bytes(b"after a gap: not read")
    assert [s.data for s in read_lookaside(f"file://{tmp_path}", ref, D1)] == [b"sig"]
