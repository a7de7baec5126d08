"""``docs``: URLs and topics offline; a topic is a name from the list, never a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardened_launcher.cli import main
from hardened_launcher.errors import EXIT_USAGE
from hardened_launcher.settings import markdown_table

REPO_DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_without_topic_lists_urls_settings_and_every_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["docs"]) == 0
    out = capsys.readouterr().out
    assert "Documentation:" in out
    assert "Security:" in out
    assert "  settings " in out
    for page in REPO_DOCS.glob("*.md"):
        assert f"  {page.stem}\n" in out


def test_settings_topic_is_the_readme_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "settings"]) == 0
    assert capsys.readouterr().out == markdown_table()


def test_a_page_prints_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["docs", "policy"]) == 0
    assert capsys.readouterr().out == (REPO_DOCS / "policy.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "topic",
    ["../README", "/etc/passwd", "policy.md", "POLICY", "", "docs/policy", "x" * 5000, "\x1b[2J"],
)
def test_anything_but_a_listed_topic_is_refused_in_one_line(
    topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["docs", topic]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: no documentation topic")
    assert captured.err.count("\n") == 1
    assert "\x1b" not in captured.err
    assert len(captured.err) < 300
