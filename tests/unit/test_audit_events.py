from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hardened_launcher.audit import AuditEvent, JsonLinesAuditLog, MemoryAuditLog, Outcome
from hardened_launcher.errors import InfrastructureError
from hardened_launcher.secrets import Secret


def _event(**kw: object) -> AuditEvent:
    base: dict[str, object] = {
        "type": "binary.verified",
        "outcome": Outcome.ALLOW,
        "gate": "binaries",
    }
    base.update(kw)
    return AuditEvent(**base)  # type: ignore[arg-type]


def test_secret_is_refused_in_fields() -> None:
    with pytest.raises(TypeError, match="never carry secrets"):
        _event(fields={"token": Secret("CANARY-audit")})
    with pytest.raises(TypeError, match="never carry secrets"):
        _event(fields={"names": [Secret("CANARY-audit")]})
    with pytest.raises(TypeError, match="never carry secrets"):
        _event(reason=Secret("CANARY-audit"))


@pytest.mark.parametrize("bad_type", ["Binary", "binary", "binary..x", "binary.X", ""])
def test_event_type_must_be_dotted_lower_case(bad_type: str) -> None:
    with pytest.raises(ValueError, match="dotted"):
        _event(type=bad_type)


def test_field_rules() -> None:
    with pytest.raises(ValueError, match="lower_snake_case"):
        _event(fields={"Bad-Name": 1})
    with pytest.raises(TypeError, match="nests"):
        _event(fields={"x": [[1]]})
    with pytest.raises(TypeError, match="unsupported"):
        _event(fields={"x": object()})
    with pytest.raises(ValueError, match="longer"):
        _event(fields={"x": "a" * 5000})
    with pytest.raises(ValueError, match="timezone"):
        _event(time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_fields_are_frozen() -> None:
    e = _event(fields={"sha256": "ab"})
    with pytest.raises(TypeError):
        e.fields["sha256"] = "cd"  # type: ignore[index]


def test_jsonl_appends_one_line_per_event_with_private_permissions(tmp_path: Path) -> None:
    d = tmp_path / "audit"
    log = JsonLinesAuditLog(d)
    log.record(_event(run_id="run-1", fields={"sha256": "ab", "names": ["a", "b"]}))
    log.record(_event(type="policy.evaluated", outcome=Outcome.DENY, reason="policy_denied"))
    log.close()
    lines = (d / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["type"] == "binary.verified"
    assert first["run_id"] == "run-1"
    assert first["fields"] == {"names": ["a", "b"], "sha256": "ab"}
    assert json.loads(lines[1])["outcome"] == "deny"
    assert stat.S_IMODE((d / "audit.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_unwritable_directory_is_an_infrastructure_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InfrastructureError) as info:
        JsonLinesAuditLog(blocker / "audit")
    assert info.value.reason == "audit_unavailable"


def test_write_failure_is_reported_not_swallowed(tmp_path: Path) -> None:
    log = JsonLinesAuditLog(tmp_path)
    log.close()  # closed descriptor: the next write fails
    with pytest.raises(InfrastructureError) as info:
        log.record(_event())
    assert info.value.reason == "audit_unavailable"


def test_memory_log_keeps_events() -> None:
    mem = MemoryAuditLog()
    mem.record(_event())
    assert [e.type for e in mem.events] == ["binary.verified"]
    assert mem.events[0].time.tzinfo is UTC
