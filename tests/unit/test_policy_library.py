"""``policy library``: listing, copying out (never clobbering), ``policy test`` on the copy."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardened_launcher import buildinfo
from hardened_launcher.cli import main
from hardened_launcher.cli.policy_library import copy_library, library_policies
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_USAGE, UsageError

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"


def test_checkout_library_is_the_repository_policies_folder() -> None:
    assert buildinfo.policy_library_dir() == REPO_POLICIES


def test_listing_names_every_policy_with_its_tests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "library"]) == 0
    out = capsys.readouterr().out
    policies = sorted(p.name for p in REPO_POLICIES.glob("*.rego") if "_test" not in p.name)
    assert len(policies) >= 6
    for name in policies:
        assert name in out
    assert "signed_run_fixtures_test.rego, signed_run_test.rego" in out


def test_tests_are_grouped_under_their_policy() -> None:
    found = {p.path.name: [t.name for t in p.tests] for p in library_policies(REPO_POLICIES)}
    assert found["allowed_registries.rego"] == ["allowed_registries_test.rego"]
    assert all(not name.endswith("_test.rego") for name in found)


def test_copy_out_then_policy_test_passes_on_the_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new" / "lib"
    assert main(["policy", "library", "--out", str(out)]) == 0
    copied = sorted(p.name for p in out.iterdir())
    assert copied == sorted(p.name for p in REPO_POLICIES.glob("*.rego"))
    for name in copied:
        assert (out / name).read_bytes() == (REPO_POLICIES / name).read_bytes()
        assert (out / name).stat().st_mode & 0o777 == 0o644
    capsys.readouterr()
    assert main(["policy", "test", str(out)]) == 0
    assert "FAIL" not in capsys.readouterr().out


@pytest.mark.parametrize("existing", ["allowed_registries.rego", "worker_binary_test.rego"])
def test_copy_refuses_to_replace_any_existing_file_and_copies_nothing(
    tmp_path: Path, existing: str
) -> None:
    (tmp_path / existing).write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError, match="already exist"):
        copy_library(REPO_POLICIES, tmp_path, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert (tmp_path / existing).read_text(encoding="utf-8") == "mine"


def test_force_replaces_files_but_never_writes_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "allowed_registries.rego").symlink_to(victim)
    (out / "credential_env.rego").write_text("old", encoding="utf-8")
    copy_library(REPO_POLICIES, out, force=True)
    assert victim.read_text(encoding="utf-8") == "keep"
    assert not (out / "allowed_registries.rego").is_symlink()
    for name in ("allowed_registries.rego", "credential_env.rego"):
        assert (out / name).read_bytes() == (REPO_POLICIES / name).read_bytes()
    assert not list(out.glob(".*.tmp"))


def test_out_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    assert main(["policy", "library", "--out", str(target)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_missing_library_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("hardened_launcher.cli.policy_library.policy_library_dir", lambda: None)
    assert main(["policy", "library"]) == EXIT_CONFIGURATION
    assert "carries no policy library" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("header", "summary"),
    [
        ("# Plain summary.\npackage spacelift\n", "Plain summary."),
        ("package spacelift\n", ""),
        ("# \x1b[31mred\x07 bell\n", "[31mred bell"),
        ("# " + "x" * 500 + "\n", "x" * 99 + "…"),
        ("", ""),
    ],
)
def test_summary_is_one_printable_bounded_line(tmp_path: Path, header: str, summary: str) -> None:
    (tmp_path / "p.rego").write_text(header, encoding="utf-8")
    (found,) = library_policies(tmp_path)
    assert found.summary == summary
