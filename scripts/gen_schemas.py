#!/usr/bin/env python3
"""Generate reconciler/schemas/*.json: one strict JSON Schema (Draft 2020-12) per supported kind.

The input is the official OpenAPI v2 document (`api/openapi-spec/swagger.json`) of ONE pinned
Kubernetes release, identified by tag and sha256; an input with any other sha256 is refused.
The output is data committed to the repo; regenerating it is one command:

    .venv/bin/python scripts/gen_schemas.py                  # cached or downloaded input
    .venv/bin/python scripts/gen_schemas.py --openapi FILE   # a local copy of the pinned file
    .venv/bin/python scripts/gen_schemas.py --check          # exit 1 if reconciler/schemas/ is stale

Where the input comes from, in order: `--openapi FILE`; the cache
(`$PODPLAY_OPENAPI_CACHE`, default `~/.cache/podplay/openapi`); a download of the official
file for the pinned tag. A verified input is stored in the cache, so a machine that cannot
reach GitHub can still regenerate (and the tests can compare) once someone hands it the file.

Machines that reach only package registries use a second pinned input that carries the same
definitions: the `kubernetes-validate` wheel from PyPI ships, for each release, the OpenAPI
definitions translated to JSON Schema (`<release>-local/_definitions.json`). Its translation is
undone here (`null` dropped from types, `$defs` refs back to `#/definitions/`, the int-or-string
`oneOf` back to its format, the enums it added removed, our overlay adds ours); from it the
generator writes byte-identical files, which is checked by the tests. `--kubernetes-validate
WHEEL`, else the cache, else `pip download` of the pinned version (sha256 verified).

What the schemas change relative to the OpenAPI, and why, is in reconciler/schemas/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

RELEASE = "v1.33.0"
INPUT_PATH = "api/openapi-spec/swagger.json"
INPUT_SHA256 = "2af5abf98554af1599e516f31f7f1698085e6faa12b816401f569c097b9f7ef6"
INPUT_URL = f"https://raw.githubusercontent.com/kubernetes/kubernetes/{RELEASE}/{INPUT_PATH}"
# The second input: the same release's definitions as the kubernetes-validate wheel ships them.
KV_VERSION = "1.37.0"
KV_WHEEL = f"kubernetes_validate-{KV_VERSION}-py3-none-any.whl"
KV_WHEEL_SHA256 = "85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"
KV_MEMBER = f"kubernetes_validate/kubernetes-json-schema/{RELEASE}-local/_definitions.json"
KV_MEMBER_SHA256 = "f8dfd6a0ac279b0997b0b95cbc1867afbe321a4aa0cd3e2df7e4b49ad8bae20b"
# Bump when the output for the same input changes (a new transformation, a new kind...).
GENERATOR_VERSION = 1

REPO = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO / "reconciler" / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

# kind -> (apiVersion, OpenAPI definition)
KINDS: dict[str, tuple[str, str]] = {
    "Pod": ("v1", "io.k8s.api.core.v1.Pod"),
    "Deployment": ("apps/v1", "io.k8s.api.apps.v1.Deployment"),
    "ConfigMap": ("v1", "io.k8s.api.core.v1.ConfigMap"),
    "Secret": ("v1", "io.k8s.api.core.v1.Secret"),
    "PersistentVolumeClaim": ("v1", "io.k8s.api.core.v1.PersistentVolumeClaim"),
    "Service": ("v1", "io.k8s.api.core.v1.Service"),
    "Namespace": ("v1", "io.k8s.api.core.v1.Namespace"),
    "Job": ("batch/v1", "io.k8s.api.batch.v1.Job"),
    "CronJob": ("batch/v1", "io.k8s.api.batch.v1.CronJob"),
    "DaemonSet": ("apps/v1", "io.k8s.api.apps.v1.DaemonSet"),
    "StatefulSet": ("apps/v1", "io.k8s.api.apps.v1.StatefulSet"),
    "ReplicaSet": ("apps/v1", "io.k8s.api.apps.v1.ReplicaSet"),
    "ReplicationController": ("v1", "io.k8s.api.core.v1.ReplicationController"),
}

# The checked-in OpenAPI files are produced with the OpenAPIEnums feature gate off, so they carry
# no `enum` at all, although a live API server (gate on by default) publishes these sets. We add
# them for closed-set fields whose values the API server validates exactly, so a typo is an error
# at its path. imagePullPolicy is left out on purpose: the loader checks it and explains podman's
# own values (`missing`, `newer`) in Kubernetes terms. (definition, property) -> allowed values;
# for a list property the values constrain its items.
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("io.k8s.api.core.v1.PodSpec", "restartPolicy"): ("Always", "Never", "OnFailure"),
    ("io.k8s.api.core.v1.PodSpec", "dnsPolicy"): ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): ("SCTP", "TCP", "UDP"),
    ("io.k8s.api.core.v1.Container", "terminationMessagePolicy"): ("FallbackToLogsOnError", "File"),
    ("io.k8s.api.core.v1.VolumeMount", "mountPropagation"): ("Bidirectional", "HostToContainer", "None"),
    ("io.k8s.api.core.v1.HTTPGetAction", "scheme"): ("HTTP", "HTTPS"),
    ("io.k8s.api.core.v1.HostPathVolumeSource", "type"): (
        "", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate", "Socket"),
    ("io.k8s.api.core.v1.SeccompProfile", "type"): ("Localhost", "RuntimeDefault", "Unconfined"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "accessModes"): (
        "ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "volumeMode"): ("Block", "Filesystem"),
    ("io.k8s.api.apps.v1.DeploymentStrategy", "type"): ("Recreate", "RollingUpdate"),
    ("io.k8s.api.core.v1.ServiceSpec", "type"): ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort"),
    ("io.k8s.api.core.v1.ServiceSpec", "sessionAffinity"): ("ClientIP", "None"),
    ("io.k8s.api.core.v1.ServiceSpec", "externalTrafficPolicy"): ("Cluster", "Local"),
    ("io.k8s.api.core.v1.ServiceSpec", "internalTrafficPolicy"): ("Cluster", "Local"),
    ("io.k8s.api.core.v1.ServiceSpec", "ipFamilyPolicy"): ("PreferDualStack", "RequireDualStack", "SingleStack"),
    ("io.k8s.api.core.v1.ServiceSpec", "ipFamilies"): ("IPv4", "IPv6"),
    ("io.k8s.api.core.v1.ServicePort", "protocol"): ("SCTP", "TCP", "UDP"),
    ("io.k8s.api.batch.v1.JobSpec", "completionMode"): ("Indexed", "NonIndexed"),
    ("io.k8s.api.batch.v1.JobSpec", "podReplacementPolicy"): ("Failed", "TerminatingOrFailed"),
    ("io.k8s.api.batch.v1.CronJobSpec", "concurrencyPolicy"): ("Allow", "Forbid", "Replace"),
    ("io.k8s.api.apps.v1.DaemonSetUpdateStrategy", "type"): ("OnDelete", "RollingUpdate"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "podManagementPolicy"): ("OrderedReady", "Parallel"),
    ("io.k8s.api.apps.v1.StatefulSetUpdateStrategy", "type"): ("OnDelete", "RollingUpdate"),
    ("io.k8s.api.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicy", "whenDeleted"): ("Delete", "Retain"),
    ("io.k8s.api.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicy", "whenScaled"): ("Delete", "Retain"),
}

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
TIME = "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# Formats that carry no check we want in the schema: base64 and timestamps are semantic checks
# for the loader; int-or-string is turned into a type list; double is just a number.
DROPPED_FORMATS = {"byte", "date-time", "double", "int-or-string"}
# Keywords of the input we understand; anything else stops the generator, so a new release that
# uses a new construct is noticed instead of silently loosening or tightening the schemas.
KNOWN_KEYWORDS = {"type", "$ref", "properties", "items", "additionalProperties", "required", "format",
                  "description"}


class InputError(Exception):
    """The OpenAPI input is missing, unreadable or not the pinned file."""


class SpecError(Exception):
    """The OpenAPI input uses something this generator does not know how to translate."""


# --- input ----------------------------------------------------------------------------------------

def cache_file() -> Path:
    root = os.environ.get("PODPLAY_OPENAPI_CACHE") or Path.home() / ".cache" / "podplay" / "openapi"
    return Path(root) / f"kubernetes-{RELEASE}-swagger.json"


def verify(data: bytes, origin: str) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if got != INPUT_SHA256:
        raise InputError(
            f"{origin}: sha256 {got} is not the pinned {INPUT_SHA256} of Kubernetes {RELEASE} "
            f"{INPUT_PATH}; refusing to generate from it (to move to another release, change RELEASE "
            f"and INPUT_SHA256 in {Path(__file__).name} together)")
    return data


def read_input(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return verify(data, str(path))


def cached_input() -> bytes | None:
    """The verified cached input, or None when there is no cached copy."""
    path = cache_file()
    if not path.exists():
        return None
    return read_input(path)


def store_in_cache(data: bytes) -> None:
    path = cache_file()
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def download() -> bytes:
    import requests

    try:
        resp = requests.get(INPUT_URL, timeout=60)
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise InputError(
            f"cannot download {INPUT_URL}: {exc}\n"
            f"get that file some other way and run: {Path(__file__).name} --openapi FILE") from None
    return verify(resp.content, INPUT_URL)


def obtain_input(openapi: Path | None, wheel: Path | None = None) -> bytes:
    """The OpenAPI v2 document to generate from: the official file when given or cached, else
    the definitions of the pinned kubernetes-validate wheel, turned back into OpenAPI form."""
    if wheel is not None:
        return from_kubernetes_validate(read_wheel(wheel))
    if openapi is not None:
        data = read_input(openapi)
        store_in_cache(data)
        return data
    data = cached_input()
    if data is not None:
        return data
    return from_kubernetes_validate(read_wheel(cached_wheel() or download_wheel()))


def wheel_cache_file() -> Path:
    return cache_file().with_name(KV_WHEEL)


def read_wheel(path: Path) -> bytes:
    """The pinned member of the pinned wheel, both verified."""
    import zipfile

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    got = hashlib.sha256(raw).hexdigest()
    if got != KV_WHEEL_SHA256:
        raise InputError(f"{path}: sha256 {got} is not the pinned {KV_WHEEL_SHA256} of {KV_WHEEL}")
    import io

    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        member = z.read(KV_MEMBER)
    if hashlib.sha256(member).hexdigest() != KV_MEMBER_SHA256:
        raise InputError(f"{path}: {KV_MEMBER} is not the pinned file")
    return member


def cached_wheel() -> Path | None:
    path = wheel_cache_file()
    return path if path.exists() else None


def download_wheel() -> Path:
    """`pip download` of the pinned wheel into the cache (PyPI is reachable where pip works)."""
    import subprocess
    import tempfile

    dest = wheel_cache_file()
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "-d", tmp, f"kubernetes-validate=={KV_VERSION}"], capture_output=True, text=True,
                              check=False)
        got = Path(tmp) / KV_WHEEL
        if done.returncode != 0 or not got.exists():
            raise InputError(f"cannot download kubernetes-validate {KV_VERSION}: {done.stderr.strip()}")
        read_wheel(got)  # verified before it enters the cache
        dest.parent.mkdir(parents=True, exist_ok=True)
        got.replace(dest)
    return dest


def from_kubernetes_validate(member: bytes) -> bytes:
    """kubernetes-validate's `_definitions.json` back in OpenAPI v2 form (see the module doc)."""
    defs = json.loads(member)["$defs"]
    return json.dumps({"definitions": {name: _undo_translation(node) for name, node in defs.items()}}).encode()


_INT_OR_STRING = [{"type": ["string", "null"]}, {"type": ["integer", "null"]}]


def _undo_translation(node):
    if isinstance(node, list):
        return [_undo_translation(x) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("oneOf") == _INT_OR_STRING:
        out = {k: v for k, v in node.items() if k != "oneOf"}
        out.update(type="string", format="int-or-string")
        return out
    out = {}
    for key, value in node.items():
        if key == "enum":
            continue  # not in the official file (the OpenAPIEnums gate is off there); ENUMS adds ours
        if key == "type" and isinstance(value, list):
            kept = [t for t in value if t != "null"]
            out[key] = kept[0] if len(kept) == 1 else kept
        elif key == "$ref":
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "properties":
            out[key] = {name: _undo_translation(sub) for name, sub in value.items()}
        elif key.startswith("x-kubernetes"):
            out[key] = value
        else:
            out[key] = _undo_translation(value)
    return out


# --- translation ----------------------------------------------------------------------------------

def _ref_name(ref: str) -> str:
    prefix = "#/definitions/"
    if not ref.startswith(prefix):
        raise SpecError(f"unsupported $ref {ref!r}")
    return ref[len(prefix):]


def translate(node: dict, where: str) -> dict:
    """One OpenAPI v2 schema node -> the equivalent strict Draft 2020-12 node (without descriptions)."""
    unknown = {k for k in node if k not in KNOWN_KEYWORDS and not k.startswith("x-kubernetes-")}
    if unknown:
        raise SpecError(f"{where}: unsupported OpenAPI keyword(s) {sorted(unknown)}")
    out: dict = {}
    if "$ref" in node:
        out["$ref"] = "#/$defs/" + _ref_name(node["$ref"])
    fmt = node.get("format")
    if "type" in node:
        out["type"] = node["type"]
    if fmt == "int-or-string":
        out["type"] = ["integer", "string"]
    elif fmt in INT_RANGES:
        out["minimum"], out["maximum"] = INT_RANGES[fmt]
    elif fmt is not None and fmt not in DROPPED_FORMATS:
        raise SpecError(f"{where}: unsupported format {fmt!r}")
    if "properties" in node:
        out["properties"] = {name: translate(sub, f"{where}.{name}") for name, sub in node["properties"].items()}
        # Strictness: a misspelled field is an error, as with `kubectl apply --validate=strict`.
        out["additionalProperties"] = False
        if "additionalProperties" in node:
            raise SpecError(f"{where}: object with both properties and additionalProperties")
    elif "additionalProperties" in node:
        # A map (labels, ConfigMap data...): keys are free, values keep their type.
        out["additionalProperties"] = translate(node["additionalProperties"], f"{where}{{}}")
    if "items" in node:
        out["items"] = translate(node["items"], f"{where}[]")
    if node.get("required"):
        out["required"] = list(node["required"])
    return out


def translate_definition(definitions: dict, name: str) -> dict:
    if name not in definitions:
        raise SpecError(f"definition {name} is not in the OpenAPI document")
    if name == QUANTITY:
        # The API server accepts `cpu: 0.5` and `memory: 134217728` as well as "500m"; the
        # quantity's syntax is checked by the loader, which can say what a good one looks like.
        return {"type": ["number", "string"]}
    if name == TIME:
        # `kubectl create --dry-run=client -o yaml` writes `creationTimestamp: null`; the API server
        # reads null as "unset", and exported YAML must load.
        return {"type": ["null", "string"]}
    out = translate(definitions[name], name)
    for (def_name, prop), values in ENUMS.items():
        if def_name != name:
            continue
        target = out.get("properties", {}).get(prop)
        if target is None:
            raise SpecError(f"enum overlay: {name}.{prop} does not exist in {RELEASE}")
        if target.get("type") == "array":
            target = target["items"]
        if target.get("type") != "string":
            raise SpecError(f"enum overlay: {name}.{prop} is not a string (or list of strings)")
        target["enum"] = sorted(values)
    return out


def _refs(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.add(value.removeprefix("#/$defs/"))
            else:
                found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def schema_for_kind(definitions: dict, kind: str, api_version: str, definition: str) -> dict:
    """The self-contained schema of one kind: its root object plus every definition it reaches."""
    root = translate_definition(definitions, definition)
    props = root.get("properties", {})
    for field in ("apiVersion", "kind", "metadata"):
        if field not in props:
            raise SpecError(f"{definition} has no {field!r} property")
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    if "status" in props:
        # Exported YAML often carries `status: {}` (or a whole status); the API server accepts
        # and ignores it on create, and so does podplay.
        props["status"] = {"type": "object"}
    # Every object in a manifest file needs these; the OpenAPI leaves them optional because the
    # server fills apiVersion/kind from the URL, and metadata carries the required name.
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata"})

    defs: dict[str, dict] = {}
    pending = sorted(_refs(root))
    while pending:
        name = pending.pop()
        if name in defs:
            continue
        defs[name] = translate_definition(definitions, name)
        pending.extend(sorted(_refs(defs[name]) - defs.keys()))
    return {
        "$schema": DRAFT,
        "$comment": (f"Generated by scripts/gen_schemas.py from the Kubernetes {RELEASE} OpenAPI "
                     f"({INPUT_PATH}); do not edit, regenerate."),
        **root,
        "$defs": defs,
    }


def generate(data: bytes) -> dict[str, dict]:
    """File name -> JSON document, for every file under reconciler/schemas/ that the generator owns."""
    try:
        spec = json.loads(data)
        definitions = spec["definitions"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"not an OpenAPI v2 document: {exc}") from None
    known = {name for name, _ in ENUMS}
    missing = sorted(known - definitions.keys())
    if missing:
        raise SpecError(f"enum overlay names unknown definitions: {missing}")
    out = {f"{kind}.json": schema_for_kind(definitions, kind, api, definition)
           for kind, (api, definition) in KINDS.items()}
    out["SOURCE.json"] = {
        "kubernetes_release": RELEASE,
        # Either input regenerates these files byte for byte.
        "inputs": [{"path": INPUT_PATH, "sha256": INPUT_SHA256, "url": INPUT_URL},
                   {"pypi": f"kubernetes-validate=={KV_VERSION}", "wheel_sha256": KV_WHEEL_SHA256,
                    "path": KV_MEMBER, "sha256": KV_MEMBER_SHA256}],
        "generator": "scripts/gen_schemas.py",
        "generator_version": GENERATOR_VERSION,
        "json_schema_draft": DRAFT,
        "kinds": {kind: {"apiVersion": api, "definition": definition, "file": f"{kind}.json"}
                  for kind, (api, definition) in KINDS.items()},
        "enum_overlay": {f"{d}.{p}": sorted(v) for (d, p), v in sorted(ENUMS.items())},
    }
    return out


def render(doc: dict) -> str:
    """Deterministic, sorted, pretty JSON: a regeneration's diff is readable."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --- command --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--openapi", type=Path, metavar="FILE",
                        help=f"a local copy of Kubernetes {RELEASE} {INPUT_PATH}")
    parser.add_argument("--kubernetes-validate", type=Path, metavar="WHEEL", dest="wheel",
                        help=f"a local copy of {KV_WHEEL} (the second pinned input)")
    parser.add_argument("--out", type=Path, default=SCHEMA_DIR, metavar="DIR",
                        help="where to write the schemas (default: reconciler/schemas/)")
    parser.add_argument("--fetch", action="store_true",
                        help="only make sure a pinned input is in the cache (set-up runs this), then exit")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the files in --out differ from what would be generated")
    args = parser.parse_args(argv)
    if args.fetch:
        try:
            if cached_input() is None:
                read_wheel(cached_wheel() or download_wheel())
        except InputError as exc:
            print(f"gen_schemas: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        files = {name: render(doc) for name, doc in generate(obtain_input(args.openapi, args.wheel)).items()}
    except (InputError, SpecError) as exc:
        print(f"gen_schemas: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).exists() or (args.out / name).read_text() != text]
        for name in stale:
            print(f"gen_schemas: {args.out / name} is stale; run scripts/gen_schemas.py", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = args.out / name
        if path.exists() and path.read_text() == text:
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        print(f"gen_schemas: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
