"""Launcher side: open a run-state envelope, check by check, cheapest and safest first.

Order (``docs/envelope.md`` explains each step):

1. size limit, before any parsing or cryptography;
2. strict parse (magic, version, algorithm, lengths, no trailing bytes);
3. key id equals our pool key's, and the algorithm fits our key;
4. pool id equals ours;
5. validity window against ``now`` with ``clock_skew``;
6. Ed25519 signature over header and ciphertext;
7. replay cache lookup;
8. key unwrap (RSA-OAEP) or agreement (ECDH-ES + HKDF), then AES-GCM decryption;
9. record the run id in the replay cache (atomic); only then is the plaintext handed out.

No private-key operation happens on bytes that the control plane did not sign, so a tampered
envelope can never turn our key into a decryption oracle.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hardened_launcher.audit.events import AuditSink, FieldValue
from hardened_launcher.audit.gates import record_pass, record_refusal
from hardened_launcher.envelope.errors import EnvelopeConfigurationError, EnvelopeError, Reason
from hardened_launcher.envelope.format import (
    DATA_KEY_BYTES,
    KEY_ID_BYTES,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_ENVELOPE_LIFETIME_SECONDS,
    Algorithm,
    ParsedEnvelope,
    check_max_envelope_bytes,
    parse_envelope,
)
from hardened_launcher.envelope.keys import (
    PoolPrivateKey,
    algorithm_for,
    hkdf_info,
    key_id_of,
    key_material_bytes,
)
from hardened_launcher.envelope.replay import ReplayCache
from hardened_launcher.envelope.seal import RSA_OAEP, unix_seconds
from hardened_launcher.errors import LauncherError
from hardened_launcher.secrets import Secret, wipe_bytearray

_log = logging.getLogger(__name__)

_TIME_HINT = (
    "check the launcher's clock (NTP); if it is right, ask the control plane to dispatch the run "
    "again"
)


@dataclass(frozen=True, kw_only=True, eq=False)
class OpenedRunState:
    """Proof that an envelope passed every check, holding its plaintext in memory.

    ``plaintext`` owns the only long-lived copy; use ``with opened: ...`` (or
    ``opened.plaintext.wipe()``) so it is zeroed when the run state has been handed over.
    """

    run_id: str
    pool_id: str
    issued_at: datetime
    expires_at: datetime
    algorithm: Algorithm
    key_id: bytes
    envelope_sha256: bytes
    plaintext: Secret

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_BYTES or len(self.envelope_sha256) != 32:
            raise ValueError("key_id and envelope_sha256 must be 32-byte digests")
        if not isinstance(self.plaintext, Secret):
            raise TypeError("plaintext must be a Secret")

    def audit_fields(self) -> dict[str, str]:
        """Non-secret facts for the audit log (digests as lowercase hex)."""
        return {
            "run_id": self.run_id,
            "pool_id": self.pool_id,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "algorithm": self.algorithm.name,
            "key_id": self.key_id.hex(),
            "envelope_sha256": self.envelope_sha256.hex(),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.plaintext.wipe()


GATE = "envelope"


def open_run_state(
    envelope: bytes,
    *,
    pool_private_key: PoolPrivateKey,
    signer_public_key: Ed25519PublicKey,
    expected_pool_id: str,
    replay_cache: ReplayCache,
    now: datetime,
    clock_skew: timedelta,
    max_envelope_bytes: int,
    audit: AuditSink | None = None,
    run_id: str | None = None,
) -> OpenedRunState:
    """Check and decrypt ``envelope``; return the proof with the plaintext, or raise.

    The decision is recorded to ``audit`` when one is given: ``envelope.opened`` with
    :meth:`OpenedRunState.audit_fields`, or ``envelope.rejected`` with the reason, the size and
    (below the size limit) the SHA-256 of the refused bytes. A refused envelope's own run id is
    not recorded (it was never authenticated); ``run_id``, the run the caller's signed ticket
    names, is.

    Raises :class:`~hardened_launcher.envelope.errors.EnvelopeError` for a refused envelope,
    :class:`~hardened_launcher.envelope.errors.ReplayCacheError` when the replay cache cannot be
    used (the envelope is then not opened), and
    :class:`~hardened_launcher.envelope.errors.EnvelopeConfigurationError` for our own key or
    limits being unusable.
    """
    try:
        opened = _open(
            envelope,
            pool_private_key=pool_private_key,
            signer_public_key=signer_public_key,
            expected_pool_id=expected_pool_id,
            replay_cache=replay_cache,
            now=now,
            clock_skew=clock_skew,
            max_envelope_bytes=max_envelope_bytes,
        )
    except LauncherError as exc:
        _log.info("envelope.refused", extra={"reason": exc.reason})
        fields: dict[str, FieldValue] = {"envelope_bytes": len(envelope)}
        if len(envelope) <= max_envelope_bytes:
            fields["envelope_sha256"] = hashlib.sha256(envelope).hexdigest()
        record_refusal(
            audit,
            gate=GATE,
            event_type="envelope.rejected",
            error=exc,
            fields=fields,
            run_id=run_id,
        )
        raise
    record_pass(
        audit,
        gate=GATE,
        event_type="envelope.opened",
        run_id=opened.run_id,
        fields=opened.audit_fields(),
    )
    _log.info(
        "envelope.opened",
        extra={
            "run_id": opened.run_id,
            "pool_id": opened.pool_id,
            "key_id": opened.key_id.hex(),
            "envelope_sha256": opened.envelope_sha256.hex(),
        },
    )
    return opened


def _open(
    envelope: bytes,
    *,
    pool_private_key: PoolPrivateKey,
    signer_public_key: Ed25519PublicKey,
    expected_pool_id: str,
    replay_cache: ReplayCache,
    now: datetime,
    clock_skew: timedelta,
    max_envelope_bytes: int,
) -> OpenedRunState:
    # 1. Size: nothing else has looked at the envelope, our keys or the cache yet.
    check_max_envelope_bytes(max_envelope_bytes)
    if len(envelope) > max_envelope_bytes:
        raise EnvelopeError(
            f"the envelope is {len(envelope)} bytes, over the limit of {max_envelope_bytes}",
            reason=Reason.TOO_LARGE,
            hint="reduce the run state on the control plane or raise max_envelope_bytes",
        )
    # An immutable copy: a caller's buffer must not change between the checks and decryption.
    data = envelope if type(envelope) is bytes else bytes(envelope)
    now_s = unix_seconds(now, what="now")
    skew_s = _check_skew(clock_skew)
    if not isinstance(signer_public_key, Ed25519PublicKey):
        raise TypeError("signer_public_key must be an Ed25519PublicKey")

    # 2. Strict parse: structure only, nothing authenticated yet.
    parsed = parse_envelope(data)

    # 3. Is it for our key at all?
    our_algorithm = algorithm_for(pool_private_key)
    our_key_id = key_id_of(pool_private_key.public_key())
    if parsed.key_id != our_key_id:
        raise EnvelopeError(
            "the envelope was sealed for another pool key "
            f"(key id {parsed.key_id.hex()[:16]}…, ours is {our_key_id.hex()[:16]}…)",
            reason=Reason.WRONG_KEY,
            hint="the pool key may have been reset or rotated: check that this launcher has the "
            "current SPACELIFT_POOL_PRIVATE_KEY and that the control plane knows its certificate",
        )
    if parsed.algorithm is not our_algorithm:
        raise EnvelopeError(
            f"the envelope uses {parsed.algorithm.name}, which does not fit this pool key",
            reason=Reason.ALGORITHM_MISMATCH,
            hint="the control plane sealed with the wrong algorithm; report it",
        )
    if len(parsed.key_material) != key_material_bytes(pool_private_key):
        raise EnvelopeError(
            f"the envelope's key material is {len(parsed.key_material)} bytes, "
            f"{key_material_bytes(pool_private_key)} expected for this pool key",
            reason=Reason.KEY_MATERIAL_INVALID,
            hint="the envelope is damaged or was not produced by a compatible control plane",
        )

    # 4. Is it for our pool?
    if parsed.pool_id != expected_pool_id:
        raise EnvelopeError(
            f"the envelope is for pool {parsed.pool_id}, this launcher serves {expected_pool_id}",
            reason=Reason.POOL_MISMATCH,
            hint="check SPACELIFT_TOKEN: the launcher and its pool key must belong to one pool",
        )

    # 5. Is it valid now? (Claims are still unauthenticated; a refusal here only saves work.)
    _check_window(parsed, now_s=now_s, skew_s=skew_s)

    # 6. Did the control plane seal it?
    try:
        signer_public_key.verify(parsed.signature, parsed.signed)
    except InvalidSignature:
        raise EnvelopeError(
            "the envelope's signature does not verify with the control plane's key",
            reason=Reason.SIGNATURE_INVALID,
            hint="the envelope was modified in transit or signed by another key; check that the "
            "token's control-plane key is current",
        ) from None

    # 7. Was it opened before? (Authenticated now, so the run id is the control plane's.)
    replay_cache.check_not_recorded(parsed.run_id, now=now)

    # 8. Decrypt.
    plaintext = bytearray(parsed.plaintext_bytes)
    data_key = bytearray(DATA_KEY_BYTES)
    try:
        _recover_data_key(parsed, pool_private_key, our_key_id, data_key)
        try:
            AESGCM(data_key).decrypt_into(parsed.nonce, parsed.ciphertext, parsed.header, plaintext)
        except InvalidTag:
            raise _decrypt_failed() from None
        # 9. Record, atomically; a concurrent opener of the same run id loses here.
        keep_until = datetime.fromtimestamp(parsed.expires_at_seconds, UTC) + clock_skew
        replay_cache.check_and_record(parsed.run_id, keep_until, now=now)
    except BaseException:
        wipe_bytearray(plaintext)
        raise
    finally:
        wipe_bytearray(data_key)

    return OpenedRunState(
        run_id=parsed.run_id,
        pool_id=parsed.pool_id,
        issued_at=datetime.fromtimestamp(parsed.issued_at_seconds, UTC),
        expires_at=datetime.fromtimestamp(parsed.expires_at_seconds, UTC),
        algorithm=parsed.algorithm,
        key_id=our_key_id,
        envelope_sha256=hashlib.sha256(data).digest(),
        plaintext=Secret.from_bytearray(plaintext),
    )


def _check_skew(clock_skew: timedelta) -> int:
    if not isinstance(clock_skew, timedelta) or not (
        timedelta(0) <= clock_skew <= timedelta(seconds=MAX_CLOCK_SKEW_SECONDS)
    ):
        raise EnvelopeConfigurationError(
            f"clock_skew must be between 0 and {MAX_CLOCK_SKEW_SECONDS} seconds",
            reason=Reason.LIMIT_INVALID,
            hint="a skew of a few minutes is enough with NTP",
        )
    return int(clock_skew.total_seconds())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _check_window(parsed: ParsedEnvelope, *, now_s: int, skew_s: int) -> None:
    issued, expires = parsed.issued_at_seconds, parsed.expires_at_seconds
    if expires <= issued:
        raise EnvelopeError(
            f"the envelope expires ({_iso(expires)}) no later than it was issued ({_iso(issued)})",
            reason=Reason.VALIDITY_INVALID,
            hint="the control plane produced an impossible validity window; report it",
        )
    if expires - issued > MAX_ENVELOPE_LIFETIME_SECONDS:
        raise EnvelopeError(
            f"the envelope claims a validity of {expires - issued} seconds, more than the "
            f"{MAX_ENVELOPE_LIFETIME_SECONDS} allowed",
            reason=Reason.LIFETIME_TOO_LONG,
            hint="run state must be sealed shortly before dispatch with a short expiry",
        )
    if issued > now_s + skew_s:
        raise EnvelopeError(
            f"the envelope is not valid yet: issued at {_iso(issued)}, "
            f"now is {_iso(now_s)} (skew {skew_s} s)",
            reason=Reason.NOT_YET_VALID,
            hint=_TIME_HINT,
        )
    if expires + skew_s <= now_s:
        raise EnvelopeError(
            f"the envelope expired at {_iso(expires)}; now is {_iso(now_s)} (skew {skew_s} s)",
            reason=Reason.EXPIRED,
            hint=_TIME_HINT,
        )


def _decrypt_failed() -> EnvelopeError:
    # One message for every decryption failure: no detail about which step failed.
    return EnvelopeError(
        "the envelope could not be decrypted with this pool key",
        reason=Reason.DECRYPT_FAILED,
        hint="the control plane signed an envelope it did not seal correctly; report it",
    )


def _recover_data_key(
    parsed: ParsedEnvelope, key: PoolPrivateKey, key_id: bytes, out: bytearray
) -> None:
    """Write the 32-byte data key into ``out`` or raise ``envelope_decrypt_failed``."""
    try:
        if isinstance(key, rsa.RSAPrivateKey):
            unwrapped = key.decrypt(parsed.key_material, RSA_OAEP)
            ok = len(unwrapped) == DATA_KEY_BYTES
            if ok:
                out[:] = unwrapped
            del unwrapped
            if not ok:
                raise _decrypt_failed()
            return
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ephemeral = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, parsed.key_material)
            shared = key.exchange(ec.ECDH(), ephemeral)
            HKDF(
                algorithm=hashes.SHA256(),
                length=DATA_KEY_BYTES,
                salt=None,
                info=hkdf_info(
                    algorithm=parsed.algorithm, key_id=key_id, ephemeral_point=parsed.key_material
                ),
            ).derive_into(shared, out)
            del shared
            return
    except (ValueError, UnsupportedAlgorithm):
        raise _decrypt_failed() from None
    raise AssertionError("unreachable: the key type was checked before")  # pragma: no cover
