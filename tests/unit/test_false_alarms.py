"""False alarms and misleading states: control-plane URLs, certificate validity, keygen as a
non-root user, doctor's wording of a certificate inside the clock skew."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from hardened_launcher.cli import main
from hardened_launcher.controlplane.ca import open_state_dir
from hardened_launcher.controlplane.errors import ConflictError
from hardened_launcher.controlplane.pools import create_pool
from hardened_launcher.doctor import describe_validity
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token


@pytest.fixture(scope="module")
def csr_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hardened_launcher.identity.csr import csr_to_pem  # noqa: PLC0415

    path = tmp_path_factory.mktemp("csr") / "pool.csr"
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    path.write_bytes(csr_to_pem(create_csr(key, parse_subject("/CN=pool"))))
    return path


REFUSED_URLS = [
    ["--control-plane-url", "http://example.com"],
    ["--control-plane-url", "http://10.0.0.1:8080"],
    ["--control-plane-url", "http://[2001:db8::1]/"],
    ["--control-plane-url", "ftp://localhost/"],
    ["--control-plane-url", "https://example.com:0/"],
    ["--control-plane-url", "localhost:8080"],
    ["--control-plane-url", "https://user:pw@example.com/"],
    ["--broker-url", "mqtt://localhost:1883"],
    ["--broker-url", "mqtts://localhost"],
    ["--broker-url", "mqtts://localhost:8883/path"],
    ["--broker-url", "tcp://localhost:8883"],
]


@pytest.mark.parametrize("flags", REFUSED_URLS, ids=lambda f: f[1])
def test_init_refuses_urls_that_every_token_would_be_refused_for(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cp"
    code = main(["controlplane", "init", "--dir", str(target), "--no-broker", *flags])
    err = capsys.readouterr().err
    assert code == 78, err
    assert err.count("error:") == 1
    assert not target.exists()  # nothing half-made


@pytest.mark.parametrize(
    "url", ["http://localhost:8080", "http://127.0.0.1:9", "http://[::1]:80", "https://cp.example"]
)
def test_init_accepts_urls_tokens_accept(
    tmp_path: Path, url: str, csr_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cp"
    assert (
        main(
            [
                "controlplane",
                "init",
                "--dir",
                str(target),
                "--no-broker",
                "--control-plane-url",
                url,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "controlplane",
                "pool",
                "create",
                "--dir",
                str(target),
                "--name",
                "p",
                "--csr",
                str(csr_pem),
            ]
        )
        == 0
    )
    token = Token.from_encoded(capsys.readouterr().out.strip())  # the launcher accepts it
    assert token.control_plane_url == url


@pytest.mark.parametrize("flags", REFUSED_URLS, ids=lambda f: f[1])
def test_pool_create_refuses_url_overrides_tokens_would_be_refused_for(
    tmp_path: Path, flags: list[str], csr_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(target), "--no-broker"]) == 0
    capsys.readouterr()
    argv = ["controlplane", "pool", "create", "--dir", str(target), "--name", "p"]
    code = main([*argv, "--csr", str(csr_pem), *flags])
    captured = capsys.readouterr()
    assert code == 64, captured.err
    assert captured.out == ""  # no token printed
    assert "Copy the token again" not in captured.err


@pytest.mark.parametrize("days", ["0", "-1", "-99999999", "3651", "99999999", "9" * 40, "1.5"])
@pytest.mark.parametrize("action", ["create", "reset"])
def test_pool_days_out_of_range_is_a_usage_error(
    tmp_path: Path, days: str, action: str, csr_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(target), "--no-broker"]) == 0
    argv = ["controlplane", "pool", action, "--dir", str(target), "--name", "p"]
    with pytest.raises(SystemExit) as exited:  # argparse refuses it
        main([*argv, "--csr", str(csr_pem), "--days", days])
    code = exited.value.code
    err = capsys.readouterr().err
    assert code == 64, err
    assert "--days" in err


@pytest.mark.parametrize("days", [0, -1, 3651, 10**9])
def test_library_refuses_validity_out_of_range(tmp_path: Path, csr_pem: Path, days: int) -> None:
    target = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(target), "--no-broker"]) == 0
    state = open_state_dir(target)
    csr = x509.load_pem_x509_csr(csr_pem.read_bytes())
    with state.open_store() as store, pytest.raises(ConflictError):
        create_pool(state, store, name="p", csr=csr, now=datetime.now(UTC), days=days)


def test_one_day_certificate_is_valid_now_and_for_a_day(
    tmp_path: Path, csr_pem: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cp"
    assert main(["controlplane", "init", "--dir", str(target), "--no-broker"]) == 0
    capsys.readouterr()
    argv = ["controlplane", "pool", "create", "--dir", str(target), "--name", "p"]
    assert main([*argv, "--csr", str(csr_pem), "--days", "1"]) == 0
    token = Token.from_encoded(capsys.readouterr().out.strip())
    now = datetime.now(UTC)
    assert token.pool_certificate.not_valid_before_utc <= now
    assert token.pool_certificate.not_valid_after_utc >= now + timedelta(hours=23)


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        (timedelta(days=-1), "expired 1 day ago"),
        (timedelta(seconds=-30), "expired 30 seconds ago"),
        (timedelta(0), "expired 0 seconds ago"),
        (timedelta(minutes=-5, seconds=-1), "expired 5 minutes ago"),
        (timedelta(hours=5), "valid for 5 hours more"),
        (timedelta(days=1), "valid for 1 day more"),
        (timedelta(days=364, hours=23), "valid for 364 days more"),
        (timedelta(seconds=1), "valid for 1 second more"),
    ],
)
def test_validity_is_never_shown_as_negative_days(remaining: timedelta, expected: str) -> None:
    text = describe_validity(remaining)
    assert text.startswith(expected)
    assert "-" not in text


def _unprivileged() -> list[str]:
    """The command prefix that runs as an unprivileged user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root for this test")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.mark.parametrize("layout", ["read-only", "unsearchable", "missing"])
def test_keygen_into_an_unwritable_directory_as_a_non_root_user(
    request: pytest.FixtureRequest, layout: str
) -> None:
    # Outside pytest's own 0700 directory, so only the layout under test stops the user.
    base = Path(tempfile.mkdtemp())
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    target = base / "keys"
    if layout != "missing":
        target.mkdir(mode=0o555 if layout == "read-only" else 0)
    args = ["keygen", "--key-out", str(target / "k"), "--csr-out", str(target / "c")]
    done = subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "hardened_launcher", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
        env={**os.environ, "HOME": "/nonexistent"},
    )
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1
    assert "cannot write" in done.stderr
