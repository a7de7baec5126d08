"""Arithmetic as OPA computes it, for the operators the launcher rewrites into calls at load time.

OPA keeps every number as its text and computes in the narrowest exact form: integers exactly
(any size), other numbers as binary floats with a 64-bit mantissa (Go's ``big.Float`` default),
the result printed back as the shortest text that reads back as the same 64-bit float
(``0.1 + 0.2`` is ``0.3``; ``1 / 3`` is ``0.33333333333333333334``). The engine computes with
64-bit integers and IEEE doubles, so :mod:`~hardened_launcher.policy.static_checks` rewrites
``a + b``, ``a - b``, ``a * b``, ``a / b`` and ``a % b`` into the extensions below, which compute
OPA's result exactly and hand it back only when the engine can hold it *as the same number with
the same text*: an integer within 64 bits, or a double whose shortest text is OPA's text. Any
other result (more digits than a double holds, exponent notation, ``-0``, beyond 64 bits) is an
evaluation error, so the run is denied rather than decided on a value OPA does not have.

The operands are read back the same way: an integer as itself, a double as its shortest text
(which is what the policy, the input or an earlier checked result wrote; the input and the
literals are checked for that at load time).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction

MANTISSA_BITS = 64  # big.Float's precision when set from a string
DOUBLE_BITS = 53  # big.NewFloat(1)'s precision, which OPA's product accumulates in
SMALL = 2**31  # OPA's "small int" window: [-2^31, 2^31)
RESULT_MIN = -(2**63)
RESULT_MAX = 2**64 - 1  # the engine holds unsigned 64-bit integers too
_MAX_DIGITS = 40


class UnrepresentableResultError(ValueError):
    """An operation whose result the engine cannot hold as OPA's number."""


def _operand(value: object, position: int, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: operand {position} must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrepresentableResultError(f"{name}: operand {position} is not finite")
        return Fraction(repr(value))
    return Fraction(value)


def round_to_bits(value: Fraction, bits: int = MANTISSA_BITS) -> Fraction:
    """``value`` rounded to a binary float with a ``bits``-bit mantissa, ties to even."""
    if value == 0:
        return Fraction(0)
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    scale = Fraction(2) ** (bits - 1 - exponent)
    scaled = magnitude * scale
    mantissa = scaled.numerator // scaled.denominator
    rest = scaled - mantissa
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and mantissa % 2 == 1):
        mantissa += 1
    return sign * mantissa / scale


def _ulp_bounds(value: Fraction, bits: int) -> tuple[Fraction, Fraction, bool]:
    """The interval of reals that round to ``value`` (a ``bits``-bit float), and whether its
    ends round to it too (an even mantissa wins the tie)."""
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** exponent > magnitude:
        exponent -= 1
    ulp = Fraction(2) ** (exponent - (bits - 1))
    mantissa = magnitude / ulp
    lower_gap = ulp / 4 if magnitude == Fraction(2) ** exponent else ulp / 2
    inclusive = mantissa.numerator % 2 == 0
    return magnitude - lower_gap, magnitude + ulp / 2, inclusive


def _digits_round(value: Fraction, digits: int) -> tuple[int, int]:
    """``value`` (positive) to ``digits`` significant decimal digits: (mantissa, exponent)."""
    context = decimal.Context(prec=digits, rounding=decimal.ROUND_HALF_EVEN)
    rounded = context.divide(Decimal(value.numerator), Decimal(value.denominator))
    _, digit_tuple, exponent = rounded.as_tuple()
    return int("".join(map(str, digit_tuple))), int(exponent)


def shortest_text(value: Fraction, bits: int = MANTISSA_BITS) -> str:
    """Go's ``big.Float.Text('g', -1)`` of a ``bits``-bit float; for an integer ``'f'``: the
    shortest digits padded with zeros (a 53-bit 140269470923043632 is 140269470923043630)."""
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    lower, upper, inclusive = _ulp_bounds(value, bits)
    for digits in range(1, _MAX_DIGITS):
        mantissa, exponent = _digits_round(magnitude, digits)
        for candidate in (mantissa, mantissa - 1, mantissa + 1):
            text_value = candidate * Fraction(10) ** exponent
            inside = lower < text_value < upper or (inclusive and text_value in (lower, upper))
            if candidate > 0 and inside:
                if magnitude.denominator == 1 and exponent >= 0:
                    return sign + str(candidate) + "0" * exponent
                return sign + _g_format(candidate, exponent)
    raise UnrepresentableResultError("the result has no short decimal form")


def _g_format(mantissa: int, exponent: int) -> str:
    """``%g`` with the shortest digits: exponent form below 1e-4 or from 1e6 on (eprec 6)."""
    text = str(mantissa).rstrip("0")
    exponent += len(str(mantissa)) - len(text)
    point = len(text) + exponent  # digits before the decimal point
    if point - 1 < -4 or point - 1 >= 6:
        head = text[0] + ("." + text[1:] if len(text) > 1 else "")
        power = point - 1
        return f"{head}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if point <= 0:
        return "0." + "0" * (-point) + text
    if point >= len(text):
        return text + "0" * (point - len(text))
    return text[:point] + "." + text[point:]


def _result(value: Fraction, *, name: str, exact: bool, bits: int = MANTISSA_BITS) -> int | float:
    """OPA's result as the engine can hold it, or an error (the run is denied)."""
    if not exact and value.denominator == 1:
        value = Fraction(int(shortest_text(value, bits)))  # OPA's 'f' text of the float
    if value.denominator == 1:
        number = value.numerator
        if not RESULT_MIN <= number <= RESULT_MAX:
            raise UnrepresentableResultError(
                f"{name}: the result is beyond 64 bits (OPA keeps it exact, the engine cannot)"
            )
        return number
    text = shortest_text(value, bits)
    if "e" in text:
        raise UnrepresentableResultError(
            f"{name}: OPA writes the result {text} in exponent notation, which the engine "
            "cannot reproduce"
        )
    double = float(text)
    if repr(double) != text:
        raise UnrepresentableResultError(
            f"{name}: OPA computes the result as {text}, more digits than the engine's "
            "doubles hold; scale to integers"
        )
    return double


def _is_small(value: Fraction) -> bool:
    return value.denominator == 1 and -SMALL <= value < SMALL


def _as_integer(value: Fraction) -> int | None:
    """OPA's NumberToInt: the operand read as a 64-bit float, if that is an integer."""
    rounded = round_to_bits(value)
    return rounded.numerator if rounded.denominator == 1 else None


def _go_quotient(x: int, y: int) -> int:
    """Go's integer division (truncates toward zero)."""
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _go_remainder(x: int, y: int) -> int:
    return x - _go_quotient(x, y) * y


def _binary(
    name: str,
    exact: Callable[[int, int], int] | None,
    floating: Callable[[Fraction, Fraction], Fraction] | None,
) -> Callable[[object, object], int | float]:
    def operation(a: object, b: object) -> int | float:
        x, y = _operand(a, 1, name), _operand(b, 2, name)
        if name == "div":
            return _divide(x, y)
        if exact is not None:
            if _is_small(x) and _is_small(y):
                return _result(Fraction(exact(x.numerator, y.numerator)), name=name, exact=True)
            ix, iy = _as_integer(x), _as_integer(y)
            if ix is not None and iy is not None:
                return _result(Fraction(exact(ix, iy)), name=name, exact=True)
        if floating is None:
            raise UnrepresentableResultError(f"{name}: modulo on floating-point number")
        result = round_to_bits(floating(round_to_bits(x), round_to_bits(y)))
        if name == "mul" and result == 0 and (x < 0) != (y < 0):
            raise UnrepresentableResultError(
                "mul: OPA's product is -0, which the engine cannot hold"
            )
        return _result(result, name=name, exact=False)

    return operation


def _divide(x: Fraction, y: Fraction) -> int | float:
    if _is_small(x) and _is_small(y):
        if y == 0:
            raise UnrepresentableResultError("div: divide by zero")
        if x != 0 and _go_remainder(x.numerator, y.numerator) == 0:
            return _result(x / y, name="div", exact=True)
    fx, fy = round_to_bits(x), round_to_bits(y)
    if fy == 0:
        raise UnrepresentableResultError("div: divide by zero")
    result = round_to_bits(fx / fy)
    if result == 0 and (fx < 0) != (fy < 0) and fx == 0:
        raise UnrepresentableResultError("div: OPA's quotient is -0, which the engine cannot hold")
    return _result(result, name="div", exact=False)


def _remainder(x: int, y: int) -> int:
    if y == 0:
        raise UnrepresentableResultError("rem: modulo by zero")
    return _go_remainder(x, y)


plus = _binary("plus", lambda x, y: x + y, lambda x, y: x + y)
minus = _binary("minus", lambda x, y: x - y, lambda x, y: x - y)
multiply = _binary("mul", lambda x, y: x * y, lambda x, y: x * y)
divide = _binary("div", None, None)
remainder = _binary("rem", _remainder, None)


def _elements(values: object, name: str) -> list[Fraction]:
    if isinstance(values, set | frozenset):
        items = sorted(values, key=lambda v: (not isinstance(v, int | float), v))  # OPA's order
    elif isinstance(values, list):
        items = list(values)
    else:
        raise TypeError(f"{name}: operand 1 must be an array or a set")
    return [_operand(item, 1, name) for item in items]


def opa_sum(values: object) -> int | float:
    """OPA's ``sum``: exact over integers, else a 64-bit-mantissa float accumulator."""
    numbers = _elements(values, "sum")
    integers = [_as_integer(n) for n in numbers]
    if all(i is not None for i in integers):
        return _result(Fraction(sum(i for i in integers if i is not None)), name="sum", exact=True)
    total = Fraction(0)
    for number in numbers:
        total = round_to_bits(total + round_to_bits(number))
    return _result(total, name="sum", exact=False)


def opa_product(values: object) -> int | float:
    """OPA's ``product``: exact over integers, else a float accumulator that starts as
    ``big.NewFloat(1)`` and so keeps a 53-bit mantissa (a double's)."""
    numbers = _elements(values, "product")
    integers = [_as_integer(n) for n in numbers]
    if all(i is not None for i in integers):
        result = 1
        for i in integers:
            result *= i or 0
        return _result(Fraction(result), name="product", exact=True)
    total = Fraction(1)
    for number in numbers:
        total = round_to_bits(total * round_to_bits(number), DOUBLE_BITS)
    if total == 0 and sum(n < 0 for n in numbers) % 2:
        raise UnrepresentableResultError("product: OPA's product is -0")
    return _result(total, name="product", exact=False, bits=DOUBLE_BITS)


# name, arity, function: registered on every engine (the rewritten operators call them)
EXTENSIONS: tuple[tuple[str, int, Callable[..., object]], ...] = (
    ("hl.arith.plus", 2, plus),
    ("hl.arith.minus", 2, minus),
    ("hl.arith.mul", 2, multiply),
    ("hl.arith.div", 2, divide),
    ("hl.arith.rem", 2, remainder),
)
