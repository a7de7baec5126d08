"""`controlplane serve` as a subprocess against a real mosquitto, with a worker on MqttTransport.

The state directory comes from `controlplane init`; mosquitto runs the configuration `init`
wrote (`broker/mosquitto.conf`). A fake worker built on `MqttTransport.for_worker` registers,
gets the assignment for a submitted run, accepts, gets `start`, and reports FINISHED. The reset
test shows the old certificate refused after `pool reset` (CRL + SIGHUP through the pid file)
while the new token connects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hardened_launcher.cli import main
from hardened_launcher.controlplane.ca import open_state_dir
from hardened_launcher.controlplane.dispatch import RunState
from hardened_launcher.demo.mosquitto import MosquittoProcess, run_as_owner_config
from hardened_launcher.demo.processes import free_port
from hardened_launcher.identity.csr import create_csr, csr_to_pem, parse_subject
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.transport import messages as wire
from hardened_launcher.transport.client import MqttTransport
from hardened_launcher.transport.tls import BrokerRefusedError
from tests.conftest import require_tool
from tests.integration.broker import FAST_OPTIONS

SPEC = b"""\
version: 1
run_id: run-mqtt-1
run_type: ro
image: registry.example/runner:1
phases:
  - name: main
    commands: ["echo hello"]
"""


@dataclass(kw_only=True)
class ControlPlane:
    state: Path
    broker: MosquittoProcess
    serve: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> None:
        assert main(["controlplane", *args, "--dir", str(self.state)]) == 0

    def start_serve(self, log: Path) -> None:
        env = {**os.environ, "HL_CP_DIR": str(self.state)}
        for name in [n for n in env if n.startswith("HL_CP_S3_")]:
            del env[name]
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "hardened_launcher", "controlplane", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def stop_serve(self) -> int:
        assert self.serve is not None
        self.serve.send_signal(signal.SIGTERM)
        code = self.serve.wait(timeout=15)
        self.serve = None
        return code


def _key_and_csr(tmp_path: Path, name: str) -> tuple[PoolPrivateKey, Path]:
    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    path = tmp_path / f"{name}.csr"
    path.write_bytes(csr_to_pem(create_csr(key, parse_subject("/CN=ignored"))))
    return key, path


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    mosquitto = require_tool("mosquitto")
    port = free_port()
    state = tmp_path / "cp"
    assert (
        main(
            [
                "controlplane",
                "init",
                "--dir",
                str(state),
                "--broker-port",
                str(port),
                "--protocol",
                "mqtt",
            ]
        )
        == 0
    )
    config = run_as_owner_config(state / "broker" / "mosquitto.conf", tmp_path / "run-as.conf")
    broker = MosquittoProcess(
        config_path=config, port=port, output_path=tmp_path / "mosquitto.out", mosquitto=mosquitto
    )
    broker.start()
    assert broker.process is not None
    # How the operator (or `demo`) lets `pool reset` SIGHUP the broker: its pid file.
    (state / "broker" / "mosquitto.pid").write_text(f"{broker.process.pid}\n")
    cp = ControlPlane(state=state, broker=broker)
    try:
        yield cp
    finally:
        if cp.serve is not None:
            cp.serve.kill()
            cp.serve.wait()
        broker.stop()


def _token(capsys: pytest.CaptureFixture[str]) -> Token:
    return Token.from_encoded(capsys.readouterr().out.strip().splitlines()[-1])


def _receive(worker: MqttTransport, kind: type[wire.Body], timeout: float = 20.0) -> wire.Body:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        received = worker.receive(timeout_seconds=0.5)
        if received is not None and isinstance(received.body, kind):
            return received.body
    pytest.fail(f"no {kind.TYPE} message within {timeout} s")


def _wait_for_state(state: Path, run_id: str, wanted: RunState, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open_state_dir(state).open_store() as store:
            if store.get_run(run_id).state is wanted:
                return
        time.sleep(0.2)
    pytest.fail(f"run {run_id} did not become {wanted}")


def test_serve_dispatches_a_run_to_a_real_worker_over_mqtt(
    control_plane: ControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, csr = _key_and_csr(tmp_path, "pool")
    control_plane.cli("pool", "create", "--name", "pool-a", "--csr", str(csr))
    token = _token(capsys)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(SPEC)
    control_plane.cli("run", "submit", "--pool", "pool-a", str(spec))
    control_plane.start_serve(tmp_path / "serve.log")

    worker = MqttTransport.for_worker(token=token, key=key, worker_id="w-1", options=FAST_OPTIONS)
    worker.start(timeout_seconds=10)
    try:
        worker.send(
            wire.Register(worker_id="w-1", pool_id="pool-a", version="test", max_concurrent_runs=1)
        )
        worker.send(wire.Heartbeat(state="IDLE"))
        assign = _receive(worker, wire.Assign)
        assert isinstance(assign, wire.Assign)
        assert assign.run_id == "run-mqtt-1"
        worker.send(wire.Accept(run_id=assign.run_id, lease_id=assign.lease_id))
        start = _receive(worker, wire.Start)
        assert start == wire.Start(run_id="run-mqtt-1", lease_id=assign.lease_id)
        _wait_for_state(control_plane.state, "run-mqtt-1", RunState.RUNNING)
        worker.send(wire.Heartbeat(state="BUSY", running=("run-mqtt-1",)))
        worker.send(wire.Status(run_id="run-mqtt-1", state="FINISHED", exit_code=0))
        _wait_for_state(control_plane.state, "run-mqtt-1", RunState.FINISHED)
    finally:
        worker.close(bye_reason="shutdown")
    assert control_plane.stop_serve() == 0
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "control plane serving on" in log


def test_pool_reset_refuses_the_old_certificate_and_cycles_connected_workers(
    control_plane: ControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key, old_csr = _key_and_csr(tmp_path, "old")
    control_plane.cli("pool", "create", "--name", "pool-a", "--csr", str(old_csr))
    old_token = _token(capsys)
    control_plane.start_serve(tmp_path / "serve.log")
    connected = MqttTransport.for_worker(
        token=old_token, key=old_key, worker_id="w-old", options=FAST_OPTIONS
    )
    connected.start(timeout_seconds=10)
    try:
        connected.send(
            wire.Register(
                worker_id="w-old", pool_id="pool-a", version="test", max_concurrent_runs=1
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open_state_dir(control_plane.state).open_store() as store:
                if store.find_worker("w-old") is not None:
                    break
            time.sleep(0.2)

        new_key, new_csr = _key_and_csr(tmp_path, "new")
        control_plane.cli("pool", "reset", "--name", "pool-a", "--csr", str(new_csr))
        out, err = capsys.readouterr()
        new_token = Token.from_encoded(out.strip().splitlines()[-1])
        assert "reloaded with SIGHUP" in err
        time.sleep(0.5)

        # The open connection stays open (mosquitto does not drop it on SIGHUP): it is cycled.
        assert isinstance(_receive(connected, wire.Cycle), wire.Cycle)

        refused = MqttTransport.for_worker(
            token=old_token, key=old_key, worker_id="w-again", options=FAST_OPTIONS
        )
        with pytest.raises(BrokerRefusedError):
            refused.start(timeout_seconds=5)
        refused.close()

        fresh = MqttTransport.for_worker(
            token=new_token, key=new_key, worker_id="w-new", options=FAST_OPTIONS
        )
        fresh.start(timeout_seconds=10)
        fresh.close(bye_reason="shutdown")
    finally:
        connected.close(bye_reason="shutdown")
    assert control_plane.stop_serve() == 0
