"""``podplay build``: a Containerfile and its context become an image in podplay's store.

Stages are split at FROM; only the stages the target needs are built (FROM <stage> and
``COPY --from=<stage>`` name the ones it needs). Instructions that only change the config
(ENV, LABEL, CMD…) add a history entry marked ``empty_layer``, as buildah does; COPY and ADD
write one layer each (reconciler.build.layer), straight from the context: nothing is unpacked
or mounted for them. The image goes into the same content store as pulled images (the same
blobs, the same records), so the storage driver's safe unpack is what every built layer meets
before a container uses it.

RUN (reconciler.build.run) runs in a one-shot runc container on an overlay snapshot of the
stage's layers; its upper directory becomes the layer.

``COPY --from`` reads an earlier stage (or an image) through a snapshot of it, mounted for
the copy only. COPY, ADD and RUN layers are cached (reconciler.build.cache): an unchanged
rebuild runs nothing and writes no layer.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.build.cache import LayerCache, content_digest
from reconciler.build.context import Context, IgnoreRules
from reconciler.build.layer import Entry, LowerTree, WrittenLayer, write_layer
from reconciler.build.parse import (
    BuildError,
    Containerfile,
    Instruction,
    exec_form,
    expand,
    key_values,
    parse_containerfile,
    valid_name,
    words,
)
from reconciler.errors import ImageError
from reconciler.images.blobio import sha256_digest, stream_into
from reconciler.images.manifest import OCI_CONFIG, OCI_MANIFEST, parse_config, parse_manifest
from reconciler.images.platform import Platform, parse_platform

DEFAULT_SHELL = ["/bin/sh", "-c"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PORT_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?$", re.IGNORECASE)
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}


@dataclass
class BuildOptions:
    context: str
    containerfile: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    platform: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    timestamp: int | None = None  # --timestamp or SOURCE_DATE_EPOCH: created times and mtimes clamped
    pull: str = "IfNotPresent"
    network: str = ""  # RUN's network: "" / none (isolated) or host


@dataclass
class StageState:
    name: str
    index: int
    doc: dict  # the image config document (config, rootfs, history, os, architecture…)
    layers: list[dict]  # manifest layer descriptors, in order
    lower: LowerTree | None
    layer_opener: Callable  # digest -> binary file of a layer blob
    args: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    cmd_set: bool = False  # a CMD in this stage (an ENTRYPOINT then keeps it)

    @property
    def config(self) -> dict:
        return self.doc.setdefault("config", {})

    def env(self) -> dict[str, str]:
        out = dict(self.args)
        for item in self.config.get("Env") or []:
            k, _, v = item.partition("=")
            out[k] = v
        return out


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    names: tuple[str, ...]
    manifest_digest: str


def find_containerfile(context: Path, given: str | None) -> Path:
    if given:
        p = Path(given)
        if not p.is_absolute() and not p.exists():
            p = context / given
        if not p.is_file():
            raise BuildError(f"no Containerfile at {given}")
        return p
    for name in ("Containerfile", "Dockerfile"):
        if (context / name).is_file():
            return context / name
    raise BuildError(f"no Containerfile or Dockerfile in {context} (give one with -f FILE)")


def split_stages(cf: Containerfile) -> tuple[list[Instruction], list[list[Instruction]]]:
    """(global ARGs before the first FROM, the stages each starting with its FROM)."""
    head: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in cf.instructions:
        if ins.command == "FROM":
            stages.append([ins])
        elif not stages:
            if ins.command != "ARG":
                raise BuildError("only ARG may come before the first FROM", cf.path, ins.line, ins.command)
            head.append(ins)
        else:
            stages[-1].append(ins)
    if not stages:
        raise BuildError("no FROM instruction", cf.path)
    return head, stages


class Builder:
    def __init__(self, store, opts: BuildOptions, log: Callable[[str], None] = lambda s: None,
                 output: Callable[[bytes], None] = lambda b: None):
        self.store = store  # a LocalImageStore
        self.opts = opts
        self.log = log
        self.output = output  # what RUN prints, as it comes
        self.context_dir = Path(opts.context)
        if not self.context_dir.is_dir():
            raise BuildError(f"the build context {opts.context} is not a directory")
        self.cf_path = find_containerfile(self.context_dir, opts.containerfile)
        try:
            text = self.cf_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BuildError(f"cannot read it: {exc}", str(self.cf_path)) from None
        self.cf = parse_containerfile(text, str(self.cf_path))
        self.context = Context(self.context_dir, IgnoreRules.load(self.context_dir, self.cf_path.name
                                                                  if self.cf_path.parent != self.context_dir
                                                                  else ""))
        host = store.platform
        self.platform = parse_platform(opts.platform) if opts.platform else \
            Platform(host.os or "linux", host.architecture, "" if host.architecture == "amd64" else host.variant)
        if opts.timestamp is None and os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
            opts.timestamp = int(os.environ["SOURCE_DATE_EPOCH"])
        self.created = (_dt.datetime.fromtimestamp(opts.timestamp, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                        if opts.timestamp is not None else
                        _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        self.used_args: set[str] = set()
        self._tmpdirs: list[str] = []  # ADD's spooled archive members, removed by build_image
        self.cache = LayerCache(store, Path(store.paths.root) / "build-cache", enabled=not opts.no_cache,
                                salt=str(opts.timestamp))
        self.stage_names: dict[str, int] = {}
        self.built: dict[int, StageState] = {}
        self.step = 0
        self.total = 0

    # --- the build ----------------------------------------------------------------------

    def predefined(self, platform: Platform) -> dict[str, str]:
        from reconciler.images.platform import host_platform

        host = host_platform()
        return {"TARGETPLATFORM": str(platform), "TARGETOS": platform.os or "linux",
                "TARGETARCH": platform.architecture, "TARGETVARIANT": platform.variant,
                "BUILDPLATFORM": str(host), "BUILDOS": host.os or "linux", "BUILDARCH": host.architecture,
                "BUILDVARIANT": host.variant}

    def build(self) -> BuildResult:
        head, stages = split_stages(self.cf)
        global_args: dict[str, str] = dict(self.predefined(self.platform))
        for ins in head:
            self._arg(ins, global_args, global_args)
        names: dict[str, int] = {}
        froms: list[tuple[str, str]] = []
        for i, stage in enumerate(stages):
            base, alias = self._from_words(stage[0], global_args)
            froms.append((base, alias))
            if alias:
                if alias.lower() in names:
                    raise BuildError(f"stage name {alias!r} is used twice", self.cf.path, stage[0].line, "FROM")
                names[alias.lower()] = i
        target = len(stages) - 1
        if self.opts.target:
            if self.opts.target.lower() not in names:
                raise BuildError(f"--target {self.opts.target!r}: no stage has that name "
                                 f"(stages: {', '.join(a for _, a in froms if a) or 'none named'})", self.cf.path)
            target = names[self.opts.target.lower()]
        needed = self._needed(stages, froms, names, target, global_args)
        self.total = sum(len(stages[i]) for i in needed)
        self.stage_names = names
        built = self.built
        for i in sorted(needed):
            built[i] = self._stage(i, stages[i], froms[i], names, built, global_args)
        unused = set(self.opts.build_args) - self.used_args
        if unused:
            self.log(f"[Warning] one or more build args were not consumed: {sorted(unused)}")
        return self._commit(built[target])

    def _needed(self, stages, froms, names, target: int, global_args) -> set[int]:
        needed: set[int] = set()
        todo = [target]
        while todo:
            i = todo.pop()
            if i in needed:
                continue
            needed.add(i)
            base = froms[i][0].lower()
            if base in names and names[base] < i:
                todo.append(names[base])
            for ins in stages[i]:
                src = ins.flag("from") if ins.command == "COPY" else None
                if src is not None:
                    ref = expand(src, global_args, self.cf.escape).lower()
                    if ref in names:
                        todo.append(names[ref])
                    elif ref.isdigit() and int(ref) < i:
                        todo.append(int(ref))
        return needed

    def _from_words(self, ins: Instruction, global_args: dict[str, str]) -> tuple[str, str]:
        try:
            ws = words(ins.args, global_args, self.cf.escape)
        except ValueError as exc:
            raise BuildError(str(exc), self.cf.path, ins.line, "FROM") from None
        if len(ws) == 1:
            return ws[0], ""
        if len(ws) == 3 and ws[1].lower() == "as":
            if not re.match(r"^[a-zA-Z][a-zA-Z0-9_.-]*$", ws[2]):
                raise BuildError(f"stage name {ws[2]!r} must start with a letter and contain only letters, "
                                 "digits, '_', '.' and '-'", self.cf.path, ins.line, "FROM")
            return ws[0], ws[2]
        raise BuildError("expected FROM IMAGE [AS NAME]", self.cf.path, ins.line, "FROM")

    def _progress(self, ins: Instruction) -> None:
        self.step += 1
        self.log(f"STEP {self.step}/{self.total}: {ins.original}")

    def _stage(self, index: int, stage: list[Instruction], from_: tuple[str, str], names: dict[str, int],
               built: dict[int, StageState], global_args: dict[str, str]) -> StageState:
        base, alias = from_
        ins = stage[0]
        self._progress(ins)
        platform = self.platform
        pflag = ins.flag("platform")
        if pflag:
            try:
                platform = parse_platform(expand(pflag, global_args, self.cf.escape))
            except (ValueError, ImageError) as exc:
                raise BuildError(f"--platform: {exc}", self.cf.path, ins.line, "FROM") from None
        state = self._base(base, names, built, platform, ins, index)
        env = state.config.get("Env") or []
        if not any(e.startswith("PATH=") for e in env):
            # buildah (and BuildKit) give an image without PATH the default one.
            state.config["Env"] = [f"PATH={DEFAULT_PATH}", *env]
        state.name = alias or str(index)
        state.args = {}
        for ins in stage[1:]:
            self._progress(ins)
            self._instruction(state, ins, global_args)
        return state

    def _base(self, base: str, names, built, platform: Platform, ins: Instruction, index: int) -> StageState:
        key = base.lower()
        if key in names and names[key] < index:
            prev = built[names[key]]
            return StageState("", index, copy.deepcopy(prev.doc), list(prev.layers),
                              prev.lower.copy() if prev.lower else None, prev.layer_opener, {}, prev.platform)
        if key in names:
            raise BuildError(f"stage {base!r} is defined later in the file", self.cf.path, ins.line, "FROM")
        if key == "scratch":
            doc = {"architecture": platform.architecture, "os": platform.os or "linux", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
            if platform.variant:
                doc["variant"] = platform.variant
            return StageState("", index, doc, [], LowerTree(), self.store.open_blob, {}, platform)
        try:
            policy = {"always": "Always", "never": "Never"}.get(self.opts.pull, "IfNotPresent")
            info = self.store.get_image(base) if policy == "IfNotPresent" else None
            if info is None:
                info = self.store.ensure_image(base, policy)
        except ImageError as exc:
            what = "the base image" if ins.command == "FROM" else f"image {base}"
            raise BuildError(f"cannot get {what}: {exc}", self.cf.path, ins.line, ins.command) from None
        manifest = parse_manifest(self.store.manifest_bytes(info.manifest_digest), where=f"image {base}")
        doc = json.loads(self.store.config_bytes(info.id))
        doc.setdefault("config", {})
        doc.setdefault("history", [])
        layers = [d.to_json() for d in manifest.layers]
        return StageState("", index, doc, layers, None, self.store.open_blob, {},
                          Platform(doc.get("os", "linux"), doc.get("architecture", ""), doc.get("variant", "")))

    def lower(self, state: StageState) -> LowerTree:
        """The tree of the stage's layers so far (read once from their tar headers)."""
        if state.lower is None:
            from reconciler.images.blobio import decompressor, detect_compression

            tree = LowerTree()
            for desc in state.layers:
                with state.layer_opener(desc["digest"]) as raw:
                    head = raw.read(8)
                    raw.seek(0)
                    with decompressor(detect_compression(head), raw) as plain:
                        tree.apply_tar(plain)
            state.lower = tree
        return state.lower

    # --- instructions -------------------------------------------------------------------

    def _instruction(self, state: StageState, ins: Instruction, global_args: dict[str, str]) -> None:
        handler = getattr(self, "_i_" + ins.command.lower(), None)
        if handler is None:
            raise BuildError("is not supported yet by podplay build", self.cf.path, ins.line, ins.command)
        try:
            handler(state, ins, global_args)
        except ValueError as exc:
            raise BuildError(str(exc), self.cf.path, ins.line, ins.command) from None

    def _fail(self, ins: Instruction, message: str) -> BuildError:
        return BuildError(message, self.cf.path, ins.line, ins.command)

    def _history(self, state: StageState, ins: Instruction, text: str, *, empty: bool = True,
                 nop: bool = True) -> None:
        entry = {"created": self.created, "created_by": f"/bin/sh -c #(nop) {text}" if nop else text}
        if empty:
            entry["empty_layer"] = True
        state.doc.setdefault("history", []).append(entry)

    def _arg(self, ins: Instruction, scope: dict[str, str], global_args: dict[str, str]) -> None:
        for word in words(ins.args, scope, self.cf.escape):
            name, sep, default = word.partition("=")
            if not valid_name(name):
                raise BuildError(f"{name!r} is not a valid argument name", self.cf.path, ins.line, "ARG")
            if name in self.opts.build_args:
                scope[name] = self.opts.build_args[name]
                self.used_args.add(name)
            elif sep:
                scope[name] = default
            elif name in global_args:
                scope[name] = global_args[name]
            else:
                scope.pop(name, None)

    def _i_arg(self, state: StageState, ins: Instruction, global_args) -> None:
        self._arg(ins, state.args, global_args)
        # buildah records the names only (a value may be a secret given with --build-arg).
        names = [w.partition("=")[0] for w in words(ins.args, {}, self.cf.escape, expand=False)]
        self._history(state, ins, "ARG " + " ".join(names))

    def _i_env(self, state: StageState, ins: Instruction, _g) -> None:
        pairs = key_values(ins.args, state.env(), self.cf.escape)
        if not pairs:
            raise self._fail(ins, "needs KEY=VALUE")
        env = list(state.config.get("Env") or [])
        for key, value in pairs:
            if not valid_name(key) and not re.match(r"^[^=\s]+$", key):
                raise self._fail(ins, f"{key!r} is not a variable name")
            env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
        state.config["Env"] = env
        self._history(state, ins, "ENV " + ins.args)

    def _i_label(self, state: StageState, ins: Instruction, _g) -> None:
        pairs = key_values(ins.args, state.env(), self.cf.escape)
        if not pairs:
            raise self._fail(ins, "needs KEY=VALUE")
        state.config["Labels"] = {**(state.config.get("Labels") or {}), **dict(pairs)}
        self._history(state, ins, "LABEL " + ins.args)

    def _i_maintainer(self, state: StageState, ins: Instruction, _g) -> None:
        state.doc["author"] = ins.args
        self._history(state, ins, "MAINTAINER " + ins.args)

    def _command(self, state: StageState, ins: Instruction, key: str) -> list[str]:
        form = ins.json
        if form is None:
            form = list(state.config.get("Shell") or DEFAULT_SHELL) + [ins.args]
        state.config[key] = form
        return form

    def _i_cmd(self, state: StageState, ins: Instruction, _g) -> None:
        self._command(state, ins, "Cmd")
        state.cmd_set = True
        self._history(state, ins, "CMD " + ins.args)

    def _i_entrypoint(self, state: StageState, ins: Instruction, _g) -> None:
        self._command(state, ins, "Entrypoint")
        # Docker: an ENTRYPOINT resets a CMD inherited from the base image (not one set in this stage).
        if not state.cmd_set:
            state.config.pop("Cmd", None)
        self._history(state, ins, "ENTRYPOINT " + ins.args)

    def _i_shell(self, state: StageState, ins: Instruction, _g) -> None:
        form = ins.json
        if not form:
            raise self._fail(ins, 'takes the exec form, a JSON array: SHELL ["/bin/bash", "-c"]')
        state.config["Shell"] = form
        self._history(state, ins, "SHELL " + ins.args)

    def _i_workdir(self, state: StageState, ins: Instruction, _g) -> None:
        path = expand(ins.args.strip(), state.env(), self.cf.escape)
        if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'":
            path = path[1:-1]
        base = state.config.get("WorkingDir") or "/"
        state.config["WorkingDir"] = posixpath.normpath(posixpath.join(base, path))
        if state.config["WorkingDir"].startswith("//"):
            state.config["WorkingDir"] = "/" + state.config["WorkingDir"].lstrip("/")
        self._history(state, ins, "WORKDIR " + ins.args)

    def _i_user(self, state: StageState, ins: Instruction, _g) -> None:
        ws = words(ins.args, state.env(), self.cf.escape)
        if len(ws) != 1:
            raise self._fail(ins, "takes one USER[:GROUP]")
        state.config["User"] = ws[0]
        self._history(state, ins, "USER " + ins.args)

    def _i_expose(self, state: StageState, ins: Instruction, _g) -> None:
        ports = dict(state.config.get("ExposedPorts") or {})
        for word in words(ins.args, state.env(), self.cf.escape):
            m = _PORT_RE.match(word)
            if not m or not 1 <= int(m.group(1)) <= 65535 or (
                    m.group(2) and not int(m.group(1)) <= int(m.group(2)) <= 65535):
                raise self._fail(ins, f"{word!r} is not PORT[-PORT][/tcp|udp|sctp]")
            for port in range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1):
                ports[f"{port}/{(m.group(3) or 'tcp').lower()}"] = {}
        state.config["ExposedPorts"] = ports
        self._history(state, ins, "EXPOSE " + ins.args)

    def _i_volume(self, state: StageState, ins: Instruction, _g) -> None:
        paths = ins.json
        if paths is None:
            paths = words(ins.args, state.env(), self.cf.escape)
        volumes = dict(state.config.get("Volumes") or {})
        for p in paths:
            if not p:
                raise self._fail(ins, "a volume path is empty")
            volumes[posixpath.join(state.config.get("WorkingDir") or "/", p)] = {}
        state.config["Volumes"] = volumes
        self._history(state, ins, "VOLUME " + ins.args)

    def _i_stopsignal(self, state: StageState, ins: Instruction, _g) -> None:
        sig = expand(ins.args.strip(), state.env(), self.cf.escape)
        if not re.match(r"^(?:SIG)?[A-Z][A-Z0-9]*(?:[+-]\d+)?$|^\d{1,2}$", sig):
            raise self._fail(ins, f"{sig!r} is not a signal name or number (e.g. SIGTERM, 15)")
        state.config["StopSignal"] = sig
        self._history(state, ins, "STOPSIGNAL " + ins.args)

    def _i_onbuild(self, state: StageState, ins: Instruction, _g) -> None:
        word = ins.args.split(None, 1)[0].upper()
        if word in ("ONBUILD", "FROM", "MAINTAINER"):
            raise self._fail(ins, f"ONBUILD {word} is not allowed")
        state.config["OnBuild"] = list(state.config.get("OnBuild") or []) + [ins.args]
        self._history(state, ins, "ONBUILD " + ins.args)

    def _i_healthcheck(self, state: StageState, ins: Instruction, _g) -> None:
        text = ins.args.strip()
        if text.upper() == "NONE":
            state.config["Healthcheck"] = {"Test": ["NONE"]}
            self._history(state, ins, "HEALTHCHECK NONE")
            return
        word, _, rest = text.partition(" ")
        if word.upper() != "CMD" or not rest.strip():
            raise self._fail(ins, "expected HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE")
        form = exec_form(rest)
        hc: dict = {"Test": ["CMD", *form] if form is not None else ["CMD-SHELL", rest.strip()]}
        for name, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod"),
                          ("start-interval", "StartInterval")):
            value = ins.flag(name)
            if value is not None:
                hc[key] = self._duration(ins, name, value)
        retries = ins.flag("retries")
        if retries is not None:
            if not retries.isdigit():
                raise self._fail(ins, f"--retries={retries!r} is not a number")
            hc["Retries"] = int(retries)
        state.config["Healthcheck"] = hc
        self._history(state, ins, "HEALTHCHECK " + text)

    def _duration(self, ins: Instruction, name: str, value: str) -> int:
        total, pos = 0.0, 0
        for m in _DURATION_RE.finditer(value):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_NS[m.group(2)]
            pos = m.end()
        if pos != len(value) or not value:
            raise self._fail(ins, f"--{name}={value!r} is not a duration (e.g. 30s, 1m30s)")
        return int(total)

    def _i_run(self, state: StageState, ins: Instruction, _g) -> None:
        from reconciler.build.run import run_step

        if ins.flag("mount") is not None or ins.flag("security") is not None:
            raise self._fail(ins, "--mount and --security are not supported by podplay build")
        network = ins.flag("network") or self.opts.network
        if network not in ("", "none", "host", "default", "private"):
            raise self._fail(ins, f"--network={network}: podplay build runs RUN with no network (none) or "
                                  "the host's (host)")
        form = ins.json
        if form is not None:
            argv = form
        else:
            shell = list(state.config.get("Shell") or DEFAULT_SHELL)
            text = ins.args
            if ins.heredocs and re.fullmatch(r"<<-?[\"']?\w+[\"']?", text.strip()):
                # RUN <<EOF … EOF: the heredoc is the script.
                text = ins.heredocs[0].content
            elif ins.heredocs:
                raise self._fail(ins, "a heredoc is supported as the whole script only (RUN <<EOF)")
            argv = shell + [text]
        env = dict(state.args)
        for item in state.config.get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        env.setdefault("PATH", DEFAULT_PATH)
        env_list = [f"{k}={v}" for k, v in env.items()]
        key = self.cache.key(state, ["RUN", network, *argv, *env_list])
        hit = self.cache.get(key)
        if hit is None:
            entries, written = run_step(self, state, ins, argv, env_list, network_host=network == "host")
            self.cache.put(key, written)
            self.lower(state).apply_entries(entries)
        else:
            self.log("--> Using cache " + key[:12])
            written = hit[0]
            state.lower = None  # read again from the layers when a COPY needs it
        args_prefix = f"|{len(state.args)} " + " ".join(f"{k}={v}" for k, v in state.args.items()) + " " \
            if state.args else ""
        text = args_prefix + (" ".join(form) if form is not None else " ".join(argv))
        self._add_layer(state, written, text, nop=False)

    # --- COPY and ADD -------------------------------------------------------------------

    def _i_copy(self, state: StageState, ins: Instruction, _g) -> None:
        self._copy(state, ins, add=False)

    def _i_add(self, state: StageState, ins: Instruction, _g) -> None:
        self._copy(state, ins, add=True)

    def _copy(self, state: StageState, ins: Instruction, *, add: bool) -> None:
        source = ins.flag("from")
        if source is None:
            self._copy_from(state, ins, add=add, from_label="")
            return
        if add:
            raise self._fail(ins, "ADD takes no --from (use COPY --from)")
        from reconciler.build.run import mounted_stage

        source = expand(source, state.env(), self.cf.escape)
        other = self._source_stage(state, ins, source)
        # What a stage holds is fixed by its layers: the key needs no look at its files, and a
        # hit needs no mount.
        key = self.cache.key(state, ["COPY --from", json.dumps(other.doc.get("rootfs", {}).get("diff_ids", [])),
                                     ins.original])
        hit = self.cache.get(key)
        if hit is not None:
            self.log("--> Using cache " + key[:12])
            state.lower = None
            self._add_layer(state, hit[0], hit[1])
            return
        saved = self.context
        with mounted_stage(self, other, ins) as rootfs:
            self.context = Context(rootfs)
            try:
                self._copy_from(state, ins, add=False, from_label=source, cache_key=key)
            finally:
                self.context = saved

    def _source_stage(self, state: StageState, ins: Instruction, source: str) -> StageState:
        key = source.lower()
        index = self.stage_names.get(key)
        if index is None and source.isdigit():
            index = int(source)
        if index is not None:
            if index >= state.index or index not in self.built:
                raise self._fail(ins, f"--from={source}: a stage can copy only from an earlier stage")
            return self.built[index]
        return self._base(source, {}, {}, self.platform, ins, state.index)

    def _copy_from(self, state: StageState, ins: Instruction, *, add: bool, from_label: str,
                   cache_key: str = "") -> None:
        env = state.env()
        form = ins.json
        if form is not None:
            args = [expand(a, env, self.cf.escape) for a in form]
        else:
            args = words(ins.args, env, self.cf.escape)
        if len(args) < 2:
            raise self._fail(ins, "needs at least one source and a destination")
        *sources, dest = args
        uid, gid = self._chown(state, ins, env)
        mode = self._chmod(ins)
        workdir = state.config.get("WorkingDir") or "/"
        dest_abs = posixpath.join(workdir, dest)
        lower = self.lower(state)
        heredocs = {h.name: h for h in ins.heredocs}
        entries: dict[str, Entry] = {}
        many = len(sources) > 1 or any(any(c in s for c in "*?[") for s in sources)
        as_dir = dest.endswith("/") or many
        target = lower.resolve(dest_abs.lstrip("/"))
        node = lower.get(target)
        if node is not None and node.type == tarfile.DIRTYPE:
            as_dir = True
        elif many and node is not None:
            raise self._fail(ins, f"copying several sources needs a directory destination ending in '/', "
                                  f"and {dest} is not a directory")
        matched_any = copied_dir = False
        for src in sources:
            hd = _heredoc_name(src)
            if hd is not None and hd in heredocs:
                name = posixpath.join(target, hd) if as_dir else target
                doc = heredocs[hd]
                # An unquoted terminator expands the build's variables in the content (BuildKit).
                body = expand(doc.content, env, self.cf.escape) if doc.expand else doc.content
                entries[name] = Entry(name, tarfile.REGTYPE, mode if mode is not None else 0o644, uid, gid,
                                      self._mtime(), data=body.encode())
                matched_any = True
                continue
            if re.match(r"^[a-z][a-z0-9+.-]*://", src):
                raise self._fail(ins, f"{src}: remote sources are not supported by podplay build "
                                      "(put the file in the context)")
            matches = self.context.glob(src)
            if not matches:
                raise self._fail(ins, f"{src}: no such file or directory in the build context "
                                      f"{self.context.root}" + (" (or it is excluded by "
                                                                f"{os.path.basename(self.context.ignore.source)})"
                                                                if self.context.ignore.source else ""))
            matched_any = True
            for rel in matches:
                st = os.lstat(self.context.path(rel))
                if stat.S_ISDIR(st.st_mode):
                    copied_dir = True
                    self._add_tree(entries, rel, target, uid, gid, mode, chown=ins.flag("chown") is not None)
                elif add and stat.S_ISREG(st.st_mode) and _is_archive(self.context, rel):
                    self._add_archive(ins, entries, rel, target, lower)
                else:
                    name = posixpath.join(target, posixpath.basename(rel)) if as_dir else target
                    self._add_one(entries, rel, st, name, uid, gid, mode, chown=ins.flag("chown") is not None)
        if not matched_any:
            raise self._fail(ins, "no source matched")
        self._parents(entries, lower)
        digest = content_digest(entries.values())
        kind = "multi" if len(sources) > 1 else ("dir" if copied_dir else "file")
        text = f"{ins.command} {kind}:{digest} in {dest} "
        key = cache_key or self.cache.key(state, [ins.command, *args, str(uid), str(gid), str(mode)], digest)
        hit = self.cache.get(key) if not cache_key else None
        if hit is None:
            written = self._write_layer(state, list(entries.values()))
            self.cache.put(key, written, text)
        else:
            self.log("--> Using cache " + key[:12])
            written = hit[0]
        lower.apply_entries(entries.values())
        self._add_layer(state, written, text)

    def _chown(self, state: StageState, ins: Instruction, env) -> tuple[int, int]:
        """--chown=USER[:GROUP], by number or by name; names are looked up in the stage's own
        /etc/passwd and /etc/group, and a user alone takes its primary group (as buildah)."""
        value = ins.flag("chown")
        if value is None:
            return 0, 0
        value = expand(value, env, self.cf.escape)
        user, _, group = value.partition(":")
        if not user or (_ and not group):
            raise self._fail(ins, f"--chown={value}: expected USER[:GROUP]")
        if user.isdigit() and (not group or group.isdigit()):
            return int(user), int(group or user)
        from reconciler.build.run import mounted_stage, resolve_user

        with mounted_stage(self, state, ins) as rootfs:
            uid, gid, _extra = resolve_user(rootfs, self.lower(state), value, self, ins, what="--chown")
        return uid, gid

    def _chmod(self, ins: Instruction) -> int | None:
        value = ins.flag("chmod")
        if value is None:
            return None
        if not re.match(r"^[0-7]{3,4}$", value):
            raise self._fail(ins, f"--chmod={value}: expected an octal mode such as 0755")
        return int(value, 8)

    def _mtime(self) -> int:
        return self.opts.timestamp if self.opts.timestamp is not None else int(_dt.datetime.now(_dt.UTC).timestamp())

    def _add_one(self, entries, rel: str, st: os.stat_result, name: str, uid: int, gid: int, mode: int | None,
                 *, chown: bool, links: dict | None = None) -> None:
        perm = stat.S_IMODE(st.st_mode)
        if mode is not None:
            perm = mode
        e = Entry(name, tarfile.REGTYPE, perm, uid, gid, int(st.st_mtime))
        if stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if links is not None and st.st_nlink > 1 and key in links:
                e.type, e.linkname = tarfile.LNKTYPE, links[key]
            else:
                if links is not None and st.st_nlink > 1:
                    links[key] = name
                e.size = st.st_size
                e.opener = (lambda r=rel: self.context.open(r))
        elif stat.S_ISLNK(st.st_mode):
            e.type, e.linkname = tarfile.SYMTYPE, os.readlink(self.context.path(rel))
            e.mode = 0o777
        elif stat.S_ISDIR(st.st_mode):
            e.type = tarfile.DIRTYPE
        else:
            # Devices, FIFOs and sockets in a context are not copied (docker refuses sockets too).
            return
        entries[name] = e

    def _add_tree(self, entries, rel: str, target: str, uid, gid, mode, *, chown: bool) -> None:
        links: dict = {}
        for path, st in self.context.walk(rel):
            sub = path[len(rel):].lstrip("/") if rel else path
            name = posixpath.join(target, sub) if sub else target
            if not name:
                continue  # the root itself is not an entry
            self._add_one(entries, path, st, name, uid, gid, mode, chown=chown, links=links)

    def _add_archive(self, ins: Instruction, entries, rel: str, target: str, lower: LowerTree) -> None:
        """A local archive's entries, placed below ``target``: ``..`` never leaves it, a path
        through the image's own symlinks lands where the link points inside the image (as the
        unpacker of a container would see it), and an entry below a symlink the archive itself
        made is refused (an archive that writes through its own link is a breakout attempt)."""
        from reconciler.images.blobio import decompression_errors, decompressor, detect_compression

        links: set[str] = set()

        data_dir = tempfile.mkdtemp(dir=self.store.store.ingest_dir)
        self._tmpdirs.append(data_dir)
        try:
            with self.context.open(rel) as raw:
                head = raw.read(8)
                raw.seek(0)
                with decompressor(detect_compression(head), raw) as plain, \
                        tarfile.open(fileobj=plain, mode="r|") as tar:
                    for n, info in enumerate(tar):
                        clean = posixpath.normpath("/" + info.name).lstrip("/")
                        if clean in ("", "."):
                            continue
                        parts = clean.split("/")
                        through = next(("/".join(parts[:i]) for i in range(1, len(parts))
                                        if "/".join(parts[:i]) in links), None)
                        if through is not None:
                            raise self._fail(ins, f"{rel}: {info.name} is below {through}, a symbolic link "
                                                  "the archive made; refusing to write through it")
                        if info.issym():
                            links.add(clean)
                        parent = lower.resolve(posixpath.join(target, posixpath.dirname(clean)))
                        name = posixpath.join(parent, parts[-1]) if parent else parts[-1]
                        e = Entry(name, info.type if info.type != tarfile.AREGTYPE else tarfile.REGTYPE,
                                  info.mode, info.uid, info.gid, int(info.mtime), linkname=info.linkname,
                                  devmajor=info.devmajor, devminor=info.devminor)
                        if info.type == tarfile.LNKTYPE:
                            e.linkname = posixpath.join(target, posixpath.normpath("/" + info.linkname).lstrip("/"))
                        if info.isreg():
                            spool = os.path.join(data_dir, str(n))
                            with open(spool, "wb") as f, tar.extractfile(info) as src:  # type: ignore[union-attr]
                                shutil.copyfileobj(src, f)
                            e.size = info.size
                            e.opener = (lambda p=spool: open(p, "rb"))  # noqa: SIM115
                        elif info.type not in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE,
                                               tarfile.CHRTYPE, tarfile.BLKTYPE):
                            continue
                        entries[name] = e
        except (tarfile.TarError, *decompression_errors()) as exc:
            raise self._fail(ins, f"{rel}: cannot unpack the archive: {exc}") from None

    def _parents(self, entries: dict[str, Entry], lower: LowerTree) -> None:
        """Each entry's parent directories, as the layer below has them (a copy-up keeps their
        mode and owner), or new ones 0755 root."""
        for name in list(entries):
            parent = posixpath.dirname(name)
            while parent and parent not in entries:
                node = lower.get(parent)
                if node is not None and node.type == tarfile.DIRTYPE:
                    entries[parent] = Entry(parent, tarfile.DIRTYPE, node.mode, node.uid, node.gid, node.mtime)
                else:
                    entries[parent] = Entry(parent, tarfile.DIRTYPE, 0o755, 0, 0, self._mtime())
                parent = posixpath.dirname(parent)

    def _write_layer(self, state: StageState, entries: list[Entry]) -> WrittenLayer:
        content = self.store.store
        content.ingest_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=content.ingest_dir) as tmp:
            written = write_layer(entries, tmp, clamp=self.opts.timestamp)
            tmp.seek(0)
            with content.lease(), content.ingest(written.digest, written.size) as w:
                if w is not None:
                    stream_into(tmp, w)
        return written

    def _add_layer(self, state: StageState, written: WrittenLayer, text: str, *, nop: bool = True) -> None:
        state.layers.append({"mediaType": written.media_type, "digest": written.digest, "size": written.size})
        state.doc.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(
            written.diff_id)
        self._history(state, None, text, empty=False, nop=nop)  # type: ignore[arg-type]

    # --- the image ----------------------------------------------------------------------

    def _unchanged_image(self, names, doc: dict):
        if not names or self.opts.timestamp is not None:
            return None
        info = self.store.get_image(names[0].name)
        if info is None:
            return None
        try:
            old = json.loads(self.store.config_bytes(info.id))
        except (ImageError, ValueError):
            return None
        return info if _timeless(old) == _timeless(doc) else None

    def _commit(self, state: StageState) -> BuildResult:
        from reconciler.images.ingest import Ingested
        from reconciler.images.transports import _local_name

        try:
            names = [_local_name(t) for t in self.opts.tags]
        except ValueError as exc:
            raise BuildError(f"-t: {exc}") from None
        doc = state.doc
        if self.opts.labels:
            state.config["Labels"] = {**(state.config.get("Labels") or {}), **self.opts.labels}
        doc["created"] = self.created
        doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        same = self._unchanged_image(names, doc)
        if same is not None:
            # Everything but the times is what the name already has (an unchanged rebuild): keep
            # that image, as buildah does, so pods using it see no change.
            for n in names:
                self.store.tag_image(same.id, n.name)
                self.log(f"COMMIT {n.name} (unchanged)")
            return BuildResult(same.id, tuple(n.name for n in names), same.manifest_digest)
        config_bytes = json.dumps(doc, separators=(",", ":")).encode()
        config_digest = sha256_digest(config_bytes)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": state.layers}
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = sha256_digest(manifest_bytes)
        parsed = parse_manifest(manifest_bytes, where="built manifest")
        parsed_config = parse_config(config_bytes, len(state.layers), "built image config")
        content = self.store.store
        with content.lease():
            content.put_blob(config_bytes, config_digest)
            content.put_blob(manifest_bytes, manifest_digest)
        ingested = Ingested(manifest_digest, "", manifest_digest, OCI_MANIFEST, config_digest, parsed,  # type: ignore[arg-type]
                            parsed_config)
        self.store.record_image(names, ingested, resolved="")
        for n in names:
            self.log(f"COMMIT {n.name}")
        return BuildResult(config_digest, tuple(n.name for n in names), manifest_digest)


def _timeless(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k != "created"}
    out["history"] = [{k: v for k, v in h.items() if k != "created"} for h in doc.get("history", [])]
    return out


def _heredoc_name(src: str) -> str | None:
    m = re.match(r"^<<-?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?$", src)
    return m.group(1) if m else None


def _is_archive(context: Context, rel: str) -> bool:
    """ADD unpacks a local tar archive (plain or compressed), as docker does; other files are copied."""
    from reconciler.images.blobio import decompressor, detect_compression

    try:
        with context.open(rel) as f:
            head = f.read(8)
            f.seek(0)
            kind = detect_compression(head)
            with decompressor(kind, f) as plain:
                block = plain.read(512)
        return len(block) == 512 and block[257:262] == b"ustar"
    except Exception:  # noqa: BLE001 - anything unreadable as an archive is a plain file
        return False


def build_image(store, opts: BuildOptions, log: Callable[[str], None] = lambda s: None,
                output: Callable[[bytes], None] = lambda b: None) -> BuildResult:
    """Build ``opts`` into ``store``; temporary files are removed whatever happens."""
    builder = Builder(store, opts, log, output)
    try:
        return builder.build()
    finally:
        for d in builder._tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
