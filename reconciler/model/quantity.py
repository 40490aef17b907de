"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``2e3``, ``0.5``) as exact numbers."""

from __future__ import annotations

import re
from fractions import Fraction

_SUFFIX = {
    "": Fraction(1),
    "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
    "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30),
    "Ti": Fraction(2**40), "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE](?P<exp>[+-]?\d+))?$"
)


def parse_quantity(value: str | int | float) -> Fraction:
    """The exact value of a quantity; raises ValueError naming what is wrong."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"{value!r} is not a quantity (expected e.g. 500m, 128Mi, 1.5, 2e3)")
    number = Fraction(m.group("num"))
    if m.group("exp") is not None:
        return number * Fraction(10) ** int(m.group("exp"))
    return number * _SUFFIX[m.group("suffix") or ""]


def millicores(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as the kubelet does."""
    q = parse_quantity(value) * 1000
    return int(-(-q.numerator // q.denominator))


def to_bytes(value: str | int | float) -> int:
    """Memory/storage quantity in bytes, rounded up."""
    q = parse_quantity(value)
    return int(-(-q.numerator // q.denominator))


# A downwardAPI file whose resource the container does not set holds the node's allocatable,
# which only the host knows: the volume driver writes it in place of this mark.
NODE_RESOURCE_MARK = b"\0podplay:node-resource:"


def node_resource(resource: str, divisor: str, cpu_millis: int, memory: int) -> str:
    """What the kubelet reports for a resourceFieldRef the container does not set: the node's
    allocatable for limits (cpu rounded up to the divisor, at least 1 on a node with any), 0 for
    requests. Shared by env (the runtime) and downwardAPI files (the volume driver)."""
    section, _, name = resource.partition(".")
    if section != "limits":
        return "0"
    try:
        div = parse_quantity(divisor or "1")
    except ValueError:
        div = Fraction(1)
    if div <= 0:
        div = Fraction(1)
    value = Fraction(cpu_millis, 1000) / div if name == "cpu" else Fraction(memory) / div if name == "memory" \
        else Fraction(0)
    rounded = -(-value.numerator // value.denominator)
    return str(max(rounded, 1) if name == "cpu" and cpu_millis else rounded)
