"""Idle-worker cost and dispatch latency of both transports, in one run on this machine.

Run: ``python benchmarks/bench_transport.py [--idle 1000] [--latency-workers 10]
[--rounds 50] [--only poll|mqtt]``

For each transport, on loopback with mutual TLS:

1. The control plane runs in its own process (``--role *-server``): the long-poll server
   (:class:`PollServer`), or the MQTT control-plane client next to a real mosquitto.
2. ``--latency-workers`` real worker transports connect (this process).
3. ``--idle`` idle workers connect from another process (``--role *-idle``): they open their
   session (poll: ``POST /v1/session`` then a held ``GET /v1/poll``, re-polled when it ends;
   mqtt: CONNECT + SUBSCRIBE, one thread driving all sockets) and then stay silent.
4. Memory per idle worker = (RSS with the idle workers - RSS before) / idle, of the control
   plane process and, for MQTT, of mosquitto (which holds the connections there). CPU per idle
   worker = CPU seconds the process used over a 20 s idle window / idle / 20 s.
5. Latency: the control plane sends ``assign`` messages (4 KiB envelope) to each latency
   worker, round after round; the send time (ns) is in the run id, and the worker measures
   assign → received. p50 and p99 over all samples, under the idle load.

Goals (issue 14): p99 ≤ 50 ms at 1,000 idle workers; ≤ 0.5 MiB control-plane memory per idle
worker. Figures are printed for both transports; the MQTT ones are the baseline measured in the
same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import selectors
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hardened_launcher.demo.mosquitto import MosquittoProcess, find_mosquitto
from hardened_launcher.demo.processes import free_port
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import (
    CertificateAuthority,
    issue_control_plane_certificate,
    issue_pool_token,
)
from hardened_launcher.identity.keys import PoolPrivateKey
from hardened_launcher.identity.token import Token
from hardened_launcher.secrets import Secret
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.broker_config import write_broker_config
from hardened_launcher.transport.client import ClientOptions, MqttTransport
from hardened_launcher.transport.messages import Assign
from hardened_launcher.transport.poll_client import PollTransport
from hardened_launcher.transport.poll_server import PollServer, PoolCertificates, server_tls_context
from hardened_launcher.transport.tls import TlsCredentials, build_tls_context
from hardened_launcher.transport.topics import WorkerAddress

POOL = "bench"
ENVELOPE = os.urandom(4096)
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# -- measuring a process ----------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as f:  # noqa: PTH123
        return int(f.read().split()[1]) * PAGE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:  # noqa: PTH123
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# -- set-up -----------------------------------------------------------------------------------


def make_material(directory: Path) -> dict[str, Any]:
    ca = CertificateAuthority.generate(key_type="EC-P256")
    mqtt_port, poll_port = free_port(), free_port()
    config = write_broker_config(
        directory / "tls",
        ca=ca,
        port=mqtt_port,
        # Started as root, mosquitto would switch to "mosquitto" and lose the 0600 files.
        run_as_user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
    )
    key = PoolPrivateKey.generate_ec()
    now = datetime.now(UTC)
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject(f"/CN={POOL}")),
        pool_id=POOL,
        broker_url=f"mqtts://localhost:{mqtt_port}",
        control_plane_url=f"https://localhost:{poll_port}",
        run_state_signing_key=ed25519.Ed25519PrivateKey.generate().public_key(),
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=1),
    )
    cp_key = ec.generate_private_key(ec.SECP256R1())
    cp_cert = issue_control_plane_certificate(
        ca, cp_key.public_key(), not_before=now - timedelta(minutes=5), not_after=now + timedelta(1)
    )
    (directory / "token").write_text(token.to_encoded().reveal_text())
    (directory / "pool.key").write_bytes(key.to_pem().reveal())
    (directory / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "cp.pem").write_bytes(cp_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "cp.key").write_bytes(PoolPrivateKey(cp_key).to_pem().reveal())
    return {"config": config, "mqtt_port": mqtt_port, "poll_port": poll_port}


def load_pool(directory: Path) -> tuple[Token, PoolPrivateKey]:
    token = Token.from_encoded((directory / "token").read_text())
    key = PoolPrivateKey.from_pem(Secret((directory / "pool.key").read_bytes()))
    return token, key


# -- the control plane side (a process of its own) -------------------------------------------


def run_server(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    token, _ = load_pool(directory)
    transport: Transport
    if args.role == "poll-server":
        tls = directory / "tls"
        server = PollServer(
            host="127.0.0.1",
            port=args.port,
            namespace=token.mqtt_namespace,
            ssl_context=server_tls_context(
                ca_pem=(directory / "ca.pem").read_bytes(),
                cert_file=str(tls / "server.pem"),
                key_file=str(tls / "server.key"),
                crl_file=str(tls / "crl.pem"),
            ),
            certificates=PoolCertificates(
                lambda: {POOL: token.pool_certificate.serial_number}, refresh_seconds=5.0
            ),
        )
        transport = server
    else:
        from cryptography import x509  # noqa: PLC0415

        credentials = TlsCredentials(
            ca_certificate=x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes()),
            certificate=x509.load_pem_x509_certificate((directory / "cp.pem").read_bytes()),
            private_key_pem=Secret((directory / "cp.key").read_bytes()),
        )
        transport = MqttTransport.for_control_plane(
            host="localhost", port=args.port, namespace="spacelift", credentials=credentials
        )
    transport.start(timeout_seconds=30)
    drain = threading.Thread(target=_drain_forever, args=(transport,), daemon=True)
    drain.start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "go":
            workers, rounds = int(command[1]), int(command[2])
            peers = [WorkerAddress(pool_id=POOL, worker_id=f"lat-{i}") for i in range(workers)]
            expires = datetime.now(UTC) + timedelta(minutes=5)
            for n in range(rounds):
                for peer in peers:
                    transport.send(
                        Assign.with_envelope(
                            run_id=f"r{n}-{time.time_ns()}",
                            lease_id=f"lease-{n}",
                            lease_expires_at=expires,
                            envelope=ENVELOPE,
                        ),
                        peer=peer,
                    )
                time.sleep(0.05)
            print("sent", flush=True)
        elif command[0] == "quit":
            break
    transport.close()


def _drain_forever(transport: Transport) -> None:
    while True:
        transport.receive(timeout_seconds=1.0)


# -- idle workers (a process of their own) ----------------------------------------------------


def run_idle(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    token, key = load_pool(directory)
    context = build_tls_context(TlsCredentials.for_pool(token, key))
    if args.role == "poll-idle":
        asyncio.run(_poll_idle(context, args.port, args.count))
    else:
        _mqtt_idle(context, args.port, args.count)


async def _poll_idle(context: ssl.SSLContext, port: int, count: int) -> None:
    import aiohttp  # noqa: PLC0415

    from hardened_launcher.transport import poll_wire as wire  # noqa: PLC0415

    connector = aiohttp.TCPConnector(ssl=context, limit=0, force_close=False)
    base = f"https://localhost:{port}"
    ready = 0

    async def one(i: int, session: aiohttp.ClientSession) -> None:
        nonlocal ready
        headers = {wire.WORKER_HEADER: f"idle-{i}", wire.SESSION_HEADER: os.urandom(16).hex()}
        async with session.post(
            base + wire.SESSION_PATH,
            data=b"",
            headers={**headers, "Content-Type": wire.CONTENT_TYPE},
        ) as response:
            assert response.status == 204, response.status
        ready += 1
        if ready == count:
            print("ready", flush=True)
        while True:
            async with session.get(
                base + wire.POLL_PATH, headers={**headers, wire.WAIT_HEADER: "20"}
            ) as response:
                await response.read()

    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i, session)))
            if i % 50 == 49:
                await asyncio.sleep(0.05)  # do not stampede the handshakes
        await asyncio.gather(*tasks)


def _mqtt_idle(context: ssl.SSLContext, port: int, count: int) -> None:
    import paho.mqtt.client as paho  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

    clients = []
    selector = selectors.DefaultSelector()
    for i in range(count):
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"hl-{POOL}-idle-{i}-{os.urandom(4).hex()}",
            protocol=paho.MQTTv5,
        )
        client.tls_set_context(context)
        client.connect("localhost", port, keepalive=60)
        sock = client.socket()
        assert sock is not None
        selector.register(sock, selectors.EVENT_READ, client)
        client.subscribe(f"spacelift/readonly/{POOL}/idle-{i}", qos=1)
        clients.append(client)
        for c in clients[-5:]:
            c.loop_write()
    print("ready", flush=True)
    last_misc = 0.0
    while True:
        for item, _ in selector.select(timeout=1.0):
            item.data.loop_read()
        now = time.monotonic()
        if now - last_misc > 1.0:
            last_misc = now
            for client in clients:
                client.loop_misc()
                if client.want_write():
                    client.loop_write()


# -- the driver --------------------------------------------------------------------------------


def _wait_line(process: subprocess.Popen[str], expected: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{process.args!r} ended before saying {expected!r}")
        if line.strip() == expected:
            return
    raise RuntimeError(f"no {expected!r} within {timeout} s")


def _spawn(role: str, directory: Path, port: int, **extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--role", role, "--dir", str(directory), "--port", str(port)]
    for name, value in extra.items():
        argv += [f"--{name}", value]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(
    protocol: str, directory: Path, material: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    token, key = load_pool(directory)
    broker: MosquittoProcess | None = None
    if protocol == "mqtt":
        mosquitto = find_mosquitto()
        if mosquitto is None:
            return {"skipped": "mosquitto is not installed"}
        broker = MosquittoProcess(
            config_path=material["config"].config_path,
            port=material["mqtt_port"],
            output_path=directory / "mosquitto.log",
            mosquitto=mosquitto,
        )
        broker.start()
    port = material["poll_port"] if protocol == "poll" else material["mqtt_port"]
    server = _spawn(f"{protocol}-server", directory, port)
    idle: subprocess.Popen[str] | None = None
    workers: list[Transport] = []
    try:
        _wait_line(server, "ready", 60)
        latencies: list[float] = []
        by_round: dict[int, list[float]] = {}
        lock = threading.Lock()
        for i in range(args.latency_workers):
            worker: Transport
            if protocol == "poll":
                worker = PollTransport.for_worker(
                    token=token,
                    key=key,
                    worker_id=f"lat-{i}",
                    url=token.control_plane_url,
                    environ={},
                )
            else:
                worker = MqttTransport.for_worker(
                    token=token, key=key, worker_id=f"lat-{i}", options=ClientOptions()
                )
            worker.start(timeout_seconds=30)
            workers.append(worker)
        time.sleep(2)
        proc = broker.process if broker is not None else None
        holders = {"control plane": server.pid}
        if proc is not None:
            holders["mosquitto"] = proc.pid
        base = {name: rss_bytes(pid) for name, pid in holders.items()}
        idle = _spawn(f"{protocol}-idle", directory, port, count=str(args.idle))
        _wait_line(idle, "ready", 300)
        time.sleep(5)
        loaded = {name: rss_bytes(pid) for name, pid in holders.items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in holders.items()}
        time.sleep(args.idle_window)
        cpu_after = {name: cpu_seconds(pid) for name, pid in holders.items()}

        def collect(worker: Transport) -> None:
            for _ in range(args.rounds):
                got = worker.receive(timeout_seconds=30)
                if got is None:
                    return
                sent_ns = int(got.message.body.run_id.split("-")[1])  # type: ignore[attr-defined]
                with lock:
                    latencies.append((time.time_ns() - sent_ns) / 1e6)
                    by_round.setdefault(int(got.message.body.run_id[1:].split("-")[0]), []).append(  # type: ignore[attr-defined]
                        latencies[-1]
                    )

        collectors = [threading.Thread(target=collect, args=(w,)) for w in workers]
        for thread in collectors:
            thread.start()
        assert server.stdin is not None
        server.stdin.write(f"go {args.latency_workers} {args.rounds}\n")
        server.stdin.flush()
        for thread in collectors:
            thread.join(120)
        result: dict[str, Any] = {
            "idle_workers": args.idle,
            "samples": len(latencies),
            "expected_samples": args.latency_workers * args.rounds,
            "p50_ms": round(_percentile(latencies, 0.50), 2) if latencies else None,
            "p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
            "p90_ms": round(_percentile(latencies, 0.90), 2) if latencies else None,
            "max_ms": round(max(latencies), 2) if latencies else None,
            "round_max_ms": [round(max(v), 1) for _, v in sorted(by_round.items())],
        }
        for name in holders:
            delta = loaded[name] - base[name]
            result[f"{name} rss MiB (before idle)"] = round(base[name] / 2**20, 1)
            result[f"{name} MiB per idle worker"] = round(delta / args.idle / 2**20, 4)
            cpu = cpu_after[name] - cpu_before[name]
            result[f"{name} CPU % per idle worker"] = round(
                100 * cpu / args.idle_window / args.idle, 5
            )
        return result
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.close()
        for process in (idle, server):
            if process is not None:
                process.kill()
                process.wait(10)
        if broker is not None:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="driver")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--latency-workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--idle-window", type=float, default=20.0)
    parser.add_argument("--only", choices=("poll", "mqtt"), default=None)
    args = parser.parse_args()
    if args.role.endswith("-server"):
        run_server(args)
        return
    if args.role.endswith("-idle"):
        run_idle(args)
        return
    with tempfile.TemporaryDirectory(prefix="hl-bench-transport-") as tmp:
        directory = Path(tmp)
        material = make_material(directory)
        results = {}
        for protocol in ("poll", "mqtt"):
            if args.only in (None, protocol):
                results[protocol] = measure(protocol, directory, material, args)
                print(protocol, json.dumps(results[protocol], indent=2), flush=True)
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
