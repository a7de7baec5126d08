"""Audit events: one interface that every gate calls for every decision."""

from hardened_launcher.audit.events import AuditEvent, AuditSink, Outcome
from hardened_launcher.audit.jsonl import JsonLinesAuditLog, MemoryAuditLog

__all__ = ["AuditEvent", "AuditSink", "JsonLinesAuditLog", "MemoryAuditLog", "Outcome"]
