"""Basic and bearer-token authentication against real docker-registry, login and logout."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from reconciler.desired import RegistryCredential
from reconciler.errors import ImageError
from reconciler.images.login import login, logout
from reconciler.images.registry import AuthenticationError
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified
from tests.support.images import make_busybox_image
from tests.support.registry import TEST_USER

AUTH_KINDS = ["auth_registry", "token_registry"]


@pytest.fixture(params=AUTH_KINDS)
def secured(request):
    return request.getfixturevalue(request.param)


def test_pull_without_credentials_says_how_to_log_in(make_store, secured, repo, host_paths):
    pushed = make_busybox_image(secured, repo)
    with pytest.raises(AuthenticationError) as err:
        make_store().pull(pushed.ref)
    assert f"podplay login {secured.host}" in str(err.value)
    assert_nothing_stored(host_paths)


def test_wrong_password_is_a_clear_permanent_error(make_store, secured, repo, host_paths):
    pushed = make_busybox_image(secured, repo)
    creds = [RegistryCredential(secured.host, secured.username, "not-the-password")]
    with pytest.raises(AuthenticationError) as err:
        make_store().pull(pushed.ref, creds)
    assert "wrong username or password" in str(err.value) and repr(secured.username) in str(err.value)
    assert not err.value.temporary
    assert_nothing_stored(host_paths)


def test_pull_secret_credentials(make_store, secured, repo, host_paths):
    pushed = make_busybox_image(secured, repo, layers=2)
    creds = [RegistryCredential("unrelated.example", "x", "y"),
             RegistryCredential(secured.host, secured.username, secured.password)]
    info = make_store().ensure_image(pushed.ref, "IfNotPresent", creds)
    assert info.manifest_digest == pushed.digest
    assert_store_verified(host_paths, images=1)


def test_auth_file_credentials(make_store, secured, repo, tmp_path, host_paths):
    pushed = make_busybox_image(secured, repo)
    auth = tmp_path / "my-auth.json"
    token = base64.b64encode(f"{secured.username}:{secured.password}".encode()).decode()
    auth.write_text(json.dumps({"auths": {secured.host: {"auth": token}}}))
    assert make_store(auth_file=auth).pull(pushed.ref).manifest_digest == pushed.digest


def test_pull_secret_wins_over_auth_file(make_store, secured, repo, tmp_path):
    pushed = make_busybox_image(secured, repo)
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {secured.host: {"auth": base64.b64encode(b"podplay:wrong").decode()}}}))
    store = make_store(auth_file=auth)
    with pytest.raises(AuthenticationError):
        store.pull(pushed.ref)
    good = [RegistryCredential(f"http://{secured.host}/v2/", secured.username, secured.password)]
    assert store.pull(pushed.ref, good).manifest_digest == pushed.digest


def test_bearer_token_is_reused(make_store, token_registry, repo):
    pushed = make_busybox_image(token_registry, repo, layers=3)
    scope = f"repository:{repo}:pull"
    before = [r for r in token_registry.token_server.token_requests(scope) if r["scope"] == scope]
    creds = [RegistryCredential(token_registry.host, token_registry.username, token_registry.password)]
    store = make_store()
    store.pull(pushed.ref, creds)  # manifest + config + 3 layers, each an authorised request
    store.ensure_image(pushed.ref, "Always", creds)  # and a HEAD
    after = [r for r in token_registry.token_server.token_requests(scope) if r["scope"] == scope]
    assert len(after) - len(before) == 1
    assert after[-1]["user"] == TEST_USER


def test_revoked_token_is_replaced(make_store, token_registry, repo):
    pushed = make_busybox_image(token_registry, repo)
    creds = [RegistryCredential(token_registry.host, token_registry.username, token_registry.password)]
    store = make_store()
    store.pull(pushed.ref, creds)
    client = store.client(token_registry.host, repo, credentials=creds)
    # The registry stops accepting the cached token (rotated key, revocation): one 401, a new token.
    client._tokens = {k: ("not-a-valid-token", v[1]) for k, v in client._tokens.items()}
    assert store.pull(pushed.ref, creds).manifest_digest == pushed.digest


def test_identity_token_from_auth_file(make_store, token_registry, repo, tmp_path):
    pushed = make_busybox_image(token_registry, repo)
    token_registry.token_server.refresh_tokens["refresh-" + repo] = TEST_USER
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {token_registry.host: {"identitytoken": "refresh-" + repo}}}))
    assert make_store(auth_file=auth).pull(pushed.ref).manifest_digest == pushed.digest
    posts = [r for r in token_registry.token_server.requests if r["method"] == "POST" and repo in r["scope"]]
    assert posts and posts[-1]["user"] == TEST_USER


def test_login_checks_then_saves_and_logout_forgets(make_store, secured, repo, tmp_path, host_paths):
    pushed = make_busybox_image(secured, repo)
    auth = tmp_path / "auth.json"
    with pytest.raises(AuthenticationError):
        login(secured.host, secured.username, "wrong", auth_file=auth)
    assert not auth.exists()  # nothing saved for a failed login
    path = login(secured.host, secured.username, secured.password, auth_file=auth)
    assert path == auth and stat.S_IMODE(os.stat(auth).st_mode) == 0o600
    entry = json.loads(auth.read_text())["auths"][secured.host]
    assert base64.b64decode(entry["auth"]).decode() == f"{secured.username}:{secured.password}"
    assert make_store(auth_file=auth).pull(pushed.ref).manifest_digest == pushed.digest
    assert logout(secured.host, auth_file=auth) == [secured.host]
    assert json.loads(auth.read_text())["auths"] == {}
    with pytest.raises(ImageError):
        make_store(auth_file=auth).pull(f"{secured.host}/{repo}:latest", ())
    from reconciler.errors import NotFoundError

    with pytest.raises(NotFoundError, match="not logged into"):
        logout(secured.host, auth_file=auth)


def test_login_to_open_registry_just_saves(registry, tmp_path):
    auth = tmp_path / "auth.json"
    login(registry.host, "anyone", "anything", auth_file=auth)
    assert registry.host in json.loads(auth.read_text())["auths"]
