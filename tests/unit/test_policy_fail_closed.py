"""Constructs the engine cannot evaluate as OPA does are refused (load time) or fail (run time).

Without the OPA oracle: the refusal names ``file:line:col`` with a hint, and the run-time
checks raise instead of computing a value OPA would not compute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy.builtins import BUILTINS, to_number
from hardened_launcher.policy.engine import compile_policy
from hardened_launcher.policy.errors import PolicyCompileError
from hardened_launcher.policy.regovalue import check_lossless
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax

BUILTIN = {name: function for name, _, function in BUILTINS}


def _compile(text: str) -> object:
    bundle = PolicyBundle(
        root=Path(),
        files=(PolicyFile(path="p.rego", text=text),),
        data={},
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    engine, _ = compile_policy(
        bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V1, require_deny=False
    )
    return engine


def _refusal(body: str) -> PolicyCompileError:
    with pytest.raises(PolicyCompileError) as caught:
        _compile(f"package t\n\n{body}\n")
    return caught.value


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ("r := 0.10000000000000001 == input.a", "p.rego:3:6", "more digits than a double"),
        ("r if {\n  x := input.a\n  x > 2.20000000000000001\n}", "p.rego:5:7", "more digits"),
        ("r := 100000000000000000000 / 3", "p.rego:3:6", "beyond 64 bits"),
        ("r := input.n * 9007199254740993.0", "p.rego:3:16", "beyond 2^53"),
        ("r := json.marshal(1.0)", "p.rego:3:19", "shortest form"),
        ('r := sprintf("%v", [1e-10])', "p.rego:3:21", "shortest form"),
        ('r := sort([{1}, {"a": 1}])', "p.rego:3:11", "objects before sets"),
        ('r := {"a": 1} < {1}', "p.rego:3:6", "objects before sets"),
        ('r := "a" + 1', "p.rego:3:7", "not a number"),
        ('r := {input.k: 1, "a": 2}', "p.rego:3:7", "computed key"),
        ('r := "b" in input.missing', "p.rego:3:7", "used as a value"),
        ('r := print("x")', "p.rego:3:6", "print() used as a value"),
        ('r := input.x in ["a"]', "p.rego:3:6", "used as a value"),
        ("r if {\n  some x\n  x := 1\n}", "p.rego:5:3", "declared by `some`"),
        ("r := [1, 2][2]", "p.rego:3:6", "constant index"),
        ('r := {"a": 1}.b', "p.rego:3:6", "constant index"),
        ('r := yaml.unmarshal("a: yes")', "p.rego:3:6", "YAML 1.1"),
        ('r := uuid.parse("x")', "p.rego:3:6", "variants"),
        ('r := json.match_schema({}, {"type": "object"})', "p.rego:3:6", "null"),
        ('r := json.patch({}, [{"op": "remove", "path": "/z"}])', "p.rego:3:6", "undefined"),
        ('r := time.parse_ns("2006-01-02", "2024-3-4")', "p.rego:3:6", "rfc3339"),
    ],
)
def test_refusals_name_the_place_and_the_fix(body: str, where: str, words: str) -> None:
    error = _refusal(body)
    assert error.message.startswith(f"{where}: "), error.message
    assert words in error.message
    assert error.hint
    assert error.reason == "policy_compile_error"


@pytest.mark.parametrize(
    "body",
    [
        "r := 1 + 2",
        "r := 0.5 * 4 == 2",  # exact in binary
        "r := 1.0 + 1",
        "r := 9223372036854775807 - 1",
        "r := 1e20 > 1",  # a comparison of exact floats
        "r := input.n * 1e17",  # exact in a double: computed as OPA does
        "r := 0.1 + 0.2 == 0.3",  # OPA's arithmetic (64-bit mantissa), a double holds the result
        "r := {1, 2} - {input.x}",
        "r := count(input.s) + 1",
        'r := sprintf("%.2f", [0.1])',  # not arithmetic
        'r := {"a": input.x, "b": 2}',
        "r := {input.k: 1}",
        'r if "b" in input.x',
        'r if { not "b" in input.x }',
        'r := [x | some x in input.l; x in {"a"}]',
        "r := [1, 2][1]",
        'r := {"a": 1}.a',
        'r if print("x")',
    ],
)
def test_what_means_the_same_still_loads(body: str) -> None:
    assert _compile(f"package t\n\n{body}\n") is not None


@given(
    st.lists(
        st.one_of(st.booleans(), st.integers(-3, 3), st.text(max_size=2)), min_size=1, max_size=6
    )
)
def test_sets_with_a_boolean_are_refused_wherever_they_are(items: list[object]) -> None:
    # the engine hands a set over in Rego order, booleans first: a 0 after False is dropped
    ordered: list[object] = [item for item in items if isinstance(item, bool)]
    ordered += [item for item in items if not isinstance(item, bool)]
    handed = set(ordered)
    has_bool = any(isinstance(item, bool) for item in items)
    assert has_bool == any(isinstance(item, bool) for item in handed)
    for value in (handed, [handed], {"k": frozenset(handed)}, [[{"x": handed}]]):
        if has_bool:
            with pytest.raises(ValueError, match="boolean"):
                check_lossless(value, "f")
        else:
            check_lossless(value, "f")  # no boolean: 0 and 1 lost nothing
            assert not any(isinstance(item, bool) for item in items)


@pytest.mark.parametrize("key", [True, False])
def test_objects_keyed_by_a_boolean_are_refused(key: bool) -> None:
    with pytest.raises(ValueError, match="keyed by a boolean"):
        check_lossless([{key: 1, "a": 2}], "f")


def test_a_set_with_a_boolean_fails_the_evaluation() -> None:
    engine = _compile('package t\n\nr := sprintf("%v", [{x | some x in input.l}])\n')
    engine.set_input_json(json.dumps({"l": [False, 0]}))  # type: ignore[attr-defined]
    with pytest.raises(LauncherError, match="boolean"):
        engine.eval_rule("data.t.r")  # type: ignore[attr-defined]
    engine.set_input_json(json.dumps({"l": [2, 0]}))  # type: ignore[attr-defined]
    assert engine.eval_rule("data.t.r") == "{0, 2}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [-0.5, -0.999, -1e-9])
@pytest.mark.parametrize("name", ["ceil", "floor"])
def test_rounding_in_the_range_opa_gets_wrong_is_an_error(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=r"\(-1, 0\)"):
        BUILTIN[name](value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("ceil", 1.5, 2), ("floor", 1.5, 1), ("ceil", -1.5, -1), ("floor", -1.5, -2), ("ceil", 7, 7)],
)
def test_rounding_elsewhere(name: str, value: float, expected: int) -> None:
    assert BUILTIN[name](value) == expected


@pytest.mark.parametrize("text", ["18446744073709551616", "-9223372036854775809", "1" * 40])
def test_to_number_beyond_64_bits_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="beyond 64 bits"):
        to_number(text)


@pytest.mark.parametrize(
    "text", ["18446744073709551615", "-9223372036854775808", "9007199254740993"]
)
def test_to_number_within_64_bits_is_exact(text: str) -> None:
    assert to_number(text) == int(text)
