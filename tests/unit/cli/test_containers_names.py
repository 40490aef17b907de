"""How `logs`, `exec`, `stop`, `start` and `rm` find the pod and container a user names, and
how `exec` decides a command cannot run (126/127) before asking runc."""

from __future__ import annotations

import os

import pytest

from reconciler.cli.hostpods import current_instance, find_pod_instances, named_pods, resolve_target
from reconciler.cli.logs_exec import EXEC_CANNOT_INVOKE, EXEC_NOT_FOUND, find_executable
from reconciler.cli.pods import container_rows, ps_table
from reconciler.errors import EXIT_NOT_FOUND, EXIT_USAGE, NotFoundError, PodplayError
from reconciler.observed import (
    LABEL_SOURCE,
    ContainerState,
    NetworkStatus,
    ObservedAttachment,
    ObservedContainer,
    PortMapping,
)


def ctr(pod: str, uid: str, name: str, role: str = "app", state=ContainerState.RUNNING, started: float = 100.0,
        exit_code=None) -> ObservedContainer:
    return ObservedContainer(id=f"{uid}.{name}" if name else uid, pod_uid=uid, pod=pod, name=name, role=role,
                             state=state, started_at=started, exit_code=exit_code,
                             labels={LABEL_SOURCE: "/m/app.yaml"})


def host():
    containers = [
        ctr("default/web", "w1", "", "infra"), ctr("default/web", "w1", "httpd"), ctr("default/web", "w1", "side"),
        ctr("default/web", "w1", "setup", "init", ContainerState.EXITED, exit_code=0),
        ctr("default/db", "d1", "", "infra"), ctr("default/db", "d1", "postgres"),
        ctr("team/db", "t1", "", "infra"), ctr("team/db", "t1", "postgres"),
        ctr("team/job", "j1", "", "infra"), ctr("team/job", "j1", "run", state=ContainerState.EXITED, exit_code=3),
        # A leftover of a crash has no pod name: never listed, never matched.
        ctr("", "zz", "", "infra"),
    ]
    nets = [ObservedAttachment("w1", NetworkStatus("n", ip="10.1.0.2", ports=(PortMapping(8080, 80),)))]
    return named_pods(containers, nets)


def test_grouping_keeps_named_pods_with_their_network():
    pods = host()
    assert [p.key for p in pods] == ["default/db", "default/web", "team/db", "team/job"]
    web = pods[1]
    assert sorted(web.containers) == ["httpd", "side"] and list(web.init_containers) == ["setup"]
    assert web.network.status.ip == "10.1.0.2" and web.source == "/m/app.yaml"


def test_bare_names_must_be_unique_across_namespaces():
    pods = host()
    assert [p.key for p in find_pod_instances(pods, "web")] == ["default/web"]
    assert [p.key for p in find_pod_instances(pods, "db", "team")] == ["team/db"]
    assert [p.key for p in find_pod_instances(pods, "team/db")] == ["team/db"]
    with pytest.raises(PodplayError) as err:
        find_pod_instances(pods, "db")
    assert err.value.exit_code == EXIT_USAGE
    assert "default, team" in str(err.value) and "default/db" in str(err.value)


def test_unknown_pods_are_not_found_with_a_suggestion_and_the_list():
    with pytest.raises(NotFoundError) as err:
        find_pod_instances(host(), "wbe")
    assert err.value.exit_code == EXIT_NOT_FOUND
    message = str(err.value)
    assert "did you mean web?" in message
    assert "default/db, default/web, team/db, team/job" in message
    with pytest.raises(NotFoundError, match="runs no pods in namespace nowhere"):
        find_pod_instances(host(), "web", "nowhere")
    with pytest.raises(NotFoundError):
        find_pod_instances(host(), "web", "team")


def test_targets():
    pods = host()
    pod, c = resolve_target(pods, "web/side", None, None)
    assert (pod.key, c.name) == ("default/web", "side")
    assert resolve_target(pods, "web", "httpd", None)[1].name == "httpd"
    assert resolve_target(pods, "web/setup", None, None)[1].role == "init"
    assert resolve_target(pods, "team/db/postgres", None, None)[0].key == "team/db"
    # NAMESPACE/POD when no pod is called like the namespace: the pod's only container.
    assert resolve_target(pods, "team/job", None, None)[1].name == "run"
    assert resolve_target(pods, "db", None, "team")[0].key == "team/db"
    # A container id from `ps -q` works as it is.
    assert resolve_target(pods, "d1.postgres", None, None)[0].key == "default/db"


def test_a_pod_with_several_containers_needs_one_named():
    with pytest.raises(PodplayError) as err:
        resolve_target(host(), "web", None, None)
    assert err.value.exit_code == EXIT_USAGE
    assert "httpd, side (init containers: setup)" in str(err.value)


def test_unknown_containers_list_the_pods_containers():
    with pytest.raises(NotFoundError) as err:
        resolve_target(host(), "web/sied", None, None)
    assert "did you mean side?" in str(err.value)
    assert "its containers: httpd, side (init containers: setup)" in str(err.value)


@pytest.mark.parametrize("target,container", [("a/b/c/d", None), ("web/", None), ("web/side", "httpd")])
def test_malformed_targets_are_usage_errors(target, container):
    with pytest.raises(PodplayError) as err:
        resolve_target(host(), target, container, None)
    assert err.value.exit_code == EXIT_USAGE


def test_the_instance_with_a_running_infra_is_the_pod_during_a_replacement():
    pods = named_pods([
        ctr("default/web", "old", "", "infra", started=100), ctr("default/web", "old", "c", started=100),
        ctr("default/web", "new", "", "infra", started=200), ctr("default/web", "new", "c", started=200),
        ctr("default/web", "dead", "", "infra", ContainerState.UNKNOWN, started=300),
    ], [])
    instances = find_pod_instances(pods, "web")
    assert len(instances) == 3
    assert current_instance(instances).uid == "new"


def test_ps_rows_filter_by_state_and_role():
    pods = host()
    default = [(p.key, c.name) for p, c in container_rows(pods, all_states=False, infra=False)]
    assert default == [("default/db", "postgres"), ("default/web", "httpd"), ("default/web", "side"),
                       ("team/db", "postgres")]
    every = [(p.key, c.role, c.name) for p, c in container_rows(pods, all_states=True, infra=True)]
    assert ("default/web", "init", "setup") in every and ("team/job", "app", "run") in every
    assert ("default/web", "infra", "") in every
    # Init containers come before app containers within a pod, the infra first.
    assert [r for r in every if r[0] == "default/web"] == [
        ("default/web", "infra", ""), ("default/web", "init", "setup"), ("default/web", "app", "httpd"),
        ("default/web", "app", "side")]


def test_namespace_column_appears_only_outside_default():
    pods = host()
    only_default = [r for r in container_rows(pods, all_states=False, infra=False) if r[0].namespace == "default"]
    header = ps_table(only_default, 160).splitlines()[0].split()
    assert header == ["POD", "CONTAINER", "IMAGE", "STATE", "READY", "RESTARTS", "PORTS", "IP",
                      "AGE"]
    lines = ps_table(container_rows(pods, all_states=True, infra=False), 160).splitlines()
    assert lines[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:3] == ["team", "job", "run"] and "exited (3)" in line for line in lines)
    web = next(line for line in lines if " httpd " in line)
    assert "0.0.0.0:8080->80/tcp" in web and "10.1.0.2" in web and web.rstrip().endswith("60s")


# --- exec: what execvp in the container would find ------------------------------------------------

@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "root"
    for d in ("bin", "usr/bin", "etc", "data"):
        (root / d).mkdir(parents=True)
    (root / "bin/busybox").write_text("#!")
    (root / "bin/busybox").chmod(0o755)
    # Absolute symlinks resolve inside the container's root, not the host's.
    os.symlink("/bin/busybox", root / "bin/sh")
    os.symlink("/bin/nothing-here", root / "bin/broken")
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "usr/bin/tool").mkdir()
    return str(root)


@pytest.mark.parametrize("command,path,code,found", [
    ("sh", "/usr/bin:/bin", 0, "/bin/sh"),
    ("/bin/sh", "", 0, "/bin/sh"),
    ("busybox", "/bin", 0, "/bin/busybox"),
    ("nosuch", "/usr/bin:/bin", EXEC_NOT_FOUND, "executable file not found in $PATH"),
    ("broken", "/bin", EXEC_NOT_FOUND, "executable file not found"),
    ("/nosuch/x", "", EXEC_NOT_FOUND, "no such file"),
    ("/etc/passwd", "", EXEC_CANNOT_INVOKE, "not executable"),
    ("/etc", "", EXEC_CANNOT_INVOKE, "is a directory"),
    ("/etc/passwd/x", "", EXEC_NOT_FOUND, "not a directory"),
    # A directory of the command's name on PATH is skipped, as execvp does; a later hit wins.
    ("tool", "/usr/bin", EXEC_NOT_FOUND, "not found"),
    ("passwd", "/etc:/bin", EXEC_CANNOT_INVOKE, "not executable"),
])
def test_find_executable(rootfs, command, path, code, found):
    got, what = find_executable(rootfs, command, path)
    assert got == code
    assert found in what


def test_find_executable_never_looks_outside_the_root(rootfs):
    # /usr/bin/env exists on the host; the container has none.
    assert os.path.exists("/usr/bin/env")
    assert find_executable(rootfs, "env", "/usr/bin")[0] == EXEC_NOT_FOUND
    assert find_executable(rootfs, "../../../../usr/bin/env", "")[0] == EXEC_NOT_FOUND
