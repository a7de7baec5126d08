"""Launcher overhead on starting a run: spec → container running → first output byte.

Compares, in the same process and against the same dockerd and image:

- launcher: parse the run spec, build the container spec, encode the instructions, then
  ``DockerRunner.run`` (create, attach, start, write stdin, demultiplex, redact, sink);
- bare: ``create_container`` + ``attach_socket`` + ``start`` + write the same stdin with the
  docker SDK's low-level API, reading until the first byte.

Both run the same container (same arguments, same worker program) and alternate, so drifts in
dockerd affect both. The figure is the ratio of medians; the goal is ≤ 1.15.
Run: ``.venv/bin/python -m benchmarks.bench_executor [rounds]``.
"""

from __future__ import annotations

import hashlib
import select
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker

from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.executor.container_spec import build_container_spec
from hardened_launcher.executor.entrypoint import worker_script_path
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.runner import DockerRunner, docker_client
from hardened_launcher.executor.runspec import parse_run_spec
from hardened_launcher.redaction import Redactor
from hardened_launcher.settings import Settings
from tests.integration.images import busybox_image

GOAL = 1.15


class FirstByteSink:
    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None

    def write(self, channel: str, data: bytes) -> None:  # noqa: ARG002 - both channels count
        if self.first is None and data:
            self.first = time.perf_counter() - self.started

    def close(self) -> None:
        pass


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    image = busybox_image()
    tmp = Path(tempfile.mkdtemp(prefix="hl-bench-"))
    data = worker_script_path().read_bytes()
    worker = VerifiedBinary(
        name="hl-worker",
        path=worker_script_path(),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        signer_fingerprint="bench",
        signing_key_fingerprint="bench",
        signature_created=datetime.now(UTC),
        sums_sha256="0" * 64,
    )
    spec_text = f"""
version: 1
run_id: bench
run_type: wo
image: {image}
secret_env: {{TOKEN: bench-secret-value}}
phases: [{{name: main, commands: ["echo first"]}}]
""".encode()
    settings = Settings(
        state_dir=tmp / "s", cache_dir=tmp / "c", audit_dir=tmp / "a", worker_network="none"
    )
    client = docker_client()
    api = docker.from_env(version="1.41").api  # the bare baseline: the SDK, as before
    runner = DockerRunner(
        client,
        logs_timeout=timedelta(seconds=30),
        run_timeout=timedelta(seconds=60),
        stop_grace=timedelta(seconds=1),
    )

    def launcher_once() -> float:
        started = time.perf_counter()
        spec = parse_run_spec(spec_text)
        container = build_container_spec(spec, settings, launcher_id="bench", worker=worker)
        redactor = Redactor()
        for name, secret in spec.secrets():
            redactor.add(name, secret)
        sink = FirstByteSink(started)
        runner.run(container, encode_instructions(spec), redactor=redactor, sink=sink)
        assert sink.first is not None
        return sink.first

    reference = build_container_spec(
        parse_run_spec(spec_text), settings, launcher_id="bench", worker=worker
    )
    stdin = bytes(encode_instructions(parse_run_spec(spec_text)))

    def bare_once() -> float:
        started = time.perf_counter()
        host_config = api.create_host_config(**reference.host_config_args)
        cid = api.create_container(**reference.create_args, host_config=host_config)["Id"]
        try:
            wrapper = api.attach_socket(
                cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            sock = getattr(wrapper, "_sock", wrapper)
            api.start(cid)
            sock.sendall(stdin)
            select.select([sock], [], [], 30)
            assert sock.recv(65536)
            first = time.perf_counter() - started
            sock.close()
            wrapper.close()
            return first
        finally:
            api.remove_container(cid, force=True)

    for _ in range(2):  # warm up both paths
        launcher_once()
        bare_once()
    launcher, bare = [], []
    for _ in range(rounds):
        launcher.append(launcher_once())
        bare.append(bare_once())
    lm, bm = statistics.median(launcher), statistics.median(bare)
    ratio = lm / bm
    print(f"rounds: {rounds}")
    print(f"bare docker create+start+attach → first byte: median {bm * 1000:.1f} ms")
    print(f"launcher spec → container → first byte:      median {lm * 1000:.1f} ms")
    print(f"ratio launcher/bare: {ratio:.3f} (goal ≤ {GOAL}) {'OK' if ratio <= GOAL else 'OVER'}")


if __name__ == "__main__":
    main()
