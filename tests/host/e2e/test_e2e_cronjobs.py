"""A CronJob under `podplay watch` on the real stack, on a real one-minute schedule: a run longer
than a minute holds the next one off (concurrencyPolicy: Forbid), and the run after it starts once
the long one is done. Slow by nature (about two and a half minutes)."""

from __future__ import annotations

import json

from tests.host.e2e.conftest import wait_for
from tests.host.e2e.test_e2e_watch import Watcher, write

CRON = """apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - name: work
            image: localhost/busybox:latest
            imagePullPolicy: Never
            command: [sh, -c, 'date +%s >> /data/starts; sleep {hold}; date +%s >> /data/ends']
            volumeMounts: [{{name: data, mountPath: /data}}]
          volumes:
          - name: data
            hostPath: {{path: {data}, type: DirectoryOrCreate}}
"""


def lines(path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_cronjob_under_watch_on_a_one_minute_schedule_with_forbid(stack):
    d = stack.tmp / "manifests"
    data = stack.tmp / "data"
    write(d / "tick.yaml", CRON.format(hold=65, data=data))
    w = Watcher(stack, d, stack.tmp / "watch.log")
    try:
        # A CronJob first seen within a minute of a schedule time runs it: the first run starts now.
        wait_for(lambda: w.alive() and lines(data / "starts"), "the first run to start", 90)
        # The next minute comes while the first run still works: Forbid skips it.
        wait_for(lambda: json.loads(stack.run("cronjobs", "-o", "json").stdout)[0]["skipped"] >= 1,
                 "the next schedule to be skipped", 90)
        assert len(lines(data / "starts")) == 1
        # After the long run ends, the following minute starts the second run.
        wait_for(lambda: len(lines(data / "starts")) >= 2, "the second run", 150)
        starts, ends = lines(data / "starts"), lines(data / "ends")
        assert ends and ends[0] <= starts[1], "the second run started before the first ended"
        jobs = json.loads(stack.run("jobs", "-o", "json").stdout)
        assert len(jobs) == 2 and jobs[0]["job"].startswith("default/tick-")
        assert "cronjob default/tick" in stack.run("status").stdout
    finally:
        assert w.stop() == 0
    stack.run("down", str(d))
    assert not stack.containers()
