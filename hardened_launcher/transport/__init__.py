"""The transport between launchers and the control plane: HTTPS long polling (default) or
MQTT 5, beneath one reliability layer (docs/transport.md).

* :mod:`.messages` — the protocol's message types, strict JSON codec (pure).
* :mod:`.topics` — the topic layout (pure).
* :mod:`.session` — ids, seq, acks, retransmission, dedupe, gap detection (pure state machine).
* :mod:`.client` — the MQTT 5 client over paho (TLS with the key in memory, reconnects).
* :mod:`.poll_wire`, :mod:`.poll_server`, :mod:`.poll_client` — the HTTP long-poll transport.
* :mod:`.factory` — which transport a launcher uses and where it connects.
* :mod:`.memory` — an in-memory broker and transports for tests.
* :mod:`.broker_config` — the mosquitto configuration, ACL and CRL.
* :mod:`.base` — the ``Transport`` Protocol both implement.
"""

from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.messages import (
    BODY_TYPES,
    CRITICAL_TYPES,
    MAX_MESSAGE_BYTES,
    Accept,
    Ack,
    Assign,
    Body,
    Bye,
    Cancel,
    Cycle,
    Drain,
    Gone,
    Heartbeat,
    LogUrl,
    LogUrls,
    LogUrlsRequest,
    Message,
    MessageError,
    MessageStream,
    Refuse,
    Register,
    Start,
    Status,
    Undrain,
)
from hardened_launcher.transport.session import (
    OutboxFullError,
    Received,
    Session,
    TransportStats,
)
from hardened_launcher.transport.topics import WorkerAddress

__all__ = [
    "BODY_TYPES",
    "CRITICAL_TYPES",
    "MAX_MESSAGE_BYTES",
    "Accept",
    "Ack",
    "Assign",
    "Body",
    "Bye",
    "Cancel",
    "Cycle",
    "Drain",
    "Gone",
    "Heartbeat",
    "LogUrl",
    "LogUrls",
    "LogUrlsRequest",
    "Message",
    "MessageError",
    "MessageStream",
    "OutboxFullError",
    "Received",
    "Refuse",
    "Register",
    "Session",
    "Start",
    "Status",
    "Transport",
    "TransportStats",
    "Undrain",
    "WorkerAddress",
]
