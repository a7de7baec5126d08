"""The launcher masks its own secrets in its logs and error lines from the first line on."""

from __future__ import annotations

import argparse
import base64
import logging

import pytest

from hardened_launcher import cli
from hardened_launcher.errors import ConfigurationError
from hardened_launcher.redaction.sources import install_process_redactor, launcher_secret_values

TOKEN = "CANARY-token-6e1d0c9b7a"
PEM = b"-----BEGIN PRIVATE KEY-----\nCANARYKEYBODY1234567890abcdef\n-----END PRIVATE KEY-----\n"
KEY_B64 = base64.b64encode(PEM).decode()
DB = "CANARY-db-password-41aa"


def _env() -> dict[str, str]:
    return {
        "SPACELIFT_TOKEN": TOKEN,
        "SPACELIFT_POOL_PRIVATE_KEY": KEY_B64,
        "SPACELIFT_MASK_ENVS": "DB_PASSWORD, MISSING,",
        "DB_PASSWORD": DB,
    }


def test_values_come_from_token_key_decoded_pem_and_mask_envs() -> None:
    values = launcher_secret_values(_env())
    assert values == [
        ("SPACELIFT_TOKEN", TOKEN.encode()),
        ("SPACELIFT_POOL_PRIVATE_KEY", KEY_B64.encode()),
        ("SPACELIFT_POOL_PRIVATE_KEY", PEM),
        ("DB_PASSWORD", DB.encode()),
    ]


def test_nothing_to_mask_installs_nothing() -> None:
    assert launcher_secret_values({}) == []
    assert install_process_redactor({}) is None


def test_key_that_is_not_base64_is_still_masked_as_given() -> None:
    values = launcher_secret_values({"SPACELIFT_POOL_PRIVATE_KEY": "not base64 at all!!"})
    assert values == [("SPACELIFT_POOL_PRIVATE_KEY", b"not base64 at all!!")]


def test_log_records_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logging.StreamHandler()
    # Only this handler, so that no other test's handlers keep our filter.
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])
    assert install_process_redactor(_env()) is not None
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "token %s db %s", (TOKEN, DB), None)
    assert handler.filter(record)
    text = handler.format(record)
    assert TOKEN not in text
    assert DB not in text
    assert text == "token *** db ***"


def test_cli_error_line_is_masked_even_if_a_message_carried_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in _env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])

    def handler(_args: argparse.Namespace) -> int:
        raise ConfigurationError(f"bad value {DB}", detail=f"token was {TOKEN}")

    parser = argparse.ArgumentParser(prog="hardened-launcher")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.set_defaults(handler=handler)
    monkeypatch.setattr(cli, "build_parser", lambda *_argv: parser)
    code = cli.main(["-v"])
    err = capsys.readouterr().err
    assert code == ConfigurationError.exit_code
    assert DB not in err
    assert TOKEN not in err
    assert "bad value ***" in err
