"""Control-plane side: seal run state to a pool's public key and sign the result.

A fresh random AES-256 data key and a fresh random 96-bit nonce are drawn for every envelope.
The data key reaches the pool either wrapped with RSA-OAEP-SHA256 (RSA pool keys) or derived
through ECDH with an ephemeral key on the pool key's curve and HKDF-SHA256 (EC pool keys). The
header is the AES-GCM associated data; the Ed25519 signature covers header and ciphertext.
"""

from __future__ import annotations

import math
import os
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardened_launcher.envelope.errors import EnvelopeConfigurationError, Reason
from hardened_launcher.envelope.format import (
    DATA_KEY_BYTES,
    DEFAULT_MAX_ENVELOPE_BYTES,
    MAX_ENVELOPE_LIFETIME_SECONDS,
    MAX_POOL_ID_BYTES,
    MAX_RUN_ID_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    check_identifier,
    check_max_envelope_bytes,
    encode_header,
    envelope_size_bytes,
)
from hardened_launcher.envelope.keys import (
    PoolPublicKey,
    algorithm_for,
    hkdf_info,
    key_id_of,
    key_material_bytes,
)
from hardened_launcher.secrets import wipe_bytearray

RSA_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def unix_seconds(moment: datetime, *, what: str) -> int:
    """Whole Unix seconds of an aware datetime (fractions are truncated toward the past)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return math.floor(moment.timestamp())


def envelope_overhead_bytes(*, pool_public_key: PoolPublicKey, run_id: str, pool_id: str) -> int:
    """Bytes an envelope adds to its plaintext for this key and these ids.

    ``max_envelope_bytes - envelope_overhead_bytes(...)`` is the largest plaintext that fits.
    """
    algorithm_for(pool_public_key)
    run_raw = check_identifier(run_id, what="run id", max_bytes=MAX_RUN_ID_BYTES)
    pool_raw = check_identifier(pool_id, what="pool id", max_bytes=MAX_POOL_ID_BYTES)
    return envelope_size_bytes(
        run_id_bytes=len(run_raw),
        pool_id_bytes=len(pool_raw),
        key_material_bytes=key_material_bytes(pool_public_key),
        plaintext_bytes=0,
    )


def seal_run_state(
    plaintext: bytes | bytearray,
    *,
    pool_public_key: PoolPublicKey,
    signing_key: Ed25519PrivateKey,
    run_id: str,
    pool_id: str,
    issued_at: datetime,
    expires_at: datetime,
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
) -> bytes:
    """Encrypt ``plaintext`` to the pool key, sign it, and return the envelope bytes.

    Raises :class:`~hardened_launcher.envelope.errors.EnvelopeConfigurationError` when the key is
    unsupported, an id or the validity window cannot be sealed, or the envelope would exceed
    ``max_envelope_bytes`` (checked before any cryptography).
    """
    check_max_envelope_bytes(max_envelope_bytes)
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise TypeError("signing_key must be an Ed25519PrivateKey")
    if not isinstance(pool_public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise TypeError("pool_public_key must be the pool's RSA or EC public key")
    if not isinstance(plaintext, bytes | bytearray):
        raise TypeError("plaintext must be bytes or bytearray")
    algorithm = algorithm_for(pool_public_key)
    issued_s = unix_seconds(issued_at, what="issued_at")
    expires_s = unix_seconds(expires_at, what="expires_at")
    if expires_s <= issued_s:
        raise EnvelopeConfigurationError(
            "the run state cannot be sealed: expires_at is not after issued_at",
            reason=Reason.SEAL_FIELD_INVALID,
            hint="give the envelope a validity window of at least one second",
        )
    if expires_s - issued_s > MAX_ENVELOPE_LIFETIME_SECONDS:
        raise EnvelopeConfigurationError(
            "the run state cannot be sealed: the validity window is longer than "
            f"{MAX_ENVELOPE_LIFETIME_SECONDS} seconds",
            reason=Reason.SEAL_FIELD_INVALID,
            hint="seal run state shortly before dispatch with a short expiry",
        )
    size = envelope_overhead_bytes(
        pool_public_key=pool_public_key, run_id=run_id, pool_id=pool_id
    ) + len(plaintext)
    if size > max_envelope_bytes:
        raise EnvelopeConfigurationError(
            f"the run state is too large to seal: the envelope would be {size} bytes, "
            f"the limit is {max_envelope_bytes}",
            reason=Reason.SEAL_TOO_LARGE,
            hint="reduce the run state (fewer or smaller secrets and files) or raise the limit "
            "on both sides",
        )

    key_id = key_id_of(pool_public_key)
    data_key = bytearray(DATA_KEY_BYTES)
    try:
        if isinstance(pool_public_key, rsa.RSAPublicKey):
            # RSA encrypt only takes immutable bytes: this one copy cannot be wiped.
            fresh = os.urandom(DATA_KEY_BYTES)
            key_material = pool_public_key.encrypt(fresh, RSA_OAEP)
            data_key[:] = fresh
            del fresh
        else:
            ephemeral = ec.generate_private_key(pool_public_key.curve)
            key_material = ephemeral.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            shared = ephemeral.exchange(ec.ECDH(), pool_public_key)
            HKDF(
                algorithm=hashes.SHA256(),
                length=DATA_KEY_BYTES,
                salt=None,
                info=hkdf_info(algorithm=algorithm, key_id=key_id, ephemeral_point=key_material),
            ).derive_into(shared, data_key)
            del shared, ephemeral
        nonce = os.urandom(NONCE_BYTES)
        header = encode_header(
            algorithm=algorithm,
            key_id=key_id,
            run_id=run_id,
            pool_id=pool_id,
            issued_at_seconds=issued_s,
            expires_at_seconds=expires_s,
            key_material=key_material,
            nonce=nonce,
            ciphertext_bytes=len(plaintext) + TAG_BYTES,
        )
        envelope = bytearray(header)
        envelope += AESGCM(data_key).encrypt(nonce, plaintext, header)
    finally:
        wipe_bytearray(data_key)
    envelope += signing_key.sign(envelope)
    return bytes(envelope)
