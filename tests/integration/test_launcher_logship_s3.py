"""ChunkedLogSink against a real S3 API that checks signatures (SeaweedFS), with real presigned
URLs from the control plane's LogStorage.

Object storage "going down" is a TCP relay in front of SeaweedFS that stops listening (and cuts
open connections) and later listens again on the same port: the presigned URLs name the relay,
and SigV4 signs the Host header the relay passes through unchanged. This leaves the shared
session fixture untouched for its other users.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig
from hardened_launcher.launcher.logship import ChunkedLogSink, resume_spooled
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.secrets import Secret
from tests.integration.s3_server import S3Server, free_ports, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


class Relay:
    """A loopback TCP relay that can be switched off and on (same port)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_ports(1)[0]
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(s3_server: S3Server) -> Iterator[Relay]:  # noqa: F811
    port = urlsplit(s3_server.endpoint_url).port
    assert port is not None
    relay = Relay(port)
    relay.start()
    yield relay
    relay.stop()


def storage_for(server: S3Server, endpoint_url: str) -> LogStorage:
    bucket = f"hl-ship-{secrets.token_hex(4)}"
    server.client().create_bucket(Bucket=bucket)
    return LogStorage(
        LogStorageConfig(
            bucket=bucket,
            endpoint_url=endpoint_url,
            region=server.region,
            access_key_id=server.access_key,
            secret_access_key=Secret(server.secret_key),
            url_expiry_seconds=300,
            urls_per_batch=4,
        )
    )


def control_plane(
    storage: LogStorage, run_id: str, holder: list[ChunkedLogSink]
) -> Callable[[int], None]:
    """request_more as the control plane answers it: the next batch of presigned URLs."""

    def request_more(from_chunk: int) -> None:
        holder[0].add_urls(storage.urls(run_id, from_chunk=from_chunk))

    return request_more


def read_all(storage: LogStorage, run_id: str) -> bytes:
    return b"".join(data for _, data in storage.read_from(run_id, 0))


def assert_exactly_once(storage: LogStorage, server: S3Server, run_id: str, count: int) -> None:
    listing = server.client().list_objects_v2(
        Bucket=storage.config.bucket, Prefix=f"runs/{run_id}/"
    )
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert keys == [f"runs/{run_id}/chunk-{n:06d}" for n in range(count)]


def make_sink(
    storage: LogStorage, run_id: str, spool: Path, metrics: LauncherMetrics | None = None
) -> ChunkedLogSink:
    holder: list[ChunkedLogSink] = []
    sink = ChunkedLogSink(
        run_id=run_id,
        spool_dir=spool,
        initial_urls=storage.urls(run_id, from_chunk=0),
        request_more=control_plane(storage, run_id, holder),
        chunk_bytes=8 * 1024,
        flush_seconds=0.2,
        metrics=metrics,
        retry_base_seconds=0.1,
        retry_max_seconds=1.0,
        request_interval_seconds=0.5,
    )
    holder.append(sink)
    return sink


def test_all_chunks_arrive_exactly_once(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    storage = storage_for(s3_server, s3_server.endpoint_url)
    sink = make_sink(storage, "run-ship-1", tmp_path / "spool")
    expected = bytearray()
    for i in range(400):
        line = f"line {i:04d} ".encode() + os.urandom(200).hex().encode() + b"\n"
        sink.write("stdout" if i % 3 else "stderr", line)
        expected += line
    report = sink.close(60)
    assert report.complete, report
    assert report.failed_attempts == 0
    assert read_all(storage, "run-ship-1") == bytes(expected)
    assert_exactly_once(storage, s3_server, "run-ship-1", report.chunks)
    assert report.chunks == -(-len(expected) // (8 * 1024))
    assert not (tmp_path / "spool" / "run-ship-1").exists()


def test_storage_down_then_back_spools_and_delivers(
    s3_server: S3Server,  # noqa: F811
    relay: Relay,
    tmp_path: Path,
) -> None:
    storage = storage_for(s3_server, relay.endpoint_url)
    metrics = LauncherMetrics()
    run_id = "run-ship-outage"
    sink = make_sink(storage, run_id, tmp_path / "spool", metrics)
    expected = bytearray()

    def emit(n: int) -> None:
        for _ in range(n):
            line = os.urandom(300).hex().encode() + b"\n"
            sink.write("stdout", line)
            expected.extend(line)

    emit(40)
    time.sleep(0.5)
    relay.stop()  # object storage unreachable
    emit(80)
    time.sleep(3.0)
    during = sink.report()
    assert during.pending, during  # chunks wait on disk
    assert during.failed_attempts > 0
    spooled = metrics.log_spooled_bytes._value.get()
    assert spooled == during.spooled_bytes > 0
    run_dir = tmp_path / "spool" / run_id
    assert {p.name for p in run_dir.iterdir()} >= {f"chunk-{n:06d}" for n in during.pending}
    relay.start()  # back
    emit(20)
    report = sink.close(60)
    assert report.complete, report
    assert read_all(storage, run_id) == bytes(expected)
    assert_exactly_once(storage, s3_server, run_id, report.chunks)
    assert metrics.log_spooled_bytes._value.get() == 0


def test_restarted_launcher_ships_the_spool(
    s3_server: S3Server,  # noqa: F811
    relay: Relay,
    tmp_path: Path,
) -> None:
    storage = storage_for(s3_server, relay.endpoint_url)
    run_id = "run-ship-restart"
    spool = tmp_path / "spool"
    relay.stop()
    sink = make_sink(storage, run_id, spool)
    data = os.urandom(30_000)
    sink.write("stdout", data)
    sink.shutdown(5)  # the launcher stops with everything spooled
    relay.start()

    asked: list[tuple[str, int]] = []
    resumed = resume_spooled(
        spool,
        request_more=lambda rid, n: asked.append((rid, n)),
        retry_base_seconds=0.1,
        retry_max_seconds=1.0,
    )
    report = resumed[run_id].wait(60)
    assert report.complete, report
    assert asked == []  # the saved presigned URLs were still valid
    assert read_all(storage, run_id) == data
    assert_exactly_once(storage, s3_server, run_id, 4)
