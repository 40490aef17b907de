"""uid/gid/groups resolution: runAsUser over the image USER, names looked up in the image."""

from __future__ import annotations

import pytest

from reconciler.errors import ContainerRuntimeError
from reconciler.runtime.users import ResolvedUser, parse_passwd, resolve_user
from tests.unit.runtime.pods import make_pod

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment, and a broken line follow
broken:x:notanumber:0::/:/bin/false
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1234:2345:App:/home/app:/bin/sh
"""
GROUP = """\
root:x:0:
app:x:2345:
extra:x:3456:app,daemon
video:x:44:daemon
"""


def resolve(image_user="", c_sc=None, pod_sc=None):
    c = {"name": "c"} | ({"securityContext": c_sc} if c_sc else {})
    pod = make_pod("u", [c], **({"securityContext": pod_sc} if pod_sc else {}))
    return resolve_user(pod, pod.containers[0], image_user, PASSWD, GROUP)


@pytest.mark.parametrize("image_user,c_sc,pod_sc,expected", [
    ("", None, None, ResolvedUser(0, 0, (), "root", "/root")),
    ("app", None, None, ResolvedUser(1234, 2345, (3456,), "app", "/home/app")),
    ("1234", None, None, ResolvedUser(1234, 2345, (3456,), "app", "/home/app")),
    ("app:extra", None, None, ResolvedUser(1234, 3456, (), "app", "/home/app")),
    ("app:44", None, None, ResolvedUser(1234, 44, (3456,), "app", "/home/app")),
    ("4242", None, None, ResolvedUser(4242, 0, (), "", "/")),
    ("4242:4343", None, None, ResolvedUser(4242, 4343, (), "", "/")),
    ("app", {"runAsUser": 1}, None, ResolvedUser(1, 1, (3456, 44), "daemon", "/usr/sbin")),
    ("app:extra", {"runAsUser": 5000}, None, ResolvedUser(5000, 0, (), "", "/")),
    ("app", None, {"runAsUser": 1, "runAsGroup": 7}, ResolvedUser(1, 7, (3456, 44), "daemon", "/usr/sbin")),
    ("app", {"runAsGroup": 9}, {"runAsGroup": 7}, ResolvedUser(1234, 9, (3456,), "app", "/home/app")),
    ("app", None, {"supplementalGroups": [10, 3456], "fsGroup": 2000},
     ResolvedUser(1234, 2345, (3456, 10, 2000), "app", "/home/app")),
])
def test_user_resolution(image_user, c_sc, pod_sc, expected):
    assert resolve(image_user, c_sc, pod_sc) == expected


@pytest.mark.parametrize("image_user,c_sc,message", [
    ("nobody", None, "'nobody' is not in the image's /etc/passwd"),
    ("app:nogroup", None, "group 'nogroup' is not in the image's /etc/group"),
    ("", {"runAsNonRoot": True}, "runs as root"),
    ("root", {"runAsNonRoot": True}, "runs as root"),
    ("app", {"runAsNonRoot": True, "runAsUser": 0}, "runAsUser is 0"),
])
def test_user_errors(image_user, c_sc, message):
    with pytest.raises(ContainerRuntimeError, match=message):
        resolve(image_user, c_sc)


def test_run_as_non_root_with_a_named_non_root_user_is_fine():
    assert resolve("app", {"runAsNonRoot": True}).uid == 1234


def test_missing_passwd_means_numeric_ids_only():
    pod = make_pod("u", [{"name": "c"}])
    assert resolve_user(pod, pod.containers[0], "1000:1000", "", "") == ResolvedUser(1000, 1000)
    with pytest.raises(ContainerRuntimeError):
        resolve_user(pod, pod.containers[0], "app", "", "")


def test_out_of_range_ids_in_passwd_are_ignored():
    entries = parse_passwd("big:x:4294967295:0::/:/bin/sh\nneg:x:-1:0::/:/bin/sh\nok:x:5:5::/:/bin/sh\n")
    assert [e.name for e in entries] == ["ok"]
