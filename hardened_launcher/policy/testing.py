"""``policy test``: run the ``test_*`` rules of ``.rego`` files, like ``opa test`` where it fits.

- Every path (file or directory, recursive) is loaded into one engine with its data files.
- Tests are the rules whose name starts with ``test_``; ``todo_test_*`` rules are reported as
  skipped. ``--run REGEX`` is searched in the full rule path (``data.pkg.test_name``).
- A test passes when its rule evaluates to ``true``; undefined or any other value fails; an
  engine error fails it with ``error`` set.
- Coverage counts the lines regorus marks covered or not covered in the non-test files (test
  files are left out, unlike ``opa``, since covering the tests themselves says nothing). The
  percentage is a :class:`~fractions.Fraction`, compared with the threshold without rounding.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from hardened_launcher.errors import UsageError
from hardened_launcher.policy.engine import RegoEngine, load_files
from hardened_launcher.policy.errors import PolicyCompileError, PolicyEvaluationError
from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.source import PolicyFile, Syntax, is_test_file, load_policy_path
from hardened_launcher.policy.static_checks import RUNTIME_FILE

TEST_PREFIX = "test_"
TODO_PREFIX = "todo_test_"


@dataclass(frozen=True, kw_only=True)
class TestResult:
    package: str
    name: str
    file: str
    line: int
    col: int
    passed: bool
    skipped: bool
    error: str | None
    duration_ns: int

    def to_json_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "location": {"file": self.file, "row": self.line, "col": self.col},
            "package": self.package,
            "name": self.name,
            "duration": self.duration_ns,
        }
        if self.skipped:
            out["skip"] = True
        elif not self.passed:
            out["fail"] = True
        if self.error:
            out["error"] = {"message": self.error}
        return out


@dataclass(frozen=True, kw_only=True)
class Coverage:
    covered: int
    not_covered: int
    uncovered_lines: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def percent(self) -> Fraction:
        total = self.covered + self.not_covered
        return Fraction(100) if total == 0 else Fraction(self.covered * 100, total)


@dataclass(frozen=True, kw_only=True)
class TestReport:
    results: tuple[TestResult, ...]
    coverage: Coverage | None

    @property
    def failed(self) -> tuple[TestResult, ...]:
        return tuple(r for r in self.results if not r.passed and not r.skipped)


def parse_threshold(text: str) -> Fraction:
    """``--threshold`` as an exact fraction of a percent (``"80.5"`` → 161/2)."""
    try:
        value = Fraction(Decimal(text.strip()))
    except (InvalidOperation, ValueError):
        raise UsageError(
            f"--threshold {text!r} is not a number",
            hint="give a percentage such as 80 or 92.5",
            reason="usage",
        ) from None
    if not 0 <= value <= 100:
        raise UsageError("--threshold must be between 0 and 100", reason="usage")
    return value


def _load_engine(
    paths: Sequence[Path], *, sanitizer: Sanitizer, coverage: bool, syntax: Syntax
) -> tuple[RegoEngine, set[str]]:
    files: list[PolicyFile] = []
    test_files: set[str] = set()
    data: dict[str, object] = {}
    for root in paths:
        bundle = load_policy_path(root, include_tests=True)
        for file in bundle.files:
            shown = (
                file.path
                if len(paths) == 1
                else (root / file.path if root.is_dir() else root).as_posix()
            )
            files.append(PolicyFile(path=shown, text=file.text))
            if is_test_file(shown):
                test_files.add(shown)
        for key, value in bundle.data.items():
            if key in data:
                raise PolicyCompileError(
                    f"data.{key} is defined by data files under more than one path",
                    hint="give each data file its own top-level keys",
                    reason="policy_data_invalid",
                )
            data[key] = value
    engine, _, _ = load_files(
        tuple(files), data, sanitizer=sanitizer, syntax=syntax, coverage=coverage
    )
    return engine, test_files


def run_tests(
    paths: Sequence[Path],
    *,
    run: str | None = None,
    coverage: bool = False,
    syntax: Syntax = Syntax.AUTO,
    sanitizer: Sanitizer | None = None,
) -> TestReport:
    """Load ``paths`` and run their tests in this thread. Compile errors raise."""
    try:
        pattern = re.compile(run) if run else None
    except re.error as exc:
        raise UsageError(
            f"--run is not a valid regular expression: {exc}", reason="usage"
        ) from None
    engine, test_files = _load_engine(
        paths, sanitizer=sanitizer or Sanitizer.random(), coverage=coverage, syntax=syntax
    )
    engine.set_input_json("{}")
    seen: set[str] = set()
    results: list[TestResult] = []
    for rule in engine.rules():
        if not rule.name.startswith((TEST_PREFIX, TODO_PREFIX)) or rule.path in seen:
            continue
        seen.add(rule.path)
        if pattern is not None and not pattern.search(rule.path):
            continue
        skipped = rule.name.startswith(TODO_PREFIX)
        error: str | None = None
        passed = False
        start = time.perf_counter_ns()
        if not skipped:
            try:
                passed = engine.eval_rule(rule.path) is True
            except PolicyEvaluationError as exc:
                error = exc.message
        results.append(
            TestResult(
                package=rule.package,
                name=rule.name,
                file=rule.file,
                line=rule.line,
                col=rule.col,
                passed=passed,
                skipped=skipped,
                error=error,
                duration_ns=time.perf_counter_ns() - start,
            )
        )
    engine.take_prints()
    report_coverage = _coverage(engine, test_files) if coverage else None
    return TestReport(results=tuple(results), coverage=report_coverage)


def _coverage(engine: RegoEngine, test_files: set[str]) -> Coverage:
    report = engine.coverage()
    covered = not_covered = 0
    uncovered: dict[str, tuple[int, ...]] = {}
    files = report.get("files", [])
    for entry in files if isinstance(files, list) else []:
        path = str(entry.get("path"))
        if path in test_files or path == RUNTIME_FILE:
            continue
        hit = entry.get("covered", [])
        missed = entry.get("not_covered", [])
        covered += len(hit)
        not_covered += len(missed)
        if missed:
            uncovered[path] = tuple(sorted(int(n) for n in missed))
    return Coverage(covered=covered, not_covered=not_covered, uncovered_lines=uncovered)
