"""Build speed, side by side with ``buildah bud`` on the same context in the same run.

    python -m benchmarks.bench_build [--runs N] [--driver overlay|vfs]

A 5-instruction Containerfile over busybox (COPY, RUN, ENV, WORKDIR, CMD), both tools starting
from the very same base layers (podplay's imported busybox, given to buildah via an OCI layout):

* cold:    ``podplay build --no-cache`` vs ``buildah bud --layers --no-cache``,
* rebuild: the unchanged context again, cache on (``buildah bud --layers``): no RUN for either.

Medians of N rounds of the whole command (process start included), as tables with the ratio to
buildah. Targets: a cold build no slower than buildah's; an unchanged rebuild under 300 ms.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from benchmarks.harness import Row, podplay_side, table, time_command

CONTAINERFILE = """\
FROM localhost/busybox:latest
COPY app /app
RUN mkdir -p /var/data && cp -r /app /var/data/ && echo built > /var/data/stamp
ENV MODE=production
WORKDIR /app
CMD ["sh", "-c", "cat /var/data/stamp"]
"""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--driver", default="overlay", help="buildah's storage driver (default overlay, as podplay)")
    args = ap.parse_args(argv)

    root_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root_dir))
    from tests.host.build.conftest import busybox_rootfs
    from tests.support.images import _tool_env

    # Letters and digits only: buildah makes an image name from an oci: path (no '_' at the end).
    tmp = Path(f"/tmp/pp-bench-build-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    podplay, env = podplay_side(tmp)
    buildah = ["buildah", "--root", str(tmp / "bh-root"), "--runroot", str(tmp / "bh-run"),
               "--storage-driver", args.driver]
    benv = _tool_env()
    try:
        ctx = tmp / "ctx"
        (ctx / "app").mkdir(parents=True)
        for i in range(20):
            (ctx / "app" / f"file{i}.txt").write_text(f"content {i}\n" * 200)
        (ctx / "Containerfile").write_text(CONTAINERFILE)
        subprocess.run([*podplay, "import", str(busybox_rootfs(tmp / "rootfs.tar")), "busybox"], check=True,
                       capture_output=True, env=env)
        subprocess.run([*podplay, "copy", "podplay:localhost/busybox:latest", f"oci:{tmp / 'base'}:busybox"],
                       check=True, capture_output=True, env=env)
        pulled = subprocess.run([*buildah, "pull", "-q", f"oci:{tmp / 'base'}:busybox"], capture_output=True,
                                text=True, env=benv)
        if pulled.returncode != 0:
            raise SystemExit(f"buildah pull: {pulled.stderr}")
        image = pulled.stdout.strip()
        subprocess.run([*buildah, "tag", image, "localhost/busybox:latest"], check=True, capture_output=True,
                       env=benv)
        print(f"context: {CONTAINERFILE.count(chr(10)) - 1} instructions after FROM, 20 files; buildah "
              f"storage driver {args.driver}\n", flush=True)

        pp_build = [*podplay, "build", "-q", "-t", "bench", str(ctx)]
        bh_build = [*buildah, "bud", "-q", "--layers", "-t", "bench", str(ctx)]
        rows = [Row("podplay build --no-cache"), Row("buildah bud --layers --no-cache")]
        for _ in range(args.runs):
            rows[0].samples += time_command([*podplay, "build", "-q", "--no-cache", "-t", "bench", str(ctx)], 1,
                                            env=env)
            rows[1].samples += time_command([*buildah, "bud", "-q", "--layers", "--no-cache", "-t", "bench",
                                             str(ctx)], 1, env=benv)
        print(table("cold build (every instruction runs)", rows, baseline="buildah bud --layers --no-cache"),
              flush=True)

        rows = [Row("podplay build"), Row("buildah bud --layers")]
        for _ in range(args.runs):
            rows[0].samples += time_command(pp_build, 1, env=env)
            rows[1].samples += time_command(bh_build, 1, env=benv)
        print(table("unchanged rebuild (cached: no RUN)", rows, baseline="buildah bud --layers"), flush=True)
    finally:
        subprocess.run([*buildah, "rm", "--all"], capture_output=True, env=benv)
        subprocess.run([*buildah, "rmi", "--all", "--force"], capture_output=True, env=benv)
        subprocess.run(["umount", "-R", str(tmp / "bh-root" / "overlay")], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
