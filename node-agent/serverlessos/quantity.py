"""Kubernetes quantity notation ("500m", "256Mi", "1.5G") for CPU and memory.

The agent's API speaks integers (millicores, bytes); people and the CLI speak
quantities. Parsing is exact (Fraction), so "0.1" CPU is 100m, not 99.99m.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_PATTERN = re.compile(
    r"^(?P<sign>[+-]?)(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exp>[+-]?[0-9]+))?$"
)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity, or not a usable one."""


def parse(text: str) -> Fraction:
    """The exact value of a quantity string."""
    match = _PATTERN.match(text.strip())
    if not match:
        raise QuantityError(f"{text!r} is not a quantity (examples: 500m, 2, 256Mi, 1Gi, 1.5G)")
    value = Fraction(match["num"])
    if match["sign"] == "-":
        value = -value
    if match["exp"] is not None:
        return value * Fraction(10) ** int(match["exp"])
    suffix = match["suffix"] or ""
    return value * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def parse_cpu_millis(text: str) -> int:
    """CPU quantity to millicores ("500m" -> 500, "2" -> 2000)."""
    millis = parse(text) * 1000
    if millis.denominator != 1:
        raise QuantityError(f"CPU {text!r} is finer than 1m, the smallest CPU unit")
    return int(millis)


def parse_bytes(text: str) -> int:
    """Memory quantity to bytes ("256Mi" -> 268435456)."""
    value = parse(text)
    if value.denominator != 1:
        raise QuantityError(f"memory {text!r} is not a whole number of bytes")
    return int(value)


def format_cpu(millis: int) -> str:
    """Millicores as people write them: 2000 -> "2", 500 -> "500m"."""
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis}m"


def format_bytes(value: int) -> str:
    """Bytes in the largest binary unit that divides them exactly, else bytes."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def format_bytes_approx(value: float) -> str:
    """Bytes rounded for tables: 1.5Gi, 312Mi, 4Ki."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if abs(value) >= factor:
            scaled = value / factor
            return f"{scaled:.1f}{suffix}" if scaled < 10 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}"
