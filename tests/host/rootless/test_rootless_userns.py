"""The rootless user namespace on the real host, as the test user: newuidmap/newgidmap map the
user to root and its subordinate range above it, a pause process holds it with a mount
namespace that later commands join (an overlay mounted by one is seen by the next), and
runc --rootless runs a container in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from reconciler import subids

HOLDER = """
import sys
from pathlib import Path
from reconciler.runtime.rootless import UserNamespace
ns = UserNamespace(Path(sys.argv[1]))
if sys.argv[2] == "ensure":
    print(ns.ensure(), ns.ensure())
elif sys.argv[2] == "stop":
    ns.stop()
else:
    print(" ".join(ns.command(sys.argv[3:])))
"""


def test_the_users_namespace_holds_mounts_and_runs_runc_rootless(rootless_user, tmp_path):
    user = rootless_user
    work = user.home / "ns"
    work.mkdir()
    shutil.chown(work, user.name)
    script = work / "holder.py"
    script.write_text(HOLDER)
    run_dir = work / "run"

    def py(*args: str) -> str:
        res = user.run(f"{user.venv}/bin/python", str(script), str(run_dir), *args)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def inside(*argv: str) -> subprocess.CompletedProcess:
        return user.run(*py("command", *argv).split())

    first, second = py("ensure").split()
    assert first == second  # one holder, found again
    with open(f"/proc/{first}/status") as f:
        assert next(line for line in f if line.startswith("Uid:")).split()[1] == str(user.uid)  # the user's own
    (sub,) = user.ranges(subids.SUBUID)
    maps = inside("cat", "/proc/self/uid_map", "/proc/self/gid_map").stdout.split()
    assert maps[:6] == ["0", str(user.uid), "1", "1", str(sub.start), str(sub.count)]
    assert inside("id", "-u").stdout.strip() == "0"

    # An overlay mounted by one command is there for the next (the holder's mount namespace),
    # and not on the host.
    ov = work / "ov"
    for d in ("lower", "upper", "work", "merged"):
        (ov / d).mkdir(parents=True)
    (ov / "lower" / "f").write_text("from the lower layer\n")
    subprocess.run(["chown", "-R", f"{user.name}:", str(ov)], check=True)
    res = inside("mount", "-t", "overlay", "-o",
                 f"lowerdir={ov}/lower,upperdir={ov}/upper,workdir={ov}/work", "overlay", f"{ov}/merged")
    assert res.returncode == 0, res.stderr
    assert inside("cat", f"{ov}/merged/f").stdout == "from the lower layer\n"
    assert not os.path.exists(ov / "merged" / "f")  # the host's mount namespace has no such mount

    # runc --rootless in it: root inside is the user outside, a network namespace of its own.
    bundle = work / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", bundle / "rootfs" / "bin" / "busybox")
    for applet in ("sh", "cat", "ip", "id"):
        os.symlink("busybox", bundle / "rootfs" / "bin" / applet)
    spec = json.loads(subprocess.run(["runc", "spec", "--rootless", "--bundle", str(tmp_path)], check=True,
                                     capture_output=True, text=True).stdout or (tmp_path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map; ip -o link | cut -d: -f2"]
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "user"] + [{"type": "network"}]
    linux.pop("uidMappings", None)
    linux.pop("gidMappings", None)
    (bundle / "config.json").write_text(json.dumps(spec))
    subprocess.run(["chown", "-R", f"{user.name}:", str(bundle)], check=True)
    res = inside("runc", "--root", f"{work}/runc", "--rootless", "true", "run", "--bundle", str(bundle), "c1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split()
    assert lines[0] == "0"
    assert lines[1:7] == ["0", str(user.uid), "1", "1", str(sub.start), str(sub.count)]  # the holder's namespace
    assert lines[7:] == ["lo"]

    inside("umount", f"{ov}/merged")
    py("stop")
    res = subprocess.run(["ps", "-o", "pid=,stat=", "-u", str(user.uid)], capture_output=True, text=True)
    live = [line for line in res.stdout.splitlines() if not line.split()[1].startswith("Z")]
    assert live == [], f"processes of the test user left: {live}"
    assert not (run_dir / "pause.pid").exists()
