"""A CronJob's .timer + .service: systemd-analyze verify accepts both, systemd-analyze calendar
agrees with croniter on when the timer next fires (time zones included), and the service's
command runs the run that is due on the fake host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime

import pytest

from reconciler.cron import next_due, to_calendar
from tests.unit.units.helpers import systemd_load, verify
from tests.unit.units.test_units_systemd import podplay, unit_dir  # noqa: F401

CRON = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: rotate
spec:
  schedule: "{schedule}"{tz}
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: work
            image: registry.example/rotate:1
"""


def calendar_next(values: list[str]) -> float:
    """When systemd says the timer fires next (the earliest of its OnCalendar= values)."""
    out = subprocess.run(["systemd-analyze", "calendar", *values], capture_output=True, text=True, check=True,
                         env={**os.environ, "TZ": "UTC"}).stdout
    stamps = re.findall(r"Next elapse: \w+ (\S+ \S+) UTC", out)
    assert stamps, out
    return min(datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() for s in stamps)


@pytest.mark.parametrize(("schedule", "tz"), [
    ("*/5 * * * *", None), ("30 6 * * 1-5", "America/New_York"), ("0 0 1 * 0", "Europe/Berlin"),
    ("15 2-4 * jan,jul *", "Asia/Kolkata"), ("@daily", "Etc/UTC"), ("@hourly", None)])
def test_timer_calendar_fires_when_the_schedule_does(schedule, tz):
    values = to_calendar(schedule, tz)
    now = time.time()
    assert abs(calendar_next(values) - next_due(schedule, tz, now)) < 1.0, values


def test_cron_units_verify_and_the_service_runs_the_due_run(tmp_path, unit_dir):  # noqa: F811
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "rotate.yaml").write_text(CRON.format(schedule="* * * * *", tz="\n  timeZone: Europe/Berlin"))
    root, runroot = tmp_path / "root", tmp_path / "run"
    gen = podplay("generate", "systemd", "--root", str(root), "--runroot", str(runroot),
                  "--files", str(unit_dir), str(manifests))
    assert gen.returncode == 0, gen.stderr
    files = sorted(unit_dir.iterdir())
    assert [f.name for f in files] == ["podplay-cron-default-rotate.service", "podplay-cron-default-rotate.timer"]
    found = verify(files)
    assert found.returncode == 0 and not (found.stdout + found.stderr).strip(), found.stdout + found.stderr
    timer = (unit_dir / "podplay-cron-default-rotate.timer").read_text()
    assert "OnCalendar=*-*-* *:*:00 Europe/Berlin" in timer and "Unit=podplay-cron-default-rotate.service" in timer
    service = systemd_load(unit_dir, "podplay-cron-default-rotate.service")
    assert service.get("RemainAfterExit") == ["no"], "the timer must be able to start it again"

    root.mkdir()
    (root / "fakehost.json").write_text(json.dumps({"exit_codes": {"work": 0}}))
    env = {"PATH": os.environ["PATH"], "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
           "PODPLAY_NETWORK_DIR": str(tmp_path / "net.d"),
           **dict(e.split("=", 1) for e in service["Environment"])}
    proc = subprocess.run(service["ExecStart"][0], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = subprocess.run([service["ExecStart"][0][0], "jobs", "-o", "json"], capture_output=True, text=True,
                          env=env)
    [run] = json.loads(jobs.stdout)
    assert run["job"].startswith("default/rotate-") and run["phase"] == "Complete"
