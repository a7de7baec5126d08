"""HTTP/1.1 to the Docker daemon over its unix socket, with the standard library only.

Every request opens its own connection (a unix-socket connect costs microseconds, and no
pool means no shared state between run threads), runs under one deadline that covers connect,
send, the status line, the headers and the body (:class:`_DeadlineSocket`: a daemon that
answers one byte at a time cannot stretch it), and reads at most ``max_body_bytes`` of body.
Content-length and chunked bodies are both read through :mod:`http.client`; a body that ends
early, a bad status line or chunk header, and an oversized body are :class:`DockerProtocolError`.

:func:`hijack` is the attach call: the request is written by hand and the answer's headers are
read up to their blank line (bounded), so the stream bytes that follow them in the same read are
handed back, never lost in a buffered reader.

Only ``unix://`` endpoints are spoken (``DOCKER_HOST`` unset: ``/var/run/docker.sock``); a TCP or
SSH endpoint is refused when the endpoint is parsed (:class:`DockerHostError`), at start-up.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlencode

from hardened_launcher.ascii_text import is_digits, trim
from hardened_launcher.docker_api.errors import (
    DockerConnectionError,
    DockerHostError,
    DockerProtocolError,
    DockerTimeoutError,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_SOCKET",
    "MAX_BODY_BYTES",
    "Endpoint",
    "Hijacked",
    "Response",
    "hijack",
    "request",
]

#: The Engine API version of every request: dockerd 20.10 speaks 1.41; newer daemons still do.
API_VERSION: Final = "1.41"
DEFAULT_SOCKET: Final = "/var/run/docker.sock"
#: The largest body read from any answer unless a call says otherwise (``docker info`` on a
#: large host is ~10 KiB; a list of 10,000 containers ~20 MiB).
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_MAX_HEADER_BYTES: Final = 16 * 1024
_MAX_ERROR_BYTES: Final = 64 * 1024
_READ_BYTES: Final = 64 * 1024
#: A Content-Length of more digits than this is malformed (no answer is an exabyte).
_LENGTH_DIGITS: Final = 18
#: sockaddr_un's path field, with its terminating NUL.
_MAX_SOCKET_PATH: Final = 107


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the daemon listens: a unix socket path."""

    socket_path: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Endpoint:
        """``DOCKER_HOST`` (``unix:///path``) or the default socket; anything else is refused."""
        host = trim(environ.get("DOCKER_HOST", ""))
        if not host:
            return cls(socket_path=DEFAULT_SOCKET)
        scheme, sep, rest = host.partition("://")
        if not sep or scheme != "unix":
            # Only the scheme is named: a URL may carry a user and password.
            shown = scheme if sep and scheme.isalnum() and len(scheme) <= 16 else "(no scheme)"
            raise DockerHostError(
                f"DOCKER_HOST is a {shown} endpoint, not a unix socket (unix:///path)",
                hint="the launcher speaks to dockerd only over its local unix socket; set "
                "DOCKER_HOST=unix:///var/run/docker.sock (or unset it), and reach a remote "
                "daemon through a socket forwarded onto this host",
            )
        if not rest.startswith("/") or "\0" in rest or len(rest.encode()) > _MAX_SOCKET_PATH:
            raise DockerHostError(
                f"DOCKER_HOST does not name an absolute socket path of at most "
                f"{_MAX_SOCKET_PATH} bytes (unix:///path)",
                hint="set DOCKER_HOST=unix:///absolute/path/to/docker.sock",
            )
        return cls(socket_path=rest)

    def describe(self) -> str:
        return f"unix://{self.socket_path}"


@dataclass(frozen=True, kw_only=True)
class Response:
    status: int
    body: bytes
    content_type: str

    def json(self) -> object:
        """The body as JSON, or :class:`DockerProtocolError`."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise DockerProtocolError(
                "the Docker daemon's answer is not JSON", detail=type(exc).__name__
            ) from None

    def message(self) -> str:
        """The daemon's error message (``{"message": …}``), printable and short."""
        text = ""
        try:
            found = json.loads(self.body)
            if isinstance(found, dict) and isinstance(found.get("message"), str):
                text = found["message"]
        except (ValueError, RecursionError):
            text = self.body.decode("utf-8", "replace")
        return "".join(c if c.isprintable() else " " for c in text.strip())[:500]


class _DeadlineSocket(socket.socket):
    """A unix socket whose every read and write waits at most until ``deadline``."""

    deadline: float = 0.0

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request's deadline passed")
        self.settimeout(left)
        return left

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        self._remaining()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._remaining()
        return super().recv(bufsize, flags)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:  # type: ignore[override]
        self._remaining()
        super().sendall(data, flags)


def _connect(endpoint: Endpoint, deadline: float, what: str) -> _DeadlineSocket:
    sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.deadline = deadline
    try:
        sock._remaining()
        sock.connect(endpoint.socket_path)
    except TimeoutError:
        sock.close()
        raise DockerTimeoutError(
            f"the Docker daemon at {endpoint.describe()} did not accept a connection in time "
            f"({what})"
        ) from None
    except OSError as exc:
        sock.close()
        raise DockerConnectionError(
            f"cannot connect to the Docker daemon at {endpoint.describe()} ({what}): "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    return sock


class _Connection(http.client.HTTPConnection):
    """:class:`http.client.HTTPConnection` over an already connected unix socket."""

    def __init__(self, sock: _DeadlineSocket) -> None:
        super().__init__("docker")
        self.sock = sock

    def connect(self) -> None:  # pragma: no cover - the socket is connected before use
        raise http.client.NotConnected


def _target(path: str, query: Mapping[str, str] | None) -> str:
    target = f"/v{API_VERSION}{path}"
    if query:
        target += "?" + urlencode(query)
    return target


def quoted(value: str) -> str:
    """``value`` quoted for a path (an image reference keeps its ``/`` and ``:``, as dockerd's
    router expects them)."""
    return quote(value, safe="/:")


def request(
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    timeout: float,
    query: Mapping[str, str] | None = None,
    body: object = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Response:
    """One request; the whole exchange within ``timeout`` seconds, at most ``max_body_bytes``
    of body read. Any status is returned; transport and framing failures raise."""
    what = f"{method} {path}"
    deadline = time.monotonic() + timeout
    sock = _connect(endpoint, deadline, what)
    connection = _Connection(sock)
    try:
        headers = {"Host": "docker", "User-Agent": "hardened-launcher", "Connection": "close"}
        payload: bytes | None = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, _target(path, query), body=payload, headers=headers)
        answer = connection.getresponse()
        return Response(
            status=answer.status,
            body=_read_body(answer, max_body_bytes, what),
            content_type=answer.getheader("Content-Type", "") or "",
        )
    except http.client.HTTPException as exc:
        raise DockerProtocolError(
            f"the Docker daemon's answer to {what} is not valid HTTP", detail=type(exc).__name__
        ) from None
    except OSError as exc:  # TimeoutError included
        raise _transport_error(exc, what, timeout) from None
    finally:
        connection.close()


def _read_body(answer: http.client.HTTPResponse, limit: int, what: str) -> bytes:
    declared_text = answer.getheader("Content-Length")
    declared: int | None = None
    if declared_text is not None and not answer.chunked:
        digits = trim(declared_text)
        if not is_digits(digits) or len(digits) > _LENGTH_DIGITS:
            raise DockerProtocolError(f"the answer to {what} has a malformed Content-Length")
        declared = int(digits)
        if declared > limit:
            raise DockerProtocolError(
                f"the answer to {what} is {declared} bytes, over the {limit}-byte limit"
            )
    body = bytearray()
    while True:
        piece = answer.read1(_READ_BYTES)
        if not piece:
            break
        body += piece
        if len(body) > limit:
            raise DockerProtocolError(f"the answer to {what} is over the {limit}-byte limit")
    if declared is not None and len(body) != declared:
        raise DockerProtocolError(
            f"the answer to {what} ended after {len(body)} of its {declared} bytes"
        )
    return bytes(body)


@dataclass(frozen=True, kw_only=True)
class Hijacked:
    """An upgraded connection: the raw socket (blocking, no timeout) and any stream bytes that
    arrived with the answer's headers (feed them first)."""

    sock: socket.socket
    pending: bytes


def hijack(
    endpoint: Endpoint,
    path: str,
    *,
    timeout: float,
    query: Mapping[str, str] | None = None,
) -> Hijacked | Response:
    """POST ``path`` asking to upgrade the connection to a raw stream. Returns the stream on
    101 (or 200 from daemons that do not upgrade); any other status as a :class:`Response`."""
    what = f"POST {path}"
    deadline = time.monotonic() + timeout
    sock = _connect(endpoint, deadline, what)
    try:
        sock.sendall(
            (
                f"POST {_target(path, query)} HTTP/1.1\r\nHost: docker\r\n"
                "User-Agent: hardened-launcher\r\nContent-Length: 0\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            ).encode()
        )
        head = bytearray()
        while b"\r\n\r\n" not in head:
            if len(head) > _MAX_HEADER_BYTES:
                raise DockerProtocolError(f"the headers of the answer to {what} are too long")
            piece = sock.recv(4096)
            if not piece:
                raise DockerProtocolError(f"the Docker daemon closed {what} before answering")
            head += piece
        header, _, pending = bytes(head).partition(b"\r\n\r\n")
        status = _status(header, what)
        if status in (101, 200):
            plain = socket.socket(fileno=sock.detach())
            plain.settimeout(None)
            return Hijacked(sock=plain, pending=pending)
        rest = pending + _drain(sock, _error_length(header) - len(pending))
        return Response(status=status, body=rest[:_MAX_ERROR_BYTES], content_type="")
    except OSError as exc:  # TimeoutError included
        raise _transport_error(exc, what, timeout) from None
    finally:
        if sock.fileno() != -1:
            sock.close()


def _transport_error(exc: OSError, what: str, timeout: float) -> DockerConnectionError:
    """The error for a socket failure during ``what``: a timeout or a broken connection."""
    if isinstance(exc, TimeoutError):
        return DockerTimeoutError(f"the Docker daemon did not answer {what} within {timeout:g}s")
    return DockerConnectionError(
        f"the connection to the Docker daemon broke during {what}: "
        f"{exc.strerror or type(exc).__name__}"
    )


def _status(header: bytes, what: str) -> int:
    line = header.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise DockerProtocolError(f"the answer to {what} has a malformed status line")
    return int(parts[1])


def _error_length(header: bytes) -> int:
    """How much of an error answer's body to read: its Content-Length, at most the bound."""
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        digits = value.strip()
        if name.strip().lower() == b"content-length" and digits.isdigit():
            return min(int(digits), _MAX_ERROR_BYTES) if len(digits) <= _LENGTH_DIGITS else 0
    return _MAX_ERROR_BYTES


def _drain(sock: _DeadlineSocket, limit: int) -> bytes:
    """Up to ``limit`` more bytes of an error answer (best effort, for its message)."""
    data = bytearray()
    try:
        while len(data) < limit:
            piece = sock.recv(min(4096, limit - len(data)))
            if not piece:
                break
            data += piece
    except OSError:
        pass
    return bytes(data)
