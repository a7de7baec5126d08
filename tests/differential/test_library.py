"""The policy library (``policies/``) compiles and passes its own tests under OPA and here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hardened_launcher.policy.sanitize import Sanitizer
from hardened_launcher.policy.testing import run_tests
from tests.differential.oracle import Opa

LIBRARY = Path(__file__).resolve().parents[2] / "policies"
_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)


def _opa_results(opa: Opa, sanitizer: Sanitizer) -> dict[str, bool]:
    engine = opa.engine()
    try:
        engine.register_function("sanitized", sanitizer.sanitize, arity=1)
        for path in sorted(LIBRARY.glob("*.rego")):
            engine.add_policy(path.name, path.read_text(encoding="utf-8"))
        results: dict[str, bool] = {}
        for path in sorted(LIBRARY.glob("*_test.rego")):
            text = path.read_text(encoding="utf-8")
            package_match = _PACKAGE.search(text)
            assert package_match is not None, path
            for name in _TEST_RULE.findall(text):
                rule = f"{package_match.group(1)}.{name}"
                try:
                    results[f"data.{rule}"] = engine.eval_document(rule) is True
                except opa.error:
                    results[f"data.{rule}"] = False
        return results
    finally:
        engine.close()


@pytest.mark.integration
def test_library_tests_pass_under_opa_and_here(opa: Opa) -> None:
    sanitizer = Sanitizer.random()
    under_opa = _opa_results(opa, sanitizer)
    report = run_tests([LIBRARY], sanitizer=sanitizer)
    here = {f"data.{r.package.removeprefix('data.')}.{r.name}": r.passed for r in report.results}
    assert len(under_opa) >= 50
    assert under_opa == here
    assert all(under_opa.values()), [name for name, ok in under_opa.items() if not ok]
