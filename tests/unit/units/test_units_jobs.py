"""A Job's systemd unit: systemd-analyze verify accepts it, and its start command runs the Job
to its end once — a second start (a reboot) does not run a finished Job again."""

from __future__ import annotations

import json
import os
import subprocess

from tests.unit.units.helpers import systemd_load, verify
from tests.unit.units.test_units_systemd import podplay, unit_dir  # noqa: F401

JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: backup
spec:
  backoffLimit: 2
  activeDeadlineSeconds: 600
  template:
    spec:
      restartPolicy: OnFailure
      containers:
      - name: work
        image: registry.example/backup:1
"""


def test_job_unit_verifies_and_runs_the_job_once(tmp_path, unit_dir):  # noqa: F811
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "backup.yaml").write_text(JOB)
    root, runroot = tmp_path / "root", tmp_path / "run"
    gen = podplay("generate", "systemd", "--root", str(root), "--runroot", str(runroot),
                  "--files", str(unit_dir), str(manifests))
    assert gen.returncode == 0, gen.stderr
    files = sorted(unit_dir.iterdir())
    assert [f.name for f in files] == ["podplay-job-default-backup.service"]
    found = verify(files)
    assert found.returncode == 0 and not (found.stdout + found.stderr).strip(), found.stdout + found.stderr
    unit = systemd_load(unit_dir, "podplay-job-default-backup.service")
    assert "ExecStopPost" not in unit, "stopping a Job's unit (shutdown) must not forget the finished run"
    text = (unit_dir / files[0].name).read_text()
    assert "--wait --timeout 720" in text and "Restart=" not in text

    # The fake host: every container named "work" exits 0 as soon as it starts.
    root.mkdir()
    fakehost = root / "fakehost.json"
    fakehost.write_text(json.dumps({"exit_codes": {"work": 0}}))
    env = {"PATH": os.environ["PATH"], "PODPLAY_DRIVER": "fake", "PODPLAY_FAKE_REGISTRY": "*",
           "PODPLAY_NETWORK_DIR": str(tmp_path / "net.d"), **dict(e.split("=", 1) for e in unit["Environment"])}
    for _ in range(2):
        proc = subprocess.run(unit["ExecStart"][0], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    starts = [op for op in json.loads(fakehost.read_text())["log"] if op.startswith("start_container")]
    assert len([op for op in starts if "work" in op]) == 1, starts
    jobs = subprocess.run([*unit["ExecStart"][0][:1], "jobs", "-o", "json"], capture_output=True, text=True,
                          env=env)
    [job] = json.loads(jobs.stdout)
    assert (job["job"], job["phase"], job["succeeded"]) == ("default/backup", "Complete", 1)


