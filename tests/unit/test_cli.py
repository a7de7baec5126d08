from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from hardened_launcher import cli
from hardened_launcher.errors import EXIT_INTERNAL, EXIT_USAGE, UntrustedInputError

CANARY = "CANARY-cli-51be0e"


def _parser_with(handler: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hardened-launcher")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(handler=handler)
    return parser


def test_expected_error_prints_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise UntrustedInputError(
            "the envelope was sealed for another key", hint="check the pool", reason="x_y"
        )

    monkeypatch.setattr(cli, "build_parser", lambda *_argv: _parser_with(handler))
    code = cli.main([])
    err = capsys.readouterr().err
    assert code == UntrustedInputError.exit_code
    assert err == "error: the envelope was sealed for another key. Check the pool\n"


def test_verbose_adds_detail_and_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise UntrustedInputError("bad", detail="more context", reason="bad_thing")

    monkeypatch.setattr(cli, "build_parser", lambda *_argv: _parser_with(handler))
    cli.main(["-v"])
    err = capsys.readouterr().err
    assert "detail: more context" in err
    assert "reason: bad_thing" in err


def test_unexpected_exception_hides_its_text_and_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(_args: argparse.Namespace) -> int:
        raise RuntimeError(f"dependency echoed input {CANARY}")

    monkeypatch.setattr(cli, "build_parser", lambda *_argv: _parser_with(handler))
    code = cli.main([])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL
    assert CANARY not in err
    assert "Traceback" not in err
    assert "RuntimeError" in err


def test_rust_backtrace_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "1")
    monkeypatch.setattr(cli, "build_parser", lambda *_argv: _parser_with(lambda _a: 0))
    assert cli.main([]) == 0
    assert "RUST_BACKTRACE" not in os.environ


def test_usage_error_exit_code() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["no-such-command"])
    assert info.value.code == EXIT_USAGE


def test_help_lists_the_foundation_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hardened_launcher", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("keygen", "token", "doctor", "verify-binary", "settings"):
        assert command in out
