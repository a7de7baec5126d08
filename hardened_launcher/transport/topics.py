"""The topic layout (pure).

* control plane → worker: ``<ns>/readonly/<pool>/<worker>`` (the worker reads it)
* worker → control plane: ``<ns>/writeonly/<pool>/<worker>`` (the worker writes it)

The broker's ACL ties ``<pool>`` to the client certificate's CN, so the pool in a received
topic is authenticated by the broker; the worker id is only *claimed* by a holder of that
pool's certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Self

from hardened_launcher.identity.token import MQTT_NAMESPACE_PATTERN, is_valid_pool_id
from hardened_launcher.transport.messages import MessageError, is_valid_worker_id

READONLY: Final = "readonly"
WRITEONLY: Final = "writeonly"
Direction = Literal["readonly", "writeonly"]


def check_namespace(namespace: str) -> str:
    if MQTT_NAMESPACE_PATTERN.fullmatch(namespace) is None:
        raise ValueError("the MQTT namespace is not one topic level of [A-Za-z0-9_-]")
    return namespace


@dataclass(frozen=True, kw_only=True, order=True)
class WorkerAddress:
    """One worker: its pool (authenticated by the broker) and its id (claimed)."""

    pool_id: str
    worker_id: str

    def __post_init__(self) -> None:
        if not is_valid_pool_id(self.pool_id):
            raise ValueError("pool_id is not a pool id")
        if not is_valid_worker_id(self.worker_id):
            raise ValueError("worker_id is not a worker id (1-64 of A-Z a-z 0-9 _ . -)")

    def __str__(self) -> str:
        return f"{self.pool_id}/{self.worker_id}"


def to_worker_topic(namespace: str, address: WorkerAddress) -> str:
    """Control plane → worker."""
    return f"{check_namespace(namespace)}/{READONLY}/{address.pool_id}/{address.worker_id}"


def from_worker_topic(namespace: str, address: WorkerAddress) -> str:
    """Worker → control plane."""
    return f"{check_namespace(namespace)}/{WRITEONLY}/{address.pool_id}/{address.worker_id}"


def control_plane_subscription(namespace: str, *, share_group: str | None = None) -> str:
    """What the control plane subscribes to: every worker's writeonly topic."""
    topic = f"{check_namespace(namespace)}/{WRITEONLY}/+/+"
    if share_group is None:
        return topic
    if MQTT_NAMESPACE_PATTERN.fullmatch(share_group) is None:
        raise ValueError("the share group is not one topic level of [A-Za-z0-9_-]")
    return f"$share/{share_group}/{topic}"


@dataclass(frozen=True, kw_only=True)
class ParsedTopic:
    direction: Direction
    address: WorkerAddress

    @classmethod
    def parse(cls, namespace: str, topic: str) -> Self:
        """Split a topic of the layout; anything else is MessageError."""
        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != namespace or parts[1] not in (READONLY, WRITEONLY):
            raise MessageError(
                "a message arrived on a topic outside the layout",
                hint="check the broker ACL and the MQTT namespace",
            )
        try:
            address = WorkerAddress(pool_id=parts[2], worker_id=parts[3])
        except ValueError as exc:
            raise MessageError(
                "a message arrived on a topic with an invalid pool or worker id",
                hint="check the broker ACL",
            ) from exc
        direction: Direction = READONLY if parts[1] == READONLY else WRITEONLY
        return cls(direction=direction, address=address)
