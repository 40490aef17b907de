"""Details of the manifest loader: which files it reads and in what order, the input forms it
takes (multi-document YAML, kind: List, JSON, stdin, Python objects), once-only warnings, and
the library entry points."""

from __future__ import annotations

import base64
import datetime
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from reconciler.cli import main
from reconciler.errors import Severity
from reconciler.manifests import load_manifests, load_objects
from reconciler.sources import find_manifest_files

REPO = Path(__file__).resolve().parents[3]

POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers: [{{name: app, image: busybox:1.36}}]
"""


def pod(name: str) -> str:
    return POD.format(name=name)


def write(root: Path, rel: str, text: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return p


def keys(result) -> list[str]:
    return [str(o.key) for o in result.objects]


# --- finding files -------------------------------------------------------------------------------

def test_directory_walk_order_and_skipped_names(tmp_path):
    for rel in ["b.yaml", "a.yml", "c.json", "sub/z.yaml", "sub/deeper/y.yaml", "aa/x.yaml",
                ".hidden.yaml", "x.yaml~", ".x.yaml.swp", "#x.yaml#", "x.bak", ".#lock.yaml", "notes.txt",
                "x.yaml.orig", ".git/config.yaml", "sub/.cache/w.yaml"]:
        write(tmp_path, rel, "")
    files, problems = find_manifest_files([str(tmp_path)])
    assert problems == []
    rel = [os.path.relpath(f, tmp_path) for f in files]
    # A directory's own files (sorted) come before its sub-directories (sorted), recursively.
    assert rel == ["a.yml", "b.yaml", "c.json", "aa/x.yaml", "sub/z.yaml", "sub/deeper/y.yaml"]
    # The same walk twice gives the same order (the engine's plans depend on it).
    assert find_manifest_files([str(tmp_path)])[0] == files


def test_named_files_are_read_whatever_their_name_and_each_file_once(tmp_path):
    odd = write(tmp_path, "manifest.txt", pod("odd"))
    hidden = write(tmp_path, ".hidden.yaml", pod("hidden"))
    normal = write(tmp_path, "d/web.yaml", pod("web"))
    result = load_manifests([str(odd), str(hidden), str(tmp_path / "d"), str(normal),
                             str(tmp_path / "d" / ".." / "d" / "web.yaml")])
    assert result.ok, result.diagnostics
    assert keys(result) == ["Pod/default/odd", "Pod/default/hidden", "Pod/default/web"]
    assert len(result.files) == 3


def test_symlinked_directories_are_followed_once_and_loops_end(tmp_path):
    write(tmp_path, "real/web.yaml", pod("web"))
    os.symlink(tmp_path / "real", tmp_path / "link")
    os.symlink(tmp_path, tmp_path / "real" / "loop")
    result = load_manifests([str(tmp_path)])
    # real/ and link/ are the same directory: its file is read once (the loop is cut).
    assert result.ok, result.diagnostics
    assert keys(result) == ["Pod/default/web"]


def test_missing_paths_and_empty_directories_are_errors_and_unreadable(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path, "web.yaml", pod("web"))
    result = load_manifests([str(tmp_path / "nope.yaml"), str(tmp_path / "empty"), str(tmp_path / "web.yaml")])
    assert {(d.file, d.message) for d in result.errors} == {
        (str(tmp_path / "nope.yaml"), "no such file or directory"),
        (str(tmp_path / "empty"), "no manifest files (*.yaml, *.yml, *.json) in this directory")}
    assert str(tmp_path / "nope.yaml") in result.unreadable
    assert keys(result) == ["Pod/default/web"]


def test_a_file_with_a_syntax_error_is_unreadable_and_the_others_still_load(tmp_path):
    bad = write(tmp_path, "a.yaml", pod("first") + "---\nkind: [\n")
    write(tmp_path, "b.yaml", pod("second"))
    result = load_manifests([str(tmp_path)])
    assert result.unreadable == [str(bad)]
    # The document before the syntax error is still read and checked.
    assert keys(result) == ["Pod/default/first", "Pod/default/second"]
    assert [(d.file, d.line, d.column) for d in result.errors] == [(str(bad), 7, 7)]  # at the unclosed '['



# --- input forms ---------------------------------------------------------------------------------

def test_multi_document_yaml_with_empty_documents(tmp_path):
    f = write(tmp_path, "all.yaml", "---\n---\n# nothing\n---\n" + pod("a") + "...\n---\n\n---\n" + pod("b") + "---\n")
    result = load_manifests([str(f)])
    assert result.ok and keys(result) == ["Pod/default/a", "Pod/default/b"]
    assert [o.line for o in result.objects] == [5, 14]


def test_kind_list_is_flattened_in_order(tmp_path):
    items = yaml.safe_load(pod("a")), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    f = write(tmp_path, "list.yaml", yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(items)}))
    result = load_manifests([str(f)])
    assert result.ok and keys(result) == ["Pod/default/a", "ConfigMap/default/c"]
    # Positions are those of the items inside the List.
    assert all(o.line > 1 for o in result.objects)


def test_json_files_and_json_streams(tmp_path):
    f = write(tmp_path, "x.json", '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},\n'
                                  '\t"data": {"n": "1e3"}}\n{"apiVersion": "v1", "kind": "ConfigMap",\n'
                                  '"metadata": {"name": "b", "annotations": {"x": "\\/y\\u00e9"}}}')
    result = load_manifests([str(f)])
    assert result.ok, result.diagnostics
    assert keys(result) == ["ConfigMap/default/a", "ConfigMap/default/b"]
    assert result.objects[0].obj.data == {"n": "1e3"}
    assert result.objects[1].obj.metadata.annotations == {"x": "/yé"}
    assert [o.line for o in result.objects] == [1, 3]


def test_stdin_yaml_and_json(monkeypatch):
    result = load_manifests(["-"], stdin_text=pod("from-stdin"))
    assert result.ok and keys(result) == ["Pod/default/from-stdin"] and result.files == ["-"]
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}'))
    result = load_manifests(["-", "-"])  # read once, however often it is named
    assert result.ok and keys(result) == ["Secret/default/s"]


def test_cli_validate_reads_stdin_and_sets_the_exit_code(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO(pod("web")))
    assert main(["validate", "-"]) == 0
    assert "valid: 1 Pod in 1 file" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(pod("we_b")))
    assert main(["validate", "-"]) == 1
    err = capsys.readouterr().err
    assert "-:3:18: error: metadata.name: 'we_b' is not a valid pod name" in err
    # podman's spelling of a name: valid with a warning, an error with --strict.
    monkeypatch.setattr(sys, "stdin", io.StringIO(pod("Web")))
    assert main(["validate", "-"]) == 0
    err = capsys.readouterr().err
    assert ("-:3:18: warning: metadata.name: would be rejected by a Kubernetes API server: use 'Web' → 'web'"
            in err)
    monkeypatch.setattr(sys, "stdin", io.StringIO(pod("Web")))
    assert main(["validate", "--strict", "-"]) == 1
    err = capsys.readouterr().err
    assert "-:3:18: error: metadata.name: would be rejected by a Kubernetes API server: use 'Web' → 'web'" in err


# --- warnings --------------------------------------------------------------------------------------

def test_a_field_podplay_does_not_act_on_is_warned_once_per_run(tmp_path):
    ctr = "{name: %s, image: busybox:1.36, terminationMessagePath: /tmp/t}"
    text = ("apiVersion: v1\nkind: Pod\nmetadata: {name: %s}\nspec:\n  containers: [" + ", ".join([ctr] * 3)
            + "]\n")
    write(tmp_path, "a.yaml", text % ("a", "c1", "c2", "c3"))
    write(tmp_path, "b.yaml", text % ("b", "c1", "c2", "c3"))
    result = load_manifests([str(tmp_path)])
    assert result.ok
    (warning,) = result.warnings
    assert warning.path == "spec.containers[0].terminationMessagePath" and warning.file.endswith("a.yaml")
    # Folded into one line that counts the places it stands for.
    assert warning.message == "podplay accepts this field but does not act on it (6 places in 2 files)"
    # Once per run, not once per process: the next load warns again.
    assert len(load_manifests([str(tmp_path)]).warnings) == 1


def test_server_populated_metadata_and_status_are_accepted_silently(tmp_path):
    f = write(tmp_path, "exported.yaml", """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          uid: 6b0e-11
          resourceVersion: "12"
          generation: 3
          creationTimestamp: 2024-01-02T03:04:05Z
          deletionTimestamp: null
          managedFields: [{manager: kubectl, operation: Apply}]
          selfLink: /api/v1/namespaces/default/pods/web
        spec:
          containers: [{name: app, image: busybox:1.36}]
        status:
          phase: Running
          containerStatuses: [{name: app, ready: true}]
        """)
    result = load_manifests([str(f)])
    assert result.ok and result.diagnostics == []


# --- library entry --------------------------------------------------------------------------------

def test_load_objects_with_plain_dicts():
    docs = list(yaml.safe_load_all(pod("web") + "---\n" + """\
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg, creationTimestamp: 2024-01-02T03:04:05Z}
data: {k: v}
"""))
    assert isinstance(docs[1]["metadata"]["creationTimestamp"], datetime.datetime)  # what safe_load gives
    result = load_objects(docs, source="/srv/m.yaml")
    assert result.ok, result.diagnostics
    assert keys(result) == ["Pod/default/web", "ConfigMap/default/cfg"]
    assert {o.file for o in result.objects} == {"/srv/m.yaml"}
    bad = load_objects([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [
        {"name": "app", "imagee": "busybox"}]}}])
    assert [(d.path, d.line) for d in bad.errors] == [("spec.containers[0].imagee", 0),
                                                      ("spec.containers[0].image", 0)]
    with pytest.raises(TypeError, match="expected a dict or a kubernetes client model"):
        load_objects(["apiVersion: v1"])


def test_load_objects_with_kubernetes_client_models():
    client = pytest.importorskip("kubernetes.client", reason="the optional extra 'kubernetes' (podplay[kube]) "
                                 "is not installed here; this path runs where it is")
    p = client.V1Pod(api_version="v1", kind="Pod", metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
                     spec=client.V1PodSpec(containers=[client.V1Container(
                         name="app", image="busybox:1.36", ports=[client.V1ContainerPort(container_port=80)])]))
    cm = client.V1ConfigMap(api_version="v1", kind="ConfigMap", metadata=client.V1ObjectMeta(name="cfg"),
                            data={"k": "v"})
    result = load_objects([p, cm, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}])
    assert result.ok, result.diagnostics
    assert keys(result) == ["Pod/default/web", "ConfigMap/default/cfg", "Secret/default/s"]
    assert result.objects[0].obj.spec.containers[0].ports[0].container_port == 80


def test_loading_manifests_from_the_cli_never_imports_kubernetes(tmp_path):
    # A stand-in `kubernetes` package that is importable: if anything on the CLI's path imported
    # kubernetes (even under try/except ImportError), it would show up in sys.modules.
    write(tmp_path, "site/kubernetes/__init__.py", "IMPORTED = True\n")
    f = write(tmp_path, "m/web.yaml", pod("web"))
    code = ("import sys; from reconciler.cli import main; rc = main(['validate', sys.argv[1]]); "
            "import kubernetes; "  # proves the stand-in is importable in this interpreter
            "sys.exit(rc if rc else 0)")
    probe = subprocess.run([sys.executable, "-c", code, str(f)], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"}, check=False)
    assert probe.returncode == 0, probe.stderr
    code = ("import sys; from reconciler.cli import main; main(['validate', sys.argv[1]]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))")
    proc = subprocess.run([sys.executable, "-c", code, str(f)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}:{REPO}"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# --- odds and ends --------------------------------------------------------------------------------

def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    f = write(tmp_path, "many.yaml", """\
        apiVersion: v1
        kind: Pod
        metadata: {name: we_b}
        spec:
          restartPolicy: always
          containers:
          - name: app
            imagee: busybox
            ports: [{containerPort: 70000}]
            volumeMounts: [{name: data, mountPath: /data}]
        """)
    result = load_manifests([str(f)])
    assert sorted((d.line, d.path) for d in result.errors) == [
        (3, "metadata.name"), (5, "spec.restartPolicy"), (7, "spec.containers[0].image"),
        (8, "spec.containers[0].imagee"), (9, "spec.containers[0].ports[0].containerPort"),
        (10, "spec.containers[0].volumeMounts[0].name")]
    assert all(d.severity == Severity.ERROR for d in result.diagnostics)


def test_positions_are_one_based_and_point_at_the_value_or_the_key(tmp_path):
    f = write(tmp_path, "p.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n"
                                  "  - name: app\n    image: busybox\n    imagePullPolicy: missing\n    cmd: [x]\n")
    result = load_manifests([str(f)])
    found = {d.path: (d.line, d.column) for d in result.diagnostics}
    assert found == {"spec.containers[0].imagePullPolicy": (9, 22),  # the value
                     "spec.containers[0].cmd": (10, 5)}  # the unknown key


def test_files_loaded_one_by_one_and_combined_say_what_load_manifests_says(tmp_path):
    from reconciler.manifests import combine_files, load_file

    ctr = "{name: app, image: busybox:1.36, terminationMessagePath: /tmp/t, ports: [{containerPort: 80, hostPort: 80}]}"
    write(tmp_path, "a.yaml", f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers: [{ctr}]\n")
    write(tmp_path, "b.yaml", f"apiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  containers: [{ctr}]\n"
                              "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: x}]\n")
    whole = load_manifests([str(tmp_path)])
    combined = combine_files([load_file(f) for f in whole.files])

    def view(result):
        return sorted((d.file, d.line, d.column, d.severity, d.path, d.message) for d in result.diagnostics)

    assert view(combined) == view(whole)
    assert [str(o.key) for o in combined.objects] == keys(whole)
    assert sum("does not act on it" in d.message for d in combined.warnings) == 1


# --- refused at validate time what apply would refuse later -----------------------------------------

SECRET_TEXT = "root:$y$j9T$not-a-real-hash:19000:0:99999:7:::\n" * 30  # ~1.4 KB, as /etc/shadow


def test_a_link_out_of_the_manifest_directory_is_refused_without_quoting_its_target(tmp_path):
    (tmp_path / "outside").mkdir()
    secret = write(tmp_path, "outside/shadow", SECRET_TEXT)
    d = tmp_path / "m"
    write(d, "web.yaml", pod("web"))
    os.symlink(secret, d / "x.yaml")
    result = load_manifests([str(d)])
    (error,) = result.errors
    assert (error.file, error.line) == (str(d / "x.yaml"), 0)
    assert error.message == (f"a symbolic link to {secret}, outside the manifest directory: podplay does not follow "
                             "it (copy the file into the directory, or name it on the command line)")
    assert result.unreadable == [str(d / "x.yaml")], "its objects are unknown: nothing may be pruned"
    assert keys(result) == ["Pod/default/web"]
    assert "not-a-real-hash" not in "".join(str(x) for x in result.diagnostics)
    # Named on the command line, it is the caller's choice: read (and what it is not, said briefly).
    named = load_manifests([str(d / "x.yaml")])
    assert len(str(named.errors[0])) < 300, named.errors[0]


def test_links_inside_the_directory_and_linked_directories_are_followed(tmp_path):
    d = tmp_path / "m"
    write(d, "real/web.yaml", pod("web"))
    os.symlink(d / "real" / "web.yaml", d / "alias.yaml")  # the same file twice: read once
    write(tmp_path, "shared/db.yaml", pod("db"))
    os.symlink(tmp_path / "shared", d / "shared")
    os.symlink("db.yaml", tmp_path / "shared" / "db-link.yaml")  # beside the link, in a linked dir
    result = load_manifests([str(d)])
    assert result.ok, result.diagnostics
    assert sorted(keys(result)) == ["Pod/default/db", "Pod/default/web"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a link owned by another user")
def test_a_link_to_a_file_its_owner_cannot_read_is_refused(tmp_path):
    d = tmp_path / "m"
    private = write(d, "private/web.yaml", pod("web"))
    private.chmod(0o600)  # root's own
    os.symlink(private, d / "x.yaml")
    os.lchown(d / "x.yaml", 65534, 65534)  # planted by nobody
    result = load_manifests([str(d)])
    assert [(e.file, e.message) for e in result.errors] == [
        (str(d / "x.yaml"), f"a symbolic link (owned by uid 65534) to {private}, which its owner cannot read: "
                            "podplay does not follow it")]
    # The link and its target are one file to the walk (read once): refused, its objects are unknown.
    assert result.unreadable == [str(d / "x.yaml")] and keys(result) == []


def test_a_long_value_is_named_in_an_error_not_copied(tmp_path):
    f = write(tmp_path, "notes.yaml", "Dear diary, " * 100 + "\n")
    (error,) = load_manifests([str(f)]).errors
    assert error.message == ('a manifest document must be a mapping (a Kubernetes object), not a string '
                             '("Dear diary, Dear diary, Dear diary, Dea… (1199 characters))')


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(("kind", "field", "encode"), [("ConfigMap", "data", str), ("ConfigMap", "binaryData", b64),
                                                       ("Secret", "stringData", str), ("Secret", "data", b64)])
def test_configmaps_and_secrets_over_one_mebibyte_are_refused(tmp_path, kind, field, encode):
    def doc(size: int) -> str:
        return (f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: big}}\n{field}:\n"
                f"  a: {encode('x' * (size - 3))}\n  b: {encode('xxx')}\n")

    at_cap = write(tmp_path, "ok.yaml", doc(1024 * 1024))
    assert load_manifests([str(at_cap)]).ok
    over = write(tmp_path, "big.yaml", doc(1024 * 1024 + 3))
    (error,) = load_manifests([str(over)]).errors
    assert (error.line, error.column, error.path) == (4, 1, field)
    assert error.message == (f"the values add up to 1048579 bytes, more than the 1048576 (1 MiB) a {kind} may hold: "
                             "split it into several, or put large files in a volume (hostPath or a claim)")


def test_a_memory_emptydir_larger_than_the_host_memory_is_refused(tmp_path):
    from reconciler.manifests.hostfacts import HostFacts

    f = write(tmp_path, "web.yaml", pod("web") + "  volumes:\n"
              "  - {name: fast, emptyDir: {medium: Memory, sizeLimit: 2Gi}}\n"
              "  - {name: slow, emptyDir: {sizeLimit: 64Gi}}\n")
    assert load_manifests([str(f)], host=HostFacts(memory=2 * 2**30)).ok
    assert load_manifests([str(f)], host=HostFacts()).ok, "memory unknown: nothing to check against"
    result = load_manifests([str(f)], host=HostFacts(memory=2 * 2**30 - 1))
    (error,) = result.errors
    assert (error.line, error.column, error.path) == (7, 56, "spec.volumes[0].emptyDir.sizeLimit")
    assert error.message == ("2Gi is more than this host's memory (2047Mi): use at most 2047Mi, or leave sizeLimit "
                             "out (the pod's memory limit bounds a Memory emptyDir)")
    # The default is this host's memory (/proc/meminfo), which no host has 1Ei of.
    huge = write(tmp_path, "huge.yaml",
                 pod("huge") + "  volumes: [{name: v, emptyDir: {medium: Memory, sizeLimit: 1Ei}}]\n")
    assert [e.path for e in load_manifests([str(huge)]).errors] == ["spec.volumes[0].emptyDir.sizeLimit"]


def test_strict_is_an_option_of_every_command_that_loads_manifests(monkeypatch, capsys, tmp_path):
    # plan and up (on the in-memory host) refuse podman's dialect with --strict and run it without.
    monkeypatch.setenv("PODPLAY_DRIVER", "fake")
    f = write(tmp_path, "p.yaml", pod("Web"))
    roots = ["--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run")]
    for command in ("plan", "up"):
        assert main([*roots, command, "--strict", str(f)]) == 1, command
        assert "error: metadata.name: would be rejected by a Kubernetes API server" in capsys.readouterr().err
    assert main([*roots, "plan", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "+ create" in out and "warning: metadata.name: would be rejected" in err
    from reconciler.cli import build_parser

    parser = build_parser()
    for argv in (["watch", "--strict", "d"], ["sync", "--strict", "file:///r"]):
        assert parser.parse_args(argv).strict
