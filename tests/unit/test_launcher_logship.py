"""ChunkedLogSink and StdoutJsonLinesSink with a fake uploader (no network)."""

from __future__ import annotations

import io
import json
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.errors import InfrastructureError
from hardened_launcher.launcher.logship import (
    ChunkedLogSink,
    LogShipReport,
    StdoutJsonLinesSink,
    UploadError,
    resume_spooled,
    spooled_runs,
)
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.transport.messages import LogUrl

RUN = "run-1"


def url_for(chunk: int, run_id: str = RUN, generation: int = 0) -> str:
    return f"http://s3.test/b/runs/{run_id}/chunk-{chunk:06d}?gen={generation}"


def urls(first: int, count: int, run_id: str = RUN) -> list[LogUrl]:
    return [LogUrl(chunk=n, url=url_for(n, run_id)) for n in range(first, first + count)]


class FakeStore:
    """A fake uploader: a dict of key → bytes, with scripted failures."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[tuple[str, int]] = []
        self.fail_next: list[UploadError] = []
        self.down = False
        self.reject_urls: set[str] = set()
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, url: str, data: bytes) -> None:
        self.gate.wait(10)
        with self.lock:
            key = url.split("?", 1)[0]
            self.puts.append((key, len(data)))
            if self.down:
                raise UploadError("down")
            if url in self.reject_urls:
                raise UploadError("expired", status=403)
            if self.fail_next:
                raise self.fail_next.pop(0)
            self.objects[key] = bytes(data)

    def chunks(self, run_id: str = RUN) -> list[bytes]:
        prefix = f"http://s3.test/b/runs/{run_id}/chunk-"
        keys = sorted(k for k in self.objects if k.startswith(prefix))
        assert [int(k[len(prefix) :]) for k in keys] == list(range(len(keys)))
        return [self.objects[k] for k in keys]


class Requests:
    def __init__(self) -> None:
        self.calls: list[int] = []
        self.event = threading.Event()

    def __call__(self, from_chunk: int) -> None:
        self.calls.append(from_chunk)
        self.event.set()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def sinks() -> Iterator[list[ChunkedLogSink]]:
    made: list[ChunkedLogSink] = []
    yield made
    for sink in made:
        sink.shutdown(1.0)


def make(
    sinks: list[ChunkedLogSink],
    tmp_path: Path,
    store: FakeStore,
    *,
    initial: list[LogUrl] | None = None,
    request_more: Callable[[int], None] | None = None,
    chunk_bytes: int = 4,
    flush_seconds: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    metrics: LauncherMetrics | None = None,
    run_id: str = RUN,
) -> ChunkedLogSink:
    sink = ChunkedLogSink(
        run_id=run_id,
        spool_dir=tmp_path / "spool",
        initial_urls=urls(0, 64, run_id) if initial is None else initial,
        request_more=request_more or Requests(),
        chunk_bytes=chunk_bytes,
        flush_seconds=flush_seconds,
        uploader=store,
        clock=clock,
        metrics=metrics,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
        request_interval_seconds=0.05,
    )
    sinks.append(sink)
    return sink


def test_chunks_by_size_in_order(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    sink = make(sinks, tmp_path, store, chunk_bytes=4)
    sink.write("stdout", b"abcdefghij")
    sink.write("stderr", b"kl")
    report = sink.close(5)
    assert report.complete
    assert report == LogShipReport(
        run_id=RUN,
        chunks=3,
        uploaded=3,
        pending=(),
        spooled_bytes=0,
        failed_attempts=0,
        closed=True,
    )
    assert store.chunks() == [b"abcd", b"efgh", b"ijkl"]
    assert [k for k, _ in store.puts] == [url_for(n).split("?")[0] for n in range(3)]
    assert not (tmp_path / "spool" / RUN).exists()


def test_chunk_cut_by_time_on_write(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    now = [100.0]
    sink = make(sinks, tmp_path, store, chunk_bytes=1024, flush_seconds=2.0, clock=lambda: now[0])
    sink.write("stdout", b"first ")
    now[0] += 1.0
    sink.write("stdout", b"line\n")
    now[0] += 2.5
    sink.write("stdout", b"second\n")
    assert sink.report().chunks == 1
    sink.close(5)
    assert store.chunks() == [b"first line\n", b"second\n"]


def test_chunk_cut_by_time_in_background(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    sink = make(sinks, tmp_path, store, chunk_bytes=1024, flush_seconds=0.05)
    sink.write("stdout", b"quiet run\n")
    deadline = time.monotonic() + 5
    while not store.objects and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.chunks() == [b"quiet run\n"]
    assert sink.report().chunks == 1
    assert sink.close(5).complete


def test_spooled_files_are_private_and_fsynced_before_upload(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    store.gate.clear()  # hold uploads
    sink = make(sinks, tmp_path, store, chunk_bytes=3)
    sink.write("stdout", b"abcdef")
    run_dir = tmp_path / "spool" / RUN
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    files = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("chunk-"))
    assert files == ["chunk-000000", "chunk-000001"]
    for name in files:
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / "urls.json").stat().st_mode) == 0o600
    assert (run_dir / "chunk-000001").read_bytes() == b"def"
    store.gate.set()
    assert sink.close(5).complete


def test_retry_then_success_overwrites_the_same_key(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    metrics = LauncherMetrics()
    store.fail_next = [UploadError("boom", status=500), UploadError("net")]
    sink = make(sinks, tmp_path, store, chunk_bytes=2, metrics=metrics)
    sink.write("stdout", b"ab")
    report = sink.close(5)
    assert report.complete
    assert report.failed_attempts == 2
    key = url_for(0).split("?")[0]
    assert store.puts == [(key, 2), (key, 2), (key, 2)]
    assert store.chunks() == [b"ab"]
    text = metrics.render().decode()
    assert "hl_log_chunk_upload_failures_total 2.0" in text
    assert "hl_log_chunks_uploaded_total 1.0" in text
    assert "hl_log_spooled_bytes 0.0" in text


def test_no_url_requests_more_then_add_urls(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    requests = Requests()
    sink = make(sinks, tmp_path, store, initial=urls(0, 2), request_more=requests, chunk_bytes=2)
    sink.write("stdout", b"aabbccdd")
    assert requests.event.wait(5)
    assert requests.calls[0] == 2
    report = sink.close(0.2)
    assert not report.complete
    assert report.pending == (2, 3)
    assert report.spooled_bytes == 4
    assert (tmp_path / "spool" / RUN / "chunk-000003").read_bytes() == b"dd"
    sink.add_urls(urls(2, 16))
    report = sink.wait(5)
    assert report.complete
    assert store.chunks() == [b"aa", b"bb", b"cc", b"dd"]


def test_request_more_is_debounced(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    requests = Requests()
    sink = make(sinks, tmp_path, store, initial=[], request_more=requests, chunk_bytes=2)
    sink.write("stdout", b"aa")
    time.sleep(0.5)
    # interval 0.05 s doubling: 0.05, 0.1, 0.2 … → a handful of calls in 0.5 s, not hundreds
    assert 1 <= len(requests.calls) <= 6
    assert set(requests.calls) == {0}
    sink.add_urls(urls(0, 1))
    assert sink.close(5).complete


def test_rejected_url_is_dropped_and_refreshed(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    requests = Requests()
    store.reject_urls.add(url_for(0))
    sink = make(sinks, tmp_path, store, initial=urls(0, 1), request_more=requests, chunk_bytes=2)
    sink.write("stdout", b"aa")
    assert requests.event.wait(5)
    assert requests.calls[0] == 0
    sink.add_urls([LogUrl(chunk=0, url=url_for(0, generation=1))])
    assert sink.close(5).complete
    assert store.chunks() == [b"aa"]


def test_close_waits_and_reports_pending_when_store_is_down(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    store.down = True
    sink = make(sinks, tmp_path, store, chunk_bytes=3)
    sink.write("stdout", b"abcdefg")
    started = time.monotonic()
    report = sink.close(0.3)
    assert time.monotonic() - started >= 0.25
    assert report.closed
    assert not report.complete
    assert report.pending == (0, 1, 2)
    assert report.failed_attempts >= 1
    store.down = False  # uploads go on after close returned
    assert sink.wait(5).complete
    assert store.chunks() == [b"abc", b"def", b"g"]


def test_write_after_close_is_refused(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    sink = make(sinks, tmp_path, store)
    sink.close(5)
    with pytest.raises(ValueError, match="closed"):
        sink.write("stdout", b"late")


def test_same_run_twice_in_one_spool_is_refused(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    store.gate.clear()
    sink = make(sinks, tmp_path, store)
    sink.write("stdout", b"abcd")
    with pytest.raises(InfrastructureError) as info:
        make(sinks, tmp_path, store)
    assert info.value.reason == "log_spool_conflict"
    store.gate.set()
    assert sink.close(5).complete


def test_restart_resumes_spooled_chunks_and_open_part(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    store.down = True
    first = make(sinks, tmp_path, store, chunk_bytes=4)
    first.write("stdout", b"abcdefghij")  # two sealed chunks and an open part "ij"
    first.shutdown(2)  # the launcher exits (or is killed) mid-run
    spool = tmp_path / "spool"
    assert spooled_runs(spool) == [RUN]
    names = sorted(p.name for p in (spool / RUN).iterdir())
    assert names == ["chunk-000000", "chunk-000001", "chunk-000002.part", "urls.json"]

    store.down = False
    asked: list[tuple[str, int]] = []
    resumed = resume_spooled(
        spool,
        request_more=lambda run_id, n: asked.append((run_id, n)),
        uploader=store,
        retry_base_seconds=0.01,
        retry_max_seconds=0.05,
    )
    assert list(resumed) == [RUN]
    sink = resumed[RUN]
    sinks.append(sink)
    report = sink.wait(5)
    assert report.complete  # the saved URLs were still good
    assert asked == []
    assert store.chunks() == [b"abcd", b"efgh", b"ij"]
    assert not (spool / RUN).exists()


def test_resume_without_saved_urls_asks_for_them(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    run_dir = tmp_path / "spool" / "run-9"
    run_dir.mkdir(parents=True)
    (run_dir / "chunk-000000").write_bytes(b"x")
    (run_dir / "chunk-000001.part").write_bytes(b"")
    asked: list[tuple[str, int]] = []
    resumed = resume_spooled(
        tmp_path / "spool",
        request_more=lambda run_id, n: asked.append((run_id, n)),
        uploader=store,
    )
    sink = resumed["run-9"]
    sinks.append(sink)
    deadline = time.monotonic() + 5
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asked[0] == ("run-9", 0)
    assert sink.report().pending == (0,)
    sink.add_urls(urls(0, 16, "run-9"))
    assert sink.wait(5).complete
    assert store.chunks("run-9") == [b"x"]


def test_exactly_once_numbering_under_concurrent_writers(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink]
) -> None:
    holder: list[ChunkedLogSink] = []

    def control_plane(from_chunk: int) -> None:  # answers like the real one, 16 at a time
        holder[0].add_urls(urls(from_chunk, 16))

    sink = make(
        sinks, tmp_path, store, initial=urls(0, 16), request_more=control_plane, chunk_bytes=7
    )
    holder.append(sink)
    pieces = {f"w{w}": [f"<{w}:{i}>".encode() for i in range(200)] for w in range(8)}

    def writer(name: str) -> None:
        for piece in pieces[name]:
            sink.write("stdout", piece)

    threads = [threading.Thread(target=writer, args=(name,)) for name in pieces]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = sink.close(10)
    assert report.complete
    chunks = store.chunks()
    assert all(len(c) == 7 for c in chunks[:-1])
    total = sum(len(p) for ps in pieces.values() for p in ps)
    assert len(chunks) == report.chunks == report.uploaded == -(-total // 7)
    stream = b"".join(chunks)
    for ps in pieces.values():  # every write landed whole and in its writer's order
        positions = [stream.index(p) for p in ps]
        assert positions == sorted(positions)
    assert len(store.puts) == len(chunks)  # no chunk uploaded twice


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.tuples(st.sampled_from(["stdout", "stderr"]), st.binary(max_size=40)), max_size=30
    ),
    chunk_bytes=st.integers(min_value=1, max_value=17),
)
def test_concatenation_of_chunks_equals_input(
    tmp_path_factory: pytest.TempPathFactory,
    writes: list[tuple[str, bytes]],
    chunk_bytes: int,
) -> None:
    store = FakeStore()
    made: list[ChunkedLogSink] = []
    # Up to 30 writes of 40 bytes at 1 byte a chunk: URLs for every chunk up front (this test
    # is about the bytes, not about asking for more URLs).
    sink = make(
        made,
        tmp_path_factory.mktemp("h"),
        store,
        chunk_bytes=chunk_bytes,
        initial=urls(0, 30 * 40 + 1),
    )
    try:
        for channel, data in writes:
            sink.write(channel, data)  # type: ignore[arg-type]
        report = sink.close(10)
    finally:
        sink.shutdown(1)
    assert report.complete
    chunks = store.chunks()
    assert b"".join(chunks) == b"".join(d for _, d in writes)
    assert all(0 < len(c) <= chunk_bytes for c in chunks)


def test_rejects_bad_arguments(tmp_path: Path, store: FakeStore) -> None:
    with pytest.raises(ValueError, match="run id"):
        ChunkedLogSink(
            run_id="../x", spool_dir=tmp_path, initial_urls=(), request_more=lambda _n: None
        )
    with pytest.raises(ValueError, match="chunk_bytes"):
        ChunkedLogSink(
            run_id="r",
            spool_dir=tmp_path,
            initial_urls=(),
            request_more=lambda _n: None,
            chunk_bytes=0,
        )


def test_contents_never_reach_the_log(
    tmp_path: Path, store: FakeStore, sinks: list[ChunkedLogSink], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    store.fail_next = [UploadError("boom", status=500)]
    sink = make(sinks, tmp_path, store, chunk_bytes=64)
    sink.write("stdout", b"CANARY-7f3a9\n")
    sink.close(5)
    assert "CANARY-7f3a9" not in caplog.text
    assert "s3.test" not in caplog.text  # nor a presigned URL
    assert "chunk 0" in caplog.text


# -- StdoutJsonLinesSink -----------------------------------------------------------------------

FIXED = datetime(2025, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)


def lines_of(buffer: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_stdout_json_lines_split_and_buffer() -> None:
    out = io.StringIO()
    sink = StdoutJsonLinesSink("run-1", out, clock=lambda: FIXED)
    sink.write("stdout", b"hel")
    assert out.getvalue() == ""
    sink.write("stdout", b"lo\nwor")
    sink.write("stderr", b"oops\r\n")
    sink.write("stdout", b"ld\n\n")
    sink.write("stderr", b"tail")
    sink.close()
    assert lines_of(out) == [
        {
            "run_id": "run-1",
            "channel": "stdout",
            "ts": "2025-01-02T03:04:05.678900Z",
            "line": "hello",
        },
        {
            "run_id": "run-1",
            "channel": "stderr",
            "ts": "2025-01-02T03:04:05.678900Z",
            "line": "oops",
        },
        {
            "run_id": "run-1",
            "channel": "stdout",
            "ts": "2025-01-02T03:04:05.678900Z",
            "line": "world",
        },
        {"run_id": "run-1", "channel": "stdout", "ts": "2025-01-02T03:04:05.678900Z", "line": ""},
        {
            "run_id": "run-1",
            "channel": "stderr",
            "ts": "2025-01-02T03:04:05.678900Z",
            "line": "tail",
        },
    ]


def test_stdout_json_lines_bounded_and_safe() -> None:
    out = io.StringIO()
    sink = StdoutJsonLinesSink("r", out, max_line_bytes=4)
    sink.write("stdout", b"abcdefghij")
    assert [d["line"] for d in lines_of(out)] == ["abcd", "efgh"]
    sink.write("stdout", b"\n\x1b[31m\xff\n")
    sink.close()
    got = [d["line"] for d in lines_of(out)]
    assert got == ["abcd", "efgh", "ij", "\x1b[31", "m\ufffd"]
    assert "\x1b" not in out.getvalue()  # escaped in the JSON text
    assert out.getvalue().isascii()


def test_stdout_json_lines_thread_safe() -> None:
    out = io.StringIO()
    sink = StdoutJsonLinesSink("r", out)

    def writer(n: int) -> None:
        for i in range(300):
            sink.write("stdout" if n % 2 else "stderr", f"{n}-{i}\n".encode())

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    got = sorted(d["line"] for d in lines_of(out))
    assert got == sorted(f"{n}-{i}" for n in range(6) for i in range(300))
