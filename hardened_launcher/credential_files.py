"""The pool token and key from files: ``SPACELIFT_*_FILE`` variables and systemd credentials.

An operator can keep the two seed secrets out of the process environment (which other processes
of the same user can read in ``/proc/PID/environ`` and which crash reporters copy):

- ``SPACELIFT_TOKEN_FILE`` / ``SPACELIFT_POOL_PRIVATE_KEY_FILE``: absolute paths of files that
  hold the value (Docker secrets, a mounted volume);
- systemd credentials: with ``LoadCredential=spacelift-token:/etc/…`` the value is read from
  ``$CREDENTIALS_DIRECTORY/spacelift-token`` (``spacelift-pool-private-key`` for the key).

The variable itself wins; setting it and its ``_FILE`` variant together is refused (which one is
meant cannot be known). A file holds the same text as the variable (base64), except that the
key file may also hold the PEM itself, as ``keygen`` writes it; it is then base64-encoded here so
that the settings keep one form. Files are bounded, must be regular files, and must not be
readable by others nor writable by group or others. The value is never part of a message.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CREDENTIALS_DIRECTORY_VARIABLE: Final = "CREDENTIALS_DIRECTORY"
FILE_SUFFIX: Final = "_FILE"
CREDENTIAL_NAMES: Final[Mapping[str, str]] = {
    "SPACELIFT_TOKEN": "spacelift-token",
    "SPACELIFT_POOL_PRIVATE_KEY": "spacelift-pool-private-key",
}
MAX_CREDENTIAL_FILE_BYTES: Final = 64 * 1024
PEM_START: Final = "-----BEGIN "


class CredentialFileError(Exception):
    """A credential file that cannot be used; ``label`` names where it came from."""

    def __init__(
        self, label: str, why: str, expected: str, reason: str = "credential_file_invalid"
    ) -> None:
        super().__init__(f"{label}: {why}")
        self.label = label
        self.why = why
        self.expected = expected
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CredentialText:
    """A seed secret read from a file, and where it came from (for messages)."""

    label: str
    text: str


def file_variable(name: str) -> str:
    return f"{name}{FILE_SUFFIX}"


def _present(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value.strip() if value is not None and value.strip() else None


def credential_source(environ: Mapping[str, str], name: str) -> tuple[str, Path] | None:
    """(label, path) of the file that holds ``name``'s value, when one is configured."""
    via_file = _present(environ, file_variable(name))
    if via_file is not None:
        path = Path(via_file)
        if not path.is_absolute():
            return None  # the settings report the variable itself (an absolute path expected)
        return file_variable(name), path
    directory = _present(environ, CREDENTIALS_DIRECTORY_VARIABLE)
    credential = CREDENTIAL_NAMES.get(name)
    if directory is None or credential is None:
        return None
    path = Path(directory) / credential
    if not Path(directory).is_absolute() or not path.exists():
        return None
    return f"systemd credential {credential}", path


def read_credential(label: str, path: Path, *, pem_to_base64: bool = False) -> str:
    """The stripped text of a credential file, after its checks (see the module docstring)."""
    expected = (
        f"a regular file of at most {MAX_CREDENTIAL_FILE_BYTES // 1024} KiB, mode 0600 or 0640 "
        "(not readable by others, writable only by its owner)"
    )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise CredentialFileError(
            label,
            f"{path} cannot be opened ({exc.strerror})",
            expected,
            "credential_file_unreadable",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CredentialFileError(label, f"{path} is not a regular file", expected)
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
            raise CredentialFileError(
                label,
                f"{path} has mode {mode:04o}, so other users could read or replace it; run "
                f"`chmod 0600 {path}`",
                expected,
                "credential_file_exposed",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CREDENTIAL_FILE_BYTES:
            chunk = os.read(fd, MAX_CREDENTIAL_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise CredentialFileError(
            label, f"{path} cannot be read ({exc.strerror})", expected, "credential_file_unreadable"
        ) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_CREDENTIAL_FILE_BYTES:
        raise CredentialFileError(
            label, f"{path} is larger than {MAX_CREDENTIAL_FILE_BYTES // 1024} KiB", expected
        )
    try:
        # ASCII white space only (bytes.strip): str.strip would also drop the separators
        # \x1c-\x1f, so a value with a control byte at an end was altered instead of refused.
        text = data.strip().decode("ascii")
    except UnicodeDecodeError:
        raise CredentialFileError(
            label,
            f"{path} holds bytes that are not ASCII text",
            "base64 text (or, for the key, a PEM file)",
            "credential_file_not_text",
        ) from None
    if not text:
        raise CredentialFileError(
            label,
            f"{path} is empty",
            "the value, as the variable would hold it",
            "credential_file_empty",
        )
    if pem_to_base64 and text.startswith(PEM_START):
        # The key as keygen/openssl write it: the settings hold its base64 form.
        return base64.b64encode(text.encode("ascii") + b"\n").decode("ascii")
    return text


def credential_text(environ: Mapping[str, str], name: str) -> CredentialText | None:
    """``name``'s value from its ``_FILE`` variable or systemd credential; ``None`` if neither."""
    source = credential_source(environ, name)
    if source is None:
        return None
    label, path = source
    pem = name == "SPACELIFT_POOL_PRIVATE_KEY"
    return CredentialText(label=label, text=read_credential(label, path, pem_to_base64=pem))


def credential_text_or_empty(environ: Mapping[str, str], name: str) -> str:
    """For the process redactor, which must work even when the settings are wrong: any problem
    gives ``""`` here and is reported by the settings."""
    try:
        found = credential_text(environ, name)
    except CredentialFileError:
        return ""
    return found.text if found is not None else ""
