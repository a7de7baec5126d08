"""A signed worker release made on the spot: a fresh OpenPGP key (pysequoia) signs SHA256SUMS.

Layout, as the launcher reads it (``HL_RELEASE_DIR``)::

    <dir>/<name>/<version>/<name>  SHA256SUMS  SHA256SUMS.sig

plus the public key in ``<keyring>`` (``HL_RELEASE_KEYRING``) and its fingerprint
(``HL_RELEASE_KEY_FINGERPRINTS``). The secret key lives only in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from pysequoia import SignatureMode, Tsk, sign

from hardened_launcher import __version__
from hardened_launcher.executor.entrypoint import worker_script_path

WORKER_NAME = "hl-worker"


@dataclass(frozen=True, kw_only=True)
class SignedRelease:
    root: Path
    keyring: Path
    fingerprint: str


def make_release(
    root: Path, keyring: Path, *, extra: dict[str, bytes] | None = None
) -> SignedRelease:
    """Publish the shipped worker (and ``extra`` name → bytes, version 1.0) signed by a new key."""
    key = Tsk.generate("hardened-launcher demo release <release@demo.invalid>")
    cert = key.extract_certificate()

    def publish(name: str, version: str, data: bytes) -> None:
        directory = root / name / version
        directory.mkdir(parents=True, exist_ok=False)
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o755)
        sums = f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode()
        (directory / "SHA256SUMS").write_bytes(sums)
        (directory / "SHA256SUMS.sig").write_bytes(
            sign(key.signer(), sums, mode=SignatureMode.DETACHED, armor=True)
        )

    root.mkdir(parents=True, exist_ok=True)
    publish(WORKER_NAME, __version__, worker_script_path().read_bytes())
    for name, data in (extra or {}).items():
        publish(name, "1.0", data)
    keyring.parent.mkdir(parents=True, exist_ok=True)
    keyring.write_text(str(cert))
    keyring.chmod(0o644)
    return SignedRelease(root=root, keyring=keyring, fingerprint=cert.fingerprint)
