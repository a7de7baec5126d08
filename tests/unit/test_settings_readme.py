"""The README's configuration table is generated from ``settings.VARIABLES``; keep them in step.

Regenerate the README region with::

    .venv/bin/python -m tests.unit.test_settings_readme
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from hardened_launcher.settings import DERIVED_FIELDS, VARIABLES, Settings, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
REGENERATE = "regenerate it with: .venv/bin/python -m tests.unit.test_settings_readme"


def _region(text: str) -> str:
    start = text.index(START) + len(START)
    end = text.index(END)
    return text[start:end]


def with_table(text: str) -> str:
    """``text`` with the region between the markers replaced by the generated table."""
    start = text.index(START) + len(START)
    end = text.index(END)
    return text[:start] + "\n" + markdown_table() + text[end:]


def test_readme_region_matches_the_generated_table() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1, f"README must hold exactly one {START} marker"
    assert text.count(END) == 1, f"README must hold exactly one {END} marker"
    assert _region(text) == "\n" + markdown_table(), (
        f"README's settings table is stale; {REGENERATE}"
    )


def test_every_settings_field_has_a_variable_and_back() -> None:
    field_names = {f.name for f in dataclasses.fields(Settings)}
    mapped = {spec.field for spec in VARIABLES}
    assert field_names - DERIVED_FIELDS - mapped == set(), "fields without a variable"
    assert mapped - field_names == set(), "variables naming a field Settings lacks"
    assert field_names >= DERIVED_FIELDS


def test_every_variable_is_one_table_row() -> None:
    table = markdown_table()
    names = [spec.name for spec in VARIABLES]
    assert len(names) == len(set(names))
    for spec in VARIABLES:
        rows = [line for line in table.splitlines() if line.startswith(f"| `{spec.name}` |")]
        assert len(rows) == 1, spec.name
        assert ("| yes |" in rows[0]) == spec.secret


def test_variable_names_follow_their_namespace() -> None:
    for spec in VARIABLES:
        prefix = "SPACELIFT_" if spec.source == "seed" else "HL_"
        assert spec.name.startswith(prefix), spec.name
        assert re.fullmatch(r"[A-Z_]+(<[a-z]+>)?", spec.name), spec.name
        assert spec.description.endswith("."), spec.name
        assert spec.default, spec.name


def test_patterns_appear_as_single_rows() -> None:
    names = {spec.name for spec in VARIABLES}
    assert "SPACELIFT_METADATA_<tag>" in names
    assert "SPACELIFT_PRIVATEVCS_MAPPING_NAME_<n>" in names
    assert "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_<n>" in names


def test_with_table_replaces_only_the_region() -> None:
    text = f"before\n{START}\nold table\n{END}\nafter\n"
    new = with_table(text)
    assert new.startswith(f"before\n{START}\n")
    assert new.endswith(f"{END}\nafter\n")
    assert "old table" not in new
    assert markdown_table() in new


if __name__ == "__main__":
    README.write_text(with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    sys.stdout.write(f"updated {README}\n")
