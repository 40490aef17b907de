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




STS = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: app
        image: registry.example/db:1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def test_stateful_set_units_start_in_ordinal_order(tmp_path, unit_dir):  # noqa: F811
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "db.yaml").write_text(STS)
    gen = podplay("generate", "systemd", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"),
                  "--files", str(unit_dir), str(manifests))
    assert gen.returncode == 0, gen.stderr
    files = sorted(unit_dir.iterdir())
    assert len(files) == 3
    found = verify(files)
    assert found.returncode == 0 and not (found.stdout + found.stderr).strip(), found.stdout + found.stderr
    for i in (1, 2):
        unit = systemd_load(unit_dir, f"podplay-default-db\\x2d{i}.service")
        assert f"podplay-default-db\\x2d{i - 1}.service" in " ".join(unit["After"]), unit["After"]
    first = systemd_load(unit_dir, "podplay-default-db\\x2d0.service")
    assert not any("db" in a for a in first["After"])
