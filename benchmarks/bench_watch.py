"""Keeping converged: how fast `podplay watch` reacts, what a quiet pass costs, what idling costs.

    python -m benchmarks.bench_watch [--driver fake|host] [--runs 20] [--pods 100] [--idle 60] [--only PART]

The driver is ``host`` when run as root (as `make bench` is), else ``fake``.

1. Latency from writing a new manifest file to its container running, through a real
   `podplay watch` process (median of --runs, for two debounce settings). The watcher's own
   log says when the pod's create transaction finished (its container started); the benchmark
   reads that log instead of polling the runtime, so measuring does not load the 2-core host.
2. A no-change pass over --pods pods, in process: the relist tick (observe + probes + diff
   against the cached desired state), a file-event pass that finds nothing changed, and the
   periodic full resync (every file re-read, the journal recovered under the apply lock).
   Target from the issue: < 50 ms. With ``--driver host`` the pods are real (runc, conmon,
   CNI; a `sleep` each) and the set-up (creating them) and the teardown are reported too.
3. `podplay watch` idling over 20 pods for --idle seconds: its RSS and CPU read from /proc
   (targets: < 30 MB RSS, < 1 % CPU). With ``--driver host``, beside it the processes each
   side keeps per pod, summed from /proc: podplay's conmon processes and the containers they
   hold (catatonit infra, the app), and the same for `podman kube play` of the same 20 pods
   (its conmons, its catatonit infra, the app). RSS counts shared pages in every process that
   maps them; PSS shares them out, so its sum is what the processes really cost together.

``--driver host`` needs root. It works in a private storage root, run root and CNI network
(its own bridge and subnet), makes localhost/busybox:latest from the host's busybox with
scripts/busybox-rootfs.sh + `podplay import` (podman imports the same tarball into a private
--root/--runroot with the containers.conf this VM needs), and removes everything afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import harness
from benchmarks.harness import Row, table

REPO = Path(__file__).resolve().parents[1]
HOST_IMAGE = "localhost/busybox:latest"
# Both tools import the same tarball with the same config (podman's runtime has no default PATH).
IMAGE_CHANGES = ("--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "--change", 'CMD ["sh"]')
FAKE_IMAGE = "registry.test/busybox:1.36"
BRIDGE = "ppbench3"
SUBNET = "10.221.24.0/22"  # room for the 100 pods of the quiet pass

# `sleep` is the whole workload. As a container's pid 1 it ignores SIGTERM, so the pods end with
# SIGKILL at once (grace 0) rather than after 30 s each: teardown is not what is measured here.
POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: bench}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: {image}
    imagePullPolicy: {pull}
    command: ["sleep", "100000"]
    resources: {{limits: {{memory: 32Mi}}}}
"""


def write_pod(d: Path, name: str, image: str) -> None:
    tmp = d / f".{name}.tmp"
    tmp.write_text(POD.format(name=name, image=image, pull="Never" if image == HOST_IMAGE else "IfNotPresent"))
    os.replace(tmp, d / f"{name}.yaml")


def host_paths(base: Path):
    from reconciler.paths import HostPaths

    return HostPaths(base / "root", base / "run", base / "net.d")


def env_for(base: Path, driver: str) -> dict:
    env = {**os.environ, "PODPLAY_ROOT": str(base / "root"), "PODPLAY_RUNROOT": str(base / "run"),
           "PODPLAY_NETWORK_DIR": str(base / "net.d"), "PODPLAY_DRIVER": driver}
    if driver == "fake":
        env["PODPLAY_FAKE_REGISTRY"] = "*"
    return env


def podplay() -> list[str]:
    return [str(Path(sys.executable).with_name("podplay"))]


def running_pods(base: Path, driver: str) -> set[str]:
    from reconciler.reconcile import open_drivers

    drivers = open_drivers(host_paths(base), driver)
    try:
        return {c.pod for c in drivers.runtime.list_containers() if c.role == "app" and c.state == "running"}
    finally:
        drivers.close()


class Watcher:
    """A `podplay watch` process with its JSON log in a file."""

    def __init__(self, d: Path, env: dict, log: Path, *args: str):
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(podplay() + ["watch", str(d), "--log-format", "json", *args], env=env,
                                     stdout=subprocess.DEVNULL, stderr=self._out, stdin=subprocess.DEVNULL)
        self._read = open(log)  # noqa: SIM115 - closed in stop()
        self._partial = ""

    def events(self):
        """The events logged since the last call."""
        self._partial += self._read.read()
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue

    def wait_event(self, pred, timeout: float = 120.0, interval: float = 0.002) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events():
                if pred(e):
                    return e
            if self.proc.poll() is not None:
                raise RuntimeError(f"podplay watch exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out; the watcher's log:\n{self.log.read_text()[-3000:]}")
            time.sleep(interval)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._read.close()


def wait_for(pred, timeout: float = 300.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(interval)


def down(d: Path, env: dict) -> None:
    res = subprocess.run(podplay() + ["down", "-q", str(d)], env=env, capture_output=True, text=True)
    if res.returncode != 0:
        print(f"warning: podplay down {d} failed: {res.stderr[-2000:]}", file=sys.stderr)


# --- 1. latency ----------------------------------------------------------------------------------

def bench_latency(base: Path, driver: str, image: str, runs: int, debounce: str) -> list[float]:
    d = base / f"lat-{debounce}"
    d.mkdir()
    env = env_for(base, driver)
    w = Watcher(d, env, base / f"lat-{debounce}.log", "--debounce", debounce)
    samples = []
    try:
        w.wait_event(lambda e: e.get("event") == "pass" and e.get("trigger") == "start")
        for i in range(runs):
            name = f"lat{debounce.replace('.', '')}-{i}"
            t = time.perf_counter()
            write_pod(d, name, image)
            w.wait_event(lambda e, n=name: e.get("event") == "created" and e.get("pod") == f"default/{n}")
            samples.append(time.perf_counter() - t)
            # The log said so; the runtime must agree (not timed).
            assert f"default/{name}" in running_pods(base, driver), f"{name} was logged created but does not run"
    finally:
        w.stop()
        down(d, env)
    return samples


# --- 2. a quiet pass over many pods --------------------------------------------------------------

def bench_quiet_pass(base: Path, driver: str, pods: int, runs: int) -> tuple[list[Row], list[Row]]:
    """(quiet passes, set-up and teardown) for ``pods`` pods, with an in-process Keeper."""
    from reconciler.state import StateStore
    from reconciler.watch import DirSource, EventLog, Keeper, KeeperOptions

    d = base / "quiet"
    d.mkdir()
    image = HOST_IMAGE if driver == "host" else FAKE_IMAGE
    for i in range(pods):
        write_pod(d, f"q-{i:03}", image)
    if driver == "host":
        from reconciler.reconcile import open_drivers

        paths = host_paths(base)
        drivers = open_drivers(paths, "host")
        count = lambda: sum(1 for c in drivers.runtime.list_containers() if c.pod.startswith("default/q-"))  # noqa: E731
    else:
        from reconciler.drivers.fake import FakeHost, fake_drivers
        from reconciler.paths import HostPaths

        paths = HostPaths(base / "qroot", base / "qrun", base / "qnet")
        fake = FakeHost()
        fake.registry.add("*")
        drivers = fake_drivers(fake)
        count = lambda: len(fake.containers)  # noqa: E731
    state = StateStore(paths.state_db)
    keeper = Keeper(DirSource([str(d)], state), paths, state, lambda: drivers, EventLog(io.StringIO()),
                    KeeperOptions(relist=3600, resync=3600))
    created = False
    try:
        t = time.perf_counter()
        keeper.converge("start", refresh=True, full=True)
        first = time.perf_counter() - t
        created = True
        assert count() == 2 * pods, f"expected {2 * pods} containers (infra + app per pod), found {count()}"

        def timed(fn) -> list[float]:
            out = []
            for _ in range(runs):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out
        where = "real host" if driver == "host" else "fake host"
        txns = len(state.journal.recent_txns(100_000))
        quiet = [
            Row(f"relist tick, {pods} pods, nothing to do ({where})", timed(keeper.tick)),
            Row(f"file-event pass, {pods} pods, nothing changed ({where})",
                timed(lambda: keeper.converge("files", refresh=True))),
            Row(f"full resync pass, {pods} pods, all files re-read, apply lock ({where})",
                timed(lambda: keeper.converge("resync", refresh=True, full=True))),
        ]
        assert keeper.source.files.parses == pods, "a quiet pass parsed a file again"
        assert len(state.journal.recent_txns(100_000)) == txns, "a quiet pass changed something on the host"
        t = time.perf_counter()
        keeper.down()
        gone = time.perf_counter() - t
        created = False
        assert count() == 0, "podplay down left containers"
        setup = [Row(f"set-up: first pass creating {pods} pods ({where})", [first]),
                 Row(f"teardown: down of {pods} pods ({where})", [gone])]
        return quiet, setup
    finally:
        if created:
            keeper.down()
        keeper.waker.close()
        state.close()
        drivers.close()


# --- 3. idling -----------------------------------------------------------------------------------

def _proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS kB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def _memory(pid: int) -> tuple[int, int]:
    """(RSS kB, PSS kB) of a process."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


@dataclass
class Group:
    count: int = 0
    rss: int = 0  # kB
    pss: int = 0  # kB
    pids: list[int] = field(default_factory=list)

    def add(self, pid: int) -> None:
        try:
            rss, pss = _memory(pid)
        except OSError:
            return  # gone meanwhile
        self.count += 1
        self.rss += rss
        self.pss += pss
        self.pids.append(pid)


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid → (ppid, comm, command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        out[int(entry)] = (ppid, comm, cmd)
    return out


def pod_processes(needles: tuple[str, ...]) -> dict[str, Group]:
    """The conmon processes whose command line names one of ``needles`` (a side's storage paths)
    and the container processes they hold (conmon is their parent: it is a subreaper), split
    into infra (catatonit) and app processes."""
    procs = _processes()
    groups = {"conmon": Group(), "infra": Group(), "app": Group()}
    conmons = {pid for pid, (_, comm, cmd) in procs.items() if comm == "conmon" and any(n in cmd for n in needles)}
    for pid in sorted(conmons):
        groups["conmon"].add(pid)
    for pid, (ppid, comm, _) in sorted(procs.items()):
        if ppid in conmons:
            groups["infra" if comm == "catatonit" else "app"].add(pid)
    return groups


def sample_groups(needles: tuple[str, ...], samples: int = 5, interval: float = 1.0) -> dict[str, Group]:
    """The per-pod processes, the sample with the median total RSS of a few."""
    seen = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        seen.append(pod_processes(needles))
    seen.sort(key=lambda g: sum(x.rss for x in g.values()))
    return seen[len(seen) // 2]


def podman_side(base: Path, d: Path, tarball: Path) -> dict[str, Group] | str:
    """The same 20 pods through `podman kube play` (private root, run root and containers.conf):
    its per-pod processes; or why it could not be measured."""
    if not shutil.which("podman"):
        return "podman is not installed (`make bench` installs it)"
    podman, env = harness.podman_side(base)
    root, run = base / "pm-root", base / "pm-run"  # where harness.podman_side keeps podman's state
    try:
        subprocess.run(podman + ["import", "-q", *IMAGE_CHANGES, str(tarball), HOST_IMAGE], env=env, check=True,
                       capture_output=True)
        for f in sorted(d.glob("*.yaml")):
            subprocess.run(podman + ["kube", "play", str(f)], env=env, check=True, capture_output=True)

        def all_running() -> bool:  # 20 infra + 20 app containers
            res = subprocess.run(podman + ["ps", "-q", "--filter", "status=running"], env=env, capture_output=True,
                                 text=True)
            return len(res.stdout.split()) == 40
        wait_for(all_running, 300)
        time.sleep(2.0)  # the same settling time as podplay's side
        return sample_groups((str(root), str(run)))
    except subprocess.CalledProcessError as exc:
        return f"podman failed: {' '.join(map(str, exc.cmd))}: {exc.stderr.decode()[-500:]}"
    finally:
        for argv in (["pod", "rm", "-f", "-a", "-t", "0"], ["system", "reset", "-f"]):
            res = subprocess.run(podman + argv, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"warning: podman {' '.join(argv)} failed: {res.stderr[-1000:]}", file=sys.stderr)
        from tests.support.leaks import processes_mentioning

        left = processes_mentioning(str(root), str(run))
        if left:
            print("warning: podman left processes behind:\n  " + "\n  ".join(left), file=sys.stderr)


def bench_idle(base: Path, driver: str, image: str, seconds: float, tarball: Path | None) -> str:
    d = base / "idle"
    d.mkdir()
    for i in range(20):
        write_pod(d, f"idle-{i:02}", image)
    env = env_for(base, driver)
    w = Watcher(d, env, base / "idle.log")
    mine: dict[str, Group] = {}
    try:
        w.wait_event(lambda e: e.get("event") == "pass" and e.get("trigger") == "start", timeout=600)
        wait_for(lambda: sum(1 for p in running_pods(base, driver) if p.startswith("default/idle-")) == 20)
        time.sleep(2.0)  # let the start-up settle
        cpu0, _ = _proc_sample(w.proc.pid)
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            rss.append(_proc_sample(w.proc.pid)[1])
        cpu1, _ = _proc_sample(w.proc.pid)
        wall = time.monotonic() - t0
        watcher_rss, watcher_pss = _memory(w.proc.pid)
        if driver == "host":
            paths = host_paths(base)
            mine = sample_groups((str(paths.root), str(paths.runroot)))
    finally:
        w.stop()
        down(d, env)
    out = ("## podplay watch idling over 20 pods\n\n| what | value | target |\n|---|---:|---:|\n"
           f"| RSS, median over {wall:.0f} s | {statistics.median(rss) / 1024:.1f} MB | < 30 MB |\n"
           f"| RSS, max | {max(rss) / 1024:.1f} MB | |\n"
           f"| CPU | {100 * (cpu1 - cpu0) / wall:.2f} % | < 1 % |\n")
    if driver != "host":
        return out
    theirs = podman_side(base, d, tarball) if tarball is not None else "no image tarball"
    return out + "\n" + per_pod_table(mine, theirs, watcher_rss, watcher_pss)


def per_pod_table(mine: dict[str, Group], theirs: dict[str, Group] | str, watcher_rss: int, watcher_pss: int) -> str:
    def mb(kb: float) -> str:
        return f"{kb / 1024:.1f}"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    lines = ["## Processes kept for 20 idle pods (sleep), summed from /proc", "",
             "| what | podplay | podman kube play | ratio podplay/podman |", "|---|---:|---:|---:|"]
    other = theirs if isinstance(theirs, dict) else {k: Group() for k in mine}
    labels = {"conmon": "conmon (one per container, infra included)", "infra": "infra (catatonit)",
              "app": "app (sleep: the same workload on both sides)"}
    for key, label in labels.items():
        a, b = mine[key], other[key]
        lines.append(f"| {label}: processes | {a.count} | {b.count or '-'} | {ratio(a.count, b.count)} |")
        for what, x, y in (("RSS", a.rss, b.rss), ("PSS", a.pss, b.pss)):
            lines.append(f"| {label}: {what} sum, MB | {mb(x)} | {mb(y) if b.count else '-'} | {ratio(x, y)} |")
    for what, field_ in (("RSS", "rss"), ("PSS", "pss")):
        a = sum(getattr(mine[k], field_) for k in ("conmon", "infra")) / 20
        b = sum(getattr(other[k], field_) for k in ("conmon", "infra")) / 20
        lines.append(f"| per pod, conmon + infra, {what} MB | {mb(a)} | {mb(b) if b else '-'} | {ratio(a, b)} |")
    lines.append(f"| the keeper (`podplay watch`; podman has none), RSS / PSS MB | {mb(watcher_rss)} / "
                 f"{mb(watcher_pss)} | - | - |")
    a = sum(mine[k].rss for k in ("conmon", "infra")) + watcher_rss
    b = sum(other[k].rss for k in ("conmon", "infra"))
    lines.append(f"| 20 pods in all, conmon + infra (+ keeper), RSS MB | {mb(a)} | {mb(b) if b else '-'} | "
                 f"{ratio(a, b)} |")
    a = sum(mine[k].pss for k in ("conmon", "infra")) + watcher_pss
    b = sum(other[k].pss for k in ("conmon", "infra"))
    lines.append(f"| 20 pods in all, conmon + infra (+ keeper), PSS MB | {mb(a)} | {mb(b) if b else '-'} | "
                 f"{ratio(a, b)} |")
    if isinstance(theirs, str):
        lines += ["", f"podman side not measured: {theirs}"]
    return "\n".join(lines) + "\n"


# --- the real host: network, image, cleanup ---------------------------------------------------------

def prepare_host(base: Path) -> Path:
    """A CNI network on a bridge of its own as the default, and localhost/busybox:latest made
    from the host's busybox. Returns the rootfs tarball (podman imports it too)."""
    import ipaddress

    from reconciler.network.config import default_conflist, routed_networks

    mine = ipaddress.ip_network(SUBNET)
    clash = [str(n) for n in routed_networks() if n.overlaps(mine)]
    if clash:
        raise SystemExit(f"the benchmark's subnet {SUBNET} overlaps a routed network ({', '.join(clash)})")
    paths = host_paths(base)
    paths.network_dir.mkdir(parents=True, exist_ok=True)
    doc = default_conflist("podplay", BRIDGE, SUBNET, str(paths.cni / "ipam"))
    (paths.network_dir / "podplay.conflist").write_text(json.dumps(doc, indent=2))
    tarball = base / "rootfs.tar"
    subprocess.run([str(REPO / "scripts" / "busybox-rootfs.sh"), str(tarball)], check=True)
    subprocess.run(podplay() + ["import", "-q", *IMAGE_CHANGES, str(tarball), HOST_IMAGE], env=env_for(base, "host"),
                   check=True, capture_output=True)
    return tarball


def cleanup_host(base: Path) -> None:
    from benchmarks.bench_pods import _mounts_under
    from tests.support.leaks import find_leaks

    paths = host_paths(base)
    for d in ("lat-0.3", "lat-0.05", "quiet", "idle"):
        if (base / d).exists():
            down(base / d, env_for(base, "host"))
    leaks = find_leaks(paths.root, paths.runroot)
    if leaks:
        print("warning: left behind:\n  " + "\n  ".join(leaks), file=sys.stderr)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    for m in sorted(_mounts_under(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", choices=("fake", "host"), default=None,
                    help="host: real pods (needs root; the default as root, as in `make bench`); fake: the engine "
                    "alone on the file-backed fake host (the default otherwise)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idling to measure (default 60)")
    ap.add_argument("--only", choices=("latency", "quiet", "idle"), action="append", default=None,
                    help="run only these parts (repeatable)")
    args = ap.parse_args(argv)
    parts = set(args.only or ("latency", "quiet", "idle"))
    if args.driver is None:
        args.driver = "host" if os.geteuid() == 0 else "fake"
    if args.driver == "host" and os.geteuid() != 0:
        ap.error("--driver host needs root (runc, overlay mounts, CNI)")
    sys.path.insert(0, str(REPO))
    image = HOST_IMAGE if args.driver == "host" else FAKE_IMAGE
    # Short: conmon's attach sockets live under the run root, and a socket path must fit in 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="pp-bw-", dir="/tmp"))
    tarball = None
    try:
        if args.driver == "host":
            t = time.perf_counter()
            tarball = prepare_host(base)
            print(f"set-up: network and image in {time.perf_counter() - t:.1f} s", flush=True)
        if "latency" in parts:
            where = "real host" if args.driver == "host" else "fake host"
            rows = [Row(f"file write → container running, debounce {db} s ({where})",
                        bench_latency(base, args.driver, image, args.runs, db)) for db in ("0.3", "0.05")]
            print(table("podplay watch latency (median)", rows), flush=True)
        if "quiet" in parts:
            quiet, setup = bench_quiet_pass(base, args.driver, args.pods, args.runs)
            print(table("Quiet passes in process (median; target < 50 ms)", quiet), flush=True)
            print(table("Set-up and teardown of the quiet-pass pods", setup, unit="s"), flush=True)
        if "idle" in parts:
            print(bench_idle(base, args.driver, image, args.idle, tarball), flush=True)
    finally:
        if args.driver == "host":
            cleanup_host(base)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
