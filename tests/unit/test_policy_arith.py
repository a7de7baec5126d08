"""OPA's arithmetic (policy/arith.py) and the load-time rewrite that routes operators to it.

Without the OPA oracle: the expected texts below are OPA's own (tests/differential checks them
against the engine); the properties check the float machinery against Python's doubles.
"""

from __future__ import annotations

import hashlib
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.policy import arith
from hardened_launcher.policy.builtins import (
    code_points,
    json_number_texts,
    time_layout,
    time_trim,
    to_number,
    units_integral,
)
from hardened_launcher.policy.engine import compile_policy
from hardened_launcher.policy.errors import PolicyCompileError, PolicyEvaluationError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax
from hardened_launcher.policy.static_checks import apply_edits_bytes

DOUBLES = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)


@given(DOUBLES.filter(lambda x: x != 0))
def test_a_double_is_its_own_53_bit_rounding(x: float) -> None:
    assert arith.round_to_bits(Fraction(x), 53) == Fraction(x)


@given(
    st.floats(min_value=1e-4, max_value=1e6, exclude_max=True).filter(lambda x: not x.is_integer()),
    st.booleans(),
)
def test_shortest_text_at_53_bits_is_pythons_repr(magnitude: float, negative: bool) -> None:
    x = -magnitude if negative else magnitude
    # Python's repr is the shortest text that reads back as the same double: Go's 'g' at -1
    assert arith.shortest_text(Fraction(x), 53) == repr(x)


@given(
    st.one_of(st.floats(min_value=1e6, max_value=1e300), st.floats(1e-300, 1e-4, exclude_max=True))
)
def test_shortest_text_uses_an_exponent_outside_go_s_range(x: float) -> None:
    text = arith.shortest_text(Fraction(x), 53)
    # an integer prints as 'f': its shortest digits padded with zeros, never an exponent
    assert ("e" in text) != x.is_integer()
    assert float(text) == x


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        (arith.plus, 0.1, 0.2, 0.3),
        (arith.plus, 2**62, 2**62, 2**63),
        (arith.minus, 1.5, 0.5, 1),
        (arith.multiply, 3, 0.1, 0.3),
        (arith.multiply, 1.5, 1.5, 2.25),
        (arith.divide, 10, 4, 2.5),
        (arith.divide, 4, 2, 2),
        (arith.remainder, -7, 3, -1),  # Go truncates
        (arith.remainder, 7, -3, 1),
    ],
)
def test_results_the_engine_can_hold(op: object, a: float, b: float, expected: float) -> None:
    result = op(a, b)  # type: ignore[operator]
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("op", "a", "b", "words"),
    [
        (arith.multiply, 0.1, 0.2, "0.020000000000000000001"),
        (arith.divide, 1, 3, "0.33333333333333333334"),
        (arith.minus, 0.7, 0.1, "0.59999999999999999997"),
        (arith.divide, 0.5, 100000, "5e-06"),
        (arith.multiply, 1234567.5, 1, "1.2345675e+06"),
        (arith.multiply, 2**40, 2**40, "beyond 64 bits"),
        (arith.multiply, 0, -0.5, "-0"),
        (arith.divide, 0, -5, "-0"),
        (arith.divide, 1, 0, "divide by zero"),
        (arith.divide, 1, 0.0, "divide by zero"),
        (arith.remainder, 7.5, 2, "floating-point"),
        (arith.remainder, 7, 0, "modulo by zero"),
    ],
)
def test_results_the_engine_cannot_hold_are_errors(
    op: object, a: float, b: float, words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("+", r"\+")):
        op(a, b)  # type: ignore[operator]


@pytest.mark.parametrize("value", ["a", True, None, [1], math.inf])
def test_operands_must_be_finite_numbers(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        arith.plus(value, 1)


@given(st.integers(-(2**62), 2**62), st.integers(-(2**62), 2**62))
def test_integers_are_exact(a: int, b: int) -> None:
    assert arith.plus(a, b) == a + b
    assert arith.minus(a, b) == a - b


def test_sum_and_product_use_opas_accumulators() -> None:
    assert arith.opa_sum([0.1, 0.2, 0.3]) == 0.6
    assert arith.opa_sum({1, 2, 3}) == 6
    assert arith.opa_sum([]) == 0
    with pytest.raises(ValueError, match=r"0\.59999999999999999997"):
        arith.opa_sum([0.7, -0.1])
    # product accumulates in a 53-bit float (big.NewFloat(1)): double-like results
    assert arith.opa_product([0.1, 0.2]) == 0.02
    assert repr(arith.opa_product([0.7, 3])) == "2.0999999999999996"
    # an integral 53-bit result is OPA's shortest digits padded with zeros
    assert arith.opa_product([65318062.4, -2147483648]) == -140269470923043630
    assert arith.opa_product([]) == 1
    with pytest.raises(TypeError):
        arith.opa_sum(["a"])


def test_launcher_builtins_for_the_rewrites() -> None:
    assert code_points("a😀b") == 3
    assert time_trim(1, "2024-03-01T00:00:00.050Z") == "2024-03-01T00:00:00.05Z"
    assert time_trim([1, "UTC"], "2024-03-01T09:00:00.100+09:00") == "2024-03-01T09:00:00.1+09:00"
    assert time_trim(1, "2024-03-01T00:00:00.000Z") == "2024-03-01T00:00:00Z"
    assert time_trim([1, "UTC", "15:04:05.000"], "00:00:00.050") == "00:00:00.050"
    assert time_layout([1, "UTC", "2006-01-02"]) == [1, "UTC", "2006-01-02"]
    for layout in ("15:04 MST", "15:04:05.999"):
        with pytest.raises(ValueError, match=r"time\.format"):
            time_layout([1, "UTC", layout])
    assert json_number_texts('{"a": [1, 0.5, "1.0"]}') == '{"a": [1, 0.5, "1.0"]}'
    assert json_number_texts("{bad") == "{bad"  # the engine's parser reports it
    for text in ("1.0", "[2.50]", "1e3", "18446744073709551616"):
        with pytest.raises(ValueError, match=r"json\.unmarshal"):
            json_number_texts(text)
    assert units_integral(1500) == 1500
    with pytest.raises(ValueError, match=r"units\.parse"):
        units_integral(0.0015)
    assert to_number("0.5") == 0.5
    for text in ("0.10", "1e3", "1.0", "-0.0"):
        with pytest.raises(ValueError, match="shortest form"):
            to_number(text)


def test_edits_apply_in_order_and_insertions_follow_a_replacement() -> None:
    raw = b"abcdef"
    assert apply_edits_bytes(raw, [(1, 3, "X"), (3, 3, "+"), (0, 0, "<")]) == "<aX+def"
    with pytest.raises(ValueError, match="overlapping"):
        apply_edits_bytes(raw, [(1, 4, "X"), (2, 3, "Y")])


def _engine(text: str) -> object:
    bundle = PolicyBundle(
        root=Path(),
        files=(PolicyFile(path="p.rego", text=text),),
        data={},
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    return compile_policy(
        bundle, sanitizer=Sanitizer.random(), syntax=Syntax.AUTO, require_deny=False
    )[0]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("r := (input.a + 1) * 2", 2.2),
        ("r := input.a + input.b == 0.3", True),
        ('r := count("😀") + count([1, 2]) * 2', 5),
        ("r := {1, 2, 3} - {2}", [1, 3]),
        ("r := [x | some x in [1, 2]; x % 2 == 0]", [2]),
        ('r := sprintf("%d", [count(input.s) * (2 + 1)])', "9"),
        ("r := x if { not input.a + 1 > 2; x := 1 }", 1),
        ('r := time.format([1709251200050000000, "UTC"])', "2024-03-01T00:00:00.05Z"),
    ],
)
def test_rewritten_operators_evaluate_as_opa(rules: str, expected: object) -> None:
    engine = _engine(f"package t\n\n{rules}\n")
    engine.set_input_json(json.dumps({"a": 0.1, "b": 0.2, "s": "a😀b"}))  # type: ignore[attr-defined]
    assert json.loads(engine.eval_rule_json("data.t.r")) == expected  # type: ignore[attr-defined]


def test_legacy_v0_files_are_rewritten_too() -> None:
    engine = _engine('package t\n\nr = x { x := count("😀") + 1 }\n')
    engine.set_input_json("{}")  # type: ignore[attr-defined]
    assert engine.eval_rule("data.t.r") == 2  # type: ignore[attr-defined]


def test_sort_of_sets_beside_objects_fails_the_evaluation() -> None:
    engine = _engine("package t\n\nr := sort(array.concat([{1}], [input.o]))\nok := sort([2, 1])\n")
    engine.set_input_json('{"o": {"a": 1}}')  # type: ignore[attr-defined]
    assert engine.eval_rule("data.t.ok") == [1, 2]  # type: ignore[attr-defined]
    with pytest.raises(PolicyEvaluationError, match="sets and objects"):
        engine.eval_rule("data.t.r")  # type: ignore[attr-defined]


def test_an_unrepresentable_result_fails_the_evaluation() -> None:
    engine = _engine("package t\n\nr := input.a / 3\n")
    engine.set_input_json('{"a": 1}')  # type: ignore[attr-defined]
    with pytest.raises(PolicyEvaluationError, match="more digits than"):
        engine.eval_rule("data.t.r")  # type: ignore[attr-defined]


def test_the_runtime_module_is_not_a_rule_of_the_policy() -> None:
    engine = _engine("package t\n\nr := 1 + 1\n")
    assert all("hl_runtime" not in rule.package for rule in engine.rules())  # type: ignore[attr-defined]


def test_arithmetic_on_a_string_literal_is_refused() -> None:
    with pytest.raises(PolicyCompileError, match=r"p\.rego:3:7: arithmetic on a value"):
        _engine('package t\n\nr := "a" + 1\n')
