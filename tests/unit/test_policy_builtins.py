"""The launcher's OPA-conformant builtins and compile-time checks, without the OPA oracle.

``tests/differential`` compares against the real OPA engine; these tests pin the same facts (and
the fast paths against the general code) so that they also run where the oracle is absent.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.policy import builtins as b
from hardened_launcher.policy import gofmt, rego_regex
from hardened_launcher.policy.engine import compile_policy
from hardened_launcher.policy.errors import PolicyCompileError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyBundle, PolicyFile, Syntax


def evaluate(module: str, input_doc: object = None, rule: str = "r") -> object:
    bundle = PolicyBundle(
        root=Path(), files=(PolicyFile(path="p.rego", text=module),), data={}, sha256="0" * 64
    )
    engine, _ = compile_policy(
        bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V1, require_deny=False
    )
    engine.set_input_json("{}" if input_doc is None else __import__("json").dumps(input_doc))
    return engine.eval_rule(f"data.t.{rule}")


def refused(module: str) -> str:
    with pytest.raises(PolicyCompileError) as caught:
        evaluate(module)
    return caught.value.message


# -- sprintf -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("%d", [-7], "-7"),
        ("%+d", [7], "+7"),
        ("%05d", [-42], "-0042"),
        ("%-5s|", ["ab"], "ab   |"),
        ("%5s|", ["é"], "    é|"),
        ("%.2s", ["abcdef"], "ab"),
        ("%x", ["hi"], "6869"),
        ("%o", [8], "10"),
        ("%#x", [255], "0xff"),
        ("%e", [1234.5678], "1.234568e+03"),
        ("%g", [0.000012345], "1.2345e-05"),
        ("%6.2f|", [3.14159], "  3.14|"),
        ("%.0f", [2.5], "2"),
        ("%v", [set()], "set()"),
        ("%v", [{"b": [True, None], "a": 1}], '{"a": 1, "b": [true, null]}'),
        ("%s %s", ["a"], "a %!s(MISSING)"),
        ("%s", ["a", "b"], "a%!(EXTRA string=b)"),
        ("%", [], "%!(NOVERB)"),
        ("%d", ["x"], "%!d(string=x)"),
        ("%t", [True], "%!t(string=true)"),
        ("%[2]s %[1]s", ["a", "b"], "b a"),
        ("%*d", [5, 3], "    3"),
        ("%U", [65], "U+0041"),
        ("%x", [1.5], "0x1.8p+00"),
        ("%.3f", [1], "%!f(int64=001)"),
        ("%q", ['a"b'], '"a\\"b"'),
        ("100%%", [], "100%"),
    ],
)
def test_sprintf_is_go_fmt(fmt: str, args: list[object], expected: str) -> None:
    assert gofmt.sprintf(fmt, args) == expected


SIMPLE_FORMATS = st.lists(
    st.sampled_from(["%s", "%d", "%v", "%q", "%%", "x", " ", "é", "%", "%z"]), max_size=6
).map("".join)
SIMPLE_ARGS = st.lists(st.one_of(st.text(max_size=5), st.integers(-(2**70), 2**70)), max_size=4)


@settings(max_examples=300)
@given(fmt=SIMPLE_FORMATS, args=SIMPLE_ARGS)
def test_sprintf_fast_path_equals_the_general_formatter(fmt: str, args: list[object]) -> None:
    try:
        general: str | None = gofmt.go_sprintf(fmt, gofmt.go_arguments(args))
    except ValueError:
        general = None
    if general is None:
        with pytest.raises(ValueError, match="64 bits"):
            gofmt.sprintf(fmt, args)
        return
    assert gofmt.sprintf(fmt, args) == general


def test_sprintf_refuses_non_array_arguments() -> None:
    with pytest.raises(TypeError):
        gofmt.sprintf("%s", "a")
    with pytest.raises(TypeError):
        gofmt.sprintf(1, [])


# -- regex -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        (r"\d", "٣", False),
        (r"\w", "é", False),
        (r"\s", "\u00a0", False),
        (r"\bé", "é", False),
        (r"^[a-z0-9-]+$", "feature-x", True),
        ("(?i)ABC", "abc", True),
        ("^.$", "😀", True),
    ],
)
def test_regex_match_is_re2(pattern: str, text: str, expected: bool) -> None:
    assert rego_regex.match(pattern, text) is expected


@pytest.mark.parametrize("pattern", ["a++", "a{1001}", "[", "(?=a)", r"(a)\1", r"\C", r"\Z"])
def test_regex_refuses_what_go_refuses(pattern: str) -> None:
    assert rego_regex.is_valid(pattern) is False
    with pytest.raises(ValueError, match="error parsing regexp"):
        rego_regex.match(pattern, "a")


@settings(max_examples=300)
@given(
    pattern=st.lists(
        st.sampled_from(["a", "b", ".", "*", "é", "(a|b)", "^", "$", r"\d"]), max_size=5
    ).map("".join),
    text=st.text(alphabet="abé1 😀", max_size=8),
)
def test_regex_match_fast_path_equals_search(pattern: str, text: str) -> None:
    if not rego_regex.is_valid(pattern):
        with pytest.raises(ValueError, match="error parsing regexp"):
            rego_regex.match(pattern, text)
        return
    assert rego_regex.match(pattern, text) is (
        rego_regex._compile(pattern).search(text) is not None
    )


def test_regex_split_find_replace_follow_go_empty_match_rules() -> None:
    assert rego_regex.split(",*", "abc") == ["a", "b", "c"]
    assert rego_regex.split(",", "") == [""]
    assert rego_regex.find_n("a*", "baaab", -1) == ["", "aaa", ""]
    assert rego_regex.replace("abc", "x*", "-") == "-a-b-c-"
    assert rego_regex.replace("abc", "(?P<n>b)", "[${n}]") == "a[b]c"
    assert rego_regex.replace("abc", "b", "$$") == "a$c"


# -- strings, numbers, time, net, crypto -----------------------------------------------------


def test_string_builtins() -> None:
    assert b.strings_count("aaaa", "aa") == 2
    assert b.strings_count("😀😀", "") == 3
    assert b.replace_n({"a": "b", "b": "a"}, "ab") == "ba"
    assert b.replace_n({"": "X", "a": "Y"}, "a") == "XYX"
    assert b.upper("straße") == "STRAßE"
    assert b.lower("ΟΔΟΣ") == "οδοσ"
    assert b.lower("İ") == "i"
    assert b.glob_quote_meta("*.[a]{b}?\\") == "\\*.\\[a\\]\\{b\\}\\?\\\\"
    with pytest.raises(ValueError, match="empty search"):
        b.indexof("abc", "")
    with pytest.raises(TypeError):
        b.substring("abcdef", 1.5, 3)
    with pytest.raises(ValueError, match="invalid URL escape"):
        b.urlquery_decode("%zz")
    with pytest.raises(ValueError, match="not recognized"):
        b.units_parse_bytes("12XB")


def test_time_builtins_follow_go() -> None:
    feb29 = b.parse_rfc3339_ns("2024-02-29T00:00:00Z")
    assert b.add_date(feb29, 1, 0, 0) == b.parse_rfc3339_ns("2025-03-01T00:00:00Z")
    jan31 = b.parse_rfc3339_ns("2024-01-31T00:00:00Z")
    assert b.add_date(jan31, 0, 1, 0) == b.parse_rfc3339_ns("2024-03-02T00:00:00Z")
    for bad in (
        "2024-01-01t00:00:00z",
        "2024-01-01T00:00:60Z",
        "2024-01-01 00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2262-04-12T00:00:00Z",
    ):
        with pytest.raises(ValueError, match=r"time\.parse_rfc3339_ns"):
            b.parse_rfc3339_ns(bad)


def test_net_builtins() -> None:
    assert b.cidr_contains("::ffff:10.0.0.0/104", "10.1.2.3") is True
    assert b.cidr_contains("10.0.0.0/8", "::ffff:10.1.2.3") is True
    with pytest.raises(ValueError, match="invalid CIDR"):
        b.cidr_contains("010.0.0.0/8", "10.0.0.1")
    with pytest.raises(ValueError, match="invalid IP"):
        b.cidr_contains("fe80::/10", "fe80::1%eth0")
    assert b.cidr_intersects("10.0.0.0/8", "10.1.0.0/16") is True
    assert b.cidr_intersects("10.0.0.0/16", "11.0.0.0/16") is False
    assert b.cidr_merge(["10.0.0.0/24", "10.0.1.0/24"]) == {"10.0.0.0/23"}
    assert b.cidr_contains_matches({"a": "10.0.0.0/8"}, {"x": "10.1.1.1", "y": "11.0.0.1"}) == {
        ("a", "x")
    }


def test_crypto_builtins() -> None:
    assert b.BUILTINS  # registered
    digest = {name: fn for name, _, fn in b.BUILTINS}
    assert digest["crypto.sha256"]("é") == hashlib.sha256("é".encode()).hexdigest()
    assert digest["crypto.md5"]("abc") == "900150983cd24fb0d6963f7d28e17f72"
    expected = hmac.new(b"key", b"msg", "sha512").hexdigest()
    assert digest["crypto.hmac.sha512"]("msg", "key") == expected
    assert b.hmac_equal("a", "a") is True
    assert b.hmac_equal("a", "b") is False


# -- compile-time checks and negation guards -------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "input_doc", "expected"),
    [
        # OPA: the argument is evaluated before `not`; undefined -> the rule does not hold
        ('r := true if not regex.match("^x", input.title)', {}, None),
        ('r := true if not regex.match("^x", input.title)', {"title": "y"}, True),
        ('r := true if not regex.match("^x", input.title)', {"title": "x"}, None),
        ('allowed if not startswith(input.t, "x")\nr := true if allowed', {}, None),
        ("r := true if not count(input.items) > 3", {}, None),
        ("r := true if not count(input.items) > 3", {"items": [1]}, True),
        ('r := true if not lower(input.x) == "a"', {}, None),
        ('r := true if { not lower(input.x) == "a" }', {"x": "B"}, True),
        ("f(x) := true if x == 1\nr := true if not f(input.x)", {}, None),
        ("f(x) := true if x == 1\nr := true if not f(input.x)", {"x": 2}, True),
        ('r := true if not input.t == "a"', {}, True),  # equality of plain terms: not hoisted
        ("r := true if not input.t", {}, True),
        ('r := [x | some x in ["a", "b"]; not startswith(input.p, x)]', {}, []),
        ('r := [x | some x in ["a", "b"]; not startswith(input.p, x)]', {"p": "a"}, ["b"]),
        ('r := true if {\n  t := input.title\n  not regex.match("^x", t)\n}', {}, None),
    ],
)
def test_negation_means_what_it_means_in_opa(
    rules: str, input_doc: dict[str, object], expected: object
) -> None:
    assert evaluate(f"package t\nimport rego.v1\n{rules}\n", input_doc) == expected


@pytest.mark.parametrize(
    ("rules", "where", "needle"),
    [
        ("r := true if not input.s[input.t]", "3:14", "`not` over an expression"),
        ('r := true if not startswith(input.s[_], "a")', "3:14", "`not` over an expression"),
        ('r := http.send({"url": "http://127.0.0.1:9", "method": "get"})', "3:6", "is refused"),
        ('r := true if { input.never; net.lookup_ip_addr("x") }', "3:29", "is refused"),
        ("r := opa.runtime()", "3:6", "is refused"),
        ('r := crypto.x509.parse_certificates("x")', "3:6", "not available"),
        ('r := object.get(data, ["launcher_policy", "x"], 1)', "3:17", "all of `data`"),
        ("r := data", "3:6", "all of `data`"),
        ("r := [k | data.t[k]]", "3:11", "OPA rejects this as recursion"),
        ("r := count(data.t)", "3:12", "OPA rejects this as recursion"),
        ('r if { some i; not startswith(input.files[i], "s") }', "3:16", "unsafe variable"),
    ],
)
def test_refused_at_compile_time_with_location(rules: str, where: str, needle: str) -> None:
    message = refused(f"package t\nimport rego.v1\n{rules}\n")
    assert message.startswith(f"p.rego:{where}: ")
    assert needle in message


def test_guarded_columns_stay_on_their_lines() -> None:
    # A later error on the same line as a guard still names the right line.
    module = 'package t\nimport rego.v1\nr := true if not startswith(input.s, "x")\ns := 1 / 0\n'
    assert evaluate(module, {"s": "y"}) is True


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.3", True),
        ("v1.2.3", True),
        ("01.2.3", True),
        ("1.2.3-rc.1+build.5", True),
        ("1.2", False),
        ("1.2.3.4", False),
        ("1.2.3-", True),  # an empty pre-release is no pre-release to go-semver
        ("1.2.3-a..b", False),
        ("vv1.2.3", False),
        (1, False),
        (["1.2.3"], False),
    ],
)
def test_semver_is_valid_as_opa(value: object, valid: bool) -> None:
    assert b.semver_is_valid(value) is valid


def test_semver_compare_as_opa() -> None:
    assert b.semver_compare("v1.0.0", "1.0.0") == 0
    assert b.semver_compare("2.0.0", "10.0.0") == -1
    assert b.semver_compare("1.0.0-alpha", "1.0.0") == -1
    assert b.semver_compare("1.0.0-beta.11", "1.0.0-beta.2") == 1
    assert b.semver_compare("1.0.0-2", "1.0.0-10") == -1
    assert b.semver_compare("1.0.0+a", "1.0.0+b") == 0
    with pytest.raises(ValueError, match="invalid semantic version"):
        b.semver_compare("1.2.3", "nope")


def test_legacy_set_rule_with_if_is_refused() -> None:
    module = "package t\nimport future.keywords.if\ndeny[msg] if { msg := input.m }\n"
    bundle = PolicyBundle(
        root=Path(), files=(PolicyFile(path="p.rego", text=module),), data={}, sha256="0" * 64
    )
    with pytest.raises(PolicyCompileError) as caught:
        compile_policy(bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V0, require_deny=False)
    assert caught.value.message.startswith("p.rego:3:1: `name[key] if` in legacy (v0) syntax")
    # without `if` the legacy set rule is fine, and so is the v1 meaning (an object, as in OPA)
    plain = "package t\ndeny[msg] { msg := input.m }\n"
    bundle = PolicyBundle(
        root=Path(), files=(PolicyFile(path="p.rego", text=plain),), data={}, sha256="0" * 64
    )
    compile_policy(bundle, sanitizer=Sanitizer.random(), syntax=Syntax.V0, require_deny=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), ("0", 0), ("-3", -3), ("1.5", 1.5), ("18446744073709551615", 2**64 - 1)],
)
def test_to_number_reads_json_number_literals(text: str, expected: object) -> None:
    assert b.to_number(text) == expected


@pytest.mark.parametrize(
    "text", ["12 ", " 1", "+5", ".5", "5.", "00012", "0x10", "Inf", "NaN", "1_000", "1e400", ""]
)
def test_to_number_refuses_what_opa_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="to_number"):
        b.to_number(text)


def test_semver_reads_numbers_of_any_length_without_int() -> None:
    # int() refuses more than 4,300 digits: a policy's input must not turn that into a crash.
    semver_compare, semver_is_valid = b.semver_compare, b.semver_is_valid
    long = "9" * 5000
    assert semver_compare(f"1.0.0-{long}", f"1.0.0-{long[:-1]}8") == 1
    assert semver_compare(f"1.0.0-a.{long}", "1.0.0-a.1") == 1
    assert semver_compare("1.0.0-2", "1.0.0-10") == -1
    assert semver_is_valid(f"{long}.0.0") is False
    assert semver_is_valid(f"1.{long}.0") is False
    assert semver_is_valid("9223372036854775807.0.0") is True
    assert semver_is_valid("9223372036854775808.0.0") is False
