"""Egress proxy benchmark: CONNECT set-up latency and bulk throughput, ours vs tinyproxy.

Everything runs on loopback: an upstream server (127.0.0.1), our proxy (127.0.0.2, its own
process, static resolver ``bench.test -> 127.0.0.1`` allowed by an explicit 127.0.0.1/32 rule)
and Debian's tinyproxy (127.0.0.3, its own process). The client is this process, with blocking
sockets. Set-up latency is the time from TCP connect to the proxy until the first upstream byte
arrives through the tunnel (CONNECT, 200, ClientHello forwarded, upstream answers).

Run: ``python benchmarks/egress`` (or ``python benchmarks/egress/bench.py``); prints a table
and the ratios ours / tinyproxy. ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import multiprocessing
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import contextlib

from hardened_launcher.egress.policy import parse_policy
from hardened_launcher.egress.proxy import EgressProxy

UPSTREAM = "127.0.0.1"
OURS = "127.0.0.2"
TINY = "127.0.0.3"
CHUNK = 256 * 1024


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="bench.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def _upstream(port_queue: multiprocessing.Queue[int], bulk_bytes: int) -> None:
    """Reads the first bytes; answers b'S'; if they were b'BULK...', streams bulk_bytes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(65536)
        writer.write(b"S")
        if b"BULK" in first:
            block = b"x" * CHUNK
            left = bulk_bytes
            while left > 0:
                writer.write(block[: min(CHUNK, left)])
                left -= CHUNK
                await writer.drain()
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, UPSTREAM, 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class _StaticResolver:
    async def resolve(self, name: str, port: int) -> list[ipaddress.IPv4Address]:  # noqa: ARG002 - Resolver protocol
        return [ipaddress.IPv4Address(UPSTREAM)]


def _our_proxy(port_queue: multiprocessing.Queue[int], upstream_port: int) -> None:
    policy = parse_policy(
        {
            "allow": [
                {"host": "bench.test", "ports": [upstream_port]},
                # The upstream is on the host itself: acknowledged, exactly (docs/egress.md).
                {"cidr": "127.0.0.1/32", "ports": [upstream_port], "allow_host_address": True},
            ]
        }
    )

    async def main() -> None:
        proxy = EgressProxy(policy, run_id="bench", resolver=_StaticResolver())
        _, port = await proxy.start(OURS, 0)
        port_queue.put(port)
        await asyncio.Event().wait()

    asyncio.run(main())


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tinyproxy(tmp: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port(TINY)
    conf = tmp / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen {TINY}\nTimeout 600\nMaxClients 1000\nLogLevel Critical\n"
        f"Allow 127.0.0.0/8\nConnectPort {upstream_port}\nDisableViaHeader Yes\n"
        f'PidFile "{tmp / "tinyproxy.pid"}"\nLogFile "{tmp / "tinyproxy.log"}"\n'
    )
    proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((TINY, port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return proc, port
    proc.kill()
    raise RuntimeError("tinyproxy did not start")


def _tunnel(proxy: tuple[str, int], target: str, first: bytes) -> tuple[socket.socket, float]:
    started = time.perf_counter()
    sock = socket.create_connection(proxy)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise RuntimeError(f"proxy closed during CONNECT: {head!r}")
        head += data
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT refused: {head[:200]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    sock.sendall(first)
    while not rest:
        rest = sock.recv(1)
    return sock, time.perf_counter() - started


def _latency(proxy: tuple[str, int], target: str, hello: bytes, count: int) -> list[float]:
    out = []
    for _ in range(count):
        sock, took = _tunnel(proxy, target, hello)
        sock.close()
        out.append(took)
    return out


def _throughput(proxy: tuple[str, int], target: str, hello: bytes, total: int) -> float:
    sock, _ = _tunnel(proxy, target, hello + b"BULK")
    got = 0
    started = time.perf_counter()
    while True:
        data = sock.recv(CHUNK)
        if not data:
            break
        got += len(data)
    took = time.perf_counter() - started
    sock.close()
    if got < total:
        raise RuntimeError(f"short transfer: {got} of {total}")
    return got / took / (1024 * 1024)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if shutil.which("tinyproxy") is None:
        print("tinyproxy is not installed (apt-get install tinyproxy)")
        return 1
    count = 300 if args.quick else 2000
    bulk = (128 if args.quick else 1024) * 1024 * 1024
    rounds = 1 if args.quick else 3
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = ctx.Queue()
    upstream = ctx.Process(target=_upstream, args=(queue, bulk), daemon=True)
    upstream.start()
    up_port = queue.get(timeout=30)
    ours = ctx.Process(target=_our_proxy, args=(queue, up_port), daemon=True)
    ours.start()
    ours_port = queue.get(timeout=30)
    hello = _client_hello()
    with tempfile.TemporaryDirectory() as tmp:
        tiny, tiny_port = _tinyproxy(Path(tmp), up_port)
        try:
            results: dict[str, dict[str, float]] = {}
            for name, proxy, target in (
                ("hardened-launcher", (OURS, ours_port), f"bench.test:{up_port}"),
                ("tinyproxy", (TINY, tiny_port), f"{UPSTREAM}:{up_port}"),
            ):
                _latency(proxy, target, hello, 50)  # warm-up
                lat = _latency(proxy, target, hello, count)
                tput = statistics.median(
                    _throughput(proxy, target, hello, bulk) for _ in range(rounds)
                )
                results[name] = {"p50": _pct(lat, 0.50), "p99": _pct(lat, 0.99), "mib_s": tput}
        finally:
            tiny.terminate()
            tiny.wait(10)
            ours.terminate()
            upstream.terminate()
    print(f"CONNECT set-up: {count} tunnels; bulk: {bulk // (1024 * 1024)} MiB x {rounds}")
    print(f"{'proxy':<20}{'p50 ms':>10}{'p99 ms':>10}{'MiB/s':>12}")
    for name, r in results.items():
        print(f"{name:<20}{r['p50']:>10.3f}{r['p99']:>10.3f}{r['mib_s']:>12.1f}")
    ours_r, tiny_r = results["hardened-launcher"], results["tinyproxy"]
    print(f"throughput ratio (ours / tinyproxy): {ours_r['mib_s'] / tiny_r['mib_s']:.2f}")
    print(f"p50 latency ratio (ours / tinyproxy): {ours_r['p50'] / tiny_r['p50']:.2f}")
    print(f"p99 latency ratio (ours / tinyproxy): {ours_r['p99'] / tiny_r['p99']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
