"""``hardened-launcher doctor``: run every start-up check and print a table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "doctor",
        help="run every start-up check (settings, key, token, certificate, Docker, policy)",
        description="Runs every start-up check and prints check, result and how to fix. "
        "Exits non-zero if any check fails.",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(handler=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    # Imported when the command runs: the checks load the pipeline and the Docker client.
    from hardened_launcher.doctor import exit_code_for, render_table, run_checks  # noqa: PLC0415

    results = run_checks()
    if args.format == "json":
        payload = [
            {"check": r.name, "result": r.status.value, "detail": r.summary, "fix": r.fix}
            for r in results
        ]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        sys.stdout.write(render_table(results) + "\n")
    return exit_code_for(results)
