"""The audit signing key (Ed25519) and the keyed-hash key, both kept in the state directory.

Both are created at first start, 0600, owned by the launcher's user, and refused when group- or
world-accessible. ``key_id`` is the hex SHA-256 of the raw 32-byte public key; auditors pin the
public key printed by ``hardened-launcher audit key``.

Keyed hashes: where a sensitive value must be correlatable across records (a token's subject, an
address) a record stores ``hmac-sha256:<hex>`` of it under the keyed-hash key instead of the
value. To look a value up, compute the same keyed hash on the launcher's host with
``hardened-launcher audit hash`` (value on stdin) and search for the result.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.bounded_input import describe_path, read_bounded
from hardened_launcher.errors import ConfigurationError, UntrustedInputError
from hardened_launcher.private_files import publish_exclusive
from hardened_launcher.secrets import Secret

SIGNING_KEY_FILE: Final = "audit-signing.key"
HMAC_KEY_FILE: Final = "audit-hmac.key"
HMAC_KEY_BYTES: Final = 32
MAX_KEY_FILE_BYTES: Final = 16 * 1024
KEYED_HASH_PREFIX: Final = "hmac-sha256:"


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: ed25519.Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _read_private(path: Path, what: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what} {path}: {exc.strerror}",
            hint="check HL_STATE_DIR and the file's owner",
            reason="audit_key_unreadable",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(
                f"the {what} {path} is not a regular file", reason="audit_key_unreadable"
            )
        if info.st_mode & 0o077:
            raise ConfigurationError(
                f"the {what} {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})",
                hint=f"chmod 600 {path}",
                reason="audit_key_permissions",
            )
        if info.st_uid != os.geteuid():
            raise ConfigurationError(
                f"the {what} {path} is not owned by the launcher's user",
                hint="chown it to the user the launcher runs as",
                reason="audit_key_permissions",
            )
        return os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)


def _ensure(state_dir: Path, name: str, make: bytes) -> bytes:
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = state_dir / name
        if not path.exists():
            # Published complete or not at all; a concurrent first start keeps the first key.
            with contextlib.suppress(FileExistsError):
                publish_exclusive(path, make)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the audit key in {state_dir}: {exc.strerror}",
            hint="check that HL_STATE_DIR is writable by the launcher's user",
            reason="audit_key_unwritable",
        ) from None
    return _read_private(path, "audit key")


def load_or_create_signing_key(state_dir: Path) -> ed25519.Ed25519PrivateKey:
    """The launcher's audit signing key; created (0600) on first use."""
    fresh = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    data = _ensure(state_dir, SIGNING_KEY_FILE, fresh)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(
            f"{state_dir / SIGNING_KEY_FILE} is not an unencrypted Ed25519 PEM private key",
            hint="restore it from backup; a new key would not verify the existing log",
            reason="audit_key_invalid",
        )
    return key


def load_existing_signing_key(state_dir: Path) -> ed25519.Ed25519PrivateKey | None:
    """The signing key if it exists (never creates one)."""
    if not (state_dir / SIGNING_KEY_FILE).exists():
        return None
    return load_or_create_signing_key(state_dir)


def load_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    """An auditor's pinned public key: the PEM printed by ``audit key``."""
    data = bytes(
        read_bounded(
            path,
            max_bytes=MAX_KEY_FILE_BYTES,
            what="public key",
            reason="audit_key_unreadable",
        )
    )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UntrustedInputError(
            f"{describe_path(path)} is not an Ed25519 PEM public key",
            hint="use the output of `hardened-launcher audit key`",
            reason="audit_key_invalid",
        )
    return key


def load_or_create_hmac_key(state_dir: Path) -> Secret:
    """The keyed-hash key (32 random bytes); created (0600) on first use."""
    data = _ensure(state_dir, HMAC_KEY_FILE, secrets.token_bytes(HMAC_KEY_BYTES))
    if len(data) != HMAC_KEY_BYTES:
        raise ConfigurationError(
            f"{state_dir / HMAC_KEY_FILE} does not hold {HMAC_KEY_BYTES} bytes",
            reason="audit_key_invalid",
        )
    return Secret(data)


def keyed_hash(key: Secret, value: str | bytes) -> str:
    """``hmac-sha256:<hex>`` of ``value`` (UTF-8 for text) under ``key``."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    with key.view() as k:
        digest = hmac.new(bytes(k), data, hashlib.sha256).hexdigest()
    return KEYED_HASH_PREFIX + digest
