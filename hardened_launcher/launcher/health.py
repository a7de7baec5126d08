"""``/healthz``, ``/readyz`` and Prometheus ``/metrics`` on the address ``HL_METRICS_ADDRESS``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread, bound to exactly the configured
``host:port`` (``[v6]:port`` for IPv6); unset means no listener at all. Any address is
honoured, including a pod IP for Kubernetes probes: the endpoints carry no secret (metric
labels are outcomes, machine reasons and variable *names*; readiness says "registered" or
"draining"), but they are unauthenticated, so prefer loopback or a network only the monitoring
system reaches (see docs/logs.md). Only GET and HEAD are served; requests are not logged.

- ``/healthz``: 200 while the process serves HTTP.
- ``/readyz``: 200 when the readiness callback says ready (registered and not draining), else
  503 with the callback's reason slug; a callback that raises is 503 ``readiness_check_failed``.
- ``/metrics``: the :class:`LauncherMetrics` registry in the Prometheus text format.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

from hardened_launcher.ascii_text import is_digits, trim
from hardened_launcher.errors import ConfigurationError, InfrastructureError
from hardened_launcher.launcher.metrics import CONTENT_TYPE, LauncherMetrics

__all__ = ["HealthServer", "Readiness", "parse_address"]

_log = logging.getLogger(__name__)

_SLUG_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True, kw_only=True)
class Readiness:
    """What ``/readyz`` answers: ``reason`` is a slug such as ``draining`` or ``not_registered``."""

    ready: bool
    reason: str = "ready"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); port 0 picks a free one (tests)."""
    value = trim(text)
    host, sep, port_text = value.rpartition(":")
    if (
        not sep
        or not is_digits(port_text)
        or len(port_text) > 5
        or not 0 <= int(port_text) <= 65535
    ):
        raise ConfigurationError(
            "the metrics address is not host:port",
            hint="set HL_METRICS_ADDRESS to e.g. 127.0.0.1:9464 or [::1]:9464",
            reason="metrics_address_invalid",
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    elif ":" in host:
        host = ""
    if not host or not (_is_ip(host) or _HOSTNAME_RE.fullmatch(host)):
        raise ConfigurationError(
            "the metrics address does not name a valid host",
            hint="set HL_METRICS_ADDRESS to e.g. 127.0.0.1:9464 or [::1]:9464",
            reason="metrics_address_invalid",
        )
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], family: socket.AddressFamily, owner: HealthServer
    ) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10
    server_version = "hardened-launcher"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        del format, args  # probes every few seconds are not worth a log line

    def _send(self, status: int, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        text = "text/plain; charset=utf-8"
        if path == "/healthz":
            self._send(200, b"ok\n", text, head=head)
        elif path == "/readyz":
            readiness = self.server.owner.readiness_now()
            if readiness.ready:
                self._send(200, b"ready\n", text, head=head)
            else:
                self._send(503, f"not ready: {readiness.reason}\n".encode(), text, head=head)
        elif path == "/metrics":
            self._send(200, self.server.owner.metrics.render(), CONTENT_TYPE, head=head)
        else:
            self._send(404, b"not found\n", text, head=head)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)


class HealthServer:
    """The probe and metrics listener. ``start()`` binds (errors are raised there), ``stop()``."""

    def __init__(
        self,
        address: str,
        *,
        metrics: LauncherMetrics,
        readiness: Callable[[], Readiness],
    ) -> None:
        self.host, self.requested_port = parse_address(address)
        self.metrics = metrics
        self._readiness = readiness
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        return _is_ip(self.host) and ipaddress.ip_address(self.host).is_loopback

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def readiness_now(self) -> Readiness:
        try:
            readiness = self._readiness()
        except Exception as exc:  # noqa: BLE001 - a failing check means not ready
            _log.warning("readiness check raised %s", type(exc).__name__)
            return Readiness(ready=False, reason="readiness_check_failed")
        reason = readiness.reason if _SLUG_RE.fullmatch(readiness.reason) else "not_ready"
        return Readiness(ready=bool(readiness.ready), reason=reason)

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._server = _Server((self.host, self.requested_port), family, self)
        except OSError as exc:
            raise InfrastructureError(
                f"cannot listen on {self.host}:{self.requested_port} for health and metrics: "
                f"{exc.strerror or type(exc).__name__}",
                hint="choose a free port and an address of this host in HL_METRICS_ADDRESS",
                reason="metrics_listen_failed",
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
