"""The pool key loader: every accepted encoding, every refusal with its reason, no leaks."""

from __future__ import annotations

import base64
import binascii
import copy
import pickle
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.identity.base64text import Base64DecodeError, decode_base64
from hardened_launcher.identity.keys import (
    MAX_ENCODED_KEY_BYTES,
    POOL_KEY_REASONS,
    PoolKeyError,
    PoolPrivateKey,
    describe_public_key,
    load_pool_private_key,
    public_key_id,
)
from hardened_launcher.secrets import Secret

PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
OPENSSH = serialization.PrivateFormat.OpenSSH
NONE = serialization.NoEncryption()


def _pem(key: object, fmt: serialization.PrivateFormat = PKCS8, enc: object = NONE) -> bytes:
    return key.private_bytes(PEM, fmt, enc)  # type: ignore[attr-defined,no-any-return]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def csr_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(rsa_key, hashes.SHA256())
    )
    return csr.public_bytes(PEM)


@pytest.fixture(scope="module")
def cert_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    return cert.public_bytes(PEM)


def _reason(encoded: str | bytes) -> str:
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(encoded))
    assert info.value.reason in POOL_KEY_REASONS
    return info.value.reason


# -- accepted forms ---------------------------------------------------------------------------


def test_pkcs8_rsa_round_trip(rsa_key: rsa.RSAPrivateKey) -> None:
    key = load_pool_private_key(Secret(_b64(_pem(rsa_key))))
    assert key.algorithm == "RSA-2048"
    assert key.key_id == public_key_id(rsa_key.public_key())
    assert key.public_key.public_numbers() == rsa_key.public_key().public_numbers()


def test_pkcs1_rsa(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key, TRADITIONAL)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert load_pool_private_key(Secret(_b64(pem))).algorithm == "RSA-2048"


@pytest.mark.parametrize("fmt", [PKCS8, TRADITIONAL])
def test_ec_keys(
    ec_p256: ec.EllipticCurvePrivateKey,
    ec_p384: ec.EllipticCurvePrivateKey,
    fmt: serialization.PrivateFormat,
) -> None:
    assert load_pool_private_key(Secret(_b64(_pem(ec_p256, fmt)))).algorithm == "EC-P256"
    assert load_pool_private_key(Secret(_b64(_pem(ec_p384, fmt)))).algorithm == "EC-P384"


def test_ec_parameters_block_before_the_key(ec_p256: ec.EllipticCurvePrivateKey) -> None:
    # `openssl ecparam -genkey` writes an EC PARAMETERS block first.
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    pem = params + _pem(ec_p256, TRADITIONAL)
    assert load_pool_private_key(Secret(_b64(pem))).algorithm == "EC-P256"


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda text: text, id="base64 -w 0"),
        pytest.param(lambda text: text + "\n", id="trailing newline"),
        pytest.param(lambda text: text + "\r\n", id="trailing CRLF"),
        pytest.param(lambda text: "\n".join(textwrap.wrap(text, 76)) + "\n", id="76 columns"),
        pytest.param(lambda text: "\r\n".join(textwrap.wrap(text, 64)), id="CRLF wrapped"),
        pytest.param(lambda text: "  " + " ".join(textwrap.wrap(text, 10)) + "\t", id="spaces"),
        pytest.param(lambda text: text.rstrip("="), id="padding dropped"),
    ],
)
def test_encodings_accepted(rsa_key: rsa.RSAPrivateKey, transform: object) -> None:
    text = _b64(_pem(rsa_key))
    encoded = transform(text)  # type: ignore[operator]
    assert load_pool_private_key(Secret(encoded)).key_id == public_key_id(rsa_key.public_key())


def test_crlf_pem_inside_base64(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key).replace(b"\n", b"\r\n")
    assert load_pool_private_key(Secret(_b64(pem))).algorithm == "RSA-2048"


def test_generate_and_to_pem_round_trip() -> None:
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    with key.to_pem() as pem:
        again = PoolPrivateKey.from_pem(pem)
    assert again == key
    assert again.key_id_hex == key.key_id.hex()


def test_generate_refuses_small_sizes() -> None:
    with pytest.raises(PoolKeyError) as info:
        PoolPrivateKey.generate(rsa_key_bits=1024)
    assert info.value.reason == "pool_key_too_small"


def test_generate_ec() -> None:
    assert PoolPrivateKey.generate_ec(curve="P384").algorithm == "EC-P384"
    with pytest.raises(PoolKeyError) as info:
        PoolPrivateKey.generate_ec(curve="P521")
    assert info.value.reason == "pool_key_unsupported"


def test_constructor_refuses_weak_keys() -> None:
    with pytest.raises(PoolKeyError) as info:
        PoolPrivateKey(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 -- the weak key is the point
    assert info.value.reason == "pool_key_too_small"
    with pytest.raises(PoolKeyError) as info:
        PoolPrivateKey(ec.generate_private_key(ec.SECP521R1()))
    assert info.value.reason == "pool_key_unsupported"


def test_repr_masks_and_copies_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    key = PoolPrivateKey(rsa_key)
    assert repr(key) == f"PoolPrivateKey(algorithm='RSA-2048', key_id='{key.key_id_hex[:16]}')"
    assert str(key) == repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)
    with pytest.raises(TypeError):
        copy.copy(key)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_describe_public_key() -> None:
    assert describe_public_key(ed25519.Ed25519PrivateKey.generate().public_key()) == "Ed25519"
    assert describe_public_key(ec.generate_private_key(ec.SECP521R1()).public_key()) == "EC-P521"
    assert (
        describe_public_key(ec.generate_private_key(ec.SECP256K1()).public_key()) == "EC-secp256k1"
    )


# -- refusals ---------------------------------------------------------------------------------


def test_empty() -> None:
    assert _reason("") == "pool_key_empty"
    assert _reason("  \n") == "pool_key_empty"


def test_too_large() -> None:
    assert _reason("A" * (MAX_ENCODED_KEY_BYTES + 4)) == "pool_key_too_large"


def test_raw_pem_not_encoded(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(_pem(rsa_key)))
    assert info.value.reason == "pool_key_not_encoded"
    assert "base64 -w 0" in info.value.hint


@pytest.mark.parametrize(
    "text", ["not base64!", "QUJD$", "A", "QQ===", "QQ=A", "Q===", "\uff21\uff22\uff23\uff24"]
)
def test_not_base64(text: str) -> None:
    assert _reason(text) == "pool_key_not_base64"


def test_base64_of_something_else() -> None:
    assert _reason(_b64(b"hello, this is not a key")) == "pool_key_not_pem"
    assert _reason(_b64(b"\x30\x82\x01\x00 DER-ish")) == "pool_key_not_pem"


def test_double_encoded(rsa_key: rsa.RSAPrivateKey) -> None:
    assert _reason(_b64(_b64(_pem(rsa_key)).encode())) == "pool_key_double_encoded"


def test_csr(csr_pem: bytes) -> None:
    assert _reason(_b64(csr_pem)) == "pool_key_is_csr"


def test_certificate(cert_pem: bytes) -> None:
    assert _reason(_b64(cert_pem)) == "pool_key_is_certificate"


def test_public_keys(rsa_key: rsa.RSAPrivateKey) -> None:
    public = rsa_key.public_key()
    spki = public.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = public.public_bytes(PEM, serialization.PublicFormat.PKCS1)
    assert _reason(_b64(spki)) == "pool_key_is_public_key"
    assert _reason(_b64(pkcs1)) == "pool_key_is_public_key"


def test_other_pem_block() -> None:
    pem = b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"
    assert _reason(_b64(pem)) == "pool_key_not_private_key"


def test_encrypted_pkcs8(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key, PKCS8, serialization.BestAvailableEncryption(b"passphrase"))
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(_b64(pem)))
    assert info.value.reason == "pool_key_encrypted"
    assert "openssl pkey -in k -out k.dec" in info.value.hint


def test_encrypted_traditional(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key, TRADITIONAL, serialization.BestAvailableEncryption(b"passphrase"))
    assert b"Proc-Type: 4,ENCRYPTED" in pem
    assert _reason(_b64(pem)) == "pool_key_encrypted"


def test_truncated_no_end_line(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key)
    assert _reason(_b64(pem[: len(pem) // 2])) == "pool_key_truncated"


def test_truncated_body(rsa_key: rsa.RSAPrivateKey) -> None:
    lines = _pem(rsa_key).splitlines(keepends=True)
    cut = lines[:5] + lines[-1:]
    assert _reason(_b64(b"".join(cut))) == "pool_key_truncated"


def test_corrupted_body(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = bytearray(_pem(rsa_key))
    pem[100] = ord("!")
    assert _reason(_b64(bytes(pem))) == "pool_key_truncated"


def test_two_keys(rsa_key: rsa.RSAPrivateKey, ec_p256: ec.EllipticCurvePrivateKey) -> None:
    assert _reason(_b64(_pem(rsa_key) + _pem(ec_p256))) == "pool_key_ambiguous"


def test_rsa_too_small() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 -- the weak key is the point
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(_b64(_pem(small))))
    assert info.value.reason == "pool_key_too_small"
    assert "RSA-1024" in info.value.message


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="P-521"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()), id="secp256k1"),
        pytest.param(ed25519.Ed25519PrivateKey.generate, id="Ed25519"),
        pytest.param(x25519.X25519PrivateKey.generate, id="X25519"),
        pytest.param(lambda: dsa.generate_private_key(key_size=2048), id="DSA-PKCS8"),
    ],
)
def test_unsupported_types(make: object) -> None:
    key = make()  # type: ignore[operator]
    assert _reason(_b64(_pem(key))) == "pool_key_unsupported"


def test_dsa_traditional_and_openssh() -> None:
    dsa_key = dsa.generate_private_key(key_size=2048)
    assert _reason(_b64(_pem(dsa_key, TRADITIONAL))) == "pool_key_unsupported"
    ed = ed25519.Ed25519PrivateKey.generate()
    assert _reason(_b64(_pem(ed, OPENSSH))) == "pool_key_unsupported"


# -- no leaks ---------------------------------------------------------------------------------


def _windows(text: str, size: int = 8) -> set[str]:
    return {text[i : i + size] for i in range(max(0, len(text) - size + 1))}


def _rendered(error: PoolKeyError) -> str:
    return "\n".join(
        [error.message, error.hint, error.detail, str(error), repr(error), error.one_line()]
    )


def _assert_no_window(secret_text: str, rendered: str) -> None:
    leaked = [window for window in _windows(secret_text) if window in rendered]
    assert leaked == []


def test_canary_no_piece_of_the_key_in_any_error(
    rsa_key: rsa.RSAPrivateKey, ec_p256: ec.EllipticCurvePrivateKey
) -> None:
    pem = _pem(rsa_key)
    text = _b64(pem)
    lines = pem.splitlines(keepends=True)
    corrupted = bytearray(pem)
    corrupted[200] = ord("*")
    cases = {
        "raw pem": (pem.decode(), "pool_key_not_encoded"),
        "not base64": (text[:500] + "!" + text[500:], "pool_key_not_base64"),
        "truncated base64": (text[:-3] + "=", "pool_key_not_base64"),
        "no END": (_b64(pem[:1500]), "pool_key_truncated"),
        "short body": (_b64(b"".join(lines[:8] + lines[-1:])), "pool_key_truncated"),
        "corrupted": (_b64(bytes(corrupted)), "pool_key_truncated"),
        "two keys": (_b64(pem + _pem(ec_p256)), "pool_key_ambiguous"),
        "double": (_b64(text.encode()), "pool_key_double_encoded"),
        "encrypted": (
            _b64(_pem(rsa_key, PKCS8, serialization.BestAvailableEncryption(b"pw"))),
            "pool_key_encrypted",
        ),
        "too large": (text * 40, "pool_key_too_large"),
    }
    for case, (encoded, reason) in cases.items():
        with pytest.raises(PoolKeyError) as info:
            load_pool_private_key(Secret(encoded))
        assert (case, info.value.reason) == (case, reason)
        _assert_no_window(encoded, _rendered(info.value))
    good = load_pool_private_key(Secret(text))
    _assert_no_window(text, repr(good) + str(good))


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_only_raises_pool_key_error(text: str) -> None:
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(text))
    assert info.value.reason in POOL_KEY_REASONS


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=12, max_size=600),
    st.sampled_from(["as is", "cut", "bang", "pem-wrapped", "raw"]),
)
def test_canary_random_key_material_never_echoed(data: bytes, mangle: str) -> None:
    text = _b64(data)
    encoded = {
        "as is": text,
        "cut": text[: len(text) // 2 * 2 + 1],
        "bang": text[:8] + "!" + text[8:],
        "pem-wrapped": _b64(b"-----BEGIN PRIVATE KEY-----\n" + text.encode()),
        "raw": "-----BEGIN PRIVATE KEY-----\n" + text + "\n-----END PRIVATE KEY-----\n",
    }[mangle]
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(encoded))
    # Random base64 text: any 8-character run of it found in the error came from the input.
    _assert_no_window(text, _rendered(info.value))


_LABELS = [
    "PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "CERTIFICATE",
    "CERTIFICATE REQUEST",
    "PUBLIC KEY",
    "OPENSSH PRIVATE KEY",
    "EC PARAMETERS",
    "SOMETHING",
]


@st.composite
def _pem_like(draw: st.DrawFn) -> bytes:
    blocks = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        label = draw(st.sampled_from(_LABELS)).encode()
        body = base64.encodebytes(draw(st.binary(max_size=300)))
        end = draw(st.sampled_from([b"-----END " + label + b"-----\n", b"", b"-----END X-----"]))
        blocks.append(b"-----BEGIN " + label + b"-----\n" + body + end)
    return b"".join(blocks)


@settings(max_examples=300, deadline=None)
@given(_pem_like())
def test_pem_shaped_garbage_only_raises_pool_key_error(pem: bytes) -> None:
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(Secret(_b64(pem)))
    assert info.value.reason in POOL_KEY_REASONS


@given(
    st.binary(max_size=600),
    st.integers(min_value=1, max_value=100),
    st.sampled_from(["\n", "\r\n", " ", "\t"]),
    st.booleans(),
)
def test_base64_decoder_round_trip(data: bytes, width: int, sep: str, strip: bool) -> None:
    text = base64.b64encode(data).decode()
    if strip:
        text = text.rstrip("=")
    wrapped = sep.join(text[i : i + width] for i in range(0, len(text), width)) + sep
    assert decode_base64(wrapped.encode()) == bytearray(data)


@given(st.binary(max_size=200))
def test_base64_decoder_agrees_with_stdlib(data: bytes) -> None:
    compact = bytes(b for b in data if b not in b" \t\r\n\v\f")
    try:
        ours: bytes | None = bytes(decode_base64(data))
    except Base64DecodeError:
        ours = None
    try:
        theirs: bytes | None = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error:
        theirs = None
    if theirs is not None:
        assert ours == theirs
    if ours is not None and len(compact) % 4 == 0:
        assert theirs == ours or theirs is None  # stdlib is stricter about non-zero pad bits
