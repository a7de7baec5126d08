from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.binaries.sums import (
    MAX_SUMS_BYTES,
    MAX_SUMS_ENTRIES,
    SumsEntry,
    SumsFile,
    SumsStyle,
    check_name,
    parse_sums,
    render_sums,
)
from hardened_launcher.errors import UntrustedInputError

DIGEST = hashlib.sha256(b"tool").hexdigest()
OTHER = hashlib.sha256(b"other").hexdigest()
PARSER_REASONS = {"sums_malformed", "sums_too_large"}


def outcome(data: bytes) -> SumsFile | UntrustedInputError:
    try:
        return parse_sums(data)
    except UntrustedInputError as exc:
        return exc


def reason_of(data: bytes) -> str:
    with pytest.raises(UntrustedInputError) as caught:
        parse_sums(data)
    return caught.value.reason


# ------------------------------------------------------------------------------ accepted forms


def test_gnu_text_binary_and_bsd_tag_forms_parse_to_the_same_digest() -> None:
    data = (f"{DIGEST}  text-mode\n{DIGEST} *binary-mode\nSHA256 (tagged) = {DIGEST}\n").encode()
    parsed = parse_sums(data)
    assert [(e.name, e.sha256, e.style) for e in parsed.entries] == [
        ("text-mode", DIGEST, SumsStyle.TEXT),
        ("binary-mode", DIGEST, SumsStyle.BINARY),
        ("tagged", DIGEST, SumsStyle.TAG),
    ]


def test_upper_case_hex_is_normalised_to_lower_case() -> None:
    parsed = parse_sums(f"{DIGEST.upper()}  tool\n".encode())
    assert parsed.lookup("tool").sha256 == DIGEST


def test_crlf_and_blank_lines_are_tolerated_and_line_numbers_kept() -> None:
    parsed = parse_sums(f"\r\n\n{DIGEST}  tool\r\n\r\n{OTHER}  other\r\n".encode())
    assert parsed.lookup("tool").line == 3
    assert parsed.lookup("other").line == 5


def test_missing_final_newline_is_fine() -> None:
    assert parse_sums(f"{DIGEST}  tool".encode()).lookup("tool").sha256 == DIGEST


def test_leading_dot_slash_is_dropped_and_directories_never_match_a_bare_name() -> None:
    parsed = parse_sums(f"{DIGEST}  ./tool\n{OTHER}  dist/other\n".encode())
    assert parsed.lookup("tool").sha256 == DIGEST
    with pytest.raises(UntrustedInputError) as caught:
        parsed.lookup("other")
    assert caught.value.reason == "sums_entry_missing"
    assert parsed.lookup("dist/other").sha256 == OTHER


def test_bsd_tag_name_may_contain_the_separator_text() -> None:
    parsed = parse_sums(f"SHA256 (odd) = name) = {DIGEST}\n".encode())
    assert parsed.entries[0].name == "odd) = name"


def test_empty_file_parses_but_has_no_entry() -> None:
    parsed = parse_sums(b"\n\n")
    assert parsed.entries == ()
    with pytest.raises(UntrustedInputError) as caught:
        parsed.lookup("tool")
    assert caught.value.reason == "sums_entry_missing"


# ----------------------------------------------------------------------------------- lookups


def test_lookup_of_a_duplicated_name_is_refused_even_when_digests_agree() -> None:
    parsed = parse_sums(f"{DIGEST}  tool\n{OTHER}  other\n{DIGEST} *tool\n".encode())
    with pytest.raises(UntrustedInputError) as caught:
        parsed.lookup("tool")
    assert caught.value.reason == "sums_entry_duplicate"
    assert "lines 1, 3" in caught.value.message
    assert parsed.lookup("other").sha256 == OTHER  # other names stay usable


def test_dot_slash_and_bare_spelling_of_one_name_are_duplicates() -> None:
    parsed = parse_sums(f"{DIGEST}  tool\n{OTHER}  ./tool\n".encode())
    with pytest.raises(UntrustedInputError) as caught:
        parsed.lookup("tool")
    assert caught.value.reason == "sums_entry_duplicate"


def test_lookup_is_exact_not_by_prefix_or_case() -> None:
    parsed = parse_sums(f"{DIGEST}  tool-linux-amd64\n".encode())
    for name in ("tool", "Tool-linux-amd64", "tool-linux-amd64 "):
        with pytest.raises(UntrustedInputError) as caught:
            parsed.lookup(name)
        assert caught.value.reason == "sums_entry_missing"


# --------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"{DIGEST[:-1]}  tool", "63 hex digits"),
        (f"{DIGEST}0  tool", "65 hex digits"),
        (f"{DIGEST} tool", "one space"),
        (f"{DIGEST}\ttool", "tab separator"),
        (f"{DIGEST}  ", "no name"),
        (f"{'g' * 64}  tool", "not hex"),
        (f" {DIGEST}  tool", "leading space"),
        (f"{DIGEST}  /usr/bin/tool", "absolute path"),
        (f"{DIGEST}  ../tool", "parent component"),
        (f"{DIGEST}  a/../tool", "inner parent component"),
        (f"{DIGEST}  a//tool", "empty component"),
        (f"{DIGEST}  a/./tool", "dot component"),
        (f"{DIGEST}  tool/", "trailing slash"),
        (f"{DIGEST}  ./", "only dot slash"),
        (f"{DIGEST}  to\\ol", "backslash"),
        (f"\\{DIGEST}  to\\\\ol", "GNU escaped line"),
        (f"{DIGEST}  to\x1bol", "escape character"),
        (f"{DIGEST}  to\rol", "carriage return inside"),
        (f"{DIGEST}  to\u2028ol", "unicode line separator"),
        (f"{DIGEST}  tool ", "trailing whitespace"),
        (f"{DIGEST}   tool", "leading whitespace in the name"),
        (f"SHA256 (tool) = {DIGEST[:-1]}", "BSD short digest"),
        (f"SHA256 (tool)= {DIGEST}", "BSD missing space"),
        (f"SHA256 () = {DIGEST}", "BSD empty name"),
        (f"SHA1 (tool) = {DIGEST}", "other algorithm tag"),
        (f"MD5 (tool) = {DIGEST}", "other algorithm tag"),
        ("# a comment", "comment"),
    ],
)
def test_malformed_lines_are_refused(line: str, why: str) -> None:
    assert reason_of(f"{OTHER}  fine\n{line}\n".encode()) == "sums_malformed", why


def test_malformed_error_names_the_line_number_not_the_content() -> None:
    canary = "CANARY-" + "x" * 5000
    with pytest.raises(UntrustedInputError) as caught:
        parse_sums(f"{DIGEST}  tool\n\n{canary}\n".encode())
    assert "line 3" in caught.value.message
    assert "CANARY" not in str(caught.value)
    assert caught.value.hint


def test_invalid_utf8_is_malformed() -> None:
    assert reason_of(DIGEST.encode() + b"  t\xffool\n") == "sums_malformed"


def test_size_is_bounded() -> None:
    assert reason_of(b"\n" * (MAX_SUMS_BYTES + 1)) == "sums_too_large"
    parse_sums(b"\n" * MAX_SUMS_BYTES)  # exactly the limit is fine


def test_entry_count_is_bounded() -> None:
    line = f"{DIGEST}  a\n".encode()
    assert len(line) * (MAX_SUMS_ENTRIES + 1) <= MAX_SUMS_BYTES
    assert len(parse_sums(line * MAX_SUMS_ENTRIES).entries) == MAX_SUMS_ENTRIES
    assert reason_of(line * (MAX_SUMS_ENTRIES + 1)) == "sums_too_large"


def test_entry_validates_itself() -> None:
    with pytest.raises(ValueError, match="lower-case hex"):
        SumsEntry(name="tool", sha256=DIGEST.upper())
    with pytest.raises(ValueError, match="not acceptable"):
        SumsEntry(name="../tool", sha256=DIGEST)


# ---------------------------------------------------------------------------------- properties

_NAME_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cs", "Zl", "Zp"),
    exclude_characters="\\/\x7f",
)
_COMPONENT = st.text(_NAME_CHARS, min_size=1, max_size=20).filter(
    lambda part: part not in {".", ".."}
)
_NAMES = (
    st.lists(_COMPONENT, min_size=1, max_size=3)
    .map("/".join)
    .filter(lambda name: check_name(name) is None and not name.startswith("./"))
)
_ENTRIES = st.builds(
    SumsEntry,
    name=_NAMES,
    sha256=st.binary(min_size=32, max_size=32).map(bytes.hex),
    style=st.sampled_from(SumsStyle),
)


@given(entries=st.lists(_ENTRIES, max_size=30), crlf=st.booleans())
def test_render_then_parse_round_trips(entries: list[SumsEntry], crlf: bool) -> None:
    parsed = parse_sums(render_sums(entries, crlf=crlf))
    assert [(e.name, e.sha256, e.style) for e in parsed.entries] == [
        (e.name, e.sha256, e.style) for e in entries
    ]
    assert [e.line for e in parsed.entries] == list(range(1, len(entries) + 1))


@given(entries=st.lists(_ENTRIES, min_size=1, max_size=10))
def test_every_rendered_name_is_found_unless_duplicated(entries: list[SumsEntry]) -> None:
    parsed = parse_sums(render_sums(entries))
    for entry in entries:
        count = sum(1 for other in entries if other.name == entry.name)
        if count == 1:
            assert parsed.lookup(entry.name).sha256 == entry.sha256
        else:
            with pytest.raises(UntrustedInputError) as caught:
                parsed.lookup(entry.name)
            assert caught.value.reason == "sums_entry_duplicate"


@settings(max_examples=500)
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_only_raise_the_documented_error(data: bytes) -> None:
    parsed = outcome(data)
    if isinstance(parsed, UntrustedInputError):
        assert parsed.reason in PARSER_REASONS
        assert parsed.hint
        return
    for entry in parsed.entries:
        assert check_name(entry.name) is None
        assert len(entry.sha256) == 64


@given(
    prefix=st.lists(_ENTRIES, max_size=5),
    junk=st.text(max_size=200).filter(lambda t: "\n" not in t and t.strip() != ""),
)
def test_one_bad_line_after_good_ones_is_reported_with_its_number(
    prefix: list[SumsEntry], junk: str
) -> None:
    data = render_sums(prefix) + junk.encode("utf-8", "surrogatepass") + b"\n"
    parsed = outcome(data)
    if isinstance(parsed, UntrustedInputError):
        assert parsed.reason == "sums_malformed"
        assert f"line {len(prefix) + 1} " in parsed.message
    else:  # the junk happened to be a valid line; then it is the last entry
        assert len(parsed.entries) == len(prefix) + 1
