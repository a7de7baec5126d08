"""The hand-written differential cases (``cases/*.yaml``) and the allowlist of known differences.

A case is ``{expr: EXPR}`` (the module is ``r := EXPR``) or ``{rego: RULES}`` (evaluated rule:
``rule``, default ``r``), with an optional ``input``. The oracle reads Rego v1 only: a case with
``rego_v0: RULES`` runs that legacy text here and its v1 translation (``rego``) under OPA. Its
id is ``<file>:<index>`` unless it has an ``id``. ``allowlist.yaml`` maps ids to the reason
the difference stays; docs/policy.md lists the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
ALLOWLIST = HERE / "allowlist.yaml"


@dataclass(frozen=True)
class Case:
    id: str
    module: str  # what OPA evaluates (v1)
    rule: str
    input: Any
    ours_module: str  # what the launcher evaluates (the same, or the v0 original)
    ours_syntax: str  # "v1" or "v0"


def module_of(entry: dict[str, Any]) -> str:
    if "expr" in entry:
        return f"package t\n\nr := {entry['expr']}\n"
    text = str(entry["rego"])
    return text if text.lstrip().startswith("package ") else f"package t\n\n{text}"


def load_cases() -> list[Case]:
    found: list[Case] = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        for index, entry in enumerate(entries):
            found.append(
                Case(
                    id=str(entry.get("id", f"{path.stem}:{index}")),
                    module=module_of(entry),
                    rule=str(entry.get("rule", "r")),
                    input=entry.get("input", {}),
                    ours_module=(
                        module_of({"rego": entry["rego_v0"]})
                        if "rego_v0" in entry
                        else module_of(entry)
                    ),
                    ours_syntax="v0" if "rego_v0" in entry else "v1",
                )
            )
    return found


DIRECTIONS = ("denies", "both")


def load_allowlist() -> dict[str, str]:
    """id -> reason."""
    return {case_id: reason for case_id, (_, reason) in _entries().items()}


def load_directions() -> dict[str, str]:
    """id -> ``denies`` (the launcher refuses where OPA evaluates) or ``both`` (still open)."""
    return {case_id: direction for case_id, (direction, _) in _entries().items()}


def _entries() -> dict[str, tuple[str, str]]:
    entries = yaml.safe_load(ALLOWLIST.read_text(encoding="utf-8")) or {}
    found: dict[str, tuple[str, str]] = {}
    for key, value in entries.items():
        if not isinstance(value, dict) or value.get("direction") not in DIRECTIONS:
            raise ValueError(f"allowlist entry {key}: needs a direction in {DIRECTIONS}")
        found[str(key)] = (str(value["direction"]), str(value["reason"]))
    return found
