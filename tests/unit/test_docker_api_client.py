"""The Docker Engine API client against a fake daemon: a unix-socket server made here that
answers each request with scripted bytes (status codes, content-length and chunked bodies,
oversized, truncated, slow and malformed answers), and against no daemon at all."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hardened_launcher.docker_api import (
    DockerClient,
    DockerConnectionError,
    DockerError,
    DockerHostError,
    DockerProtocolError,
    DockerStatusError,
    DockerTimeoutError,
    Endpoint,
    ImageNotFoundError,
    NotFoundError,
)
from hardened_launcher.errors import EXIT_CONFIGURATION, EXIT_RETRYABLE, LauncherError
from hardened_launcher.executor.errors import (
    ContainerRuntimeError,
    DockerUnavailableError,
    ImageMissingError,
)
from hardened_launcher.executor.runner import translate_docker_error

CANARY = "CANARYdockerhost8f3a"
#: One step of an answer: bytes to send, then seconds to wait.
Script = list[tuple[bytes, float]]


class FakeDaemon:
    """Serves each connection with ``answer(request_head)``; records the request heads."""

    def __init__(self, path: str, answer: Callable[[bytes], Script], *, hold: bool) -> None:
        self.path = path
        self.answer = answer
        self.hold = hold
        self.requests: list[bytes] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            with conn:
                head = bytearray()
                while b"\r\n\r\n" not in head:
                    piece = conn.recv(4096)
                    if not piece:
                        break
                    head += piece
                headers, _, body = bytes(head).partition(b"\r\n\r\n")
                for line in headers.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        while len(body) < int(value):
                            piece = conn.recv(65536)
                            if not piece:
                                break
                            body += piece
                self.requests.append(bytes(head))
                try:
                    for data, pause in self.answer(bytes(head)):
                        if data:
                            conn.sendall(data)
                        if pause:
                            time.sleep(pause)
                    if self.hold:
                        self._stop.wait(5)
                except OSError:
                    continue

    def close(self) -> None:
        self._stop.set()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:  # out of accept()
            wake.connect(self.path)
        self._thread.join(timeout=10)
        self._server.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # sockaddr_un paths are short: pytest's tmp_path can be too long for one.
    path = Path(tempfile.mkdtemp(prefix="hl-da-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Serve = Callable[..., tuple[DockerClient, FakeDaemon]]


@pytest.fixture
def serve(short_dir: Path) -> Iterator[Serve]:
    daemons: list[FakeDaemon] = []

    def start(
        answer: Script | Callable[[bytes], Script], *, timeout: float = 2.0, hold: bool = False
    ) -> tuple[DockerClient, FakeDaemon]:
        script = answer if callable(answer) else (lambda _head: answer)
        daemon = FakeDaemon(str(short_dir / f"d{len(daemons)}.sock"), script, hold=hold)
        daemons.append(daemon)
        return DockerClient(Endpoint(socket_path=daemon.path), timeout_seconds=timeout), daemon

    yield start
    for daemon in daemons:
        daemon.close()


def reply(status: str, body: bytes, *, content_type: str = "application/json") -> Script:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return [(head + body, 0.0)]


def chunked(status: str, pieces: list[bytes]) -> Script:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    script: Script = [(head.encode(), 0.0)]
    script += [(f"{len(p):x}\r\n".encode() + p + b"\r\n", 0.0) for p in pieces]
    script.append((b"0\r\n\r\n", 0.0))
    return script


# -- answers that are the Engine API --------------------------------------------------------------
def test_content_length_json_and_the_pinned_api_version(serve: Serve) -> None:
    client, daemon = serve(reply("200 OK", b'{"ServerVersion": "20.10", "Runtimes": {"runc": {}}}'))
    assert client.info() == {"ServerVersion": "20.10", "Runtimes": {"runc": {}}}
    assert daemon.requests[0].startswith(b"GET /v1.41/info HTTP/1.1\r\n")


def test_chunked_body_split_anywhere(serve: Serve) -> None:
    body = json.dumps([{"Id": "a" * 64, "State": "running", "Labels": {"k": "v"}}]).encode()
    client, daemon = serve(chunked("200 OK", [body[:1], body[1:7], body[7:]]))
    assert client.containers(labels=["k=v"]) == json.loads(body)
    request_line = daemon.requests[0].split(b"\r\n", 1)[0]
    assert b"all=1" in request_line
    assert b"filters=%7B%22label%22%3A+%5B%22k%3Dv%22%5D%7D" in request_line


def test_create_posts_the_body_and_returns_the_id(short_dir: Path) -> None:
    seen: list[bytes] = []
    path = str(short_dir / "c.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def one() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += conn.recv(65536)
            seen.append(data)
            body = b'{"Id": "cafe", "Warnings": []}'
            conn.sendall(
                b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    thread = threading.Thread(target=one)
    thread.start()
    try:
        created = DockerClient(Endpoint(socket_path=path)).create_container({"Image": "busybox"})
    finally:
        thread.join(timeout=10)
        server.close()
    assert created == "cafe"
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1.41/containers/create HTTP/1.1")
    assert json.loads(body) == {"Image": "busybox"}


def test_no_content_answers(serve: Serve) -> None:
    client, _ = serve([(b"HTTP/1.1 204 No Content\r\n\r\n", 0.0)])
    client.start("c1")
    client.remove_container("c1")
    client, _ = serve([(b"HTTP/1.1 304 Not Modified\r\n\r\n", 0.0)])
    client.stop("c1", timeout=0)  # already stopped


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        ("400 Bad Request", DockerStatusError),
        ("409 Conflict", DockerStatusError),
        ("500 Internal Server Error", DockerStatusError),
        ("404 Not Found", NotFoundError),
    ],
)
def test_status_codes_become_typed_errors(
    serve: Serve, status: str, kind: type[DockerStatusError]
) -> None:
    client, _ = serve(reply(status, b'{"message": "no such container: c1\\u001b[31m"}'))
    with pytest.raises(kind) as caught:
        client.inspect_container("c1")
    assert caught.value.status == int(status.split(maxsplit=1)[0])
    assert "no such container: c1" in caught.value.detail
    assert "\x1b" not in caught.value.detail  # the daemon's text is made printable


def test_a_missing_image_is_its_own_error(serve: Serve) -> None:
    client, _ = serve(reply("404 Not Found", b'{"message": "No such image: x:1"}'))
    with pytest.raises(ImageNotFoundError):
        client.create_container({"Image": "x:1"})
    with pytest.raises(ImageNotFoundError):
        client.inspect_image("x:1")


def test_ping(serve: Serve) -> None:
    client, _ = serve(reply("200 OK", b"OK", content_type="text/plain"))
    assert client.ping() is True
    client, _ = serve(reply("200 OK", b"<html>proxy</html>", content_type="text/html"))
    with pytest.raises(DockerProtocolError):
        client.ping()


def test_an_unexpected_success_status_is_refused(serve: Serve) -> None:
    client, _ = serve(reply("200 OK", b"{}"))
    with pytest.raises(DockerProtocolError):
        client.create_container({"Image": "x"})  # create answers 201


# -- answers that are not ----------------------------------------------------------------------
def test_an_oversized_declared_body_is_refused_before_reading_it(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n"
    client, _ = serve([(head + b"{", 0.0)], hold=True)
    started = time.monotonic()
    with pytest.raises(DockerProtocolError, match="over the"):
        client.inspect_container("c1")
    assert time.monotonic() - started < 1.5


def test_an_oversized_chunked_body_is_refused_while_streaming(serve: Serve) -> None:
    piece = b" " * 65536
    client, _ = serve(chunked("200 OK", [b"{"] + [piece] * 20), hold=True)
    with pytest.raises(DockerProtocolError, match="over the"):
        client.inspect_container("c1")  # 1 MiB bound


def test_an_oversized_archive_is_refused(serve: Serve) -> None:
    client, _ = serve(reply("200 OK", b"x" * 5000, content_type="application/x-tar"))
    assert len(client.get_archive("c1", "/etc/passwd", max_bytes=5000)) == 5000
    with pytest.raises(DockerProtocolError):
        client.get_archive("c1", "/etc/passwd", max_bytes=4999)


def test_a_truncated_body_is_refused(serve: Serve) -> None:
    client, _ = serve([(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"Id": ', 0.0)])
    with pytest.raises(DockerProtocolError, match="ended after"):
        client.inspect_container("c1")


def test_a_truncated_chunked_body_is_refused(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    client, _ = serve([(head + b'10\r\n{"Id"', 0.0)])
    with pytest.raises(DockerProtocolError):
        client.inspect_container("c1")


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b"[1, 2]", b'"text"', b"[" * 100_000, b"\xff\xfe"]
)
def test_malformed_json_is_refused(serve: Serve, body: bytes) -> None:
    client, _ = serve(reply("200 OK", body))
    with pytest.raises(DockerProtocolError):
        client.inspect_container("c1")


def test_ids_and_lists_are_shape_checked(serve: Serve) -> None:
    client, _ = serve(reply("201 Created", b'{"Id": 7}'))
    with pytest.raises(DockerProtocolError, match="no Id"):
        client.create_container({"Image": "x"})
    client, _ = serve(reply("200 OK", b'[{"Id": "a"}, 3]'))
    with pytest.raises(DockerProtocolError, match="not a list"):
        client.networks(labels=["x"])


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 abc Nope\r\n\r\n", b"\x00" * 70000],
)
def test_garbage_instead_of_http_is_refused(serve: Serve, answer: bytes) -> None:
    client, _ = serve([(answer, 0.0)])
    with pytest.raises(DockerError) as caught:
        client.ping()
    assert isinstance(caught.value, (DockerProtocolError, DockerConnectionError))


# -- time ----------------------------------------------------------------------------------------
def test_a_silent_daemon_times_out(serve: Serve) -> None:
    client, _ = serve([], timeout=0.3, hold=True)
    started = time.monotonic()
    with pytest.raises(DockerTimeoutError):
        client.info()
    assert time.monotonic() - started < 2.0


def test_a_dripping_daemon_cannot_stretch_the_deadline(serve: Serve) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    client, _ = serve([(head, 0.0)] + [(b" ", 0.05)] * 200, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DockerTimeoutError):
        client.info()
    assert time.monotonic() - started < 2.0


def test_stop_waits_out_the_grace_on_top_of_the_timeout(serve: Serve) -> None:
    client, _ = serve([(b"", 0.5), (b"HTTP/1.1 204 No Content\r\n\r\n", 0.0)], timeout=0.2)
    client.stop("c1", timeout=1)  # the daemon may take the grace period to answer


# -- no daemon -----------------------------------------------------------------------------------
def test_a_missing_socket(short_dir: Path) -> None:
    client = DockerClient(Endpoint(socket_path=str(short_dir / "none.sock")))
    with pytest.raises(DockerConnectionError, match=r"none\.sock"):
        client.ping()


def test_a_refused_connection(short_dir: Path) -> None:
    path = short_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound, never listening: ECONNREFUSED
    try:
        with pytest.raises(DockerConnectionError) as caught:
            DockerClient(Endpoint(socket_path=str(path))).info()
    finally:
        dead.close()
    assert caught.value.exit_code == EXIT_RETRYABLE
    assert caught.value.reason == "docker_unavailable"


# -- the attach hijack -------------------------------------------------------------------------
def test_attach_upgrades_and_keeps_early_stream_bytes(serve: Serve) -> None:
    frame = b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    head = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    head += b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    client, daemon = serve([(head + frame, 0.3), (b"more", 0.0)])
    attached = client.attach("c1")
    try:
        assert attached.pending == frame
        assert attached.sock.gettimeout() is None
        data = b""
        while len(data) < 4:
            data += attached.sock.recv(10)
        assert data == b"more"
    finally:
        attached.sock.close()
    request = daemon.requests[0]
    assert request.startswith(
        b"POST /v1.41/containers/c1/attach?stdin=1&stdout=1&stderr=1&stream=1"
    )
    assert b"Upgrade: tcp" in request


def test_attach_to_a_missing_container(serve: Serve) -> None:
    client, _ = serve(reply("404 Not Found", b'{"message": "No such container: c1"}'), hold=True)
    started = time.monotonic()
    with pytest.raises(NotFoundError, match="404"):
        client.attach("c1")
    assert time.monotonic() - started < 1.5  # read by its Content-Length, not until close


# -- DOCKER_HOST ---------------------------------------------------------------------------------
def test_docker_host() -> None:
    assert Endpoint.from_environ({}).socket_path == "/var/run/docker.sock"
    assert Endpoint.from_environ({"DOCKER_HOST": ""}).socket_path == "/var/run/docker.sock"
    assert Endpoint.from_environ({"DOCKER_HOST": "unix:///run/d.sock"}).socket_path == "/run/d.sock"


@pytest.mark.parametrize(
    "host",
    [
        "tcp://10.0.0.1:2376",
        "ssh://user@host",
        "http://localhost:2375",
        "npipe:////./pipe/docker_engine",
        "fd://",
        "/var/run/docker.sock",
        "unix://relative.sock",
        "unix:///" + "a" * 200,
    ],
)
def test_docker_host_other_than_a_unix_socket_is_a_configuration_error(host: str) -> None:
    with pytest.raises(DockerHostError) as caught:
        DockerClient.from_env({"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1"})
    assert caught.value.exit_code == EXIT_CONFIGURATION
    assert "DOCKER_HOST" in caught.value.message


@pytest.mark.parametrize(
    "host", [f"tcp://admin:{CANARY}@10.0.0.1:2376", f"ssh://{CANARY}@h", f"{CANARY}://x"]
)
def test_a_refused_docker_host_is_never_quoted(host: str) -> None:
    with pytest.raises(DockerHostError) as caught:
        DockerClient.from_env({"DOCKER_HOST": host})
    error = caught.value
    texts = (error.message, error.hint, error.detail, str(error), repr(error), error.one_line())
    assert not any(CANARY in text for text in texts)


# -- the boundary --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ImageNotFoundError("x", status=404), ImageMissingError),
        (NotFoundError("x", status=404), ContainerRuntimeError),
        (DockerStatusError("x", status=500), ContainerRuntimeError),
        (DockerConnectionError("x"), DockerUnavailableError),
        (DockerTimeoutError("x"), DockerUnavailableError),
        (DockerProtocolError("x"), DockerUnavailableError),
    ],
)
def test_every_client_error_maps_to_an_executor_error(
    error: DockerError, expected: type[LauncherError]
) -> None:
    translated = translate_docker_error(error, doing="create the run container", image="img")
    assert type(translated) is expected
    assert translated.exit_code != 70


# -- the dependency is gone ----------------------------------------------------------------------
def test_no_module_of_the_package_imports_the_docker_sdk_or_requests() -> None:
    code = (
        "import importlib, json, pkgutil, sys, hardened_launcher\n"
        "for m in pkgutil.walk_packages(hardened_launcher.__path__, 'hardened_launcher.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = ('docker', 'requests', 'chardet', 'charset_normalizer', 'certifi')\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules} & set(bad))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == []
