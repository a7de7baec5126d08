"""``hardened-launcher exec SPEC.yaml``: one run spec, locally, through binaries → policy →
egress → execute.

For users testing images and policies before they deploy: the same gates as the daemon, the
redacted output streamed to the terminal (and optionally to a log file). With
``HL_EGRESS_POLICY`` set the run gets its own network and egress proxy on the local Docker
(root is needed for the host firewall rules).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "exec",
        help="run one run spec locally through the binaries, policy and execute gates",
        description="Run SPEC (YAML, see docs/runspec.md) in a hardened container on the local "
        "Docker, streaming the redacted output. The worker program and every binary the spec "
        "asks for must be signed releases in --releases, verified against "
        "HL_RELEASE_KEY_FINGERPRINTS.",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.yaml", help="the run spec")
    parser.add_argument(
        "--releases",
        type=Path,
        required=True,
        help="directory of signed releases: <dir>/<name>/<version>/{<name>,SHA256SUMS,"
        "SHA256SUMS.sig}",
    )
    parser.add_argument(
        "--keyring", type=Path, help="OpenPGP public keys (default: HL_RELEASE_KEYRING)"
    )
    parser.add_argument("--log", type=Path, help="also write the redacted output to this new file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, never when the parser is built (docker, boto3, requests).
    from hardened_launcher.cli.exec_run import run as run_exec  # noqa: PLC0415

    return run_exec(args)
