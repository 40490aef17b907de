"""``forked.call``: heavy work done in a child, its result or its failure handed back unchanged."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from reconciler import forked
from reconciler.errors import ImageError, ManifestError, PodplayError


def _pid_and(value):
    return os.getpid(), value


def test_the_result_comes_back_from_another_process():
    pid, value = forked.call(_pid_and, {"a": [1, 2]})
    assert pid != os.getpid()
    assert value == {"a": [1, 2]}


def _import(name):
    __import__(name)
    return name in sys.modules


def test_what_the_child_imports_stays_in_the_child():
    assert "mailbox" not in sys.modules  # a module nothing in podplay or pytest loads
    assert forked.call(_import, "mailbox") is True
    assert "mailbox" not in sys.modules


def _raise(exc):
    raise exc


def test_the_childs_exception_is_raised_here_with_its_class_and_words():
    with pytest.raises(ImageError, match=r"^manifest unknown: docker.io/library/nope:1$"):
        forked.call(_raise, ImageError("manifest unknown: docker.io/library/nope:1"))


def test_an_exception_that_cannot_travel_comes_back_as_its_words():
    # ManifestError takes diagnostics, not a string: it pickles but cannot be rebuilt.
    exc = ManifestError.__new__(ManifestError)
    Exception.__init__(exc, "bad manifest")
    with pytest.raises(forked.ChildError, match="ManifestError: bad manifest") as err:
        forked.call(_raise, exc)
    assert isinstance(err.value, PodplayError)  # the CLI reports it, no traceback


def _die_in_child(parent):
    if os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return "done here"


def test_a_child_that_dies_before_answering_means_the_work_is_done_here():
    assert forked.call(_die_in_child, os.getpid()) == "done here"


def test_arguments_reach_the_child_without_being_pickled():
    unpicklable = lambda: 42  # noqa: E731 - a lambda cannot be pickled, and needs not be
    assert forked.call(lambda f: f() + 1, unpicklable) == 43
