"""The one error hierarchy of hardened-launcher, split by whose fault a failure is.

Every failure the launcher expects is a :class:`LauncherError`. The CLI catches that root once,
prints ``message`` (and ``hint``) on one line, and exits with ``exit_code``. Anything else is a
bug and is reported as such.

Messages are shown to operators and may reach the control plane and the audit log, so they never
carry a secret value: name the variable or the file, never its content.

Fault classes and exit codes (sysexits.h numbering where one fits):

====================  =========  ============================================================
class                 exit code  meaning
====================  =========  ============================================================
UsageError            64         the command line itself is wrong
UntrustedInputError   65         data from outside (token, envelope, signature, file) refused
InputFileError        66         a file named on the command line is missing or unreadable
InfrastructureError   69         a dependency is unavailable or failed (retryable or not)
RetryableError        75         a dependency failed in a way that may pass when tried again
ConfigurationError    78         the operator's settings or files are wrong
(unexpected bug)      70         an exception that is not a LauncherError
====================  =========  ============================================================
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_USAGE = 64
EXIT_UNTRUSTED_INPUT = 65
EXIT_NO_INPUT = 66
EXIT_INTERNAL = 70
EXIT_INFRASTRUCTURE = 69
EXIT_RETRYABLE = 75
EXIT_CONFIGURATION = 78


class LauncherError(Exception):
    """Root of every expected failure.

    ``reason`` is a stable, machine-readable slug (``certificate_expired``, ``policy_denied``…)
    that goes to the control plane and the audit log; ``message`` says what is wrong; ``hint``
    says what to do about it. ``detail`` is extra context shown only with ``-v``.
    """

    exit_code: ClassVar[int] = EXIT_INTERNAL
    retryable: ClassVar[bool] = False
    default_reason: ClassVar[str] = "launcher_error"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        reason: str | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.reason = reason or self.default_reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def one_line(self) -> str:
        """The single line the CLI prints."""
        text = self.message.rstrip(".")
        if not self.hint:
            return text
        return f"{text}. {self.hint[:1].upper()}{self.hint[1:]}"


class UsageError(LauncherError):
    """The command line is wrong (missing argument, conflicting flags)."""

    exit_code = EXIT_USAGE
    default_reason = "usage"


class ConfigurationError(LauncherError):
    """The operator's settings, keys or files are wrong; fix the configuration and restart."""

    exit_code = EXIT_CONFIGURATION
    default_reason = "configuration_invalid"


class UntrustedInputError(LauncherError):
    """Data from outside the trust boundary was refused (tampered, expired, wrong key…)."""

    exit_code = EXIT_UNTRUSTED_INPUT
    default_reason = "input_rejected"


class InfrastructureError(LauncherError):
    """A dependency (Docker, broker, disk, object storage) is unavailable or failed."""

    exit_code = EXIT_INFRASTRUCTURE
    default_reason = "infrastructure_failed"


class RetryableError(InfrastructureError):
    """An infrastructure failure that may pass when tried again (timeouts, restarts)."""

    exit_code = EXIT_RETRYABLE
    retryable = True
    default_reason = "infrastructure_retryable"


class InputFileError(LauncherError):
    """An input file is missing, unreadable or not a regular file (sysexits' ``EX_NOINPUT``).

    Every command exits with this one code when a file it was given cannot be read.
    """

    exit_code = EXIT_NO_INPUT
    default_reason = "input_unreadable"
