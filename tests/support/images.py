"""Test images made by third-party tools from the host's busybox, pushed to a test registry.

``buildah`` builds (from scratch: /bin/busybox from busybox-static, every applet as a symlink
in /bin, a small /etc/passwd), ``skopeo`` pushes in the shapes real registries serve:

* ``compression="gzip" | "zstd" | "none"`` — via an ``oci:`` layout made with that compression,
  pushed with ``--preserve-digests`` so that skopeo cannot substitute another compression;
* ``format="oci" | "v2s2"`` — an OCI manifest or a Docker schema 2 manifest;
* ``layers=N`` (each extra layer adds ``/layers/<i>`` of ``layer_size`` random bytes);
* ``push_index`` — an OCI index or (``format="v2s2"``) a Docker manifest list over several
  platforms (``buildah config --arch/--variant`` + ``buildah manifest push --all``);
* ``push_without_media_type`` — an OCI manifest without ``mediaType`` (the JSON edited, re-hashed
  and PUT raw).

Builds are cached per process (one xdist worker = one process), so an image is built once
per worker however many tests push it. Buildah gets its own ``--root``/``--runroot`` under /tmp
and the vfs driver (no mounts to leak); everything is removed at the end of the session.

Use from another area's conftest.py (fixture names must be imported to be seen)::

    from tests.support.registry import registry, repo          # noqa: F401
    from tests.support.images import busybox_image, image_factory  # noqa: F401

Examples::

    pushed = make_busybox_image(registry, "t/app", compression="zstd", layers=3,
                                config={"env": {"FOO": "bar"}, "cmd": ["sh", "-c", "echo hi"]})
    store, info = store_with_busybox(host_paths, registry)      # pulled, tagged localhost/busybox:latest
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.registry import Registry

BUSYBOX = "/bin/busybox"
BUSYBOX_LOCAL = "localhost/busybox:latest"
DEFAULT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
daemon:x:1:
www-data:x:33:
app:x:1000:
nogroup:x:65534:
"""


@dataclass(frozen=True)
class PushedImage:
    registry: str  # host:port
    repo: str
    tag: str
    digest: str  # what the tag points at (manifest or index digest)
    compression: str = "gzip"
    format: str = "oci"

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.repo}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.registry}/{self.repo}@{self.digest}"


def _tool_env() -> dict[str, str]:
    """The environment for buildah/skopeo: without the auth-file and registries.conf overrides
    a test may have set for podplay (buildah refuses a REGISTRY_AUTH_FILE that does not exist)."""
    env = dict(os.environ)
    for name in ("REGISTRY_AUTH_FILE", "PODPLAY_REGISTRIES_CONF", "CONTAINERS_REGISTRIES_CONF"):
        env.pop(name, None)
    return env


def _key(**kw) -> str:
    return hashlib.sha256(json.dumps(kw, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ImageFactory:
    """Builds and pushes busybox images; one per process, see ``factory()``."""

    def __init__(self, workdir: Path | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pp-img-", dir="/tmp"))
        self.root = self.workdir / "root"
        self.runroot = self.workdir / "run"
        self.layouts = self.workdir / "oci"
        self._built: dict[str, str] = {}
        self._layouts: dict[tuple[str, str], Path] = {}
        self._pushed: dict[tuple[str, str], PushedImage] = {}
        self._lock = threading.RLock()
        self._rootfs: Path | None = None

    # --- tools ---------------------------------------------------------------------------------

    def buildah(self, *args: str) -> str:
        cmd = ["buildah", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs",
               *args]
        res = subprocess.run(cmd, capture_output=True, text=True, env=_tool_env())
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    @property
    def storage_ref(self) -> str:
        return f"containers-storage:[vfs@{self.root}+{self.runroot}]"

    @staticmethod
    def skopeo(*args: str) -> str:
        res = subprocess.run(["skopeo", *args], capture_output=True, text=True, env=_tool_env())
        if res.returncode != 0:
            raise RuntimeError(f"skopeo {' '.join(args)} failed: {res.stderr.strip()}")
        return res.stdout

    def rootfs(self) -> Path:
        """A busybox root file system: /bin/busybox, its applets as symlinks, /etc/passwd."""
        if self._rootfs is None:
            rootfs = self.workdir / "rootfs"
            (rootfs / "bin").mkdir(parents=True)
            shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
            applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
            for applet in applets:
                if applet != "busybox":
                    (rootfs / "bin" / applet).symlink_to("busybox")
            (rootfs / "etc").mkdir()
            (rootfs / "etc/passwd").write_text(PASSWD)
            (rootfs / "etc/group").write_text(GROUP)
            for d in ("root", "home/app", "var/www", "proc", "sys", "dev", "run"):
                (rootfs / d).mkdir(parents=True)
            (rootfs / "tmp").mkdir(mode=0o1777)
            (rootfs / "tmp").chmod(0o1777)
            self._rootfs = rootfs
        return self._rootfs

    # --- building ------------------------------------------------------------------------------

    def build(self, *, layers: int = 1, config: dict | None = None, layer_size: int = 4096) -> str:
        """Build (once per process) an image of exactly ``layers`` layers with ``config``;
        returns its name in buildah's storage. Images with the same lower layers share them."""
        config = dict(config or {})
        key = _key(layers=layers, config=config, layer_size=layer_size)
        with self._lock:
            if key not in self._built:
                self._built[key] = self._commit(layers, layer_size, self._config_args(config), key)
            return self._built[key]

    def _commit(self, layers: int, layer_size: int, config_args: list[str], key: str) -> str:
        if layers <= 1:
            ctr = self.buildah("from", "scratch")
        else:
            parent = self.build(layers=layers - 1, layer_size=layer_size)
            ctr = self.buildah("from", "--pull-never", parent)
        try:
            if layers <= 1:
                self.buildah("add", ctr, str(self.rootfs()), "/")
            else:
                data = self.workdir / f"layer-{key}"
                data.mkdir(exist_ok=True)
                # Incompressible, deterministic content: a layer of this size really moves that much.
                (data / f"{layers - 1}").write_bytes(random.Random(layers).randbytes(layer_size))
                self.buildah("add", ctr, str(data), "/layers/")
            self.buildah("config", *config_args, ctr)
            name = f"localhost/pp-{key}:latest"
            self.buildah("commit", "-q", "--omit-history", ctr, name)
        finally:
            self.buildah("rm", ctr)
        return name

    @staticmethod
    def _config_args(config: dict) -> list[str]:
        args: list[str] = []
        env = dict(DEFAULT_ENV)
        env.update(config.get("env") or {})
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        args += ["--cmd", json.dumps(config.get("cmd", ["/bin/sh"]))]
        if "entrypoint" in config:
            args += ["--entrypoint", json.dumps(config["entrypoint"])]
        for flag, name in (("--workingdir", "workingdir"), ("--user", "user"), ("--stop-signal", "stop_signal"),
                           ("--arch", "arch"), ("--os", "os"), ("--variant", "variant"), ("--author", "author")):
            if config.get(name):
                args += [flag, str(config[name])]
        for k, v in (config.get("labels") or {}).items():
            args += ["--label", f"{k}={v}"]
        for port in config.get("ports") or ():
            args += ["--port", str(port)]
        for vol in config.get("volumes") or ():
            args += ["--volume", vol]
        return args

    def layout(self, image: str, compression: str = "gzip") -> Path:
        """An ``oci:`` layout of ``image`` with its layers in ``compression`` (tag ``img``)."""
        with self._lock:
            key = (image, compression)
            if key not in self._layouts:
                self.layouts.mkdir(parents=True, exist_ok=True)
                path = self.layouts / f"{_key(image=image, compression=compression)}"
                args = ["copy", "-q"]
                if compression == "zstd":
                    args += ["--dest-compress-format", "zstd"]
                elif compression == "none":
                    args += ["--dest-oci-accept-uncompressed-layers"]
                elif compression != "gzip":
                    raise ValueError(f"unknown compression {compression!r}")
                self.skopeo(*args, f"{self.storage_ref}{image}", f"oci:{path}:img")
                self._layouts[key] = path
            return self._layouts[key]

    def docker_dir(self, image: str) -> Path:
        """A ``dir:`` copy of ``image`` converted to a Docker schema 2 manifest (gzip layers)."""
        with self._lock:
            key = (image, "v2s2")
            if key not in self._layouts:
                path = self.layouts / f"{_key(image=image, format='v2s2')}"
                self.skopeo("copy", "-q", "--format", "v2s2", f"oci:{self.layout(image, 'gzip')}:img", f"dir:{path}")
                self._layouts[key] = path
            return self._layouts[key]

    # --- pushing -------------------------------------------------------------------------------

    @staticmethod
    def _dest_args(registry: Registry) -> list[str]:
        args = ["--dest-tls-verify=false"]
        if registry.creds:
            args += ["--dest-creds", registry.creds]
        if registry.tls:
            args += ["--dest-cert-dir", str(registry.tls_dir)]
        return args

    def push(self, registry: Registry, repo: str, tag: str = "latest", *, compression: str = "gzip",
             layers: int = 1, config: dict | None = None, format: str = "oci", layer_size: int = 4096) -> PushedImage:
        image = self.build(layers=layers, config=config, layer_size=layer_size)
        layout = self.layout(image, compression)
        digestfile = self.workdir / f"digest-{uuid.uuid4().hex}"
        source = f"oci:{layout}:img"
        if format == "v2s2":
            if compression != "gzip":
                raise ValueError("Docker schema 2 manifests carry gzip layers here")
            source = f"dir:{self.docker_dir(image)}"
        # --preserve-digests: skopeo must not swap a layer for another compression of it that
        # its blob-info cache knows the registry already has.
        self.skopeo("copy", "-q", *self._dest_args(registry), "--preserve-digests", "--digestfile", str(digestfile),
                    source, f"docker://{registry.host}/{repo}:{tag}")
        digest = digestfile.read_text().strip()
        digestfile.unlink()
        return PushedImage(registry.host, repo, tag, digest, compression, format)

    def push_cached(self, registry: Registry, **spec) -> PushedImage:
        """Push an image of this spec once per registry (to a repository named after the spec)."""
        key = (registry.host, _key(**spec))
        with self._lock:
            if key not in self._pushed:
                self._pushed[key] = self.push(registry, f"cache/busybox-{key[1]}", **spec)
            return self._pushed[key]

    def push_index(self, registry: Registry, repo: str, tag: str = "latest", *,
                   platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7"),
                   format: str = "oci", config: dict | None = None) -> PushedImage:
        """A multi-platform image: one busybox image per platform (the config says which) under
        an OCI index or a Docker manifest list. The binaries are this host's: only the platform
        fields differ."""
        name = f"localhost/pp-list-{uuid.uuid4().hex[:12]}"
        self.buildah("manifest", "create", name)
        try:
            for p in platforms:
                os_name, arch, *variant = p.split("/")
                cfg = dict(config or {})
                cfg.update(os=os_name, arch=arch, variant=variant[0] if variant else "",
                           labels={**(cfg.get("labels") or {}), "platform": p})
                image = self.build(config=cfg)
                add = ["manifest", "add", "--os", os_name, "--arch", arch]
                if variant:
                    add += ["--variant", variant[0]]
                self.buildah(*add, name, image)
            # buildah pushes lists with uncompressed layers; skopeo compresses them (gzip) on the
            # way to the registry and rewrites the index with the new instance digests.
            layout = self.layouts / f"list-{uuid.uuid4().hex[:12]}"
            layout.parent.mkdir(parents=True, exist_ok=True)
            self.buildah("manifest", "push", "-q", "--all", "--format", "oci", name, f"oci:{layout}:list")
            digestfile = self.workdir / f"digest-{uuid.uuid4().hex}"
            self.skopeo("copy", "-q", "--all", "--format", format, *self._dest_args(registry),
                        "--digestfile", str(digestfile), f"oci:{layout}:list",
                        f"docker://{registry.host}/{repo}:{tag}")
            digest = digestfile.read_text().strip()
            digestfile.unlink()
            shutil.rmtree(layout, ignore_errors=True)
        finally:
            self.buildah("manifest", "rm", name)
        return PushedImage(registry.host, repo, tag, digest, "gzip", format)

    def push_without_media_type(self, registry: Registry, repo: str, tag: str = "latest", **spec) -> PushedImage:
        """An OCI image manifest whose ``mediaType`` field is absent (valid OCI; docker tools
        always write it): pushed normally, then the JSON edited and PUT raw under ``tag``."""
        src = self.push(registry, repo, f"{tag}-src", **spec)
        raw, _ = registry.get_manifest(repo, src.digest, OCI_MANIFEST)
        doc = json.loads(raw)
        doc.pop("mediaType", None)
        data = json.dumps(doc, separators=(",", ":")).encode()
        digest = registry.put_manifest(repo, tag, data, OCI_MANIFEST)
        return PushedImage(registry.host, repo, tag, digest, src.compression, "oci")

    def close(self) -> None:
        with self._lock:
            subprocess.run(["buildah", "--root", str(self.root), "--runroot", str(self.runroot),
                            "--storage-driver", "vfs", "rm", "--all"], capture_output=True)
            shutil.rmtree(self.workdir, ignore_errors=True)


_factories: list[ImageFactory] = []
_factory_lock = threading.Lock()


def factory() -> ImageFactory:
    """The process-wide ImageFactory (created on first use, removed at exit)."""
    with _factory_lock:
        if not _factories:
            _factories.append(ImageFactory())
            atexit.register(_factories[0].close)
        return _factories[0]


def make_busybox_image(registry: Registry, name: str, *, compression: str = "gzip", layers: int = 1,
                       config: dict | None = None, tag: str = "latest", format: str = "oci",
                       layer_size: int = 4096) -> PushedImage:
    """Build (cached) a busybox image and push it to ``registry`` as ``name:tag``.

    ``config`` keys: cmd, entrypoint (lists), env (dict), workingdir, user, stop_signal,
    labels (dict), ports, volumes (lists), arch, os, variant, author."""
    return factory().push(registry, name, tag, compression=compression, layers=layers, config=config,
                          format=format, layer_size=layer_size)


def store_with_busybox(paths, registry: Registry, *, name: str = BUSYBOX_LOCAL, **spec):
    """A podplay image store under ``paths`` holding busybox, tagged ``name`` (by default
    ``localhost/busybox:latest``, the name the podman-kube corpus uses). Returns (store, info)."""
    from reconciler.images.driver import LocalImageStore

    pushed = factory().push_cached(registry, **spec)
    store = LocalImageStore(paths)
    info = store.pull(pushed.ref)
    if name:
        store.tag_image(info.id, name)
        info = store.get_image(name)
    return store, info


@pytest.fixture(scope="session")
def image_factory():
    """The worker's ImageFactory (buildah storage under /tmp, cleaned at session end)."""
    f = factory()
    yield f


@pytest.fixture(scope="session")
def busybox_image(registry) -> PushedImage:
    """A default busybox image (gzip, one layer, cmd /bin/sh) in the session registry."""
    return factory().push_cached(registry)
