"""Where the launcher's engine cannot mean what OPA means, it refuses: never a run OPA denies.

Each class of difference is tried with several members: the launcher must refuse the policy at
load time or fail the evaluation (both deny the run) whatever OPA answers, and the rewrite the
refusal's hint suggests must agree with OPA.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.differential.oracle import REFUSED, Opa, ours

INPUT: dict[str, Any] = {
    "a": 0.1,
    "b": 0.2,
    "k": "a",
    "s": "x😀",
    "n": 7,
    "l": [False, 0, True, 1],
    "t": "not.a.jwt",
}

# (class, rule body as `r := …` or full rules)
REFUSED_HERE: list[tuple[str, str]] = [
    # arithmetic whose result OPA holds with more digits than a double (64-bit mantissa)
    ("decimal", "r := input.n * 1.1"),
    ("decimal", "r := input.n / 0.3"),
    ("decimal", "r := 1 / 3"),
    ("decimal", "r := 0.7 - input.a"),
    ("decimal", "r := 1 - 0.9"),
    ("decimal", "r := input.a * input.b"),
    ("decimal", "r := (input.a + 1) * 3"),
    ("decimal", "r := input.n / 3 * 3 == input.n"),
    # results OPA writes in exponent notation (its sprintf then takes them as strings)
    ("decimal", "r := input.a / 100000"),
    ("decimal", "r := input.n * 1234567.5"),
    # literals whose text OPA keeps where it shows (json.marshal, sprintf)
    ("text", "r := json.marshal(1.0)"),
    ("text", "r := json.marshal([1e3])"),
    ("text", 'r := sprintf("%v", [1e-10])'),
    ("text", 'r := json.marshal({"a": 2.50})'),
    ("text", "r := x if { x := 0.000012345 }"),
    ("text", "r := 0.10000000000000001 == input.a"),
    # a set beside an object where their order shows
    ("order", 'r := sort([{1}, {"a": 1}])'),
    ("order", 'r := [x | some x in {{1}, {"a": 1}}]'),
    ("order", 'r := {"a": 1} < {1}'),
    ("order", "r := {1} >= input.o"),
    ("order", "r := [{1}, input.o]"),
    # ... also where the set arrives through a variable, a set rule or a set builtin
    ("order", 'r := s if { a := {1}; b := {"a": 1}; s := {x | some x in [a, b]} }'),
    ("order", "r if { a := {1}; b := input.o; a < b }"),
    ("order", 'r if { a := {1}; c := a | {2}; {"a": 1} > c }'),
    ("order", 'r := {s, {"a": 1}}\ns contains 1 if true'),
    ("order", 'r := {union({{1}}), {"a": 1}}'),
    # count of a string counts code points (agrees now); time.format layouts that differ
    ("time", 'r := time.format([0, "Asia/Tokyo", "15:04 MST"])'),
    ("time", 'r := time.format([50, "UTC", "15:04:05.999999999"])'),
    # integers beyond 64 bits in arithmetic, floats beyond 2^53
    ("big", "r := 100000000000000000000 / 3"),
    ("big", "r := input.n + 18446744073709551616"),
    ("big", "r := -9223372036854775809 - 1"),
    ("big", "r := input.n * 1e20"),
    ("big", "r := 9007199254740993.0 + 0"),
    ("big", 'r := to_number("123456789012345678901234567890")'),
    ("big", 'r := to_number("-99999999999999999999")'),
    # an object literal that can hold one key twice
    ("object", 'r := {input.k: 1, "a": 2}'),
    ("object", 'r := {"a": 2, input.k: 1}'),
    ("object", "r := {input.k: 1, input.k: 2}"),
    ("object", 'r if { k := input.k; o := {k: 1, "b": 2}; o.a == 1 }'),
    # `in` as a value over a collection that may be undefined
    ("in", 'r := "b" in input.missing'),
    ("in", 'r := ["b" in input.missing]'),
    ("in", 'r if { v := "b" in input.missing; v == false }'),
    ("in", 'r := "a" in data.nowhere'),
    ("in", 'r := sprintf("%v", ["b" in input.missing])'),
    ("in", 'r := input.missing in ["a"]'),
    ("in", 'r := [input.missing in {"a"}]'),
    ("in", 'r := "a", 1 in {"a": input.missing}'),
    # `some x` then `x := …`: OPA refuses the redeclaration
    ("some", "r if { some x; x := 1 }"),
    ("some", "r if { some x, y; [x, y] := [1, 2] }"),
    ("some", "r := [y | some y; y := 2]"),
    # print() as a value, constant index the literal lacks
    ("print", 'r := print("x")'),
    ("print", 'r := [print("x")]'),
    ("index", "r := [1, 2][5]"),
    ("index", "r := [1, 2][-1]"),
    ("index", 'r := {"a": 1}.b'),
    ("index", 'r := {"a": 1}["b"]'),
    # builtins whose result differs: refused by name
    ("builtin", 'r := yaml.unmarshal("a: yes")'),
    ("builtin", 'r := yaml.unmarshal("a: on")'),
    ("builtin", 'r := yaml.unmarshal("a: 0777")'),
    ("builtin", 'r := uuid.parse("00000000-0000-0000-0000-000000000000")'),
    ("builtin", 'r := json.match_schema({"a": 1}, {"type": "object"})'),
    ("builtin", 'r := json.patch({"a": 1}, [{"op": "add", "path": "/b", "value": 2}])'),
    ("builtin", 'r := time.parse_ns("2006-01-02", "2024-03-04")'),
    # sets holding a boolean handed to a launcher builtin (Python's False == 0)
    ("set", 'r := sprintf("%v", [{false, 0}])'),
    ("set", 'r := sprintf("%v", [{true, 1, 2}])'),
    ("set", "r := json.marshal({x | some x in input.l})"),
    ("set", 'r := json.marshal({"a": {true}})'),
    ("set", "r := array.flatten([[{false, 0}]])"),
    # OPA's ceil/floor bug in (-1, 0)
    ("rounding", "r := ceil(-0.5)"),
    ("rounding", "r := floor(-0.5)"),
    ("rounding", "r := ceil(-0.000001)"),
    # a malformed JWT is an error in OPA too (refused on both sides)
    ("jwt", 'r := io.jwt.decode_verify(input.t, {"secret": "k"})'),
    ("jwt", 'r := io.jwt.decode_verify("a.b", {"secret": "k"})'),
    ("jwt", 'r := io.jwt.decode_verify("", {"secret": "k"})'),
]

OPA_REFUSES_TOO = frozenset({"print", "index", "jwt", "some"})

# The rewrites the hints suggest: these agree with OPA.
AGREES: list[str] = [
    "r := 1 + 2 == 3",
    # arithmetic runs as OPA's (exact integers, 64-bit mantissa floats) when a double holds it
    "r := 0.1 + 0.2 == 0.3",
    "r := input.a + 0.2",
    "r := input.a + input.b == 0.3",
    "r := input.a < 0.1",
    "r := input.b >= 0.2",
    "r := input.n - 0.3 > 6",
    "r if { x := input.a; x != 0.1 }",
    "r := [y | some x in [1, 2]; y := x * 0.1]",
    "r := count([1]) + 1e-1",
    "r := input.n * 3 / 3",
    "r := 10 / 4",
    "r := -7 % 3",
    "r := 4611686018427387904 + 4611686018427387904",
    "r := {1, 2, 3} - {2}",
    # sets met only by sets through variables, and sets in an array's fixed order: allowed
    "r := s if { a := {1}; b := {2, 3}; s := {x | some x in [a, b]} }",
    "r if { a := {1}; b := {2}; a < b }",
    "r := [x | some x in {1, 2}; y := {x}; count(y) == 1]",
    "r := input.n - 2",
    "r := count(input.s)",
    'r := count("😀") + 1',
    "r := count([1, 2]) * 2",
    'r := time.format([0, "UTC", "2006-01-02T15:04:05Z07:00"])',
    "r := 0.5 + 0.25 == 0.75",  # exact in binary: allowed
    "r := input.n * 10 / 100",
    "r := 1 == 1.0",
    "r := 9223372036854775807 == 9223372036854775807",
    'r := to_number("9007199254740993")',
    'r := {"a": input.n, "b": 2}',
    "r := {input.k: 1}",
    'r := object.union({"a": 2}, {input.k: 1})',
    "r if { c := input.l; v := false in c; v }",
    'r if "b" in input.missing',
    'r if { not "b" in input.missing }',
    "r if { c := input.l; v := 1 in c; v }",
    "r if { some x; x = 1 }",
    "r if { some x in [1]; y := x; y == 1 }",
    "r := [1, 2][1]",
    'r := {"a": 1}.a',
    'r := sprintf("%v", [{0, 2}])',
    'r := json.marshal({"a": {1, 2}})',
    "r := ceil(-1.5)",
    "r := floor(0.5)",
    "r := ceil(2)",
    # sum is exact in decimals, as in OPA
    "r := sum([0.1, 0.2])",
    "r := sum([input.a, input.b])",
    "r := sum([0.1, 0.7])",
    "r := sum({1, 2, 3})",
    "r := sum([])",
    "r := sum([9223372036854775807, 1])",  # the engine holds unsigned 64-bit integers
    "r := sum([-0.1, 0.1])",
]


def _module(body: str) -> str:
    return f"package t\n\n{body}\n"


@pytest.mark.integration
@pytest.mark.parametrize(("kind", "body"), REFUSED_HERE, ids=[b for _, b in REFUSED_HERE])
def test_refused_here_whatever_opa_says(opa: Opa, kind: str, body: str) -> None:
    got = ours(_module(body), "r", INPUT)
    assert got.kind in REFUSED, f"{kind}: {body} gives {got.show()}"
    # the refusal names where and why (compile time) or is an evaluation error
    assert got.message.startswith(("case.rego:3:", "evaluating data.t.r")), got.message
    expected = opa.evaluate(_module(body), "r", INPUT)
    if kind in OPA_REFUSES_TOO:
        assert expected.kind in REFUSED, f"{body}: OPA gives {expected.show()}"
    else:
        # a real difference: OPA evaluates it, the launcher denies instead (never the reverse)
        assert expected.kind not in REFUSED, f"{body}: OPA gives {expected.show()}"


@pytest.mark.integration
@pytest.mark.parametrize("body", AGREES)
def test_the_suggested_rewrite_agrees(opa: Opa, body: str) -> None:
    expected = opa.evaluate(_module(body), "r", INPUT)
    got = ours(_module(body), "r", INPUT)
    assert expected.same_as(got), f"{body}\nOPA:  {expected.show()}\nours: {got.show()}"
    assert got.kind not in REFUSED
