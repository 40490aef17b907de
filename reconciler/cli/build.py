"""``podplay build``: the flags and output habits of ``buildah bud`` / ``podman build``.

Steps go to stderr as ``STEP n/N: INSTRUCTION``, then ``COMMIT name`` and ``--> id``; the
image id alone goes to stdout (so ``id=$(podplay build -q .)`` works, as with podman).
"""

from __future__ import annotations


def register(sub, common) -> None:
    p = sub.add_parser("build", parents=[common], help="build an image from a Containerfile",
                       description="Build an image from a Containerfile (or Dockerfile) and its context "
                                   "directory into podplay's image store, like buildah bud / podman build.")
    p.set_defaults(network="")
    p.add_argument("context", nargs="?", default=".", help="the build context directory (default: .)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME",
                   help="name for the image, repeatable (a short name goes under localhost/)")
    p.add_argument("-f", "--file", metavar="FILE", help="the Containerfile (default: CONTEXT/Containerfile, "
                                                        "else CONTEXT/Dockerfile)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="value of an ARG, repeatable (KEY alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build up to this stage (by its AS name)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached layers")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="platform of the image (default: this host)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label to add, repeatable")
    p.add_argument("--timestamp", type=int, metavar="SECONDS",
                   help="created time of the image and newest file time in its layers, in seconds since "
                        "the epoch (default $SOURCE_DATE_EPOCH, else now)")
    p.add_argument("--pull", default="missing", choices=("missing", "always", "never"),
                   help="pull the base images: missing (default), always, never")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.set_defaults(func=cmd_build)


def _pairs(values: list[str], flag: str, *, from_env: bool = False) -> dict[str, str]:
    import os

    from reconciler.errors import InputError

    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not key:
            raise InputError(f"{flag} {v!r}: expected KEY=VALUE")
        if not sep:
            if not from_env:
                raise InputError(f"{flag} {v!r}: expected KEY=VALUE")
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def cmd_build(args, ctx) -> int:
    from reconciler.build.builder import BuildOptions, build_image
    from reconciler.cli.images import _store
    from reconciler.errors import InputError

    # The global --network names pods' network; for build it is RUN's, as with podman build.
    network = getattr(args, "network", "") or ""
    if network not in ("", "none", "host"):
        raise InputError(f"--network {network}: podplay build runs RUN with no network (none, the default) "
                         "or the host's (host)")

    opts = BuildOptions(context=args.context, containerfile=args.file, tags=list(args.tag),
                        build_args=_pairs(args.build_arg, "--build-arg", from_env=True), target=args.target,
                        no_cache=args.no_cache, platform=args.platform,
                        labels=_pairs(args.label, "--label"), timestamp=args.timestamp,
                        pull={"missing": "IfNotPresent", "always": "always", "never": "never"}[args.pull],
                        network=network)
    store = _store(args, ctx)
    err = ctx.err if not args.quiet else None

    def log(line: str) -> None:
        if err is not None:
            print(line, file=err, flush=True)

    def output(chunk: bytes) -> None:
        if err is not None:
            err.flush()
            getattr(err, "buffer", None) and err.buffer.write(chunk) or err.write(chunk.decode(errors="replace"))
            err.flush()

    try:
        result = build_image(store, opts, log, output)
    finally:
        store.close()
    log(f"--> {result.image_id.split(':', 1)[1][:12]}")
    print(result.image_id.split(":", 1)[1], file=ctx.out)
    return 0
