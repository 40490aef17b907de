"""Transport rules decided before any byte goes out: http only for insecure/loopback
registries, and never a password to a plain-http token realm of a TLS registry."""

from __future__ import annotations

import pytest

from reconciler.errors import ImageError, InputError
from reconciler.images.config import Credential
from reconciler.images.registry import Challenge, MemoryIngest, RegistryClient

D = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"  # sha256("foo")


@pytest.mark.parametrize(("domain", "insecure", "expected"), [
    ("quay.io", False, False),
    ("registry.example:5000", False, False),
    ("registry.example:5000", True, True),
    ("localhost:5000", False, True),
    ("127.0.0.1:5000", False, True),
    ("[::1]:5000", False, True),
])
def test_plain_http_only_for_insecure_or_loopback(domain, insecure, expected):
    assert RegistryClient(domain, insecure=insecure).insecure is expected


def test_docker_hub_api_host():
    assert RegistryClient("docker.io").api_host == "registry-1.docker.io"


@pytest.mark.parametrize("realm", ["http://auth.example.com/token", "http://127.0.0.1:9/token"])
def test_plain_http_realm_refused_for_a_tls_registry(realm):
    client = RegistryClient("registry.example.com", credential=Credential("u", "p"))
    with pytest.raises(ImageError) as err:
        client._token(Challenge("bearer", {"realm": realm, "service": "s"}), "repository:x:pull")
    assert "plain-http token realm" in str(err.value)
    assert client.token_requests == 0  # refused before anything was sent


@pytest.mark.parametrize("realm", ["ftp://auth.example.com/token", "", "https://"])
def test_nonsense_realm_refused(realm):
    client = RegistryClient("registry.example.com")
    with pytest.raises(ImageError, match="invalid token realm"):
        client._token(Challenge("bearer", {"realm": realm}), "repository:x:pull")


def test_memory_ingest_verifies_like_the_store():
    ok = MemoryIngest(D, 3, 100)
    ok.write(b"foo")
    ok.commit()
    bad = MemoryIngest(D, 3, 100)
    bad.write(b"bar")
    with pytest.raises(ImageError, match="failed verification"):
        bad.commit()
    with pytest.raises(ImageError, match="larger than"):
        MemoryIngest(D, 3, 100).write(b"fooo")
    with pytest.raises(ImageError, match="more than the 2 allowed"):
        MemoryIngest(D, 3, 2)


@pytest.mark.parametrize(("domain", "insecure", "realm", "trusted"), [
    ("registry.example.com", False, "https://registry.example.com/token", True),
    ("registry.example.com", False, "https://registry.example.com:443/v2/auth", True),
    ("registry.example.com", False, "https://REGISTRY.example.com/token", True),
    ("registry.example.com", False, "https://registry.example.com:8443/token", False),  # another port
    ("registry.example.com", False, "https://auth.example.com/token", False),  # another host
    ("registry.example.com", False, "http://registry.example.com/token", False),  # not https
    ("registry.example.com:5000", True, "http://registry.example.com:5000/token", True),  # insecure: http ok
    ("registry.example.com:5000", True, "http://registry.example.com:5001/token", False),
    ("127.0.0.1:5000", False, "http://127.0.0.1:5000/token", True),  # loopback counts as insecure
    ("docker.io", False, "https://auth.docker.io/token", True),  # built in
    ("quay.io", False, "https://auth.docker.io/token", False),  # ... for Docker Hub only
    ("registry.example.com", False, "not a url", False),
])
def test_which_token_realms_get_credentials(monkeypatch, domain, insecure, realm, trusted):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    assert RegistryClient(domain, insecure=insecure).realm_trusted(realm) is trusted


def test_token_realms_listed_by_the_operator(monkeypatch):
    monkeypatch.setenv("PODPLAY_TOKEN_REALMS", "registry.example.com=https://auth.example.com/token,"
                       " other.example=https://evil.example")
    client = RegistryClient("registry.example.com")
    assert client.realm_trusted("https://auth.example.com/other/path")
    assert not client.realm_trusted("http://auth.example.com/token")  # the scheme is part of it
    assert not client.realm_trusted("https://evil.example/token")  # listed for another registry
    monkeypatch.setenv("PODPLAY_TOKEN_REALMS", "registry.example.com")
    with pytest.raises(InputError, match="PODPLAY_TOKEN_REALMS: 'registry.example.com' is not REGISTRY=REALM-URL"):
        RegistryClient("registry.example.com")


def test_an_untrusted_realm_is_asked_without_credentials(monkeypatch):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    sent = {}

    class Response:
        status_code = 200

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def json(self):
            return {"token": "anonymous"}

    class Session:
        def get(self, url, params=None, auth=None, **kw):
            sent.update(url=url, params=params, auth=auth)
            return Response()

        def post(self, *a, **kw):
            raise AssertionError("an identity token must not be posted to a foreign realm")

    client = RegistryClient("registry.example.com", credential=Credential("u", "p"))
    client._session = Session
    token = client._token(Challenge("bearer", {"realm": "https://auth.elsewhere.example/t"}), "")
    assert token == "anonymous" and sent["auth"] is None and ("account", "u") not in sent["params"]
    assert client.withheld == {"https://auth.elsewhere.example/t"}
    assert "were not sent there" in client._auth_failed_message()
