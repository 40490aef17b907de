"""TLS registries: a private CA and client certificates from a certs.d tree, as podman reads it."""

from __future__ import annotations

import shutil

import pytest

from reconciler.errors import ImageError
from reconciler.images.login import login
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified
from tests.support.images import make_busybox_image
from tests.support.registry import make_tls_files


def test_pull_with_ca_and_client_certificate(make_store, tls_registry, repo, tmp_path, host_paths):
    pushed = make_busybox_image(tls_registry, repo)
    certs = tls_registry.certs_d(tmp_path / "certs.d")
    store = make_store(certs_dir=certs)
    info = store.pull(pushed.ref)
    assert info.manifest_digest == pushed.digest
    client = store.client(tls_registry.host, repo)
    assert client.verify_tls and client.ca_files and client.client_cert  # verified, not merely tolerated
    assert_store_verified(host_paths, images=1)


def test_missing_client_certificate_is_explained(make_store, tls_registry, repo, tmp_path, host_paths):
    pushed = make_busybox_image(tls_registry, repo)
    certs = tls_registry.certs_d(tmp_path / "certs.d", client=False)
    with pytest.raises(ImageError) as err:
        make_store(certs_dir=certs).pull(pushed.ref)
    assert "TLS failed" in str(err.value) and "client.cert" in str(err.value)
    assert_nothing_stored(host_paths)


def test_untrusted_server_certificate_is_refused(make_store, tls_registry, repo, tmp_path, host_paths):
    pushed = make_busybox_image(tls_registry, repo)
    other = tmp_path / "other-ca"
    make_tls_files(other / "pki", other / "client")
    certs = tls_registry.certs_d(tmp_path / "certs.d")
    shutil.copy(other / "client/ca.crt", certs / tls_registry.host / "ca.crt")  # trusts a different CA
    with pytest.raises(ImageError) as err:
        make_store(certs_dir=certs).pull(pushed.ref)
    assert "TLS failed" in str(err.value) and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert_nothing_stored(host_paths)


def test_client_key_without_certificate_is_a_clear_error(make_store, tls_registry, repo, tmp_path):
    certs = tmp_path / "certs.d"
    (certs / tls_registry.host).mkdir(parents=True)
    (certs / tls_registry.host / "client.cert").write_text("x")
    with pytest.raises(ImageError, match="no matching key"):
        make_store(certs_dir=certs).pull(f"{tls_registry.host}/{repo}:latest")


def test_login_over_tls(tls_registry, tmp_path):
    certs = tls_registry.certs_d(tmp_path / "certs.d")
    auth = tmp_path / "auth.json"
    login(tls_registry.host, "anyone", "anything", auth_file=auth, certs_dir=certs)
    assert auth.exists()
