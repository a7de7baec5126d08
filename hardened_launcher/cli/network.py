"""``hardened-launcher network requirements``: the launcher's outbound allowlist, computed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "network",
        help="network facts of this launcher (firewall requirements)",
        description="Network facts computed from the current settings.",
    )
    commands = parser.add_subparsers(dest="network_command", metavar="SUBCOMMAND")
    commands.required = True
    requirements = commands.add_parser(
        "requirements",
        help="every endpoint the launcher must reach, as a firewall allowlist",
        description="Prints every endpoint the launcher's host must reach (broker, control "
        "plane, private VCS, registry, and the run egress allowlist), from the settings.",
    )
    requirements.add_argument("--format", choices=("text", "json"), default="text")
    requirements.set_defaults(handler=_requirements)


def _requirements(args: argparse.Namespace) -> int:
    from hardened_launcher.egress.requirements import (  # noqa: PLC0415 - only when needed
        as_json,
        network_requirements,
        render_text,
    )
    from hardened_launcher.settings import load_settings  # noqa: PLC0415

    endpoints = network_requirements(load_settings())
    if args.format == "json":
        sys.stdout.write(json.dumps({"endpoints": as_json(endpoints)}, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(endpoints) + "\n")
    return 0
