"""Redaction of structured channels: policy ``sample`` records and audit events.

Both are JSON-shaped; every string inside (keys included) is passed through
:meth:`Redactor.redact_text`. Numbers, booleans and ``None`` are left alone.
"""

from __future__ import annotations

import dataclasses

from hardened_launcher.audit.events import AuditEvent, AuditSink, FieldValue
from hardened_launcher.redaction.redactor import Redactor


def redact_json(redactor: Redactor, value: object) -> object:
    """A copy of a JSON-like value (dict/list/tuple/str/scalars) with every string redacted."""
    if isinstance(value, str):
        return redactor.redact_text(value)
    if isinstance(value, dict):
        return {redact_json(redactor, k): redact_json(redactor, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [redact_json(redactor, v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value


def _field(redactor: Redactor, value: FieldValue) -> FieldValue:
    if isinstance(value, str):
        return redactor.redact_text(value)
    if isinstance(value, tuple):
        return tuple(redactor.redact_text(v) if isinstance(v, str) else v for v in value)
    return value


def redact_audit_event(redactor: Redactor, event: AuditEvent) -> AuditEvent:
    """The same event with ``reason`` and every string field redacted."""
    return dataclasses.replace(
        event,
        reason=None if event.reason is None else redactor.redact_text(event.reason),
        fields={k: _field(redactor, v) for k, v in event.fields.items()},
    )


class RedactingAuditSink:
    """An :class:`AuditSink` that redacts each event before passing it to ``inner``."""

    def __init__(self, inner: AuditSink, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor

    def record(self, event: AuditEvent) -> None:
        self.inner.record(redact_audit_event(self.redactor, event))
