"""Layer unpack speed: a layer of many small files, podplay's secure unpack against GNU tar.

    python -m benchmarks.bench_unpack [--files N] [--runs N] [--dir DIR]

The layer is a real ``tar -c`` of a generated tree (``--files`` files of 100-2000 random bytes
in directories of 100), gzip-compressed. Rows, each the median of ``--runs`` rounds into an
empty directory on the same file system (``--dir``, default under /var/tmp):

* ``tar -xzf`` / ``tar -xf`` — GNU tar as root (owners, modes, mtimes kept), no checks;
* ``podplay unpack`` — ``storage.unpack.unpack_layer``: decompress, hash against the diff_id,
  every entry created with dir fds and O_NOFOLLOW, whiteouts translated;
* ``podplay layer store`` — ``LayerStore.ensure_layers``: the unpack plus what makes a layer
  durable (syncfs, then rename into place); compare with ``tar -xzf + sync -f``;
* ``podman load`` (when podman is installed) — the same layer as a one-layer OCI archive into a
  private podman root with the overlay driver: podman's unpack plus its bookkeeping.

Nothing is asserted; the table gives the ratios to ``tar -xzf`` measured in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Row, table, time_call, time_command


class _Blobs:
    """The one part of an ImageStore the layer store calls."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def open_blob(self, digest: str):
        return io.BytesIO(self.blob)


def _make_layer(work: Path, files: int) -> tuple[Path, Path, str]:
    src = work / "src"
    rnd = random.Random(1)
    for i in range(files):
        d = src / f"usr/share/pkg{i // 100}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"file{i}.txt").write_bytes(rnd.randbytes(rnd.randint(100, 2000)))
    raw = work / "layer.tar"
    subprocess.run(["tar", "--numeric-owner", "-C", str(src), "-cf", str(raw), "."], check=True)
    shutil.rmtree(src)
    data = raw.read_bytes()
    gz = work / "layer.tar.gz"
    gz.write_bytes(gzip.compress(data, 6))
    return raw, gz, "sha256:" + hashlib.sha256(data).hexdigest()


def _oci_archive(work: Path, gz: Path, diff_id: str) -> Path:
    """A one-layer OCI image archive (``podman load -i``) holding the benchmark layer."""
    import json
    import tarfile

    layout = work / "oci"
    (layout / "blobs/sha256").mkdir(parents=True)

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs/sha256" / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    layer = put(gz.read_bytes())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}).encode())
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "bench-unpack"}}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    archive = work / "oci.tar"
    with tarfile.open(archive, "w") as t:
        t.add(layout, arcname=".")
    return archive


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where to unpack (pick the file system of the storage root)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from reconciler.observed import ImageConfig, ImageInfo, LayerInfo
    from reconciler.paths import HostPaths
    from reconciler.storage.layers import LayerStore
    from reconciler.storage.unpack import unpack_layer

    work = Path(tempfile.mkdtemp(prefix="pp-bench-unpack-", dir=args.dir))
    try:
        raw, gz, diff_id = _make_layer(work, args.files)
        out = work / "out"

        def fresh():
            shutil.rmtree(out, ignore_errors=True)

        def fresh_dir():
            fresh()
            out.mkdir()

        blob = gz.read_bytes()
        raw_blob = raw.read_bytes()
        image = ImageInfo("sha256:" + "0" * 64, "", (), ImageConfig(),
                          (LayerInfo("sha256:" + "1" * 64, diff_id, "application/vnd.oci.image.layer.v1.tar+gzip",
                                     len(blob)),))

        def store_once():
            LayerStore(HostPaths(out, out / "run", out / "net"), _Blobs(blob)).ensure_layers(image)

        rows = [
            Row("tar -xzf", time_command(["tar", "-xzf", str(gz), "-C", str(out)], args.runs, setup=fresh_dir)),
            Row("podplay unpack (gzip)", time_call(
                lambda: unpack_layer(io.BytesIO(blob), out, diff_id=diff_id), args.runs, setup=fresh)),
            Row("tar -xf (uncompressed)", time_command(["tar", "-xf", str(raw), "-C", str(out)], args.runs,
                                                       setup=fresh_dir)),
            Row("podplay unpack (uncompressed)", time_call(
                lambda: unpack_layer(io.BytesIO(raw_blob), out, diff_id=diff_id), args.runs, setup=fresh)),
            Row("tar -xzf + sync -f", time_command(
                ["sh", "-c", f"tar -xzf {gz} -C {out} && sync -f {out}"], args.runs, setup=fresh_dir)),
            Row("podplay layer store (unpack + syncfs + rename)", time_call(store_once, args.runs, setup=fresh)),
        ]
        if shutil.which("podman"):
            archive = _oci_archive(work, gz, diff_id)
            pm = ["podman", "--root", str(out / "root"), "--runroot", str(out / "run"), "--storage-driver", "overlay"]
            rows.append(Row("podman load (overlay)", time_command([*pm, "load", "-q", "-i", str(archive)], args.runs,
                                                                  setup=fresh_dir)))
            fresh()
        entries = sum(1 for _ in subprocess.run(["tar", "-tf", str(raw)], capture_output=True, text=True,
                                                check=True).stdout.splitlines())
        print(table(f"Unpack of a {entries}-entry layer ({gz.stat().st_size // 1024} KiB gzip, "
                    f"{raw.stat().st_size // 1024} KiB tar) into {args.dir}", rows, baseline="tar -xzf"))
        for r in rows:
            print(f"{r.name}: {r.median * 1e6 / entries:.1f} us/entry")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
