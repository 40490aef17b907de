"""The schema cache: a document that passed before is not validated again; nothing else changes."""

from __future__ import annotations

import pytest

from reconciler.manifests import load_manifests, schema

GOOD = """apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: app, image: busybox:1.36}]
"""
BAD = GOOD.replace("image: busybox:1.36", "imagee: busybox:1.36")


def _summary(result):
    return [str(d) for d in result.diagnostics], [o.obj for o in result.objects]


def test_a_known_good_document_skips_the_schema_and_loads_the_same(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text(GOOD)
    cache = tmp_path / "cache" / "schema-valid"
    first = load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache)
    assert first.ok and cache.read_text().count("\n") == 1

    def no_schema(kind):
        raise AssertionError("validated again")

    monkeypatch.setattr(schema, "validator", no_schema)
    second = load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache)
    assert _summary(second) == _summary(first)


def test_an_invalid_document_is_never_cached_and_a_changed_one_is_validated(tmp_path, monkeypatch):
    f = tmp_path / "p.yaml"
    cache = tmp_path / "schema-valid"
    f.write_text(BAD)
    seen = [[str(d) for d in load_manifests([str(f)], schema_cache=cache).errors] for _ in range(2)]
    assert seen[0] == seen[1] and any("unknown field 'imagee'" in d for d in seen[1])
    assert not cache.exists() or cache.read_text().strip() == ""
    f.write_text(GOOD)
    assert load_manifests([str(f)], schema_cache=cache).ok
    calls = []
    real = schema.validator
    monkeypatch.setattr(schema, "validator", lambda kind: calls.append(kind) or real(kind))
    f.write_text(GOOD.replace("1.36", "1.37"))
    assert load_manifests([str(f)], schema_cache=cache).ok
    assert calls == ["Pod"]


@pytest.mark.parametrize("content", ["", "not digests at all\n", "\x00\x01"])
def test_a_damaged_cache_file_is_only_a_cache(tmp_path, content):
    (tmp_path / "p.yaml").write_text(GOOD)
    cache = tmp_path / "schema-valid"
    cache.write_text(content)
    assert load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache).ok


def test_the_cache_is_readable_by_its_owner_only(tmp_path):
    (tmp_path / "p.yaml").write_text(GOOD)
    cache = tmp_path / "cache" / "schema-valid"
    assert load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache).ok
    assert cache.stat().st_mode & 0o777 == 0o600
    assert cache.parent.stat().st_mode & 0o777 == 0o700


def test_another_podplay_release_validates_again(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text(GOOD)
    cache = tmp_path / "schema-valid"
    assert load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache).ok
    calls = []
    real = schema.validator
    monkeypatch.setattr(schema, "validator", lambda kind: calls.append(kind) or real(kind))
    monkeypatch.setattr("reconciler.__version__", "999.0")
    assert load_manifests([str(tmp_path / "p.yaml")], schema_cache=cache).ok
    assert calls == ["Pod"]


def test_an_unchanged_file_never_imports_jsonschema(tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.yaml").write_text(GOOD)
    cache = tmp_path / "schema-valid"
    code = ("import sys; from reconciler.manifests import load_manifests; "
            f"assert load_manifests([{str(tmp_path / 'p.yaml')!r}], schema_cache={str(cache)!r}).ok; "
            "print('jsonschema' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)]
    assert runs == ["True", "False"]
