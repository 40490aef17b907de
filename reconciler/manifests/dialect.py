"""podman's dialect: what `podman kube play` accepts although a Kubernetes API server would not.

Users who move from podman bring files written for it. Where podman's intent is unambiguous,
podplay runs the file as podman would and says, once, how Kubernetes spells it
(``Checker.dialect``: a warning, an error with ``--strict``). This module rewrites the loader's
private copy of a document *before* the schema check, so the schema and the model only ever see
Kubernetes spellings; the names podman accepts in any case (``testPod``) are not rewritten (podman
keeps them, and so does podplay): ``fields.check_name`` reports those.

The cases are those of podman's own kube-play tests (../shared/fixtures/podman-kube):
  - a container without a name (podman names it after the pod);
  - ``imagePullPolicy: missing`` / ``newer`` and other lowercase policies;
  - ``protocol: udp`` (any case);
  - ``hostPort`` without ``containerPort`` (podman copies hostPort into it);
  - a Deployment whose pods have ``restartPolicy: Never``/``OnFailure`` (see pods.check_pod_spec).
"""

from __future__ import annotations

from typing import Any

from reconciler.manifests.checker import Checker
from reconciler.manifests.positions import Path_

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
# podman's pull policies (pkg/specgen: "missing" is the default) and their Kubernetes names;
# "newer" (pull when the registry has a newer image) is what Always does in Kubernetes.
PODMAN_PULL_POLICIES = {"always": "Always", "missing": "IfNotPresent", "ifnotpresent": "IfNotPresent",
                        "never": "Never", "newer": "Always"}
PROTOCOLS = ("TCP", "UDP", "SCTP")


def _spec_path(kind: str) -> Path_ | None:
    return {"Pod": ("spec",), "Deployment": ("spec", "template", "spec")}.get(kind)


def _at(data: Any, path: Path_) -> Any:
    for p in path:
        if not isinstance(data, dict):
            return None
        data = data.get(p)
    return data


def repair_podman(chk: Checker, kind: str, raw: dict) -> None:
    """Rewrite podman's spellings in `raw` (the loader's private copy) and report each one."""
    sp = _spec_path(kind)
    spec = _at(raw, sp) if sp else None
    if not isinstance(spec, dict):
        return
    for field_name in ("initContainers", "containers"):
        containers = spec.get(field_name)
        if not isinstance(containers, list):
            continue
        for i, c in enumerate(containers):
            if isinstance(c, dict):
                _container(chk, c, sp + (field_name, i), field_name, i)


def _container(chk: Checker, c: dict, cp: Path_, field_name: str, i: int) -> None:
    if c.get("name") in (None, ""):
        # podman names it "<pod>-"; podplay needs a name to address it (logs, exec): a stable one.
        name = f"{'init' if field_name == 'initContainers' else 'container'}-{i}"
        c["name"] = name
        chk.dialect(cp, f"a name for every container, e.g. name: {name} (podplay calls it {name!r})")
    policy = c.get("imagePullPolicy")
    if isinstance(policy, str) and policy not in PULL_POLICIES and policy.lower() in PODMAN_PULL_POLICIES:
        fix = PODMAN_PULL_POLICIES[policy.lower()]
        c["imagePullPolicy"] = fix
        chk.dialect(cp + ("imagePullPolicy",), f"{policy!r} → {fix!r}")
    ports = c.get("ports")
    if not isinstance(ports, list):
        return
    for j, p in enumerate(ports):
        if not isinstance(p, dict):
            continue
        pp = cp + ("ports", j)
        proto = p.get("protocol")
        if isinstance(proto, str) and proto not in PROTOCOLS and proto.upper() in PROTOCOLS:
            p["protocol"] = proto.upper()
            chk.dialect(pp + ("protocol",), f"{proto!r} → {proto.upper()!r}")
        host_port = p.get("hostPort")
        if "containerPort" not in p and isinstance(host_port, int) and not isinstance(host_port, bool) and host_port:
            p["containerPort"] = host_port
            chk.dialect(pp + ("hostPort",), f"containerPort: {host_port} beside hostPort: {host_port} "
                        "(podman takes the container's port to be the host's)")
