"""serverlessos.quantity against Kubernetes' own quantity cases (tests/data/quantities.yaml)."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from serverlessos.quantity import (
    Format,
    Quantity,
    QuantityError,
    format_bytes,
    format_bytes_approx,
    format_cpu,
    parse,
    parse_bytes,
    parse_cpu_millis,
)

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "data" / "quantities.yaml").read_text()
)
VALID = [c for c in CASES if c["valid"]]
INVALID = [c for c in CASES if not c["valid"]]
# DecimalSI has no suffix past E (10**18), so Go prints 10**21 as "1", which reads back as 1.
NOT_ROUND_TRIPPING = {"1000E"}


def _id(case: dict[str, Any]) -> str:
    return repr(case["text"])


def test_the_table_is_big_enough_and_well_formed() -> None:
    assert len(VALID) >= 60 and len(INVALID) >= 25
    assert len({c["text"] for c in CASES}) == len(CASES)
    for case in CASES:
        assert isinstance(case["text"], str)
        assert set(case) <= {"text", "valid", "canonical", "format", "milli", "value"}
        for key in ("milli", "value"):
            assert key not in case or -(2**63) <= case[key] < 2**63
    texts = {c["text"] for c in CASES}
    assert {"10m", "9999u", "0.01", "4Mi", "4194303", "4194304"} <= texts


@pytest.mark.parametrize("case", VALID, ids=_id)
def test_valid_quantities_parse_print_and_scale_as_in_kubernetes(case: dict[str, Any]) -> None:
    text = case["text"]
    quantity = Quantity.parse(text)
    assert str(quantity) == case["canonical"]
    assert quantity.format == Format(case["format"])
    assert parse(text) == quantity.amount
    if "milli" in case:
        assert quantity.milli_value() == case["milli"]
        assert parse_cpu_millis(text) == case["milli"]
    if "value" in case:
        assert quantity.value() == case["value"]
        assert parse_bytes(text) == case["value"]


@pytest.mark.parametrize("case", VALID, ids=_id)
def test_the_canonical_form_reads_back_as_itself(case: dict[str, Any]) -> None:
    if case["text"] in NOT_ROUND_TRIPPING:
        assert Quantity.parse(case["canonical"]) != Quantity.parse(case["text"])
        return
    again = Quantity.parse(case["canonical"])
    assert again == Quantity.parse(case["text"])
    assert str(again) == case["canonical"]


@pytest.mark.parametrize("case", INVALID, ids=_id)
def test_invalid_quantities_are_refused(case: dict[str, Any]) -> None:
    with pytest.raises(QuantityError) as caught:
        Quantity.parse(case["text"])
    assert repr(case["text"]) in str(caught.value)
    assert "examples: 500m, 2, 256Mi, 1Gi, 1.5G" in str(caught.value)
    with pytest.raises(QuantityError):
        parse_cpu_millis(case["text"])
    with pytest.raises(QuantityError):
        parse_bytes(case["text"])


def test_the_error_names_the_text_and_gives_examples() -> None:
    with pytest.raises(QuantityError) as caught:
        parse("lots")
    assert str(caught.value) == "'lots' is not a quantity (examples: 500m, 2, 256Mi, 1Gi, 1.5G)"
    assert isinstance(caught.value, ValueError)
    assert caught.value.text == "lots"
    assert caught.value.reason == "quantities must match the regular expression " + (
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )
    with pytest.raises(QuantityError) as caught:
        parse("1Ki0")
    assert caught.value.reason == "unable to parse quantity's suffix"
    with pytest.raises(QuantityError) as caught:
        parse("Pi")
    assert caught.value.reason == "unable to parse numeric part of quantity"


@pytest.mark.parametrize(
    ("text", "millis"),
    [("0.0001", 1), ("0.5m", 1), ("1n", 1), ("100u", 1), ("1.1m", 2), ("9999u", 10), ("10m", 10)],
)
def test_sub_millicore_cpu_rounds_up_to_the_next_whole_millicore(text: str, millis: int) -> None:
    # As a Pod's CPU request does: MilliValue() rounds up, it does not refuse.
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize(("text", "value"), [("100m", 1), ("0.5", 1), ("1.5", 2), ("1n", 1)])
def test_fractional_bytes_round_up_to_the_next_whole_byte(text: str, value: int) -> None:
    assert parse_bytes(text) == value


def test_whitespace_is_not_trimmed() -> None:
    for text in (" 1", "1 ", "\t500m", "256Mi\n"):
        with pytest.raises(QuantityError):
            parse(text)


def test_ints_are_parsed_as_their_decimal_string() -> None:
    assert Quantity.parse(5) == Quantity.parse("5")
    assert str(Quantity.parse(1000)) == "1k"
    assert parse_cpu_millis(2) == 2000
    assert parse_bytes(1024) == 1024
    assert parse_cpu_millis(-1) == -1000
    with pytest.raises(TypeError):
        Quantity.parse(1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("millis", "text"),
    [
        (2000, "2"),
        (500, "500m"),
        (1500, "1500m"),
        (0, "0"),
        (1, "1m"),
        (10, "10m"),
        (100, "100m"),
        (1000000, "1k"),
        (1234000, "1234"),
        (-250, "-250m"),
    ],
)
def test_format_cpu_is_what_kubernetes_prints(millis: int, text: str) -> None:
    assert format_cpu(millis) == text == str(Quantity.from_millis(millis))
    assert Quantity.from_millis(millis).format == Format.DECIMAL_SI
    assert parse_cpu_millis(text) == millis


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2**30, "1Gi"),
        (256 * 2**20, "256Mi"),
        (1500, "1500"),
        (1000, "1k"),
        (2000, "2000"),  # 1024 or more: BinarySI, and no binary suffix divides it
        (0, "0"),
        (512, "512"),
        (1023, "1023"),
        (1024, "1Ki"),
        (1536, "1536"),
        (4 * 2**20, "4Mi"),
        (3 * 2**29, "1536Mi"),
        (7 * 2**60, "7Ei"),
        (2**63 - 1, "9223372036854775807"),
        (-(2**20), "-1Mi"),
    ],
)
def test_format_bytes_is_what_kubernetes_prints(value: int, text: str) -> None:
    assert format_bytes(value) == text == str(Quantity.from_bytes(value))
    assert Quantity.from_bytes(value).format == Format.BINARY_SI
    assert parse_bytes(text) == value


def test_formatting_then_parsing_gives_the_number_back() -> None:
    numbers = [0, 1, 7, 999, 1000, 1001, 1023, 1024, 1025, 10**6, 2**20, 2**20 + 1, 10**9 + 7]
    numbers += [m * 2**k for m in (1, 3, 5, 1023, 1025) for k in (0, 10, 20, 30, 40, 50)]
    numbers += [2**63 - 1, -(2**62)]
    for number in numbers:
        assert parse_bytes(format_bytes(number)) == number
        if abs(number) < 2**63 // 1000:
            assert parse_cpu_millis(format_cpu(number)) == number
            assert Quantity.parse(str(Quantity.from_millis(number))) == Quantity.from_millis(number)


def test_from_millis_and_from_bytes_take_int64s() -> None:
    for make in (Quantity.from_millis, Quantity.from_bytes):
        with pytest.raises(ValueError):
            make(2**63)
        with pytest.raises(TypeError):
            make(1.0)  # type: ignore[arg-type]
    assert Quantity.from_millis(1500).amount == Fraction(3, 2)
    assert Quantity.from_bytes(-(2**63)).amount == -(2**63)


def test_format_bytes_approx_is_unchanged() -> None:
    assert format_bytes_approx(1.5 * 2**30) == "1.5Gi"
    assert format_bytes_approx(312 * 2**20) == "312Mi"
    assert format_bytes_approx(4096) == "4.0Ki"
    assert format_bytes_approx(4 * 2**10 * 10) == "40Ki"
    assert format_bytes_approx(100) == "100"
    assert format_bytes_approx(0) == "0"


def test_comparisons_are_by_amount_whatever_the_format() -> None:
    q = Quantity.parse
    assert q("1Gi") == q("1024Mi") == q("1073741824") == q("1.073741824G")
    assert q("100m") == q("0.1") == q("1e-1")
    assert q("200M") == q("0.2G")
    assert q("50M") < q("50Mi") and q("50Mi") > q("50M")
    assert q("150Mi") >= q("100Mi") and q("100Mi") <= q("100Mi")
    assert q("10000T") > q("100Gi")
    assert q("9999u") < q("10m") <= q("0.01")
    assert q("0.0099999999") == q("10m")  # rounded up to nano units when parsed
    assert q("4194303.5") < q("4Mi") <= q("4194304")
    assert sorted([q("1Gi"), q("500m"), q("2"), q("1k")]) == [q("500m"), q("2"), q("1k"), q("1Gi")]
    assert len({q("1Gi"), q("1024Mi"), q("1Gi"), q("1G")}) == 2
    assert hash(q("1k")) == hash(q("1e3"))
    assert q("1") != 1  # a Quantity equals only Quantities
    with pytest.raises(TypeError):
        assert q("1") < 2


def test_parse_rounds_up_to_nano_and_caps_binary_values() -> None:
    assert parse("0.0000000001") == Fraction(1, 10**9)
    assert parse("-0.0000000001") == Fraction(-1, 10**9)
    assert parse("3.001n") == Fraction(4, 10**9)
    assert parse("9Ei") == 2**63 - 1 == parse("9223372036854775807Ki")
    assert parse("10E") == 10**19  # decimal values are not capped
    assert Quantity.parse("0.5Ki").format == Format.BINARY_SI
    assert Quantity.parse("0.0005Ki").format == Format.DECIMAL_SI  # below 1


def test_absurd_exponents_are_handled_without_huge_numbers() -> None:
    assert parse("1e-2147483647") == Fraction(1, 10**9)
    assert parse("1e4294967296") == 1  # Go keeps only the exponent's low 32 bits
    with pytest.raises(QuantityError, match="too large"):
        parse("1e5000")
    with pytest.raises(QuantityError, match="too large"):
        parse("1e2147483647")
    assert parse("0e2147483647") == 0


def test_quantities_can_be_made_from_an_amount() -> None:
    quantity = Quantity(Fraction(3, 2), Format.DECIMAL_SI)
    assert str(quantity) == "1500m" and quantity.milli_value() == 1500 and quantity.value() == 2
    assert str(Quantity(Fraction(2**30), Format.BINARY_SI)) == "1Gi"
    assert str(Quantity(Fraction(1500), Format.DECIMAL_EXPONENT)) == "1500"
    assert str(Quantity(Fraction(15, 10**5), Format.DECIMAL_EXPONENT)) == "150e-6"
    with pytest.raises(ValueError):
        Quantity(Fraction(1, 3), Format.DECIMAL_SI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quantity.amount = Fraction(1)  # type: ignore[misc]
