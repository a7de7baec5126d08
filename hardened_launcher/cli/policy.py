"""CLI command group: ``policy`` — ``test``, ``eval`` and ``check`` of run initialization policies.

``hardened-launcher policy test [PATH…] [-v] [--run REGEX] [--format pretty|json] [--coverage]
[--threshold PCT]``: exit 0 when every test passes (and coverage reaches the threshold), 2 when a
test fails or coverage is below the threshold (compared without rounding), 1 on any other error.

``hardened-launcher policy eval --policy PATH --input FILE.json``: prints the decision as JSON;
exit 0 allow, 3 deny, 1 error. The input file is used as given (it is the operator's own file).
``--timeout`` bounds the compile-time probe and the evaluation alike (10 ms to 60 s).

``hardened-launcher policy check PATH [--timeout S]``: compile, and probe with an empty input in
the policy worker (under the timeout and its memory limit); exit 0, or 1 with
``file:line:col: msg``.

These commands report errors themselves (one line, ``error: …``) so that their exit codes stay
those of ``opa`` rather than the launcher's sysexits codes — except a missing or unreadable file
named on the command line, which exits 66 as on every command.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from hardened_launcher.bounded_input import (
    DocumentTooDeepError,
    describe_path,
    load_json,
    read_bounded,
)
from hardened_launcher.cli import policy_library
from hardened_launcher.errors import InputFileError, LauncherError, UsageError
from hardened_launcher.policy.gate import DEFAULT_TIMEOUT_S, PolicyGate, check_policy_path
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import Syntax
from hardened_launcher.policy.testing import TestReport, parse_threshold, run_tests
from hardened_launcher.settings import MAX_POLICY_TIMEOUT, MIN_POLICY_TIMEOUT
from hardened_launcher.terminal import for_terminal

EXIT_PASS = 0
EXIT_ERROR = 1
EXIT_TEST_FAILED = 2
EXIT_DENY = 3
MAX_INPUT_FILE_BYTES = 1024 * 1024
MAX_INPUT_DEPTH = 64


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "policy",
        help="test, evaluate or check a run initialization policy",
        description="Work with run initialization policies (Rego, package spacelift).",
    )
    commands = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    commands.required = True
    syntax_help = "Rego syntax: auto (per file: v1, else legacy v0), v0 or v1"

    test = commands.add_parser("test", help="run the test_* rules of .rego files")
    test.add_argument("paths", nargs="*", type=Path, default=[Path()], metavar="PATH")
    test.add_argument("-v", "--verbose", action="store_true", help="list every test")
    test.add_argument("--run", metavar="REGEX", help="only tests whose full path matches")
    test.add_argument("--format", choices=("pretty", "json"), default="pretty")
    test.add_argument("--coverage", action="store_true", help="report line coverage")
    test.add_argument("--threshold", metavar="PCT", help="fail (exit 2) below this coverage")
    test.add_argument(
        "--syntax", choices=[s.value for s in Syntax], default="auto", help=syntax_help
    )
    test.set_defaults(handler=run_test)

    evaluate = commands.add_parser("eval", help="evaluate a policy on one input document")
    evaluate.add_argument("--policy", type=Path, required=True, metavar="PATH")
    evaluate.add_argument("--input", type=Path, required=True, metavar="FILE.json")
    evaluate.add_argument("--timeout", type=_timeout, default=DEFAULT_TIMEOUT_S, metavar="SECONDS")
    evaluate.add_argument(
        "--syntax", choices=[s.value for s in Syntax], default="auto", help=syntax_help
    )
    evaluate.set_defaults(handler=run_eval)

    check = commands.add_parser("check", help="compile a policy without evaluating it")
    check.add_argument("path", type=Path, metavar="PATH")
    check.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="bound of the probe with an empty input (as HL_POLICY_TIMEOUT; default 1)",
    )
    check.add_argument(
        "--syntax", choices=[s.value for s in Syntax], default="auto", help=syntax_help
    )
    check.set_defaults(handler=run_check)

    policy_library.register(commands)


def _fail(exc: LauncherError, args: argparse.Namespace) -> int:
    sys.stderr.write(f"error: {for_terminal(exc.one_line())}\n")
    if getattr(args, "verbose", False) and exc.detail:
        sys.stderr.write(f"detail: {for_terminal(exc.detail)}\n")
    # A missing or unreadable file has the one exit code every command uses for it.
    return exc.exit_code if isinstance(exc, InputFileError) else EXIT_ERROR


def _timeout(text: str) -> float:
    """``--timeout``: seconds, within the bounds of ``HL_POLICY_TIMEOUT``."""
    low, high = MIN_POLICY_TIMEOUT.total_seconds(), MAX_POLICY_TIMEOUT.total_seconds()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not low <= value <= high:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} seconds")
    return value


def _percent(value: Fraction) -> str:
    return f"{float(value):.2f}%"


def _print_report(report: TestReport, args: argparse.Namespace, below: bool) -> None:
    if args.format == "json":
        doc: dict[str, object] = {"tests": [r.to_json_dict() for r in report.results]}
        if report.coverage is not None:
            doc["coverage"] = {
                "covered_lines": report.coverage.covered,
                "not_covered_lines": report.coverage.not_covered,
                "coverage": float(report.coverage.percent),
                "not_covered": {k: list(v) for k, v in report.coverage.uncovered_lines.items()},
            }
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    for result in report.results:
        if result.skipped:
            status = "SKIPPED"
        elif result.passed:
            status = "PASS"
        else:
            status = "ERROR" if result.error else "FAIL"
        if args.verbose or status in {"FAIL", "ERROR"}:
            where = f"{result.file}:{result.line}, {result.duration_ns // 1000} µs"
            line = f"{result.package}.{result.name}: {status} ({where})"
            sys.stdout.write(for_terminal(line) + "\n")
            if result.error:
                sys.stdout.write(f"  {for_terminal(result.error)}\n")
    passed = sum(1 for r in report.results if r.passed)
    failed = len(report.failed)
    skipped = sum(1 for r in report.results if r.skipped)
    sys.stdout.write("-" * 60 + "\n")
    sys.stdout.write(f"PASS: {passed}/{len(report.results)}")
    sys.stdout.write(f", FAIL: {failed}" if failed else "")
    sys.stdout.write(f", SKIPPED: {skipped}" if skipped else "")
    sys.stdout.write("\n")
    if report.coverage is not None:
        sys.stdout.write(f"coverage: {_percent(report.coverage.percent)}\n")
        if below or args.verbose:
            for path, lines in report.coverage.uncovered_lines.items():
                shown = for_terminal(f"{path}: {', '.join(map(str, lines))}")
                sys.stdout.write(f"  not covered: {shown}\n")


def run_test(args: argparse.Namespace) -> int:
    try:
        threshold = parse_threshold(args.threshold) if args.threshold is not None else None
        if threshold is not None and not args.coverage:
            raise UsageError("--threshold needs --coverage", reason="usage")
        report = run_tests(
            args.paths, run=args.run, coverage=args.coverage, syntax=Syntax(args.syntax)
        )
    except LauncherError as exc:
        return _fail(exc, args)
    below = (
        threshold is not None
        and report.coverage is not None
        and report.coverage.percent < threshold
    )
    _print_report(report, args, below)
    if below and report.coverage is not None and threshold is not None:
        sys.stderr.write(
            f"error: coverage {_percent(report.coverage.percent)} "
            f"({report.coverage.covered}/{report.coverage.covered + report.coverage.not_covered} "
            f"lines) is below the threshold {args.threshold}%\n"
        )
    if report.failed or below:
        return EXIT_TEST_FAILED
    return EXIT_PASS


def _read_input(path: Path) -> dict[str, Any]:
    raw = read_bounded(
        path, max_bytes=MAX_INPUT_FILE_BYTES, what="input file", too_large=UsageError
    )
    shown = describe_path(path)
    try:
        doc = load_json(raw, max_depth=MAX_INPUT_DEPTH)
    except DocumentTooDeepError as exc:
        raise UsageError(f"the input file {shown} {exc}", reason="usage") from None
    except ValueError as exc:
        raise UsageError(
            f"the input file {shown} is not JSON ({type(exc).__name__})", reason="usage"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError(f"the input file {shown} does not hold a JSON object", reason="usage")
    return doc


def run_eval(args: argparse.Namespace) -> int:
    try:
        document = _read_input(args.input)
        sanitizer = Sanitizer.random()
        # The gate's worker probes the policy under --timeout and its memory limit.
        compiled = check_policy_path(
            args.policy, syntax=Syntax(args.syntax), sanitizer=sanitizer, probe=False
        )
        with PolicyGate.start(compiled, sanitizer=sanitizer, timeout_s=args.timeout) as gate:
            result = gate.evaluate(document)
    except LauncherError as exc:
        return _fail(exc, args)
    sys.stdout.write(json.dumps(result.to_json_dict(), indent=2) + "\n")
    return EXIT_PASS if result.allowed else EXIT_DENY


def run_check(args: argparse.Namespace) -> int:
    try:
        compiled = check_policy_path(args.path, syntax=Syntax(args.syntax), timeout_s=args.timeout)
    except LauncherError as exc:
        return _fail(exc, args)
    syntaxes = ", ".join(f"{path} ({syntax.value})" for path, syntax in compiled.syntaxes.items())
    sys.stdout.write(f"ok: {for_terminal(syntaxes)}; sha256 {compiled.sha256}\n")
    return EXIT_PASS
