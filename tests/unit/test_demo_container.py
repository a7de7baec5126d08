"""demo --launcher-image: the docker run of a launcher never carries a secret in argv or env."""

from __future__ import annotations

import stat
from pathlib import Path

from hardened_launcher.demo.container import ContainerCommand, container_name, launcher_container

TOKEN = "dG9rZW4tQ0FOQVJZLTU1"  # base64 canary values
KEY = "a2V5LUNBTkFSWS02Ng=="


def _command(tmp_path: Path, **extra: str) -> tuple[Path, ContainerCommand]:
    directory = tmp_path / "launcher-1"
    directory.mkdir()
    env = {
        "SPACELIFT_TOKEN": TOKEN,
        "SPACELIFT_POOL_PRIVATE_KEY": KEY,
        "HL_STATE_DIR": str(directory / "state"),
        "PATH": "/usr/bin",
        "AWS_SECRET_ACCESS_KEY": "not-for-the-launcher",
        **extra,
    }
    command = launcher_container(
        image="hl:test",
        root=tmp_path,
        launcher_name="launcher-1",
        directory=directory,
        launcher_env=env,
        cli_env={"PATH": "/usr/bin", "HOME": "/root"},
    )
    return directory, command


def test_secrets_go_to_private_files_named_by_file_variables(tmp_path: Path) -> None:
    directory, command = _command(tmp_path)
    argv = " ".join(command.argv)
    env = command.env
    for value in (TOKEN, KEY):
        assert value not in argv
        assert value not in env.values()
    assert "SPACELIFT_TOKEN" not in env
    assert "SPACELIFT_POOL_PRIVATE_KEY" not in env
    token_file = Path(env["SPACELIFT_TOKEN_FILE"])
    key_file = Path(env["SPACELIFT_POOL_PRIVATE_KEY_FILE"])
    assert token_file.read_text() == TOKEN
    assert key_file.read_text() == KEY
    for path in (token_file, key_file):
        assert path.parent == directory / "secrets"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "secrets").stat().st_mode) == 0o700


def test_only_launcher_settings_are_passed_by_name(tmp_path: Path) -> None:
    _, command = _command(tmp_path)
    argv: list[str] = command.argv
    passed = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"]
    assert all("=" not in name for name in passed)
    assert all(name.startswith(("SPACELIFT_", "HL_")) for name in passed)
    assert "AWS_SECRET_ACCESS_KEY" not in passed
    assert argv[-2:] == ["hl:test", "start"]
    for flag in ("--read-only", "--rm", "no-new-privileges"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    env = command.env
    assert env["HL_METRICS_ADDRESS"] == ""
    assert env["HL_AUDIT_DIR"] == env["HL_STATE_DIR"] + "/audit"


def test_explicit_settings_are_kept(tmp_path: Path) -> None:
    _, command = _command(tmp_path, HL_METRICS_ADDRESS="127.0.0.1:9999", HL_AUDIT_DIR="/a")
    env = command.env
    assert env["HL_METRICS_ADDRESS"] == "127.0.0.1:9999"
    assert env["HL_AUDIT_DIR"] == "/a"


def test_container_names_differ_per_demo_directory() -> None:
    a = container_name(Path("/tmp/x/demo"), "launcher-1")
    b = container_name(Path("/tmp/y/demo"), "launcher-1")
    assert a != b
    assert a.startswith("hl-demo-")
    assert a.endswith("-launcher-1")
