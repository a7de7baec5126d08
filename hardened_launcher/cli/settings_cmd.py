"""``hardened-launcher settings show|table``: the effective configuration and its documentation.

``show`` loads the settings exactly as the launcher does and prints every variable with its
effective value; secret variables appear only as ``set`` or ``unset``. Warnings (unknown
``SPACELIFT_*`` variables) go to standard error. When the settings are invalid, every problem is
printed on standard error, one per line, and the command exits with the configuration code.

``table`` prints the README's configuration table (Markdown), generated from the same registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hardened_launcher.bounded_input import read_bounded
from hardened_launcher.errors import EXIT_OK, ConfigurationError
from hardened_launcher.settings import (
    MAX_CONFIG_FILE_BYTES,
    SettingsError,
    effective_values,
    load_settings,
    markdown_table,
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "settings",
        help="show the effective settings, or print the table of every variable",
        description="Inspect the SPACELIFT_* and HL_* settings the launcher would use.",
    )
    actions = parser.add_subparsers(dest="settings_action", metavar="ACTION")
    actions.required = True

    show = actions.add_parser(
        "show",
        help="print every setting and its effective value (secrets only as set/unset)",
        description="Loads the settings from the environment (and the HL_ config file) as the "
        "launcher does, and prints each variable with its effective value.",
    )
    show.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=None,
        help="TOML file of HL_ settings (instead of HL_CONFIG_FILE)",
    )
    show.set_defaults(handler=_show)

    table = actions.add_parser(
        "table",
        help="print the Markdown table of every variable (as in the README)",
        description="Prints the configuration table that the README embeds.",
    )
    table.set_defaults(handler=_table)


def _show(args: argparse.Namespace) -> int:
    config: Path | None = args.config
    if config is not None:
        # A path typed on the command line is relative to where the operator stands.
        config = config.absolute()
        # A file named on the command line that cannot be read exits 66, as on every command
        # (the settings check still reports what is wrong inside it).
        read_bounded(
            config,
            max_bytes=MAX_CONFIG_FILE_BYTES,
            what="config file",
            too_large=ConfigurationError,
        )
    try:
        settings = load_settings(config_file=config)
    except SettingsError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"problem: {problem.text}\n")
        raise
    rows = effective_values(settings)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        sys.stdout.write(f"{name.ljust(width)}  {value}\n")
    for warning in settings.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    return EXIT_OK


def _table(_args: argparse.Namespace) -> int:
    sys.stdout.write(markdown_table())
    return EXIT_OK
