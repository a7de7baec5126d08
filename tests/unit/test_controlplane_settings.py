"""The control plane's ``HL_CP_*`` variables: one typed model, every problem named, unknown names
refused with a suggestion by every ``controlplane`` command, the docs table generated.

Regenerate docs/controlplane.md's table with::

    .venv/bin/python -m tests.unit.test_controlplane_settings
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hardened_launcher.controlplane.dispatch import DispatchPolicy
from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.settings import (
    CP_VARIABLES,
    load_controlplane_config,
    markdown_table,
)
from hardened_launcher.errors import EXIT_CONFIGURATION

DOC = Path(__file__).resolve().parents[2] / "docs" / "controlplane.md"
START = "<!-- cp-settings-table:start -->"
END = "<!-- cp-settings-table:end -->"
CANARY = "CANARY-cp-secret-5d1e"


def with_table(text: str) -> str:
    start = text.index(START) + len(START)
    return text[:start] + "\n" + markdown_table() + text[text.index(END) :]


def test_docs_table_matches_the_model() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(START) == text.count(END) == 1
    assert with_table(text) == text, "regenerate: .venv/bin/python -m " + __name__


def test_every_variable_is_documented_once() -> None:
    table = markdown_table()
    for variable in CP_VARIABLES:
        assert table.count(f"| `{variable.name}` |") == 1


def test_a_full_valid_configuration_parses() -> None:
    config = load_controlplane_config(
        {
            "HL_CP_DIR": "/srv/cp",
            "HL_CP_BROKER_PID_FILE": "/run/mosquitto.pid",
            "HL_CP_S3_BUCKET": "run-logs",
            "HL_CP_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "HL_CP_S3_REGION": "eu-west-1",
            "HL_CP_S3_PREFIX": "logs/",
            "HL_CP_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "HL_CP_S3_SECRET_ACCESS_KEY": CANARY,
            "HL_CP_LOG_URL_EXPIRY_SECONDS": "600",
            "HL_CP_LOG_URLS_PER_BATCH": "8",
            "HL_OTHER": "launcher's business",
        }
    )
    assert config.state_dir == Path("/srv/cp")
    assert config.broker_pid_file == Path("/run/mosquitto.pid")
    storage = config.log_storage
    assert storage is not None
    assert (storage.bucket, storage.region, storage.prefix) == ("run-logs", "eu-west-1", "logs/")
    assert (storage.url_expiry_seconds, storage.urls_per_batch) == (600, 8)
    assert storage.secret_access_key is not None
    assert storage.secret_access_key.reveal_text() == CANARY
    assert CANARY not in repr(config)


def test_nothing_set_is_an_empty_configuration() -> None:
    config = load_controlplane_config({})
    assert (config.state_dir, config.broker_pid_file, config.log_storage) == (None, None, None)
    assert config.dispatch == DispatchPolicy()


def test_dispatch_timings_are_settable() -> None:
    """Short graces are how the e2e drills outlast every grace in seconds (issue 18)."""
    config = load_controlplane_config(
        {
            "HL_CP_LEASE_SECONDS": "7",
            "HL_CP_HEARTBEAT_TIMEOUT_SECONDS": "4",
            "HL_CP_LOST_RUN_GRACE_SECONDS": "3",
        }
    )
    assert config.dispatch == DispatchPolicy(
        lease_seconds=7, heartbeat_timeout_seconds=4, lost_run_grace_seconds=3
    )
    only_grace = load_controlplane_config({"HL_CP_LOST_RUN_GRACE_SECONDS": "120"}).dispatch
    assert only_grace == DispatchPolicy(lost_run_grace_seconds=120)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HL_CP_S3_ENDPOINT_URL": "ftp://x"}, "HL_CP_S3_ENDPOINT_URL"),
        ({"HL_CP_S3_ENDPOINT_URL": "https://user:pw@x"}, "HL_CP_S3_ENDPOINT_URL"),
        ({"HL_CP_S3_REGION": "EU WEST"}, "HL_CP_S3_REGION"),
        ({"HL_CP_LOG_URL_EXPIRY_SECONDS": "0"}, "HL_CP_LOG_URL_EXPIRY_SECONDS"),
        ({"HL_CP_LOG_URL_EXPIRY_SECONDS": "604801"}, "HL_CP_LOG_URL_EXPIRY_SECONDS"),
        ({"HL_CP_LOG_URLS_PER_BATCH": "1e3"}, "HL_CP_LOG_URLS_PER_BATCH"),
        ({"HL_CP_DIR": "/srv/\x1b[31mcp"}, "HL_CP_DIR"),
        ({"HL_CP_S3_BUCKET": "Bad_Bucket"}, "bucket"),
        ({"HL_CP_S3_BUCKET": "b-1", "HL_CP_S3_PREFIX": "no-slash"}, "prefix"),
        ({"HL_CP_S3_BUCKET": "b-1", "HL_CP_S3_ACCESS_KEY_ID": "AK"}, "secret access key"),
        ({"HL_CP_S3_ACCES_KEY_ID": "AK"}, "did you mean HL_CP_S3_ACCESS_KEY_ID?"),
        ({"HL_CP_DIRECTORY": "/x"}, "HL_CP_DIRECTORY"),
        ({"HL_CP_S3_BUCKETS": "x"}, "did you mean HL_CP_S3_BUCKET?"),
        ({"hl_cp_dir": "/x"}, "did you mean HL_CP_DIR?"),
        ({"HL_CP_LEASE_SECONDS": "0"}, "HL_CP_LEASE_SECONDS"),
        ({"HL_CP_HEARTBEAT_TIMEOUT_SECONDS": "86401"}, "HL_CP_HEARTBEAT_TIMEOUT_SECONDS"),
        ({"HL_CP_LOST_RUN_GRACE_SECONDS": "1.5"}, "HL_CP_LOST_RUN_GRACE_SECONDS"),
        ({"HL_CP_LOST_RUN_GRACE_SECONDS": "-3"}, "HL_CP_LOST_RUN_GRACE_SECONDS"),
    ],
)
def test_each_bad_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ControlPlaneConfigurationError) as info:
        load_controlplane_config(env)
    assert named in info.value.message
    assert info.value.exit_code == EXIT_CONFIGURATION
    assert info.value.reason in ("controlplane_settings_invalid",)


def test_all_problems_at_once_and_the_secret_never_shown() -> None:
    with pytest.raises(ControlPlaneConfigurationError) as info:
        load_controlplane_config(
            {
                "HL_CP_S3_SECRET_ACCESS_KEY": CANARY + "\x07",
                "HL_CP_S3_REGION": "?",
                "HL_CP_TYPO": "x",
            }
        )
    assert info.value.message.startswith("3 control-plane settings problems")
    assert CANARY not in f"{info.value.message} {info.value.detail} {info.value!r}"


@given(suffix=st.from_regex(r"[A-Z0-9_]{1,24}", fullmatch=True))
@hsettings(max_examples=300, deadline=None)
def test_property_every_unknown_name_is_refused(suffix: str) -> None:
    name = "HL_CP_" + suffix
    known = {v.name for v in CP_VARIABLES}
    if name in known:
        return
    with pytest.raises(ControlPlaneConfigurationError) as info:
        load_controlplane_config({name: "x"})
    assert name in info.value.message


@pytest.mark.parametrize(
    "command",
    [["init"], ["pool", "list"], ["runs", "list"], ["run", "show", "r-1"], ["serve"]],
)
def test_controlplane_commands_refuse_unknown_variables_with_a_suggestion(
    tmp_path: Path, command: list[str]
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HL_CP_DIRR": str(tmp_path / "cp")}
    proc = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "controlplane", *command],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == EXIT_CONFIGURATION, proc.stderr
    assert "did you mean HL_CP_DIR?" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cp").exists()


def test_launcher_commands_ignore_control_plane_variables(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HL_CP_DIR": str(tmp_path / "cp"),
        "HL_CP_S3_SECRET_ACCESS_KEY": CANARY,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "settings", "show"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr


if __name__ == "__main__":
    DOC.write_text(with_table(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {DOC}")
