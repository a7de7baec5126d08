"""``hardened-launcher verify-binary`` in process: one line out, exit codes, pins' source."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hardened_launcher import cli
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_OK, EXIT_UNTRUSTED_INPUT, EXIT_USAGE
from tests.unit.test_binaries_support import Release, TestKey, make_key, write_release


@pytest.fixture(scope="module")
def key() -> TestKey:
    return make_key()


@pytest.fixture
def release(tmp_path: Path, key: TestKey) -> Release:
    return write_release(tmp_path / "release", key)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only this command group, and settings that depend on nothing outside tmp_path.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("verify_binary",))
    monkeypatch.delenv("HL_RELEASE_KEY_FINGERPRINTS", raising=False)
    monkeypatch.delenv("HL_RELEASE_KEYRING", raising=False)
    monkeypatch.delenv("HL_CONFIG_FILE", raising=False)
    monkeypatch.setenv("HL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HL_CACHE_DIR", str(tmp_path / "cache"))


def argv(release: Release, *extra: str) -> list[str]:
    return [
        "verify-binary",
        str(release.binary),
        "--sums",
        str(release.sums),
        "--sig",
        str(release.signature),
        "--keyring",
        str(release.keyring),
        *extra,
    ]


def test_success_prints_one_summary_line(
    release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(argv(release, "--fingerprint", release.key.fingerprint.upper()))
    out, err = capsys.readouterr()
    assert code == EXIT_OK
    assert err == ""
    assert out.count("\n") == 1
    assert out.startswith("verified tool: sha256 ")
    assert release.key.fingerprint in out


def test_repeated_fingerprint_flags_are_all_pins(
    release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_key().fingerprint
    code = cli.main(argv(release, "--fingerprint", other, "--fingerprint", release.key.fingerprint))
    assert code == EXIT_OK
    assert "verified tool" in capsys.readouterr().out


def test_pins_come_from_settings_without_fingerprint_flags(
    release: Release, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_RELEASE_KEY_FINGERPRINTS", release.key.fingerprint)
    assert cli.main(argv(release)) == EXIT_OK
    assert "verified tool" in capsys.readouterr().out


def test_fingerprint_flags_replace_the_settings_pins(
    release: Release, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_RELEASE_KEY_FINGERPRINTS", release.key.fingerprint)
    code = cli.main(argv(release, "--fingerprint", make_key().fingerprint))
    assert code == EXIT_CONFIGURATION  # the keyring holds none of the flag's pins
    assert "none of the 1 pinned" in capsys.readouterr().err


def test_no_pins_anywhere_is_refused(release: Release, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["-v", *argv(release)])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIGURATION
    assert err.startswith("error: no release signing key is pinned")
    assert "reason: no_pinned_keys" in err


def without_keyring_flag(args: list[str]) -> list[str]:
    at = args.index("--keyring")
    return args[:at] + args[at + 2 :]


def test_missing_keyring_flag_is_a_configuration_error(
    release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    without = without_keyring_flag(argv(release, "--fingerprint", release.key.fingerprint))
    assert "--keyring" not in without
    assert cli.main(["-v", *without]) == EXIT_CONFIGURATION
    err = capsys.readouterr().err
    assert "reason: no_keyring" in err
    assert "--keyring" in err
    assert "HL_RELEASE_KEYRING" in err


def test_keyring_comes_from_settings_without_the_flag(
    release: Release, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL_RELEASE_KEYRING", str(release.keyring))
    without = without_keyring_flag(argv(release, "--fingerprint", release.key.fingerprint))
    assert "--keyring" not in without
    assert cli.main(without) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("verified tool: sha256 ")
    assert release.key.fingerprint in out


def test_keyring_flag_replaces_the_settings_keyring(
    release: Release,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    other = tmp_path / "other-keys.asc"
    other.write_bytes(make_key().armored())
    monkeypatch.setenv("HL_RELEASE_KEYRING", str(other))
    args = argv(release, "--fingerprint", release.key.fingerprint)
    assert cli.main(args) == EXIT_OK  # --keyring holds the signing key
    assert "verified tool" in capsys.readouterr().out
    assert cli.main(without_keyring_flag(args)) == EXIT_CONFIGURATION  # the settings' does not
    assert "error: " in capsys.readouterr().err


def test_refusal_prints_one_error_line(
    release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    release.binary.write_bytes(b"tampered")
    code = cli.main(argv(release, "--fingerprint", release.key.fingerprint))
    out, err = capsys.readouterr()
    assert code == EXIT_UNTRUSTED_INPUT
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: the SHA-256 of ")


def test_cache_flag_admits_into_the_settings_cache_dir(
    release: Release, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = cli.main(argv(release, "--fingerprint", release.key.fingerprint, "--cache"))
    out = capsys.readouterr().out
    assert code == EXIT_OK
    cached = out.rsplit("cached at ", 1)[1].strip()
    assert Path(cached).parent == tmp_path / "cache" / "binaries" / "sha256"
    assert stat.S_IMODE(Path(cached).stat().st_mode) == 0o555
    assert Path(cached).read_bytes() == release.binary.read_bytes()


def test_missing_required_flags_are_usage_errors(release: Release) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["verify-binary", str(release.binary)])
    assert caught.value.code == EXIT_USAGE
