"""Which transport a launcher uses, and where it connects: one place for ``start``, ``doctor``
and ``network requirements``.

* ``poll`` (the default): HTTPS long polling to ``SPACELIFT_WORKER_COMMS_URL``, or to the
  token's ``control_plane_url`` when that is unset (:mod:`.poll_client`).
* ``mqtt``: the token's ``broker_url`` (:mod:`.client`).

Reconnection attempts back off up to :func:`reconnect_cap_seconds`: three heartbeat intervals,
at most 30 s. A worker is then heard again within that cap of the broker's or control plane's
return, well inside the control plane's grace and heartbeat timeout (60 s and 90 s by default,
docs/controlplane.md); a short heartbeat interval shortens the cap with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.urls import split_url

if TYPE_CHECKING:
    from hardened_launcher.identity.keys import PoolPrivateKey
    from hardened_launcher.identity.token import Token
    from hardened_launcher.settings import Settings
    from hardened_launcher.transport.base import Transport


#: The longest wait between two reconnection attempts, whatever the heartbeat interval.
MAX_RECONNECT_SECONDS: Final = 30.0
#: Heartbeat intervals per reconnection back-off cap.
RECONNECT_HEARTBEATS: Final = 3


def reconnect_cap_seconds(settings: Settings) -> float:
    """The reconnection back-off cap: three heartbeat intervals, at most 30 s."""
    interval = settings.heartbeat_interval.total_seconds()
    return min(MAX_RECONNECT_SECONDS, RECONNECT_HEARTBEATS * interval)


@dataclass(frozen=True, kw_only=True)
class CommsEndpoint:
    """Where the launcher's transport connects (no secrets: URLs carry no credentials)."""

    protocol: Literal["poll", "mqtt"]
    host: str
    port: int
    #: ``https://…`` for poll, ``mqtts://host:port`` for mqtt.
    url: str
    #: The setting or token field it came from.
    source: str

    def describe(self) -> str:
        return f"{self.protocol} to {self.url} ({self.source})"


def comms_endpoint(settings: Settings, token: Token) -> CommsEndpoint:
    """The endpoint the settings select; a ``poll`` URL that is not https is refused."""
    if settings.worker_comms_protocol == "mqtt":
        return CommsEndpoint(
            protocol="mqtt",
            host=token.broker_host,
            port=token.broker_port,
            url=token.broker_url,
            source="SPACELIFT_TOKEN broker_url",
        )
    if settings.worker_comms_url is not None:
        url, source = settings.worker_comms_url, "SPACELIFT_WORKER_COMMS_URL"
    else:
        url, source = token.control_plane_url, "SPACELIFT_TOKEN control_plane_url"
    parts = split_url(url)
    if parts is None or parts.scheme.lower() != "https" or not parts.hostname:
        raise ConfigurationError(
            f"the long-poll transport needs an https:// control plane URL ({source} is not one)",
            hint="set SPACELIFT_WORKER_COMMS_URL=https://<control plane>, or "
            "SPACELIFT_WORKER_COMMS_PROTOCOL=mqtt",
            reason="comms_url_not_https",
        )
    return CommsEndpoint(
        protocol="poll",
        host=parts.hostname,
        port=parts.port or 443,
        url=url,
        source=source,
    )


def worker_transport(
    settings: Settings, *, token: Token, key: PoolPrivateKey, worker_id: str
) -> Transport:
    """A new, unstarted worker transport of the configured protocol (``start`` calls this)."""
    endpoint = comms_endpoint(settings, token)
    cap = reconnect_cap_seconds(settings)
    if endpoint.protocol == "mqtt":
        from hardened_launcher.transport.client import (  # noqa: PLC0415
            ClientOptions,
            MqttTransport,
        )

        return MqttTransport.for_worker(
            token=token,
            key=key,
            worker_id=worker_id,
            options=ClientOptions(reconnect_max_seconds=cap),
        )
    from hardened_launcher.transport.poll_client import (  # noqa: PLC0415
        PollClientOptions,
        PollTransport,
    )

    return PollTransport.for_worker(
        token=token,
        key=key,
        worker_id=worker_id,
        url=endpoint.url,
        options=PollClientOptions(reconnect_max_seconds=cap),
    )
