"""Transport speed, side by side with skopeo and podman on the same image in the same run.

    python -m benchmarks.bench_transports [--runs N] [--layers N] [--layer-mb N]

* push:   ``podplay push`` (from its store) vs ``skopeo copy oci:… docker://…``, to a registry
  started for the round (every blob travels), and again to one that has every blob,
* save:   ``podplay save`` (docker-archive: layers decompressed and diff_ids checked) vs
  ``skopeo copy oci:… docker-archive:…``,
* load:   ``podplay load`` vs ``podman load`` (podman also unpacks every layer into vfs storage),
* import: ``podplay import`` vs ``podman import`` of the busybox root file system tarball.

Medians of N rounds, as tables with ratios to the peer tool.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.harness import Row, fresh_dirs, table, time_command


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6, help="layers (the first is busybox, ~1 MB)")
    ap.add_argument("--layer-mb", type=float, default=10.0, help="size of each further layer (incompressible)")
    args = ap.parse_args(argv)

    root_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root_dir))
    from tests.support.images import ImageFactory
    from tests.support.registry import running_registry, start_registry

    tmp = Path(tempfile.mkdtemp(prefix="pp-bench-transports-"))
    factory = ImageFactory(tmp / "build")
    try:
        with running_registry() as reg:
            pushed = factory.push(reg, "bench/transports", layers=args.layers,
                                  layer_size=int(args.layer_mb * (1 << 20)))
            layout = tmp / "layout"
            subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{pushed.ref}",
                            f"oci:{layout}:img"], check=True, capture_output=True)
            print(f"image {pushed.ref}: {args.layers} layers\n", flush=True)

            conf = tmp / "registries.conf"
            conf.write_text("")
            env = {**os.environ, "PODPLAY_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(tmp / "auth.json")}
            root, run = tmp / "pp-root", tmp / "pp-run"
            podplay = [sys.executable, "-m", "reconciler", "--root", str(root), "--runroot", str(run)]
            subprocess.run([*podplay, "pull", "-q", pushed.ref], check=True, capture_output=True, env=env)

            # Every round pushes to a registry started for it: no tool can skip or mount a blob
            # (skopeo's blob-info cache would otherwise mount what an earlier round pushed).
            rows = [Row("podplay push", []), Row("skopeo copy oci: → docker://", [])]
            for _ in range(args.runs):
                for row, command in ((rows[0], [*podplay, "push", "-q", pushed.ref]),
                                     (rows[1], ["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                                f"oci:{layout}:img"])):
                    target = start_registry(tmp / f"target-{uuid.uuid4().hex[:8]}")
                    try:
                        row.samples += time_command([*command, f"docker://{target.host}/bench/push:1"], 1, env=env)
                    finally:
                        target.stop()
            print(table("push to an empty local registry", rows, baseline="skopeo copy oci: → docker://"),
                  flush=True)

            rows = [Row("podplay push", []), Row("skopeo copy oci: → docker://", [])]
            for _ in range(args.runs):
                rows[0].samples += time_command([*podplay, "push", "-q", pushed.ref,
                                                 f"{reg.host}/bench/again:1"], 1, env=env)
                rows[1].samples += time_command(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                                 f"oci:{layout}:img", f"docker://{reg.host}/bench/again:1"], 1)
            print(table("push again (every blob there already)", rows, baseline="skopeo copy oci: → docker://"),
                  flush=True)

            archive, skopeo_archive = tmp / "save.tar", tmp / "skopeo.tar"
            rows = [Row("podplay save", time_command([*podplay, "save", "-q", "-o", str(archive), pushed.ref],
                                                     args.runs, env=env)),
                    Row("skopeo copy oci: → docker-archive:", time_command(
                        ["skopeo", "copy", "-q", f"oci:{layout}:img", f"docker-archive:{skopeo_archive}:x:1"],
                        args.runs, setup=lambda: skopeo_archive.unlink(missing_ok=True)))]
            print(table("save (docker-archive)", rows, baseline="skopeo copy oci: → docker-archive:"), flush=True)

            lroot, lrun = tmp / "load-root", tmp / "load-run"
            proot, prun = tmp / "podman-root", tmp / "podman-run"
            podman = ["podman", "--root", str(proot), "--runroot", str(prun), "--storage-driver", "vfs",
                      "--events-backend", "none", "--cgroup-manager", "cgroupfs"]
            rows = [Row("podplay load", time_command(
                        [sys.executable, "-m", "reconciler", "--root", str(lroot), "--runroot", str(lrun), "load",
                         "-q", "-i", str(archive)], args.runs, setup=fresh_dirs(lroot, lrun), env=env)),
                    Row("podman load (vfs: also unpacks)", time_command(
                        [*podman, "load", "-q", "-i", str(archive)], args.runs, setup=_podman_reset(podman, proot,
                                                                                                  prun)))]
            print(table("load (docker-archive)", rows, baseline="podman load (vfs: also unpacks)"), flush=True)

            rootfs = tmp / "rootfs.tar"
            subprocess.run([str(root_dir / "scripts" / "busybox-rootfs.sh"), str(rootfs)], check=True)
            rows = [Row("podplay import", time_command(
                        [sys.executable, "-m", "reconciler", "--root", str(lroot), "--runroot", str(lrun), "import",
                         str(rootfs), "localhost/busybox:latest"], args.runs, setup=fresh_dirs(lroot, lrun), env=env)),
                    Row("podman import", time_command(
                        [*podman, "import", "-q", str(rootfs), "localhost/busybox:latest"], args.runs,
                        setup=_podman_reset(podman, proot, prun)))]
            print(table("import of the busybox root file system", rows, baseline="podman import"), flush=True)
            _podman_reset(podman, proot, prun)()
    finally:
        factory.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _podman_reset(podman: list[str], proot: Path, prun: Path):
    def setup():
        subprocess.run([*podman, "system", "reset", "-f"], capture_output=True)
        fresh_dirs(proot, prun)()
    return setup


if __name__ == "__main__":
    main()
