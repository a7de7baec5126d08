"""How a gate records its decision: one allow event for a proof, one refusal event for an error.

Every gate records through these two functions so that the events have one shape: ``gate``,
``type`` (``<gate>.<verb>``), ``outcome`` (``allow``; ``deny`` for untrusted input refused;
``error`` when our side failed), the refusal's stable ``reason``, and non-secret ``fields``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hardened_launcher.audit.events import AuditEvent, AuditSink, FieldValue, Outcome
from hardened_launcher.errors import LauncherError, UntrustedInputError


def record_pass(
    sink: AuditSink | None,
    *,
    gate: str,
    event_type: str,
    fields: Mapping[str, FieldValue],
    run_id: str | None = None,
) -> None:
    if sink is None:
        return
    sink.record(
        AuditEvent(type=event_type, outcome=Outcome.ALLOW, gate=gate, run_id=run_id, fields=fields)
    )


def record_refusal(
    sink: AuditSink | None,
    *,
    gate: str,
    event_type: str,
    error: LauncherError,
    fields: Mapping[str, FieldValue] | None = None,
    run_id: str | None = None,
) -> None:
    if sink is None:
        return
    sink.record(
        AuditEvent(
            type=event_type,
            outcome=Outcome.DENY if isinstance(error, UntrustedInputError) else Outcome.ERROR,
            gate=gate,
            run_id=run_id,
            reason=error.reason,
            fields=dict(fields or {}),
        )
    )
