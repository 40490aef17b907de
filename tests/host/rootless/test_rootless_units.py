"""`podplay generate systemd --user` run by the unprivileged user it is for: units for its own
manager, that name its own storage and its own podplay, which systemd's user-mode verify accepts."""

from __future__ import annotations

import os
import stat

from tests.host.rootless.test_rootless_prerequisites import manifest
from tests.unit.units.helpers import parse_unit


def test_user_units_name_the_users_paths_and_podplay(rootless_user):
    user = rootless_user
    pod = manifest(user, "unitweb", 18191)
    runtime = user.home / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.chown(runtime, user.uid, -1)
    env = user.env(XDG_RUNTIME_DIR=str(runtime))
    target = user.home / ".config" / "systemd" / "user"
    res = user.run(str(user.venv / "bin" / "podplay"), "generate", "systemd", "--user", "--files", str(target), pod,
                   env=env)
    assert res.returncode == 0, res.stderr
    unit_file = target / "podplay-default-unitweb.service"
    assert res.stdout.splitlines() == [str(unit_file)]
    assert ("systemctl --user daemon-reload && systemctl --user enable --now podplay-default-unitweb.service"
            in res.stderr)
    st = unit_file.stat()
    assert st.st_uid == user.uid and stat.S_IMODE(st.st_mode) == 0o644

    unit = parse_unit(unit_file.read_text())
    assert unit["Install"]["WantedBy"] == ["default.target"]
    assert "User" not in unit["Service"] and "Group" not in unit["Service"]
    assert unit["Service"]["Environment"] == [f"PODPLAY_ROOT={user.home}/.local/share/podplay",
                                              f"PODPLAY_RUNROOT={runtime}/podplay",
                                              f"PODPLAY_NETWORK_DIR={user.home}/.config/podplay/net.d"]
    podplay = user.venv / "bin" / "podplay"
    assert unit["Service"]["ExecStart"] == [f"{podplay} up --wait --timeout 120 {pod}"]
    assert unit["Service"]["ExecStopPost"] == [f"{podplay} down {pod}"]

    # systemd's own reading of it, in user mode, as the user: not a word of complaint.
    check = user.run("systemd-analyze", "verify", "--user", "--man=no", str(unit_file), env=env)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
