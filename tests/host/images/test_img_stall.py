"""A registry on an edge link: throttled, silent for a while, or frozen (SIGSTOP-like), behind
a TCP proxy (tests/support/proxy.py) in front of the real docker-registry.

* A download that stalls resumes where it stopped (a Range request) and the pull succeeds.
* A registry that stays frozen fails the pull within the configured time, with one message that
  names the registry, the blob and the stall time, exit code 5, no traceback, and no partial
  download left in the store; once it answers again the same pull succeeds.
* Progress: plain lines without escape codes when stderr is not a terminal, a live display on a
  terminal, nothing with --quiet.

Time limits asserted are bounds of the configured timeouts (a stall timeout of 1-2 s, far
beyond what loopback needs), never a speed.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time

import pytest

from reconciler.errors import EXIT_IMAGE
from reconciler.images.progress import Progress
from reconciler.images.registry import STALL_RETRIES, RegistryStallError
from tests.host.images.conftest import assert_nothing_stored, assert_store_verified
from tests.support.images import make_busybox_image
from tests.support.proxy import TcpProxy

STALL_AT = 96 << 10  # past the manifest and config on the same connection, inside the layer


class Recorder(Progress):
    def __init__(self):
        self.retries: list[tuple[str, int, str]] = []
        self.done: list[str] = []

    def blob_retry(self, digest, offset, why):
        self.retries.append((digest, offset, why))

    def blob_done(self, digest):
        self.done.append(digest)


@pytest.fixture
def proxy(registry):
    with TcpProxy(registry.port) as p:
        yield p


@pytest.fixture
def image(registry, repo):
    pushed = make_busybox_image(registry, repo)
    return pushed


def _via(proxy, pushed) -> str:
    return f"{proxy.host}/{pushed.repo}:{pushed.tag}"


def _layer_size(make_store, ref) -> int:
    info = make_store().inspect_remote(ref, tags=False)
    return max(layer.size for layer in info.parsed.layers)


def test_a_stalled_download_resumes_where_it_stopped_and_succeeds(make_store, proxy, image, host_paths):
    ref = _via(proxy, image)
    assert _layer_size(make_store, ref) > 2 * STALL_AT, "the layer must be larger than the stall point"
    proxy.stall_after(STALL_AT, times=1)  # the first connection goes silent inside the layer
    progress = Recorder()
    started = time.monotonic()
    info = make_store(progress=progress, timeout=1.0, connect_timeout=1.0).pull(ref)
    took = time.monotonic() - started
    assert proxy.stalled_connections() == 1
    resumed = [r for r in proxy.range_requests() if r.startswith("bytes=") and not r.startswith("bytes=0-")]
    assert resumed, f"the download was not resumed with a Range request: {proxy.range_requests()}"
    [(digest, offset, why)] = progress.retries
    assert digest in progress.done and 0 < offset < STALL_AT and "no data for 1s" in why
    assert took < 30, f"one stall of 1 s took {took:.1f}s"
    assert info.id and [layer.digest for layer in info.layers]
    assert_store_verified(host_paths, images=1)


def test_a_slow_link_that_keeps_moving_is_not_a_stall(make_store, proxy, image, host_paths):
    ref = _via(proxy, image)
    size = _layer_size(make_store, ref)
    proxy.rate = 256 << 10  # a few seconds for the layer, each second far more than nothing
    progress = Recorder()
    started = time.monotonic()
    make_store(progress=progress, timeout=1.0, connect_timeout=1.0).pull(ref)
    assert time.monotonic() - started > size / proxy.rate * 0.5, "the link was not slow"
    assert progress.retries == [] and not [r for r in proxy.range_requests() if not r.startswith("bytes=0-")]
    assert_store_verified(host_paths, images=1)


def test_a_frozen_registry_fails_once_within_the_configured_time(make_store, proxy, image, host_paths):
    ref = _via(proxy, image)
    store = make_store(timeout=1.0, connect_timeout=1.0, retries=4)
    store.inspect_remote(ref, tags=False)  # the connection and token are there: the freeze hits the blob
    proxy.freeze_after(STALL_AT)
    started = time.monotonic()
    with pytest.raises(RegistryStallError) as err:
        store.pull(ref)
    took = time.monotonic() - started
    message = str(err.value)
    assert f"registry {proxy.host} sent nothing for 1s ({STALL_RETRIES + 1} times in a row)" in message
    assert re.search(r"while sending blob sha256:[0-9a-f]{64} of " + re.escape(image.repo), message)
    assert "bytes came" in message and "--stall-timeout" in message
    assert err.value.exit_code == EXIT_IMAGE and err.value.temporary
    # (retries + 1) stalls of 1 s and the back-off between them, not the generic 5 tries x timeout.
    assert STALL_RETRIES + 1 <= took < 15, f"gave up after {took:.1f}s"
    assert_nothing_stored(host_paths)

    proxy.thaw()
    info = store.pull(ref)
    assert info.id
    assert_store_verified(host_paths, images=1)


def _pull_cli(host_paths, tmp_path, *args, stderr=subprocess.PIPE, env_extra=None, timeout=120):
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "reconciler", "--root", str(host_paths.root), "--runroot",
                           str(host_paths.runroot), "pull", *args], stdout=subprocess.PIPE, stderr=stderr,
                          env=env, timeout=timeout)


def test_the_pull_command_gives_up_on_a_frozen_registry_with_one_message(proxy, image, host_paths, tmp_path):
    ref = _via(proxy, image)
    proxy.freeze_after(STALL_AT)
    started = time.monotonic()
    res = _pull_cli(host_paths, tmp_path, "--stall-timeout", "2", "--connect-timeout", "2", ref)
    took = time.monotonic() - started
    err = res.stderr.decode()
    assert res.returncode == EXIT_IMAGE, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"registry {proxy.host} sent nothing for 2s" in errors[0], err
    assert "blob sha256:" in errors[0]
    assert 2 * (STALL_RETRIES + 1) <= took < 30, f"gave up after {took:.1f}s"
    # The two stalls it tried again after are said on the way, as plain lines.
    assert len(re.findall(r"stalled at .*no data for 2s from", err)) == STALL_RETRIES, err
    assert "layers downloaded before the pull stopped" in err, err
    assert "\x1b" not in err
    assert_nothing_stored(host_paths)


def test_the_stall_timeout_comes_from_the_environment_too(proxy, image, host_paths, tmp_path):
    proxy.freeze_after(STALL_AT)
    res = _pull_cli(host_paths, tmp_path, "-q", _via(proxy, image),
                    env_extra={"PODPLAY_STALL_TIMEOUT": "1", "PODPLAY_CONNECT_TIMEOUT": "1"})
    err = res.stderr.decode()
    assert res.returncode == EXIT_IMAGE and "sent nothing for 1s" in err and "Traceback" not in err
    assert "stalled at" not in err, "--quiet says nothing but the error"
    res = _pull_cli(host_paths, tmp_path, _via(proxy, image), env_extra={"PODPLAY_STALL_TIMEOUT": "soon"})
    assert res.returncode == 1 and "$PODPLAY_STALL_TIMEOUT: 'soon' is not a number of seconds" in res.stderr.decode()


def test_progress_is_plain_lines_when_not_a_terminal_and_nothing_with_quiet(proxy, image, host_paths, tmp_path):
    proxy.rate = 2 << 20  # a slow link: a download takes a moment
    ref = _via(proxy, image)
    res = _pull_cli(host_paths, tmp_path, ref)
    err = res.stderr.decode()
    assert res.returncode == 0, err
    assert len(res.stdout.decode().strip()) == 64
    assert "\x1b" not in err and "\r" not in err
    lines = err.splitlines()
    layer = [line for line in lines if " done, " in line]
    assert layer and all(re.fullmatch(rf"{re.escape(ref)}: layer [0-9a-f]{{12}} done, [0-9.]+(B|KiB|MiB) "
                                      r"in [0-9.]+s \([0-9.]+(B|KiB|MiB)/s\)", line) for line in layer), err
    assert re.fullmatch(rf"{re.escape(ref)}: {len(layer)} of {len(layer)} layers downloaded \(.+\) in [0-9.]+s",
                        lines[-1]), err

    res = _pull_cli(host_paths, tmp_path, "-q", ref)
    assert res.returncode == 0 and res.stderr == b"", res.stderr


def test_progress_on_a_terminal_shows_each_layer_and_the_total(proxy, image, host_paths, tmp_path):
    proxy.rate = 1 << 20
    primary, secondary = pty.openpty()
    try:
        res = _pull_cli(host_paths, tmp_path, _via(proxy, image), stderr=secondary)
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    out = b"".join(chunks).decode(errors="replace")
    assert res.returncode == 0, out
    assert out.startswith("Pulling ") and "\x1b[" in out
    assert re.search(r"[0-9a-f]{12}: \[[=> ]+\] [0-9.]+(B|KiB|MiB)/[0-9.]+(B|KiB|MiB) [0-9.]+(B|KiB|MiB)/s", out), out
    assert re.search(r"total: [0-9.]+(B|KiB|MiB)/[0-9.]+(B|KiB|MiB), 1/1 layers", out), out
