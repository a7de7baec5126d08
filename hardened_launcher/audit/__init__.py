"""Audit events: one interface that every gate calls for every decision.

:class:`ChainedAuditLog` (``open_audit_log``) is the launcher's tamper-evident log (see
docs/audit.md); :class:`JsonLinesAuditLog` is the earlier plain, unchained log, kept for
compatibility only.
"""

from hardened_launcher.audit.chain import ChainedAuditLog, open_audit_log
from hardened_launcher.audit.events import AuditEvent, AuditSink, Outcome
from hardened_launcher.audit.jsonl import JsonLinesAuditLog, MemoryAuditLog

__all__ = [
    "AuditEvent",
    "AuditSink",
    "ChainedAuditLog",
    "JsonLinesAuditLog",
    "MemoryAuditLog",
    "Outcome",
    "open_audit_log",
]
