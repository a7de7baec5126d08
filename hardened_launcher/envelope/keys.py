"""Pool key types, their key id, and the checks that a key is one the envelope supports.

Both sides use these: the control plane seals to a pool *public* key, the launcher opens with the
pool *private* key. The key id is SHA-256 of the public key's DER SubjectPublicKeyInfo, the same
value the identity module computes for a pool certificate's key.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hardened_launcher.envelope.errors import EnvelopeConfigurationError, Reason
from hardened_launcher.envelope.format import MAX_RSA_KEY_BITS, MIN_RSA_KEY_BITS, Algorithm
from hardened_launcher.identity.keys import public_key_id

PoolPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PoolPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Curves accepted for ECDH-ES, by name, with the size of their uncompressed point.
SUPPORTED_CURVES: dict[str, int] = {
    ec.SECP256R1.name: 65,
    ec.SECP384R1.name: 97,
}

_KEY_HINT = (
    "use an RSA key of 2048 to 16384 bits (4096 recommended) or an EC key on P-256 or P-384 "
    "as the pool key"
)


def key_id_of(public_key: PoolPublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo of ``public_key`` (32 bytes).

    The same value as the identity module's key id, by construction: it is the same function.
    """
    return public_key_id(public_key)


def algorithm_for(key: PoolPublicKey | PoolPrivateKey) -> Algorithm:
    """The envelope algorithm for a pool key, or :class:`EnvelopeConfigurationError`."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if not MIN_RSA_KEY_BITS <= key.key_size <= MAX_RSA_KEY_BITS:
            raise EnvelopeConfigurationError(
                f"the pool RSA key has {key.key_size} bits; "
                f"{MIN_RSA_KEY_BITS} to {MAX_RSA_KEY_BITS} are supported",
                reason=Reason.KEY_UNSUPPORTED,
                hint=_KEY_HINT,
            )
        return Algorithm.RSA_OAEP_SHA256_AES256GCM
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name not in SUPPORTED_CURVES:
            raise EnvelopeConfigurationError(
                f"the pool EC key is on curve {key.curve.name}; only P-256 and P-384 are supported",
                reason=Reason.KEY_UNSUPPORTED,
                hint=_KEY_HINT,
            )
        return Algorithm.ECDH_ES_HKDF_SHA256_AES256GCM
    raise EnvelopeConfigurationError(
        f"the pool key is a {type(key).__name__}, which cannot receive run state",
        reason=Reason.KEY_UNSUPPORTED,
        hint=_KEY_HINT,
    )


def key_material_bytes(key: PoolPublicKey | PoolPrivateKey) -> int:
    """Size of the wrapped key (RSA) or ephemeral point (EC) in an envelope for ``key``."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return (key.key_size + 7) // 8
    return SUPPORTED_CURVES[key.curve.name]


def hkdf_info(*, algorithm: Algorithm, key_id: bytes, ephemeral_point: bytes) -> bytes:
    """HKDF ``info`` for ECDH-ES: binds the purpose, algorithm, pool key and ephemeral key."""
    return b"".join(
        (
            b"hardened-launcher run-state envelope v1",
            bytes((int(algorithm),)),
            key_id,
            ephemeral_point,
        )
    )
