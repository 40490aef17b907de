"""A hostPath that cannot be made fails its own pod's transaction cleanly (real HostVolumes under
the fake host's other drivers): no traceback, no transaction left open, other pods applied."""

from __future__ import annotations

import os

from reconciler.storage.volumes import HostVolumes
from tests.engine.conftest import pod_yaml


def test_file_or_create_on_a_dangling_symlink_fails_only_its_pod(engine, tmp_path):
    engine.drivers.volumes = HostVolumes(engine.paths)
    link = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", link)
    engine.write("a.yaml", pod_yaml("web", extra=f"""
  volumes:
  - name: sock
    hostPath:
      path: {link}
      type: FileOrCreate"""))
    engine.write("b.yaml", pod_yaml("other"))
    result = engine.up()  # used to die of RecursionError here
    assert not result.ok
    [failed] = result.applied.failed
    assert failed.txn.key == "default/web"
    assert "volume 'sock'" in failed.error and str(link) in failed.error and "is a symlink" in failed.error
    assert engine.running() == {"default/other": {"app"}}
    assert engine.state.journal.open_txns() == []
    assert not (tmp_path / "nowhere").exists()
    # Fixed by the user (the link replaced by a real file): the next pass applies it.
    link.unlink()
    link.write_text("")
    assert engine.up().ok
    assert engine.running() == {"default/other": {"app"}, "default/web": {"app"}}
