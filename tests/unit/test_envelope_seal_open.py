"""Seal on the control-plane side, open on the launcher side: every check and its order."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher import secrets as secrets_module
from hardened_launcher.envelope import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_LIFETIME_SECONDS,
    Algorithm,
    EnvelopeConfigurationError,
    EnvelopeError,
    MemoryReplayCache,
    OpenedRunState,
    PoolPrivateKey,
    PoolPublicKey,
    Reason,
    envelope_overhead_bytes,
    key_id_of,
    open_run_state,
    parse_envelope,
    seal_run_state,
)
from hardened_launcher.envelope import open as open_module
from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.secrets import SecretWipedError

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
LIFETIME = timedelta(minutes=10)
SKEW = timedelta(minutes=2)
POOL = "01HPOOL0000000000000000000"
RUN = "01HRUN00000000000000000000"
HYPOTHESIS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- keys: generated once per module -------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p384_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def signer() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def other_signer() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# -- helpers -------------------------------------------------------------------------------------
def seal(
    key: PoolPrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    plaintext: bytes = b"run state",
    *,
    run_id: str = RUN,
    pool_id: str = POOL,
    issued: datetime = NOW,
    expires: datetime = NOW + LIFETIME,
    limit: int = DEFAULT_MAX_ENVELOPE_BYTES,
) -> bytes:
    return seal_run_state(
        plaintext,
        pool_public_key=key.public_key(),
        signing_key=signer,
        run_id=run_id,
        pool_id=pool_id,
        issued_at=issued,
        expires_at=expires,
        max_envelope_bytes=limit,
    )


def open_(
    envelope: bytes,
    key: Any,
    signer_public: Any,
    *,
    cache: Any = None,
    now: datetime = NOW,
    skew: timedelta = SKEW,
    pool_id: str = POOL,
    limit: int = DEFAULT_MAX_ENVELOPE_BYTES,
) -> OpenedRunState:
    return open_run_state(
        envelope,
        pool_private_key=key,
        signer_public_key=signer_public,
        expected_pool_id=pool_id,
        replay_cache=MemoryReplayCache() if cache is None else cache,
        now=now,
        clock_skew=skew,
        max_envelope_bytes=limit,
    )


def refusal(envelope: bytes, key: Any, signer_public: Any, **kwargs: Any) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        open_(envelope, key, signer_public, **kwargs)
    error = info.value
    assert isinstance(error, UntrustedInputError)
    assert error.message
    assert error.hint
    return error


def resign(envelope: bytes, signer: ed25519.Ed25519PrivateKey) -> bytes:
    body = envelope[:-64]
    return body + signer.sign(body)


def times_offset(envelope: bytes) -> int:
    parsed = parse_envelope(envelope)
    return 6 + 32 + 1 + len(parsed.run_id) + 1 + len(parsed.pool_id)


def with_times(envelope: bytes, issued: int, expires: int) -> bytes:
    at = times_offset(envelope)
    return envelope[:at] + struct.pack(">QQ", issued, expires) + envelope[at + 16 :]


class SpyRSAKey(rsa.RSAPrivateKey):
    """A real RSA key that records every method called on it."""

    def __init__(self, real: rsa.RSAPrivateKey, *, decrypt_error: Exception | None = None):
        self._real = real
        self._decrypt_error = decrypt_error
        self.calls: list[str] = []

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        self.calls.append("decrypt")
        if self._decrypt_error is not None:
            raise self._decrypt_error
        return self._real.decrypt(ciphertext, padding)

    @property
    def key_size(self) -> int:
        self.calls.append("key_size")
        return self._real.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        self.calls.append("public_key")
        return self._real.public_key()

    # Interface methods the envelope code must never call: their arguments are irrelevant.
    def sign(self, *args: object, **kwargs: object) -> bytes:  # noqa: ARG002
        raise AssertionError("the envelope code never signs with the pool key")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise AssertionError("the envelope code never reads private numbers")

    def private_bytes(self, *args: object, **kwargs: object) -> bytes:  # noqa: ARG002
        raise AssertionError("the envelope code never serializes the private key")

    def __copy__(self) -> SpyRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> SpyRSAKey:
        return self


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key_name", "algorithm"),
    [
        ("rsa_key", Algorithm.RSA_OAEP_SHA256_AES256GCM),
        ("p256_key", Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM),
        ("p384_key", Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM),
    ],
)
def test_round_trip_returns_the_proof(
    request: pytest.FixtureRequest,
    signer: ed25519.Ed25519PrivateKey,
    key_name: str,
    algorithm: Algorithm,
) -> None:
    key: PoolPrivateKey = request.getfixturevalue(key_name)
    envelope = seal(key, signer, b"secret run state")
    opened = open_(envelope, key, signer.public_key())
    assert opened.run_id == RUN
    assert opened.pool_id == POOL
    assert opened.issued_at == NOW
    assert opened.expires_at == NOW + LIFETIME
    assert opened.algorithm is algorithm
    assert opened.key_id == key_id_of(key.public_key())
    assert opened.envelope_sha256 == hashlib.sha256(envelope).digest()
    assert opened.plaintext.reveal() == b"secret run state"
    assert opened.audit_fields()["envelope_sha256"] == hashlib.sha256(envelope).hexdigest()


def test_round_trip_with_rsa_4096(signer: ed25519.Ed25519PrivateKey) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    envelope = seal(key, signer, b"x" * 3000)
    assert len(parse_envelope(envelope).key_material) == 512
    with open_(envelope, key, signer.public_key()) as opened:
        assert opened.plaintext.reveal() == b"x" * 3000


@settings(HYPOTHESIS, max_examples=40)
@given(data=st.data())
def test_round_trip_of_arbitrary_payloads_up_to_the_limit(
    rsa_key: rsa.RSAPrivateKey,
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    data: st.DataObject,
) -> None:
    keys: list[PoolPrivateKey] = [rsa_key, p256_key]
    key = data.draw(st.sampled_from(keys))
    limit = 4096
    room = limit - envelope_overhead_bytes(
        pool_public_key=key.public_key(), run_id=RUN, pool_id=POOL
    )
    payload = data.draw(st.binary(max_size=room))
    envelope = seal(key, signer, payload, limit=limit)
    assert len(envelope) <= limit
    with open_(envelope, key, signer.public_key(), limit=limit) as opened:
        assert opened.plaintext.reveal() == payload


def test_round_trip_of_an_empty_payload(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    with open_(seal(p256_key, signer, b""), p256_key, signer.public_key()) as opened:
        assert opened.plaintext.reveal() == b""


def test_an_envelope_of_exactly_the_default_limit_opens(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    overhead = envelope_overhead_bytes(
        pool_public_key=p256_key.public_key(), run_id=RUN, pool_id=POOL
    )
    payload = os.urandom(DEFAULT_MAX_ENVELOPE_BYTES - overhead)
    envelope = seal(p256_key, signer, payload)
    assert len(envelope) == DEFAULT_MAX_ENVELOPE_BYTES
    with open_(envelope, p256_key, signer.public_key()) as opened:
        assert opened.plaintext.reveal() == payload


def test_one_byte_over_the_default_limit_is_refused_by_both_sides(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    overhead = envelope_overhead_bytes(
        pool_public_key=p256_key.public_key(), run_id=RUN, pool_id=POOL
    )
    payload = bytes(DEFAULT_MAX_ENVELOPE_BYTES - overhead + 1)
    with pytest.raises(EnvelopeConfigurationError) as info:
        seal(p256_key, signer, payload)
    assert info.value.reason == Reason.SEAL_TOO_LARGE
    envelope = seal(p256_key, signer, payload, limit=DEFAULT_MAX_ENVELOPE_BYTES + 1)
    assert len(envelope) == DEFAULT_MAX_ENVELOPE_BYTES + 1
    assert refusal(envelope, p256_key, signer.public_key()).reason == Reason.TOO_LARGE


def test_each_seal_uses_a_fresh_data_key_and_nonce(
    rsa_key: rsa.RSAPrivateKey,
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
) -> None:
    for key in (rsa_key, p256_key):
        first, second = parse_envelope(seal(key, signer)), parse_envelope(seal(key, signer))
        assert first.key_material != second.key_material
        assert first.nonce != second.nonce
        assert bytes(first.ciphertext) != bytes(second.ciphertext)


# -- the order of checks -------------------------------------------------------------------------
def test_oversize_is_refused_before_any_key_signature_or_cache_use(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    spy = SpyRSAKey(rsa_key)
    signer_public = mock.create_autospec(ed25519.Ed25519PublicKey, instance=True)
    cache = mock.create_autospec(MemoryReplayCache, instance=True)
    envelope = b"HLRS" + bytes(1020)
    error = refusal(envelope, spy, signer_public, cache=cache, limit=1023)
    assert error.reason == Reason.TOO_LARGE
    assert spy.calls == []
    assert signer_public.mock_calls == []
    assert cache.mock_calls == []


@pytest.mark.parametrize("region", ["key_material", "ciphertext", "nonce"])
def test_no_private_key_operation_on_unsigned_bytes(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey, region: str
) -> None:
    envelope = bytearray(seal(rsa_key, signer))
    parsed = parse_envelope(bytes(envelope))
    start = {
        "key_material": bytes(envelope).index(parsed.key_material),
        "nonce": bytes(envelope).index(parsed.nonce),
        "ciphertext": parsed.header_bytes,
    }[region]
    envelope[start] ^= 0x01
    spy = SpyRSAKey(rsa_key)
    cache = mock.create_autospec(MemoryReplayCache, instance=True)
    error = refusal(bytes(envelope), spy, signer.public_key(), cache=cache)
    assert error.reason == Reason.SIGNATURE_INVALID
    assert "decrypt" not in spy.calls
    assert cache.mock_calls == []


def test_a_replay_is_refused_before_decryption(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    envelope = seal(rsa_key, signer)
    cache = MemoryReplayCache()
    open_(envelope, rsa_key, signer.public_key(), cache=cache).plaintext.wipe()
    spy = SpyRSAKey(rsa_key)
    assert refusal(envelope, spy, signer.public_key(), cache=cache).reason == Reason.REPLAYED
    assert "decrypt" not in spy.calls


# -- tampering ----------------------------------------------------------------------------------
def test_every_single_bit_flip_is_refused(
    rsa_key: rsa.RSAPrivateKey,
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
) -> None:
    for key in (rsa_key, p256_key):
        envelope = seal(key, signer, b"tiny")
        reasons: set[str] = set()
        for bit in range(len(envelope) * 8):
            flipped = bytearray(envelope)
            flipped[bit // 8] ^= 1 << (bit % 8)
            reasons.add(refusal(bytes(flipped), key, signer.public_key()).reason)
        assert Reason.SIGNATURE_INVALID in reasons
        assert Reason.WRONG_KEY in reasons
        assert Reason.BAD_MAGIC in reasons


@settings(HYPOTHESIS, max_examples=150)
@given(payload=st.binary(max_size=300), data=st.data())
def test_a_flipped_bit_anywhere_is_refused(
    rsa_key: rsa.RSAPrivateKey,
    p384_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    payload: bytes,
    data: st.DataObject,
) -> None:
    keys: list[PoolPrivateKey] = [rsa_key, p384_key]
    key = data.draw(st.sampled_from(keys))
    envelope = bytearray(seal(key, signer, payload))
    position = data.draw(st.integers(0, len(envelope) * 8 - 1))
    envelope[position // 8] ^= 1 << (position % 8)
    refusal(bytes(envelope), key, signer.public_key())


@settings(HYPOTHESIS, max_examples=100)
@given(payload=st.binary(max_size=300), data=st.data())
def test_truncation_at_any_length_is_refused(
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    payload: bytes,
    data: st.DataObject,
) -> None:
    envelope = seal(p256_key, signer, payload)
    cut = data.draw(st.integers(0, len(envelope) - 1))
    assert refusal(envelope[:cut], p256_key, signer.public_key()).reason in {
        Reason.TRUNCATED,
        Reason.BAD_MAGIC,
    }


def test_every_truncation_of_one_envelope_is_refused(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    envelope = seal(rsa_key, signer, b"payload")
    reasons = {
        refusal(envelope[:cut], rsa_key, signer.public_key()).reason for cut in range(len(envelope))
    }
    assert reasons == {Reason.TRUNCATED}


@settings(HYPOTHESIS, max_examples=100)
@given(extra=st.binary(min_size=1, max_size=100))
def test_appended_bytes_are_refused(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey, extra: bytes
) -> None:
    envelope = seal(p256_key, signer)
    assert refusal(envelope + extra, p256_key, signer.public_key()).reason == Reason.TRAILING_BYTES


def test_a_header_change_signed_again_still_fails_decryption(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    # Proves the header is AES-GCM associated data, not only covered by the signature.
    envelope = seal(rsa_key, signer)
    parsed = parse_envelope(envelope)
    shifted = with_times(envelope, parsed.issued_at_seconds - 1, parsed.expires_at_seconds)
    error = refusal(resign(shifted, signer), rsa_key, signer.public_key())
    assert error.reason == Reason.DECRYPT_FAILED


@pytest.mark.parametrize("key_name", ["rsa_key", "p256_key"])
@pytest.mark.parametrize("region", ["key_material", "ciphertext"])
def test_signed_but_undecryptable_envelopes_fail_with_one_message(
    request: pytest.FixtureRequest,
    signer: ed25519.Ed25519PrivateKey,
    key_name: str,
    region: str,
) -> None:
    key: PoolPrivateKey = request.getfixturevalue(key_name)
    envelope = bytearray(seal(key, signer))
    parsed = parse_envelope(bytes(envelope))
    if region == "key_material":
        at = bytes(envelope).index(parsed.key_material) + len(parsed.key_material) - 1
    else:
        at = parsed.header_bytes
    envelope[at] ^= 0x01
    error = refusal(resign(bytes(envelope), signer), key, signer.public_key())
    assert error.reason == Reason.DECRYPT_FAILED
    assert error.message == "the envelope could not be decrypted with this pool key"
    assert error.detail == ""
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize(
    "failure", [ValueError("Decryption failed"), UnsupportedAlgorithm("no such padding")]
)
def test_dependency_errors_from_the_key_are_translated(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey, failure: Exception
) -> None:
    spy = SpyRSAKey(rsa_key, decrypt_error=failure)
    error = refusal(seal(rsa_key, signer), spy, signer.public_key())
    assert error.reason == Reason.DECRYPT_FAILED
    assert spy.calls.count("decrypt") == 1


def test_an_ephemeral_point_off_the_curve_is_refused(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    envelope = seal(p256_key, signer)
    parsed = parse_envelope(envelope)
    at = envelope.index(parsed.key_material)
    off_curve = b"\x04" + b"\x01" * 64
    forged = envelope[:at] + off_curve + envelope[at + 65 :]
    assert refusal(resign(forged, signer), p256_key, signer.public_key()).reason == (
        Reason.DECRYPT_FAILED
    )


# -- keys and pools -----------------------------------------------------------------------------
@pytest.mark.parametrize("wrong_name", ["other_rsa_key", "p256_key", "p384_key"])
def test_an_envelope_for_another_pool_key_is_refused(
    request: pytest.FixtureRequest,
    rsa_key: rsa.RSAPrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    wrong_name: str,
) -> None:
    wrong: PoolPrivateKey = request.getfixturevalue(wrong_name)
    error = refusal(seal(rsa_key, signer), wrong, signer.public_key())
    assert error.reason == Reason.WRONG_KEY
    assert "pool key" in error.message
    assert "reset" in error.hint


def test_an_ec_envelope_is_refused_by_the_other_curve(
    p256_key: ec.EllipticCurvePrivateKey,
    p384_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
) -> None:
    assert refusal(seal(p256_key, signer), p384_key, signer.public_key()).reason == (
        Reason.WRONG_KEY
    )


def test_an_algorithm_that_does_not_fit_our_key_is_refused(
    rsa_key: rsa.RSAPrivateKey,
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
) -> None:
    # An EC envelope relabelled with our RSA key's id: the algorithm cannot be ours.
    envelope = bytearray(seal(p256_key, signer))
    envelope[6:38] = key_id_of(rsa_key.public_key())
    error = refusal(resign(bytes(envelope), signer), rsa_key, signer.public_key())
    assert error.reason == Reason.ALGORITHM_MISMATCH


def test_key_material_of_another_rsa_size_is_refused(
    rsa_key: rsa.RSAPrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    bigger = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    envelope = bytearray(seal(bigger, signer))
    envelope[6:38] = key_id_of(rsa_key.public_key())
    error = refusal(resign(bytes(envelope), signer), rsa_key, signer.public_key())
    assert error.reason == Reason.KEY_MATERIAL_INVALID


def test_an_envelope_for_another_pool_is_refused(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    envelope = seal(p256_key, signer, pool_id="01HOTHERPOOL")
    error = refusal(envelope, p256_key, signer.public_key())
    assert error.reason == Reason.POOL_MISMATCH
    assert "01HOTHERPOOL" in error.message


def test_a_signature_from_another_key_is_refused(
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    other_signer: ed25519.Ed25519PrivateKey,
) -> None:
    sealed_by_other = seal(p256_key, other_signer)
    assert refusal(sealed_by_other, p256_key, signer.public_key()).reason == (
        Reason.SIGNATURE_INVALID
    )
    resigned = resign(seal(p256_key, signer), other_signer)
    assert refusal(resigned, p256_key, signer.public_key()).reason == Reason.SIGNATURE_INVALID


# -- time --------------------------------------------------------------------------------------
def test_time_window_edges(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    envelope = seal(p256_key, signer)
    public = signer.public_key()
    one = timedelta(seconds=1)
    expires = NOW + LIFETIME
    # Within the skew on both ends: accepted.
    assert open_(envelope, p256_key, public, now=NOW - SKEW).run_id == RUN
    assert open_(envelope, p256_key, public, now=expires + SKEW - one).run_id == RUN
    # Past the skew: refused.
    assert refusal(envelope, p256_key, public, now=NOW - SKEW - one).reason == Reason.NOT_YET_VALID
    assert refusal(envelope, p256_key, public, now=expires + SKEW).reason == Reason.EXPIRED
    assert refusal(envelope, p256_key, public, now=expires + timedelta(days=3)).reason == (
        Reason.EXPIRED
    )
    # With no skew the window is exact.
    zero = timedelta(0)
    assert refusal(envelope, p256_key, public, now=expires, skew=zero).reason == Reason.EXPIRED
    assert refusal(envelope, p256_key, public, now=NOW - one, skew=zero).reason == (
        Reason.NOT_YET_VALID
    )


@pytest.mark.parametrize(
    ("issued_delta", "expires_delta", "reason"),
    [
        (0, 0, Reason.VALIDITY_INVALID),
        (0, -5, Reason.VALIDITY_INVALID),
        (0, MAX_ENVELOPE_LIFETIME_SECONDS + 1, Reason.LIFETIME_TOO_LONG),
    ],
)
def test_impossible_validity_windows_are_refused(
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    issued_delta: int,
    expires_delta: int,
    reason: Reason,
) -> None:
    now_s = int(NOW.timestamp())
    envelope = with_times(seal(p256_key, signer), now_s + issued_delta, now_s + expires_delta)
    assert refusal(resign(envelope, signer), p256_key, signer.public_key()).reason == reason


@pytest.mark.parametrize(
    "expires",
    [NOW, NOW - timedelta(seconds=1), NOW + timedelta(seconds=MAX_ENVELOPE_LIFETIME_SECONDS + 1)],
)
def test_seal_refuses_impossible_windows(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey, expires: datetime
) -> None:
    with pytest.raises(EnvelopeConfigurationError) as info:
        seal(p256_key, signer, expires=expires)
    assert info.value.reason == Reason.SEAL_FIELD_INVALID


def test_naive_datetimes_are_a_programming_error(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    naive = datetime(2030, 1, 2, 3, 4, 5)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        seal(p256_key, signer, issued=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        open_(seal(p256_key, signer), p256_key, signer.public_key(), now=naive)


# -- our own configuration ---------------------------------------------------------------------
@pytest.mark.parametrize("skew", [timedelta(seconds=-1), timedelta(hours=2)])
def test_unreasonable_clock_skew_is_a_configuration_error(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey, skew: timedelta
) -> None:
    with pytest.raises(EnvelopeConfigurationError) as info:
        open_(seal(p256_key, signer), p256_key, signer.public_key(), skew=skew)
    assert info.value.reason == Reason.LIMIT_INVALID


@pytest.mark.parametrize("limit", [0, -1, 2**31])
def test_unreasonable_size_limits_are_a_configuration_error(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey, limit: int
) -> None:
    with pytest.raises(EnvelopeConfigurationError) as info:
        open_(seal(p256_key, signer), p256_key, signer.public_key(), limit=limit)
    assert info.value.reason == Reason.LIMIT_INVALID
    with pytest.raises(EnvelopeConfigurationError):
        seal(p256_key, signer, limit=limit)


def test_unsupported_pool_keys_are_refused_on_both_sides(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    p521 = ec.generate_private_key(ec.SECP521R1())
    # A weak key on purpose: it must be refused.
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    for key in (p521, small_rsa):
        with pytest.raises(EnvelopeConfigurationError) as sealing:
            seal(key, signer)
        assert sealing.value.reason == Reason.KEY_UNSUPPORTED
        with pytest.raises(EnvelopeConfigurationError) as opening:
            open_(seal(p256_key, signer), key, signer.public_key())
        assert opening.value.reason == Reason.KEY_UNSUPPORTED


@pytest.mark.parametrize("run_id", ["", "run id", "x" * 129, "-leading", "rün"])
def test_seal_refuses_ids_the_format_cannot_carry(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey, run_id: str
) -> None:
    with pytest.raises(EnvelopeConfigurationError) as info:
        seal(p256_key, signer, run_id=run_id)
    assert info.value.reason == Reason.SEAL_FIELD_INVALID


def test_wrong_argument_types_are_programming_errors(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    public: PoolPublicKey = p256_key.public_key()
    with pytest.raises(TypeError):
        seal_run_state(
            b"x",
            pool_public_key=p256_key,  # type: ignore[arg-type]
            signing_key=signer,
            run_id=RUN,
            pool_id=POOL,
            issued_at=NOW,
            expires_at=NOW + LIFETIME,
        )
    with pytest.raises(TypeError):
        seal_run_state(
            b"x",
            pool_public_key=public,
            signing_key=p256_key,  # type: ignore[arg-type]
            run_id=RUN,
            pool_id=POOL,
            issued_at=NOW,
            expires_at=NOW + LIFETIME,
        )
    with pytest.raises(TypeError):
        open_(seal(p256_key, signer), p256_key, signer)


# -- secrecy ------------------------------------------------------------------------------------
def test_a_canary_plaintext_never_reaches_errors_reprs_or_logs(
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    other_signer: ed25519.Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    canary = b"CANARY-" + os.urandom(8).hex().encode()
    envelope = seal(rsa_key, signer, canary)
    parsed = parse_envelope(envelope)
    ciphertext_hex = bytes(parsed.ciphertext).hex()[:16]
    wrapped_hex = parsed.key_material.hex()[:16]
    public = signer.public_key()
    cache = MemoryReplayCache()
    errors: list[Exception] = []
    attempts: list[tuple[bytes, Any, dict[str, Any]]] = [
        (envelope[:-1], rsa_key, {}),
        (envelope + b"x", rsa_key, {}),
        (envelope, other_rsa_key, {}),
        (envelope, rsa_key, {"pool_id": "01HOTHER"}),
        (envelope, rsa_key, {"now": NOW + timedelta(days=1)}),
        (resign(envelope, other_signer), rsa_key, {}),
        (
            resign(
                envelope[: parsed.header_bytes]
                + bytes([envelope[parsed.header_bytes] ^ 1])
                + envelope[parsed.header_bytes + 1 :],
                signer,
            ),
            rsa_key,
            {},
        ),
        (envelope, rsa_key, {"limit": 100}),
    ]
    for data, key, kwargs in attempts:
        with pytest.raises(EnvelopeError) as info:
            open_(data, key, public, cache=cache, **kwargs)
        errors.append(info.value)
    opened = open_(envelope, rsa_key, public, cache=cache)
    with pytest.raises(EnvelopeError) as replayed:
        open_(envelope, rsa_key, public, cache=cache)
    errors.append(replayed.value)
    assert len({getattr(e, "reason", "") for e in errors}) == len(errors)  # all distinct
    renderings = [repr(opened), str(opened), repr(opened.plaintext), f"{opened.plaintext}"]
    for error in errors:
        assert isinstance(error, EnvelopeError)
        renderings += [str(error), repr(error), error.message, error.hint, error.detail]
        renderings.append(error.one_line())
    renderings += [record.getMessage() for record in caplog.records]
    renderings += [repr(record.__dict__) for record in caplog.records]
    assert any("envelope.refused" in text for text in renderings)
    text = "\n".join(renderings)
    for needle in (canary.decode(), canary.hex(), ciphertext_hex, wrapped_hex):
        assert needle not in text
    assert opened.plaintext.reveal() == canary


def test_the_plaintext_is_wiped_when_the_context_exits(
    p256_key: ec.EllipticCurvePrivateKey, signer: ed25519.Ed25519PrivateKey
) -> None:
    payload = b"wipe me " * 10
    with open_(seal(p256_key, signer, payload), p256_key, signer.public_key()) as opened:
        buffer = opened.plaintext._buf  # the bytearray the Secret owns
        assert bytes(buffer) == payload
    assert bytes(buffer) == bytes(len(payload))
    assert opened.plaintext.wiped
    with pytest.raises(SecretWipedError):
        opened.plaintext.reveal()


def test_data_key_and_plaintext_buffers_are_wiped_when_recording_fails(
    p256_key: ec.EllipticCurvePrivateKey,
    signer: ed25519.Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = b"P" * 48
    wiped: list[bytearray] = []
    real_wipe = secrets_module.wipe_bytearray

    def recording_wipe(buf: bytearray) -> None:
        real_wipe(buf)
        wiped.append(buf)

    monkeypatch.setattr(open_module, "wipe_bytearray", recording_wipe)  # the name open uses
    cache = mock.create_autospec(MemoryReplayCache, instance=True)
    cache.check_and_record.side_effect = EnvelopeError(
        "replayed", reason=Reason.REPLAYED, hint="dispatch anew"
    )
    error = refusal(seal(p256_key, signer, payload), p256_key, signer.public_key(), cache=cache)
    assert error.reason == Reason.REPLAYED
    sizes = sorted(len(buf) for buf in wiped)
    assert sizes == [32, 48]  # the data key and the decrypted plaintext
    assert all(not any(buf) for buf in wiped)
