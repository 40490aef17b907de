"""The cache of dataclass methods: a class made from cached code behaves as a freshly compiled
one, only texts never seen are compiled, and an untrusted or unwritable cache is only no cache."""

from __future__ import annotations

import builtins
import dataclasses
import os
import sys

import pytest

from reconciler import classcache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(classcache, "_DIR", str(tmp_path / "__pycache__" / "dataclass-methods"))
    monkeypatch.setattr(classcache, "_codes", {})
    monkeypatch.setattr(classcache, "_new", {})
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(dataclasses, "exec", classcache._exec, raising=False)
    return classcache


def _make():
    @dataclasses.dataclass(frozen=True, order=True)
    class Port:
        number: int
        protocol: str = "TCP"
        names: tuple[str, ...] = dataclasses.field(default_factory=tuple)
    return Port


def _behaviour(cls):
    a, b = cls(80), cls(80, "UDP", ("web",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.number = 1
    with pytest.raises(TypeError):
        cls()
    return (repr(a), repr(b), a == cls(80), a < b, hash(a) == hash(cls(80)), cls.__init__.__annotations__,
            [f.name for f in dataclasses.fields(cls)])


def test_cached_methods_behave_as_compiled_ones_and_are_not_compiled_again(cache, monkeypatch):
    monkeypatch.setattr(dataclasses, "exec", builtins.exec, raising=False)
    stock = _behaviour(_make())
    monkeypatch.setattr(dataclasses, "exec", cache._exec)
    fresh = _behaviour(_make())
    assert fresh == stock
    assert cache._new[__name__]  # the texts this process compiled, by the module of the class
    cache.save()
    assert os.path.exists(cache._path(__name__)) and not cache._new
    cache._codes.clear()

    def no_compile(*a, **kw):
        raise AssertionError("compiled again")

    monkeypatch.setattr(cache, "compile", no_compile, raising=False)
    assert _behaviour(_make()) == fresh


def test_a_file_others_may_write_is_ignored(cache):
    _make()
    cache.save()
    os.chmod(cache._path(__name__), 0o666)
    assert cache._read(__name__) == {}
    os.chmod(cache._path(__name__), 0o644)
    assert cache._read(__name__)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xe3\x00\x01"])
def test_a_damaged_file_is_no_cache(cache, content):
    os.makedirs(cache._DIR)
    with open(cache._path(__name__), "wb") as f:
        f.write(content)
    assert cache._read(__name__) == {}
    assert _behaviour(_make())


def test_nothing_is_written_when_bytecode_is_not(cache, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    _make()
    cache.save()
    assert not os.path.exists(cache._DIR)


def test_generated_docstrings_are_the_stock_ones_and_written_ones_are_kept(cache, monkeypatch):
    monkeypatch.setattr(dataclasses, "exec", builtins.exec, raising=False)
    stock = _make()
    monkeypatch.setattr(dataclasses, "_process_class", classcache._lazy_doc(dataclasses._process_class))
    lazy = _make()
    assert lazy.__doc__ == stock.__doc__ == "Port(number: 'int', protocol: 'str' = 'TCP', names: " \
        "'tuple[str, ...]' = <factory>)"
    assert lazy(80).__doc__ == stock.__doc__

    @dataclasses.dataclass(slots=True)
    class Slotted:
        a: int = 1

    @dataclasses.dataclass
    class Written:
        """Said by its author."""

        a: int = 1

    assert Slotted.__doc__ == "Slotted(a: 'int' = 1)"  # (annotations are text in this module)
    assert Written.__doc__ == "Said by its author."
