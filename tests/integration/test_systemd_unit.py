"""The shipped unit passes ``systemd-analyze verify`` and its exposure score stays at most 2.0.

``systemd-analyze security --offline=yes`` scores the sandboxing directives of a unit file
(0 = fully locked down, 10 = fully exposed). The score is printed for CI's log.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

UNIT_DIR = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
UNIT_NAME = "hardened-launcher.service"
INSTALLED_PATH = "/opt/hardened-launcher/bin/hardened-launcher"
EXPOSURE_GOAL = 2.0
SCORE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")

pytestmark = pytest.mark.integration


def _unit_copy(tmp_path: Path, *, egress: bool) -> Path:
    """The unit with ExecStart pointing at this environment's launcher (verify checks that it
    exists and is executable), optionally with the egress drop-in merged in."""
    text = (UNIT_DIR / UNIT_NAME).read_text(encoding="utf-8")
    launcher = Path(sys.executable).with_name("hardened-launcher")
    assert launcher.is_file()
    text = text.replace(INSTALLED_PATH, str(launcher))
    if egress:
        drop_in = (UNIT_DIR / "hardened-launcher-egress.conf").read_text(encoding="utf-8")
        text = text.replace("\n[Install]", drop_in.replace("[Service]\n", "") + "\n[Install]")
    folder = tmp_path / ("egress" if egress else "base")
    folder.mkdir()
    unit = folder / UNIT_NAME
    unit.write_text(text, encoding="utf-8")
    return unit


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze")
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("egress", [False, True], ids=["base", "egress-drop-in"])
def test_unit_verifies_cleanly(tmp_path: Path, egress: bool) -> None:
    unit = _unit_copy(tmp_path, egress=egress)
    done = _analyze("verify", "--man=no", str(unit))
    assert done.returncode == 0, done.stderr
    # verify reports unknown or misspelt directives as warnings without failing: none allowed.
    relevant = [line for line in done.stderr.splitlines() if unit.name in line]
    assert relevant == []


@pytest.mark.parametrize("egress", [False, True], ids=["base", "egress-drop-in"])
def test_exposure_score_meets_the_goal(tmp_path: Path, egress: bool) -> None:
    unit = _unit_copy(tmp_path, egress=egress)
    done = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    match = SCORE.search(done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security exposure ({'egress' if egress else 'base'}): {score}")
    assert score <= EXPOSURE_GOAL


def test_a_weakened_unit_scores_worse(tmp_path: Path) -> None:
    # The score is a measurement, not a constant: dropping the sandbox must raise it.
    unit = _unit_copy(tmp_path, egress=False)
    kept = [
        line
        for line in unit.read_text(encoding="utf-8").splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability"))
    ]
    unit.write_text("\n".join(kept) + "\n", encoding="utf-8")
    done = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    match = SCORE.search(done.stdout)
    assert match
    assert float(match.group(1)) > EXPOSURE_GOAL + 2
