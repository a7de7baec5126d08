"""The ``hardened-launcher`` command line: parsing and exit codes only.

Each command group lives in its own module that exposes ``register(subparsers)``; handlers
return an exit code or raise a :class:`~hardened_launcher.errors.LauncherError`. This module
catches that root once, prints one line (the detail only with ``-v``) and exits with its code.

Start-up is cheap: :func:`main` imports only the module of the command being run; the others
appear in ``--help`` from :data:`COMMANDS` (a test checks it against their ``register``), so
``--help`` imports neither the Docker SDK, boto3, requests nor any command's dependencies.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from hardened_launcher.cli.version import VersionAction
from hardened_launcher.errors import (
    EXIT_INFRASTRUCTURE,
    EXIT_INTERNAL,
    EXIT_NO_INPUT,
    EXIT_USAGE,
    LauncherError,
    UsageError,
)
from hardened_launcher.terminal import for_terminal

# Command -> (module registering it, its line in `--help`), in the order `--help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "keygen": (
        "keygen",
        "generate the pool private key (RSA-4096) and its certificate signing request",
    ),
    "token": ("token", "inspect the pool token (SPACELIFT_TOKEN)"),
    "doctor": (
        "doctor",
        "run every start-up check (settings, key, token, certificate, Docker, policy)",
    ),
    "verify-binary": ("verify_binary", "verify a file against a signed SHA256SUMS file"),
    "policy": ("policy", "test, evaluate or check a run initialization policy"),
    "redact": ("redact", "mask secret values (and their encodings) in stdin, write stdout"),
    "exec": (
        "exec_cmd",
        "run one run spec locally through the binaries, policy and execute gates",
    ),
    "start": ("start", "run the launcher daemon (foreground; configured by environment)"),
    "controlplane": (
        "controlplane",
        "the reference control plane (CA, pools, run queue, dispatch)",
    ),
    "demo": (
        "demo",
        "the launcher end to end on this machine: control plane, S3, containers",
    ),
    "audit": ("audit_cmd", "check, show and export the tamper-evident audit log"),
    "network": ("network", "network facts of this launcher (firewall requirements)"),
    "settings": (
        "settings_cmd",
        "show the effective settings, or print the table of every variable",
    ),
    "docs": (
        "docs_cmd",
        "print the bundled documentation (topics, a page, or the settings table)",
    ),
}

# One module per command group, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = tuple(module for module, _ in COMMANDS.values())

log = logging.getLogger(__name__)

# Write errors of our own output that are the environment's doing, not a bug.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})
#: Refusals of a path itself (not of its content).
_PATH_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENOENT}
)

# What a shell reports for a writer stopped by SIGPIPE (`… | head`): 128 + 13, with no message.
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with our exit code instead of 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the global options take no values)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names is imported and registered."""
    parser = _Parser(
        prog="hardened-launcher",
        description=(
            "Security-hardened worker-pool launcher. Configuration comes from SPACELIFT_* and "
            "HL_* environment variables (see the README's table)."
        ),
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show error detail and debug logs"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = None if argv is None else _command_of(argv)
    for command, (name, help_line) in COMMANDS.items():
        if argv is None or command == wanted:
            module = importlib.import_module(f"hardened_launcher.cli.{name}")
            module.register(sub)
        else:
            sub.add_parser(command, help=help_line)  # listed in --help, never parsed
    return parser


def _scrub_environment_for_messages() -> None:
    # pysequoia and other Rust bindings append backtraces to their messages when this is set;
    # those are noise for operators and could echo input bytes.
    os.environ.pop("RUST_BACKTRACE", None)
    os.environ.pop("RUST_LIB_BACKTRACE", None)


class _TerminalFormatter(logging.Formatter):
    """Log lines on the operator's terminal: run- and policy-controlled text escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return for_terminal(super().format(record), multiline=True)


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


# Options that name a path as text: a file name need not be UTF-8 (it is shown escaped).
_PATH_TEXT_DESTS = frozenset({"key_out", "csr_out", "dir", "out"})


def _check_text_arguments(args: argparse.Namespace) -> None:
    """Refuse an argument that is not valid text (bytes the locale could not decode arrive as
    lone surrogates): names, ids and URLs must be UTF-8; paths (``Path``) need not be."""
    for dest, value in vars(args).items():
        if dest in _PATH_TEXT_DESTS or callable(value):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    option = dest.replace("_", "-")
                    raise UsageError(
                        f"the value of {option} is not valid UTF-8 text",
                        hint="pass it as UTF-8",
                        reason="usage",
                    ) from None


def main(argv: Sequence[str] | None = None) -> int:
    _scrub_environment_for_messages()
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    verbose = bool(getattr(args, "verbose", False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TerminalFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    from hardened_launcher.redaction.sources import install_process_redactor  # noqa: PLC0415

    redactor = install_process_redactor(os.environ)
    try:
        _check_text_arguments(args)
        code: int = args.handler(args)
        sys.stdout.flush()  # a write error of buffered output is reported here, not at exit
    except LauncherError as exc:
        # Messages never carry secrets by construction; the redactor is the second line.
        # Messages can quote run- or policy-controlled text: escaped before the terminal.
        redact = redactor.redact_text if redactor is not None else str

        def shown(text: str) -> str:
            return for_terminal(redact(text))

        sys.stderr.write(f"error: {shown(exc.one_line())}\n")
        if verbose and exc.detail:
            sys.stderr.write(f"detail: {shown(exc.detail)}\n")
        if verbose:
            sys.stderr.write(f"reason: {exc.reason}; exit code {exc.exit_code}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`… | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno in _PATH_ERRNOS and exc.filename is not None:
            # A path from the command line or the environment that the system refuses (too
            # long, a loop, no permission) where a command did not name it itself.
            from hardened_launcher.bounded_input import describe_path  # noqa: PLC0415

            sys.stderr.write(
                f"error: cannot use {for_terminal(describe_path(exc.filename))}: "
                f"{exc.strerror}. Check the path and that this user may use it\n"
            )
            return EXIT_NO_INPUT
        if exc.errno not in _OUTPUT_ERRNOS:
            return _internal_error(exc, verbose=verbose)
        # The disk or device under our output failed (full, quota, I/O error): not a bug.
        _silence_stdout()
        sys.stderr.write(
            f"error: cannot write the output: {exc.strerror}. Free space or write somewhere else\n"
        )
        return EXIT_INFRASTRUCTURE
    except Exception as exc:  # noqa: BLE001 - the one place that reports bugs
        return _internal_error(exc, verbose=verbose)
    return code


def _internal_error(exc: BaseException, *, verbose: bool) -> int:
    # The exception text could carry input bytes, so only its type is shown by default.
    sys.stderr.write(
        f"error: internal error ({type(exc).__name__}); this is a bug, please report it "
        "with the output of the same command run with -v\n"
    )
    if verbose:
        log.error("internal error", exc_info=exc)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
