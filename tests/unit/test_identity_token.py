"""The SPACELIFT_TOKEN format: round trips, every refusal with its reason, properties."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, build_token
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import (
    MAX_ENCODED_TOKEN_BYTES,
    MAX_TOKEN_BYTES,
    TOKEN_REASONS,
    Token,
    TokenError,
    is_valid_pool_id,
)
from hardened_launcher.secrets import Secret

DOCS = Path(__file__).resolve().parents[2] / "docs" / "token.md"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate(key_type="EC-P256")


@pytest.fixture(scope="module")
def pool_cert(ca: CertificateAuthority) -> x509.Certificate:
    key = PoolPrivateKey.generate_ec()
    now = datetime.now(UTC)
    return ca.issue_pool_certificate(
        create_csr(key, parse_subject("/CN=x")),
        pool_id="pool-1",
        not_before=now - timedelta(minutes=1),
        not_after=now + timedelta(days=30),
    )


@pytest.fixture(scope="module")
def signing_key() -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PrivateKey.generate().public_key()


@pytest.fixture(scope="module")
def token(
    ca: CertificateAuthority, pool_cert: x509.Certificate, signing_key: ed25519.Ed25519PublicKey
) -> Token:
    return build_token(
        pool_id="pool-1",
        pool_certificate=pool_cert,
        ca_certificate=ca.certificate,
        broker_url="mqtts://broker.example.com:8883",
        control_plane_url="https://cp.example.com",
        run_state_signing_key=signing_key,
    )


@pytest.fixture
def document(token: Token) -> dict[str, Any]:
    return dict(token.to_document())


def _encode(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def _reason(encoded: str | bytes) -> str:
    with pytest.raises(TokenError) as info:
        Token.from_encoded(encoded)
    assert info.value.reason in TOKEN_REASONS
    return info.value.reason


# -- round trips ------------------------------------------------------------------------------


def test_round_trip(token: Token) -> None:
    with token.to_encoded() as encoded:
        again = Token.from_encoded(encoded)
    assert again == token
    assert again.broker_host == "broker.example.com"
    assert again.broker_port == 8883
    assert again.mqtt_namespace == "spacelift"


def test_document_field_order(token: Token) -> None:
    assert list(token.to_document()) == [
        "version",
        "pool_id",
        "broker_url",
        "mqtt_namespace",
        "control_plane_url",
        "pool_certificate",
        "ca_certificate",
        "run_state_signing_key",
    ]


def test_input_forms(token: Token) -> None:
    text = token.to_encoded().reveal_text()
    assert "\n" not in text
    assert text.endswith("=") or len(text) % 4 == 0
    for form in (
        text,
        text.encode(),
        Secret(text),
        text + "\n",
        text.rstrip("="),
        "\r\n".join(textwrap.wrap(text, 76)) + "\r\n",
    ):
        assert Token.from_encoded(form) == token


def test_repr_shows_no_encoded_text(token: Token) -> None:
    text = token.to_encoded().reveal_text()
    rendered = repr(token) + str(token)
    assert "pool-1" in rendered
    assert "BEGIN" not in rendered
    assert [text[i : i + 8] for i in range(len(text) - 8) if text[i : i + 8] in rendered] == []


def test_fingerprints(token: Token, signing_key: ed25519.Ed25519PublicKey) -> None:
    assert token.signing_key_sha256 == hashlib.sha256(signing_key.public_bytes_raw()).digest()
    assert len(token.pool_certificate_sha256) == 32
    assert token.ca_certificate_sha256 != token.pool_certificate_sha256


def test_loopback_http_control_plane(document: dict[str, Any]) -> None:
    for url in ("http://localhost:8080", "http://127.0.0.1/", "http://[::1]:9000/api"):
        document["control_plane_url"] = url
        assert Token.from_encoded(_encode(document)).control_plane_url == url


# -- refusals ---------------------------------------------------------------------------------


def test_empty() -> None:
    assert _reason("") == "token_empty"
    assert _reason(" \n ") == "token_empty"


def test_too_large() -> None:
    assert _reason("A" * (MAX_ENCODED_TOKEN_BYTES + 1)) == "token_too_large"
    big = base64.b64encode(b" " * (MAX_TOKEN_BYTES + 1)).decode()
    assert _reason(big) == "token_too_large"


def test_not_base64(document: dict[str, Any]) -> None:
    assert _reason("this is not base64!") == "token_not_base64"
    assert _reason("QUJDRA=A") == "token_not_base64"
    with pytest.raises(TokenError) as info:
        Token.from_encoded(json.dumps(document))
    assert info.value.reason == "token_not_base64"
    assert "JSON itself" in info.value.message


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"\xff\xfe{}",
        b'{"version": NaN}',
        b"[" * 50_000,
        b'{"version": 1' + b"1" * 5000 + b"}",
        b'\xef\xbb\xbf{"version": 1}',
    ],
    ids=["text", "not utf-8", "NaN", "deep nesting", "huge int", "BOM"],
)
def test_not_json(payload: bytes) -> None:
    assert _reason(base64.b64encode(payload)) == "token_not_json"


def test_duplicate_field() -> None:
    assert _reason(base64.b64encode(b'{"version": 1, "version": 1}')) == "token_field_duplicate"


@pytest.mark.parametrize("payload", ["[]", "1", '"x"', "null", "true"])
def test_not_object(payload: str) -> None:
    assert _reason(base64.b64encode(payload.encode())) == "token_not_object"


@pytest.mark.parametrize("version", [0, 2, -1, 10**30])
def test_unknown_version(document: dict[str, Any], version: int) -> None:
    document["version"] = version
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_version_unsupported"
    assert "version 1" in info.value.message


@pytest.mark.parametrize("field", ["version", "pool_id", "ca_certificate", "run_state_signing_key"])
def test_missing_field(document: dict[str, Any], field: str) -> None:
    del document[field]
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_field_missing"
    assert field in info.value.message


def test_unknown_field(document: dict[str, Any]) -> None:
    document["extra"] = "x"
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_field_unknown"
    assert "'extra'" in info.value.message


def test_unknown_field_with_odd_name_is_not_echoed(document: dict[str, Any]) -> None:
    document["<script>" * 10] = 1
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_field_unknown"
    assert "<script>" not in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1"),
        ("version", True),
        ("version", 1.0),
        ("version", None),
        ("pool_id", 5),
        ("broker_url", ["mqtts://a:1"]),
        ("mqtt_namespace", None),
        ("pool_certificate", {"pem": "x"}),
        ("run_state_signing_key", 7),
    ],
)
def test_bad_type(document: dict[str, Any], field: str, value: object) -> None:
    document[field] = value
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_field_type"
    assert field in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pool_id", ""),
        ("pool_id", "Pool"),
        ("pool_id", "-pool"),
        ("pool_id", "pool-"),
        ("pool_id", "a" * 64),
        ("pool_id", "pool_1"),
        ("pool_id", "pøøl"),
        ("pool_id", "pool/../x"),
        ("mqtt_namespace", ""),
        ("mqtt_namespace", "a/b"),
        ("mqtt_namespace", "a+"),
        ("mqtt_namespace", "#"),
        ("mqtt_namespace", "n" * 65),
        ("broker_url", "https://broker:8883"),
        ("broker_url", "mqtt://broker:1883"),
        ("broker_url", "mqtts://broker"),
        ("broker_url", "mqtts://broker:0"),
        ("broker_url", "mqtts://broker:99999"),
        ("broker_url", "mqtts://broker:8883/path"),
        ("broker_url", "mqtts://user:pw@broker:8883"),
        ("broker_url", "mqtts://broker:8883?x=1"),
        ("broker_url", "mqtts://bad_host:8883"),
        ("broker_url", "mqtts://:8883"),
        ("broker_url", "mqtts://broker :8883"),
        ("broker_url", "mqtts://" + "a" * 2050 + ":1"),
        ("control_plane_url", "http://cp.example.com"),
        ("control_plane_url", "ftp://cp.example.com"),
        ("control_plane_url", "https://user@cp.example.com"),
        ("control_plane_url", "https://cp.example.com/#frag"),
        ("control_plane_url", "https://"),
        ("control_plane_url", "https://cp.example.com:0"),
        ("control_plane_url", "cp.example.com"),
    ],
)
def test_bad_value(document: dict[str, Any], field: str, value: str) -> None:
    document[field] = value
    with pytest.raises(TokenError) as info:
        Token.from_encoded(_encode(document))
    assert info.value.reason == "token_field_invalid"
    assert field in info.value.message


def _bad_certificates(document: dict[str, Any]) -> list[str]:
    pem: str = document["pool_certificate"]
    body_start = pem.index("\n") + 1
    csr_pem = create_csr(PoolPrivateKey.generate_ec(), parse_subject("/CN=x"))
    return [
        "not a pem",
        pem + pem,
        pem[: len(pem) // 2],
        pem[:body_start] + "AAAA" + pem[body_start + 4 :],
        "garbage\n" + pem,
        pem.replace("CERTIFICATE", "X509 CRL"),
        csr_pem.public_bytes(serialization.Encoding.PEM).decode(),
        pem[:-30] + "é" + pem[-29:],
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        pem + " " * 17000,
    ]


@pytest.mark.parametrize("field", ["pool_certificate", "ca_certificate"])
def test_bad_certificate(document: dict[str, Any], field: str) -> None:
    for bad in _bad_certificates(document):
        document[field] = bad
        with pytest.raises(TokenError) as info:
            Token.from_encoded(_encode(document))
        assert info.value.reason == "token_certificate_invalid"
        assert field in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AAAA",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        "not base64 at all!",
        "A" * 44,
    ],
)
def test_bad_signing_key(document: dict[str, Any], value: str) -> None:
    document["run_state_signing_key"] = value
    assert _reason(_encode(document)) == "token_signing_key_invalid"


def test_signing_key_without_padding_accepted(document: dict[str, Any], token: Token) -> None:
    document["run_state_signing_key"] = document["run_state_signing_key"].rstrip("=")
    assert Token.from_encoded(_encode(document)) == token


def test_direct_construction_is_validated(token: Token) -> None:
    fields: dict[str, Any] = {
        "pool_id": token.pool_id,
        "broker_url": token.broker_url,
        "control_plane_url": token.control_plane_url,
        "pool_certificate": token.pool_certificate,
        "ca_certificate": token.ca_certificate,
        "run_state_signing_key": token.run_state_signing_key,
    }
    assert Token(**fields) == token
    for name, bad, reason in [
        ("pool_id", "UPPER", "token_field_invalid"),
        ("version", 2, "token_version_unsupported"),
        ("version", True, "token_field_type"),
        ("pool_certificate", "pem text", "token_field_type"),
        ("run_state_signing_key", b"\x00" * 32, "token_field_type"),
        ("broker_url", 5, "token_field_type"),
    ]:
        with pytest.raises(TokenError) as info:
            Token(**{**fields, name: bad})
        assert (name, info.value.reason) == (name, reason)


def test_canary_no_piece_of_the_token_in_any_error(document: dict[str, Any]) -> None:
    variants: list[dict[str, Any]] = []
    for field, value in [
        ("pool_id", "NOT-VALID-POOL-ID-WITH-LONG-TEXT"),
        ("broker_url", "mqtts://secretive-broker-name.example:0"),
        ("pool_certificate", "x" + document["pool_certificate"]),
        ("run_state_signing_key", "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA=="),
        ("extra_field", "value"),
    ]:
        variants.append({**document, field: value})
    for variant in variants:
        encoded = _encode(variant)
        for text in (encoded, encoded[:-7] + "!", encoded[: len(encoded) // 2 + 1]):
            with pytest.raises(TokenError) as info:
                Token.from_encoded(text)
            error = info.value
            rendered = "\n".join([error.message, error.hint, error.detail, repr(error)])
            windows = {text[i : i + 8] for i in range(len(text) - 7)}
            assert [w for w in windows if w in rendered] == []


# -- the documented example -------------------------------------------------------------------


def test_docs_example_parses() -> None:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- example-token -->\s*```(?:text)?\n(.+?)\n```", text, re.DOTALL)
    assert match is not None, "docs/token.md lost its example token"
    example = Token.from_encoded(match.group(1))
    documented = re.search(r"<!-- example-json -->\s*```json\n(.+?)\n```", text, re.DOTALL)
    assert documented is not None
    assert json.loads(documented.group(1)) == example.to_document()


# -- properties -------------------------------------------------------------------------------

_pool_ids = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\Z")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pool_id=_pool_ids,
    namespace=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z"),
    host=st.lists(_labels, min_size=1, max_size=4).map(".".join),
    port=st.integers(min_value=1, max_value=65535),
    cp_path=st.from_regex(r"\A(/[a-z0-9]{1,8}){0,3}\Z"),
    seed=st.binary(min_size=32, max_size=32),
)
def test_round_trip_property(
    token: Token, pool_id: str, namespace: str, host: str, port: int, cp_path: str, seed: bytes
) -> None:
    original = Token(
        pool_id=pool_id,
        broker_url=f"mqtts://{host}:{port}",
        mqtt_namespace=namespace,
        control_plane_url=f"https://{host}{cp_path}",
        pool_certificate=token.pool_certificate,
        ca_certificate=token.ca_certificate,
        run_state_signing_key=ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key(),
    )
    decoded = Token.from_encoded(original.to_encoded())
    assert decoded == original
    assert decoded.broker_port == port
    assert is_valid_pool_id(decoded.pool_id)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_token_error(data: bytes) -> None:
    with pytest.raises(TokenError) as info:
        Token.from_encoded(data)
    assert info.value.reason in TOKEN_REASONS


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_base64_of_arbitrary_bytes_only_raises_token_error(data: bytes) -> None:
    with pytest.raises(TokenError) as info:
        Token.from_encoded(base64.b64encode(data))
    assert info.value.reason in TOKEN_REASONS


def _parse_or_error(text: str) -> Token | TokenError:
    try:
        return Token.from_encoded(text)
    except TokenError as error:
        return error


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_json_documents_only_raise_token_error(
    document: dict[str, Any], data: st.DataObject
) -> None:
    mutated = dict(document)
    for field in data.draw(st.lists(st.sampled_from(sorted(document)), max_size=3)):
        choice = data.draw(st.sampled_from(["delete", "replace"]))
        if choice == "delete":
            mutated.pop(field, None)
        else:
            mutated[field] = data.draw(_json)
    extra = data.draw(st.dictionaries(st.text(max_size=10), _json, max_size=2))
    mutated.update(extra)
    parsed = _parse_or_error(_encode(mutated))
    if isinstance(parsed, TokenError):
        assert parsed.reason in TOKEN_REASONS
    else:
        assert parsed.to_document() == {**document, **{k: mutated[k] for k in document}}


# -- regressions found by fuzzing -------------------------------------------------------------


def test_regression_certificate_version_30_is_a_token_error(document: dict[str, Any]) -> None:
    """fuzz/token_format.py: cryptography raises x509.InvalidVersion, not ValueError."""
    pem: str = document["ca_certificate"]
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    version_field = b"\xa0\x03\x02\x01\x02"
    assert version_field in der
    bad = der.replace(version_field, b"\xa0\x03\x02\x01\x1e", 1)
    body = base64.encodebytes(bad).decode()
    document["ca_certificate"] = f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
    assert _reason(_encode(document)) == "token_certificate_invalid"


# -- the optional pool sanitize key (issue 12) -------------------------------------------


def test_the_pool_sanitize_key_round_trips_and_never_shows(document: dict[str, Any]) -> None:
    key = bytes(range(32))
    document["policy_sanitize_key"] = base64.b64encode(key).decode()
    token = Token.from_encoded(_encode(document))
    assert token.policy_sanitize_key is not None
    assert token.policy_sanitize_key.reveal() == key
    assert base64.b64encode(key).decode() not in repr(token)
    with token.to_encoded() as encoded:
        assert Token.from_encoded(encoded).policy_sanitize_key is not None
    # Tokens without it (older control planes) still load.
    del document["policy_sanitize_key"]
    assert Token.from_encoded(_encode(document)).policy_sanitize_key is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        base64.b64encode(b"x" * 31).decode(),
        base64.b64encode(b"x" * 33).decode(),
        base64.b64encode(b"x" * 32).decode() + "====",
        32,
        None,
        ["a"],
    ],
)
def test_a_bad_pool_sanitize_key_is_refused(document: dict[str, Any], value: object) -> None:
    document["policy_sanitize_key"] = value
    assert _reason(_encode(document)) in {"token_field_invalid", "token_field_type"}
