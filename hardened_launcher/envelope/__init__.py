"""Run-state envelopes (gate 4): sealed by the control plane, opened by the launcher.

Both sides import this one package; see ``docs/envelope.md`` for the format and the checks.
"""

from __future__ import annotations

from hardened_launcher.envelope.errors import (
    EnvelopeConfigurationError,
    EnvelopeError,
    Reason,
    ReplayCacheError,
)
from hardened_launcher.envelope.format import (
    DEFAULT_MAX_ENVELOPE_BYTES,
    FORMAT_VERSION,
    MAX_CLOCK_SKEW_SECONDS,
    MAX_ENVELOPE_BYTES_CEILING,
    MAX_ENVELOPE_LIFETIME_SECONDS,
    MAX_POOL_ID_BYTES,
    MAX_RUN_ID_BYTES,
    Algorithm,
    ParsedEnvelope,
    parse_envelope,
)
from hardened_launcher.envelope.keys import PoolPrivateKey, PoolPublicKey, key_id_of
from hardened_launcher.envelope.open import OpenedRunState, open_run_state
from hardened_launcher.envelope.replay import MemoryReplayCache, ReplayCache, SqliteReplayCache
from hardened_launcher.envelope.seal import envelope_overhead_bytes, seal_run_state

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "FORMAT_VERSION",
    "MAX_CLOCK_SKEW_SECONDS",
    "MAX_ENVELOPE_BYTES_CEILING",
    "MAX_ENVELOPE_LIFETIME_SECONDS",
    "MAX_POOL_ID_BYTES",
    "MAX_RUN_ID_BYTES",
    "Algorithm",
    "EnvelopeConfigurationError",
    "EnvelopeError",
    "MemoryReplayCache",
    "OpenedRunState",
    "ParsedEnvelope",
    "PoolPrivateKey",
    "PoolPublicKey",
    "Reason",
    "ReplayCache",
    "ReplayCacheError",
    "SqliteReplayCache",
    "envelope_overhead_bytes",
    "key_id_of",
    "open_run_state",
    "parse_envelope",
    "seal_run_state",
]
