"""The MQTT 5 transport over paho-mqtt, for both the launcher and the control plane.

* TLS: the CA certificate pinned from the token, the client certificate, and the private key
  loaded from a ``memfd_create`` file through ``/proc/self/fd/N`` — the key never touches disk;
  the memory file is truncated and closed right after OpenSSL has read it.
* One network thread per transport runs paho's ``loop()``, connects, and reconnects with
  jittered exponential backoff (full jitter between ``reconnect_min_seconds`` and a cap that
  doubles up to ``reconnect_max_seconds``).
* Publishing is QoS 1. Reliability lives in :class:`~.session.Session` (ids, seq, outbox with
  retransmission, dedupe, gap detection): critical messages sent while the broker is away wait
  in the outbox and go out after the reconnect; non-critical ones (heartbeat, bye) are dropped
  while disconnected (counted), the next heartbeat replaces them.
* Received messages land in a bounded queue read with :meth:`MqttTransport.receive`. When the
  queue stays full for ``receive_block_seconds`` the message is dropped *unacknowledged*, so a
  critical one comes again.
* The worker registers ``gone`` as its last will; :meth:`MqttTransport.close` sends ``bye``
  first (when asked) and disconnects cleanly, so the will is not published.

Client ids are ``hl-<pool>-<worker>-<random>`` / ``hl-controlplane-<random>``: random so that
another pool's certificate holder cannot take over (and so disconnect) a session by guessing its
client id — mosquitto's ACL cannot tie client ids to certificates.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import random
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.transport.inbox import WakeableQueue
from hardened_launcher.transport.messages import Body, Bye, Message
from hardened_launcher.transport.session import (
    Outgoing,
    Received,
    Session,
    TransportStats,
)
from hardened_launcher.transport.tls import (
    BrokerRefusedError,
    BrokerUnavailableError,
    TlsCredentials,
    build_tls_context,
    is_refusal,
)
from hardened_launcher.transport.topics import WorkerAddress

_log = logging.getLogger(__name__)
_jitter = random.SystemRandom()

QOS_AT_LEAST_ONCE: Final = 1


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """Timing and size knobs of :class:`MqttTransport` (defaults suit production)."""

    keepalive_seconds: int = 15
    connect_timeout_seconds: float = 10.0
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 30.0
    session_expiry_seconds: int = 300
    will_delay_seconds: int = 5
    allow_tls13: bool = False
    paho_max_queued_messages: int = 10_000
    paho_max_inflight_messages: int = 64
    receive_queue_size: int = 10_000
    receive_block_seconds: float = 5.0
    loop_timeout_seconds: float = 0.05


class MqttTransport:
    """A :class:`~.Transport` over a real broker. Build it with :meth:`for_worker` or
    :meth:`for_control_plane`, then :meth:`start`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        credentials: TlsCredentials,
        session: Session,
        options: ClientOptions | None = None,
        client_id: str | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._session = session
        self._options = options or ClientOptions()
        self._context = build_tls_context(credentials, allow_tls13=self._options.allow_tls13)
        if client_id is None:
            role = (
                "controlplane"
                if session.local is None
                else f"{session.local.pool_id}-{session.local.worker_id}"
            )
            client_id = f"hl-{role}-{secrets.token_hex(8)}"
        self.client_id = client_id
        self._lock = threading.RLock()
        self._inbox: WakeableQueue[Received] = WakeableQueue(
            maxsize=self._options.receive_queue_size
        )
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error = ""
        self._ever_connected = False
        self._to_publish: collections.deque[Outgoing] = collections.deque()
        self._close_deadline = 0.0
        self._client = self._build_client()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def for_worker(
        cls,
        *,
        token: Token,
        key: PoolPrivateKey,
        worker_id: str,
        options: ClientOptions | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> Self:
        """The launcher's transport: the pool certificate, ``<ns>/…/<pool>/<worker_id>``."""
        local = WorkerAddress(pool_id=token.pool_id, worker_id=worker_id)
        session = Session(
            side="worker", namespace=token.mqtt_namespace, local=local, **(session_options or {})
        )
        credentials = TlsCredentials.for_pool(token, key)
        try:
            return cls(
                host=token.broker_host,
                port=token.broker_port,
                credentials=credentials,
                session=session,
                options=options,
            )
        finally:
            credentials.private_key_pem.wipe()

    @classmethod
    def for_control_plane(
        cls,
        *,
        host: str,
        port: int,
        namespace: str,
        credentials: TlsCredentials,
        options: ClientOptions | None = None,
        session_options: dict[str, Any] | None = None,
    ) -> Self:
        """The control plane's transport (subscribes to every worker's writeonly topic)."""
        session = Session(side="controlplane", namespace=namespace, **(session_options or {}))
        return cls(host=host, port=port, credentials=credentials, session=session, options=options)

    def _build_client(self) -> paho.Client:
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.tls_set_context(self._context)
        client.tls_insecure_set(value=False)
        client.max_inflight_messages_set(self._options.paho_max_inflight_messages)
        client.max_queued_messages_set(self._options.paho_max_queued_messages)
        client.connect_timeout = self._options.connect_timeout_seconds
        if self._session.local is not None:
            will = self._session.last_will()
            will_properties = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            # Published only when the worker has not reconnected within the delay: a quick
            # reconnect (broker restart, session takeover by our own retry) is not a crash.
            will_properties.WillDelayInterval = self._options.will_delay_seconds
            client.will_set(
                will.topic,
                will.payload,
                qos=QOS_AT_LEAST_ONCE,
                retain=False,
                properties=will_properties,
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_log = self._on_log
        return client

    # -- Transport ---------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        return self._session

    @property
    def local(self) -> WorkerAddress | None:
        return self._session.local

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, *, timeout_seconds: float = 30.0) -> None:
        """Start the network thread and wait for the first connection.

        Raises :class:`BrokerRefusedError` when the broker refuses the certificate (or the
        broker's certificate is not trusted), :class:`BrokerUnavailableError` on timeout. The
        thread keeps retrying after an unavailability error until :meth:`close`.
        """
        if self._thread is not None:
            raise RuntimeError("the transport was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{self.client_id}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._connected.wait(0.05):
            refused = is_refusal(self._last_error)
            if refused or time.monotonic() >= deadline:
                self.close()
                if refused:
                    raise BrokerRefusedError(
                        "the broker refused the connection or its certificate",
                        hint="check the token (pool reset?) and the broker's CA",
                        reason="broker_refused",
                        detail=self._last_error,
                    )
                raise BrokerUnavailableError(
                    f"no connection to the broker {self._host}:{self._port} within "
                    f"{timeout_seconds:g} s",
                    hint="check that the broker runs and is reachable",
                    detail=self._last_error,
                )

    def wait_connected(self, timeout_seconds: float) -> bool:
        return self._connected.wait(timeout_seconds)

    def send(self, body: Body, *, peer: WorkerAddress | None = None) -> Message:
        """Send ``body`` (QoS 1). Critical bodies are kept and retransmitted until acked.

        Raises :class:`~.session.OutboxFullError` when too many critical messages wait.
        """
        with self._lock:
            outgoing = self._session.prepare(body, now=time.monotonic(), peer=peer)
            if self.connected:
                # Only the network thread writes to the TLS socket (concurrent SSL writes
                # corrupt records: measured as "bad record mac" under a 20k burst).
                self._to_publish.append(outgoing)
            else:
                self._count_unsent(outgoing)
        return outgoing.message

    def _count_unsent(self, outgoing: Outgoing) -> None:
        if not outgoing.message.critical:
            _log.info("transport.dropped_while_disconnected", extra={"type": outgoing.message.type})

    def receive(self, *, timeout_seconds: float | None = None) -> Received | None:
        """The next delivered message, or ``None`` after ``timeout_seconds``."""
        try:
            return self._inbox.get(timeout=timeout_seconds)
        except queue.Empty:
            return None

    def wake(self) -> None:
        """End a ``receive`` wait now (it returns ``None``): serve's doorbell."""
        self._inbox.wake()

    def discard_pending(self, peer: WorkerAddress) -> int:
        with self._lock:
            return self._session.discard_pending(peer)

    def stats(self) -> TransportStats:
        with self._lock:
            return self._session.stats()

    @property
    def last_error(self) -> str:
        return self._last_error

    def close(self, *, bye_reason: str | None = None, timeout_seconds: float = 5.0) -> None:
        """Send ``bye`` (worker, when asked), disconnect cleanly (no will), stop the thread."""
        if bye_reason is not None and self.connected:
            self.send(Bye(reason=bye_reason))
        self._close_deadline = time.monotonic() + timeout_seconds
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_seconds + 1.0)
        self._connected.clear()

    # -- network thread ----------------------------------------------------------------------
    def _publish(self, outgoing: Outgoing) -> paho.MQTTMessageInfo | None:
        info = self._client.publish(outgoing.topic, outgoing.payload, qos=QOS_AT_LEAST_ONCE)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            _log.warning(
                "transport.publish_failed",
                extra={"type": outgoing.message.type, "rc": paho.error_string(info.rc)},
            )
            return None
        return info

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._options.session_expiry_seconds
        return properties

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._ever_connected:
                    self._client.reconnect()
                else:
                    self._client.connect(
                        self._host,
                        self._port,
                        keepalive=self._options.keepalive_seconds,
                        clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
                        properties=self._connect_properties(),
                    )
                    self._ever_connected = True
            except (OSError, ValueError) as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                failures += 1
                self._backoff(failures)
                continue
            while not self._stopping.is_set():
                self._flush()
                rc = self._client.loop(timeout=self._options.loop_timeout_seconds)
                if rc != paho.MQTT_ERR_SUCCESS:
                    break
                if self.connected:
                    failures = 0
                    self._retransmit_due()
            if self._stopping.is_set() and self.connected:
                self._finish()
            was_connected = self._connected.is_set()
            self._connected.clear()
            if self._stopping.is_set():
                break
            if was_connected:
                _log.warning("transport.disconnected", extra={"error": self._last_error})
            failures += 1
            self._backoff(failures)

    def _flush(self) -> None:
        while self._to_publish:
            outgoing = self._to_publish.popleft()
            self._publish(outgoing)

    def _finish(self) -> None:
        """Clean stop on the network thread: send what is queued, wait for PUBACKs, DISCONNECT
        (so the broker does not publish the last will)."""
        self._flush()
        infos_pending = True
        while infos_pending and time.monotonic() < self._close_deadline:
            if self._client.loop(timeout=0.02) != paho.MQTT_ERR_SUCCESS:
                return
            infos_pending = bool(self._client._out_messages)
        with contextlib.suppress(OSError, ValueError):
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection")
            )
            for _ in range(10):
                if self._client.loop(timeout=0.02) != paho.MQTT_ERR_SUCCESS:
                    break

    def _backoff(self, failures: int) -> None:
        cap = min(
            self._options.reconnect_max_seconds,
            self._options.reconnect_min_seconds * (2 ** min(failures - 1, 16)),
        )
        # Full jitter between the minimum and the current cap, so that a broker restart is not
        # met by every launcher reconnecting in the same instant.
        delay = _jitter.uniform(
            self._options.reconnect_min_seconds, max(cap, self._options.reconnect_min_seconds)
        )
        self._stopping.wait(delay)

    def _retransmit_due(self) -> None:
        with self._lock:
            for outgoing in self._session.due(time.monotonic()):
                self._publish(outgoing)

    # paho callbacks (network thread)
    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._last_error = f"CONNACK: {reason_code}"
            return
        client.subscribe(self._session.subscription, qos=QOS_AT_LEAST_ONCE)
        with self._lock:
            if self._connected.is_set():
                return
            self._session.note_reconnect()
            self._connected.set()
            resend = self._session.pending(time.monotonic())
            for outgoing in resend:
                self._publish(outgoing)
        _log.info(
            "transport.connected",
            extra={
                "broker": f"{self._host}:{self._port}",
                "session_present": flags.session_present,
                "resent": len(resend),
            },
        )

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: object,
        _flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if reason_code.is_failure:
            self._last_error = self._last_error or f"DISCONNECT: {reason_code}"

    def _on_log(self, _client: paho.Client, _userdata: object, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR:
            self._last_error = text[:500]

    def _on_message(
        self, client: paho.Client, _userdata: object, message: paho.MQTTMessage
    ) -> None:
        with self._lock:
            incoming = self._session.incoming(
                message.topic, bytes(message.payload), now=time.monotonic()
            )
        delivered = incoming.delivered
        if delivered is not None:
            try:
                self._inbox.put(delivered, timeout=self._options.receive_block_seconds)
            except queue.Full:
                with self._lock:
                    self._session.forget_delivery(delivered.message.id)
                _log.warning(
                    "transport.receive_queue_full",
                    extra={"type": delivered.message.type, "peer": str(delivered.peer)},
                )
                return  # not acknowledged: the sender retransmits
        with self._lock:
            for reply in incoming.replies:
                self._publish(reply)
        del client
