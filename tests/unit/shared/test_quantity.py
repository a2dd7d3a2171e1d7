"""Pure domain code, called directly: quantities, validation, back-off, PSI, logs, events, store."""

from __future__ import annotations

from fractions import Fraction

import pytest
from serverlessos.quantity import (
    QuantityError,
    format_bytes,
    format_cpu,
    parse,
    parse_bytes,
    parse_cpu_millis,
)


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("500m", 500),
        ("2", 2000),
        ("0.1", 100),
        ("1.5", 1500),
        ("100m", 100),
        ("1e-1", 100),
        ("0", 0),
        (".5", 500),
    ],
)
def test_cpu_quantities(text: str, millis: int) -> None:
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("128974848", 128974848),
        ("129e6", 129 * 10**6),
        ("123Mi", 123 * 2**20),
        ("1.5Gi", 3 * 2**29),
        ("64Ki", 65536),
    ],
)
def test_memory_quantities(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "lots", "1.2.3", "5 Mi", "Mi", "1mi", "--1"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse(text)


def test_fractional_units_are_refused() -> None:
    with pytest.raises(QuantityError, match="finer than 1m"):
        parse_cpu_millis("0.0001")
    with pytest.raises(QuantityError, match="whole number of bytes"):
        parse_bytes("100m")
    assert parse("-1") == Fraction(-1)


def test_formatting_round_trips() -> None:
    assert [format_cpu(m) for m in (500, 2000, 1500)] == ["500m", "2", "1500m"]
    assert [format_bytes(b) for b in (2**30, 256 * 2**20, 1000)] == ["1Gi", "256Mi", "1000"]
    for text in ("250m", "3", "64Mi", "2Gi"):
        parsed = parse_cpu_millis(text) if text[-1] in "m0123456789" else parse_bytes(text)
        formatted = format_cpu(parsed) if text[-1] in "m0123456789" else format_bytes(parsed)
        assert formatted == text
