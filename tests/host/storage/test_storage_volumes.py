"""Pod volumes on the host: emptyDir (disk and tmpfs), hostPath types, configMap/secret files,
claims, and their removal."""

from __future__ import annotations

import base64
import errno
import os
import socket
import stat
from pathlib import Path

import pytest

from reconciler.desired import DesiredClaim, DesiredVolume, VolumeFile, build_desired
from reconciler.drivers.base import VolumeDriver
from reconciler.errors import StorageError
from reconciler.manifests import load_objects
from reconciler.manifests.hostfacts import this_host
from reconciler.storage import mounts
from reconciler.storage.volumes import HostVolumes

UID = "0123456789ab"


@pytest.fixture
def vols(host_paths) -> HostVolumes:
    v = HostVolumes(host_paths)
    assert isinstance(v, VolumeDriver)
    return v


def fstype(path: str) -> str:
    path = os.path.realpath(path)
    return {m: t for m, t, _ in mounts.mount_points()}.get(path, "")


def pod_volumes(spec_volumes: list, objects: list = (), security: dict | None = None) -> tuple[DesiredVolume, ...]:
    """DesiredVolumes as build_desired makes them from a real Pod manifest."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}], "volumes": spec_volumes,
                    **({"securityContext": security} if security else {})}}
    loaded = load_objects([*objects, pod], source="/m/test.yaml")
    assert loaded.ok, "\n".join(map(str, loaded.errors))
    return build_desired(loaded.objects).pods["default/web"].volumes


# --- emptyDir -------------------------------------------------------------------------------------

def test_memory_empty_dir_is_a_bounded_tmpfs(vols, host_paths):
    [vol] = pod_volumes([{"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
    paths = vols.prepare_pod_volumes(UID, [vol])
    path = paths["scratch"]
    assert path == str(host_paths.pods_run / UID / "volumes" / "scratch")
    assert fstype(path) == "tmpfs"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777
    with open(f"{path}/fits", "wb") as fh:
        fh.write(os.urandom(512 * 1024))
    with pytest.raises(OSError) as err, open(f"{path}/too-much", "wb") as fh:
        fh.write(os.urandom(1024 * 1024))
        fh.flush()
    assert err.value.errno == errno.ENOSPC
    assert vols.prepare_pod_volumes(UID, [vol]) == paths  # idempotent: not mounted twice
    assert len(mounts.mounts_at_or_under(path)) == 1
    vols.remove_pod_volumes(UID)
    assert not os.path.exists(path) and not mounts.mounts_at_or_under(host_paths.runroot)


def test_disk_empty_dir_lives_under_the_durable_root_until_the_pod_goes(vols, host_paths):
    [vol] = pod_volumes([{"name": "cache", "emptyDir": {}}], security={"fsGroup": 2000})
    path = vols.prepare_pod_volumes(UID, [vol])["cache"]
    assert path == str(host_paths.root / "pods" / UID / "volumes" / "cache")
    st = os.stat(path)
    assert st.st_gid == 2000 and st.st_mode & stat.S_ISGID and stat.S_IMODE(st.st_mode) & 0o777 == 0o777
    Path(path, "data").write_text("survives a container restart")
    assert vols.prepare_pod_volumes(UID, [vol])["cache"] == path
    assert Path(path, "data").read_text() == "survives a container restart"
    assert vols.list_pod_volumes() == [UID]
    vols.remove_pod_volumes(UID)
    assert not os.path.exists(host_paths.root / "pods" / UID)
    assert vols.list_pod_volumes() == []
    vols.remove_pod_volumes(UID)  # idempotent


# --- hostPath -------------------------------------------------------------------------------------

def host(tmp: Path, name: str, kind: str) -> DesiredVolume:
    return DesiredVolume("h", "hostPath", path=str(tmp / name) if not name.startswith("/") else name,
                         path_type=kind)


def test_host_path_types(vols, tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        ok = [("dir", "Directory"), ("dir", "DirectoryOrCreate"), ("file", "File"), ("file", "FileOrCreate"),
              ("sock", "Socket"), ("/dev/null", "CharDevice"), ("missing-but-unchecked", "")]
        block = next((f"/dev/{n}" for n in sorted(os.listdir("/dev"))
                      if stat.S_ISBLK(os.stat(f"/dev/{n}").st_mode)), None)
        if block:
            ok.append((block, "BlockDevice"))
        for name, kind in ok:
            vol = host(tmp_path, name, kind)
            assert vols.prepare_pod_volumes(UID, [vol]) == {"h": vol.path}, (name, kind)
        assert not (tmp_path / "missing-but-unchecked").exists()
        bad = [("file", "Directory", "not a directory"), ("missing", "Directory", "does not exist"),
               ("dir", "File", "not a file"), ("missing", "File", "does not exist"),
               ("dir", "FileOrCreate", "not a file"), ("file", "DirectoryOrCreate", "not a directory"),
               ("file", "Socket", "not a unix socket"), ("file", "CharDevice", "not a character device"),
               ("/dev/null", "BlockDevice", "not a block device"), ("nodir/f", "FileOrCreate", "parent"),
               ("sock", "weird", "unknown hostPath type"), ("relative", "", "absolute")]
        for name, kind, message in bad:
            vol = host(tmp_path, name, kind)
            if name == "relative":
                vol = DesiredVolume("h", "hostPath", path="relative/path", path_type="")
            with pytest.raises(StorageError, match=message):
                vols.prepare_pod_volumes(UID, [vol])
    finally:
        sock.close()
    assert not (tmp_path / "missing").exists() and not (tmp_path / "nodir").exists()


def test_host_path_or_create_types_create(vols, tmp_path):
    d = host(tmp_path, "a/b/c", "DirectoryOrCreate")
    f = host(tmp_path, "new-file", "FileOrCreate")
    vols.prepare_pod_volumes(UID, [d, DesiredVolume("f", "hostPath", path=f.path, path_type="FileOrCreate")])
    assert stat.S_IMODE(os.stat(tmp_path / "a/b/c").st_mode) == 0o755
    st = os.stat(tmp_path / "new-file")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o644
    vols.remove_pod_volumes(UID)
    assert (tmp_path / "a/b/c").is_dir() and (tmp_path / "new-file").exists()  # hostPaths are the host's


# --- configMap and secret -------------------------------------------------------------------------

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"},
      "data": {"a.ini": "[a]\nx=1\n", "b.txt": "bee\n", "c": "sea\n"}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
          "data": {"token": base64.b64encode(b"s3cr3t").decode(), "ca.crt": base64.b64encode(b"CA").decode()}}


def test_secret_files_live_on_tmpfs_with_0400_by_default(vols, host_paths):
    [vol] = pod_volumes([{"name": "creds", "secret": {"secretName": "sec"}}], [SECRET],
                        security={"runAsUser": 1000})
    path = vols.prepare_pod_volumes(UID, [vol])["creds"]
    assert fstype(path) == "tmpfs"
    assert Path(path, "token").read_bytes() == b"s3cr3t"
    st = os.stat(Path(path, "token"))
    assert stat.S_IMODE(st.st_mode) == 0o400 and st.st_uid == 1000
    assert os.readlink(Path(path, "token")) == "..data/token"
    # Nothing of the secret reached a disk-backed directory of podplay.
    for root in (host_paths.root, host_paths.runroot):
        for dirpath, _, files in os.walk(root):
            for name in files:
                p = Path(dirpath, name)
                if not str(p).startswith(path):
                    assert b"s3cr3t" not in p.read_bytes()
    vols.remove_pod_volumes(UID)
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_config_map_items_sub_paths_and_modes(vols):
    [vol] = pod_volumes([{"name": "conf", "configMap": {
        "name": "cfg", "defaultMode": 0o640,
        "items": [{"key": "a.ini", "path": "conf.d/a.ini", "mode": 0o600}, {"key": "b.txt", "path": "b"}]}}], [CM])
    path = Path(vols.prepare_pod_volumes(UID, [vol])["conf"])
    assert sorted(p for p in os.listdir(path) if not p.startswith("..")) == ["b", "conf.d"]
    assert (path / "conf.d/a.ini").read_text() == "[a]\nx=1\n"
    assert stat.S_IMODE(os.stat(path / "conf.d/a.ini").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path / "b").st_mode) == 0o640
    assert os.readlink(path / "conf.d") == "..data/conf.d"
    assert not (path / "c").exists()


def test_config_map_update_swaps_the_whole_set(vols):
    first = DesiredVolume("conf", "configMap", files=(VolumeFile("a", b"1"), VolumeFile("dir/x", b"x")))
    path = Path(vols.prepare_pod_volumes(UID, [first])["conf"])
    old_target = os.readlink(path / "..data")
    second = DesiredVolume("conf", "configMap", files=(VolumeFile("a", b"2"), VolumeFile("b", b"new")))
    vols.prepare_pod_volumes(UID, [second])
    assert (path / "a").read_text() == "2" and (path / "b").read_text() == "new"
    assert not os.path.lexists(path / "dir") and not os.path.lexists(path / old_target)
    assert len([n for n in os.listdir(path) if n.startswith("..") and n != "..data"]) == 1


def test_fs_group_makes_files_group_readable(vols):
    [vol] = pod_volumes([{"name": "creds", "secret": {"secretName": "sec"}}], [SECRET], security={"fsGroup": 3000})
    path = Path(vols.prepare_pod_volumes(UID, [vol])["creds"])
    st = os.stat(path / "token")
    assert st.st_gid == 3000 and stat.S_IMODE(st.st_mode) == 0o440
    vols.remove_pod_volumes(UID)


@pytest.mark.parametrize("bad", ["../escape", "/abs", "a/../../b", "..data", "", "a//b", "./a"])
def test_bad_item_paths_are_refused_before_anything_is_made(vols, host_paths, bad):
    vol = DesiredVolume("conf", "configMap", files=(VolumeFile(bad, b"x"),))
    first = DesiredVolume("scratch", "emptyDir", medium="Memory")
    with pytest.raises(StorageError, match="item path"):
        vols.prepare_pod_volumes(UID, [first, vol])
    assert not (host_paths.pods_run / UID).exists()
    assert not mounts.mounts_at_or_under(host_paths.runroot)


def test_conflicting_item_paths_are_refused(vols):
    vol = DesiredVolume("conf", "configMap", files=(VolumeFile("a", b"x"), VolumeFile("a/b", b"y")))
    with pytest.raises(StorageError, match="both a file and a directory"):
        vols.prepare_pod_volumes(UID, [vol])


# --- claims ---------------------------------------------------------------------------------------

def test_claims_are_named_volumes_that_outlive_pods(vols, host_paths):
    path = vols.ensure_claim(DesiredClaim("default/data", "/m/a.yaml", True))
    assert path == str(host_paths.claims / "default" / "data")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777
    assert vols.ensure_claim(DesiredClaim("default/data", "/m/a.yaml", True)) == path
    Path(path, "db").write_text("rows")
    vol = DesiredVolume("data", "persistentVolumeClaim", claim="default/data")
    assert vols.prepare_pod_volumes(UID, [vol]) == {"data": path}
    vols.remove_pod_volumes(UID)
    assert Path(path, "db").read_text() == "rows"
    vols.ensure_claim(DesiredClaim("other/logs", "/m/a.yaml", False))
    assert vols.list_claims() == ["default/data", "other/logs"]
    vols.remove_claim("default/data")
    vols.remove_claim("default/data")
    assert vols.list_claims() == ["other/logs"]
    assert not (host_paths.claims / "default").exists()


def test_missing_claim_is_refused_before_anything_is_made(vols, host_paths):
    vols_ = [DesiredVolume("scratch", "emptyDir", medium="Memory"),
             DesiredVolume("data", "persistentVolumeClaim", claim="default/nope")]
    with pytest.raises(StorageError, match="does not exist"):
        vols.prepare_pod_volumes(UID, vols_)
    assert not (host_paths.pods_run / UID).exists()


@pytest.mark.parametrize("ref", ["nope", "default/", "/x", "default/../x", "Default/x", "a/b/c", "../../etc"])
def test_bad_claim_references_are_refused(vols, host_paths, ref):
    with pytest.raises(StorageError, match="invalid claim reference"):
        vols.ensure_claim(DesiredClaim(ref, "/m/a.yaml", True))
    with pytest.raises(StorageError, match="invalid claim reference"):
        vols.remove_claim(ref)
    assert not host_paths.claims.exists()


@pytest.mark.parametrize("uid", ["", "..", "../x", "a/b"])
def test_bad_pod_uids_are_refused(vols, uid):
    with pytest.raises(StorageError, match="invalid pod uid"):
        vols.prepare_pod_volumes(uid, [])
    with pytest.raises(StorageError, match="invalid pod uid"):
        vols.remove_pod_volumes(uid)


def test_remove_refuses_a_busy_tmpfs_and_keeps_it(vols, host_paths):
    import subprocess

    vol = DesiredVolume("scratch", "emptyDir", medium="Memory")
    path = vols.prepare_pod_volumes(UID, [vol])["scratch"]
    Path(path, "keep").write_text("k")
    proc = subprocess.Popen(["sleep", "300"], cwd=path)
    try:
        with pytest.raises(StorageError, match="busy"):
            vols.remove_pod_volumes(UID)
        assert Path(path, "keep").read_text() == "k"
    finally:
        proc.kill()
        proc.wait()
    vols.remove_pod_volumes(UID)
    assert not mounts.mounts_at_or_under(host_paths.runroot)


# --- hostPath: symlinks are not followed unless trusted ----------------------------------------------

def test_file_or_create_on_a_dangling_symlink_is_refused_not_recursed(vols, tmp_path):
    """It used to recurse until RecursionError (stat: ENOENT, O_EXCL: EEXIST)."""
    os.symlink(tmp_path / "elsewhere", tmp_path / "dangling")
    vol = host(tmp_path, "dangling", "FileOrCreate")
    with pytest.raises(StorageError) as err:
        vols.prepare_pod_volumes(UID, [vol])
    text = str(err.value)
    assert f"pod {UID}" in text and "volume 'h'" in text and str(tmp_path / "dangling") in text
    assert "is a symlink" in text and "PODPLAY_HOSTPATH_SYMLINKS" in text
    assert not err.value.temporary
    assert not (tmp_path / "elsewhere").exists()


def test_directory_or_create_does_not_follow_a_symlinked_parent(vols, tmp_path):
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    vol = host(tmp_path, "link/made", "DirectoryOrCreate")
    with pytest.raises(StorageError, match=rf"{tmp_path / 'link'} is a symlink"):
        vols.prepare_pod_volumes(UID, [vol])
    assert os.listdir(tmp_path / "target") == []
    # The type checks do not pass through it either.
    (tmp_path / "target" / "file").write_text("x")
    with pytest.raises(StorageError, match="is a symlink"):
        vols.prepare_pod_volumes(UID, [host(tmp_path, "link/file", "File")])


def test_trusted_symlinks_are_followed_when_root_owns_them(host_paths, tmp_path):
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", tmp_path / "link")
    vols = HostVolumes(host_paths, symlinks=[str(tmp_path)])
    vol = host(tmp_path, "link/made", "DirectoryOrCreate")
    assert vols.prepare_pod_volumes(UID, [vol]) == {"h": str(tmp_path / "target" / "made")}
    assert (tmp_path / "target" / "made").is_dir()
    # A link someone else owns is never followed, trusted place or not.
    os.symlink(tmp_path / "target", tmp_path / "theirs")
    os.chown(tmp_path / "theirs", 1000, 1000, follow_symlinks=False)
    with pytest.raises(StorageError, match="symlink owned by uid 1000"):
        vols.prepare_pod_volumes(UID, [host(tmp_path, "theirs/made", "Directory")])
    # "" trusts nothing.
    with pytest.raises(StorageError, match=r"is a symlink.*\(now: none\)"):
        HostVolumes(host_paths, symlinks=[]).prepare_pod_volumes(UID, [vol])


def test_trusted_symlinks_come_from_the_environment(host_paths, monkeypatch):
    monkeypatch.delenv("PODPLAY_HOSTPATH_SYMLINKS", raising=False)
    assert "/var/run" in HostVolumes(host_paths).symlinks
    monkeypatch.setenv("PODPLAY_HOSTPATH_SYMLINKS", "/srv:/opt/links:relative")
    assert HostVolumes(host_paths).symlinks == ("/srv", "/opt/links")
    monkeypatch.setenv("PODPLAY_HOSTPATH_SYMLINKS", "")
    assert HostVolumes(host_paths).symlinks == ()


@pytest.mark.skipif(not os.path.islink("/var/run"), reason="this host has no /var/run -> /run link")
def test_var_run_works_by_default_and_names_the_checked_path(vols):
    [vol] = pod_volumes([{"name": "h", "hostPath": {"path": "/var/run", "type": "Directory"}}])
    assert vols.prepare_pod_volumes(UID, [vol]) == {"h": os.path.realpath("/var/run")}


def test_host_path_with_dot_dot_or_an_impossible_name_is_a_clear_error(vols, tmp_path):
    with pytest.raises(StorageError, match="'..' component"):
        vols.prepare_pod_volumes(UID, [host(tmp_path, "a/../b", "DirectoryOrCreate")])
    with pytest.raises(StorageError, match=f"pod {UID}: cannot prepare volume 'h'.*File name too long"):
        vols.prepare_pod_volumes(UID, [host(tmp_path, "x" * 300, "DirectoryOrCreate")])
    with pytest.raises(StorageError, match="is not a directory"):
        (tmp_path / "file").write_text("x")
        vols.prepare_pod_volumes(UID, [host(tmp_path, "file/below", "FileOrCreate")])
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_memory_empty_dir_is_never_larger_than_the_host_memory(vols, host_paths):
    """Validation refuses such a sizeLimit; the driver is safe without it too (a plan made for
    another host, a manifest checked by an older podplay)."""
    vol = DesiredVolume("huge", "emptyDir", medium="Memory", size_limit=1000 << 40)
    path = vols.prepare_pod_volumes(UID, [vol])["huge"]
    try:
        st = os.statvfs(path)
        memory = this_host().memory
        assert memory > 0 and 0 < st.f_blocks * st.f_frsize <= memory
    finally:
        vols.remove_pod_volumes(UID)


def test_a_name_that_keeps_appearing_and_vanishing_is_a_bounded_error(vols, tmp_path, monkeypatch):
    """The old code recursed on EEXIST; the walk looks again a bounded number of times."""
    from reconciler.storage import volumes

    monkeypatch.setattr(volumes, "_create", lambda *a, **kw: False)  # "someone else made it" (it is gone)
    with pytest.raises(StorageError, match="keeps changing while it is being created"):
        vols.prepare_pod_volumes(UID, [host(tmp_path, "racy", "FileOrCreate")])
