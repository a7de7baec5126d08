"""Helpers shared by the binaries unit tests (no tests here): in-process keys, no gpg needed.

pysequoia's ``Tsk.generate`` makes a certify-only primary key with a signing subkey, so every
signature made here is a subkey signature; primary-key signatures are covered by the gpg
integration tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pysequoia import Cert, SignatureMode, Tsk, sign
from pysequoia.packet import PacketPile

from hardened_launcher.binaries.openpgp import Keyring

# A fixed offset in a v4 signature packet with a one-octet new-format length header:
# tag (1) + length (1) + version (1) + type (1) + public-key algorithm (1) -> hash algorithm.
_HASH_OCTET = 5
OPENPGP_SHA1 = 2
OPENPGP_MD5 = 1
_SIGNATURE_TAG = 2
_CREATION_TIME_SUBPACKET = 2


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a pytest test class

    tsk: Tsk
    cert: Cert

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint

    def sign(self, data: bytes, *, armor: bool = True) -> bytes:
        return sign(self.tsk.signer(), data, mode=SignatureMode.DETACHED, armor=armor)

    def armored(self) -> bytes:
        return str(self.cert).encode()


def make_key(
    name: str = "Release <release@example.org>", validity_seconds: int | None = None
) -> TestKey:
    tsk = Tsk.generate(name, validity_seconds=validity_seconds)
    return TestKey(tsk=tsk, cert=tsk.extract_certificate())


def revoked(key: TestKey) -> Cert:
    revocation = key.cert.revoke(key.tsk.certifier())
    packets = list(PacketPile.from_bytes(bytes(key.cert))) + list(
        PacketPile.from_bytes(bytes(revocation))
    )
    return Cert.from_packets(packets)


def keyring_of(*certs: Cert) -> Keyring:
    return Keyring.from_bytes(b"".join(bytes(cert) for cert in certs), source="test-keyring")


def with_hash_octet(binary_signature: bytes, algorithm: int) -> bytes:
    """The same signature packet claiming another hash algorithm (it no longer verifies)."""
    assert binary_signature[0] == 0xC2, "expected a new-format signature packet"
    assert binary_signature[1] < 192, "expected a one-octet length"
    assert binary_signature[2] == 4, "expected a v4 signature"
    data = bytearray(binary_signature)
    data[_HASH_OCTET] = algorithm
    return bytes(data)


def redated_signature(body: bytes, created: datetime) -> bytes:
    """A v4 signature packet (new format) from ``body`` with its hashed creation time replaced.

    The hash no longer matches, so the signature does not verify; only its dates matter.
    """
    assert body[0] == 4, "expected a v4 signature"
    data = bytearray(body)
    end = 6 + int.from_bytes(body[4:6], "big")
    at = 6
    while at < end:
        first = data[at]
        if first < 192:
            length, at = first, at + 1
        elif first < 255:
            length, at = ((first - 192) << 8) + data[at + 1] + 192, at + 2
        else:
            length, at = int.from_bytes(data[at + 1 : at + 5], "big"), at + 5
        if data[at] & 0x7F == _CREATION_TIME_SUBPACKET:
            data[at + 1 : at + 5] = int(created.timestamp()).to_bytes(4, "big")
            return _new_format_packet(_SIGNATURE_TAG, bytes(data))
        at += length
    raise AssertionError("the signature has no hashed creation time")


def _new_format_packet(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 192:
        header = bytes([size])
    elif size < 8384:
        header = bytes([((size - 192) >> 8) + 192, (size - 192) & 0xFF])
    else:
        header = b"\xff" + size.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + header + body


def sums_line(name: str, content: bytes) -> bytes:
    return f"{hashlib.sha256(content).hexdigest()}  {name}\n".encode()


@dataclass(frozen=True)
class Release:
    """A binary, its SHA256SUMS, a detached signature and a keyring, written to a directory."""

    binary: Path
    sums: Path
    signature: Path
    keyring: Path
    key: TestKey


def write_release(
    directory: Path,
    key: TestKey,
    *,
    name: str = "tool",
    content: bytes = b"\x7fELF pretend binary\n",
    extra_sums: bytes = b"",
    armor: bool = True,
) -> Release:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / name
    binary.write_bytes(content)
    sums = directory / "SHA256SUMS"
    sums_bytes = sums_line(name, content) + extra_sums
    sums.write_bytes(sums_bytes)
    signature = directory / ("SHA256SUMS.asc" if armor else "SHA256SUMS.sig")
    signature.write_bytes(key.sign(sums_bytes, armor=armor))
    keyring = directory / "keys.asc"
    keyring.write_bytes(key.armored())
    return Release(binary=binary, sums=sums, signature=signature, keyring=keyring, key=key)


def now_plus(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**delta)
