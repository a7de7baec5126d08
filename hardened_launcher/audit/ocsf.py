"""OCSF rendering of audit records: class 6003 API Activity (category 6, Application Activity).

Why this class: every record is a decision the launcher's own API took on a request (admit a
run, accept a binary, open an envelope, allow a connection), made by an application rather than
by a user session or an OS process. The ``security_control`` profile carries the allow/deny.

Mapping (OCSF 1.3.0; the tests validate every event against :func:`validate_ocsf_event`):

=================  ==============================================================================
attribute          value
=================  ==============================================================================
category_uid       6 (``category_name`` "Application Activity")
class_uid          6003 (``class_name`` "API Activity")
activity_id        99 (``activity_name`` "Other"); the record's ``type`` is ``api.operation``
type_uid           class_uid * 100 + activity_id = 600399 (``type_name`` "API Activity: Other")
severity_id        allow / info → 1 Informational; deny → 3 Medium; error → 4 High
status_id          allow / info → 1 Success; deny / error → 2 Failure (``status_code`` = reason)
action_id          allow → 1 Allowed; deny / error → 2 Denied; info → omitted
disposition_id     allow → 1 Allowed; deny / error → 2 Blocked; info → omitted
time               the record's time in milliseconds since the epoch (integer)
metadata           version "1.3.0"; product {name, vendor_name "hardened-launcher", version};
                   uid = record hash; sequence = seq; correlation_uid = run id;
                   event_code = type; original_time = the record's time text;
                   profiles ["security_control"]
actor / api        actor.app_name "hardened-launcher"; api.operation = type;
                   api.service.name = gate ("launcher" if none)
src_endpoint       {"name": "hardened-launcher"} (the launcher host is the source)
message            "<type> <outcome>" and ": <reason>" when there is one
unmapped           {"fields": the record's fields, "prev": chain hash} (never a secret)
=================  ==============================================================================

Checkpoint records are not exported as OCSF events (they are evidence for ``audit verify``,
exported alongside by the S3 export).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from hardened_launcher import __version__
from hardened_launcher.audit.reader import AuditRecord

OCSF_VERSION: Final = "1.3.0"
CATEGORY_UID: Final = 6
CLASS_UID: Final = 6003
ACTIVITY_OTHER: Final = 99
PRODUCT: Final = "hardened-launcher"

SEVERITY: Final = {"allow": 1, "info": 1, "deny": 3, "error": 4}
SEVERITY_NAMES: Final = {1: "Informational", 3: "Medium", 4: "High"}
STATUS: Final = {"allow": 1, "info": 1, "deny": 2, "error": 2}
STATUS_NAMES: Final = {1: "Success", 2: "Failure"}
ACTION: Final = {"allow": 1, "deny": 2, "error": 2}
ACTION_NAMES: Final = {1: "Allowed", 2: "Denied"}
DISPOSITION: Final = {"allow": 1, "deny": 2, "error": 2}
DISPOSITION_NAMES: Final = {1: "Allowed", 2: "Blocked"}


def to_ocsf(record: AuditRecord) -> dict[str, object]:
    """One OCSF API Activity event for ``record``."""
    outcome = record.outcome
    severity = SEVERITY.get(outcome, 1)
    status = STATUS.get(outcome, 1)
    metadata: dict[str, object] = {
        "version": OCSF_VERSION,
        "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": __version__},
        "uid": record.hash,
        "sequence": record.seq,
        "event_code": record.type,
        "original_time": str(record.data["time"]),
        "profiles": ["security_control"],
    }
    if record.run_id is not None:
        metadata["correlation_uid"] = record.run_id
    message = f"{record.type} {outcome}" + (f": {record.reason}" if record.reason else "")
    event: dict[str, object] = {
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "activity_id": ACTIVITY_OTHER,
        "activity_name": "Other",
        "type_uid": CLASS_UID * 100 + ACTIVITY_OTHER,
        "type_name": "API Activity: Other",
        "severity_id": severity,
        "severity": SEVERITY_NAMES[severity],
        "status_id": status,
        "status": STATUS_NAMES[status],
        "time": int(record.time.timestamp() * 1000),
        "metadata": metadata,
        "actor": {"app_name": PRODUCT},
        "api": {"operation": record.type, "service": {"name": record.gate or "launcher"}},
        "src_endpoint": {"name": PRODUCT},
        "message": message,
        "unmapped": {"fields": dict(record.fields), "prev": record.prev},
    }
    if record.reason is not None:
        event["status_code"] = record.reason
        event["status_detail"] = record.reason
    if outcome in ACTION:
        event["action_id"] = ACTION[outcome]
        event["action"] = ACTION_NAMES[ACTION[outcome]]
        event["disposition_id"] = DISPOSITION[outcome]
        event["disposition"] = DISPOSITION_NAMES[DISPOSITION[outcome]]
    return event


_REQUIRED_INT: Final = (
    "category_uid", "class_uid", "activity_id", "type_uid", "severity_id", "status_id", "time",
)  # fmt: skip
_ENUM_IDS: Final = {
    "severity_id": {0, 1, 2, 3, 4, 5, 6, 99},
    "status_id": {0, 1, 2, 99},
    "activity_id": {0, 1, 2, 3, 4, 99},
    "action_id": {0, 1, 2, 3, 4, 99},
    "disposition_id": set(range(28)) | {99},
}


def validate_ocsf_event(event: Mapping[str, object]) -> list[str]:
    """The documented field rules; returns the list of violations (empty when valid)."""
    problems: list[str] = []
    for name in _REQUIRED_INT:
        value = event.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{name} must be an integer")
    if problems:
        return problems
    if event["class_uid"] != CLASS_UID or event["category_uid"] != CATEGORY_UID:
        problems.append("class_uid must be 6003 in category_uid 6")
    class_uid, activity_id = event["class_uid"], event["activity_id"]
    assert isinstance(class_uid, int)  # noqa: S101 - checked above
    assert isinstance(activity_id, int)  # noqa: S101 - checked above
    if event["type_uid"] != class_uid * 100 + activity_id:
        problems.append("type_uid must be class_uid * 100 + activity_id")
    for name, allowed in _ENUM_IDS.items():
        if name in event and event[name] not in allowed:
            problems.append(f"{name} {event[name]!r} is not in the OCSF enum")
    if ("action_id" in event) != ("disposition_id" in event):
        problems.append("action_id and disposition_id come together (security_control)")
    metadata = event.get("metadata")
    if not isinstance(metadata, Mapping):
        problems.append("metadata is required")
    else:
        if metadata.get("version") != OCSF_VERSION:
            problems.append(f"metadata.version must be {OCSF_VERSION}")
        product = metadata.get("product")
        if (
            not isinstance(product, Mapping)
            or not product.get("name")
            or not product.get("vendor_name")
        ):
            problems.append("metadata.product needs name and vendor_name")
        if not isinstance(metadata.get("uid"), str):
            problems.append("metadata.uid must be a string")
    api = event.get("api")
    if not isinstance(api, Mapping) or not isinstance(api.get("operation"), str):
        problems.append("api.operation is required (API Activity)")
    for name in ("actor", "src_endpoint"):
        if not isinstance(event.get(name), Mapping) or not event[name]:
            problems.append(f"{name} is required (API Activity)")
    time_ms = event["time"]
    assert isinstance(time_ms, int)  # noqa: S101 - checked above
    if time_ms < 0:
        problems.append("time must be milliseconds since the epoch")
    for caption, enum in (("severity", "severity_id"), ("status", "status_id")):
        if caption not in event:
            problems.append(f"{caption} (the caption of {enum}) is required")
    return problems
