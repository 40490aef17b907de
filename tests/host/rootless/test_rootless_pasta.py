"""A rootless pod networked by pasta (Debian's passt) instead of slirp4netns: chosen by
$PODPLAY_ROOTLESS_NETWORK (or when slirp4netns is absent), its hostPort reached on 127.0.0.1 and
on the host's address, outbound traffic from the pod, and `down` leaving no pasta behind."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest

from tests.host.e2e.conftest import free_port
from tests.host.rootless.test_rootless_pods import POD, assert_nothing_left, busybox, get, host_address  # noqa: F401

EXIT_ENVIRONMENT = 7


def pasta_processes(uid: int) -> list[str]:
    """The user's live pasta processes (it runs as passt.avx2 or passt; a zombie waits for its reaper)."""
    res = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-u", str(uid)], capture_output=True, text=True)
    return [line for line in res.stdout.splitlines() if ("passt" in line or "pasta" in line)
            and line.split()[1][0] != "Z"]


@pytest.mark.slow
def test_a_rootless_pod_through_pasta(rootless_user, busybox):  # noqa: F811
    user = rootless_user
    env = user.env(PODPLAY_ROOTLESS_NETWORK="pasta")
    port = free_port()
    manifest = user.home / "pasta.yaml"
    manifest.write_text(POD.format(port=port))

    res = user.podplay("up", str(manifest), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(pasta_processes(user.uid)) == 1, pasta_processes(user.uid)
    # no live slirp4netns (a zombie of an earlier test may wait for this VM's PID 1 to reap it)
    assert not any("slirp4netns" in line and line.split()[0][0] != "Z" for line in subprocess.run(
        ["ps", "-o", "stat=,args=", "-u", str(user.uid)], capture_output=True, text=True).stdout.splitlines())
    assert get(f"http://127.0.0.1:{port}/index.html") == "hello-rootless\n"
    address = host_address()
    assert get(f"http://{address}:{port}/index.html") == "hello-rootless\n"
    res = user.podplay("exec", "web/web", "--", "ip", "-4", "-o", "addr", "show", "tap0", env=env)
    assert "10.0.2.100/24" in res.stdout, res.stdout + res.stderr  # the same address as under slirp4netns
    out = user.podplay("exec", "web/web", "--", "wget", "-q", "-O-", f"http://{address}:{port}/index.html", env=env)
    assert out.stdout == "hello-rootless\n", out.stderr  # outbound through pasta, back in by the hostPort

    # Another command without the variable sees the pod as it is (the attachment records its tool).
    ps = user.podplay("ps")
    assert "web" in ps.stdout and "running" in ps.stdout, ps.stdout + ps.stderr

    res = user.podplay("down", str(manifest), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert pasta_processes(user.uid) == []
    assert_nothing_left(user)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2)  # noqa: S310


def test_an_unknown_rootless_network_is_named_with_the_fix(rootless_user):
    user = rootless_user
    manifest = user.home / "badnet.yaml"
    manifest.write_text(POD.format(port=free_port()))
    res = user.podplay("up", str(manifest), env=user.env(PODPLAY_ROOTLESS_NETWORK="vde"))
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    assert "Traceback" not in res.stderr
    assert "PODPLAY_ROOTLESS_NETWORK='vde' names no rootless network; set it to slirp4netns or pasta" in res.stderr


@pytest.mark.slow
def test_killed_at_every_step_boundary_of_up_through_pasta(rootless_user, busybox):  # noqa: F811
    """kill -9 before and after each step of a rootless `up` networked by pasta: the next `up`
    serves the page, and `down` leaves no pasta (nor anything else) behind."""
    user = rootless_user
    port = free_port()
    manifest = user.home / "pasta-crash.yaml"
    manifest.write_text(POD.format(port=port))
    n, kills = 1, 0
    while True:
        finished = False
        for when in ("before", "after"):
            context = f"up killed {when} step #{n}"
            res = user.podplay("up", str(manifest),
                               env=user.env(PODPLAY_ROOTLESS_NETWORK="pasta", PODPLAY_FAILPOINT=f"{when}:#{n}"))
            if res.returncode == 0:
                finished = True
                break
            assert res.returncode == 128 + 9, f"{context}: {res.returncode}\n{res.stdout}\n{res.stderr}"
            kills += 1
            env = user.env(PODPLAY_ROOTLESS_NETWORK="pasta")
            res = user.podplay("up", str(manifest), env=env)
            assert res.returncode == 0, f"{context}: {res.stdout}\n{res.stderr}"
            assert get(f"http://127.0.0.1:{port}/index.html") == "hello-rootless\n", context
            assert len(pasta_processes(user.uid)) == 1, f"{context}: {pasta_processes(user.uid)}"
            res = user.podplay("down", str(manifest), env=env)
            assert res.returncode == 0, f"{context}: {res.stdout}\n{res.stderr}"
            assert pasta_processes(user.uid) == [], context
            assert_nothing_left(user)
        if finished:
            break
        n += 1
    res = user.podplay("down", str(manifest), env=user.env(PODPLAY_ROOTLESS_NETWORK="pasta"))
    assert res.returncode == 0
    assert_nothing_left(user)
    assert kills >= 8, kills
