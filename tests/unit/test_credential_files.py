"""The pool token and key from files (SPACELIFT_*_FILE) and systemd credentials."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.credential_files import MAX_CREDENTIAL_FILE_BYTES, credential_text_or_empty
from hardened_launcher.redaction.sources import install_process_redactor, launcher_secret_values
from hardened_launcher.settings import Settings, SettingsError, load_settings

TOKEN = base64.b64encode(b'{"canary": "token-CANARY-7f3a"}').decode("ascii")
PEM = "-----BEGIN PRIVATE KEY-----\nQ0FOQVJZLWtleS1ib2R5LTk5\n-----END PRIVATE KEY-----"
PEM_BASE64 = base64.b64encode(PEM.encode("ascii") + b"\n").decode("ascii")
CANARY = "CANARY-not-base64!!-b7c1"


def _write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    path.chmod(mode)
    return path


def _load(env: Mapping[str, str]) -> Settings:
    return load_settings({"HOME": "/root", **env})


def _failure(env: Mapping[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        _load(env)
    return info.value


def _outcome(env: Mapping[str, str]) -> Settings | SettingsError:
    try:
        return _load(env)
    except SettingsError as exc:
        return exc


def _all_text(exc: SettingsError) -> str:
    return "\n".join([exc.message, exc.hint, exc.detail, str(exc), exc.one_line(), repr(exc)])


def test_file_variants_give_the_same_settings_as_the_variables(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", TOKEN + "\n")
    key_file = _write(tmp_path / "key", PEM_BASE64)
    from_files = _load(
        {"SPACELIFT_TOKEN_FILE": str(token_file), "SPACELIFT_POOL_PRIVATE_KEY_FILE": str(key_file)}
    )
    from_env = _load({"SPACELIFT_TOKEN": TOKEN, "SPACELIFT_POOL_PRIVATE_KEY": PEM_BASE64})
    assert from_files.token is not None
    assert from_env.token is not None
    assert from_files.token.reveal_text() == from_env.token.reveal_text()
    assert from_files.pool_private_key is not None
    assert from_files.pool_private_key.reveal_text() == PEM_BASE64
    assert from_files.token_file == token_file
    assert from_files.pool_private_key_file == key_file


def test_a_key_file_may_hold_the_pem_itself(tmp_path: Path) -> None:
    key_file = _write(tmp_path / "spacelift.key", PEM + "\n")
    loaded = _load({"SPACELIFT_POOL_PRIVATE_KEY_FILE": str(key_file)})
    assert loaded.pool_private_key is not None
    assert loaded.pool_private_key.reveal_text() == PEM_BASE64


def test_systemd_credentials_are_read_from_the_credentials_directory(tmp_path: Path) -> None:
    _write(tmp_path / "spacelift-token", TOKEN, 0o400)
    _write(tmp_path / "spacelift-pool-private-key", PEM, 0o400)
    loaded = _load({"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert loaded.token is not None
    assert loaded.token.reveal_text() == TOKEN
    assert loaded.pool_private_key is not None
    assert loaded.pool_private_key.reveal_text() == PEM_BASE64


def test_the_variable_wins_over_a_systemd_credential(tmp_path: Path) -> None:
    _write(tmp_path / "spacelift-token", base64.b64encode(b"other").decode(), 0o400)
    loaded = _load({"CREDENTIALS_DIRECTORY": str(tmp_path), "SPACELIFT_TOKEN": TOKEN})
    assert loaded.token is not None
    assert loaded.token.reveal_text() == TOKEN


def test_a_file_variable_wins_over_a_systemd_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    _write(credentials / "spacelift-token", base64.b64encode(b"other").decode(), 0o400)
    token_file = _write(tmp_path / "token", TOKEN)
    loaded = _load(
        {"CREDENTIALS_DIRECTORY": str(credentials), "SPACELIFT_TOKEN_FILE": str(token_file)}
    )
    assert loaded.token is not None
    assert loaded.token.reveal_text() == TOKEN


def test_no_credential_in_the_directory_means_unset(tmp_path: Path) -> None:
    assert _load({"CREDENTIALS_DIRECTORY": str(tmp_path)}).token is None
    assert _load({"CREDENTIALS_DIRECTORY": "relative"}).token is None


@pytest.mark.parametrize("name", ["SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY"])
def test_variable_and_file_variant_together_are_refused(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / "v", TOKEN)
    exc = _failure({name: TOKEN, f"{name}_FILE": str(path)})
    assert [p.reason for p in exc.problems] == ["secret_set_twice"]
    assert TOKEN not in _all_text(exc)


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o666, 0o620, 0o602, 0o660, 0o777, 0o404])
def test_files_others_could_read_or_replace_are_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "token", TOKEN, mode)
    exc = _failure({"SPACELIFT_TOKEN_FILE": str(path)})
    assert exc.problems[0].reason == "credential_file_exposed"
    assert "chmod 0600" in exc.message
    assert TOKEN not in _all_text(exc)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440])
def test_owner_only_and_group_readable_files_are_accepted(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "token", TOKEN, mode)
    loaded = _load({"SPACELIFT_TOKEN_FILE": str(path)})
    assert loaded.token is not None


def test_hostile_files_are_refused_without_echoing_them(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    cases = {
        "missing": (tmp_path / "missing", "credential_file_unreadable"),
        "directory": (tmp_path, "credential_file_invalid"),
        "fifo": (fifo, "credential_file_invalid"),
        "device": (Path("/dev/zero"), "credential_file_exposed"),
        "oversized": (
            _write(tmp_path / "big", "A" * (MAX_CREDENTIAL_FILE_BYTES + 1)),
            "credential_file_invalid",
        ),
        "binary": (
            _write(tmp_path / "bin", b"\xff\xfe" + CANARY.encode()),
            "credential_file_not_text",
        ),
        "not base64": (_write(tmp_path / "text", CANARY), "secret_not_base64"),
        "empty": (_write(tmp_path / "empty", " \n"), "credential_file_empty"),
    }
    for label, (path, reason) in cases.items():
        exc = _failure({"SPACELIFT_TOKEN_FILE": str(path)})
        reasons = [p.reason for p in exc.problems]
        assert reason in reasons or (label == "device" and "credential_file_invalid" in reasons), (
            label,
            reasons,
        )
        assert CANARY not in _all_text(exc), label


def test_oversized_file_is_judged_without_reading_it_whole(tmp_path: Path) -> None:
    # A sparse file of 1 GiB: refused by size, quickly and without reading a gigabyte.
    big = tmp_path / "sparse"
    with big.open("wb") as handle:
        handle.truncate(1 << 30)
    big.chmod(0o600)
    exc = _failure({"SPACELIFT_TOKEN_FILE": str(big)})
    assert "larger than" in exc.message


def test_the_process_redactor_masks_values_given_in_files(tmp_path: Path) -> None:
    token_file = _write(tmp_path / "token", TOKEN)
    key_file = _write(tmp_path / "key", PEM)
    env = {
        "SPACELIFT_TOKEN_FILE": str(token_file),
        "SPACELIFT_POOL_PRIVATE_KEY_FILE": str(key_file),
    }
    values = dict(launcher_secret_values(env))
    assert values["SPACELIFT_TOKEN"] == TOKEN.encode()
    redactor = install_process_redactor(env)
    assert redactor is not None
    text = redactor.redact_text(f"token {TOKEN} key {PEM_BASE64} pem {PEM}")
    assert TOKEN not in text
    assert PEM_BASE64 not in text
    assert "Q0FOQVJZLWtleS1ib2R5LTk5" not in text


def test_a_broken_file_gives_the_redactor_nothing_and_no_exception(tmp_path: Path) -> None:
    path = _write(tmp_path / "token", TOKEN, 0o644)
    assert credential_text_or_empty({"SPACELIFT_TOKEN_FILE": str(path)}, "SPACELIFT_TOKEN") == ""


@pytest.mark.parametrize("control", [b"\x1c", b"\x1d", b"\x1e", b"\x1f", b"\x00", b"\x7f"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_control_byte_at_either_end_is_refused_not_stripped(
    tmp_path: Path, control: bytes, where: str
) -> None:
    # Regression (found by the fuzz harness): str.strip() took the separators \x1c-\x1f
    # for white space, so "\x1c<token>" loaded as "<token>", silently altered.
    token = TOKEN.encode("ascii")
    content = control + token + b"\n" if where == "before" else token + control + b"\r\n"
    outcome = _outcome({"SPACELIFT_TOKEN_FILE": str(_write(tmp_path / "token", content))})
    assert isinstance(outcome, SettingsError)
    assert "token-CANARY-7f3a" not in _all_text(outcome)
    assert TOKEN not in _all_text(outcome)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=512))
def test_any_file_content_gives_a_secret_or_one_settings_error(
    tmp_path: Path, content: bytes
) -> None:
    path = _write(tmp_path / "token", content)
    outcome = _outcome({"SPACELIFT_TOKEN_FILE": str(path)})
    stripped = content.strip()
    if isinstance(outcome, SettingsError):
        if len(stripped) >= 8:
            assert stripped.decode("latin-1") not in _all_text(outcome)
        return
    assert stripped
    assert outcome.token is not None
    assert outcome.token.reveal_text() == stripped.decode("ascii")
