"""`hardened-launcher keygen` and `hardened-launcher token inspect`, run in-process."""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.cli import main
from hardened_launcher.cli.token import summarize
from hardened_launcher.identity.csr import create_csr, load_csr_pem, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, build_token
from hardened_launcher.identity.keyfiles import (
    OutputExistsError,
    OutputUnwritableError,
    generate_key_and_csr,
    write_private_file,
)
from hardened_launcher.identity.keys import PoolPrivateKey, load_pool_private_key
from hardened_launcher.identity.token import Token
from hardened_launcher.secrets import Secret


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- keygen -----------------------------------------------------------------------------------


def test_keygen_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["keygen"]) == 0
    out = capsys.readouterr().out
    key_path, csr_path = tmp_path / "spacelift.key", tmp_path / "spacelift.csr"
    assert _mode(key_path) == 0o600
    assert _mode(csr_path) == 0o600
    assert "base64 -w 0 spacelift.key" in out
    assert "base64 -b 0 -i spacelift.key" in out
    assert "Give spacelift.csr to the control plane" in out
    pem = key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pem.decode() not in out
    key = load_pool_private_key(Secret(base64.b64encode(pem)))
    assert key.algorithm == "RSA-4096"
    assert key.key_id.hex() in out
    csr = load_csr_pem(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=hardened-launcher-pool"
    assert csr.public_key() == key.public_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spacelift.csr", "spacelift.key"]


def _small_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """RSA-4096 is covered above; the file-handling tests use 2048 bits for speed."""
    original = PoolPrivateKey.generate.__func__  # type: ignore[attr-defined]

    def generate(cls: type[PoolPrivateKey], *, rsa_key_bits: int = 4096) -> PoolPrivateKey:
        return original(cls, rsa_key_bits=2048)  # type: ignore[no-any-return]

    monkeypatch.setattr(PoolPrivateKey, "generate", classmethod(generate))


def test_keygen_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _small_keys(monkeypatch)
    key_path = tmp_path / "k"
    key_path.write_text("precious")
    code = main(["-v", "keygen", "--key-out", str(key_path), "--csr-out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 64
    assert "reason: output_exists" in err
    assert "--force" in err
    assert key_path.read_text() == "precious"
    assert not (tmp_path / "c").exists()


def test_keygen_refuses_when_only_the_csr_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _small_keys(monkeypatch)
    (tmp_path / "c").write_text("old csr")
    code = main(["keygen", "--key-out", str(tmp_path / "k"), "--csr-out", str(tmp_path / "c")])
    assert code == 64
    assert "--csr-out" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_keygen_force_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_keys(monkeypatch)
    key_path, csr_path = tmp_path / "k", tmp_path / "c"
    key_path.write_text("old key")
    csr_path.write_text("old csr")
    key_path.chmod(0o644)
    args = ["keygen", "--key-out", str(key_path), "--csr-out", str(csr_path), "--force"]
    assert main(args) == 0
    assert _mode(key_path) == 0o600
    assert _mode(csr_path) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "k"]


def test_keygen_does_not_follow_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _small_keys(monkeypatch)
    target = tmp_path / "target"
    target.write_text("victim")
    link = tmp_path / "k"
    link.symlink_to(target)
    assert main(["keygen", "--key-out", str(link), "--csr-out", str(tmp_path / "c")]) == 64
    assert target.read_text() == "victim"
    args = ["keygen", "--key-out", str(link), "--csr-out", str(tmp_path / "c"), "--force"]
    assert main(args) == 0
    assert target.read_text() == "victim"
    assert not link.is_symlink()


def test_keygen_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "k"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputExistsError) as info:
        write_private_file(link, b"data", force=False, flag="--key-out")
    assert info.value.reason == "output_exists"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("subject", ["CN=x", "/CN=", "/BOGUS=1"])
def test_keygen_bad_subject(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    subject: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["-v", "keygen", "--subject", subject]) == 64
    assert "reason: subject_invalid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_keygen_custom_subject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_keys(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["keygen", "--subject", "/CN=pool/O=Acme\\/Sub"]) == 0
    csr = load_csr_pem((tmp_path / "spacelift.csr").read_bytes())
    assert csr.subject.rfc4514_string() == "O=Acme/Sub,CN=pool"


def test_keygen_same_path_for_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "same")
    assert main(["-v", "keygen", "--key-out", path, "--csr-out", path]) == 64
    assert "reason: output_conflict" in capsys.readouterr().err


def test_keygen_unwritable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _small_keys(monkeypatch)
    missing = tmp_path / "missing" / "k"
    assert main(["-v", "keygen", "--key-out", str(missing), "--csr-out", str(tmp_path / "c")]) == 78
    err = capsys.readouterr().err
    assert "reason: output_unwritable" in err
    assert "BEGIN" not in err


def test_key_is_removed_when_the_csr_cannot_be_written(tmp_path: Path) -> None:
    key_path = tmp_path / "k"
    with pytest.raises(OutputUnwritableError) as info:
        generate_key_and_csr(
            key_path=key_path,
            csr_path=tmp_path / "missing" / "c",
            subject=parse_subject("/CN=x"),
            force=False,
            rsa_key_bits=2048,
        )
    assert info.value.reason == "output_unwritable"
    assert not key_path.exists()


def test_write_private_file_force_leaves_no_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_private_file(path, Secret(b"one"), force=False)
    write_private_file(path, Secret(b"two"), force=True)
    assert path.read_bytes() == b"two"
    assert [path.name for path in tmp_path.iterdir()] == ["f"]


# -- token inspect ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token() -> Token:
    ca = CertificateAuthority.generate(key_type="EC-P256")
    key = PoolPrivateKey.generate_ec()
    now = datetime.now(UTC)
    cert = ca.issue_pool_certificate(
        create_csr(key, parse_subject("/CN=x")),
        pool_id="pool-1",
        not_before=now,
        not_after=now + timedelta(days=30),
    )
    return build_token(
        pool_id="pool-1",
        pool_certificate=cert,
        ca_certificate=ca.certificate,
        broker_url="mqtts://broker.example:8883",
        control_plane_url="https://cp.example",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
    )


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_inspect_json_from_stdin(
    token: Token, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    encoded = token.to_encoded().reveal_text()
    _stdin(monkeypatch, encoded.encode() + b"\n")
    assert main(["token", "inspect", "--token", "-", "--format", "json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["version"] == 1
    assert summary["pool_id"] == "pool-1"
    assert summary["broker_url"] == "mqtts://broker.example:8883"
    assert summary["mqtt_namespace"] == "spacelift"
    assert summary["control_plane_url"] == "https://cp.example"
    cert = summary["pool_certificate"]
    assert cert["subject"] == "CN=pool-1"
    assert cert["serial"] == format(token.pool_certificate.serial_number, "x")
    assert cert["sha256"] == token.pool_certificate_sha256.hex()
    assert cert["key_algorithm"] == "EC-P256"
    assert cert["not_after"].endswith("Z")
    assert summary["ca_certificate"]["sha256"] == token.ca_certificate_sha256.hex()
    assert summary["run_state_signing_key"]["sha256"] == token.signing_key_sha256.hex()
    assert captured.err == ""
    assert encoded[:40] not in captured.out


def test_inspect_text_with_literal_token_warns(
    token: Token, capsys: pytest.CaptureFixture[str]
) -> None:
    encoded = token.to_encoded().reveal_text()
    assert main(["token", "inspect", "--token", encoded]) == 0
    captured = capsys.readouterr()
    assert "process list" in captured.err
    for line in (
        "pool id:          pool-1",
        "broker:           mqtts://broker.example:8883",
        "  subject:        CN=pool-1",
        f"  SHA-256:        {token.ca_certificate_sha256.hex()}",
        "  key algorithm:  EC-P256",
        "run-state signing key:",
    ):
        assert line in captured.out
    assert encoded[:40] not in captured.out + captured.err


def test_inspect_from_environment(
    token: Token,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SPACELIFT_TOKEN", token.to_encoded().reveal_text())
    assert main(["token", "inspect", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["pool_id"] == "pool-1"


def test_inspect_without_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SPACELIFT_TOKEN", raising=False)
    assert main(["-v", "token", "inspect"]) == 78
    assert "reason: token_missing" in capsys.readouterr().err


def test_inspect_bad_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secretish = base64.b64encode(b'{"version": 7, "pool_id": "hunter2-hunter2"}').decode()
    _stdin(monkeypatch, secretish.encode())
    assert main(["-v", "token", "inspect", "--token", "-"]) == 78
    err = capsys.readouterr().err
    assert "reason: token_version_unsupported" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert secretish[:12] not in err
    assert "hunter2" not in err


def test_inspect_requires_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token"])
    assert info.value.code == 64
    assert "inspect" in capsys.readouterr().err


def test_certificate_summary_types(token: Token) -> None:
    summary = summarize(token)
    assert isinstance(summary["pool_certificate"], dict)
    assert isinstance(token.pool_certificate, x509.Certificate)
    assert set(summary) == {
        "version",
        "pool_id",
        "broker_url",
        "mqtt_namespace",
        "control_plane_url",
        "pool_certificate",
        "ca_certificate",
        "run_state_signing_key",
        "policy_sanitize_key",
    }
    # Only whether the pool's sanitize key is there, never the key.
    assert summary["policy_sanitize_key"] in (
        "present",
        "absent (a token from an older control plane: pool reset re-issues it)",
    )
