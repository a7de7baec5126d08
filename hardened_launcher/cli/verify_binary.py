"""CLI command: ``verify-binary`` — gate 2 on one file, as an operator would run it.

``hardened-launcher verify-binary FILE --sums SHA256SUMS --sig SIG [--keyring KEYS]
[--fingerprint FPR ...] [--cache]``

Pins come from ``--fingerprint`` (repeatable) when given, else from ``HL_RELEASE_KEY_FINGERPRINTS``;
none at all is refused. The keys come from ``--keyring`` when given, else from
``HL_RELEASE_KEYRING``; neither is refused. Settings are loaded only when needed (no
``--fingerprint``, no ``--keyring``, or ``--cache``, whose root is ``<HL_CACHE_DIR>/binaries``).
Prints one line on success.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hardened_launcher.binaries.cache import VerifiedBinaryCache
from hardened_launcher.binaries.openpgp import normalize_pins
from hardened_launcher.binaries.verify import verify_binary
from hardened_launcher.errors import ConfigurationError
from hardened_launcher.settings import Settings, load_settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "verify-binary",
        help="verify a file against a signed SHA256SUMS file",
        description=(
            "Accept FILE only if SIG is a valid detached OpenPGP signature over SHA256SUMS by a "
            "pinned release key from KEYS, and FILE's SHA-256 matches its single entry there "
            "(looked up by FILE's base name)."
        ),
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the file to verify")
    parser.add_argument(
        "--sums", type=Path, required=True, metavar="SHA256SUMS", help="the sums file"
    )
    parser.add_argument(
        "--sig",
        type=Path,
        required=True,
        metavar="SIG",
        help="detached signature over the sums file (armored or binary)",
    )
    parser.add_argument(
        "--keyring",
        type=Path,
        metavar="KEYS",
        help="file with the release public key(s), e.g. from `gpg --export --armor`; "
        "default HL_RELEASE_KEYRING",
    )
    parser.add_argument(
        "--fingerprint",
        action="append",
        default=[],
        metavar="FPR",
        help="pinned primary key fingerprint (repeatable); default HL_RELEASE_KEY_FINGERPRINTS",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="also copy the verified file into the read-only cache (<HL_CACHE_DIR>/binaries)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded: list[Settings] = []

    def settings() -> Settings:
        if not loaded:
            loaded.append(load_settings())
        return loaded[0]

    fingerprints: list[str] = args.fingerprint
    pins = normalize_pins(fingerprints or settings().release_key_fingerprints)
    keyring: Path | None = args.keyring
    if keyring is None:
        keyring = settings().release_keyring
    if keyring is None:
        raise ConfigurationError(
            "no keyring was given, so the pinned release keys are unknown",
            hint="pass --keyring FILE or set HL_RELEASE_KEYRING=FILE, where FILE holds the "
            "release public key(s) (`gpg --export --armor FPR > FILE`)",
            reason="no_keyring",
        )
    proof = verify_binary(
        args.file,
        sums=args.sums,
        signature=args.sig,
        keyring=keyring,
        pins=pins,
    )
    where = ""
    if args.cache:
        proof = VerifiedBinaryCache.from_settings(settings()).admit(args.file, proof)
        where = f"; cached at {proof.path}"
    sys.stdout.write(
        f"verified {proof.name}: sha256 {proof.sha256}, {proof.size} bytes, signed by "
        f"{proof.signer_fingerprint} at {proof.signature_created.isoformat()}{where}\n"
    )
    return 0
