"""Generated inputs: the same rules under OPA and here agree on strings, numbers, collections,
regular expressions and time. Each module is compiled once per engine; hypothesis varies input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.policy.engine import RegoEngine, compile_policy
from hardened_launcher.policy.errors import PolicyCompileError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax
from tests.differential.oracle import MODULE_FILE, REFUSED, Opa, Outcome, ours_eval

pytestmark = pytest.mark.integration
SETTINGS = settings(
    max_examples=200,
    derandomize=True,  # CI sees the same examples every run; raise max_examples to explore
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

STRINGS = """package t

count_s := count(input.s)
upper_s := upper(input.s)
lower_s := lower(input.s)
reverse_s := strings.reverse(input.s)
indexof_s := indexof(input.s, input.t)
indexof_n_s := indexof_n(input.s, input.t)
substring_s := substring(input.s, input.i, input.n)
strings_count := strings.count(input.s, input.t)
replace_s := replace(input.s, input.t, "-")
replace_n_s := strings.replace_n(object.union({"a": "Y"}, {input.t: "X"}), input.s)
split_s := split(input.s, input.t)
trim_s := trim(input.s, input.t)
trim_space_s := trim_space(input.s)
startswith_s := startswith(input.s, input.t)
contains_s := contains(input.s, input.t)
concat_s := concat(input.t, [input.s, input.s])
sprintf_s := sprintf("%s|%q|%5.2s|%-4s|%x", [input.s, input.s, input.s, input.t, input.t])
marshal_s := json.marshal({"s": input.s, "t": [input.t]})
base64_s := base64.encode(input.s)
urlquery_s := urlquery.encode(input.s)
urlquery_d := urlquery.decode(input.s)
quote_meta_s := glob.quote_meta(input.s)
sha_s := crypto.sha256(input.s)
hmac_s := crypto.hmac.sha256(input.s, input.t)
"""

NUMBERS = """package t

arith := [input.a + input.b, input.a - input.b, input.a * input.b, input.a < input.b]
modulo := input.a % input.b
sprintf_i := sprintf(input.f, [input.a])
sprintf_x := sprintf(input.f, [input.x])
abs_x := abs(input.x)
round_x := round(input.x)
floor_x := floor(input.x)
format_int_a := format_int(input.a, 16)
to_number_a := to_number(sprintf("%d", [input.a]))
bits_a := [bits.and(input.a, input.b), bits.or(input.a, input.b), bits.xor(input.a, input.b)]
"""

COLLECTIONS = """package t

sorted_l := sort(input.l)
set_l := {x | some x in input.l}
count_l := count(input.l)
reverse_l := array.reverse(input.l)
slice_l := array.slice(input.l, input.i, input.n)
flatten_l := array.flatten([input.l, [input.l]])
sum_l := sum([x | some x in input.l; is_number(x)])
max_l := max(input.l)
keys_o := object.keys(input.o)
union_o := object.union(input.o, {"k": input.l})
marshal_o := json.marshal(input.o)
no_composites := {x | some x in input.l; not is_array(x); not is_object(x)}
sprintf_v := sprintf("%v", [[input.l, input.o, no_composites]])
concat_set := concat(",", {x | some x in input.l; is_string(x)})
"""

REGEX = """package t

match_r := regex.match(input.p, input.s)
valid_r := regex.is_valid(input.p)
find_r := regex.find_n(input.p, input.s, -1)
split_r := regex.split(input.p, input.s)
replace_r := regex.replace(input.s, input.p, "<$0>")
submatch_r := regex.find_all_string_submatch_n(input.p, input.s, -1)
"""

TIME = """package t

date_t := time.date(input.ns)
clock_t := time.clock(input.ns)
weekday_t := time.weekday(input.ns)
add_date_t := time.add_date(input.ns, input.y, input.m, input.d)
format_t := time.format(input.ns)
rfc3339_t := time.parse_rfc3339_ns(input.stamp)
duration_t := time.parse_duration_ns(input.duration)
diff_t := time.diff(input.ns, input.ns2)
"""


# OPA's exact text of each result (json.marshal keeps a number's text): the oracle's binding
# would hand back a Python float, hiding digits beyond a double's.
ARITH = """package t

plus_a := json.marshal(input.a + input.b)
minus_a := json.marshal(input.a - input.b)
mul_a := json.marshal(input.a * input.b)
div_a := json.marshal(input.a / input.b)
rem_a := json.marshal(input.a % input.b)
chain_a := json.marshal((input.a + input.b) * input.c - input.a)
sum_a := json.marshal(sum([input.a, input.b, input.c]))
product_a := json.marshal(product([input.a, input.b]))
compare_a := [input.a + input.b == input.c, input.a * input.b < input.c, input.a / input.b > 0]
layout_t := time.format([input.ns, input.tz, input.layout])
"""


def holdable(text: str) -> bool:
    """Can the engine hold OPA's number written ``text`` as the same number and text?"""
    if any(c in text for c in ".eE"):
        return "e" not in text and repr(float(text)) == text
    return text != "-0" and -(2**63) <= int(text) < 2**64


class Pair:
    """One module loaded once in OPA and once here."""

    def __init__(self, opa: Opa, module: str) -> None:
        self.module = module
        self.rules = [line.split(" := ", 1)[0] for line in module.splitlines() if " := " in line]
        self.opa_engine = opa.engine()
        self.opa_engine.add_policy(MODULE_FILE, module)
        self.opa = opa
        bundle = PolicyBundle(
            root=MODULE_FILE_ROOT,
            files=(PolicyFile(path=MODULE_FILE, text=module),),
            data={},
            sha256="0" * 64,
        )
        self.ours: RegoEngine = compile_policy(
            bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V1, require_deny=False
        )[0]

    def opa_outcome(self, rule: str, input_doc: Any) -> Outcome:
        bindings = self.opa._bindings
        try:
            return Outcome("value", self.opa_engine.eval_document(f"t.{rule}", input_doc))
        except bindings.OpaUndefinedError:
            return Outcome("undefined")
        except bindings.OpaError as exc:
            return Outcome("error", message=str(exc))

    def check(self, input_doc: dict[str, Any]) -> None:
        for rule in self.rules:
            if known_difference(rule, input_doc):
                continue
            if fails_closed(rule, input_doc):
                got = ours_eval(self.ours, rule, input_doc)
                assert got.kind in REFUSED, f"{rule} with {input_doc}: {got.show()}"
                continue
            expected = self.opa_outcome(rule, input_doc)
            got = ours_eval(self.ours, rule, input_doc)
            if got.kind in REFUSED and may_refuse(rule, input_doc):
                continue
            assert expected.same_as(got), (
                f"{rule} with {json.dumps(input_doc, ensure_ascii=False)}\n"
                f"OPA:  {expected.show()}\nours: {got.show()}"
            )


MODULE_FILE_ROOT = __import__("pathlib").Path()


def fails_closed(rule: str, input_doc: dict[str, Any]) -> bool:
    """Inputs where the launcher refuses on purpose (an evaluation error denies the run)."""
    values = input_doc.get("l")
    # a set holding a boolean handed to a launcher builtin: Python's False == 0 could lose 0
    return (
        rule == "sprintf_v"
        and isinstance(values, list)
        and any(isinstance(v, bool) for v in values)
    )


def may_refuse(rule: str, input_doc: dict[str, Any]) -> bool:
    """Inputs where the launcher may refuse (deny) what OPA formats; otherwise it must agree."""
    fmt = str(input_doc.get("f", ""))
    # Go's alternate float forms (%#g) and a precision on %x/%b of a float are refused
    return rule == "sprintf_x" and ("#" in fmt or ("." in fmt and fmt[-1] in "xXb"))


def known_difference(rule: str, input_doc: dict[str, Any]) -> str | None:
    """The listed differences (docs/policy.md, "Differences from OPA") these inputs can reach."""
    x = input_doc.get("x")
    if rule == "floor_x" and isinstance(x, float) and -1 < x < 0:
        return "OPA bug: floor of a number in (-1, 0) is 0"
    if rule == "sprintf_x" and "e" in repr(x):
        return "sprintf: OPA prints a number written with an exponent as a string"
    return None


@pytest.fixture(scope="module")
def pairs(opa: Opa) -> Iterator[dict[str, Pair]]:
    made = {name: Pair(opa, module) for name, module in MODULES.items()}
    yield made
    for pair in made.values():
        pair.opa_engine.close()


MODULES = {
    "arith": ARITH,
    "strings": STRINGS,
    "numbers": NUMBERS,
    "collections": COLLECTIONS,
    "regex": REGEX,
    "time": TIME,
}

# Text from a mix of ASCII, Latin, Greek, combining marks, astral characters and specials.
TEXT = st.text(
    alphabet=st.sampled_from(
        list("aAbB zZ019.,-_/%+*?[]{}\\\"'\t\n") + list("éÉßσςΣİıǅ😀\u0301\u00a0ﬁ€中")
    ),
    max_size=12,
)
SMALL = st.integers(min_value=-50, max_value=50)


@SETTINGS
@given(s=TEXT, t=TEXT, i=st.integers(-3, 15), n=st.integers(-3, 15))
def test_strings(pairs: dict[str, Pair], s: str, t: str, i: int, n: int) -> None:
    pairs["strings"].check({"s": s, "t": t, "i": i, "n": n})


VERBS = st.sampled_from(list("dvsxXobeEfgGqcUT%z"))
FLAGS = st.text(alphabet=st.sampled_from(list("+- #0")), max_size=2)
WIDTH = st.sampled_from(["", "3", "8", ".2", "6.3", ".0"])


@SETTINGS
@given(
    a=st.integers(min_value=-(2**31), max_value=2**31),  # products stay below 2**53
    b=st.integers(min_value=1, max_value=10**6),
    x=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    flags=FLAGS,
    width=WIDTH,
    verb=VERBS,
)
def test_numbers(
    pairs: dict[str, Pair], a: int, b: int, x: float, flags: str, width: str, verb: str
) -> None:
    pairs["numbers"].check({"a": a, "b": b, "x": x, "f": f"%{flags}{width}{verb}"})


SCALARS = st.one_of(st.none(), st.booleans(), SMALL, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(
    values=st.lists(VALUES, max_size=6),
    mapping=st.dictionaries(TEXT, VALUES, max_size=4),
    i=st.integers(-2, 8),
    n=st.integers(-2, 8),
)
def test_collections(
    pairs: dict[str, Pair], values: list[Any], mapping: dict[str, Any], i: int, n: int
) -> None:
    pairs["collections"].check({"l": values, "o": mapping, "i": i, "n": n})


PATTERN_PIECES = st.sampled_from(
    [
        "a",
        "b",
        "é",
        ".",
        "*",
        "+",
        "?",
        "|",
        "(",
        ")",
        "[ab]",
        "[^a]",
        r"\d",
        r"\w",
        r"\s",
        r"\b",
        "^",
        "$",
        "{2}",
        "{1,3}",
        "(?i)",
        "😀",
        "\\",
        "x*",
        "(a|b)",
        "[",
        "]",
    ]
)
PATTERNS = st.lists(PATTERN_PIECES, max_size=6).map("".join)
SUBJECTS = st.text(alphabet=st.sampled_from(list("abAB é٣_ 1\n😀x")), max_size=10)


@SETTINGS
@given(p=PATTERNS, s=SUBJECTS)
def test_regex(pairs: dict[str, Pair], p: str, s: str) -> None:
    pairs["regex"].check({"p": p, "s": s})


NS = st.integers(min_value=-(2**62), max_value=2**62)
STAMPS = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: (
        f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
    ),
    st.integers(1700, 2200),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", ".5", ".123456789", ".1234567891"]),
    st.sampled_from(["Z", "+01:00", "-05:30", "z", "+24:00", ""]),
)
DURATIONS = st.lists(
    st.tuples(st.integers(0, 500), st.sampled_from(["h", "m", "s", "ms", "us", "ns", "µs"])),
    min_size=1,
    max_size=3,
).map(lambda parts: "".join(f"{n}{u}" for n, u in parts))


@SETTINGS
@given(
    ns=NS,
    ns2=NS,
    y=st.integers(-3, 3),
    m=st.integers(-14, 14),
    d=st.integers(-40, 40),
    stamp=STAMPS,
    duration=DURATIONS,
)
def test_time(
    pairs: dict[str, Pair],
    ns: int,
    ns2: int,
    y: int,
    m: int,
    d: int,
    stamp: str,
    duration: str,
) -> None:
    pairs["time"].check(
        {"ns": ns, "ns2": ns2, "y": y, "m": m, "d": d, "stamp": stamp, "duration": duration}
    )


# Numbers as the input can carry them: integers (some beyond 2^53) and plain decimals.
DECIMALS = st.builds(
    lambda units, places: float(f"{units / 10**places:.{places}f}"),
    st.integers(-(10**7), 10**7),
    st.integers(1, 4),
).filter(lambda x: not x.is_integer() and "e" not in repr(x))
OPERANDS = st.one_of(
    st.integers(-1000, 1000), st.integers(-(2**63), 2**63 - 1), DECIMALS, st.sampled_from([0, 1])
)
LAYOUTS = st.sampled_from(
    ["RFC3339Nano", "RFC3339", "2006-01-02 15:04:05.000", "15:04:05.999", "Jan _2 MST", "-0700"]
)


@SETTINGS
@given(
    a=OPERANDS,
    b=OPERANDS,
    c=OPERANDS,
    ns=st.integers(0, 2**62),
    tz=st.sampled_from(["UTC", "Asia/Tokyo", "America/New_York", ""]),
    layout=LAYOUTS,
)
def test_arithmetic_is_opas_or_refused(
    pairs: dict[str, Pair], a: float, b: float, c: float, ns: int, tz: str, layout: str
) -> None:
    """Every result is OPA's, number and text; or an error, only where the engine cannot hold
    OPA's result (more digits than a double, an exponent, beyond 64 bits) or OPA errs too."""
    pair = pairs["arith"]
    input_doc = {"a": a, "b": b, "c": c, "ns": ns, "tz": tz, "layout": layout}
    for rule in pair.rules:
        expected = pair.opa_outcome(rule, input_doc)
        got = ours_eval(pair.ours, rule, input_doc)
        shown = f"{rule} with {input_doc}\nOPA:  {expected.show()}\nours: {got.show()}"
        if got.kind in REFUSED:
            # one operation: refused only when OPA's result cannot be held (a chain may refuse
            # an intermediate result, e.g. -0, that a later operation would have absorbed)
            if rule.endswith("_a") and rule != "chain_a" and expected.kind == "value":
                assert not holdable(str(expected.value)), shown
            continue
        assert expected.same_as(got), shown


# Number literals as a policy may write them: plain, with trailing zeros, with exponents, long.
LITERALS = st.one_of(
    st.integers(-(2**65), 2**65).map(str),
    st.builds(
        lambda sign, whole, frac, exp: f"{sign}{whole}{'.' + frac if frac else ''}{exp}",
        st.sampled_from(["", "-"]),
        st.integers(0, 10**6),
        st.text(alphabet="0123456789", max_size=20),
        st.sampled_from(["", "e3", "e-5", "E2", "e+1", "e20", "e-10"]),
    ),
)


@settings(SETTINGS, max_examples=60)
@given(literal=LITERALS, c=OPERANDS)
def test_number_literals_mean_what_opa_means(opa: Opa, literal: str, c: float) -> None:
    """A literal is refused at load, or every use of it agrees with OPA (its text included)."""
    module = (
        "package t\n\n"
        f"text_l := json.marshal([{literal}])\n"
        f"compare_l := [{literal} < input.c, {literal} == input.c, {literal} >= input.c]\n"
        f"arith_l := json.marshal({literal} + input.c)\n"
    )
    bundle = PolicyBundle(
        root=MODULE_FILE_ROOT,
        files=(PolicyFile(path=MODULE_FILE, text=module),),
        data={},
        sha256="0" * 64,
    )
    try:
        ours_engine = compile_policy(
            bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V1, require_deny=False
        )[0]
    except PolicyCompileError:
        return  # refused at load: the run is denied
    for rule in ("text_l", "compare_l", "arith_l"):
        expected = opa.evaluate(module, rule, {"c": c})
        got = ours_eval(ours_engine, rule, {"c": c})
        if got.kind in REFUSED:
            continue  # an evaluation error denies the run
        assert expected.same_as(got), f"{module}\nOPA:  {expected.show()}\nours: {got.show()}"


# Expressions as a policy may nest them: the load-time rewrite must keep their structure.
LEAVES = st.sampled_from(
    ["input.a", "input.b", "2", "0.5", "7", 'count("a😀")', "count([1, 2])", 'input["b"]', "x"]
)
EXPRESSIONS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.builds(
            lambda a, op, b, wrap: f"({a} {op} {b})" if wrap else f"{a} {op} {b}",
            inner,
            st.sampled_from(["+", "-", "*", "/", "%"]),
            inner,
            st.booleans(),
        ),
        st.builds(lambda a: f"abs({a})", inner),
        st.builds(lambda a: f"[{a}][0]", inner),
    ),
    max_leaves=6,
)


@settings(SETTINGS, max_examples=60)
@given(expression=EXPRESSIONS, a=OPERANDS, b=OPERANDS, negate=st.booleans())
def test_rewritten_expressions_keep_their_meaning(
    opa: Opa, expression: str, a: float, b: float, negate: bool
) -> None:
    """Nested operators, parentheses, calls and `not` survive the rewrite: OPA's value or an
    evaluation error (never another value)."""
    body = f"not {expression} > 3" if negate else f"v := {expression}"
    module = f"package t\n\nr := v if {{\n\tx := 3\n\tv := json.marshal({expression})\n}}\n"
    module += f"s if {{\n\tx := 3\n\t{body}\n}}\n"
    bundle = PolicyBundle(
        root=MODULE_FILE_ROOT,
        files=(PolicyFile(path=MODULE_FILE, text=module),),
        data={},
        sha256="0" * 64,
    )
    ours_engine = compile_policy(
        bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V1, require_deny=False
    )[0]
    for rule in ("r", "s"):
        expected = opa.evaluate(module, rule, {"a": a, "b": b})
        got = ours_eval(ours_engine, rule, {"a": a, "b": b})
        if got.kind in REFUSED:
            continue  # an evaluation error denies the run
        assert expected.same_as(got), f"{module}\nOPA:  {expected.show()}\nours: {got.show()}"
