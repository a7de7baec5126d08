"""The envelope's binary layout: encode/parse round trip, strict parsing, documented offsets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.envelope.errors import EnvelopeConfigurationError, EnvelopeError, Reason
from hardened_launcher.envelope.format import (
    FIXED_OVERHEAD_BYTES,
    FORMAT_VERSION,
    KEY_ID_BYTES,
    MAGIC,
    MAX_POOL_ID_BYTES,
    MAX_RUN_ID_BYTES,
    MAX_TIMESTAMP_SECONDS,
    NONCE_BYTES,
    SIGNATURE_BYTES,
    TAG_BYTES,
    Algorithm,
    encode_header,
    envelope_size_bytes,
    parse_envelope,
)

IDENT_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
LEADING = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def identifiers(max_bytes: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(LEADING),
        st.text(alphabet=IDENT_ALPHABET, max_size=max_bytes - 1),
    )


def key_material_for(algorithm: Algorithm) -> st.SearchStrategy[bytes]:
    if algorithm is Algorithm.RSA_OAEP_SHA256_AES256GCM:
        return st.sampled_from([256, 384, 512, 1024, 2048]).flatmap(
            lambda n: st.binary(min_size=n, max_size=n)
        )
    return st.sampled_from([65, 97]).flatmap(
        lambda n: st.binary(min_size=n - 1, max_size=n - 1).map(lambda b: b"\x04" + b)
    )


def build(
    *,
    algorithm: Algorithm = Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM,
    key_id: bytes = b"\x11" * KEY_ID_BYTES,
    run_id: str = "01HRUNAAAA",
    pool_id: str = "01HPOOLBBBB",
    issued: int = 1_900_000_000,
    expires: int = 1_900_000_600,
    key_material: bytes = b"\x04" + b"\x22" * 64,
    nonce: bytes = b"\x33" * NONCE_BYTES,
    ciphertext: bytes = b"\x44" * (TAG_BYTES + 5),
    signature: bytes = b"\x55" * SIGNATURE_BYTES,
) -> bytes:
    header = encode_header(
        algorithm=algorithm,
        key_id=key_id,
        run_id=run_id,
        pool_id=pool_id,
        issued_at_seconds=issued,
        expires_at_seconds=expires,
        key_material=key_material,
        nonce=nonce,
        ciphertext_bytes=len(ciphertext),
    )
    return header + ciphertext + signature


def reason_of(data: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        parse_envelope(data)
    return info.value.reason


@settings(max_examples=200, deadline=None)
@given(
    algorithm=st.sampled_from(list(Algorithm)),
    data=st.data(),
    key_id=st.binary(min_size=32, max_size=32),
    run_id=identifiers(MAX_RUN_ID_BYTES),
    pool_id=identifiers(MAX_POOL_ID_BYTES),
    issued=st.integers(0, MAX_TIMESTAMP_SECONDS),
    expires=st.integers(0, MAX_TIMESTAMP_SECONDS),
    nonce=st.binary(min_size=12, max_size=12),
    ciphertext=st.binary(min_size=16, max_size=300),
    signature=st.binary(min_size=64, max_size=64),
)
def test_encode_then_parse_returns_every_field(
    algorithm: Algorithm,
    data: st.DataObject,
    key_id: bytes,
    run_id: str,
    pool_id: str,
    issued: int,
    expires: int,
    nonce: bytes,
    ciphertext: bytes,
    signature: bytes,
) -> None:
    material = data.draw(key_material_for(algorithm))
    raw = build(
        algorithm=algorithm,
        key_id=key_id,
        run_id=run_id,
        pool_id=pool_id,
        issued=issued,
        expires=expires,
        key_material=material,
        nonce=nonce,
        ciphertext=ciphertext,
        signature=signature,
    )
    parsed = parse_envelope(raw)
    assert (parsed.version, parsed.algorithm, parsed.key_id) == (FORMAT_VERSION, algorithm, key_id)
    assert (parsed.run_id, parsed.pool_id) == (run_id, pool_id)
    assert (parsed.issued_at_seconds, parsed.expires_at_seconds) == (issued, expires)
    assert (parsed.key_material, parsed.nonce) == (material, nonce)
    assert bytes(parsed.ciphertext) == ciphertext
    assert parsed.signature == signature
    assert bytes(parsed.signed) == raw[:-SIGNATURE_BYTES]
    assert bytes(parsed.header) == raw[: len(raw) - len(ciphertext) - SIGNATURE_BYTES]
    assert len(raw) == envelope_size_bytes(
        run_id_bytes=len(run_id),
        pool_id_bytes=len(pool_id),
        key_material_bytes=len(material),
        plaintext_bytes=len(ciphertext) - TAG_BYTES,
    )


def test_layout_matches_the_documented_offsets() -> None:
    raw = build(run_id="R1", pool_id="P12", issued=0x0000001122334455, expires=9)
    assert raw[0:4] == MAGIC == b"HLRS"
    assert raw[4] == FORMAT_VERSION == 1
    assert raw[5] == int(Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM) == 2
    assert raw[6:38] == b"\x11" * 32
    assert raw[38] == 2
    assert raw[39:41] == b"R1"
    assert raw[41] == 3
    assert raw[42:45] == b"P12"
    # 40 + R + P = 45: issued_at, expires_at as big-endian u64.
    assert raw[45:53] == bytes.fromhex("0000001122334455")
    assert struct.unpack(">Q", raw[53:61]) == (9,)
    assert struct.unpack(">H", raw[61:63]) == (65,)
    assert raw[63:128] == b"\x04" + b"\x22" * 64
    assert raw[128:140] == b"\x33" * 12
    assert struct.unpack(">I", raw[140:144]) == (21,)
    assert raw[144:165] == b"\x44" * 21
    assert raw[165:] == b"\x55" * 64
    assert len(raw) == FIXED_OVERHEAD_BYTES + 2 + 3 + 65 + 21 == 229


def test_every_truncation_is_refused_as_truncated() -> None:
    raw = build()
    reasons = {reason_of(raw[:cut]) for cut in range(len(raw))}
    assert reasons == {Reason.TRUNCATED}


@settings(max_examples=100, deadline=None)
@given(extra=st.binary(min_size=1, max_size=200))
def test_appended_bytes_are_refused(extra: bytes) -> None:
    assert reason_of(build() + extra) == Reason.TRAILING_BYTES


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (0, b"X", Reason.BAD_MAGIC),
        (4, b"\x00", Reason.VERSION_UNSUPPORTED),
        (4, b"\x02", Reason.VERSION_UNSUPPORTED),
        (5, b"\x00", Reason.ALGORITHM_UNSUPPORTED),
        (5, b"\x03", Reason.ALGORITHM_UNSUPPORTED),
        (38, b"\x00", Reason.FIELD_INVALID),  # run id length 0
        (38, bytes((MAX_RUN_ID_BYTES + 1,)), Reason.FIELD_INVALID),
        (39, b"-", Reason.FIELD_INVALID),  # run id must start with a letter or digit
        (40, b"/", Reason.FIELD_INVALID),  # outside the charset
        (40, b"\xc3", Reason.FIELD_INVALID),  # non-ASCII
    ],
)
def test_header_fields_are_checked(offset: int, value: bytes, reason: Reason) -> None:
    raw = bytearray(build(run_id="R1X"))
    raw[offset : offset + len(value)] = value
    assert reason_of(bytes(raw)) == reason


def test_timestamps_beyond_year_9999_are_refused() -> None:
    raw = bytearray(build(run_id="R1", pool_id="P12"))
    raw[45:53] = struct.pack(">Q", MAX_TIMESTAMP_SECONDS + 1)
    assert reason_of(bytes(raw)) == Reason.FIELD_INVALID


@pytest.mark.parametrize(
    ("algorithm", "material"),
    [
        (Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM, b"\x04" + b"\x00" * 63),  # 64: no curve
        (Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM, b"\x02" + b"\x00" * 64),  # compressed form
        (Algorithm.RSA_OAEP_SHA256_AES256GCM, b"\x00" * 255),  # below RSA-2048
        (Algorithm.RSA_OAEP_SHA256_AES256GCM, b"\x00" * 2049),  # above RSA-16384
    ],
)
def test_key_material_must_fit_the_algorithm(algorithm: Algorithm, material: bytes) -> None:
    good = Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM
    raw = bytearray(build(algorithm=good, run_id="R1", pool_id="P12"))
    # Rewrite algorithm, key material length and key material by hand (encode refuses them).
    raw[5] = int(algorithm)
    raw[61:128] = struct.pack(">H", len(material)) + material
    assert reason_of(bytes(raw)) == Reason.FIELD_INVALID


def test_ciphertext_shorter_than_the_tag_is_refused() -> None:
    raw = bytearray(build(run_id="R1", pool_id="P12"))
    raw[140:144] = struct.pack(">I", TAG_BYTES - 1)
    assert reason_of(bytes(raw)) == Reason.FIELD_INVALID


def test_huge_declared_ciphertext_length_is_truncated_not_allocated() -> None:
    raw = bytearray(build(run_id="R1", pool_id="P12"))
    raw[140:144] = struct.pack(">I", 0xFFFFFFFF)
    assert reason_of(bytes(raw)) == Reason.TRUNCATED


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_parse_of_arbitrary_bytes_raises_only_envelope_errors(data: bytes) -> None:
    # Random bytes never form an envelope (magic, exact lengths); any other exception fails.
    assert reason_of(data).startswith("envelope_")


@settings(max_examples=100, deadline=None)
@given(prefix=st.binary(max_size=40))
def test_parse_of_magic_prefixed_garbage_raises_only_envelope_errors(prefix: bytes) -> None:
    reason = reason_of(MAGIC + bytes((FORMAT_VERSION, 2)) + prefix)
    assert reason in {Reason.TRUNCATED, Reason.FIELD_INVALID}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"run_id": ""},
        {"run_id": "x" * (MAX_RUN_ID_BYTES + 1)},
        {"run_id": "run id"},
        {"run_id": "rün"},
        {"pool_id": "_pool"},
        {"key_id": b"\x00" * 31},
        {"issued": -1},
        {"expires": MAX_TIMESTAMP_SECONDS + 1},
        {"nonce": b"\x00" * 11},
        {"ciphertext": b"\x00" * 15},
        {"key_material": b"\x04" * 10},
    ],
)
def test_encode_refuses_values_the_format_cannot_carry(kwargs: dict[str, object]) -> None:
    with pytest.raises(EnvelopeConfigurationError) as info:
        build(**kwargs)  # type: ignore[arg-type]
    assert info.value.reason == Reason.SEAL_FIELD_INVALID


def test_reason_slugs_are_distinct() -> None:
    values = [member.value for member in Reason.__members__.values()]
    assert len(values) == len(set(values))
    assert all(value.islower() and " " not in value for value in values)
