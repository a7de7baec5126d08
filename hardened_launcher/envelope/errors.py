"""Errors of the run-state envelope, with one stable reason slug per failure.

Refusals of an envelope received from outside are :class:`EnvelopeError` (untrusted input).
Problems with our own side of the exchange (an unsupported pool key, a limit set to nonsense, a
run id the control plane should never have produced) are configuration errors. A replay cache
that cannot be read or written is an infrastructure error, and the envelope is not opened.

No message, hint or detail ever carries plaintext, key material or ciphertext bytes: they name the
field that is wrong and, at most, lengths, limits, identifiers and times.
"""

from __future__ import annotations

from enum import StrEnum

from hardened_launcher.errors import ConfigurationError, InfrastructureError, UntrustedInputError


class Reason(StrEnum):
    """Stable, machine-readable reason slugs (they go to the control plane and the audit log)."""

    # -- refusals of a received envelope (EnvelopeError) ------------------------------------
    TOO_LARGE = "envelope_too_large"
    BAD_MAGIC = "envelope_bad_magic"
    VERSION_UNSUPPORTED = "envelope_version_unsupported"
    ALGORITHM_UNSUPPORTED = "envelope_algorithm_unsupported"
    TRUNCATED = "envelope_truncated"
    TRAILING_BYTES = "envelope_trailing_bytes"
    FIELD_INVALID = "envelope_field_invalid"
    WRONG_KEY = "envelope_wrong_key"
    ALGORITHM_MISMATCH = "envelope_algorithm_mismatch"
    KEY_MATERIAL_INVALID = "envelope_key_material_invalid"
    POOL_MISMATCH = "envelope_pool_mismatch"
    VALIDITY_INVALID = "envelope_validity_invalid"
    LIFETIME_TOO_LONG = "envelope_lifetime_too_long"
    NOT_YET_VALID = "envelope_not_yet_valid"
    EXPIRED = "envelope_expired"
    SIGNATURE_INVALID = "envelope_signature_invalid"
    REPLAYED = "envelope_replayed"
    DECRYPT_FAILED = "envelope_decrypt_failed"
    # -- our own side (ConfigurationError) ------------------------------------------------------
    KEY_UNSUPPORTED = "envelope_key_unsupported"
    LIMIT_INVALID = "envelope_limit_invalid"
    SEAL_TOO_LARGE = "envelope_seal_too_large"
    SEAL_FIELD_INVALID = "envelope_seal_field_invalid"
    REPLAY_CACHE_INSECURE = "replay_cache_insecure"
    # -- infrastructure (InfrastructureError) ---------------------------------------------------
    REPLAY_CACHE_UNAVAILABLE = "replay_cache_unavailable"


class EnvelopeError(UntrustedInputError):
    """A received run-state envelope was refused; ``reason`` says which check refused it."""

    default_reason = "envelope_rejected"

    def __init__(self, message: str, *, reason: Reason, hint: str = "", detail: str = "") -> None:
        super().__init__(message, hint=hint, reason=reason.value, detail=detail)


class EnvelopeConfigurationError(ConfigurationError):
    """Our side is wrong: unsupported pool key, nonsensical limit, unsealable input."""

    default_reason = "envelope_configuration_invalid"

    def __init__(self, message: str, *, reason: Reason, hint: str = "", detail: str = "") -> None:
        super().__init__(message, hint=hint, reason=reason.value, detail=detail)


class ReplayCacheError(InfrastructureError):
    """The replay cache could not be read or written; the envelope is not opened (fail closed)."""

    default_reason = Reason.REPLAY_CACHE_UNAVAILABLE.value

    def __init__(self, message: str, *, hint: str = "", detail: str = "") -> None:
        super().__init__(
            message, hint=hint, reason=Reason.REPLAY_CACHE_UNAVAILABLE.value, detail=detail
        )
