"""Finding PEM blocks (RFC 7468) in a buffer without copying their bodies.

Only the labels and the offsets are read here; the bodies are handed to ``cryptography`` by the
caller. This lets the key loader and the token parser say *what* they were given (a CSR, a
certificate, a public key, an encrypted key) before any parser runs, and tell a truncated block
(a BEGIN line with no END line) from a body that does not parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

# Labels are upper-case words separated by single spaces (RFC 7468 §3, relaxed to digits too).
_BOUNDARY = re.compile(rb"-----(BEGIN|END) ([A-Z0-9]+(?: [A-Z0-9]+)*)-----")

_BEGIN = re.compile(rb"-----BEGIN ")

PRIVATE_KEY_LABELS = frozenset({"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"})
ENCRYPTED_KEY_LABEL = "ENCRYPTED PRIVATE KEY"
CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
CSR_LABELS = frozenset({"CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"})
PUBLIC_KEY_LABELS = frozenset({"PUBLIC KEY", "RSA PUBLIC KEY"})


#: What ``cryptography`` raises for a malformed certificate or CSR, at load time or when a
#: lazily parsed part (extensions, names, key) is first read. Several are not ValueErrors
#: (found by fuzzing: ``InvalidVersion`` for a certificate whose version field is 30).
X509_PARSE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


@dataclass(frozen=True, kw_only=True)
class PemBlock:
    """One block: its label and where it sits in the buffer (``end`` is after the END line)."""

    label: str
    start: int
    end: int
    complete: bool


def find_blocks(data: bytes | bytearray | memoryview) -> list[PemBlock]:
    """Every BEGIN line in ``data`` with its matching END line, if there is one.

    A BEGIN with no END before the next BEGIN (or the end of the data) gives an incomplete
    block. An END with no BEGIN is ignored. Never raises.
    """
    blocks: list[PemBlock] = []
    open_label: str | None = None
    open_start = 0
    for match in _BOUNDARY.finditer(data):
        kind = match.group(1)
        label = match.group(2).decode("ascii")
        if kind == b"BEGIN":
            if open_label is not None:
                blocks.append(
                    PemBlock(label=open_label, start=open_start, end=match.start(), complete=False)
                )
            open_label, open_start = label, match.start()
        elif open_label is not None:
            blocks.append(
                PemBlock(
                    label=open_label,
                    start=open_start,
                    end=match.end(),
                    complete=label == open_label,
                )
            )
            open_label = None
    if open_label is not None:
        blocks.append(PemBlock(label=open_label, start=open_start, end=len(data), complete=False))
    return blocks


def has_begin_line(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` contains anything that looks like a PEM BEGIN line."""
    return _BEGIN.search(data) is not None
