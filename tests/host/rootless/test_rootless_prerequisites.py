"""podplay run by an unprivileged user: its state goes under its own XDG directories, and every
missing prerequisite comes as a message naming its fix (exit 7), never a traceback."""

from __future__ import annotations

import os
import subprocess

import pytest

from reconciler import subids

EXIT_ENVIRONMENT = 7


def manifest(user, name: str, host_port: int) -> str:
    path = user.home / f"{name}.yaml"
    path.write_text(f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: web
    image: localhost/busybox:latest
    command: [httpd, -f, -p, "8080"]
    ports: [{{containerPort: 8080, hostPort: {host_port}}}]
""")
    os.chown(path, user.uid, -1)
    return str(path)


@pytest.fixture
def without_subids(rootless_user):
    """The test user's subordinate ranges taken away for one test, then given back."""
    taken = {}
    for path, flag, back in ((subids.SUBUID, "--del-subuids", "--add-subuids"),
                             (subids.SUBGID, "--del-subgids", "--add-subgids")):
        taken[back] = [f"{r.start}-{r.end - 1}" for r in rootless_user.ranges(path)]
        for span in taken[back]:
            subprocess.run(["usermod", flag, span, rootless_user.name], check=True, capture_output=True)
    yield
    for flag, spans in taken.items():
        for span in spans:
            subprocess.run(["usermod", flag, span, rootless_user.name], check=True, capture_output=True)


def test_the_user_gets_subordinate_ids_and_validate_works(rootless_user):
    assert sum(r.count for r in rootless_user.ranges(subids.SUBUID)) >= 65536
    res = rootless_user.podplay("validate", manifest(rootless_user, "val", 8080))
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout


def test_no_subordinate_ids_is_named_with_the_fix(rootless_user, without_subids):
    res = rootless_user.podplay("up", manifest(rootless_user, "nosub", 8080))
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    assert "Traceback" not in res.stderr
    assert f"gives {rootless_user.name} no subordinate user IDs" in res.stderr
    assert f"usermod --add-subuids 100000-165535 {rootless_user.name}" in res.stderr
    assert f"usermod --add-subgids 100000-165535 {rootless_user.name}" in res.stderr


def test_missing_newuidmap_and_network_tool_are_named(rootless_user):
    # A PATH with neither /usr/bin nor /bin: newuidmap, newgidmap, slirp4netns and pasta are not found.
    env = rootless_user.env(PATH=f"{rootless_user.venv}/bin")
    res = rootless_user.podplay("up", manifest(rootless_user, "notools", 8080), env=env)
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    for text in ("newuidmap is not installed", "newgidmap is not installed", "apt-get install uidmap",
                 "neither slirp4netns nor pasta", "apt-get install slirp4netns"):
        assert text in res.stderr
    assert "subordinate" not in res.stderr  # the user has its ranges: nothing else is reported


def test_a_tun_device_others_cannot_open_is_named(rootless_user):
    os.chmod("/dev/net/tun", 0o600)
    try:
        res = rootless_user.podplay("up", manifest(rootless_user, "notun", 8080))
    finally:
        os.chmod("/dev/net/tun", 0o666)
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    assert "/dev/net/tun is not usable by other users (mode 600)" in res.stderr
    assert "chmod 0666 /dev/net/tun" in res.stderr


def test_a_low_host_port_names_the_file_field_and_fix(rootless_user):
    path = manifest(rootless_user, "lowport", 80)
    res = rootless_user.podplay("up", path)
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    assert f"{path}: default/lowport: spec.containers[0].ports[0].hostPort 80 is below 1024" in res.stderr
    assert "sysctl -w net.ipv4.ip_unprivileged_port_start=80" in res.stderr


def test_state_paths_are_the_users_own(rootless_user):
    # XDG_RUNTIME_DIR unset: the run root falls back to the temporary directory, as podman's does.
    env = rootless_user.env(XDG_DATA_HOME=str(rootless_user.home / "data"))
    res = rootless_user.run(f"{rootless_user.venv}/bin/python", "-c",
                            "from reconciler.paths import HostPaths; p = HostPaths.from_env(); "
                            "print(p.root); print(p.runroot); print(p.network_dir)", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(rootless_user.home / "data" / "podplay"),
                                  f"/tmp/podplay-run-{rootless_user.uid}",
                                  str(rootless_user.home / ".config" / "podplay" / "net.d")]
    run = rootless_user.home / "run"
    run.mkdir(mode=0o700)
    os.chown(run, rootless_user.uid, -1)
    res = rootless_user.run(f"{rootless_user.venv}/bin/python", "-c",
                            "from reconciler.paths import HostPaths; print(HostPaths.from_env().runroot)",
                            env={**env, "XDG_RUNTIME_DIR": str(run)})
    assert res.stdout.strip() == str(run / "podplay")
    # `ps` reads the user's own (empty) state.
    res = rootless_user.podplay("ps", env=env)
    assert res.returncode == 0, res.stderr



def test_host_users_false_is_refused_without_root(rootless_user):
    path = rootless_user.home / "uns.yaml"
    path.write_text("""apiVersion: v1
kind: Pod
metadata: {name: uns}
spec:
  hostUsers: false
  containers: [{name: a, image: localhost/busybox:latest, command: [sleep, "1"]}]
""")
    res = rootless_user.podplay("up", str(path))
    assert res.returncode == EXIT_ENVIRONMENT, res.stderr
    assert f"{path}: default/uns: hostUsers: false; leave it out without root" in res.stderr
