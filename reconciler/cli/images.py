"""Image commands: pull, images, inspect, rmi, tag, image prune, login, logout, copy, push,
save, load, import.

They behave like their podman/skopeo namesakes: ``pull`` prints the image id on stdout and
progress on stderr (terminals only); ``inspect docker://REF`` looks at a remote image without
pulling it (like ``skopeo inspect``; ``oci:``, ``oci-archive:`` and ``docker-archive:`` work
too), ``--raw`` prints the manifest as served, ``--config`` the image config. ``copy SRC DST``
takes skopeo's transport names (``docker://``, ``oci:``, ``oci-archive:``, ``docker-archive:``)
and ``podplay:REF`` or a bare REF for podplay's own store. Heavy modules are imported inside
the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from reconciler.cli.pullopts import timeout_options, use_timeouts

DOCKER_PREFIX = "docker://"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _store(args, ctx, *, quiet: bool = True):
    from reconciler.images.driver import LocalImageStore
    from reconciler.images.progress import for_stream

    use_timeouts(args)
    progress = for_stream(ctx.err, quiet)
    return LocalImageStore(ctx.paths, platform=getattr(args, "platform", None),
                           auth_file=getattr(args, "authfile", None),
                           tls_verify=getattr(args, "tls_verify", True), progress=progress,
                           certs_dir=getattr(args, "cert_dir", None))


def _registry_options(p: argparse.ArgumentParser, platform: bool = True) -> None:
    p.add_argument("--authfile", metavar="PATH",
                   help="auth file to use (env REGISTRY_AUTH_FILE; default: podman's auth.json, then docker's)")
    p.add_argument("--tls-verify", type=_bool, default=True, metavar="BOOL",
                   help="require https with a verified certificate (default true; loopback registries may use http)")
    p.add_argument("--cert-dir", metavar="DIR",
                   help="per-registry TLS files: DIR/HOST[:PORT]/{ca.crt,client.cert,client.key} "
                        "(env PODPLAY_CERTS_DIR; default /etc/containers/certs.d and /etc/docker/certs.d)")
    timeout_options(p)
    if platform:
        p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                       help="platform to choose from a multi-platform image (default: this host)")


def register(sub, common) -> None:
    _pull_options(sub.add_parser("pull", parents=[common], help="pull an image from a registry",
                                 description="Pull an image (all its layers, verified) into podplay's store."))

    p = sub.add_parser("images", parents=[common], help="list local images")
    _images_options(p)

    p = sub.add_parser("inspect", parents=[common], help="show a local image, or a remote one with docker://REF",
                       description="Show a local image (REF or id), or with docker://REF an image in its registry "
                                   "without pulling it (digest, platforms of an index, config, layers); "
                                   "oci:DIR[:NAME], oci-archive:FILE[:NAME] and docker-archive:FILE[:REF] are read "
                                   "the same way.")
    _inspect_options(p)

    p = sub.add_parser("rmi", parents=[common], help="remove local images")
    _rmi_options(p)

    _tag_options(sub.add_parser("tag", parents=[common], help="give a local image another name"))

    image = sub.add_parser("image", parents=[common],
                           help="manage images (prune, ls, rm, inspect, pull, tag, copy, push, save, load, import)")
    isub = image.add_subparsers(dest="image_command", metavar="COMMAND")
    p = isub.add_parser("prune", parents=[common], help="remove unreferenced image data",
                        description="Remove blobs no image references (left by removed or re-tagged images "
                                    "and by interrupted pulls), snapshots without a container, and unpacked layers "
                                    "no image or container uses; "
                                    "with --dangling also images that have no name and that no container uses.")
    p.add_argument("--dangling", action="store_true", help="also remove images without a name")
    p.set_defaults(func=cmd_prune)
    _images_options(isub.add_parser("ls", parents=[common], help="list local images"))
    _rmi_options(isub.add_parser("rm", parents=[common], help="remove local images"))
    _inspect_options(isub.add_parser("inspect", parents=[common], help="show an image"))
    _pull_options(isub.add_parser("pull", parents=[common], help="pull an image from a registry"))
    _tag_options(isub.add_parser("tag", parents=[common], help="give a local image another name"))
    image.set_defaults(func=lambda args, ctx: (image.print_help(ctx.out), 2)[1])
    trust = isub.add_parser("trust", parents=[common], help="show the signature policy")
    tsub = trust.add_subparsers(dest="trust_command", metavar="COMMAND")
    p = tsub.add_parser("show", parents=[common], help="print the effective signature policy per scope",
                        description="Print each scope of the signature policy (containers-policy.json(5)) with "
                                    "what it requires and, for registry scopes, where its signatures are read "
                                    "from (containers-registries.d(5)); like `podman image trust show`.")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--raw", action="store_true", help="print the policy file as it is")
    p.set_defaults(func=cmd_trust_show)
    trust.set_defaults(func=lambda args, ctx: (trust.print_help(ctx.out), 2)[1])

    p = sub.add_parser("login", parents=[common], help="log in to a registry (credentials checked, then saved)")
    p.add_argument("registry", help="host[:port][/namespace]")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin: argv is visible to others)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    _registry_options(p, platform=False)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", parents=[common], help="remove saved credentials for a registry")
    p.add_argument("registry", nargs="?", help="host[:port][/namespace]")
    p.add_argument("-a", "--all", action="store_true", help="remove the credentials of every registry")
    p.add_argument("--authfile", metavar="PATH", help="auth file to edit")
    p.set_defaults(func=cmd_logout)

    _transport_commands(sub, common)
    _transport_commands(isub, common)


LOCATIONS_HELP = ("Locations: docker://REF (a registry), oci:DIR[:NAME] (an OCI layout), oci-archive:FILE[:NAME], "
                  "docker-archive:FILE[:REF|@N] (docker save format), podplay:REF or a bare REF (podplay's store).")


def _transport_commands(sub, common) -> None:
    p = sub.add_parser("copy", parents=[common], help="copy an image between registries, layouts, archives, the store",
                       description="Copy an image, verifying every blob: between registries, OCI layouts and "
                                   "archives and podplay's store (pushing is a copy to docker://). " + LOCATIONS_HELP)
    p.add_argument("source", help="where the image is, e.g. docker://quay.io/org/app:1 or oci-archive:app.tar")
    p.add_argument("destination", help="where it goes, e.g. oci:/srv/layouts/app:1 or docker://127.0.0.1:5000/app:1")
    _copy_options(p)
    p.set_defaults(func=cmd_copy)

    p = sub.add_parser("push", parents=[common], help="push a local image to a registry",
                       description="Push an image from podplay's store to a registry (a copy to docker://).")
    p.add_argument("image", help="local image name or id")
    p.add_argument("destination", nargs="?",
                   help="docker://REF or REF (default: the image's own name); any copy location works too")
    _copy_options(p)
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("save", parents=[common], help="write local images into an archive",
                       description="Write images from podplay's store into one archive (for air-gapped hosts): "
                                   "docker-archive (docker save format, the default; several images share layers) "
                                   "or oci-archive.")
    p.add_argument("images", nargs="+", help="image names or ids")
    p.add_argument("-o", "--output", metavar="FILE", help="archive to write ('-' or omitted: standard output, "
                                                            "when it is not a terminal)")
    p.add_argument("--format", choices=("docker-archive", "oci-archive"), default="docker-archive")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("load", parents=[common], help="load images from an archive",
                       description="Load every image of a docker-archive or oci-archive (gzip, zstd, xz or bzip2 "
                                   "compressed or not; the format is detected) into podplay's store, verified.")
    p.add_argument("-i", "--input", metavar="FILE", help="archive to read ('-' or omitted: standard input)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="platform to choose from a multi-platform image (default: this host)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the loaded names")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("delete", parents=[common], help="delete an image from a registry (skopeo delete)",
                       description="Delete docker://REF from its registry: a tag is resolved to the manifest "
                                   "digest it names and that manifest is deleted (with every tag naming it), "
                                   "as skopeo delete does. The registry must allow deletes.")
    p.add_argument("reference", metavar="docker://REF")
    p.add_argument("--authfile", help="credentials file (default: the containers auth.json search)")
    p.add_argument("--tls-verify", type=_bool, default=True, metavar="BOOL",
                   help="verify the registry's TLS certificate (default true)")
    p.add_argument("--cert-dir", help="directory with the registry's CA and client certificates")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("import", parents=[common], help="make an image from a root file system tarball",
                       description="Make a one-layer image from a root file system tarball (plain, gzip, zstd, xz "
                                   "or bzip2; '-' for standard input), like podman import. The layer is stored "
                                   "gzip-compressed; os and architecture are this host's unless given.")
    p.add_argument("file", help="the tarball, or '-' for standard input")
    p.add_argument("name", nargs="?", help="name for the image (a short name goes under localhost/)")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, "
                        "VOLUME, WORKDIR (repeatable), e.g. --change 'CMD [\"sh\"]' --change 'ENV A=b'")
    p.add_argument("-m", "--message", default="", help="comment for the image's history entry")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="platform the image is for (default: this host)")
    p.add_argument("--arch", help="architecture the image is for (overrides --platform's)")
    p.add_argument("--os", help="operating system the image is for (overrides --platform's)")
    p.add_argument("--variant", help="architecture variant the image is for (overrides --platform's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id (the default output)")
    p.set_defaults(func=cmd_import)


def _copy_options(p) -> None:
    _registry_options(p)
    p.add_argument("--sign-by", metavar="FINGERPRINT",
                   help="sign the image pushed with this GPG key (simple signing, written to the destination's "
                        "lookaside-staging storage from registries.d)")
    p.add_argument("--sign-by-sigstore-private-key", metavar="FILE",
                   help="sign the image pushed with this sigstore (cosign) private key, attached in the registry")
    p.add_argument("--sign-passphrase-file", metavar="FILE", help="the signing key's passphrase (first line)")
    p.add_argument("-a", "--all", action="store_true",
                   help="copy every platform of a multi-platform image (to oci:, oci-archive: or docker://)")
    p.add_argument("--src-creds", metavar="USER[:PASSWORD]", help="credentials for the source registry")
    p.add_argument("--dest-creds", "--creds", metavar="USER[:PASSWORD]",
                   help="credentials for the destination registry")
    p.add_argument("--dest-compress-format", choices=("gzip", "zstd"),
                   help="recompress layers that are not already in this format")
    p.add_argument("--dest-compress", type=_bool, default=None, metavar="BOOL",
                   help="false: store layers uncompressed; true: gzip unless --dest-compress-format says otherwise "
                        "(default: keep every layer as it is)")
    p.add_argument("-f", "--format", choices=("oci", "v2s2"),
                   help="manifest type to write (default: as the source has it; oci: destinations are always OCI)")
    p.add_argument("--chunk-size", type=_size_arg, default=None, metavar="BYTES",
                   help="pushing: upload blobs larger than this in chunks of this size (default 16MiB)")
    p.add_argument("--digestfile", metavar="FILE", help="write the digest of the copied manifest to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _size_arg(text: str) -> int:
    import re

    m = re.fullmatch(r"(\d+)\s*([kmg]i?b?|b)?", text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size like 5242880, 512KiB or 16MiB, not {text!r}")
    unit = (m.group(2) or "b")[0]
    return int(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]


def _pull_options(p) -> None:
    p.add_argument("reference", help="image reference, e.g. busybox:1.36 or quay.io/org/app@sha256:…")
    _registry_options(p)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only the image id (no progress: by default a live display on a terminal, "
                        "else one line per layer downloaded)")
    p.set_defaults(func=cmd_pull)


def _tag_options(p) -> None:
    p.add_argument("source", help="image name or id")
    p.add_argument("target", nargs="+", help="new name(s), e.g. localhost/app:v1")
    p.set_defaults(func=cmd_tag)


def _images_options(p) -> None:
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("-q", "--quiet", action="store_true", help="print image ids only")
    p.add_argument("--digests", action="store_true", help="show the digest each name was pulled at")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten image ids")
    p.set_defaults(func=cmd_images)


def _inspect_options(p) -> None:
    p.add_argument("reference", help="local image name or id, or docker://REF for a remote image")
    p.add_argument("--raw", action="store_true", help="print the manifest (or index) exactly as stored/served")
    p.add_argument("--config", action="store_true", help="print the image config")
    p.add_argument("--no-tags", action="store_true", help="remote: do not list the repository's tags")
    p.add_argument("--output", "-o", choices=("json",), default="json")
    _registry_options(p)
    p.set_defaults(func=cmd_inspect)


def _rmi_options(p) -> None:
    p.add_argument("images", nargs="*", help="image names or ids")
    p.add_argument("-a", "--all", action="store_true", help="remove every image")
    p.add_argument("-f", "--force", action="store_true",
                   help="do not fail on images that are not present or that pods use")
    p.set_defaults(func=cmd_rmi)


# --- handlers -------------------------------------------------------------------------------------

def cmd_pull(args, ctx) -> int:
    store = _store(args, ctx, quiet=args.quiet)
    try:
        info = store.pull(args.reference)
    finally:
        store.close()
    print(info.id.split(":", 1)[1], file=ctx.out)
    return 0


def _ago(ts: float) -> str:
    if not ts:
        return ""
    delta = max(0, time.time() - ts)
    for unit, seconds in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                          ("hour", 3600), ("minute", 60)):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago"


def _created_ts(created: str) -> float:
    from datetime import datetime

    if not created:
        return 0.0
    text = created.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python before 3.11 chokes on nanoseconds: keep microseconds.
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        tz = rest[len(digits):]
        text = f"{head}.{digits[:6]}{tz}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _size(n: int) -> str:
    # podman prints decimal units
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n} GB"


def _split_name(name: str) -> tuple[str, str]:
    if "@" in name:
        return name.split("@", 1)[0], "<none>"
    repo, _, tag = name.rpartition(":")
    return repo, tag


def cmd_images(args, ctx) -> int:
    store = _store(args, ctx)
    rows = []
    for rec in store.records():
        try:
            info = store.info(rec)
        except Exception:  # noqa: BLE001 - a damaged image still gets listed, marked
            info = None
        rows.append((rec, info))
    if args.quiet:
        seen = []
        for rec, _ in rows:
            short = rec.id.split(":", 1)[1]
            text = short if args.no_trunc else short[:12]
            if text not in seen:
                seen.append(text)
                print(text, file=ctx.out)
        return 0
    if args.output == "json":
        out = []
        for rec, info in rows:
            out.append({
                "Id": rec.id.split(":", 1)[1],
                "Names": list(rec.names),
                "Digest": rec.manifest,
                "RepoDigests": list(rec.repo_digests),
                "Created": info.created if info else "",
                "Size": info.size if info else 0,
                "Os": info.os if info else "",
                "Architecture": info.architecture if info else "",
                "Dangling": not rec.names,
                "Damaged": info is None,
            })
        json.dump(out, ctx.out, indent=4)
        print(file=ctx.out)
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [header]
    for rec, info in rows:
        short = rec.id.split(":", 1)[1]
        image_id = short if args.no_trunc else short[:12]
        created = _ago(_created_ts(info.created)) if info else "damaged"
        size = _size(info.size) if info else ""
        names = list(rec.names) or ["<none>:<none>"]
        for name in names:
            repo, tag = _split_name(name) if name != "<none>:<none>" else ("<none>", "<none>")
            row = [repo, tag]
            if args.digests:
                row.append(rec.names.get(name) or rec.manifest)
            table.append(row + [image_id, created, size])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=ctx.out)
    return 0


def _write_raw(ctx, data: bytes) -> None:
    ctx.out.flush()
    out = getattr(ctx.out, "buffer", None)
    if out is not None:
        out.write(data)
        out.flush()
    else:
        ctx.out.write(data.decode())


def cmd_inspect(args, ctx) -> int:
    from reconciler.errors import NotFoundError

    store = _store(args, ctx)
    try:
        if args.reference.startswith(DOCKER_PREFIX):
            return _inspect_remote(args, ctx, store, args.reference[len(DOCKER_PREFIX):])
        if args.reference.startswith(("oci:", "oci-archive:", "docker-archive:")):
            return _inspect_location(args, ctx, store, args.reference)
        rec = store.record(args.reference)
        if rec is None:
            raise NotFoundError(f"image {args.reference} is not present (for a registry image use "
                                f"docker://{args.reference})")
        if args.raw:
            _write_raw(ctx, store.manifest_bytes(rec.manifest))
            return 0
        if args.config:
            _write_raw(ctx, store.config_bytes(rec.id))
            return 0
        info = store.info(rec)
        config = json.loads(store.config_bytes(rec.id))
        doc = {
            "Id": rec.id.split(":", 1)[1],
            "Digest": rec.manifest,
            "RepoTags": [n for n in rec.names if "@" not in n],
            "RepoDigests": list(rec.repo_digests),
            "Created": info.created,
            "Architecture": info.architecture,
            "Os": info.os,
            "Variant": info.variant,
            "Size": info.size,
            "Config": config.get("config") or {},
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in info.layers]},
            "ManifestType": rec.media_type,
            "Index": rec.index or None,
            "Layers": [{"Digest": layer.digest, "DiffID": layer.diff_id, "MIMEType": layer.media_type,
                        "Size": layer.size} for layer in info.layers],
            "NamesHistory": [{"Name": n, "Digest": d} for n, d in rec.names.items()],
            "Signatures": _local_signatures(store, rec),
        }
        json.dump([doc], ctx.out, indent=4)
        print(file=ctx.out)
        return 0
    finally:
        store.close()


def _local_signatures(store, rec) -> list[dict]:
    """Per name the image came from a registry with: what the signature policy says of it now
    (signatures read from lookaside storage only: inspecting a local image asks no registry)."""
    from reconciler.images.reference import parse_reference
    from reconciler.images.trust import signature_status

    out = []
    for name, digest in rec.names.items():
        ref = parse_reference(name)
        if ref.is_local or not (digest or ref.digest):
            out.append({"Name": name, "Accepted": None, "Reason": "made or loaded on this host: not from a registry"})
            continue
        out.append(signature_status(store, ref, digest or ref.digest, remote=False))
    return out


def _inspect_doc(image, name: str, tags) -> dict:
    """`skopeo inspect`'s document, for a registry's image or a layout's or archive's."""
    cfg = image.config.raw.get("config") or {}
    return {
        "Name": name,
        "Digest": image.top.digest,
        "RepoTags": list(tags),
        "Created": image.config.created,
        "DockerVersion": image.config.raw.get("docker_version", ""),
        "Labels": cfg.get("Labels"),
        "Architecture": image.config.platform.architecture,
        "Os": image.config.platform.os,
        "Variant": image.config.platform.variant,
        "Layers": [layer.digest for layer in image.parsed.layers],
        "LayersData": [{"MIMEType": layer.media_type, "Digest": layer.digest, "Size": layer.size,
                        "Annotations": layer.annotations or None} for layer in image.parsed.layers],
        "Env": cfg.get("Env") or [],
        "MediaType": image.parsed.media_type if image.index is None else image.index.media_type,
        "ManifestDigest": image.manifest.digest,
        "ConfigDigest": image.parsed.config.digest,
    }


def _inspect_remote(args, ctx, store, ref: str) -> int:
    from reconciler.images.platform import normalize

    remote = store.inspect_remote(ref, tags=not (args.no_tags or args.raw or args.config))
    if args.raw:
        _write_raw(ctx, remote.top.data)
        return 0
    if args.config:
        _write_raw(ctx, remote.config_bytes)
        return 0
    doc = _inspect_doc(remote, remote.reference.repository, remote.tags)
    from reconciler.images.trust import signature_status

    doc["Signatures"] = [signature_status(store, remote.reference, remote.top.digest)]
    if remote.index is not None:
        doc["Platforms"] = [
            {"Platform": str(normalize(d.platform)) if d.platform else "", "Digest": d.digest,
             "MediaType": d.media_type, "Size": d.size}
            for d in remote.index.manifests]
    json.dump(doc, ctx.out, indent=4)
    print(file=ctx.out)
    return 0


def cmd_rmi(args, ctx) -> int:
    from reconciler.errors import InputError, NotFoundError

    store = _store(args, ctx)
    targets = list(args.images)
    if args.all:
        targets = [rec.id for rec in store.records()]
    elif not targets:
        raise InputError("rmi needs at least one image name or id (or --all)")
    in_use = _images_in_use(ctx, store)
    busy = {t: in_use[i] for t in targets if (i := store.would_remove(t)) in in_use}
    if busy and not args.force:
        lines = [f"{t} is used by {', '.join(sorted(pods))}" for t, pods in busy.items()]
        raise InputError("image in use: " + "; ".join(lines) + " (remove those pods first, or use --force: "
                         "running containers keep their file systems)")
    missing = []
    for target in targets:
        names, removed = store.untag_or_remove(target)
        if not names and not removed:
            missing.append(target)
            continue
        for n in names:
            print(f"Untagged: {n}", file=ctx.out)
        if removed:
            print(f"Deleted: {removed.split(':', 1)[1]}", file=ctx.out)
    if missing and not args.force:
        raise NotFoundError(f"image not known: {', '.join(missing)}")
    return 0


def _images_in_use(ctx, store=None) -> dict[str, set[str]]:
    """image id → the pods whose containers or image volumes use it."""
    from reconciler.runtime.driver import RuncRuntime
    from reconciler.storage.snapshots import OverlaySnapshotter

    used: dict[str, set[str]] = {}
    pods: dict[str, str] = {}  # pod uid → "<namespace>/<name>"
    for c in RuncRuntime(ctx.paths).list_containers():
        pods[c.pod_uid] = c.pod
        if c.image_id:
            used.setdefault(c.image_id, set()).add(c.pod)
    snapshots = OverlaySnapshotter(ctx.paths, store if store is not None else _store(None, ctx))
    for s in snapshots.list_snapshots():
        uid = _volume_snapshot_pod(s.key)
        if uid in pods and (image_id := snapshots.snapshot_image(s.key)):
            used.setdefault(image_id, set()).add(pods[uid])
    return used


def _volume_snapshot_pod(key: str) -> str:
    """The pod uid of an image volume's snapshot key ("<uid>.vol_<volume>"), "" for a container's."""
    uid, sep, _ = key.partition(".vol_")
    return uid if sep else ""


def cmd_tag(args, ctx) -> int:
    store = _store(args, ctx)
    for target in args.target:
        store.tag_image(args.source, target)
    return 0


def cmd_prune(args, ctx) -> int:
    """Blobs no image references, images without a name (--dangling) that no container uses,
    and unpacked layers that no image and no container snapshot uses. Under the apply lock, so
    that an `up` in progress cannot start a container on something being removed."""
    from reconciler.runtime.driver import RuncRuntime
    from reconciler.state import ApplyLock
    from reconciler.storage.snapshots import OverlaySnapshotter

    store = _store(args, ctx)
    with ApplyLock(ctx.paths.lock_file):
        in_use = set(_images_in_use(ctx, store))
        result = store.prune(dangling=args.dangling, keep=in_use)
        snapshots = OverlaySnapshotter(ctx.paths, store)
        # A snapshot is a container's root file system, or an image volume of a pod: one whose
        # container (or pod) is gone is a leftover (the apply lock is held, so no pod is being
        # created right now).
        live = RuncRuntime(ctx.paths).list_containers()
        containers = {c.id for c in live}
        pods = {c.pod_uid for c in live}
        orphans = [s.key for s in snapshots.list_snapshots()
                   if s.key not in containers and _volume_snapshot_pod(s.key) not in pods]
        for key in orphans:
            snapshots.remove(key)
        layers = snapshots.gc(store.list_images())
    for image_id in result.images_removed:
        print(f"Deleted: {image_id.split(':', 1)[1]}", file=ctx.out)
    print(f"Removed {result.blobs_removed} blobs, freed {_size(result.bytes_freed)}; "
          f"removed {len(layers)} unpacked layer{'s' if len(layers) != 1 else ''} and "
          f"{len(orphans)} snapshot{'s' if len(orphans) != 1 else ''} without a container", file=ctx.out)
    return 0


def cmd_login(args, ctx) -> int:
    from reconciler.errors import InputError
    from reconciler.images.login import login

    username, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise InputError("--password and --password-stdin cannot be used together")
        password = sys.stdin.readline().rstrip("\r\n")
        if not username:
            raise InputError("--password-stdin needs --username")
    interactive = sys.stdin.isatty()
    if not username:
        if not interactive:
            raise InputError("give --username (no terminal to ask on)")
        username = input("Username: ").strip()
    if not password:
        if not interactive:
            raise InputError("give --password-stdin (no terminal to ask on)")
        import getpass

        password = getpass.getpass("Password: ")
    use_timeouts(args)
    path = login(args.registry, username, password, auth_file=args.authfile, tls_verify=args.tls_verify,
                 certs_dir=args.cert_dir)
    print(f"Login Succeeded! (credentials saved in {path})", file=ctx.out)
    return 0


def cmd_logout(args, ctx) -> int:
    from reconciler.images.login import logout

    if args.all and args.registry:
        from reconciler.errors import InputError

        raise InputError("give a registry or --all, not both")
    removed = logout(args.registry, auth_file=args.authfile, all_registries=args.all)
    if args.all:
        print(f"Removed login credentials for {len(removed)} registries", file=ctx.out)
    else:
        print(f"Removed login credentials for {args.registry}", file=ctx.out)
    return 0


def _inspect_location(args, ctx, store, location: str) -> int:
    """``skopeo inspect`` of a layout or an archive: read and verified, nothing stored."""
    from reconciler.images.transports import inspect_location

    image = inspect_location(store, location, platform=getattr(args, "platform", None))
    if args.raw:
        _write_raw(ctx, image.top.data)
        return 0
    if args.config:
        _write_raw(ctx, image.config_bytes)
        return 0
    doc = _inspect_doc(image, image.names[0] if image.names else "", image.names)
    json.dump(doc, ctx.out, indent=4)
    print(file=ctx.out)
    return 0


def _copy_opts(args):
    from reconciler.images.transports import DEFAULT_CHUNK, CopyOptions

    compression = args.dest_compress_format
    if args.dest_compress is False:
        if compression:
            from reconciler.errors import InputError

            raise InputError("--dest-compress=false and --dest-compress-format contradict each other")
        compression = "none"
    elif args.dest_compress is True and not compression:
        compression = "gzip"
    return CopyOptions(all_platforms=args.all, platform=args.platform, compression=compression, format=args.format,
                       chunk_size=args.chunk_size or DEFAULT_CHUNK)


def _sign_opts(args):
    from reconciler.images.signing import SignOptions

    return SignOptions(getattr(args, "sign_by", None) or "", getattr(args, "sign_by_sigstore_private_key", None) or "",
                       getattr(args, "sign_passphrase_file", None) or "")


def _creds(text, location):
    from reconciler.images.reference import parse_reference
    from reconciler.images.transports import parse_creds

    if not text:
        return ()
    if location.transport != "docker":
        from reconciler.errors import InputError

        raise InputError(f"credentials were given for {location}, which is not a registry")
    return (parse_creds(text, parse_reference(location.path).domain),)


def _run_copy(args, ctx, source: str, destination: str) -> int:
    from pathlib import Path

    from reconciler.fsutil import atomic_write
    from reconciler.images.transports import copy_image, parse_location

    src, dest = parse_location(source), parse_location(destination)
    opts = _copy_opts(args)
    sign = _sign_opts(args)
    signed_ref = sign.check(str(dest)) if sign else None  # before anything is copied
    store = _store(args, ctx, quiet=args.quiet)
    try:
        dest_creds = _creds(args.dest_creds, dest)
        result = copy_image(store, src, dest, options=opts, src_credentials=_creds(args.src_creds, src),
                            dest_credentials=dest_creds)
        if signed_ref is not None:
            from reconciler.images.signing import sign_pushed

            where = sign_pushed(store, sign, signed_ref, result.digest, dest_creds)
            if not args.quiet:
                print(f"signed {result.digest}: {where}", file=ctx.err)
    finally:
        store.close()
    if args.digestfile:
        atomic_write(Path(args.digestfile), result.digest + "\n")
    return 0


def cmd_copy(args, ctx) -> int:
    return _run_copy(args, ctx, args.source, args.destination)


def cmd_push(args, ctx) -> int:
    from reconciler.errors import InputError

    image = args.image
    if "://" in image or image.startswith(("oci:", "oci-archive:", "docker-archive:")):
        raise InputError(f"push takes a local image, not {image!r} (use `podplay copy` between other locations)")
    if image.startswith("podplay:"):
        image = image[len("podplay:"):]
    dest = args.destination or image
    if not dest.startswith(("docker://", "oci:", "oci-archive:", "docker-archive:", "podplay:")):
        dest = f"docker://{dest}"  # podman push's DESTINATION is a registry reference
    return _run_copy(args, ctx, f"podplay:{image}", dest)


def cmd_save(args, ctx) -> int:
    from reconciler.errors import InputError
    from reconciler.images.transports import save_images

    output = args.output
    stream = None
    if output in (None, "-"):
        if ctx.out.isatty():
            raise InputError("refusing to write an archive to a terminal: give -o FILE or redirect the output")
        ctx.out.flush()
        stream = getattr(ctx.out, "buffer", ctx.out)
        output = None
    store = _store(args, ctx, quiet=args.quiet or stream is not None and not ctx.err.isatty())
    try:
        save_images(store, args.images, output, format=args.format, stream=stream)
    finally:
        store.close()
    return 0


def cmd_load(args, ctx) -> int:
    from reconciler.errors import InputError
    from reconciler.images.transports import load_images

    path = args.input
    stream = None
    if path in (None, "-"):
        if sys.stdin.isatty():
            raise InputError("give -i FILE (standard input is a terminal)")
        stream, path = sys.stdin.buffer, None
    store = _store(args, ctx, quiet=args.quiet)
    try:
        loaded = load_images(store, path, stream=stream)
    finally:
        store.close()
    for image in loaded:
        for name in image.names or (image.image_id,):
            print(name if args.quiet else f"Loaded image: {name}", file=ctx.out)
    return 0


def cmd_import(args, ctx) -> int:
    from reconciler.errors import InputError
    from reconciler.images.importer import import_rootfs
    from reconciler.images.platform import Platform, parse_platform

    store = _store(args, ctx)
    platform = parse_platform(args.platform) if args.platform else None
    if args.arch or args.os or args.variant:
        base = platform or store.platform
        platform = Platform(args.os or base.os or "linux", args.arch or base.architecture,
                            args.variant if args.variant is not None else ("" if args.arch else base.variant))
    stream = None
    path = args.file
    if path == "-":
        if sys.stdin.isatty():
            raise InputError("import - reads the tarball from standard input, which is a terminal")
        stream, path = sys.stdin.buffer, None
    try:
        rec = import_rootfs(store, path, args.name, stream=stream, changes=args.change, message=args.message,
                            platform=platform)
    finally:
        store.close()
    print(rec.id.split(":", 1)[1], file=ctx.out)
    return 0


def cmd_trust_show(args, ctx) -> int:
    from reconciler.images.policy import load_policy
    from reconciler.images.signatures import load_registries_d

    policy = load_policy()
    if args.raw:
        try:
            from pathlib import Path

            ctx.out.write(Path(policy.source).read_text(encoding="utf-8"))
        except OSError:
            print(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}, indent=4), file=ctx.out)
        return 0
    rd = load_registries_d()
    rows = []
    for scope in policy.entries():
        lookaside = ""
        if scope.transport == "docker" and scope.scope and not scope.scope.startswith("*."):
            from reconciler.images.reference import parse_reference

            lookaside = rd.lookaside(parse_reference(scope.scope, default_tag=""))
        elif scope.transport in ("", "docker"):
            lookaside = rd.default.lookaside
        for req in scope.requirements:
            rows.append({
                "transport": scope.transport or "all",
                "scope": scope.scope or "default",
                "type": req.type,
                "keys": list(req.key_paths) + [f"keyData #{i + 1}" for i in range(len(req.key_data))],
                "identity": req.identity.describe() if req.type in ("signedBy", "sigstoreSigned") else "",
                "lookaside": lookaside if req.type == "signedBy" else "",
            })
    if args.output == "json":
        json.dump({"policy": policy.source, "registriesD": list(rd.sources), "scopes": rows}, ctx.out, indent=4)
        print(file=ctx.out)
        return 0
    print(f"policy: {policy.source}", file=ctx.out)
    header = ("TRANSPORT", "SCOPE", "TYPE", "KEYS", "IDENTITY", "LOOKASIDE")
    table = [header] + [(r["transport"], r["scope"], r["type"], ",".join(r["keys"]), r["identity"], r["lookaside"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=ctx.out)
    return 0


def cmd_delete(args, ctx) -> int:
    from reconciler.errors import InputError
    from reconciler.images.reference import parse_reference

    if not args.reference.startswith(DOCKER_PREFIX):
        raise InputError(f"delete {args.reference!r}: give a registry image as docker://REF "
                         "(local images are removed with podplay rmi)")
    ref = parse_reference(args.reference[len(DOCKER_PREFIX):])
    if ref.is_local:
        raise InputError(f"delete {args.reference}: localhost/ names local images; use podplay rmi")
    store = _store(args, ctx)
    try:
        # The registry named, never a mirror or a search registry: a delete is not a pull.
        client = store.client(ref.domain, ref.path)
        digest = ref.digest or client.head_manifest(ref.path, ref.tag)
        client.delete_manifest(ref.path, digest)
    finally:
        store.close()
    print(digest, file=ctx.out)
    return 0
