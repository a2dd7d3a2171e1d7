"""Kubernetes quantities ("500m", "256Mi", "1.5G"), exactly as Kubernetes reads and prints them.

A Python re-implementation of `resource.Quantity` from k8s.io/apimachinery
(pkg/api/resource: quantity.go, suffix.go, amount.go, math.go, scale_int.go):

- `Quantity.parse` accepts and refuses what `ParseQuantity` does. Nothing is
  trimmed (`" 1"` is refused). Some odd strings are accepted on purpose, because
  Go accepts them: `"1."`, `".5"`, `"+1"`, `"1.G"`, and even a bare sign, dot or
  suffix (`"-"`, `"."`, `"m"`, `"Ki"`, `"Mi"`, `"e3"`), which are all zero,
  though `"Pi"`, `"Ei"` and `"e-10"` are refused.
- Values are rounded up (away from zero) to whole nano units, and BinarySI
  values are capped at 2**63-1 in magnitude; decimal ones are not capped.
- A BinarySI value between 0 and 1 becomes DecimalSI.
- `str()` is `String()`: the canonical form ("1.5Gi" -> "1536Mi", "0.1" ->
  "100m", "1000" -> "1k"), except that, like Go, a string that was parsed on
  Go's fast path and looked canonical to it is printed back as it was written
  (so "1E3", "+1", "1.500" and "1.Ki" come back unchanged).
- `value()` / `milli_value()` are `Value()` / `MilliValue()`: the value rounded
  up to a whole unit / milliunit ("0.5m" CPU -> 1 millicore, "0.5" -> 1 byte).

Where Go's int64 arithmetic would overflow (`MilliValue()` of "9Ei", `Value()`
of "1000E", of "-1.5Pi"), Go returns a wrapped or meaningless number; here the
result is the exact one. Quantities whose exact value needs more than 4000
significant digits or is 10**4000 or more (Go accepts e.g. "1e5000") are
refused with `QuantityError`, and so are 1e-2147483648 style exponents that Go
reads (through int32 wrap-around) as astronomically large.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

__all__ = [
    "Format",
    "Quantity",
    "QuantityError",
    "format_bytes",
    "format_bytes_approx",
    "format_cpu",
    "parse",
    "parse_bytes",
    "parse_cpu_millis",
]

_EXAMPLES = "examples: 500m, 2, 256Mi, 1Gi, 1.5G"
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_MAX_DIGITS = 4000  # bound on significant digits and on magnitude (see the module docstring)
_NANO = -9  # Go's resource.Nano scale: values are rounded up to 10**-9
_DIGITS = frozenset("0123456789")
_SUFFIX_CHARS = frozenset("eEinumkKMGTP")

# Go's error texts (quantity.go), kept on QuantityError.reason.
_SPLIT_RE = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_ERR_FORMAT = f"quantities must match the regular expression '{_SPLIT_RE}'"
_ERR_NUMERIC = "unable to parse numeric part of quantity"
_ERR_SUFFIX = "unable to parse quantity's suffix"
_ERR_RANGE = f"its exact value needs more than {_MAX_DIGITS} digits"


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""

    def __init__(self, text: str, reason: str = "") -> None:
        self.text = text
        self.reason = reason
        if reason == _ERR_RANGE:
            message = f"{text!r} is too large or too precise to handle ({reason}; {_EXAMPLES})"
        else:
            message = f"{text!r} is not a quantity ({_EXAMPLES})"
        super().__init__(message)


class Format(enum.StrEnum):
    """How a quantity prints: 12M, 12Mi or 12e6."""

    DECIMAL_SI = "DecimalSI"
    BINARY_SI = "BinarySI"
    DECIMAL_EXPONENT = "DecimalExponent"


# suffix -> (base, exponent, format), as suffix.go interprets them.
_SUFFIXES: dict[str, tuple[int, int, Format]] = {
    "": (10, 0, Format.DECIMAL_SI),
    "n": (10, -9, Format.DECIMAL_SI),
    "u": (10, -6, Format.DECIMAL_SI),
    "m": (10, -3, Format.DECIMAL_SI),
    "k": (10, 3, Format.DECIMAL_SI),
    "M": (10, 6, Format.DECIMAL_SI),
    "G": (10, 9, Format.DECIMAL_SI),
    "T": (10, 12, Format.DECIMAL_SI),
    "P": (10, 15, Format.DECIMAL_SI),
    "E": (10, 18, Format.DECIMAL_SI),
    "Ki": (2, 10, Format.BINARY_SI),
    "Mi": (2, 20, Format.BINARY_SI),
    "Gi": (2, 30, Format.BINARY_SI),
    "Ti": (2, 40, Format.BINARY_SI),
    "Pi": (2, 50, Format.BINARY_SI),
    "Ei": (2, 60, Format.BINARY_SI),
}
# What String() appends: decimal exponent -> suffix, base-1024 exponent -> suffix.
_DECIMAL_SUFFIX = {
    -9: "n",
    -6: "u",
    -3: "m",
    0: "",
    3: "k",
    6: "M",
    9: "G",
    12: "T",
    15: "P",
    18: "E",
}
_BINARY_SUFFIX = {1: "Ki", 2: "Mi", 3: "Gi", 4: "Ti", 5: "Pi", 6: "Ei"}

# How Go holds the number, which decides how Value() rounds negative amounts:
# ("int", v, s) is an int64Amount, v * 10**s (rounds away from zero);
# ("dec", u, s) is an inf.Dec, u * 10**s (see _scaled_value).
_Rep = tuple[Literal["int", "dec"], int, int]


def _int32(n: int) -> int:
    """n wrapped to a Go int32, as Go's int32 arithmetic does."""
    return (n + 2**31) % 2**32 - 2**31


def _pow10(places: int) -> int:
    """10**places for places >= 0, typed as int."""
    power: int = 10**places
    return power


def _go_trunc_div(a: int, b: int) -> tuple[int, int]:
    """Go's a / b and a % b for b > 0 (truncated towards zero)."""
    q = abs(a) // b
    q = q if a >= 0 else -q
    return q, a - q * b


@dataclass(frozen=True, order=False, eq=False)
class Quantity:
    """A Kubernetes resource.Quantity: an exact amount and the format it prints in.

    Compares (==, <, ...) and hashes by amount only, as Go's Cmp does.
    """

    amount: Fraction  # exact value after Kubernetes' parse rounding and cap
    format: Format
    _text: str | None = field(default=None, init=False, repr=False)
    _rep: _Rep = field(default=("int", 0, 0), init=False, repr=False)

    def __post_init__(self) -> None:
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, int | Fraction):
            raise TypeError(f"amount must be a Fraction, not {type(amount).__name__}")
        amount = Fraction(amount)
        unscaled, exponent = _decimal_parts(amount)
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "format", Format(self.format))
        object.__setattr__(self, "_rep", ("int", unscaled, exponent))

    @classmethod
    def _make(cls, amount: Fraction, fmt: Format, text: str | None, rep: _Rep) -> Quantity:
        quantity = cls(amount, fmt)
        object.__setattr__(quantity, "_text", text)
        object.__setattr__(quantity, "_rep", rep)
        return quantity

    @classmethod
    def parse(cls, text: str | int) -> Quantity:
        """Exactly Go's ParseQuantity; an int is parsed as str(int)."""
        if isinstance(text, bool) or not isinstance(text, str | int):
            raise TypeError(f"a quantity is a str or an int, not {type(text).__name__}")
        return _parse(text if isinstance(text, str) else str(text))

    @classmethod
    def from_millis(cls, millis: int) -> Quantity:
        """NewMilliQuantity(millis, DecimalSI): e.g. CPU millicores to write."""
        _check_int64(millis)
        return cls._make(Fraction(millis, 1000), Format.DECIMAL_SI, None, ("int", millis, -3))

    @classmethod
    def from_bytes(cls, value: int) -> Quantity:
        """NewQuantity(value, BinarySI): e.g. memory bytes to write."""
        _check_int64(value)
        return cls._make(Fraction(value), Format.BINARY_SI, None, ("int", value, 0))

    def value(self) -> int:
        """Value(): the amount rounded up to a whole unit (e.g. bytes)."""
        return self._scaled_value(0)

    def milli_value(self) -> int:
        """MilliValue(): the amount in thousandths, rounded up (e.g. millicores)."""
        return self._scaled_value(-3)

    def _scaled_value(self, scale: int) -> int:
        """Go's ScaledValue(scale): the amount in units of 10**scale, rounded up.

        Positive amounts are rounded up (ceiling). Negative ones round as Go's
        representation does: an int64Amount away from zero; an inf.Dec (from
        ParseQuantity's slow path) by Go's truncating fast path, which gives
        ceiling + 1 for non-whole results (Value() of "-1.5e-9" is 1).
        """
        kind, unscaled, exponent = self._rep
        if unscaled == 0:
            return 0
        if kind == "int":
            if exponent >= scale:
                return unscaled * _pow10(exponent - scale)
            quotient, remainder = divmod(abs(unscaled), _pow10(scale - exponent))
            quotient += 1 if remainder else 0
            return quotient if unscaled >= 0 else -quotient
        difference = scale - exponent  # Go: dec scale minus the new scale
        if difference <= 0:
            return unscaled * _pow10(-difference)
        divisor = _pow10(difference)
        if _INT64_MIN <= unscaled < _INT64_MAX and difference < 19:
            quotient, remainder = _go_trunc_div(unscaled, divisor)
        else:
            quotient, remainder = divmod(unscaled, divisor)
        return quotient + 1 if remainder else quotient

    def __str__(self) -> str:
        """Exactly Go's String()."""
        if self._text is not None:
            return self._text
        if self.format == Format.BINARY_SI and self._rep == ("int", _INT64_MIN, 0):
            return str(_INT64_MIN)  # Go's removeInt64Factors cannot negate -2**63
        return _canonical(self.amount, self.format)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount == other.amount

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount < other.amount

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount <= other.amount

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount > other.amount

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Quantity):
            return NotImplemented
        return self.amount >= other.amount

    def __hash__(self) -> int:
        return hash(self.amount)


def _check_int64(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, not {type(value).__name__}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} does not fit in an int64, as Kubernetes needs")


def _decimal_parts(amount: Fraction) -> tuple[int, int]:
    """(m, e) with amount == m * 10**e, m not a multiple of 10 (0 -> (0, 0))."""
    if amount == 0:
        return 0, 0
    denominator = amount.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        raise ValueError(f"{amount} is not a decimal number, so not a quantity")
    places = max(twos, fives)
    mantissa = amount.numerator * _pow10(places) // amount.denominator
    exponent = -places
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    return mantissa, exponent


def _canonical(amount: Fraction, fmt: Format) -> str:
    """Go's CanonicalizeBytes: the amount in canonical form."""
    if amount == 0:
        return "0"
    if fmt == Format.BINARY_SI:
        if -1024 < amount < 1024 or amount.denominator != 1:
            fmt = Format.DECIMAL_SI  # avoids rounding: print it as DecimalSI
        else:
            number, power = amount.numerator, 0
            while number % 1024 == 0:
                number //= 1024
                power += 1
            # Go has no suffix past Ei (and prints none): only reachable by construction.
            return f"{number}{_BINARY_SUFFIX.get(power, '')}"
    mantissa, exponent = _decimal_parts(amount)
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if fmt == Format.DECIMAL_EXPONENT:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    # Like Go, nothing is appended past E (10**18) or below n: "1000E" prints as "1".
    return f"{mantissa}{_DECIMAL_SUFFIX.get(exponent, '')}"


def _scan(text: str) -> tuple[bool, str, str, str, str] | None:
    """Go's parseQuantityString: (positive, value, num, denom, suffix), None if malformed."""
    positive = True
    pos = 0
    end = len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while True:  # leading zeros
        if pos >= end:
            return positive, "0", "0", "", ""
        if text[pos] != "0":
            break
        pos += 1
    start = pos
    while True:  # the integer part
        if pos >= end:
            return positive, text, text[start:], "", ""
        if text[pos] not in _DIGITS:
            break
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if text[pos] == ".":
        pos += 1
        start = pos
        while True:  # the fraction ("1." is allowed)
            if pos >= end:
                return positive, text, num, text[start:], ""
            if text[pos] not in _DIGITS:
                break
            pos += 1
        denom = text[start:pos]
    value = text[:pos]
    suffix_start = pos
    while True:  # the suffix's letters
        if pos >= end:
            return positive, value, num, denom, text[suffix_start:]
        if text[pos] not in _SUFFIX_CHARS:
            break
        pos += 1
    if text[pos] in "+-":
        pos += 1
    while True:  # an exponent's digits
        if pos >= end:
            return positive, value, num, denom, text[suffix_start:]
        if text[pos] not in _DIGITS:
            return None  # something after the exponent's digits
        pos += 1


def _interpret(suffix: str) -> tuple[int, int, Format] | None:
    """Go's suffixer.interpret: (base, exponent, format), None if unknown."""
    known = _SUFFIXES.get(suffix)
    if known is not None:
        return known
    if len(suffix) > 1 and suffix[0] in "eE":
        exponent = _go_parse_int64(suffix[1:])
        if exponent is None:
            return None
        return 10, _int32(exponent), Format.DECIMAL_EXPONENT  # Go truncates it to int32
    return None


def _go_parse_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64), None on error."""
    sign = -1 if text[:1] == "-" else 1
    digits = text[1:] if text[:1] in "+-" else text
    if not digits or any(c not in _DIGITS for c in digits):
        return None
    digits = digits.lstrip("0") or "0"
    if len(digits) > 19:
        return None
    number = sign * int(digits)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _parse(text: str) -> Quantity:
    """Go's ParseQuantity, fast path (int64Amount) and slow path (inf.Dec) alike."""
    if not text:
        raise QuantityError(text, _ERR_FORMAT)
    if text == "0":
        return Quantity._make(Fraction(0), Format.DECIMAL_SI, text, ("int", 0, 0))
    scanned = _scan(text)
    if scanned is None:
        raise QuantityError(text, _ERR_FORMAT)
    positive, value, num, denom, suffix = scanned
    interpreted = _interpret(suffix)
    if interpreted is None:
        raise QuantityError(text, _ERR_SUFFIX)
    base, exponent, fmt = interpreted

    mantissa = 1
    if fmt == Format.BINARY_SI:
        scale = 0
        if exponent >= 0 and not denom:
            mantissa = 1 << exponent
            # 1Mi (2^20) has ~6 digits of decimal precision (Go's estimate)
            precision = 15 - len(num) - exponent * 3 // 10 - 1
        else:
            precision = -1
    else:
        scale = exponent
        precision = 18 - (len(num) + len(denom))

    if precision >= 0:  # Go's fast path: an int64 times a power of ten
        scale = _int32(scale - len(denom))
        if scale >= _NANO:
            shifted = num + denom
            digits = int(shifted)
            result = digits * mantissa
            if result <= _INT64_MAX:
                if not positive:
                    result = -result
                if fmt == Format.BINARY_SI:
                    canonical = exponent % 10 == 0 and digits & 0x07 != 0
                else:
                    canonical = scale % 3 == 0 and not shifted.endswith("000") and shifted[0] != "0"
                if result:
                    _check_magnitude(text, len(str(abs(result))) + scale)
                amount = result * Fraction(10) ** scale if result else Fraction(0)
                rep: _Rep = ("int", result, scale)
                return Quantity._make(amount, fmt, text if canonical else None, rep)

    # Go's slow path: an inf.Dec, rounded up to nano units, BinarySI capped.
    # inf.Dec's SetString: the sign, digits and point of `value`, at least one digit.
    negative = value[:1] == "-"
    whole, _, fraction = value.lstrip("+-").partition(".")
    if not whole and not fraction:
        raise QuantityError(text, _ERR_NUMERIC)
    significant = (whole + fraction).lstrip("0")
    if not significant:
        return Quantity._make(Fraction(0), fmt, None, ("dec", 0, 0))
    if len(significant) > _MAX_DIGITS:
        raise QuantityError(text, _ERR_RANGE)
    magnitude = int(significant)
    if base == 10:
        power = -_int32(len(fraction) + _int32(-exponent))  # amount = magnitude * 10**power
        length = len(significant)
    else:
        magnitude <<= exponent
        power = -len(fraction)
        length = len(str(magnitude))
    if length + power <= _NANO:
        nanos = 1  # below one nano unit: rounds up to it
    else:
        _check_magnitude(text, length + power)
        if power >= _NANO:
            nanos = magnitude * _pow10(power - _NANO)
        else:
            nanos, remainder = divmod(magnitude, _pow10(_NANO - power))
            nanos += 1 if remainder else 0
    rep = ("dec", nanos, _NANO)
    if fmt == Format.BINARY_SI and nanos > _INT64_MAX * 10**9:
        nanos, rep = _INT64_MAX * 10**9, ("dec", _INT64_MAX, 0)
    if fmt == Format.BINARY_SI and nanos < 10**9:
        fmt = Format.DECIMAL_SI  # BinarySI below 1 becomes DecimalSI
    if negative:
        nanos = -nanos
        rep = (rep[0], -rep[1], rep[2])
    return Quantity._make(Fraction(nanos, 10**9), fmt, None, rep)


def _check_magnitude(text: str, digits: int) -> None:
    """Refuse amounts of 10**_MAX_DIGITS or more (digits: the count before the point)."""
    if digits > _MAX_DIGITS:
        raise QuantityError(text, _ERR_RANGE)


def parse(text: str) -> Fraction:
    """The exact value of a quantity string: Quantity.parse(text).amount."""
    return Quantity.parse(text).amount


def parse_cpu_millis(text: str | int) -> int:
    """CPU quantity to millicores, rounded up like a Pod's ("500m" -> 500, "0.5m" -> 1)."""
    return Quantity.parse(text).milli_value()


def parse_bytes(text: str | int) -> int:
    """Memory quantity to bytes, rounded up like a Pod's ("256Mi" -> 268435456, "100m" -> 1)."""
    return Quantity.parse(text).value()


def format_cpu(millis: int) -> str:
    """Millicores as Kubernetes prints them: 2000 -> "2", 500 -> "500m", 1500 -> "1500m"."""
    return str(Quantity.from_millis(millis))


def format_bytes(value: int) -> str:
    """Bytes as Kubernetes prints BinarySI: 2**30 -> "1Gi", 1500 -> "1500", 1000 -> "1k"."""
    return str(Quantity.from_bytes(value))


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def format_bytes_approx(value: float) -> str:
    """Bytes rounded for tables: 1.5Gi, 312Mi, 4Ki."""
    for suffix, factor in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
        if abs(value) >= factor:
            scaled = value / factor
            return f"{scaled:.1f}{suffix}" if scaled < 10 else f"{scaled:.0f}{suffix}"
    return f"{value:.0f}"
