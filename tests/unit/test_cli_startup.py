"""The CLI imports only the command it runs: ``--help`` stays cheap (issue 15)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from hardened_launcher import cli
from hardened_launcher.errors import EXIT_USAGE

HEAVY = ("docker", "boto3", "requests", "cryptography", "hyperscan", "regorus", "pysequoia")
NEVER_FOR_PARSING = ("docker", "boto3", "requests")


def _imported_after(argv: list[str]) -> tuple[int, set[str]]:
    code = (
        "import json, sys\n"
        "from hardened_launcher.cli import main\n"
        "try:\n"
        f"    rc = main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        f"print(json.dumps([rc, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    rc, modules = json.loads(done.stdout.splitlines()[-1])
    return rc, set(modules)


def test_top_level_help_imports_no_command_dependencies() -> None:
    rc, modules = _imported_after(["--help"])
    assert rc == 0
    assert modules == set()


@pytest.mark.parametrize(
    "command",
    ["redact", "settings", "network", "token", "keygen", "exec", "controlplane", "demo", "doctor"],
)
def test_light_commands_parse_without_heavy_sdks(command: str) -> None:
    rc, modules = _imported_after([command, "--help"])
    assert rc == 0
    assert not modules & set(NEVER_FOR_PARSING)


def test_unknown_command_is_a_usage_error_without_imports() -> None:
    rc, modules = _imported_after(["no-such-command"])
    assert rc == EXIT_USAGE
    assert modules == set()


def test_the_help_table_matches_what_each_module_registers() -> None:
    parser = cli.build_parser()  # no argv: every module registered
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    registered = {choice.dest: choice.help for choice in sub._choices_actions}
    assert registered == {name: help_line for name, (_, help_line) in cli.COMMANDS.items()}
    assert list(registered) == list(cli.COMMANDS)  # same order in --help


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_parses_its_own_arguments_when_selected(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"hardened-launcher {command}" in out
    full = cli.build_parser([command])
    (sub,) = [a for a in full._actions if isinstance(a, argparse._SubParsersAction)]
    assert sub.choices[command].format_help() == out
