"""systemd's readiness protocol (``Type=notify``), spoken directly over the notify socket.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); the daemon
sends datagrams of ``KEY=VALUE`` lines to it: ``READY=1`` once the start-up checks passed and the
launcher is connected, ``STOPPING=1`` when it begins to drain, ``STATUS=…`` for ``systemctl
status``. Without the variable (not under systemd) every call does nothing. Sending never raises:
a lost notification makes systemd time the start out, which is the right failure, while an
exception here would stop a healthy launcher. The variable is removed from the process
environment after first use, so nothing the launcher starts can talk to systemd in its name.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from typing import Final

NOTIFY_SOCKET_VARIABLE: Final = "NOTIFY_SOCKET"
MAX_STATUS_CHARS: Final = 200
MAX_SOCKET_PATH_BYTES: Final = 107  # sun_path is 108 bytes with its terminating NUL

log = logging.getLogger(__name__)

_address: str | bytes | None = None
_resolved = False


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        name = value[1:].encode("utf-8", "surrogateescape")
        return b"\0" + name if 0 < len(name) < MAX_SOCKET_PATH_BYTES else None
    if (
        value.startswith("/")
        and len(value.encode("utf-8", "surrogateescape")) <= MAX_SOCKET_PATH_BYTES
    ):
        return value
    return None  # vsock: and relative addresses are not supported


def _notify_address(environ: MutableMapping[str, str]) -> str | bytes | None:
    global _address, _resolved  # noqa: PLW0603 - one socket address per process, read once
    if not _resolved:
        value = environ.pop(NOTIFY_SOCKET_VARIABLE, "")
        _address = _socket_address(value) if value else None
        _resolved = True
        if value and _address is None:
            log.warning("sd_notify.unsupported_address")
    return _address


def _clean_status(text: str) -> str:
    shown = "".join(c if c.isprintable() else " " for c in text)
    return shown[:MAX_STATUS_CHARS]


def notify(*fields: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Send ``fields`` (``KEY=VALUE`` each) as one datagram; ``True`` when it was sent."""
    address = _notify_address(os.environ if environ is None else environ)
    if address is None:
        return False
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(2.0)
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify.failed error=%s", type(exc).__name__)
        return False
    return True


def ready(status: str, *, environ: MutableMapping[str, str] | None = None) -> bool:
    """The start-up checks passed: systemd may now consider the unit started."""
    return notify("READY=1", f"STATUS={_clean_status(status)}", environ=environ)


def stopping(status: str, *, environ: MutableMapping[str, str] | None = None) -> bool:
    """The launcher begins to drain and stop."""
    return notify("STOPPING=1", f"STATUS={_clean_status(status)}", environ=environ)


def _reset_for_tests() -> None:
    global _address, _resolved  # noqa: PLW0603
    _address = None
    _resolved = False
