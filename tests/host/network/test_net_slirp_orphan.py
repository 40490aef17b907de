"""A rootless pod's slirp4netns started by an attach that was killed before it recorded the
process: the pod's next detach (crash recovery, or the retried attach) still stops it."""

from __future__ import annotations

import os
import subprocess
import time

from reconciler.network.slirp import SlirpNetwork
from reconciler.runtime import hostinfo


def test_a_slirp4netns_never_recorded_is_stopped_by_detach(test_network, host_paths):
    driver = SlirpNetwork(host_paths)
    driver.dir.mkdir(parents=True, exist_ok=True)
    _, netns = test_network.netns_process()
    uid = "0123456789ab"
    sock = driver.dir / f"{uid}.sock"
    proc = subprocess.Popen(["slirp4netns", "--configure", "--api-socket", str(sock), "--netns-type=path", netns,
                             "tap0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:  # it runs: the kill came after its start
            time.sleep(0.02)
        assert sock.exists() and proc.poll() is None
        assert not (driver.dir / f"{uid}.json").exists()  # and before its record
        start = hostinfo.proc_start_time(proc.pid)
        driver.detach(uid)
        proc.wait(timeout=10)
        assert hostinfo.proc_start_time(proc.pid) != start and not sock.exists()
        assert os.listdir(driver.dir) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
