"""scripts/release: two builds of one commit are byte-identical, the signed SHA256SUMS verifies
with our own ``verify-binary``, and the wheel installs offline from a wheelhouse with hashes and
carries the policy library."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
SIGNER = "Release Test <release@example.org>"

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Releases:
    first: Path
    second: Path
    keyring: Path
    fingerprint: str
    commit: str


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        command, capture_output=True, text=True, check=False, timeout=600, **kwargs
    )


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    gpg = require_tool("gpg")
    require_tool("git")
    base = tmp_path_factory.mktemp("release")
    home = base / "gnupg"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home), "HL_PYTHON": sys.executable}
    env.pop("SOURCE_DATE_EPOCH", None)
    batch = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    try:
        made = _run([*batch, "--quick-gen-key", SIGNER, "ed25519", "sign,cert", "1d"], env=env)
        assert made.returncode == 0, made.stderr
        listing = _run([gpg, "--with-colons", "--list-keys", SIGNER], env=env).stdout
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        keyring = base / "release-key.asc"
        keyring.write_text(_run([gpg, "--armor", "--export", fingerprint], env=env).stdout)
        outs = []
        for name in ("first", "second"):
            out = base / name
            built = _run(
                [str(ROOT / "scripts" / "release"), "--out", str(out), "--sign-key", fingerprint],
                env=env,
                cwd=ROOT,
            )
            assert built.returncode == 0, built.stderr[-3000:]
            outs.append(out)
        commit = _run(["git", "-C", str(ROOT), "rev-parse", "HEAD"]).stdout.strip()
        yield Releases(outs[0], outs[1], keyring, fingerprint, commit)
    finally:
        _run(["gpgconf", "--homedir", str(home), "--kill", "all"], env=env)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_builds_of_one_commit_are_byte_identical(releases: Releases) -> None:
    first, second = _files(releases.first), _files(releases.second)
    assert sorted(first) == sorted(second)
    names = sorted(first)
    assert any(n.endswith(".whl") for n in names)
    assert any(n.endswith(".tar.gz") for n in names)
    assert any(n.endswith(".cdx.json") for n in names)
    assert {"SHA256SUMS", "SHA256SUMS.asc"} <= set(names)
    for name in names:
        if name != "SHA256SUMS.asc":  # a signature carries its own creation time
            assert first[name] == second[name], name


def test_sums_cover_every_artifact_with_bare_names(releases: Releases) -> None:
    lines = (releases.first / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    artifacts = {p.name for p in releases.first.iterdir() if not p.name.startswith("SHA256SUMS")}
    assert set(listed) == artifacts
    for name, digest in listed.items():
        assert hashlib.sha256((releases.first / name).read_bytes()).hexdigest() == digest


def _verify(releases: Releases, artifact: Path, sig: Path | None = None) -> int:
    done = _run(
        [
            sys.executable,
            "-m",
            "hardened_launcher",
            "verify-binary",
            str(artifact),
            "--sums",
            str(releases.first / "SHA256SUMS"),
            "--sig",
            str(sig or releases.first / "SHA256SUMS.asc"),
            "--keyring",
            str(releases.keyring),
            "--fingerprint",
            releases.fingerprint,
        ]
    )
    return done.returncode


def test_every_artifact_verifies_with_our_own_gate(releases: Releases) -> None:
    for artifact in releases.first.iterdir():
        if not artifact.name.startswith("SHA256SUMS"):
            assert _verify(releases, artifact) == 0, artifact.name


def test_a_tampered_artifact_or_signature_is_refused(releases: Releases, tmp_path: Path) -> None:
    (wheel,) = releases.first.glob("*.whl")
    tampered = tmp_path / wheel.name
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert _verify(releases, tampered) not in {0, 70}
    # The second build's signature is valid for the same SHA256SUMS (same bytes), a stranger's
    # file of the same name is not.
    assert _verify(releases, wheel, releases.second / "SHA256SUMS.asc") == 0
    forged = tmp_path / "SHA256SUMS.asc"
    forged.write_text((releases.first / "SHA256SUMS.asc").read_text().replace("A", "B", 1))
    assert _verify(releases, wheel, forged) not in {0, 70}


def test_the_wheel_carries_policies_docs_license_and_commit(releases: Releases) -> None:
    (wheel,) = releases.first.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        policies = {p.name for p in (ROOT / "policies").glob("*.rego")}
        assert {f"hardened_launcher/policy_library/{n}" for n in policies} <= names
        assert "hardened_launcher/docs/supply-chain.md" in names
        for helper in ("_linescan", "_matches"):  # the redaction engine's compiled helpers
            assert any(
                n.startswith(f"hardened_launcher/redaction/{helper}.") and n.endswith(".abi3.so")
                for n in names
            ), helper
            assert f"hardened_launcher/redaction/{helper}.pyi" in names
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
        assert "License-Expression: Apache-2.0" in text
        assert "Project-URL: Documentation," in text
        commit = archive.read("hardened_launcher/_commit.txt").decode().strip()
    assert commit == releases.commit


def test_the_wheel_installs_offline_from_a_wheelhouse_with_hashes(
    releases: Releases, tmp_path: Path
) -> None:
    (wheel,) = releases.first.glob("*.whl")
    wheelhouse = tmp_path / "wheelhouse"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    fetched = _run(
        [
            *pip,
            "download",
            "--require-hashes",
            "--only-binary=:all:",
            "--dest",
            str(wheelhouse),
            "-r",
            str(RUNTIME_LOCK),
        ]
    )
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    requirements = tmp_path / "install.txt"
    requirements.write_text(
        RUNTIME_LOCK.read_text()
        + f"\nhardened-launcher @ {wheel.as_uri()} --hash=sha256:{digest}\n"
    )
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
    offline.pop("PIP_CONFIG_FILE", None)
    installed = _run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "--require-hashes",
            "-r",
            str(requirements),
        ],
        env=offline,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    launcher = str(target / "bin" / "hardened-launcher")
    elsewhere = {"cwd": tmp_path}
    version = _run([launcher, "--version"], **elsewhere)
    assert version.returncode == 0, version.stderr
    assert f"commit: {releases.commit}\n" in version.stdout
    library = tmp_path / "library"
    copied = _run([launcher, "policy", "library", "--out", str(library)], **elsewhere)
    assert copied.returncode == 0, copied.stderr
    tested = _run([launcher, "policy", "test", str(library)], **elsewhere)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "PASS:" in tested.stdout
    docs = _run([launcher, "docs", "install"], **elsewhere)
    assert docs.returncode == 0, docs.stderr
