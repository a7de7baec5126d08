"""The shipped systemd unit agrees with the code: credential names, directories, drain time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hardened_launcher.credential_files import CREDENTIAL_NAMES
from hardened_launcher.durations import parse_duration
from hardened_launcher.settings import DEFAULT_RUN_STOP_GRACE, DEFAULT_SHUTDOWN_GRACE

UNIT_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNIT = UNIT_DIR / "hardened-launcher.service"


def _directives(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        pairs.append((key, value))
    return pairs


def _values(key: str, path: Path = UNIT) -> list[str]:
    return [value for k, value in _directives(path) if k == key]


def test_readiness_is_notify_from_the_main_process() -> None:
    assert _values("Type") == ["notify"]
    assert _values("NotifyAccess") == ["main"]


def test_secrets_come_as_credentials_with_the_names_the_settings_read() -> None:
    loaded = {value.split(":", 1)[0] for value in _values("LoadCredential")}
    assert loaded == set(CREDENTIAL_NAMES.values())
    environment = " ".join(_values("Environment"))
    for variable in CREDENTIAL_NAMES:
        assert variable not in environment


def test_the_only_writable_places_are_state_cache_and_audit() -> None:
    assert _values("ProtectSystem") == ["strict"]
    assert _values("ReadWritePaths") == []
    env = dict(value.split("=", 1) for value in _values("Environment"))
    assert env["HL_STATE_DIR"] == "/var/lib/" + _values("StateDirectory")[0]
    assert env["HL_CACHE_DIR"] == "/var/cache/" + _values("CacheDirectory")[0]
    assert env["HL_AUDIT_DIR"] == "/var/log/" + _values("LogsDirectory")[0]


def test_stop_timeout_outlasts_the_default_drain() -> None:
    (timeout,) = _values("TimeoutStopSec")
    drain = DEFAULT_SHUTDOWN_GRACE + DEFAULT_RUN_STOP_GRACE + timedelta(seconds=30)
    assert parse_duration(timeout.replace("min", "m")) > drain


def test_no_capability_is_kept_without_the_egress_drop_in() -> None:
    assert _values("CapabilityBoundingSet") == [""]
    assert _values("AmbientCapabilities") == [""]
    assert _values("NoNewPrivileges") == ["yes"]
    egress = UNIT_DIR / "hardened-launcher-egress.conf"
    assert _values("CapabilityBoundingSet", egress) == ["CAP_NET_ADMIN CAP_NET_RAW"]


def test_configuration_errors_are_not_restarted() -> None:
    (statuses,) = _values("RestartPreventExitStatus")
    assert set(statuses.split()) == {"64", "78"}
