"""Errors of the Docker Engine API client, inside the project's one hierarchy.

Split by whose fault they are: the endpoint's address is configuration
(:class:`DockerHostError`); a daemon that cannot be reached, is too slow or answers with
something that is not the Engine API is transport (:class:`DockerConnectionError`,
:class:`DockerTimeoutError`, :class:`DockerProtocolError`); a well-formed refusal carries its
HTTP status (:class:`DockerStatusError` and its 404 forms). Callers translate these to their
own errors at their boundary (:func:`hardened_launcher.executor.runner.translate_docker_error`);
one that escapes still prints one line and exits with its code, never a traceback.

Messages name the request (method and path), the status and the daemon's own short message,
never a request body (a create body holds no secret, but the attach stream's stdin does).
"""

from __future__ import annotations

from hardened_launcher.errors import ConfigurationError, RetryableError

__all__ = [
    "DockerConnectionError",
    "DockerError",
    "DockerHostError",
    "DockerProtocolError",
    "DockerStatusError",
    "DockerTimeoutError",
    "ImageNotFoundError",
    "NotFoundError",
]


class DockerHostError(ConfigurationError):
    """``DOCKER_HOST`` names an endpoint this client does not speak (only ``unix://``)."""

    default_reason = "docker_host_unsupported"


_HINT = "check that dockerd is running and that the launcher may use its socket (DOCKER_HOST)"


class DockerError(RetryableError):
    """The Docker daemon did not answer, or answered with an error."""

    default_reason = "docker_unavailable"

    def __init__(self, message: str, *, hint: str = _HINT, detail: str = "") -> None:
        super().__init__(message, hint=hint, detail=detail)


class DockerConnectionError(DockerError):
    """The daemon's socket is missing, refused the connection, or closed it early."""


class DockerTimeoutError(DockerConnectionError):
    """The daemon did not complete the request within its time limit."""


class DockerProtocolError(DockerError):
    """The answer is not the Engine API: malformed, truncated, oversized, or not JSON."""


class DockerStatusError(DockerError):
    """The daemon refused the request: ``status`` is its HTTP status (400 or more)."""

    def __init__(self, message: str, *, status: int, detail: str = "") -> None:
        super().__init__(message, detail=detail)
        self.status = status


class NotFoundError(DockerStatusError):
    """404: no such container, image or network."""


class ImageNotFoundError(NotFoundError):
    """404 for the image a request named (create, image inspect)."""
