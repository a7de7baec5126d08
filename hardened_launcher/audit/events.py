"""The audit event type and the sink protocol every gate writes to.

An event is a decision: which gate, what outcome, why, for which run, and the non-secret facts
that justify it (digests, fingerprints, counts). Field values are restricted to JSON scalars and
flat lists of them; a :class:`~hardened_launcher.secrets.Secret` is refused at construction, so a
secret cannot be put into an event by accident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from hardened_launcher.secrets import Secret

Scalar = str | int | float | bool | None
FieldValue = Scalar | tuple[Scalar, ...]

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_FIELD_TEXT_CHARS = 4096


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"
    INFO = "info"


def _check_value(name: str, value: object) -> FieldValue:
    if isinstance(value, Secret):
        raise TypeError(f"audit field {name!r} holds a Secret; audit events never carry secrets")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) > MAX_FIELD_TEXT_CHARS:
            raise ValueError(f"audit field {name!r} is longer than {MAX_FIELD_TEXT_CHARS} chars")
        return value
    if isinstance(value, list | tuple):
        items: list[Scalar] = []
        for item in value:
            checked = _check_value(name, item)
            if isinstance(checked, tuple):
                raise TypeError(f"audit field {name!r} nests lists; keep fields flat")
            items.append(checked)
        return tuple(items)
    raise TypeError(f"audit field {name!r} has unsupported type {type(value).__name__}")


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """One decision. ``type`` is a stable dotted name such as ``binary.verified``."""

    type: str
    outcome: Outcome
    gate: str | None = None
    run_id: str | None = None
    reason: str | None = None
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if not _EVENT_TYPE.match(self.type):
            raise ValueError(f"audit event type {self.type!r} is not a dotted lower-case name")
        for name in ("gate", "run_id", "reason"):
            _check_value(name, getattr(self, name))
        checked: dict[str, FieldValue] = {}
        for key, value in self.fields.items():
            if not _FIELD_NAME.match(key):
                raise ValueError(f"audit field name {key!r} is not lower_snake_case")
            checked[key] = _check_value(key, value)
        object.__setattr__(self, "fields", MappingProxyType(checked))
        if self.time.tzinfo is None:
            raise ValueError("audit event time must be timezone-aware")

    def to_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "time": self.time.astimezone(UTC).isoformat(timespec="microseconds"),
            "type": self.type,
            "outcome": self.outcome.value,
        }
        if self.gate is not None:
            out["gate"] = self.gate
        if self.run_id is not None:
            out["run_id"] = self.run_id
        if self.reason is not None:
            out["reason"] = self.reason
        if self.fields:
            out["fields"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in self.fields.items()
            }
        return out


class AuditSink(Protocol):
    """Where gates record decisions. ``record`` returns only once the event is durable."""

    def record(self, event: AuditEvent) -> None: ...
