"""Pull speed: a multi-layer ~50 MB image from a local docker-registry, three ways.

    python -m benchmarks.bench_pull [--runs N] [--layers N] [--layer-mb N]

* ``podplay pull`` — download, verify and record (layers stay compressed; unpacking is the
  storage driver's job and is measured by bench_unpack); also in process, without the
  interpreter start-up, as the engine pulls,
* ``skopeo copy docker://… oci:DIR`` — the same work: download and verify into a layout,
* ``podman pull`` — download, verify *and* unpack every layer into its (vfs) storage.

Same registry, same image, same run; every round starts from an empty store, directory or
podman root (private ``--root``/``--runroot``, so the host's podman storage is untouched).
A round runs each tool once, in turn. podplay runs as installed: its bytecode compiled first
(``harness.compile_bytecode``, as the other benchmarks do), else with PYTHONDONTWRITEBYTECODE
set every run compiles its modules again. Medians of N rounds, as a table with ratios to skopeo,
and the CPU seconds of the two command lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row, compile_bytecode, fresh_dirs, table, time_call, time_command


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6, help="layers (the first is busybox, ~1 MB)")
    ap.add_argument("--layer-mb", type=float, default=10.0, help="size of each further layer (incompressible)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    compile_bytecode()
    from tests.support.images import ImageFactory
    from tests.support.registry import running_registry

    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-pull-"))
    factory = ImageFactory(tmp / "build")
    try:
        with running_registry() as reg:
            pushed = factory.push(reg, "bench/pull", layers=args.layers, layer_size=int(args.layer_mb * (1 << 20)))
            manifest = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{pushed.ref}"],
                                      capture_output=True, check=True).stdout
            import json

            size = sum(layer["size"] for layer in json.loads(manifest)["layers"])
            print(f"image {pushed.ref}: {args.layers} layers, {size / 1e6:.1f} MB compressed\n", flush=True)

            conf = tmp / "registries.conf"
            conf.write_text("")
            env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(tmp / "auth.json")}
            env.pop("REGISTRY_AUTH_FILE")
            root, run = tmp / "pp-root", tmp / "pp-run"
            podplay = [sys.executable, "-m", "reconciler", "--root", str(root), "--runroot", str(run),
                       "pull", "-q", pushed.ref]

            def podplay_setup():
                fresh_dirs(root, run)()

            oci = tmp / "oci"
            skopeo = ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}", f"oci:{oci}:x"]

            proot, prun = tmp / "podman-root", tmp / "podman-run"
            podman = ["podman", "--root", str(proot), "--runroot", str(prun), "--storage-driver", "vfs",
                      "--events-backend", "none", "--cgroup-manager", "cgroupfs",
                      "pull", "-q", "--tls-verify=false", pushed.ref]

            def podman_setup():
                subprocess.run(["podman", "--root", str(proot), "--runroot", str(prun), "--storage-driver", "vfs",
                                "system", "reset", "-f"], capture_output=True)
                fresh_dirs(proot, prun)()

            from reconciler.images.driver import LocalImageStore
            from reconciler.paths import HostPaths

            def pull_in_process():
                store = LocalImageStore(HostPaths(root, run, tmp / "net"), registries_conf=conf)
                store.pull(pushed.ref)
                store.close()

            cpu_podplay: list[float] = []
            cpu_skopeo: list[float] = []
            rows = [Row("podplay pull (download + verify)"), Row("podplay, in process (as `podplay up` pulls)"),
                    Row("skopeo copy docker:// → oci: (download + verify)")]
            with_podman = bool(shutil.which("podman"))
            if with_podman:
                rows.append(Row("podman pull, vfs (download + verify + unpack)"))
            # Round by round (each tool once per round): on a shared machine a busy minute then
            # weighs on every tool alike instead of on whichever happened to run in it.
            for _ in range(args.runs):
                rows[0].samples += time_command(podplay, 1, setup=podplay_setup, env=env, cpu=cpu_podplay)
                rows[1].samples += time_call(pull_in_process, 1, setup=podplay_setup)
                rows[2].samples += time_command(skopeo, 1, setup=lambda: shutil.rmtree(oci, ignore_errors=True),
                                                cpu=cpu_skopeo)
                if with_podman:
                    rows[3].samples += time_command(podman, 1, setup=podman_setup)
            if with_podman:
                podman_setup()
            print(table(f"Pull of a {size / 1e6:.0f} MB, {args.layers}-layer image from a local registry", rows,
                        baseline="skopeo copy docker:// → oci: (download + verify)"))
            import statistics

            # CPU seconds (user + system) say what a pull costs when wall time says how busy the machine was.
            print(f"CPU seconds, median: podplay pull {statistics.median(cpu_podplay):.3f}, "
                  f"skopeo copy {statistics.median(cpu_skopeo):.3f}")
    finally:
        factory.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
