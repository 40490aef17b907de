"""Transport rules decided before any byte goes out: http only for insecure/loopback
registries, and never a password to a plain-http token realm of a TLS registry."""

from __future__ import annotations

import pytest

from reconciler.errors import ImageError
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
