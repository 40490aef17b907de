"""The manifest corpora: every invalid case reports exactly its expected diagnostics, every valid
case loads with exactly its expected warnings and objects (see ``corpus.py`` for the format)."""

from __future__ import annotations

import pytest

from reconciler.desired import build_desired
from tests.unit.manifests.corpus import CORPUS, actual, cases, expectations, load_case, mismatch

INVALID = cases("invalid")
VALID = cases("valid")


def _explain(missing, unexpected) -> str:
    lines = ["diagnostics differ from the case's expectations"]
    lines += [f"  expected, not reported: {e}" for e in missing]
    lines += [f"  reported, not expected: {g}" for g in unexpected]
    return "\n".join(lines)


def test_the_corpus_is_as_large_as_promised():
    assert len(INVALID) >= 70
    assert len(VALID) >= 10
    assert (CORPUS / "invalid").is_dir() and (CORPUS / "valid").is_dir()


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid_case_reports_exactly_the_expected_problems(case):
    expected, _ = expectations(case)
    assert any(e.severity == "error" for e in expected), "an invalid case must expect at least one error"
    result = load_case(case)
    got = [e for e, _ in actual(case, result)]
    missing, unexpected = mismatch(expected, got)
    assert not missing and not unexpected, _explain(missing, unexpected)
    assert not result.ok


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_valid_case_loads_with_exactly_the_expected_warnings(case):
    expected, objects = expectations(case)
    assert objects, "a valid case lists the objects it must load (# objects: Kind/namespace/name …)"
    assert all(e.severity == "warning" for e in expected)
    result = load_case(case)
    got = [e for e, _ in actual(case, result)]
    missing, unexpected = mismatch(expected, got)
    assert not missing and not unexpected, _explain(missing, unexpected)
    assert result.ok
    assert sorted(str(o.key) for o in result.objects) == sorted(objects)
    # What validates must also expand into desired pods without a further complaint.
    build_desired(result.objects)
