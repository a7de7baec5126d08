"""A small, bounded client of the Docker Engine API over dockerd's unix socket (stdlib only).

- :mod:`.connection`: the endpoint (``DOCKER_HOST``), HTTP with one deadline and a body bound,
  the attach hijack;
- :mod:`.frames`: the attach stream's demultiplexer (a pure state machine);
- :mod:`.client`: the typed calls the launcher makes; :mod:`.models`: what they return;
- :mod:`.errors`: one error class per fault, inside the project's hierarchy.
"""

from __future__ import annotations

from hardened_launcher.docker_api.client import DEFAULT_TIMEOUT_SECONDS, DockerClient
from hardened_launcher.docker_api.connection import API_VERSION, Endpoint, Hijacked
from hardened_launcher.docker_api.errors import (
    DockerConnectionError,
    DockerError,
    DockerHostError,
    DockerProtocolError,
    DockerStatusError,
    DockerTimeoutError,
    ImageNotFoundError,
    NotFoundError,
)
from hardened_launcher.docker_api.frames import FrameDemux, FrameError

__all__ = [
    "API_VERSION",
    "DEFAULT_TIMEOUT_SECONDS",
    "DockerClient",
    "DockerConnectionError",
    "DockerError",
    "DockerHostError",
    "DockerProtocolError",
    "DockerStatusError",
    "DockerTimeoutError",
    "Endpoint",
    "FrameDemux",
    "FrameError",
    "Hijacked",
    "ImageNotFoundError",
    "NotFoundError",
]
