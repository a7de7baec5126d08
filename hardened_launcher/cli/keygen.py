"""CLI command: ``keygen`` — make the pool private key and the CSR for the control plane."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from hardened_launcher.identity.csr import DEFAULT_SUBJECT, parse_subject
from hardened_launcher.identity.keyfiles import generate_key_and_csr

DEFAULT_KEY_PATH = "spacelift.key"
DEFAULT_CSR_PATH = "spacelift.csr"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "keygen",
        help="generate the pool private key (RSA-4096) and its certificate signing request",
        description=(
            "Generate an RSA-4096 pool private key (unencrypted PKCS#8 PEM, as "
            "`openssl req -new -newkey rsa:4096 -nodes` makes) and a SHA-256 certificate signing "
            "request. Both files are created with mode 0600 and never overwritten unless --force "
            "is given (then they are replaced atomically)."
        ),
    )
    parser.add_argument(
        "--key-out",
        metavar="PATH",
        default=DEFAULT_KEY_PATH,
        help=f"where to write the private key (default: {DEFAULT_KEY_PATH})",
    )
    parser.add_argument(
        "--csr-out",
        metavar="PATH",
        default=DEFAULT_CSR_PATH,
        help=f"where to write the CSR (default: {DEFAULT_CSR_PATH})",
    )
    parser.add_argument(
        "--subject",
        metavar="DN",
        default=DEFAULT_SUBJECT,
        help=f"CSR subject, openssl style (default: {DEFAULT_SUBJECT}); the control plane "
        "replaces it with the pool id when it issues the certificate",
    )
    parser.add_argument("--force", action="store_true", help="replace existing files (atomically)")
    parser.set_defaults(handler=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    subject = parse_subject(str(args.subject))
    result = generate_key_and_csr(
        key_path=Path(args.key_out),
        csr_path=Path(args.csr_out),
        subject=subject,
        force=bool(args.force),
    )
    key = shlex.quote(str(result.key_path))
    csr = shlex.quote(str(result.csr_path))
    sys.stdout.write(
        f"Wrote the pool private key to {key} ({result.algorithm}, key id "
        f"sha256:{result.key_id.hex()}) and its certificate signing request to {csr}.\n"
        f"Give {csr} to the control plane when you create the worker pool; keep {key} secret.\n"
        "Set SPACELIFT_POOL_PRIVATE_KEY to the key in one-line base64:\n"
        f"  Linux: base64 -w 0 {key}\n"
        f"  macOS: base64 -b 0 -i {key}\n"
    )
    return 0
