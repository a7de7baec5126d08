"""Gate 2 against signatures and keys made by real GnuPG, generated once per session.

Keys (all in one throw-away GNUPGHOME):

- ``ed``: ed25519 primary key (sign, certify), made 20 days ago, with two signing subkeys:
  ``ed_sub`` (valid) and ``ed_old_sub`` (created 10 days ago with a one-day expiry). Both past
  dates come from ``--faked-system-time``. The primary key must predate the old subkey's
  binding: a binding dated before its primary key existed is invalid (gpg lists the subkey as
  ``sub:i``, Sequoia rejects the binding), so such a subkey would not be part of the key at all;
- ``rsa``: rsa3072 primary key (sign, certify);
- ``stranger``: ed25519, never pinned;
- ``expired``: ed25519 made 10 days ago with a one-day expiry;
- ``revoked``: ed25519, revoked with the certificate gpg wrote to ``openpgp-revocs.d``
  (gpg 2.2 has no ``--quick-revoke-key``; the file's armor lines start with ``:`` to stop an
  accidental import, so the ``:`` is stripped before ``gpg --import``);
- ``sub_revoked``: ed25519 with a signing subkey revoked through ``--edit-key`` (``revkey``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pysequoia
import pytest

from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.binaries.verify import VerifiedBinary, verify_binary
from hardened_launcher.errors import (
    EXIT_CONFIGURATION,
    EXIT_UNTRUSTED_INPUT,
    ConfigurationError,
    LauncherError,
    UntrustedInputError,
)
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

CONTENT = b"\x7fELF pretend launcher binary\n" * 100
NOISE = ("Traceback", "RUST_BACKTRACE", "panicked", "Stack backtrace", "pyo3", "anyhow")


def _gpg_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S")


@dataclass(frozen=True)
class Gpg:
    executable: str
    home: Path

    def run(
        self,
        *args: str,
        at: datetime | None = None,
        conflict_ok: bool = False,
        commands: bytes | None = None,
    ) -> bytes:
        command = [
            self.executable,
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]
        if at is not None:
            command += ["--faked-system-time", _gpg_time(at)]
        if conflict_ok:
            command.append("--ignore-time-conflict")
        if commands is not None:
            command += ["--command-fd", "0"]
        result = subprocess.run(
            [*command, *args], input=commands, capture_output=True, timeout=180, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"gpg {args[:2]} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def fingerprints(self, user_id: str) -> list[str]:
        listing = self.run("--with-colons", "--list-keys", user_id).decode()
        return [
            line.split(":")[9].lower() for line in listing.splitlines() if line.startswith("fpr:")
        ]

    def new_key(
        self, user_id: str, algo: str = "ed25519", expiry: str = "never", at: datetime | None = None
    ) -> str:
        self.run("--quick-gen-key", user_id, algo, "sign,cert", expiry, at=at)
        return self.fingerprints(user_id)[0]

    def export(self, *fingerprints: str, armor: bool = True) -> bytes:
        return self.run(*(["--armor"] if armor else []), "--export", *fingerprints)

    def detach_sign(
        self,
        data_path: Path,
        signer: str,
        out: Path,
        *,
        armor: bool = True,
        at: datetime | None = None,
        digest: str | None = None,
        conflict_ok: bool = False,
    ) -> Path:
        args = ["--local-user", f"{signer}!", "--output", str(out)]
        if armor:
            args.append("--armor")
        if digest:
            args += ["--digest-algo", digest]
        self.run(*args, "--detach-sign", str(data_path), at=at, conflict_ok=conflict_ok)
        return out


@dataclass(frozen=True)
class World:
    gpg: Gpg
    now: datetime
    ed: str
    ed_sub: str
    ed_old_sub: str
    rsa: str
    stranger: str
    expired: str
    revoked: str
    sub_revoked: str
    revoked_sub: str
    keyring: Path  # every key above, armored
    # Signatures made once, where faked time or revocation order matters.
    expired_sig: bytes  # by ``expired`` while it was valid
    old_sub_sig: bytes  # by ``ed_old_sub`` while it was valid
    revoked_sig: bytes  # by ``revoked`` before it was revoked
    revoked_sub_sig: bytes  # by ``revoked_sub`` before it was revoked
    sums: bytes  # what those signatures cover


def _sums_for(name: str, content: bytes) -> bytes:
    return f"{hashlib.sha256(content).hexdigest()}  {name}\n".encode()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    executable = require_tool("gpg")
    base = tmp_path_factory.mktemp("gpg")
    home = base / "home"
    home.mkdir(mode=0o700)
    gpg = Gpg(executable=executable, home=home)
    now = datetime.now(UTC).replace(microsecond=0)
    ten_days_ago = now - timedelta(days=10)
    try:
        ed = gpg.new_key("Release Ed <ed@example.org>", at=now - timedelta(days=20))
        gpg.run("--quick-add-key", ed, "ed25519", "sign", "never")
        gpg.run("--quick-add-key", ed, "ed25519", "sign", "1d", at=ten_days_ago)
        _, ed_sub, ed_old_sub = gpg.fingerprints("ed@example.org")
        rsa = gpg.new_key("Release RSA <rsa@example.org>", "rsa3072")
        stranger = gpg.new_key("Stranger <stranger@example.net>")
        expired = gpg.new_key("Expired <expired@example.org>", expiry="1d", at=ten_days_ago)
        revoked = gpg.new_key("Revoked <revoked@example.org>")

        sums = base / "SHA256SUMS.fixed"
        sums.write_bytes(_sums_for("tool", CONTENT))
        half_day_later = ten_days_ago + timedelta(hours=12)
        expired_sig = gpg.detach_sign(
            sums, expired, base / "expired.asc", at=half_day_later
        ).read_bytes()
        old_sub_sig = gpg.detach_sign(
            sums, ed_old_sub, base / "old-sub.asc", at=half_day_later
        ).read_bytes()
        revoked_sig = gpg.detach_sign(sums, revoked, base / "revoked.asc").read_bytes()
        revocation = (home / "openpgp-revocs.d" / f"{revoked.upper()}.rev").read_text()
        stripped = base / "revocation.asc"
        stripped.write_text(revocation.replace(":-----BEGIN", "-----BEGIN"))
        gpg.run("--import", str(stripped))

        sub_revoked = gpg.new_key("Subkey Revoked <subrev@example.org>")
        gpg.run("--quick-add-key", sub_revoked, "ed25519", "sign", "never")
        revoked_sub = gpg.fingerprints("subrev@example.org")[1]
        revoked_sub_sig = gpg.detach_sign(sums, revoked_sub, base / "rev-sub.asc").read_bytes()
        # key 1, revoke it, confirm, reason 0 (none), empty description, confirm, save.
        gpg.run("--edit-key", sub_revoked, commands=b"key 1\nrevkey\ny\n0\n\ny\nsave\n")

        keyring = base / "all-keys.asc"
        keyring.write_bytes(gpg.export())
        yield World(
            gpg=gpg,
            now=now,
            ed=ed,
            ed_sub=ed_sub,
            ed_old_sub=ed_old_sub,
            rsa=rsa,
            stranger=stranger,
            expired=expired,
            revoked=revoked,
            sub_revoked=sub_revoked,
            revoked_sub=revoked_sub,
            keyring=keyring,
            expired_sig=expired_sig,
            old_sub_sig=old_sub_sig,
            revoked_sig=revoked_sig,
            revoked_sub_sig=revoked_sub_sig,
            sums=sums.read_bytes(),
        )
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf is not None:
            subprocess.run(
                [gpgconf, "--homedir", str(home), "--kill", "gpg-agent"],
                capture_output=True,
                timeout=30,
                check=False,
            )


@dataclass(frozen=True)
class Files:
    binary: Path
    sums: Path
    sig: Path


def release(
    world: World,
    directory: Path,
    signer: str | None,
    *,
    sums: bytes | None = None,
    signature: bytes | None = None,
    armor: bool = True,
    **sign_options: object,
) -> Files:
    binary = directory / "tool"
    binary.write_bytes(CONTENT)
    sums_path = directory / "SHA256SUMS"
    sums_path.write_bytes(_sums_for("tool", CONTENT) if sums is None else sums)
    sig_path = directory / ("SHA256SUMS.asc" if armor else "SHA256SUMS.sig")
    if signature is not None:
        sig_path.write_bytes(signature)
    else:
        assert signer is not None
        world.gpg.detach_sign(sums_path, signer, sig_path, armor=armor, **sign_options)  # type: ignore[arg-type]
    return Files(binary=binary, sums=sums_path, sig=sig_path)


def check(files: Files, pins: list[str], keyring: Path | Keyring) -> VerifiedBinary:
    return verify_binary(
        files.binary, sums=files.sums, signature=files.sig, keyring=keyring, pins=pins
    )


def refusal(files: Files, pins: list[str], keyring: Path | Keyring) -> LauncherError:
    with pytest.raises(LauncherError) as caught:
        check(files, pins, keyring)
    error = caught.value
    for noise in NOISE:
        assert noise not in f"{error} {error.detail}"
    return error


# --------------------------------------------------------------------------------- accepted


def test_ed25519_primary_key_signature_is_accepted(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed)
    proof = check(files, [world.ed.upper()], world.keyring)
    assert proof.signer_fingerprint == world.ed
    assert proof.signing_key_fingerprint == world.ed
    assert proof.size == len(CONTENT)
    assert abs(proof.signature_created - datetime.now(UTC)) < timedelta(minutes=5)


def test_rsa3072_binary_signature_is_accepted(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.rsa, armor=False)
    proof = check(files, [world.rsa], world.keyring)
    assert proof.signer_fingerprint == world.rsa


def test_subkey_signature_counts_for_its_pinned_primary(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed_sub)
    proof = check(files, [world.ed], world.keyring)
    assert proof.signer_fingerprint == world.ed
    assert proof.signing_key_fingerprint == world.ed_sub


def test_binary_keyring_from_gpg_export_works(world: World, tmp_path: Path) -> None:
    keyring = tmp_path / "keys.gpg"
    keyring.write_bytes(world.gpg.export(world.rsa, world.ed, armor=False))
    files = release(world, tmp_path, world.rsa)
    assert check(files, [world.rsa], keyring).signer_fingerprint == world.rsa


# --------------------------------------------------------------------------------- refused


def test_tampered_file_is_a_hash_mismatch(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed)
    files.binary.write_bytes(CONTENT[:-1] + b"!")
    assert refusal(files, [world.ed], world.keyring).reason == "binary_hash_mismatch"


def test_tampered_sums_file_is_signature_invalid(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed)
    files.sums.write_bytes(files.sums.read_bytes().replace(b"tool", b"toop"))
    assert refusal(files, [world.ed], world.keyring).reason == "signature_invalid"


def test_signature_by_an_unpinned_key_in_the_keyring_is_refused(
    world: World, tmp_path: Path
) -> None:
    files = release(world, tmp_path, world.stranger)
    error = refusal(files, [world.ed], world.keyring)
    assert isinstance(error, UntrustedInputError)
    assert error.reason == "signing_key_not_pinned"
    assert world.stranger in error.message


def test_pinned_key_present_but_signature_by_another_key(world: World, tmp_path: Path) -> None:
    only_ed = tmp_path / "ed.asc"
    only_ed.write_bytes(world.gpg.export(world.ed))
    files = release(world, tmp_path, world.stranger)
    assert refusal(files, [world.ed], only_ed).reason == "signing_key_not_pinned"


def test_backdated_signature_from_an_expired_key_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, None, sums=world.sums, signature=world.expired_sig)
    # pysequoia alone accepts it: it judges the key at the signature's claimed time.
    cert = Keyring.from_file(world.keyring)
    expired_cert = next(k.cert for k in cert.keys if k.fingerprint == world.expired)
    accepted = pysequoia.verify(
        bytes=world.sums,
        store=lambda _ids: [expired_cert],
        signature=pysequoia.Sig.from_bytes(world.expired_sig),
    )
    assert accepted.valid_sigs
    assert refusal(files, [world.expired], world.keyring).reason == "signing_key_expired"


def test_backdated_signature_from_an_expired_subkey_is_refused(
    world: World, tmp_path: Path
) -> None:
    files = release(world, tmp_path, None, sums=world.sums, signature=world.old_sub_sig)
    error = refusal(files, [world.ed], world.keyring)
    assert error.reason == "signing_key_expired"
    assert world.ed_old_sub in error.message


def test_revoked_key_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, None, sums=world.sums, signature=world.revoked_sig)
    assert refusal(files, [world.revoked], world.keyring).reason == "signing_key_revoked"


def test_signature_by_a_revoked_subkey_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, None, sums=world.sums, signature=world.revoked_sub_sig)
    error = refusal(files, [world.sub_revoked], world.keyring)
    assert error.reason == "signing_key_revoked"
    assert world.revoked_sub in error.message


def test_sha1_signature_is_refused(world: World, tmp_path: Path) -> None:
    # gpg 2.2 still makes SHA-1 signatures when asked.
    files = release(world, tmp_path, world.ed, digest="SHA1")
    error = refusal(files, [world.ed], world.keyring)
    assert error.reason == "signature_weak_hash"
    assert "SHA-1" in error.message


def test_signature_dated_before_the_key_existed_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed, at=world.now - timedelta(days=30), conflict_ok=True)
    error = refusal(files, [world.ed], world.keyring)
    assert error.reason == "signing_key_not_valid_at_signing_time"


def test_signature_from_the_future_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed, at=world.now + timedelta(days=2))
    assert refusal(files, [world.ed], world.keyring).reason == "signature_created_in_future"


def test_missing_entry_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed, sums=_sums_for("other-tool", CONTENT))
    assert refusal(files, [world.ed], world.keyring).reason == "sums_entry_missing"


def test_duplicate_entries_are_refused_even_when_identical(world: World, tmp_path: Path) -> None:
    line = _sums_for("tool", CONTENT)
    files = release(world, tmp_path, world.ed, sums=line + line)
    assert refusal(files, [world.ed], world.keyring).reason == "sums_entry_duplicate"


def test_garbage_signature_file_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, None, signature=os.urandom(300))
    assert refusal(files, [world.ed], world.keyring).reason == "signature_malformed"


def test_keyring_with_no_pinned_key_is_a_configuration_error(world: World, tmp_path: Path) -> None:
    stranger_only = tmp_path / "stranger.asc"
    stranger_only.write_bytes(world.gpg.export(world.stranger))
    files = release(world, tmp_path, world.stranger)
    error = refusal(files, [world.ed], stranger_only)
    assert isinstance(error, ConfigurationError)
    assert error.reason == "keyring_has_no_pinned_key"


def test_no_pins_at_all_is_refused(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed)
    error = refusal(files, [], world.keyring)
    assert isinstance(error, ConfigurationError)
    assert error.reason == "no_pinned_keys"


# ------------------------------------------------------------------------------ CLI, for real


def hardened_launcher(*args: str, rust_backtrace: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HL_", "SPACELIFT_"))}
    if rust_backtrace:
        env["RUST_BACKTRACE"] = "1"
        env["RUST_LIB_BACKTRACE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "hardened_launcher", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def cli_args(files: Files, world: World, *pins: str) -> list[str]:
    args = [
        "verify-binary",
        str(files.binary),
        "--sums",
        str(files.sums),
        "--sig",
        str(files.sig),
        "--keyring",
        str(world.keyring),
    ]
    for pin in pins:
        args += ["--fingerprint", pin]
    return args


def test_cli_success_exits_zero_with_one_line(world: World, tmp_path: Path) -> None:
    files = release(world, tmp_path, world.ed)
    spaced = " ".join(world.ed[i : i + 4].upper() for i in range(0, 40, 4))
    result = hardened_launcher(*cli_args(files, world, spaced))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("verified tool: sha256 ")
    assert world.ed in result.stdout


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize(
    ("case", "expected_code"),
    [
        ("garbage_signature", EXIT_UNTRUSTED_INPUT),
        ("tampered_sums", EXIT_UNTRUSTED_INPUT),
        ("garbage_keyring", EXIT_CONFIGURATION),
        ("no_pins", EXIT_CONFIGURATION),
    ],
)
def test_cli_failures_are_one_clean_line_even_with_rust_backtrace(
    world: World, tmp_path: Path, case: str, expected_code: int, verbose: bool
) -> None:
    files = release(world, tmp_path, world.ed)
    args = cli_args(files, world, world.ed)
    if case == "garbage_signature":
        files.sig.write_bytes(b"-----BEGIN PGP SIGNATURE-----\n\ngarbage\n")
    elif case == "tampered_sums":
        files.sums.write_bytes(files.sums.read_bytes().upper())
    elif case == "garbage_keyring":
        bad = tmp_path / "bad.asc"
        bad.write_bytes(os.urandom(200))
        args[args.index("--keyring") + 1] = str(bad)
    else:
        args = args[: args.index("--fingerprint")]
    result = hardened_launcher(*(["-v"] if verbose else []), *args)
    assert result.returncode == expected_code
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 1
    if verbose:
        # -v adds the detail, the reason and debug logs: each one line with a known prefix.
        assert all(line.startswith(("error: ", "detail: ", "reason: ", "INFO ")) for line in lines)
    else:
        assert len(lines) == 1
    for noise in NOISE:
        assert noise not in result.stderr
