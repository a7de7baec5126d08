"""Variants of one value: every supported encoding is in the set; base64 cores at all alignments."""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.variants import (
    MIN_VALUE_BYTES,
    base64_cores,
    refusal,
    variants,
)

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n"
    "OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n"
    "1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n"
    "-----END PRIVATE KEY-----\n"
)

text_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="*"), min_size=6, max_size=20
).filter(lambda s: refusal(s.encode()) is None)


@settings(max_examples=200, deadline=None)
@given(value=text_values)
def test_every_supported_encoding_is_a_variant(value: str) -> None:
    v = value.encode()
    got = variants(v)
    # ...at least where the encoding keeps the minimum length (all do for accepted values)
    expected = {
        v,
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode(),
        quote(v, safe="").encode(),
        quote(v).encode(),
        quote(v, safe="!'()*").encode(),
        quote_plus(v).encode(),
        quote_plus(v, safe="").encode(),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(v, safe="")).encode(),
        v.replace(b"'", b"'\\''"),
        v.replace(b"'", b"'\"'\"'"),
        html.escape(value).encode(),
        html.escape(value, quote=False).encode(),
        xml_escape(value).encode(),
        base64.b64encode(v),
        base64.b64encode(v).rstrip(b"="),
        base64.urlsafe_b64encode(v),
        base64.urlsafe_b64encode(v).rstrip(b"="),
    }
    missing = {e for e in expected if len(e) >= MIN_VALUE_BYTES} - got
    assert not missing


def test_shlex_quote_body_is_a_variant() -> None:
    value = "it's-a-secret"
    quoted = shlex.quote(value).encode()  # 'it'"'"'s-a-secret'
    assert quoted[1:-1] in variants(value.encode())


@settings(max_examples=300, deadline=None)
@given(
    value=st.binary(min_size=2, max_size=30),  # one byte at alignment 1 fixes no character
    prefix=st.binary(max_size=7),
    suffix=st.binary(max_size=7),
)
def test_some_base64_core_is_inside_any_embedding(
    value: bytes, prefix: bytes, suffix: bytes
) -> None:
    cores = base64_cores(value)
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        text = enc(prefix + value + suffix)
        for form in (text, text.rstrip(b"=")):
            hits = [c for c in cores if c in form]
            assert hits, "no core of the value inside its embedding"
            # the core for this alignment is the one fixed by the value alone
            assert max(len(c) for c in hits) >= (8 * len(value)) // 6 - 2


@pytest.mark.parametrize("alignment", [0, 1, 2])
def test_base64_core_lengths_per_alignment(alignment: int) -> None:
    # n = 9 bytes = 72 bits starting at bit 8a: characters ceil(8a/6) .. floor((8a+72)/6) - 1
    value = b"123456789"
    first = -(-8 * alignment // 6)
    end = (8 * alignment + 72) // 6
    core = base64.b64encode(b"\0" * alignment + value)[first:end]
    assert core in base64_cores(value)
    assert len(core) == {0: 12, 1: 11, 2: 11}[alignment]
    for other in (b"\xff", b"ab"):
        prefix = (other * 3)[:alignment]
        assert core in base64.b64encode(prefix + value + b"zz")


def test_multiline_pem_whole_crlf_and_each_line() -> None:
    red = Redactor()
    red.add("SPACELIFT_POOL_PRIVATE_KEY", PEM)
    lf = PEM.encode()
    crlf = lf.replace(b"\n", b"\r\n")
    assert red.redact_bytes(lf) == b"***"
    assert red.redact_bytes(crlf) == b"***"
    line = lf.split(b"\n")[2]
    assert red.redact_bytes(b"echo " + line + b"\n") == b"echo ***\n"
    assert red.redact_bytes(b"=" + base64.b64encode(lf) + b"=") == b"=***="
    assert red.redact_bytes(json.dumps({"k": PEM}).encode()) == b'{"k": "***"}'
    # PEM armour lines are public; they stay readable when printed alone
    assert red.redact_bytes(b"-----BEGIN PRIVATE KEY-----") == b"-----BEGIN PRIVATE KEY-----"


def test_multiline_json_document_short_lines_are_not_masked_alone() -> None:
    doc = '{\n  "client_secret": "Zq8-lP0x-77ab",\n  "a": 1\n}\n'
    pats = variants(doc.encode())
    assert b"{" not in pats
    assert b'"a": 1' not in pats
    assert b'"client_secret": "Zq8-lP0x-77ab",' in pats
    assert doc.replace("\n", "\r\n").encode() in pats


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"12345", "shorter than"),
        (b"  abc \n", "shorter than"),
        (b"aaaaaaaa", "distinct"),
        (b"--------", "distinct"),
        (b"Password", "common word"),
        (b"localhost", "common word"),
    ],
)
def test_refusals_name_a_rule(value: bytes, why: str) -> None:
    reason = refusal(value)
    assert reason is not None
    assert why in reason
    assert value.strip().decode() not in reason or value.strip() in (b"",)
    assert variants(value) == set()


def test_accepted_value_variants_are_all_long_enough() -> None:
    assert refusal(b"s3cr3t") is None
    assert all(len(p) >= MIN_VALUE_BYTES for p in variants(b"s3cr3t"))


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=40) | st.text(max_size=20).map(lambda t: t.encode("utf-8")))
def test_percent_forms_are_urllib_quote_and_quote_plus_in_both_hex_cases(value: bytes) -> None:
    from hardened_launcher.redaction.variants import _percent_forms  # noqa: PLC0415

    expected: set[bytes] = set()
    for safe in ("", "/", "!'()*"):
        for encoded in (quote(value, safe=safe), quote_plus(value, safe=safe)):
            upper = encoded.encode("ascii")
            expected.add(upper)
            expected.add(re.sub(rb"%[0-9A-F]{2}", lambda m: m.group(0).lower(), upper))
    assert _percent_forms(value) == expected


def test_hex_forms_of_a_value_are_masked_in_both_cases() -> None:
    value = b"hex-me-\x00\xff-secret"
    found = variants(value)
    assert value.hex().encode() in found
    assert value.hex().upper().encode() in found
