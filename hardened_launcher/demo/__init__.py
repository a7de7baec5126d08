"""``hardened-launcher demo`` and the end-to-end tests' environment (docs/demo.md).

:class:`~hardened_launcher.demo.environment.Environment` makes a control plane, mosquitto,
SeaweedFS S3 and launchers in a temporary directory as child processes that are always stopped;
:mod:`~hardened_launcher.demo.stories` holds the four demo stories.
"""

from __future__ import annotations

from hardened_launcher.demo.environment import (
    DemoEnvironmentError,
    Environment,
    Missing,
    MissingComponentsError,
    find_prerequisites,
)

__all__ = [
    "DemoEnvironmentError",
    "Environment",
    "Missing",
    "MissingComponentsError",
    "find_prerequisites",
]
