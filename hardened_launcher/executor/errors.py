"""Errors of gate 5 (execute), each a subclass of the project's one hierarchy with its own reason.

Messages name fields, paths and limits, never values: a run spec carries secrets.
"""

from __future__ import annotations

from hardened_launcher.errors import (
    ConfigurationError,
    InfrastructureError,
    RetryableError,
    UntrustedInputError,
)


class RunSpecError(UntrustedInputError):
    """The run spec (decrypted run state) is malformed, too large or has unknown fields."""

    default_reason = "runspec_invalid"


class MountRefusedError(ConfigurationError):
    """An extra mount would expose the host (Docker socket, /, /proc, the launcher's state…)."""

    default_reason = "mount_refused"


class ImageMissingError(InfrastructureError):
    """The run's image is not present on the Docker host and cannot be pulled."""

    default_reason = "image_missing"


class DockerUnavailableError(RetryableError):
    """The Docker daemon did not answer or failed a request."""

    default_reason = "docker_unavailable"


class ContainerRuntimeError(InfrastructureError):
    """Docker refused to create or start the run container (bad runtime, network, limits)."""

    default_reason = "container_start_failed"


class BinaryUnavailableError(ConfigurationError):
    """A binary the run asks for (or the worker program) is not in the release directory."""

    default_reason = "binary_missing"


class LimitRefusedError(UntrustedInputError):
    """The run spec asks for more (memory, CPUs, processes, time) than this launcher allows."""

    default_reason = "limits_refused"


class ImageUnsetError(ConfigurationError):
    """The run spec names no image and ``SPACELIFT_DEFAULT_RUNNER_IMAGE`` is not set."""

    default_reason = "image_unset"
