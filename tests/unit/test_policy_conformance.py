"""Replays tests/policy_conformance: the contract any replacement engine must keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.errors import LauncherError
from hardened_launcher.policy import PolicyGate, Sanitizer, check_policy_path

CORPUS = Path(__file__).resolve().parents[1] / "policy_conformance"
CASES = [
    pytest.param(case_dir, case, id=f"{case_dir.name}:{case['name']}")
    for case_dir in sorted(p for p in CORPUS.iterdir() if p.is_dir())
    for case in json.loads((case_dir / "cases.json").read_text())
]


def _run(gate: PolicyGate, case: dict[str, Any]) -> None:
    if "error" in case:
        with pytest.raises(LauncherError) as caught:
            gate.evaluate(case["input"])
        assert caught.value.reason == case["error"]
        return
    result = gate.evaluate(case["input"])
    assert list(result.deny) == case["deny"]
    assert result.sample is case["sample"]


@pytest.mark.parametrize(("case_dir", "case"), CASES)
def test_conformance_inline(case_dir: Path, case: dict[str, Any]) -> None:
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(case_dir / "policy", sanitizer=sanitizer)
    with PolicyGate.start(compiled, sanitizer=sanitizer, isolated=False) as gate:
        _run(gate, case)


@pytest.mark.parametrize("case_dir", sorted(p for p in CORPUS.iterdir() if p.is_dir()))
def test_conformance_worker_process_and_reuse(case_dir: Path) -> None:
    # One engine, every case in a row, twice: no state may leak from one evaluation to the next.
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(case_dir / "policy", sanitizer=sanitizer)
    cases = json.loads((case_dir / "cases.json").read_text())
    with PolicyGate.start(compiled, sanitizer=sanitizer, timeout_s=10) as gate:
        for case in cases + list(reversed(cases)):
            _run(gate, case)


def test_corpus_covers_both_syntaxes() -> None:
    syntaxes = {
        syntax.value
        for case_dir in CORPUS.iterdir()
        if case_dir.is_dir()
        for syntax in check_policy_path(case_dir / "policy").syntaxes.values()
    }
    assert syntaxes == {"v0", "v1"}
