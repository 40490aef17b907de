"""A hostile registry: every lie and failure it tells is refused or survived, and the store
never holds anything unverified afterwards.

``HostileRegistry`` serves a real busybox image (copied byte for byte from the docker-registry
fixture) over http.server on 127.0.0.1, with switches that make it misbehave: wrong content,
lying digests and media types, truncated or dropped downloads, oversize documents, 5xx,
redirects to another host.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import socket
import threading
from dataclasses import dataclass, field

import pytest

from reconciler.desired import RegistryCredential
from reconciler.errors import ImageError, TemporaryImageError
from reconciler.images.config import Credential
from reconciler.images.registry import MAX_FULL_RESTARTS, AuthenticationError, RegistryClient
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified, blob_files
from tests.support.images import make_busybox_image

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REPO = "hostile/app"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Content:
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # tag or digest → (bytes, type)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def add_manifest(self, tag: str, data: bytes, media_type: str) -> str:
        digest = sha(data)
        self.manifests[tag] = (data, media_type)
        self.manifests[digest] = (data, media_type)
        return digest


class BlobServer:
    """A second host (127.0.0.2) that blob downloads are redirected to; records headers."""

    def __init__(self, blobs: dict[str, bytes]):
        self.seen: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                server.seen.append(dict(self.headers))
                data = blobs.get(self.path.rsplit("/", 1)[-1])
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.2:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class HostileRegistry:
    def __init__(self, content: Content):
        self.content = content
        self.requests: list[tuple[str, str, dict]] = []
        self.basic_auth: str = ""  # "user:password" → require Basic auth
        self.fail_first: dict[str, int] = {}  # path prefix → number of 500s before success
        self.always_fail = False
        self.drop_after: dict[str, int] = {}  # blob digest → close the connection after n bytes (once)
        self.truncate_always: set[str] = set()
        self.ignore_range = False
        self.blob_override: dict[str, bytes] = {}
        self.digest_header: dict[str, str] = {}  # manifest ref → Docker-Content-Digest to claim
        self.content_type: dict[str, str] = {}  # manifest ref → Content-Type to claim
        self.redirect_blobs_to = ""
        self.redirect_loop = False
        self.chunked_manifest: dict[str, bytes] = {}  # manifest ref → body sent without Content-Length
        self.bad_content_range = False  # answer a Range with a 206 for another range
        self.bearer_realm = ""  # require "Authorization: Bearer …", naming this token realm
        self.tokens_seen: list[dict] = []  # headers of requests to this registry's own /token
        self.client_ports: list[int] = []  # the client's port of every request: its connection
        self._lock = threading.Lock()
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                registry.handle(self, head=False)

            def do_HEAD(self):
                registry.handle(self, head=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ref(self, tag_or_digest: str = "latest") -> str:
        sep = "@" if ":" in tag_or_digest else ":"
        return f"{self.host}/{REPO}{sep}{tag_or_digest}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def seen(self, method: str = "GET", contains: str = "") -> list[tuple[str, str, dict]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and contains in r[1]]

    # --- serving -------------------------------------------------------------------------------

    def _reply(self, h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            try:
                h.wfile.write(body)
            except OSError:
                h.close_connection = True  # the client stopped reading (e.g. an oversize body)

    def handle(self, h, head: bool):
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", h.path, dict(h.headers)))
            self.client_ports.append(h.client_address[1])
            prefix = next((p for p in self.fail_first if h.path.startswith(p) and self.fail_first[p] > 0), None)
            if prefix:
                self.fail_first[prefix] -= 1
        if self.always_fail or prefix:
            self._reply(h, 503, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}', head=head)
            return
        if h.path.startswith("/token"):
            # A token service on the registry's own host and port.
            with self._lock:
                self.tokens_seen.append(dict(h.headers))
            self._reply(h, 200, b'{"token": "own-realm-token"}', {"Content-Type": "application/json"}, head)
            return
        if self.bearer_realm and not h.headers.get("Authorization", "").startswith("Bearer "):
            self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        {"WWW-Authenticate": f'Bearer realm="{self.bearer_realm}",service="hostile"'}, head)
            return
        if self.basic_auth:
            want = "Basic " + base64.b64encode(self.basic_auth.encode()).decode()
            if h.headers.get("Authorization") != want:
                self._reply(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                            {"WWW-Authenticate": 'Basic realm="hostile"'}, head)
                return
        path = h.path.split("?", 1)[0]
        if path == "/v2/":
            self._reply(h, 200, b"{}", head=head)
            return
        base = f"/v2/{REPO}/"
        if not path.startswith(base):
            self._reply(h, 404, head=head)
            return
        kind, _, ref = path[len(base):].partition("/")
        if kind == "manifests":
            self.serve_manifest(h, ref, head)
        elif kind == "blobs":
            self.serve_blob(h, ref, head)
        else:
            self._reply(h, 404, head=head)

    def serve_manifest(self, h, ref: str, head: bool):
        if ref in self.chunked_manifest:
            h.send_response(200)
            h.send_header("Content-Type", OCI_MANIFEST)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            data = self.chunked_manifest[ref]
            try:
                for i in range(0, len(data), 1 << 16):
                    chunk = data[i:i + (1 << 16)]
                    h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                h.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client gave up reading, as it should
            h.close_connection = True
            return
        item = self.content.manifests.get(ref)
        if item is None:
            self._reply(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}',
                        head=head)
            return
        data, media_type = item
        headers = {"Content-Type": self.content_type.get(ref, media_type),
                   "Docker-Content-Digest": self.digest_header.get(ref, sha(data))}
        self._reply(h, 200, data, headers, head)

    def serve_blob(self, h, digest: str, head: bool):
        if self.redirect_loop:
            self._reply(h, 307, headers={"Location": h.path}, head=head)
            return
        if self.redirect_blobs_to:
            self._reply(h, 307, headers={"Location": f"{self.redirect_blobs_to}/cdn/{digest}"}, head=head)
            return
        data = self.blob_override.get(digest, self.content.blobs.get(digest))
        if data is None:
            self._reply(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', head=head)
            return
        start = 0
        rng = h.headers.get("Range", "")
        if rng.startswith("bytes=") and not self.ignore_range:
            start = int(rng[6:].split("-", 1)[0])
        body = data[start:]
        h.send_response(206 if start else 200)
        if start and self.bad_content_range:
            start = max(0, start - 100)  # a range the client did not ask for
            body = data[start:]
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if head:
            return
        with self._lock:
            cut = self.drop_after.pop(digest, None)
        if digest in self.truncate_always:
            cut = len(body) // 2
        if cut is not None and cut < len(body):
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return
        h.wfile.write(body)


@pytest.fixture(scope="module")
def real_image(request):
    """Manifest, config and layer bytes of a real two-layer image from docker-registry."""
    reg = request.getfixturevalue("registry")
    pushed = make_busybox_image(reg, f"hostile-src/{request.module.__name__.rsplit('.', 1)[-1]}", layers=2)
    status, _, manifest = reg.request("GET", f"/v2/{pushed.repo}/manifests/{pushed.digest}",
                                      headers={"Accept": OCI_MANIFEST})
    assert status == 200
    doc = json.loads(manifest)
    blobs = {}
    for d in [doc["config"]] + doc["layers"]:
        status, _, data = reg.request("GET", f"/v2/{pushed.repo}/blobs/{d['digest']}")
        assert status == 200
        blobs[d["digest"]] = data
    return manifest, blobs


@pytest.fixture
def hostile(real_image):
    manifest, blobs = real_image
    content = Content(blobs=dict(blobs))
    content.add_manifest("latest", manifest, OCI_MANIFEST)
    reg = HostileRegistry(content)
    reg.manifest = manifest
    reg.doc = json.loads(manifest)
    yield reg
    reg.stop()


def _largest_layer(reg) -> str:
    return max(reg.doc["layers"], key=lambda x: x["size"])["digest"]


def _serve_edited(reg, tag: str, edit, media_type: str = OCI_MANIFEST) -> str:
    doc = json.loads(reg.manifest)
    edit(doc)
    return reg.content.add_manifest(tag, json.dumps(doc).encode(), media_type)


# --- content that is not what it claims --------------------------------------------------------------

def test_blob_with_wrong_content(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    bad = bytearray(hostile.content.blobs[layer])
    bad[len(bad) // 2] ^= 0xFF  # same size, one bit flipped
    hostile.blob_override[layer] = bytes(bad)
    with pytest.raises(ImageError) as err:
        make_store().pull(hostile.ref())
    assert "failed verification" in str(err.value) and layer in str(err.value)
    assert layer not in blob_files(host_paths.images)
    assert_nothing_stored(host_paths)


def test_a_bad_layer_among_parallel_downloads_leaves_only_verified_blobs(make_store, hostile, host_paths):
    # Every layer downloads at once; the one with wrong content is refused at its commit, the
    # others stop (or finish, verified): the store holds nothing unverified and no partial file.
    layers = [d["digest"] for d in hostile.doc["layers"]]
    assert len(layers) >= 2
    smallest = min(hostile.doc["layers"], key=lambda x: x["size"])["digest"]
    bad = bytearray(hostile.content.blobs[smallest])
    bad[-1] ^= 0xFF
    hostile.blob_override[smallest] = bytes(bad)
    with pytest.raises(ImageError, match="failed verification"):
        make_store(workers=len(layers)).pull(hostile.ref())
    assert smallest not in blob_files(host_paths.images)
    assert_nothing_stored(host_paths)
    hostile.blob_override.clear()
    make_store(workers=len(layers)).pull(hostile.ref())
    assert set(layers) <= set(blob_files(host_paths.images))
    assert_store_verified(host_paths, images=1)


def test_a_pull_reuses_its_connections(make_store, hostile, host_paths):
    # Keep-alive: the ping, the manifest and the config share one connection; the layers then
    # take at most one connection per download running at once (the first reuses the idle one).
    layers = len(hostile.doc["layers"])
    store = make_store(workers=layers)
    store.pull(hostile.ref())
    connections = set(hostile.client_ports)
    assert len(hostile.requests) == 3 + layers  # /v2/, manifest, config, the layers
    assert len(connections) <= layers < len(hostile.requests)
    assert_store_verified(host_paths, images=1)
    # One layer at a time: a single connection carries the whole pull (the config is stored).
    hostile.client_ports.clear()
    for d in hostile.doc["layers"]:
        (host_paths.images / "blobs" / "sha256" / d["digest"].split(":")[1]).unlink()
    make_store(workers=1).pull(hostile.ref())
    assert len(set(hostile.client_ports)) == 1 and len(hostile.client_ports) == 2 + layers


def test_manifest_that_does_not_match_the_requested_digest(make_store, hostile, host_paths):
    wanted = "sha256:" + "ab" * 32
    hostile.content.manifests[wanted] = (hostile.manifest, OCI_MANIFEST)  # serves other content
    with pytest.raises(ImageError) as err:
        make_store().pull(hostile.ref(wanted))
    assert "refusing" in str(err.value) and sha(hostile.manifest) in str(err.value)
    assert_nothing_stored(host_paths)


def test_docker_content_digest_that_lies(make_store, hostile, host_paths):
    hostile.digest_header["latest"] = "sha256:" + "cd" * 32
    with pytest.raises(ImageError, match="says its digest is"):
        make_store().pull(hostile.ref())
    assert_nothing_stored(host_paths)


def test_blob_larger_than_its_descriptor(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    hostile.blob_override[layer] = hostile.content.blobs[layer] + b"\0" * 4096
    with pytest.raises(ImageError, match="larger than"):
        make_store().pull(hostile.ref())
    assert_nothing_stored(host_paths)


def test_blob_larger_than_the_free_space_is_refused_before_downloading(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    huge = 1 << 50  # a petabyte: more than any test host has free

    def edit(doc):
        for d in doc["layers"]:
            if d["digest"] == layer:
                d["size"] = huge

    _serve_edited(hostile, "huge", edit)
    with pytest.raises(ImageError) as err:
        make_store().pull(hostile.ref("huge"))
    text = str(err.value)
    assert f"image {hostile.ref('huge')}" in text and layer in text and "1048576.0 GiB" in text
    assert f"image store {host_paths.images}" in text and "free" in text and "reserve" in text
    assert not hostile.seen("GET", f"/blobs/{layer}")  # refused before the first byte
    assert_nothing_stored(host_paths)


def test_hostile_digest_never_becomes_a_path(make_store, hostile, host_paths, tmp_path):
    victim = tmp_path / "victim"
    traversal = f"sha256:../../../../../../{victim}"

    def edit(doc):
        doc["layers"][0]["digest"] = traversal

    _serve_edited(hostile, "evil", edit)
    with pytest.raises(ImageError, match="invalid digest"):
        make_store().pull(hostile.ref("evil"))
    assert not victim.exists()
    assert_nothing_stored(host_paths)


def test_config_with_wrong_number_of_diff_ids(make_store, hostile, host_paths):
    config = json.loads(hostile.content.blobs[hostile.doc["config"]["digest"]])
    config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][:1]
    data = json.dumps(config).encode()
    hostile.content.blobs[sha(data)] = data

    def edit(doc):
        doc["config"] = {**doc["config"], "digest": sha(data), "size": len(data)}

    _serve_edited(hostile, "short", edit)
    with pytest.raises(ImageError, match="1 layer diff_ids but the manifest has 2"):
        make_store().pull(hostile.ref("short"))
    assert_store_verified(host_paths, images=0)


# --- media types that lie ---------------------------------------------------------------------------

def test_manifest_whose_media_type_lies(make_store, hostile, host_paths):
    def edit(doc):
        doc["mediaType"] = OCI_INDEX  # says index, is an image manifest

    _serve_edited(hostile, "liar", edit, media_type=OCI_INDEX)
    with pytest.raises(ImageError) as err:
        make_store().pull(hostile.ref("liar"))
    assert "mediaType says" in str(err.value) and "refusing" in str(err.value)
    assert_nothing_stored(host_paths)


def test_content_type_that_lies(make_store, hostile, host_paths):
    hostile.content_type["latest"] = DOCKER_MANIFEST
    with pytest.raises(ImageError, match="served as"):
        make_store().pull(hostile.ref())
    assert_nothing_stored(host_paths)


def test_index_entry_whose_media_type_lies(make_store, hostile, host_paths):
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha(hostile.manifest), "size": len(hostile.manifest),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    hostile.content.add_manifest("multi", json.dumps(index).encode(), OCI_INDEX)
    with pytest.raises(ImageError, match="the index lists it as"):
        make_store(platform="linux/amd64").pull(hostile.ref("multi"))
    assert_nothing_stored(host_paths)


def test_index_entry_with_wrong_size(make_store, hostile, host_paths):
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(hostile.manifest), "size": len(hostile.manifest) + 7,
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    hostile.content.add_manifest("multi", json.dumps(index).encode(), OCI_INDEX)
    with pytest.raises(ImageError, match="the index says"):
        make_store(platform="linux/amd64").pull(hostile.ref("multi"))
    assert_nothing_stored(host_paths)


# --- documents too big --------------------------------------------------------------------------------

def test_oversize_manifest_with_content_length(make_store, hostile, host_paths):
    big = json.dumps({**hostile.doc, "annotations": {"pad": "x" * (5 << 20)}}).encode()
    hostile.content.add_manifest("big", big, OCI_MANIFEST)
    with pytest.raises(ImageError, match="more than the 4194304 bytes allowed"):
        make_store().pull(hostile.ref("big"))
    assert_nothing_stored(host_paths)


def test_oversize_manifest_streamed_without_length(make_store, hostile, host_paths):
    hostile.chunked_manifest["endless"] = b"{" + b" " * (6 << 20)
    with pytest.raises(ImageError, match="more than the 4194304 bytes allowed"):
        make_store().pull(hostile.ref("endless"))
    assert_nothing_stored(host_paths)


# --- failures survived ---------------------------------------------------------------------------------

def test_500_then_success(make_store, hostile, host_paths):
    hostile.fail_first[f"/v2/{REPO}/manifests/"] = 2
    hostile.fail_first[f"/v2/{REPO}/blobs/"] = 1
    info = make_store(retries=3).pull(hostile.ref())
    assert info.manifest_digest == sha(hostile.manifest)
    assert len(hostile.seen("GET", "/manifests/latest")) == 3
    assert_store_verified(host_paths, images=1)


def test_server_errors_until_the_last_try_are_temporary(make_store, hostile, host_paths):
    hostile.fail_first[f"/v2/{REPO}/manifests/"] = 100
    with pytest.raises(TemporaryImageError) as err:
        make_store(retries=2).pull(hostile.ref())
    assert "failed after 3 tries" in str(err.value) and "503" in str(err.value)
    assert err.value.temporary
    assert len(hostile.seen("GET", "/manifests/latest")) == 3
    assert_nothing_stored(host_paths)


def test_connection_dropped_mid_blob_resumes_with_range(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    size = len(hostile.content.blobs[layer])
    cut = size // 3
    hostile.drop_after[layer] = cut
    info = make_store().pull(hostile.ref())
    gets = hostile.seen("GET", f"/blobs/{layer}")
    assert len(gets) == 2
    assert "Range" not in gets[0][2]
    assert gets[1][2]["Range"] == f"bytes={cut}-"
    assert layer in [x.digest for x in info.layers]
    assert_store_verified(host_paths, images=1)


def test_server_that_ignores_range_restarts_cleanly(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    hostile.drop_after[layer] = len(hostile.content.blobs[layer]) // 2
    hostile.ignore_range = True
    make_store().pull(hostile.ref())
    assert len(hostile.seen("GET", f"/blobs/{layer}")) == 2
    assert_store_verified(host_paths, images=1)


def test_blob_truncated_every_time_gives_up_cleanly(make_store, hostile, host_paths):
    """A registry that cuts every download in half and ignores Range: a bounded number of
    restarts from byte 0 (not one per retry of a thousand resumes), then a permanent error, and
    no .partial file left behind."""
    layer = _largest_layer(hostile)
    hostile.truncate_always.add(layer)
    hostile.ignore_range = True  # each try starts again and is cut again: no progress is made
    with pytest.raises(ImageError) as err:
        make_store(retries=10).pull(hostile.ref())
    assert not err.value.temporary
    text = str(err.value)
    assert layer in text and "ignores Range" in text and f"gave up after {MAX_FULL_RESTARTS} restarts" in text
    gets = hostile.seen("GET", f"/blobs/{layer}")
    assert len(gets) == 1 + MAX_FULL_RESTARTS
    assert "Range" in gets[1][2] and all("Range" not in g[2] for g in gets[2:])
    assert_nothing_stored(host_paths)


def test_blob_truncated_every_time_with_range_gives_up_cleanly(make_store, hostile, host_paths):
    """A registry that honours Range but never sends the last byte: retries, then a temporary
    error, and the partial download goes with it."""
    layer = _largest_layer(hostile)
    size = len(hostile.content.blobs[layer])
    hostile.drop_after[layer] = size - 1
    original = hostile.serve_blob

    def serve(h, digest, head):
        if digest == layer and h.headers.get("Range"):
            hostile.drop_after[layer] = 0  # every resume is cut before its first byte
        original(h, digest, head)

    hostile.serve_blob = serve
    with pytest.raises(TemporaryImageError, match="download failed"):
        make_store(retries=2).pull(hostile.ref())
    assert_store_verified(host_paths, images=0)
    # The given-up layer's partial goes. A layer downloading beside it when the pull stopped was
    # interrupted, not refused: what it got may stay for the next pull to resume.
    partials = [p.name for p in (host_paths.images / "ingest").glob("*.partial")]
    assert f"{layer.replace(':', '-')}.partial" not in partials


def test_range_answered_with_another_range_starts_over(make_store, hostile, host_paths):
    layer = _largest_layer(hostile)
    hostile.drop_after[layer] = len(hostile.content.blobs[layer]) // 2
    hostile.bad_content_range = True
    make_store().pull(hostile.ref())
    gets = hostile.seen("GET", f"/blobs/{layer}")
    assert len(gets) == 3 and "Range" in gets[1][2] and "Range" not in gets[2][2]
    assert_store_verified(host_paths, images=1)


# --- credentials never leave the registry -------------------------------------------------------------

def test_redirect_to_another_host_drops_authorization(make_store, hostile, host_paths):
    cdn = BlobServer(hostile.content.blobs)
    try:
        hostile.basic_auth = "user:pw"
        hostile.redirect_blobs_to = cdn.url
        creds = [RegistryCredential(hostile.host, "user", "pw")]
        info = make_store().pull(hostile.ref(), creds)
        assert info.manifest_digest == sha(hostile.manifest)
        # the registry got the credentials on every blob request; the CDN never did
        blob_requests = hostile.seen("GET", "/blobs/")
        assert blob_requests and all(r[2].get("Authorization", "").startswith("Basic ") for r in blob_requests)
        assert len(cdn.seen) == 3
        assert not any("Authorization" in h for h in cdn.seen)
        assert_store_verified(host_paths, images=1)
    finally:
        cdn.stop()


class RealmServer:
    """A token service on another host (127.0.0.2) that records what it is sent and grants an
    anonymous token."""

    def __init__(self):
        self.seen: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                server.seen.append(dict(self.headers))
                body = b'{"token": "foreign-realm-token"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.httpd.daemon_threads = True
        self.realm = f"http://127.0.0.2:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def foreign_realm():
    realm = RealmServer()
    yield realm
    realm.stop()


def test_credentials_never_go_to_a_foreign_token_realm(make_store, hostile, host_paths, foreign_realm, caplog,
                                                      monkeypatch):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    hostile.bearer_realm = foreign_realm.realm
    creds = [RegistryCredential(hostile.host, "user", "pw")]
    with caplog.at_level("WARNING", logger="podplay.images"):
        info = make_store().pull(hostile.ref(), creds)
    assert info.manifest_digest == sha(hostile.manifest)  # the anonymous token was enough here
    assert foreign_realm.seen and not any("Authorization" in h for h in foreign_realm.seen)
    warnings = [r.getMessage() for r in caplog.records if r.name == "podplay.images"]
    assert len(warnings) == 1 and foreign_realm.realm in warnings[0] and "without the credentials" in warnings[0]
    assert "PODPLAY_TOKEN_REALMS" in warnings[0]
    assert_store_verified(host_paths, images=1)


def test_identity_token_never_goes_to_a_foreign_token_realm(make_store, hostile, foreign_realm, monkeypatch):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    hostile.bearer_realm = foreign_realm.realm
    client = make_store().client(hostile.host, REPO, credentials=[])
    client.credential = Credential("", "", identity_token="refresh-me")
    client.get_manifest(REPO, "latest")
    assert foreign_realm.seen and not any("Authorization" in h or "Content-Length" in h for h in foreign_realm.seen)


def test_login_refuses_a_foreign_token_realm(hostile, foreign_realm, monkeypatch):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    hostile.bearer_realm = foreign_realm.realm
    client = RegistryClient(hostile.host, credential=Credential("user", "pw"), retries=0)
    with pytest.raises(AuthenticationError, match="not on its own host and port"):
        client.check_login()
    assert foreign_realm.seen == []


def test_credentials_go_to_a_realm_the_operator_lists(make_store, hostile, host_paths, foreign_realm, monkeypatch):
    monkeypatch.setenv("PODPLAY_TOKEN_REALMS", f"other.example=https://x.example {hostile.host}={foreign_realm.realm}")
    hostile.bearer_realm = foreign_realm.realm
    make_store().pull(hostile.ref(), [RegistryCredential(hostile.host, "user", "pw")])
    want = "Basic " + base64.b64encode(b"user:pw").decode()
    assert foreign_realm.seen and all(h.get("Authorization") == want for h in foreign_realm.seen)


def test_credentials_go_to_a_realm_on_the_registry_itself(make_store, hostile, host_paths, monkeypatch):
    monkeypatch.delenv("PODPLAY_TOKEN_REALMS", raising=False)
    hostile.bearer_realm = f"http://{hostile.host}/token"
    make_store().pull(hostile.ref(), [RegistryCredential(hostile.host, "user", "pw")])
    want = "Basic " + base64.b64encode(b"user:pw").decode()
    assert hostile.tokens_seen and all(h.get("Authorization") == want for h in hostile.tokens_seen)


def test_redirect_loop_is_refused(make_store, hostile, host_paths):
    hostile.redirect_loop = True
    with pytest.raises(ImageError, match="too many redirects"):
        make_store().pull(hostile.ref())
    assert_nothing_stored(host_paths)


def test_unsupported_auth_scheme(make_store, hostile, host_paths):
    hostile.basic_auth = "u:p"
    orig = hostile._reply

    def reply(h, status, body=b"", headers=None, head=False):
        if status == 401:
            headers = {"WWW-Authenticate": "Negotiate"}
        orig(h, status, body, headers, head)

    hostile._reply = reply
    with pytest.raises(ImageError, match="unsupported authentication 'negotiate'"):
        make_store().pull(hostile.ref())
    assert_nothing_stored(host_paths)


# --- pull policy Always asks with a HEAD -------------------------------------------------------------

def test_always_asks_with_head_and_pulls_nothing_when_unchanged(make_store, hostile, host_paths):
    store = make_store()
    info = store.ensure_image(hostile.ref(), "Always")
    gets = len(hostile.seen("GET"))
    assert store.ensure_image(hostile.ref(), "Always") == info
    assert len(hostile.seen("HEAD", "/manifests/latest")) == 1
    assert len(hostile.seen("GET")) == gets  # no manifest or blob downloaded again


def test_always_falls_back_to_get_when_head_has_no_digest(make_store, hostile, host_paths):
    store = make_store()
    info = store.ensure_image(hostile.ref(), "Always")
    hostile.digest_header["latest"] = ""
    assert store.ensure_image(hostile.ref(), "Always") == info
    assert len(hostile.seen("GET", "/manifests/latest")) == 2
    assert len(hostile.seen("GET", "/blobs/")) == 3  # only the first pull's config + 2 layers
