"""--version, the recorded commit and where the bundled resources are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardened_launcher import __version__, buildinfo
from hardened_launcher.cli import main


def test_version_names_the_release_the_commit_and_each_deciding_library(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"hardened-launcher {__version__}"
    assert lines[1].startswith("commit: ")
    assert "policy engine: regorus (gordon-to-regorus) " in out
    assert "OpenSSL: cryptography " in out
    assert "OpenSSL 3" in out or "OpenSSL 4" in out
    assert "OpenPGP: pysequoia" in out
    assert "not installed" not in out


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [
        ("0123456789abcdef0123456789abcdef01234567\n", "0123456789abcdef0123456789abcdef01234567"),
        ("abcdef1", "abcdef1"),
        ("", "unknown"),
        ("abc", "unknown"),  # too short to name a commit
        ("ZZZZZZZZ", "unknown"),
        ("0123456789abcdef\x1b[31m", "unknown"),  # terminal escapes never reach --version
        ("a" * 65, "unknown"),
        ("unknown", "unknown"),
        ("\xff\xfe", "unknown"),
    ],
)
def test_recorded_commit_is_shown_only_when_it_is_a_hex_object_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: str, shown: str
) -> None:
    (tmp_path / buildinfo.COMMIT_FILE).write_text(recorded, encoding="utf-8")
    monkeypatch.setattr(buildinfo, "PACKAGE_DIR", tmp_path)
    assert buildinfo.commit() == shown


def test_checkout_commit_is_marked_as_such() -> None:
    # The tests run from a source checkout, where no _commit.txt is bundled.
    assert not (buildinfo.PACKAGE_DIR / buildinfo.COMMIT_FILE).exists()
    assert buildinfo.commit().endswith("(source checkout)")


def test_bundled_resources_win_over_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg"
    (package / "policy_library").mkdir(parents=True)
    monkeypatch.setattr(buildinfo, "PACKAGE_DIR", package)
    assert buildinfo.policy_library_dir() == package / "policy_library"


def test_checkout_folders_are_used_only_beside_a_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "hardened_launcher"
    package.mkdir(parents=True)
    (tmp_path / "site" / "policies").mkdir()  # a stray folder in site-packages is not ours
    monkeypatch.setattr(buildinfo, "PACKAGE_DIR", package)
    monkeypatch.setattr(buildinfo, "_CHECKOUT_DIR", tmp_path / "site")
    assert buildinfo.policy_library_dir() is None
    (tmp_path / "site" / "pyproject.toml").write_text("", encoding="utf-8")
    assert buildinfo.policy_library_dir() == tmp_path / "site" / "policies"
