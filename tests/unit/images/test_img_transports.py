"""Transport names, ``--change`` instructions, OCI ref names and manifest conversion: tables."""

from __future__ import annotations

import json

import pytest

from reconciler.errors import ImageError, InputError
from reconciler.images.importer import parse_changes
from reconciler.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    parse_manifest,
)
from reconciler.images.transports import (
    ImageLocation,
    _layer_type,
    _rewrite_index,
    _rewrite_manifest,
    name_from_ref_annotation,
    parse_location,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# --- locations ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("docker://busybox", ImageLocation("docker", "busybox")),
    ("docker://127.0.0.1:5000/a/b:v1", ImageLocation("docker", "127.0.0.1:5000/a/b:v1")),
    ("docker://quay.io/x/y@" + D1, ImageLocation("docker", "quay.io/x/y@" + D1)),
    ("oci:/srv/layout", ImageLocation("oci", "/srv/layout")),
    ("oci:/srv/layout:v1", ImageLocation("oci", "/srv/layout", "v1")),
    # the first ':' ends the path, so a full image name can be the ref name
    ("oci:layout:docker.io/library/busybox:1.36", ImageLocation("oci", "layout", "docker.io/library/busybox:1.36")),
    ("oci-archive:/tmp/a.tar", ImageLocation("oci-archive", "/tmp/a.tar")),
    ("oci-archive:a.tar:img", ImageLocation("oci-archive", "a.tar", "img")),
    ("docker-archive:a.tar", ImageLocation("docker-archive", "a.tar")),
    ("docker-archive:a.tar:busybox:latest", ImageLocation("docker-archive", "a.tar", "busybox:latest")),
    ("docker-archive:a.tar:@1", ImageLocation("docker-archive", "a.tar", "@1")),
    ("podplay:localhost/busybox", ImageLocation("podplay", "localhost/busybox")),
    ("dir:/srv/img", ImageLocation("dir", "/srv/img")),
    ("dir:rel:with:colons", ImageLocation("dir", "rel:with:colons")),  # dir: names no image
    ("podplay:", ImageLocation("podplay", "")),
    ("busybox", ImageLocation("podplay", "busybox")),
    ("localhost:5000/app:1", ImageLocation("podplay", "localhost:5000/app:1")),  # a host, not a transport
    ("a" * 64, ImageLocation("podplay", "a" * 64)),  # an image id
    ("sha256:" + "b" * 64, ImageLocation("podplay", "sha256:" + "b" * 64)),
])
def test_locations(text, expected):
    loc = parse_location(text)
    assert loc == expected
    assert parse_location(str(loc)) == loc or loc.transport == "podplay"


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty image location"),
    ("docker:busybox", "docker://REF"),
    ("docker://Busy", "lowercase"),
    ("docker://", "empty image name"),
    ("containers-storage:busybox", "podplay:REF"),
    ("docker-daemon:busybox:latest", "docker-archive"),
    ("dir:", "dir: needs a directory"),
    ("oci:", "needs a directory"),
    ("oci-archive::img", "needs a file"),
    ("oci:/x:bad name", "not a valid image name"),
    ("oci:/x:-lead", "not a valid image name"),
    ("docker-archive:a.tar:@x", "not an image position"),
    ("docker-archive:a.tar:UPPER", "lowercase"),
    ("Not/Valid", "invalid location"),
])
def test_bad_locations(text, message):
    with pytest.raises(InputError, match=message):
        parse_location(text)


@pytest.mark.parametrize(("ref", "expected"), [
    ("", None),
    ("localhost/busybox:latest", "localhost/busybox:latest"),
    ("quay.io/org/app:1", "quay.io/org/app:1"),
    ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"),
    ("busybox:1.36", "localhost/busybox:1.36"),  # podman names short names of loaded images so
    ("app", "localhost/app:latest"),
    ("org/app:2", "localhost/org/app:2"),
    ("v1.0+build", None),  # a ref name that is no image name: the image stays unnamed
])
def test_ref_annotation_names(ref, expected):
    name = name_from_ref_annotation(ref)
    assert (name.name if name else None) == expected


# --- --change -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "expected"), [
    (['CMD ["sh"]'], {"Cmd": ["sh"]}),
    (["CMD echo hi && sleep 1"], {"Cmd": ["/bin/sh", "-c", "echo hi && sleep 1"]}),
    (["CMD=/bin/sh"], {"Cmd": ["/bin/sh", "-c", "/bin/sh"]}),  # podman's KEY=VALUE spelling
    (['cmd ["a", "b c"]'], {"Cmd": ["a", "b c"]}),  # instructions are case-insensitive
    (["CMD [not json"], {"Cmd": ["/bin/sh", "-c", "[not json"]}),  # Docker: then it is shell form
    (['ENTRYPOINT ["/bin/httpd", "-f"]', 'CMD ["-p", "80"]'],
     {"Entrypoint": ["/bin/httpd", "-f"], "Cmd": ["-p", "80"]}),
    (["ENTRYPOINT exec top -b"], {"Entrypoint": ["/bin/sh", "-c", "exec top -b"]}),
    (["ENV A=1"], {"Env": ["A=1"]}),
    (['ENV A=1 B="two words" C=x\\ y'], {"Env": ["A=1", "B=two words", "C=x y"]}),
    (["ENV LEGACY some value here"], {"Env": ["LEGACY=some value here"]}),
    (["ENV A=1", "ENV B=2", "ENV A=3"], {"Env": ["B=2", "A=3"]}),  # a later value replaces
    (["ENV EMPTY="], {"Env": ["EMPTY="]}),
    (["ENV=PATH=/bin"], {"Env": ["PATH=/bin"]}),
    (['LABEL a=b "c d"="e f"'], {"Labels": {"a": "b", "c d": "e f"}}),
    (["EXPOSE 80 443/tcp 53/udp"], {"ExposedPorts": {"80/tcp": {}, "443/tcp": {}, "53/udp": {}}}),
    (["EXPOSE 8000-8002/UDP"], {"ExposedPorts": {"8000/udp": {}, "8001/udp": {}, "8002/udp": {}}}),
    (["VOLUME /data"], {"Volumes": {"/data": {}}}),
    (['VOLUME ["/a", "/b"]'], {"Volumes": {"/a": {}, "/b": {}}}),
    (["VOLUME /a /b"], {"Volumes": {"/a": {}, "/b": {}}}),
    (["WORKDIR /www"], {"WorkingDir": "/www"}),
    (["WORKDIR /a", "WORKDIR b/../c"], {"WorkingDir": "/a/c"}),  # relative to the previous one
    (["WORKDIR rel"], {"WorkingDir": "/rel"}),
    (["USER nobody"], {"User": "nobody"}),
    (["USER 1000:1000"], {"User": "1000:1000"}),
    (["STOPSIGNAL SIGUSR1"], {"StopSignal": "SIGUSR1"}),
    (["STOPSIGNAL term"], {"StopSignal": "TERM"}),
    (["STOPSIGNAL 9"], {"StopSignal": "9"}),
    (["STOPSIGNAL SIGRTMIN+3"], {"StopSignal": "SIGRTMIN+3"}),
    (["  CMD   sh  "], {"Cmd": ["/bin/sh", "-c", "sh"]}),
    ([], {}),
])
def test_changes(changes, expected):
    assert parse_changes(changes) == expected


@pytest.mark.parametrize(("change", "message"), [
    ("", "needs an instruction"),
    ("CMD", "CMD needs a value"),
    ("FROM busybox", "FROM is not supported"),
    ("RUN echo hi", "RUN is not supported"),
    ("ONBUILD RUN x", "ONBUILD is not supported"),
    ("nonsense", "expected 'INSTRUCTION value'"),
    ('CMD ["sh", 1]', "JSON array of strings"),
    ("ENV", "ENV needs a value"),
    ("ENV =x", "not KEY=VALUE"),
    ("ENV A=1 junk", "not KEY=VALUE"),
    ("ENV LONELY", "needs a value"),
    ('ENV A="unterminated', "No closing quotation"),
    ("EXPOSE 0", "PORT"),
    ("EXPOSE 70000", "PORT"),
    ("EXPOSE 80/icmp", "PORT"),
    ("EXPOSE 90-80", "PORT"),
    ("VOLUME data", "absolute path"),
    ("USER a b", "USER takes one"),
    ("STOPSIGNAL 99", "not a signal"),
    ("STOPSIGNAL SIG TERM", "not a signal"),
])
def test_bad_changes(change, message):
    with pytest.raises(InputError, match=message):
        parse_changes([change])


# --- manifest conversion ------------------------------------------------------------------------

def test_docker_to_oci_manifest_keeps_content_and_order():
    docker = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": 10, "digest": D1},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 20, "digest": D2},
                   {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": 30, "digest": D3}],
    }).encode()
    layers = [Descriptor(_layer_type("application/vnd.docker.image.rootfs.diff.tar.gzip", OCI_MANIFEST), D2, 20),
              Descriptor(_layer_type("application/vnd.docker.image.rootfs.diff.tar", OCI_MANIFEST), D3, 30)]
    data = _rewrite_manifest(docker, OCI_MANIFEST, OCI_CONFIG, layers)
    parsed = parse_manifest(data, content_type=OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST and parsed.config.media_type == OCI_CONFIG
    assert [(x.media_type, x.digest, x.size) for x in parsed.layers] == [
        ("application/vnd.oci.image.layer.v1.tar+gzip", D2, 20), ("application/vnd.oci.image.layer.v1.tar", D3, 30)]
    assert list(json.loads(data)) == ["schemaVersion", "mediaType", "config", "layers"]


def test_oci_to_docker_drops_what_docker_cannot_say():
    oci = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"a": "b"},
        "config": {"mediaType": OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20,
                    "annotations": {"x": "y"}}],
    }).encode()
    data = _rewrite_manifest(oci, DOCKER_MANIFEST, DOCKER_CONFIG,
                             [Descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", D2, 20)])
    doc = json.loads(data)
    assert "annotations" not in doc and "annotations" not in doc["layers"][0]
    assert parse_manifest(data, content_type=DOCKER_MANIFEST).media_type == DOCKER_MANIFEST


def test_zstd_layers_have_no_docker_form():
    with pytest.raises(ImageError, match="--format oci"):
        _layer_type("application/vnd.oci.image.layer.v1.tar+zstd", DOCKER_MANIFEST)
    with pytest.raises(ImageError, match="cannot convert"):
        _layer_type("application/vnd.in-toto+json", DOCKER_MANIFEST)


def test_index_rewrite_points_at_new_children():
    from reconciler.images.blobio import CopiedImage

    index = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "size": 5, "digest": D1,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}]}).encode()
    child = CopiedImage(b"{}", D3, OCI_MANIFEST)
    data = _rewrite_index(index, OCI_INDEX, [(None, child)])
    parsed = parse_manifest(data, content_type=OCI_INDEX)
    (entry,) = parsed.manifests
    assert (entry.media_type, entry.digest, entry.size) == (OCI_MANIFEST, D3, 2)
    assert entry.platform.architecture == "arm64" and entry.platform.variant == "v8"
