"""The HTTP long-poll transport on real components: the aiohttp server with mutual TLS, the
http.client worker, a real tinyproxy, real TCP cuts and server restarts."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardened_launcher.demo.processes import free_port
from hardened_launcher.identity.issuing import CertificateAuthority
from hardened_launcher.transport import poll_wire as wire
from hardened_launcher.transport.messages import (
    Accept,
    Bye,
    Cancel,
    Heartbeat,
    Register,
    Start,
    Status,
)
from hardened_launcher.transport.poll_client import PollTransport, Proxy
from hardened_launcher.transport.poll_server import PollServer, PollServerOptions
from hardened_launcher.transport.session import Received
from hardened_launcher.transport.tls import BrokerRefusedError, TlsCredentials, build_tls_context
from hardened_launcher.transport.topics import WorkerAddress
from tests.conftest import require_tool
from tests.integration.broker import Pool
from tests.integration.pollserver import FAST_SERVER, PollHarness, poll, running_poll_server

pytestmark = pytest.mark.integration
__all__ = ["poll"]  # the fixture


def _register(worker_id: str, pool_id: str) -> Register:
    return Register(
        worker_id=worker_id,
        pool_id=pool_id,
        version="1.0.0",
        metadata={},
        max_concurrent_runs=1,
    )


def _server(h: PollHarness) -> PollServer:
    assert h.server is not None
    return h.server


def _drain(
    transport: PollServer | PollTransport, *, count: int, timeout: float = 10.0
) -> list[Received]:
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        item = transport.receive(timeout_seconds=0.1)
        if item is not None:
            got.append(item)
    return got


@contextlib.contextmanager
def started(transport: PollTransport, timeout: float = 10.0) -> Iterator[PollTransport]:
    transport.start(timeout_seconds=timeout)
    try:
        yield transport
    finally:
        transport.close()


# -- raw requests with a pool certificate ----------------------------------------------------


def _raw(
    h: PollHarness,
    pool: Pool,
    method: str,
    path: str,
    *,
    worker_id: str | None = "w1",
    session_id: str | None = "0" * 32,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    credentials = TlsCredentials.for_pool(pool.token, pool.key)
    context = build_tls_context(credentials)
    conn = http.client.HTTPSConnection("localhost", h.port, context=context, timeout=10)
    all_headers = dict(headers or {})
    if worker_id is not None:
        all_headers[wire.WORKER_HEADER] = worker_id
    if session_id is not None:
        all_headers[wire.SESSION_HEADER] = session_id
    if body is not None and "Content-Type" not in all_headers:
        all_headers["Content-Type"] = wire.CONTENT_TYPE
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_messages_flow_both_ways_with_acks_and_no_retransmission(poll: PollHarness) -> None:
    pool = poll.pool("pool-a")
    server = _server(poll)
    with started(poll.worker(pool, "w1")) as worker:
        sent = worker.send(_register("w1", "pool-a"))
        [received] = _drain(server, count=1)
        assert received.peer == WorkerAddress(pool_id="pool-a", worker_id="w1")
        assert received.message == sent  # the same message, parsed from the same bytes
        peer = received.peer
        bodies = [Cancel(run_id=f"run-{i}") for i in range(50)]
        for body in bodies:
            server.send(body, peer=peer)
        got = _drain(worker, count=50)
        assert [r.body for r in got] == bodies
        time.sleep(0.5)
        assert server.stats().outbox_messages == 0  # every cancel was acked
        assert worker.stats().outbox_messages == 0  # and the register
        assert server.stats().retransmitted == 0


def test_a_foreign_ca_certificate_is_refused(poll: PollHarness) -> None:
    foreign = poll.pool(
        "pool-a", ca=CertificateAuthority.generate(key_type="EC-P256"), register=False
    )
    with pytest.raises(BrokerRefusedError) as info:
        poll.worker(foreign, "w1").start(timeout_seconds=10)
    assert info.value.exit_code == 78


def test_a_revoked_certificate_is_refused_in_the_tls_handshake(poll: PollHarness) -> None:
    pool = poll.pool("pool-a")
    poll.revoke_in_crl(pool)
    with pytest.raises(BrokerRefusedError) as info:
        poll.worker(pool, "w1").start(timeout_seconds=10)
    assert "revoked" in info.value.detail


def test_a_reset_pools_old_certificate_is_refused_even_on_an_open_connection(
    poll: PollHarness,
) -> None:
    old = poll.pool("pool-a")
    server = _server(poll)
    worker = poll.worker(old, "w1")
    with started(worker):
        worker.send(Heartbeat(state="IDLE", running=()))
        assert _drain(server, count=1)
        new = poll.reset(old)
        # The next request of the old certificate's open session is refused (403).
        deadline = time.monotonic() + 10
        while worker.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker.connected
        assert server.refusals["certificate_not_current"] >= 1
    with pytest.raises(BrokerRefusedError):
        poll.worker(old, "w2").start(timeout_seconds=10)
    with started(poll.worker(new, "w1")) as renewed:
        assert renewed.connected


def test_a_reset_pools_old_certificate_may_finish_within_the_grace_but_take_nothing(
    poll: PollHarness,
) -> None:
    """A cycling worker can deliver its final statuses and bye over the old certificate for
    the grace, never a register, an accept or an IDLE heartbeat; after the grace, 403."""
    poll.grace_seconds = 3.0
    server = poll.restart()
    old = poll.pool("pool-a")
    worker = poll.worker(old, "w1")
    with started(worker):
        worker.send(Heartbeat(state="BUSY", running=("run-1",)))
        assert _drain(server, count=1)
        poll.reset(old)
        worker.send(Accept(run_id="run-2", lease_id="lease-2"))
        worker.send(_register("w1", "pool-a"))
        worker.send(Heartbeat(state="IDLE", running=()))
        worker.send(Heartbeat(state="DRAINED", running=("run-1",)))
        worker.send(Status(run_id="run-1", state="FINISHED", exit_code=0))
        worker.send(Bye(reason="cycled"))
        got = [r.body for r in _drain(server, count=3)]
        assert got == [
            Heartbeat(state="DRAINED", running=("run-1",)),
            Status(run_id="run-1", state="FINISHED", exit_code=0),
            Bye(reason="cycled"),
        ]
        assert server.receive(timeout_seconds=0.3) is None
        assert server.refusals["certificate_retiring"] >= 3
        # A new session with the old certificate is refused even within the grace.
        with pytest.raises(BrokerRefusedError):
            poll.worker(old, "w2").start(timeout_seconds=10)
        # The grace ends: the old certificate is refused like any other not current one.
        deadline = time.monotonic() + 10
        while worker.connected and time.monotonic() < deadline:
            worker.send(Heartbeat(state="DRAINED", running=()))
            time.sleep(0.2)
        assert not worker.connected
        assert server.refusals["certificate_not_current"] >= 1


def test_an_unknown_pool_is_refused(poll: PollHarness) -> None:
    unknown = poll.pool("pool-z", register=False)
    with pytest.raises(BrokerRefusedError):
        poll.worker(unknown, "w1").start(timeout_seconds=10)
    assert _server(poll).refusals["unknown_pool"] >= 1


def test_pool_a_can_never_read_ack_or_post_for_pool_b_or_another_worker(
    poll: PollHarness,
) -> None:
    pool_a = poll.pool("pool-a")
    pool_b = poll.pool("pool-b")
    server = _server(poll)
    with started(poll.worker(pool_b, "wb")) as wb, started(poll.worker(pool_a, "wa")) as wa:
        wb.send(_register("wb", "pool-b"))
        wa.send(_register("wa", "pool-a"))
        assert len(_drain(server, count=2)) == 2
        peer_b = WorkerAddress(pool_id="pool-b", worker_id="wb")
        secret = server.send(Start(run_id="run-b", lease_id="lease-b"), peer=peer_b)
        # Pool A's certificate with pool B's worker id and session is another address
        # (pool-a/wb): there is no such session to read from, post in or close.
        for method, path in (
            ("GET", wire.POLL_PATH),
            ("POST", wire.MESSAGES_PATH),
            ("DELETE", wire.SESSION_PATH),
        ):
            body = wire.encode_frames([b"{}"]) if method == "POST" else None
            status, _, data = _raw(
                poll, pool_a, method, path, worker_id="wb", session_id=wb.session_id, body=body
            )
            assert status == 410, (method, path)
            assert secret.id.encode() not in data
        # Another worker of the same pool: wa's certificate holder without wa's session id.
        for session_id in ("f" * 32, wb.session_id):
            status, headers, _ = _raw(
                poll, pool_a, "GET", wire.POLL_PATH, worker_id="wa", session_id=session_id
            )
            assert status == 410
            status, headers, _ = _raw(
                poll,
                pool_a,
                "POST",
                wire.SESSION_PATH,
                worker_id="wa",
                session_id=session_id,
                body=b"",
            )
            assert status == 409  # wa's live session cannot be taken over
            assert int(headers["Retry-After"]) >= 1
        # wa posting a register or a gone naming pool B or another worker: dropped as invalid.
        invalid_before = server.stats().invalid
        for register in (
            _register("wb", "pool-b"),
            _register("wa", "pool-b"),
            _register("x", "pool-a"),
        ):
            wa.send(register)
        time.sleep(1.0)
        assert server.stats().invalid - invalid_before == 3
        assert server.receive(timeout_seconds=0.2) is None
        # An ack from pool A for pool B's message does not clear it.
        assert _drain(wb, count=1)[0].body == Start(run_id="run-b", lease_id="lease-b")
        assert server.stats().outbox_messages == 0  # wb itself acked it


def test_refusals_for_malformed_oversized_and_unauthenticated_requests(poll: PollHarness) -> None:
    pool = poll.pool("pool-a")
    with started(poll.worker(pool, "w1")) as worker:
        sid = worker.session_id
        cases = [
            ("GET", wire.POLL_PATH, {"worker_id": None}, 400),
            ("GET", wire.POLL_PATH, {"session_id": None}, 400),
            ("GET", wire.POLL_PATH, {"session_id": "ABC"}, 400),
            ("GET", wire.POLL_PATH, {"worker_id": "../etc"}, 400),
            ("GET", wire.POLL_PATH, {"session_id": sid, "headers": {wire.WAIT_HEADER: "99"}}, 400),
            ("GET", wire.POLL_PATH, {"session_id": sid, "headers": {wire.WAIT_HEADER: "nan"}}, 400),
            (
                "GET",
                wire.POLL_PATH,
                {"session_id": sid, "headers": {wire.CURSOR_HEADER: "-1"}},
                400,
            ),
            ("POST", wire.MESSAGES_PATH, {"session_id": sid, "body": b"5\nab"}, 400),
            ("POST", wire.MESSAGES_PATH, {"session_id": sid, "body": b"05\nabcde"}, 400),
            ("POST", wire.MESSAGES_PATH, {"session_id": sid, "body": b"x"}, 400),
            (
                "POST",
                wire.MESSAGES_PATH,
                {"session_id": sid, "body": b"{}", "headers": {"Content-Type": "text/plain"}},
                415,
            ),
            (
                "POST",
                wire.MESSAGES_PATH,
                {"session_id": sid, "body": b"x" * (wire.MAX_BODY_BYTES + 1)},
                413,
            ),
            ("GET", "/v1/other", {}, 404),
            ("PUT", wire.POLL_PATH, {"session_id": sid}, 405),
        ]
        for method, path, kwargs, expected in cases:
            status, _, _ = _raw(poll, pool, method, path, **kwargs)  # type: ignore[arg-type]
            assert status == expected, (method, path, status)
        assert worker.connected  # the real session is unaffected


def test_a_worker_over_the_rate_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    options = PollServerOptions(
        requests_per_second=1.0, request_burst=3.0, will_delay_seconds=60, housekeeping_seconds=0.05
    )
    with running_poll_server(tmp_path, options=options) as h:
        pool = h.pool("pool-a")
        sid = "a" * 32
        assert _raw(h, pool, "POST", wire.SESSION_PATH, session_id=sid, body=b"")[0] == 204
        statuses = [
            _raw(h, pool, "GET", wire.POLL_PATH, session_id=sid, headers={wire.WAIT_HEADER: "0"})
            for _ in range(6)
        ]
        limited = [s for s in statuses if s[0] == 429]
        assert limited
        assert all(1 <= int(s[1]["Retry-After"]) <= 5 for s in limited)


def test_too_many_held_polls_get_503_with_retry_after(tmp_path: Path) -> None:
    options = PollServerOptions(max_held_polls=1, will_delay_seconds=60, housekeeping_seconds=0.05)
    with running_poll_server(tmp_path, options=options) as h:
        pool = h.pool("pool-a")
        with started(h.worker(pool, "w1")):
            time.sleep(0.3)  # w1 holds the only poll slot
            sid = "b" * 32
            assert (
                _raw(h, pool, "POST", wire.SESSION_PATH, worker_id="w2", session_id=sid, body=b"")[
                    0
                ]
                == 204
            )
            status, headers, _ = _raw(
                h, pool, "GET", wire.POLL_PATH, worker_id="w2", session_id=sid
            )
            assert status == 503
            assert int(headers["Retry-After"]) >= 5


def test_a_silent_worker_s_will_is_published_but_not_after_a_clean_close(
    poll: PollHarness,
) -> None:
    pool = poll.pool("pool-a")
    server = _server(poll)
    clean = poll.worker(pool, "clean")
    with started(clean):
        clean.send(Heartbeat(state="IDLE", running=()))
        assert _drain(server, count=1)
    crashed = poll.worker(pool, "crashed")
    crashed.start(timeout_seconds=10)
    crashed.send(Heartbeat(state="IDLE", running=()))
    assert _drain(server, count=1)
    crashed._stopping.set()  # dies: no bye, no session close
    got = _drain(server, count=1, timeout=FAST_SERVER.will_delay_seconds + 30)
    assert [(r.peer.worker_id, r.body.TYPE) for r in got] == [("crashed", "gone")]
    assert server.receive(timeout_seconds=2) is None  # no will for the clean one


class _Relay:
    """A loopback TCP relay whose connections the test can cut (a network failure)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.down = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def test_a_connection_cut_mid_poll_loses_and_duplicates_nothing(poll: PollHarness) -> None:
    pool = poll.pool("pool-a")
    server = _server(poll)
    relay = _Relay(poll.port)
    try:
        worker = poll.worker(pool, "w1", url=f"https://localhost:{relay.port}")
        with started(worker):
            worker.send(_register("w1", "pool-a"))
            [first] = _drain(server, count=1)
            peer = first.peer
            time.sleep(0.3)  # the poll is held now
            relay.down = True
            relay.cut()
            for i in range(10):
                server.send(Cancel(run_id=f"down-{i}"), peer=peer)
                worker.send(
                    Status(
                        run_id=f"run-{i}",
                        state="RUNNING",
                        exit_code=None,
                        reason=None,
                        message=None,
                    )
                )
            time.sleep(1.0)
            relay.down = False
            to_worker = _drain(worker, count=10, timeout=20)
            # The cut outlasted the 1 s will delay: the control plane may get the worker's
            # will (a suspicion it handles); everything else arrives exactly once.
            to_server = [r for r in _drain(server, count=11, timeout=20) if r.body.TYPE != "gone"]
            assert [r.body for r in to_worker] == [Cancel(run_id=f"down-{i}") for i in range(10)]
            assert sorted(getattr(r.body, "run_id", "") for r in to_server) == sorted(
                f"run-{i}" for i in range(10)
            )
            assert worker.receive(timeout_seconds=6) is None  # nothing twice
            assert server.receive(timeout_seconds=0.5) is None
            assert worker.stats().reconnects >= 2
    finally:
        relay.close()


def test_worker_messages_survive_a_control_plane_restart_exactly_once(
    poll: PollHarness,
) -> None:
    pool = poll.pool("pool-a")
    worker = poll.worker(pool, "w1")
    with started(worker):
        worker.send(_register("w1", "pool-a"))
        assert _drain(_server(poll), count=1)
        poll.stop()
        for i in range(20):
            worker.send(Accept(run_id=f"run-{i}", lease_id=f"lease-{i}"))
        poll.start()
        got = _drain(_server(poll), count=20, timeout=20)
        assert sorted(getattr(r.body, "run_id", "") for r in got) == sorted(
            f"run-{i}" for i in range(20)
        )
        time.sleep(6)  # past one retransmission interval
        assert _server(poll).receive(timeout_seconds=0.5) is None
        assert worker.stats().outbox_messages == 0


def test_a_worker_behind_tinyproxy_connects_with_connect_and_end_to_end_tls(
    poll: PollHarness, tmp_path: Path
) -> None:
    tinyproxy = require_tool("tinyproxy")
    port = free_port()
    log = tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\nLogLevel Connect\n'
        f"MaxClients 20\nAllow 127.0.0.1\nConnectPort {poll.port}\nDisableViaHeader Yes\n"
    )
    process = subprocess.Popen(
        [tinyproxy, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        pool = poll.pool("pool-a")
        environ = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": "example.org"}
        proxy = Proxy.for_url(poll.url, environ=environ)
        assert proxy is not None
        server = _server(poll)
        with started(poll.worker(pool, "w1", proxy=proxy)) as worker:
            worker.send(_register("w1", "pool-a"))
            [got] = _drain(server, count=1)
            server.send(Cancel(run_id="via-proxy"), peer=got.peer)
            assert _drain(worker, count=1)[0].body == Cancel(run_id="via-proxy")
        assert f"CONNECT localhost:{poll.port}" in log.read_text(errors="replace")
        # TLS is end to end through the tunnel: a foreign certificate is still refused by the
        # server behind the proxy, and the worker still checks the server against the pool CA.
        foreign = poll.pool(
            "pool-a", ca=CertificateAuthority.generate(key_type="EC-P256"), register=False
        )
        with pytest.raises(BrokerRefusedError):
            poll.worker(foreign, "w2", proxy=proxy).start(timeout_seconds=10)
    finally:
        process.terminate()
        process.wait(10)


def test_no_proxy_and_proxy_credentials_are_honoured_and_never_shown() -> None:
    env = {"HTTPS_PROXY": "http://user:CANARY-secret@proxy.corp:3128", "NO_PROXY": ".internal"}
    proxy = Proxy.for_url("https://cp.example.com", environ=env)
    assert proxy is not None
    assert (proxy.host, proxy.port) == ("proxy.corp", 3128)
    assert "CANARY" not in repr(proxy)
    assert Proxy.for_url("https://cp.internal", environ=env) is None
    assert Proxy.for_url("https://a.cp.internal:8443", environ=env) is None
    assert Proxy.for_url("https://cp.example.com", environ={}) is None
    with pytest.raises(Exception, match="http:// proxy"):
        Proxy.for_url("https://cp.example.com", environ={"HTTPS_PROXY": "socks5://p:1080"})


def test_server_refuses_to_start_on_a_busy_port(poll: PollHarness) -> None:
    other = PollServer(
        host="127.0.0.1",
        port=poll.port,
        namespace="spacelift",
        ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        certificates=_server(poll)._certificates,
    )
    with pytest.raises(Exception, match="cannot listen"):
        other.start(timeout_seconds=5)


def test_messages_to_workers_survive_a_control_plane_restart_with_the_journal(
    poll: PollHarness,
) -> None:
    """Unacknowledged control plane → worker messages are in the store's journal: after a
    restart the same messages (same ids) go out, each delivered exactly once."""
    from hardened_launcher.controlplane.store import SqliteOutboxJournal, Store  # noqa: PLC0415

    store_path = poll.directory / "store.sqlite3"
    Store(store_path, create=True).close()
    journals = [SqliteOutboxJournal(store_path)]
    poll.restart(journal=journals[-1])
    pool = poll.pool("pool-a")
    relay = _Relay(poll.port)
    try:
        worker = poll.worker(pool, "w1", url=f"https://localhost:{relay.port}")
        with started(worker):
            worker.send(_register("w1", "pool-a"))
            [first] = _drain(_server(poll), count=1)
            delivered_before = [_server(poll).send(Cancel(run_id="before"), peer=first.peer)]
            assert _drain(worker, count=1)[0].message.id == delivered_before[0].id
            deadline = time.monotonic() + 10
            while _server(poll).stats().outbox_messages and time.monotonic() < deadline:
                time.sleep(0.05)  # the worker's ack is in
            relay.down = True
            relay.cut()
            pending = [
                _server(poll).send(Start(run_id=f"run-{i}", lease_id=f"lease-{i}"), peer=first.peer)
                for i in range(5)
            ]
            time.sleep(0.3)
            assert _server(poll).stats().outbox_messages == 5
            journals.append(SqliteOutboxJournal(store_path))
            poll.restart(journal=journals[-1])  # the old server's memory is gone
            assert _server(poll).stats().outbox_messages == 5
            relay.down = False
            got = _drain(worker, count=5, timeout=20)
            assert sorted(r.message.id for r in got) == sorted(m.id for m in pending)
            assert worker.receive(timeout_seconds=6) is None  # nothing twice
            deadline = time.monotonic() + 10
            while _server(poll).stats().outbox_messages and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _server(poll).stats().outbox_messages == 0
            assert journals[-1].load() == []  # acked: gone from the journal too
    finally:
        relay.close()
        for journal in journals:
            journal.close()


def test_slow_or_silent_clients_are_cut_and_connections_are_capped(tmp_path: Path) -> None:
    options = PollServerOptions(
        keepalive_timeout_seconds=1.0,
        handshake_timeout_seconds=1.0,
        max_connections=3,
        will_delay_seconds=60,
        housekeeping_seconds=0.05,
    )
    with running_poll_server(tmp_path, options=options) as h:
        pool = h.pool("pool-a")
        context = build_tls_context(TlsCredentials.for_pool(pool.token, pool.key))
        # No TLS handshake at all: dropped after the handshake timeout.
        silent = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        # A handshake, then headers that trickle in and never end.
        raw = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        slow = context.wrap_socket(raw, server_hostname="localhost")
        slow.sendall(b"GET /v1/poll HTTP/1.1\r\nHost: localhost\r\n")
        started_at = time.monotonic()
        # The cap: with two connections open, a third is allowed, a fourth closed at once.
        third = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        fourth = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        assert fourth.recv(1) == b""
        assert _server(h).refusals["too_many_connections"] >= 1
        assert silent.recv(1) == b""
        try:
            data = slow.recv(1)
        except (ssl.SSLError, OSError):
            data = b""
        assert data == b""  # closed, with no response
        assert time.monotonic() - started_at < 8
        for s in (silent, slow, third, fourth):
            s.close()
        deadline = time.monotonic() + 5
        while _server(h).connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _server(h).connections() == 0
