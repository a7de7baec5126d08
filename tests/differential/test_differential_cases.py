"""Every hand-written case means the same under OPA and under the launcher, or is allowlisted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.differential.cases import Case, load_allowlist, load_cases, load_directions
from tests.differential.oracle import REFUSED, Opa, ours

CASES = load_cases()
ALLOWED = load_allowlist()
DIRECTIONS = load_directions()


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_agrees_with_opa(opa: Opa, case: Case) -> None:
    expected = opa.evaluate(case.module, case.rule, case.input)
    got = ours(case.ours_module, case.rule, case.input, syntax=case.ours_syntax)
    if case.id in ALLOWED:
        assert not expected.same_as(got), f"{case.id} agrees now: drop it from the allowlist"
        if DIRECTIONS[case.id] == "denies":
            # fail closed: the launcher refuses (the run is denied) where OPA evaluates
            assert got.kind in REFUSED, f"{case.id} is listed as denying only, but: {got.show()}"
            assert expected.kind not in REFUSED, f"{case.id}: OPA refuses too"
        return
    assert expected.same_as(got), (
        f"{case.id}\n{case.module}\ninput: {case.input}\nOPA:  {expected.show()}\n"
        f"ours: {got.show()}"
    )


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert set(ALLOWED) <= set(ids), set(ALLOWED) - set(ids)


def test_allowlist_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    missing = [case_id for case_id in ALLOWED if f"`{case_id}`" not in docs]
    assert not missing, f"docs/policy.md does not list: {missing}"


def test_open_differences_are_few_and_documented_as_open() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    open_ids = sorted(case_id for case_id, d in DIRECTIONS.items() if d == "both")
    section = docs.split("**Still open**", 1)[-1]
    assert all(f"`{case_id}`" in section for case_id in open_ids), open_ids
