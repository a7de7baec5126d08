from __future__ import annotations

import pytest

from hardened_launcher import errors
from hardened_launcher.errors import (
    ConfigurationError,
    InfrastructureError,
    LauncherError,
    RetryableError,
    UntrustedInputError,
    UsageError,
)


@pytest.mark.parametrize(
    ("cls", "code", "retryable"),
    [
        (UsageError, errors.EXIT_USAGE, False),
        (ConfigurationError, errors.EXIT_CONFIGURATION, False),
        (UntrustedInputError, errors.EXIT_UNTRUSTED_INPUT, False),
        (InfrastructureError, errors.EXIT_INFRASTRUCTURE, False),
        (RetryableError, errors.EXIT_RETRYABLE, True),
    ],
)
def test_fault_classes_map_to_exit_codes(
    cls: type[LauncherError], code: int, retryable: bool
) -> None:
    exc = cls("something is wrong", hint="do this")
    assert isinstance(exc, LauncherError)
    assert exc.exit_code == code
    assert exc.retryable is retryable
    assert exc.reason == cls.default_reason


def test_exit_codes_are_distinct_and_not_argparse_or_ok() -> None:
    codes = [
        errors.EXIT_USAGE,
        errors.EXIT_CONFIGURATION,
        errors.EXIT_UNTRUSTED_INPUT,
        errors.EXIT_INFRASTRUCTURE,
        errors.EXIT_RETRYABLE,
        errors.EXIT_INTERNAL,
    ]
    assert len(set(codes)) == len(codes)
    assert errors.EXIT_OK not in codes
    assert 2 not in codes


def test_one_line_has_message_and_hint() -> None:
    exc = ConfigurationError(
        "SPACELIFT_TOKEN is not set.", hint="export it", reason="token_missing"
    )
    assert exc.one_line() == "SPACELIFT_TOKEN is not set. Export it"
    assert "\n" not in exc.one_line()
    assert exc.reason == "token_missing"
    assert str(exc) == "SPACELIFT_TOKEN is not set. (export it)"
