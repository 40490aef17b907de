"""``podplay import`` of the host's busybox, as ``make run`` does it: the tarball from
scripts/busybox-rootfs.sh, the image read back by skopeo and unpacked by the storage driver."""

from __future__ import annotations

import json
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from reconciler.images.platform import host_platform
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified, blob_files
from tests.host.images.transport_kit import Podplay, sha, skopeo_config, skopeo_json, skopeo_raw

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "busybox-rootfs.sh"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rootfs") / "busybox-rootfs.tar"
    subprocess.run([str(SCRIPT), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def podplay(host_paths, tmp_path):
    return Podplay(host_paths, tmp_path)


def test_rootfs_script_makes_what_make_run_needs(rootfs):
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(rootfs) as t:
        members = {m.name: m for m in t.getmembers()}
        passwd = t.extractfile("./etc/passwd").read().decode()
        group = t.extractfile("./etc/group").read().decode()
    root = members["."]  # tarfile drops the trailing slash of "./"
    assert root.isdir() and stat.S_IMODE(root.mode) == 0o755
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["./bin/busybox"].isfile() and members["./bin/busybox"].mode & 0o111
    assert stat.S_IMODE(members["./tmp"].mode) == 0o1777
    for d in ("./root", "./www", "./etc"):
        assert members[d].isdir()
    links = {name[len("./bin/"):]: m.linkname for name, m in members.items() if m.issym()}
    assert set(links) == set(applets) - {"busybox"} and set(links.values()) == {"busybox"}
    assert [line.split(":")[0] for line in passwd.splitlines()] == ["root", "nobody"]
    assert [line.split(":")[0] for line in group.splitlines()] == ["root", "nobody"]
    # the same host gives the same tarball
    again = rootfs.with_name("again.tar")
    subprocess.run([str(SCRIPT), str(again)], check=True, capture_output=True)
    assert again.read_bytes() == rootfs.read_bytes()


def test_import_busybox_and_read_it_back_with_skopeo(podplay, rootfs, tmp_path, host_paths):
    from reconciler.storage.unpack import unpack_layer

    out = podplay.text("import", str(rootfs), "localhost/busybox:latest", "--change", 'CMD ["sh"]',
                       "--change", "ENV PATH=/bin", "-c", "WORKDIR /www", "-c", "EXPOSE 8080",
                       "-c", "LABEL org.example.purpose=demo", "--message", "busybox from the host")
    image_id = "sha256:" + out.strip()
    assert_store_verified(host_paths, images=1)
    ours = json.loads(podplay.text("inspect", "localhost/busybox:latest"))[0]
    assert ours["Id"] == image_id[7:] and ours["RepoTags"] == ["localhost/busybox:latest"]

    layout = tmp_path / "layout"
    podplay("copy", "localhost/busybox", f"oci:{layout}:busybox")
    theirs = skopeo_json(f"oci:{layout}:busybox")
    assert theirs["Architecture"] == host_platform().architecture and theirs["Os"] == "linux"
    assert theirs["Env"] == ["PATH=/bin"] and theirs["Labels"] == {"org.example.purpose": "demo"}
    assert theirs["Layers"] == [layer["Digest"] for layer in ours["Layers"]]
    config = skopeo_config(f"oci:{layout}:busybox")
    assert sha(config) == image_id
    doc = json.loads(config)
    assert doc["config"]["Cmd"] == ["sh"] and doc["config"]["WorkingDir"] == "/www"
    assert doc["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert doc["rootfs"]["diff_ids"] == [sha(rootfs.read_bytes())]  # the tarball as it was
    assert doc["history"][0]["comment"] == "busybox from the host"
    assert doc["created"] == doc["history"][0]["created"] and "variant" not in doc
    manifest = json.loads(skopeo_raw(f"oci:{layout}:busybox"))
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    # the storage driver unpacks it (checking the diff_id) into a usable root file system
    layer = ours["Layers"][0]
    dest = tmp_path / "unpacked"
    with open(host_paths.images / "blobs" / "sha256" / layer["Digest"][7:], "rb") as f:
        unpack_layer(f, dest, diff_id=layer["DiffID"])
    assert (dest / "bin" / "busybox").is_file() and (dest / "bin" / "sh").is_symlink()
    assert stat.S_IMODE((dest / "tmp").stat().st_mode) == 0o1777
    res = subprocess.run([str(dest / "bin" / "busybox"), "echo", "alive"], capture_output=True, text=True)
    assert res.stdout == "alive\n"


def test_import_from_stdin_compressed_gives_the_same_layer(podplay, rootfs, tmp_path, host_paths):
    podplay("import", str(rootfs), "plain")
    plain = json.loads(podplay.text("inspect", "localhost/plain:latest"))[0]
    for tool, name in (("gzip", "gz"), ("zstd", "zst"), ("xz", "xz")):
        packed = tmp_path / f"rootfs.tar.{name}"
        with open(packed, "wb") as f:
            subprocess.run([tool, "-c", str(rootfs)], stdout=f, check=True)
        with open(packed, "rb") as f:
            podplay("import", "-", f"from-{name}", stdin_file=f)
        other = json.loads(podplay.text("inspect", f"localhost/from-{name}:latest"))[0]
        # same content, same deterministic gzip: the very same layer blob
        assert other["Layers"] == plain["Layers"]
    assert_store_verified(host_paths, images=4)


def test_import_without_a_name_and_for_another_platform(podplay, rootfs):
    out = podplay.text("import", "--platform", "linux/arm64/v8", str(rootfs))
    image_id = out.strip()
    listed = json.loads(podplay.text("images", "--output", "json"))
    assert listed[0]["Id"] == image_id and listed[0]["Names"] == [] and listed[0]["Dangling"]
    assert listed[0]["Architecture"] == "arm64"
    out = podplay.text("import", "--arch", "arm", "--variant", "v7", str(rootfs), "armhf")
    config = json.loads(podplay("inspect", "--config", "localhost/armhf").stdout)
    assert (config["architecture"], config["variant"]) == ("arm", "v7")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["{junk}", "x"], 5, b"not a tar archive"),
    (["{missing}", "x"], 5, b"no such file"),
    (["{dir}", "x"], 5, b"it is a directory"),
    (["{rootfs}", "x", "--change", "RUN rm -rf /"], 1, b"RUN is not supported"),
    (["{rootfs}", "x", "--change", "EXPOSE 99999"], 1, b"PORT"),
    (["{rootfs}", "Bad:Name"], 1, b"invalid reference"),
])
def test_import_errors(podplay, rootfs, tmp_path, host_paths, args, code, message):
    (tmp_path / "junk").write_bytes(b"\x00junk" * 500)
    (tmp_path / "dir").mkdir()
    values = {"junk": tmp_path / "junk", "missing": tmp_path / "missing.tar", "dir": tmp_path / "dir",
              "rootfs": rootfs}
    res = podplay("import", *[a.format(**values) for a in args], ok=False)
    assert res.returncode == code and message in res.stderr, res.stderr
    assert b"Traceback" not in res.stderr
    assert_nothing_stored(host_paths)
    assert blob_files(host_paths.images) == {}
