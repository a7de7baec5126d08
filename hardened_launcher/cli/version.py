"""``--version``: the version, the commit and the libraries behind the gates (lazily computed)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hardened_launcher.buildinfo import version_report


class VersionAction(argparse.Action):
    """Prints :func:`version_report` and exits 0, like argparse's own ``version`` action."""

    def __init__(self, option_strings: Sequence[str], dest: str) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show the version, the commit and the versions of the deciding libraries",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,  # noqa: ARG002  # argparse's Action signature
        values: str | Sequence[Any] | None,  # noqa: ARG002
        option_string: str | None = None,  # noqa: ARG002
    ) -> None:
        sys.stdout.write(version_report() + "\n")
        parser.exit(0)
