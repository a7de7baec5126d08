"""openssl-style subjects, CSR creation and CSR parsing."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.identity.csr import (
    MAX_CSR_PEM_BYTES,
    CsrError,
    SubjectError,
    create_csr,
    csr_to_pem,
    load_csr_pem,
    parse_subject,
)
from hardened_launcher.identity.keys import PoolPrivateKey


@pytest.fixture(scope="module")
def key() -> PoolPrivateKey:
    return PoolPrivateKey.generate_ec()


def _values(name: x509.Name) -> list[list[tuple[str, str]]]:
    return [[(attr.oid.dotted_string, str(attr.value)) for attr in rdn] for rdn in name.rdns]


CN = NameOID.COMMON_NAME.dotted_string
O = NameOID.ORGANIZATION_NAME.dotted_string  # noqa: E741


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/CN=pool", [[(CN, "pool")]]),
        ("/CN=pool/O=Acme", [[(CN, "pool")], [(O, "Acme")]]),
        ("/O=A\\/B", [[(O, "A/B")]]),
        ("/CN=a=b", [[(CN, "a=b")]]),
        ("/CN=a\\+b", [[(CN, "a+b")]]),
        ("/commonName=x/organizationName=y", [[(CN, "x")], [(O, "y")]]),
        ("/cn=x", [[(CN, "x")]]),
        ("/2.5.4.3=x", [[(CN, "x")]]),
        ("/CN=ünïcødé", [[(CN, "ünïcødé")]]),
        ("/CN=with space", [[(CN, "with space")]]),
    ],
)
def test_parse_subject(text: str, expected: list[list[tuple[str, str]]]) -> None:
    assert _values(parse_subject(text)) == expected


def test_multi_valued_rdn() -> None:
    name = parse_subject("/CN=a+O=b/C=DE")
    assert len(name.rdns) == 2
    assert {attr.value for attr in name.rdns[0]} == {"a", "b"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "CN=x",
        "/",
        "/CN",
        "/CN=",
        "/XX=y",
        "//CN=x",
        "/CN=x/",
        "/C=USA",
        "/CN=" + "a" * 65,
        "/CN=x\\",
        "/CN=a\nb",
        "/CN=a+CN=a",
        "/1.2.x=y",
        "/CN=" + "a/CN=" * 300,
    ],
)
def test_bad_subjects(text: str) -> None:
    with pytest.raises(SubjectError) as info:
        parse_subject(text)
    assert info.value.reason == "subject_invalid"
    assert "/CN=pool/O=Acme" in info.value.hint


_value_chars = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f")


def _escape(value: str) -> str:
    return "".join("\\" + ch if ch in "/+=\\" else ch for ch in value)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["CN", "O", "OU", "L", "ST"]),
            st.text(_value_chars, min_size=1, max_size=16),  # CN: at most 64 UTF-8 bytes,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_escaped_values_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = "".join(f"/{kind}={_escape(value)}" for kind, value in pairs)
    name = parse_subject(text)
    assert [next(iter(rdn)).value for rdn in name.rdns] == [value for _, value in pairs]


def _parse_or_error(text: str) -> x509.Name | SubjectError:
    try:
        return parse_subject(text)
    except SubjectError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_subject_error(text: str) -> None:
    outcome = _parse_or_error(text)
    if isinstance(outcome, SubjectError):
        assert outcome.reason == "subject_invalid"
    else:
        assert len(outcome.rdns) >= 1


def test_create_csr(key: PoolPrivateKey) -> None:
    csr = create_csr(key, parse_subject("/CN=pool/O=Acme"))
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert csr.subject.rfc4514_string() == "O=Acme,CN=pool"
    assert csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_load_csr_round_trip(key: PoolPrivateKey) -> None:
    csr = create_csr(key, parse_subject("/CN=pool"))
    assert load_csr_pem(csr_to_pem(csr)) == csr
    assert load_csr_pem(b"leading text\n" + csr_to_pem(csr)) == csr


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda _pem: b"not a csr", id="garbage"),
        pytest.param(lambda pem: pem + pem, id="two"),
        pytest.param(lambda pem: pem[: len(pem) // 2], id="truncated"),
        pytest.param(lambda pem: pem[:40] + b"!!!!" + pem[44:], id="corrupted"),
        pytest.param(lambda pem: pem.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"), id="label"),
        pytest.param(lambda pem: pem + b" " * MAX_CSR_PEM_BYTES, id="too large"),
    ],
)
def test_load_csr_refusals(key: PoolPrivateKey, mangle: object) -> None:
    pem = csr_to_pem(create_csr(key, parse_subject("/CN=pool")))
    with pytest.raises(CsrError) as info:
        load_csr_pem(mangle(pem))  # type: ignore[operator]
    assert info.value.reason == "csr_invalid"
