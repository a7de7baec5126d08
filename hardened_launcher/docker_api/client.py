"""The Docker Engine API calls the launcher makes, typed (see :mod:`.models`).

:class:`DockerClient` is small on purpose: the calls of the executor (create, attach, start,
stop, kill, wait, inspect, remove, list, the passwd probe's archive read), of ``doctor`` (ping,
version, info, network inspect) and of the egress gate (networks). Each call has a time limit
(the client's ``timeout_seconds``, plus the stop grace where the daemon waits it out) and a
bound on the answer's size; each answer's shape is checked before it is returned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from hardened_launcher.docker_api.connection import (
    MAX_BODY_BYTES,
    Endpoint,
    Hijacked,
    Response,
    hijack,
    quoted,
    request,
)
from hardened_launcher.docker_api.errors import (
    DockerProtocolError,
    DockerStatusError,
    ImageNotFoundError,
    NotFoundError,
)
from hardened_launcher.docker_api.models import (
    ContainerInspect,
    ContainerSummary,
    DaemonInfo,
    DaemonVersion,
    ImageInspect,
    NetworkInspect,
)

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "DockerClient"]

DEFAULT_TIMEOUT_SECONDS: Final = 60.0
#: Small answers (ping, ids, inspect of one object).
_SMALL_BYTES: Final = 1024 * 1024


class DockerClient:
    """One Docker daemon. Thread-safe: every call opens its own connection."""

    def __init__(
        self, endpoint: Endpoint, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.endpoint = endpoint
        self.timeout_seconds = timeout_seconds

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> DockerClient:
        """The daemon ``DOCKER_HOST`` names (``unix://`` only), else the default socket."""
        endpoint = Endpoint.from_environ(os.environ if environ is None else environ)
        return cls(endpoint, timeout_seconds=timeout_seconds)

    def __repr__(self) -> str:
        return f"DockerClient({self.endpoint.describe()!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        query: Mapping[str, str] | None = None,
        body: object = None,
        timeout: float | None = None,
        max_body_bytes: int = _SMALL_BYTES,
        not_found: type[NotFoundError] = NotFoundError,
    ) -> Response:
        answer = request(
            self.endpoint,
            method,
            path,
            timeout=self.timeout_seconds if timeout is None else timeout,
            query=query,
            body=body,
            max_body_bytes=max_body_bytes,
        )
        _check(answer, f"{method} {path}", ok, not_found)
        return answer

    def _object(self, answer: Response, what: str) -> dict[str, Any]:
        found = answer.json()
        if not isinstance(found, dict):
            raise DockerProtocolError(f"the Docker daemon's answer to {what} is not an object")
        return found

    def _objects(self, answer: Response, what: str) -> list[dict[str, Any]]:
        found = answer.json()
        if not isinstance(found, list) or not all(isinstance(i, dict) for i in found):
            raise DockerProtocolError(f"the Docker daemon's answer to {what} is not a list")
        return found

    def _id(self, answer: Response, what: str) -> str:
        found = self._object(answer, what).get("Id")
        if not isinstance(found, str) or not found:
            raise DockerProtocolError(f"the Docker daemon's answer to {what} has no Id")
        return found

    # -- the daemon ------------------------------------------------------------------------------
    def ping(self) -> bool:
        """True, or an error: the daemon answers ``OK``."""
        answer = self._call("GET", "/_ping", max_body_bytes=64)
        if answer.body.strip() != b"OK":
            raise DockerProtocolError("the Docker daemon's ping answer is not OK")
        return True

    def version(self) -> DaemonVersion:
        return cast(DaemonVersion, self._object(self._call("GET", "/version"), "version"))

    def info(self) -> DaemonInfo:
        answer = self._call("GET", "/info", max_body_bytes=4 * _SMALL_BYTES)
        return cast(DaemonInfo, self._object(answer, "info"))

    # -- containers ------------------------------------------------------------------------------
    def containers(self, *, labels: Sequence[str]) -> list[ContainerSummary]:
        """Every container (running or not) with all of ``labels`` (``key`` or ``key=value``)."""
        answer = self._call(
            "GET",
            "/containers/json",
            query={"all": "1", "filters": json.dumps({"label": list(labels)})},
            max_body_bytes=MAX_BODY_BYTES,
        )
        return cast(list[ContainerSummary], self._objects(answer, "list containers"))

    def create_container(self, body: Mapping[str, Any], *, name: str | None = None) -> str:
        """Create a container from an Engine API create body; its id."""
        answer = self._call(
            "POST",
            "/containers/create",
            ok=(201,),
            query=None if name is None else {"name": name},
            body=dict(body),
            not_found=ImageNotFoundError,
        )
        return self._id(answer, "create container")

    def attach(self, container_id: str) -> Hijacked:
        """stdin, stdout and stderr of ``container_id`` as one raw stream (attach before start:
        nothing is missed)."""
        path = f"/containers/{quoted(container_id)}/attach"
        answer = hijack(
            self.endpoint,
            path,
            timeout=self.timeout_seconds,
            query={"stdin": "1", "stdout": "1", "stderr": "1", "stream": "1"},
        )
        if isinstance(answer, Response):
            _check(answer, f"POST {path}", (), NotFoundError)
            raise DockerProtocolError(f"the Docker daemon did not upgrade POST {path}")
        return answer

    def start(self, container_id: str) -> None:
        self._call("POST", f"/containers/{quoted(container_id)}/start", ok=(204, 304))

    def stop(self, container_id: str, *, timeout: int) -> None:
        """SIGTERM (the image's stop signal), SIGKILL after ``timeout`` seconds."""
        self._call(
            "POST",
            f"/containers/{quoted(container_id)}/stop",
            ok=(204, 304),
            query={"t": str(timeout)},
            timeout=self.timeout_seconds + timeout,
        )

    def kill(self, container_id: str) -> None:
        self._call("POST", f"/containers/{quoted(container_id)}/kill", ok=(204,))

    def inspect_container(self, container_id: str) -> ContainerInspect:
        path = f"/containers/{quoted(container_id)}/json"
        return cast(ContainerInspect, self._object(self._call("GET", path), "inspect container"))

    def wait(self, container_id: str, *, timeout: float) -> int | None:
        """The container's exit status once it ends (within ``timeout`` seconds), None if the
        daemon reports none."""
        path = f"/containers/{quoted(container_id)}/wait"
        found = self._object(self._call("POST", path, timeout=timeout), "wait").get("StatusCode")
        return found if isinstance(found, int) and not isinstance(found, bool) else None

    def remove_container(self, container_id: str, *, force: bool = True) -> None:
        """Remove it and its anonymous volumes; :class:`NotFoundError` if it is gone."""
        self._call(
            "DELETE",
            f"/containers/{quoted(container_id)}",
            ok=(204,),
            query={"force": "1" if force else "0", "v": "1"},
        )

    def get_archive(self, container_id: str, path: str, *, max_bytes: int) -> bytes:
        """A tar archive of ``path`` in the container (at most ``max_bytes``, else
        :class:`DockerProtocolError`); :class:`NotFoundError` if there is no such path."""
        answer = self._call(
            "GET",
            f"/containers/{quoted(container_id)}/archive",
            query={"path": path},
            max_body_bytes=max_bytes,
        )
        return answer.body

    # -- images ----------------------------------------------------------------------------------
    def inspect_image(self, image: str) -> ImageInspect:
        answer = self._call("GET", f"/images/{quoted(image)}/json", not_found=ImageNotFoundError)
        return cast(ImageInspect, self._object(answer, "inspect image"))

    # -- networks --------------------------------------------------------------------------------
    def create_network(
        self,
        name: str,
        *,
        driver: str,
        internal: bool,
        labels: Mapping[str, str],
        options: Mapping[str, str],
    ) -> str:
        """Create a network (refused if the name is taken); its id."""
        body = {
            "Name": name,
            "Driver": driver,
            "Internal": internal,
            "CheckDuplicate": True,
            "Labels": dict(labels),
            "Options": dict(options),
        }
        return self._id(
            self._call("POST", "/networks/create", ok=(201,), body=body), "create network"
        )

    def inspect_network(self, network: str) -> NetworkInspect:
        answer = self._call("GET", f"/networks/{quoted(network)}")
        return cast(NetworkInspect, self._object(answer, "inspect network"))

    def networks(self, *, labels: Sequence[str]) -> list[NetworkInspect]:
        answer = self._call(
            "GET",
            "/networks",
            query={"filters": json.dumps({"label": list(labels)})},
            max_body_bytes=MAX_BODY_BYTES,
        )
        return cast(list[NetworkInspect], self._objects(answer, "list networks"))

    def disconnect_network(self, network: str, container_id: str) -> None:
        self._call(
            "POST",
            f"/networks/{quoted(network)}/disconnect",
            body={"Container": container_id, "Force": True},
        )

    def remove_network(self, network: str) -> None:
        """Remove it; :class:`NotFoundError` if it is gone."""
        self._call("DELETE", f"/networks/{quoted(network)}", ok=(204,))


def _check(
    answer: Response, what: str, ok: tuple[int, ...], not_found: type[NotFoundError]
) -> None:
    if answer.status in ok:
        return
    message = answer.message()
    text = f"the Docker daemon refused {what} (HTTP {answer.status})"
    if answer.status == 404:
        raise not_found(text, status=404, detail=message)
    if 200 <= answer.status < 300:
        raise DockerProtocolError(f"unexpected HTTP {answer.status} for {what}")
    raise DockerStatusError(text, status=answer.status, detail=message)
