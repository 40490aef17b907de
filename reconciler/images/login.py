"""``login`` and ``logout``: check credentials against a registry, then keep them in auth.json."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.errors import InputError, NotFoundError
from reconciler.images.config import (
    Credential,
    auth_key,
    default_auth_file,
    list_auth_keys,
    load_registries_conf,
    normalize_auth_key,
    write_credential,
)
from reconciler.images.reference import parse_repository_prefix
from reconciler.images.registry import RegistryClient


def login(registry: str, username: str, password: str, *, auth_file: str | os.PathLike | None = None,
          registries_conf: str | os.PathLike | None = None, tls_verify: bool = True,
          timeout: float | None = None, retries: int = 2, certs_dir: str | os.PathLike | None = None) -> Path:
    """Verify ``username``/``password`` with ``registry`` (``host[:port][/namespace…]``) and
    store them; returns the auth file written. Wrong credentials raise AuthenticationError and
    leave the file as it was."""
    if not username or not password:
        raise InputError("login needs both a username and a password")
    key = auth_key(registry)
    domain, _ = parse_repository_prefix(registry)
    insecure = not tls_verify or load_registries_conf(registries_conf).insecure(domain)
    client = RegistryClient(domain, insecure=insecure, timeout=timeout, retries=retries,
                            certs_dirs=(certs_dir,) if certs_dir else None,
                            credential=Credential(username, password, source=f"login to {registry}"))
    try:
        client.check_login()
    finally:
        client.close()
    return write_credential(key, Credential(username, password), auth_file)


def logout(registry: str | None, *, auth_file: str | os.PathLike | None = None, all_registries: bool = False
           ) -> list[str]:
    """Forget the credentials for ``registry`` (or every registry); the keys removed."""
    path = Path(auth_file) if auth_file else default_auth_file()
    keys = list_auth_keys(path)
    if all_registries:
        for k in keys:
            write_credential(k, None, path)
        return keys
    if not registry:
        raise InputError("logout needs a registry or --all")
    key = auth_key(registry)
    matching = [k for k in keys if normalize_auth_key(k) == key]
    if not matching:
        raise NotFoundError(f"not logged into {registry} (no entry in {path})")
    write_credential(key, None, path)
    return matching
