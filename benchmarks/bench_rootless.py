"""Rootless `up`/`down` of a 1-container pod: podplay beside `podman kube play`, run by the same user.

    python -m benchmarks.bench_rootless [--runs N]

Run as root: it creates a user of its own (with useradd's subordinate range), installs podplay
for it as the rootless tests do (Debian's python3 -m venv, pip), imports the same busybox
tarball into both tools' stores, and times each command as that user, alternating the tools
round by round. /dev/net/tun gets udev's 0666 for the run (both tools' slirp4netns open it).
podman gets its own containers.conf with the settings this VM needs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import PODMAN_CONF

POD = """apiVersion: v1
kind: Pod
metadata: {name: bench-rl}
spec:
  containers:
  - name: app
    image: localhost/busybox:latest
    imagePullPolicy: Never
    command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.host.rootless import conftest
    from tests.host.rootless.test_rootless_pods import ROOTFS

    tun = os.stat("/dev/net/tun").st_mode & 0o7777
    users = conftest.rootless_user.__wrapped__(None)  # the fixture's generator: the user, then its removal
    try:
        os.chmod("/dev/net/tun", 0o666)
        user = next(users)
        (user.home / "rootfs.sh").write_text(ROOTFS)
        (user.home / "pod.yaml").write_text(POD)
        (user.home / "containers.conf").write_text(PODMAN_CONF)
        run = tempfile.mkdtemp(prefix=f"pm-run-{user.uid}-", dir="/tmp")
        os.chown(run, user.uid, -1)
        env = user.env(CONTAINERS_CONF=str(user.home / "containers.conf"), XDG_RUNTIME_DIR=run)
        path = ["--change", "ENV PATH=/bin"]
        for command in (["sh", "rootfs.sh"], ["podplay", "import", *path, "bb.tar", "localhost/busybox:latest"],
                     ["podman", "import", *path, "bb.tar", "localhost/busybox:latest"]):
            res = user.run(*command, env=env)
            assert res.returncode == 0, f"{command}: {res.stderr}"
        tools = {"podplay": (["podplay", "up", "pod.yaml"], ["podplay", "down", "pod.yaml"]),
                 "podman": (["podman", "kube", "play", "pod.yaml"], ["podman", "kube", "down", "pod.yaml"])}
        times: dict[str, list[float]] = {f"{t} {w}": [] for t in tools for w in ("up", "down")}
        for _ in range(args.runs):
            for tool, (up, down) in tools.items():
                for what, command in (("up", up), ("down", down)):
                    start = time.perf_counter()
                    res = user.run(*command, env=env)
                    times[f"{tool} {what}"].append(time.perf_counter() - start)
                    assert res.returncode == 0, f"{command}: {res.stderr}"
        for what in ("up", "down"):
            ours, theirs = (statistics.median(times[f"{t} {what}"]) for t in tools)
            print(f"rootless {what} of a 1-container pod: podplay {ours * 1000:.0f} ms, podman {theirs * 1000:.0f} ms "
                  f"(ratio {ours / theirs:.2f}; medians of {args.runs})")
        user.run("podman", "system", "reset", "--force", env=env)
        subprocess.run(["rm", "-rf", run], check=False)
    finally:
        next(users, None)
        os.chmod("/dev/net/tun", tun)


if __name__ == "__main__":
    main()
