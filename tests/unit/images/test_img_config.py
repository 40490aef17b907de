"""registries.conf resolution (search, aliases, prefixes, mirrors, blocking) and auth files."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from reconciler.desired import RegistryCredential
from reconciler.errors import ImageError, InputError
from reconciler.images.config import (
    Credential,
    auth_key,
    find_credential,
    is_loopback,
    load_registries_conf,
    write_credential,
)
from reconciler.images.reference import parse_reference

D = "sha256:" + "b" * 64


def conf(tmp_path, text: str, name: str = "registries.conf"):
    p = tmp_path / name
    p.write_text(text)
    return load_registries_conf(p)


def test_short_names_default_to_docker_hub(tmp_path):
    cfg = conf(tmp_path, "")
    assert [str(r) for r in cfg.candidates(parse_reference("busybox"))] == ["docker.io/library/busybox:latest"]
    assert [str(r) for r in cfg.candidates(parse_reference("quay.io/a/b"))] == ["quay.io/a/b:latest"]


def test_search_registries_in_order_and_aliases_win(tmp_path):
    cfg = conf(tmp_path, """
unqualified-search-registries = ["registry.example:5000", "docker.io"]
[aliases]
"tools" = "quay.io/org/tools"
""")
    assert [str(r) for r in cfg.candidates(parse_reference("busybox:1.36"))] == [
        "registry.example:5000/busybox:1.36", "docker.io/library/busybox:1.36"]
    assert [str(r) for r in cfg.candidates(parse_reference("tools:v1"))] == ["quay.io/org/tools:v1"]
    # qualified names never go through the search list
    assert [str(r) for r in cfg.candidates(parse_reference("quay.io/x/y"))] == ["quay.io/x/y:latest"]


def test_enforcing_mode_refuses_ambiguous_short_names(tmp_path):
    cfg = conf(tmp_path, 'unqualified-search-registries = ["a.example", "b.example"]\nshort-name-mode = "enforcing"\n')
    with pytest.raises(ImageError, match="ambiguous"):
        cfg.candidates(parse_reference("busybox"))


def test_prefix_location_and_mirrors(tmp_path):
    cfg = conf(tmp_path, """
[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
insecure = true
[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"
[[registry.mirror]]
location = "mirror-1.local/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "example.com"
blocked = true
""")
    sources = cfg.pull_sources(parse_reference("example.com/foo/image:latest"))
    assert [(str(s.ref), s.insecure, s.mirror) for s in sources] == [
        ("mirror-0.local/mirror-for-foo/image:latest", False, True),
        ("internal.example.net/bar/image:latest", True, False)]
    by_digest = cfg.pull_sources(parse_reference("example.com/foo/image@" + D))
    assert [str(s.ref) for s in by_digest] == [
        "mirror-0.local/mirror-for-foo/image@" + D, "mirror-1.local/mirrors/foo/image@" + D,
        "internal.example.net/bar/image@" + D]
    # the longest prefix wins; the shorter one blocks everything else on example.com
    with pytest.raises(ImageError, match="blocked"):
        cfg.pull_sources(parse_reference("example.com/other"))
    # "example.com/foobar" is not under prefix "example.com/foo"
    with pytest.raises(ImageError, match="blocked"):
        cfg.pull_sources(parse_reference("example.com/foobar"))


def test_wildcard_prefix(tmp_path):
    cfg = conf(tmp_path, '[[registry]]\nprefix = "*.corp.example"\ninsecure = true\n')
    assert cfg.insecure("reg.corp.example")
    assert cfg.insecure("a.b.corp.example:5000")
    assert not cfg.insecure("corp.example.org")
    assert str(cfg.pull_sources(parse_reference("reg.corp.example/x"))[0].ref) == "reg.corp.example/x:latest"


def test_dropins_override_in_order(tmp_path, monkeypatch):
    # Only $PODPLAY_REGISTRIES_CONF is read when set; drop-in order is tested through the merge.
    from reconciler.images import config as c

    cfg = c.RegistriesConfig()
    (tmp_path / "a.conf").write_text('unqualified-search-registries = ["a.example"]\n'
                                     '[aliases]\n"x" = "quay.io/a/x"\n"y" = "quay.io/a/y"\n'
                                     '[[registry]]\nlocation = "r.example"\ninsecure = true\n')
    (tmp_path / "b.conf").write_text('[aliases]\n"x" = "quay.io/b/x"\n"y" = ""\n'
                                     '[[registry]]\nlocation = "r.example"\nblocked = true\n')
    c._merge_file(cfg, tmp_path / "a.conf")
    c._merge_file(cfg, tmp_path / "b.conf")
    assert cfg.search == ["a.example"]
    assert cfg.aliases == {"x": "quay.io/b/x"}
    assert len(cfg.registries) == 1 and cfg.registries[0].blocked and not cfg.registries[0].insecure


def test_version1_format(tmp_path):
    cfg = conf(tmp_path, """
[registries.search]
registries = ["reg1.example", "reg2.example"]
[registries.insecure]
registries = ["reg3.example"]
[registries.block]
registries = ["bad.example"]
""")
    assert cfg.search == ["reg1.example", "reg2.example"]
    assert cfg.insecure("reg3.example")
    with pytest.raises(ImageError, match="blocked"):
        cfg.pull_sources(parse_reference("bad.example/x"))


@pytest.mark.parametrize(("text", "message"), [
    ("unqualified-search-registries = [\n", "invalid TOML"),
    ('unqualified-search-registries = "docker.io"', "must be a list"),
    ('unqualified-search-registries = ["https://docker.io"]', "invalid registry"),
    ('short-name-mode = "maybe"', "short-name-mode"),
    ('[[registry]]\ninsecure = true', "needs a prefix or a location"),
    ('[[registry]]\nlocation = "x.example"\ninsecure = "yes"', "true or false"),
    ('[[registry]]\nlocation = "http://x.example"', "scheme"),
    ('[[registry]]\nprefix = "*.x.example/foo"', "may not contain a path"),
    ('[aliases]\n"x" = "busybox"', "fully qualified"),
    ('[aliases]\n"x" = "quay.io/a/x:1"', "without tag"),
    ('[[registry]]\nlocation = "x.example"\n[[registry.mirror]]\nlocation = "m.example"\n'
     'pull-from-mirror = "sometimes"', "pull-from-mirror"),
])
def test_bad_registries_conf_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(InputError) as err:
        conf(tmp_path, text)
    assert message in str(err.value) and "registries.conf" in str(err.value)


def test_missing_explicit_conf(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_registries_conf(tmp_path / "nope.conf")


@pytest.mark.parametrize(("domain", "loop"), [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:80", True), ("127.1.2.3", True),
    ("[::1]:5000", True), ("localhost.example.com", False), ("10.0.0.1:5000", False), ("quay.io", False),
])
def test_loopback(domain, loop):
    assert is_loopback(domain) is loop


def _auth(user, pw):
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def test_auth_file_most_specific_key_wins(tmp_path):
    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"auths": {
        "reg.example": {"auth": _auth("host", "p1")},
        "reg.example/team": {"auth": _auth("team", "p2")},
        "reg.example/team/app": {"auth": _auth("app", "p3")},
        "https://index.docker.io/v1/": {"auth": _auth("hub", "p4")},
        "other.example": {"identitytoken": "tok"},
    }}))
    assert find_credential("reg.example", "team/app", auth_file=f).username == "app"
    assert find_credential("reg.example", "team/app2", auth_file=f).username == "team"
    assert find_credential("reg.example", "teams/app", auth_file=f).username == "host"
    assert find_credential("docker.io", "library/busybox", auth_file=f).username == "hub"
    assert find_credential("other.example", "x", auth_file=f).identity_token == "tok"
    assert find_credential("nothing.example", "x", auth_file=f) is None


def test_pull_secrets_take_precedence(tmp_path):
    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"auths": {"reg.example": {"auth": _auth("file", "p")}}}))
    secrets = (RegistryCredential("https://reg.example/v2/", "secret", "q"),)
    cred = find_credential("reg.example", "a", pull_secrets=secrets, auth_file=f)
    assert (cred.username, cred.password) == ("secret", "q")
    assert "imagePullSecret" in cred.source
    # a secret for another registry does not apply
    other = (RegistryCredential("elsewhere.example", "x", "y"),)
    assert find_credential("reg.example", "a", pull_secrets=other, auth_file=f).username == "file"


def test_default_auth_search_path(tmp_path, monkeypatch):
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    docker = tmp_path / "home/.docker/config.json"
    docker.parent.mkdir(parents=True)
    docker.write_text(json.dumps({"auths": {"reg.example": {"auth": _auth("docker", "p")}}}))
    assert find_credential("reg.example", "x").username == "docker"
    # the runtime auth.json comes first
    write_credential("reg.example", Credential("podman", "p"))
    assert (tmp_path / "run/containers/auth.json").exists()
    assert find_credential("reg.example", "x").username == "podman"
    legacy = tmp_path / "home/.dockercfg"
    legacy.write_text(json.dumps({"legacy.example": {"auth": _auth("old", "p")}}))
    assert find_credential("legacy.example", "x").username == "old"


def test_write_credential_is_private_and_keeps_other_entries(tmp_path):
    f = tmp_path / "sub/auth.json"
    write_credential("a.example", Credential("u1", "p1"), f)
    f.write_text(json.dumps({"auths": {**json.loads(f.read_text())["auths"],
                                       "https://b.example/v1/": {"auth": _auth("u2", "p2")}},
                             "credHelpers": {"c.example": "pass"}}))
    write_credential("b.example", Credential("u3", "p3"), f)
    doc = json.loads(f.read_text())
    assert set(doc["auths"]) == {"a.example", "b.example"}  # the URL-style key was replaced
    assert doc["credHelpers"] == {"c.example": "pass"}
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    write_credential("a.example", None, f)
    assert set(json.loads(f.read_text())["auths"]) == {"b.example"}


def test_corrupt_auth_files_are_clear_errors(tmp_path):
    f = tmp_path / "auth.json"
    f.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        find_credential("a.example", "x", auth_file=f)
    with pytest.raises(InputError, match="not overwriting"):
        write_credential("a.example", Credential("u", "p"), f)
    assert f.read_text() == "{not json"
    f.write_text(json.dumps({"auths": {"a.example": {"auth": base64.b64encode(b"nocolon").decode()}}}))
    with pytest.raises(InputError, match="user:password"):
        find_credential("a.example", "x", auth_file=f)


@pytest.mark.parametrize(("text", "key"), [
    ("quay.io", "quay.io"), ("https://index.docker.io/v1/", "docker.io"), ("reg:5000/ns/repo", "reg:5000/ns/repo"),
])
def test_auth_keys(text, key):
    assert auth_key(text) == key
