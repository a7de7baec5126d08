"""Pool identity against the real openssl: our key/CSR for openssl, openssl's key/CSR for us."""

from __future__ import annotations

import hashlib
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.identity.certificates import check_pool_identity
from hardened_launcher.identity.csr import load_csr_pem
from hardened_launcher.identity.issuing import CertificateAuthority, build_token
from hardened_launcher.identity.keys import PoolKeyError, PoolPrivateKey, load_pool_private_key
from hardened_launcher.identity.token import Token
from hardened_launcher.secrets import Secret
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def _run(*args: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, input=stdin, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def _launcher(
    *args: str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hardened_launcher", *args],
        cwd=cwd,
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def openssl() -> str:
    return require_tool("openssl")


@pytest.fixture(scope="module")
def base64_tool() -> str:
    return require_tool("base64")


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.generate()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openssl")


@dataclass(frozen=True)
class KeygenOutput:
    directory: Path
    key: Path
    csr: Path
    stdout: str


@pytest.fixture(scope="module")
def keygen_output(tmp_path_factory: pytest.TempPathFactory) -> KeygenOutput:
    directory = tmp_path_factory.mktemp("keygen")
    result = _launcher("keygen", "--subject", "/CN=pool/O=Acme", cwd=directory)
    assert result.returncode == 0, result.stderr
    return KeygenOutput(
        directory=directory,
        key=directory / "spacelift.key",
        csr=directory / "spacelift.csr",
        stdout=result.stdout,
    )


@pytest.fixture(scope="module")
def openssl_rsa4096(openssl: str, work: Path) -> tuple[Path, Path]:
    """Exactly the upstream instructions' command, with -subj so it does not prompt."""
    key, csr = work / "rsa4096.key", work / "rsa4096.csr"
    _run(
        openssl, "req", "-new", "-newkey", "rsa:4096", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=x",
    )  # fmt: skip
    return key, csr


def _encode_w0(base64_tool: str, path: Path) -> Secret:
    return Secret(_run(base64_tool, "-w", "0", path))


def _identity_from(
    ca: CertificateAuthority, csr_pem: bytes, key: PoolPrivateKey
) -> tuple[Token, x509.Certificate]:
    cert = ca.issue_pool_certificate(
        load_csr_pem(csr_pem),
        pool_id="pool-1",
        not_before=NOW - timedelta(minutes=1),
        not_after=NOW + timedelta(days=30),
    )
    token = build_token(
        pool_id="pool-1",
        pool_certificate=cert,
        ca_certificate=ca.certificate,
        broker_url="mqtts://broker.example:8883",
        control_plane_url="https://cp.example",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
    )
    identity = check_pool_identity(
        token=Token.from_encoded(token.to_encoded()),
        private_key=key,
        pinned_ca_sha256=ca.fingerprint_sha256,
        now=NOW,
        clock_skew=timedelta(minutes=5),
    )
    assert identity.key_id == key.key_id
    return token, cert


# -- our key and CSR, judged by openssl -------------------------------------------------------


def test_keygen_files_are_private_and_openssl_accepts_them(
    openssl: str, keygen_output: KeygenOutput
) -> None:
    for path in (keygen_output.key, keygen_output.csr):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    verify = subprocess.run(
        [openssl, "req", "-verify", "-in", str(keygen_output.csr), "-noout"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert "verify OK" in verify.stdout + verify.stderr
    text = _run(openssl, "req", "-in", keygen_output.csr, "-noout", "-text").decode()
    assert "sha256WithRSAEncryption" in text
    assert "4096 bit" in text
    assert "CN = pool" in text
    check = _run(openssl, "pkey", "-in", keygen_output.key, "-check", "-noout").decode()
    assert "valid" in check.lower()
    assert keygen_output.key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")


def test_keygen_instructions_work(
    base64_tool: str, keygen_output: KeygenOutput, ca: CertificateAuthority
) -> None:
    assert "base64 -w 0 spacelift.key" in keygen_output.stdout
    assert "base64 -b 0 -i spacelift.key" in keygen_output.stdout
    encoded = _run(base64_tool, "-w", "0", "spacelift.key", cwd=keygen_output.directory)
    key = load_pool_private_key(Secret(encoded))
    assert key.algorithm == "RSA-4096"
    assert key.key_id.hex() in keygen_output.stdout
    _identity_from(ca, keygen_output.csr.read_bytes(), key)


def test_keygen_key_id_matches_openssl(openssl: str, keygen_output: KeygenOutput) -> None:
    der = _run(openssl, "pkey", "-in", keygen_output.key, "-pubout", "-outform", "DER")
    key = PoolPrivateKey.from_pem(Secret(keygen_output.key.read_bytes()))
    assert key.key_id == hashlib.sha256(der).digest()


def test_keygen_refuses_to_overwrite_then_force_replaces(openssl: str, tmp_path: Path) -> None:
    first = _launcher("keygen", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    key_before = (tmp_path / "spacelift.key").read_bytes()
    again = _launcher("keygen", cwd=tmp_path)
    assert again.returncode == 64
    assert "already exists" in again.stderr
    assert "--force" in again.stderr
    assert again.stderr.count("\n") == 1
    assert (tmp_path / "spacelift.key").read_bytes() == key_before
    forced = _launcher("keygen", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "spacelift.key").read_bytes() != key_before
    for name in ("spacelift.key", "spacelift.csr"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spacelift.csr", "spacelift.key"]
    _run(openssl, "req", "-verify", "-in", tmp_path / "spacelift.csr", "-noout")


def test_our_pool_certificate_verifies_in_openssl(
    openssl: str, keygen_output: KeygenOutput, ca: CertificateAuthority, work: Path
) -> None:
    key = PoolPrivateKey.from_pem(Secret(keygen_output.key.read_bytes()))
    token, cert = _identity_from(ca, keygen_output.csr.read_bytes(), key)
    ca_path, cert_path = work / "ca.pem", work / "pool.pem"
    ca_path.write_bytes(ca.certificate_pem())
    cert_path.write_text(str(token.to_document()["pool_certificate"]))
    out = _run(
        openssl, "verify", "-CAfile", ca_path, "-purpose", "sslclient", "-x509_strict", cert_path
    ).decode()
    assert "OK" in out
    text = _run(openssl, "x509", "-in", cert_path, "-noout", "-text").decode()
    assert "URI:urn:hardened-launcher:pool:pool-1" in text
    assert "TLS Web Client Authentication" in text
    assert cert.subject.rfc4514_string() == "CN=pool-1"


# -- openssl's keys and CSRs, accepted by us --------------------------------------------------


def test_openssl_req_rsa4096_is_accepted_everywhere(
    base64_tool: str, openssl_rsa4096: tuple[Path, Path], ca: CertificateAuthority
) -> None:
    key_path, csr_path = openssl_rsa4096
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_pool_private_key(_encode_w0(base64_tool, key_path))
    assert key.algorithm == "RSA-4096"
    _identity_from(ca, csr_path.read_bytes(), key)


def test_openssl_pkcs1_and_wrapped_base64(
    openssl: str, base64_tool: str, openssl_rsa4096: tuple[Path, Path], work: Path
) -> None:
    key_path, _ = openssl_rsa4096
    pkcs1 = work / "rsa4096.pkcs1.key"
    _run(openssl, "rsa", "-in", key_path, "-traditional", "-out", pkcs1)
    assert pkcs1.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    from_pkcs8 = load_pool_private_key(_encode_w0(base64_tool, key_path))
    from_pkcs1 = load_pool_private_key(_encode_w0(base64_tool, pkcs1))
    wrapped = _run(base64_tool, pkcs1)  # plain base64: 76-column lines
    assert b"\n" in wrapped.rstrip(b"\n")
    from_wrapped = load_pool_private_key(Secret(wrapped))
    crlf = load_pool_private_key(Secret(wrapped.replace(b"\n", b"\r\n")))
    assert from_pkcs8 == from_pkcs1 == from_wrapped == crlf


@pytest.mark.parametrize(
    ("curve", "noout", "algorithm", "label"),
    [
        ("prime256v1", True, "EC-P256", b"-----BEGIN EC PRIVATE KEY-----"),
        ("prime256v1", False, "EC-P256", b"-----BEGIN EC PARAMETERS-----"),
        ("secp384r1", True, "EC-P384", b"-----BEGIN EC PRIVATE KEY-----"),
    ],
    ids=["P-256 SEC1", "P-256 with parameters block", "P-384 SEC1"],
)
def test_openssl_ec_keys(
    openssl: str,
    base64_tool: str,
    ca: CertificateAuthority,
    tmp_path: Path,
    curve: str,
    noout: bool,
    algorithm: str,
    label: bytes,
) -> None:
    key_path, csr_path = tmp_path / "ec.key", tmp_path / "ec.csr"
    _run(
        openssl, "ecparam", "-name", curve, "-genkey", *(["-noout"] if noout else []),
        "-out", key_path,
    )  # fmt: skip
    assert key_path.read_bytes().startswith(label)
    key = load_pool_private_key(_encode_w0(base64_tool, key_path))
    assert key.algorithm == algorithm
    _run(openssl, "req", "-new", "-key", key_path, "-out", csr_path, "-subj", "/CN=x")
    _identity_from(ca, csr_path.read_bytes(), key)


def test_openssl_encrypted_key_refused_then_decrypted_as_the_hint_says(
    openssl: str, base64_tool: str, openssl_rsa4096: tuple[Path, Path], work: Path
) -> None:
    key_path, _ = openssl_rsa4096
    encrypted, decrypted = work / "enc.key", work / "enc.key.dec"
    _run(openssl, "pkey", "-in", key_path, "-aes256", "-passout", "pass:pw", "-out", encrypted)
    with pytest.raises(PoolKeyError) as info:
        load_pool_private_key(_encode_w0(base64_tool, encrypted))
    assert info.value.reason == "pool_key_encrypted"
    assert "openssl pkey -in k -out k.dec" in info.value.hint
    _run(openssl, "pkey", "-in", encrypted, "-passin", "pass:pw", "-out", decrypted)
    assert load_pool_private_key(_encode_w0(base64_tool, decrypted)).algorithm == "RSA-4096"


def test_openssl_csr_and_certificate_given_as_the_key(
    openssl: str, base64_tool: str, openssl_rsa4096: tuple[Path, Path], work: Path
) -> None:
    key_path, csr_path = openssl_rsa4096
    cert_path = work / "self.pem"
    _run(
        openssl, "req", "-x509", "-key", key_path, "-out", cert_path, "-subj", "/CN=x",
        "-days", "1",
    )  # fmt: skip
    for path, reason in [(csr_path, "pool_key_is_csr"), (cert_path, "pool_key_is_certificate")]:
        with pytest.raises(PoolKeyError) as info:
            load_pool_private_key(_encode_w0(base64_tool, path))
        assert info.value.reason == reason


def test_token_inspect_subprocess(
    keygen_output: KeygenOutput, ca: CertificateAuthority, tmp_path: Path
) -> None:
    key = PoolPrivateKey.from_pem(Secret(keygen_output.key.read_bytes()))
    token, cert = _identity_from(ca, keygen_output.csr.read_bytes(), key)
    encoded = token.to_encoded().reveal()
    result = _launcher("token", "inspect", "--token", "-", cwd=tmp_path, stdin=encoded)
    assert result.returncode == 0, result.stderr
    assert "pool id:          pool-1" in result.stdout
    assert "key algorithm:  RSA-4096" in result.stdout
    assert cert.fingerprint(hashes.SHA256()).hex() in result.stdout
    assert encoded.decode()[:32] not in result.stdout + result.stderr
