"""Egress never reaches the launcher's host (issue 11): real kernel, real Docker, real proxy.

- Addresses the host takes *during* a run (a dummy interface this test creates: IPv4, IPv6, an
  AnyIP local route) are refused by the very next decision, and allowed again once removed.
- A run container cannot reach the host over IPv6, even in the worst case where the run has
  IPv6 and the bridge has a link-local address again (only the ip6tables rules hold then);
  a control shows the probe does reach the host once our ip6tables rule is taken away.
- Through the proxy, a host address inside an allowed range or behind an allowed name (a
  dnslib resolver) is refused, while its neighbour in the same range is served.
- A launcher killed with SIGKILL leaves its network and rules; the clean-up that ``start`` and
  ``exec`` run removes them, and never touches a live session.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.egress.host_addresses import SystemHostAddresses
from hardened_launcher.egress.isolation import LABEL_EGRESS_OWNER, EgressSession
from hardened_launcher.egress.leftovers import remove_leftover_egress
from hardened_launcher.egress.owner import current_owner
from hardened_launcher.egress.policy import parse_policy
from hardened_launcher.egress.proxy import EgressProxy
from hardened_launcher.executor.runner import docker_client
from tests.conftest import integration_required, require_docker, require_tool
from tests.integration.images import busybox_image
from tests.integration.test_egress_docker import (
    NS_HOST_IP,
    NS_SERVER_IP,
    SERVER_PORT,
    DnslibResolver,
    FakeDnsServer,
    Listener,
    _free_udp_port,
    upstream,  # noqa: F401 - a fixture used below
)
from tests.unit.test_egress_proxy import FakeConnector, exchange

pytestmark = pytest.mark.integration


def _require_root() -> None:
    if os.geteuid() != 0:
        message = "egress host tests need root (ip, iptables, ip6tables)"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _rules(tool: str) -> str:
    out = []
    for chain in ("INPUT", "FORWARD"):
        done = subprocess.run([tool, "-S", chain], capture_output=True, text=True, check=True)
        out.append(done.stdout)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Addresses added during the run
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def dummy() -> Iterator[str]:
    """An interface of ours in the host namespace, removed after the test: one end of a veth
    pair (the kernel here has no dummy driver), its peer in a namespace of ours."""
    _require_root()
    require_tool("ip")
    tag = secrets.token_hex(3)
    name, peer, ns = f"hld{tag}", f"hlp{tag}", f"hldns-{tag}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", name, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("link", "set", name, "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


POLICY_ADDED = parse_policy(
    {
        "allow": [
            {"cidr": "198.18.96.0/22", "ports": [80]},
            {"cidr": "fd42:4c48::/64", "ports": [80]},
        ]
    }
)


def _decide(proxy: EgressProxy, host: str) -> bytes:
    return asyncio.run(exchange(proxy, f"GET http://{host}/ HTTP/1.1\r\n\r\n".encode()))


@pytest.mark.parametrize("netlink", [True, False])
def test_addresses_the_host_takes_during_a_run_are_refused(dummy: str, netlink: bool) -> None:
    watcher = SystemHostAddresses(use_netlink=netlink, fallback_max_age_seconds=0.5)
    assert watcher.watching is netlink
    connector = FakeConnector()
    proxy = EgressProxy(
        POLICY_ADDED, run_id="run-added", connector=connector, host_addresses=watcher
    )
    targets = {
        "198.18.97.7": ("addr", "198.18.97.7/32"),
        "[fd42:4c48::7]": ("addr", "fd42:4c48::7/128"),
        "198.18.98.200": ("route", "198.18.98.0/24"),  # AnyIP: a whole local prefix
    }
    try:
        for host, (kind, value) in targets.items():
            assert _decide(proxy, host).endswith(b"hello"), host  # not the host (yet)
            if kind == "addr":
                _ip("addr", "add", value, "dev", dummy, "nodad")
            else:
                _ip("route", "add", "local", value, "dev", dummy)
            if not netlink:
                time.sleep(0.6)  # the fallback's bound
            refused = _decide(proxy, host)
            assert b"X-Egress-Reason: egress_host_address" in refused, (host, refused)
            if kind == "addr":
                _ip("addr", "del", value, "dev", dummy)
            else:
                _ip("route", "del", "local", value, "dev", dummy)
            if not netlink:
                time.sleep(0.6)
            assert _decide(proxy, host).endswith(b"hello"), host  # given back
        # The interface itself going away is a change too; nothing stale is kept.
        _ip("addr", "add", "198.18.97.9/32", "dev", dummy)
        if not netlink:
            time.sleep(0.6)
        assert b"egress_host_address" in _decide(proxy, "198.18.97.9")
        _ip("link", "del", dummy)
        if not netlink:
            time.sleep(0.6)
        assert _decide(proxy, "198.18.97.9").endswith(b"hello")
    finally:
        watcher.close()
    dialled = {address for address, _port in connector.dialled}
    assert dialled == {"198.18.97.7", "fd42:4c48::7", "198.18.98.200", "198.18.97.9"}
    if netlink:
        # Re-read only on change: 1 initial + 2 per change (add, del), with a margin for
        # unrelated changes other processes make on this host meanwhile.
        assert watcher.reads <= 40


# ---------------------------------------------------------------------------------------------
# A real run: no IPv6 to the host, no host address through the proxy
# ---------------------------------------------------------------------------------------------
HOST_V6 = "fd42:4c49::1"  # an IPv6 address of the host, on our test veth


def _bridge_inet6(bridge: str) -> list[str]:
    done = subprocess.run(
        ["ip", "-j", "-6", "addr", "show", "dev", bridge], capture_output=True, check=True
    )
    links = json.loads(done.stdout or b"[]")
    return [i["local"] for link in links for i in link.get("addr_info", [])]


def _wait_link_local(bridge: str) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["ip", "-j", "-6", "addr", "show", "dev", bridge, "scope", "link", "-tentative"],
            capture_output=True,
            check=True,
        )
        found = [i["local"] for link in json.loads(done.stdout or b"[]") for i in link["addr_info"]]
        if found:
            return str(found[0])
        time.sleep(0.2)
    raise AssertionError(f"{bridge} got no link-local address")


class DualStackListener(Listener):
    """A host service listening on every address, IPv4 and IPv6; counts connections."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1")
        self.sock.close()
        self.sock = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])


def _probe(container: Any, host: str, port: int) -> str:
    code, out = container.exec_run(
        ["sh", "-c", f"echo x | timeout 5 nc {host} {port}; echo rc=$?"], user="1983:1983"
    )
    del code
    return str(out.decode("utf-8", "replace"))


def _proxy_get(container: Any, url: str) -> str:
    script = (
        "P=${HTTP_PROXY#http://}; PH=${P%:*}; PP=${P##*:}; "
        f'printf \'GET {url} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n\' | timeout 8 nc "$PH" "$PP"'
    )
    _code, out = container.exec_run(["sh", "-c", script], user="1983:1983")
    return str(out.decode("utf-8", "replace"))


def test_a_run_cannot_reach_the_host_over_ipv6_nor_through_an_allowed_range(
    upstream: Path,  # noqa: F811 - the fixture imported above
) -> None:
    require_docker()
    require_tool("ip6tables")
    import docker  # noqa: PLC0415

    client = docker.from_env()
    image = busybox_image()
    host_if = next(
        line.split()[1].split("@")[0]
        for line in subprocess.run(
            ["ip", "-o", "addr", "show", "to", f"{NS_HOST_IP}/32"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    )
    _ip("addr", "add", f"{HOST_V6}/64", "dev", host_if, "nodad")
    v4_probe = Listener(NS_HOST_IP)  # a host service on a host address inside the allowed range
    v6_probe = DualStackListener()  # every host address, IPv4 and IPv6
    dns_port = _free_udp_port()
    dns = FakeDnsServer(
        {"hostside.test": [NS_HOST_IP], "ns.test": [NS_SERVER_IP]}, "127.0.0.1", dns_port
    )
    policy = parse_policy(
        {
            "allow": [
                {"cidr": "198.18.0.0/24", "ports": [SERVER_PORT, v4_probe.port]},
                {"cidr": "fd42:4c49::/64", "ports": [v6_probe.port]},
                {"host": "hostside.test", "ports": [v4_probe.port], "private": True},
                {"host": "ns.test", "ports": [SERVER_PORT], "private": True},
            ]
        }
    )
    run_id = f"egress-host-{secrets.token_hex(4)}"
    session = EgressSession.for_run(
        run_id,
        policy,
        docker_client=docker_client(),
        launcher_id="it",
        resolver=DnslibResolver(dns_port),
    )
    bridge = session.network.bridge
    containers: list[Any] = []
    try:
        common: dict[str, Any] = {
            "detach": True,
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "environment": dict(session.proxy_env),
            **session.host_config_overrides(),
        }
        run = client.containers.run(image, ["sleep", "300"], **common)
        containers.append(run)
        # The bridge holds no IPv6 address; IPv4 and IPv6 rules fence it in.
        assert _bridge_inet6(bridge) == []
        assert bridge in _rules("iptables")
        assert f"-A INPUT -i {bridge}" in _rules("ip6tables")
        assert f"-A FORWARD -o {bridge}" in _rules("ip6tables")
        # Through the proxy: the host inside the allowed range, or behind an allowed name, is
        # refused; its neighbour in the same range is served.
        assert "hello from the test namespace" in _proxy_get(run, f"http://ns.test:{SERVER_PORT}/")
        for url in (
            f"http://{NS_HOST_IP}:{v4_probe.port}/",
            f"http://hostside.test:{v4_probe.port}/",
            f"http://[{ipaddress.ip_address(HOST_V6).compressed}]:{v6_probe.port}/",
        ):
            answer = _proxy_get(run, url)
            assert "reason: egress_host_address" in answer, (url, answer)
        # Directly over IPv6: the run has no IPv6 at all.
        assert "rc=0" not in _probe(run, HOST_V6, v6_probe.port)

        # Worst case: the run has IPv6 and the bridge has a link-local address again.
        attacker = client.containers.run(
            image,
            ["sleep", "300"],
            sysctls={"net.ipv6.conf.all.disable_ipv6": "0"},
            **common,
        )
        containers.append(attacker)
        Path(f"/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6").write_text("0\n")
        link_local = _wait_link_local(bridge)
        for target in (f"{link_local}%eth0", HOST_V6):
            assert "rc=0" not in _probe(attacker, target, v6_probe.port), target
        assert v6_probe.accepted == 0
        # gVisor: the same probes from a sandboxed run.
        runtimes = client.info().get("Runtimes") or {}
        if "runsc" in runtimes:
            sandboxed = client.containers.run(image, ["sleep", "300"], runtime="runsc", **common)
            containers.append(sandboxed)
            for target in (f"{link_local}%eth0", HOST_V6, NS_HOST_IP, str(session.network.gateway)):
                assert "rc=0" not in _probe(sandboxed, target, v6_probe.port), target
        elif integration_required():
            pytest.fail("dockerd has no runsc runtime")
        assert v6_probe.accepted == 0
        assert v4_probe.accepted == 0

        # Control: without our ip6tables INPUT rule the same probe reaches the host, so the
        # probe above would have seen a hole.
        tag = f"hl-egress:{current_owner()}"
        subprocess.run(
            [
                "ip6tables",
                "-D",
                "INPUT",
                "-i",
                bridge,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "DROP",
            ],
            check=True,
            capture_output=True,
        )
        assert "rc=0" in _probe(attacker, f"{link_local}%eth0", v6_probe.port)
        assert v6_probe.accepted == 1
    finally:
        for container in containers:
            container.remove(force=True)
        session.close()
        dns.stop()
        v4_probe.close()
        v6_probe.close()
    assert bridge not in _rules("iptables")
    assert bridge not in _rules("ip6tables")


# ---------------------------------------------------------------------------------------------
# Leftovers of a killed launcher
# ---------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent(
    """
    import sys, time
    from hardened_launcher.egress.isolation import EgressSession
    from hardened_launcher.executor.runner import docker_client
    from hardened_launcher.egress.policy import parse_policy
    s = EgressSession.for_run(
        sys.argv[1], parse_policy({"allow": []}), docker_client=docker_client(),
        launcher_id="it-killed",
    )
    print(s.network.name, s.network.bridge, flush=True)
    time.sleep(600)
    """
)


def test_leftovers_of_a_killed_launcher_are_removed_and_live_sessions_kept(
    tmp_path: Path,
) -> None:
    _require_root()
    require_docker()
    require_tool("ip6tables")
    import docker  # noqa: PLC0415

    client = docker.from_env()
    run_id = f"egress-killed-{secrets.token_hex(4)}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run_id], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    name, bridge = holder.stdout.readline().split()
    live = EgressSession.for_run(
        f"egress-live-{secrets.token_hex(4)}",
        parse_policy({"allow": []}),
        docker_client=docker_client(),
        launcher_id="it-live",
    )
    survivor = None
    # Rules of a dead owner whose network is already gone, and of an owner in another PID
    # namespace (not ours to judge).
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    orphan_bridge, foreign_bridge = f"hlo{secrets.token_hex(3)}", f"hlf{secrets.token_hex(3)}"
    planted = [
        (orphan_bridge, f"hl-egress:{boot}/{current_owner().split('/')[1]}/999999999/1"),
        (foreign_bridge, f"hl-egress:{boot}/1/1/1"),
    ]
    for tool in ("iptables", "ip6tables"):
        for plant_bridge, comment in planted:
            subprocess.run(
                [
                    tool,
                    "-I",
                    "INPUT",
                    "1",
                    "-i",
                    plant_bridge,
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-j",
                    "DROP",
                ],
                check=True,
                capture_output=True,
            )
    try:
        # A run container that outlived its launcher is still on the network.
        survivor = client.containers.run(
            busybox_image(), ["sleep", "300"], detach=True, network=name
        )
        assert bridge in _rules("iptables")
        assert bridge in _rules("ip6tables")
        # While the holder lives, nothing of it is touched.
        # The orphan rules of a dead owner go at once (their bridge is gone).
        kept = remove_leftover_egress(docker_client(), audit=MemoryAuditLog())
        assert name not in kept.networks
        assert kept.rules == 2
        assert client.networks.list(names=[name])
        assert bridge in _rules("iptables")
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        audit = MemoryAuditLog()
        done = remove_leftover_egress(docker_client(), audit=audit)
        assert name in done.networks
        assert not client.networks.list(names=[name])
        assert bridge not in _rules("iptables")
        assert bridge not in _rules("ip6tables")
        assert orphan_bridge not in _rules("iptables")
        assert orphan_bridge not in _rules("ip6tables")
        assert foreign_bridge in _rules("iptables")  # another PID namespace: left alone
        assert done.rules == 5  # the holder's: 2 IPv4, 3 IPv6
        (event,) = [e for e in audit.events if e.fields.get("network") == name]
        assert event.type == "egress.leftover_removed"
        assert event.run_id == run_id
        survivor.reload()
        assert name not in survivor.attrs["NetworkSettings"]["Networks"]
        # The live session of this process is untouched: network, labels and rules.
        network = client.networks.get(live.network.network_id)
        assert network.attrs["Labels"][LABEL_EGRESS_OWNER] == current_owner()
        assert live.network.bridge in _rules("iptables")
        assert live.network.bridge in _rules("ip6tables")
        # A second clean-up finds nothing more.
        again = remove_leftover_egress(docker_client())
        assert again.networks == ()
        assert again.rules == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if survivor is not None:
            survivor.remove(force=True)
        live.close()
        for tool in ("iptables", "ip6tables"):
            for plant_bridge, comment in planted:
                subprocess.run(
                    [
                        tool,
                        "-D",
                        "INPUT",
                        "-i",
                        plant_bridge,
                        "-m",
                        "comment",
                        "--comment",
                        comment,
                        "-j",
                        "DROP",
                    ],
                    capture_output=True,
                    check=False,
                )
        for leftover in client.networks.list(names=[name]):
            leftover.remove()
    assert live.network.bridge not in _rules("iptables")


def test_an_acknowledged_host_address_is_reachable_and_on_the_record(
    upstream: Path,  # noqa: F811 - the fixture imported above
) -> None:
    require_docker()
    import docker  # noqa: PLC0415

    client = docker.from_env()
    service = Listener(NS_HOST_IP)
    other = Listener(NS_HOST_IP)
    policy = parse_policy(
        {
            "allow": [
                {"cidr": "198.18.0.0/24", "ports": [other.port]},
                {"cidr": f"{NS_HOST_IP}/32", "ports": [service.port], "allow_host_address": True},
            ]
        }
    )
    audit = MemoryAuditLog()
    run_id = f"egress-ack-{secrets.token_hex(4)}"
    session = EgressSession.for_run(
        run_id, policy, docker_client=docker_client(), launcher_id="it", audit=audit
    )
    container = None
    try:
        container = client.containers.run(
            busybox_image(),
            ["sleep", "120"],
            detach=True,
            read_only=True,
            cap_drop=["ALL"],
            environment=dict(session.proxy_env),
            **session.host_config_overrides(),
        )
        _proxy_get(container, f"http://{NS_HOST_IP}:{service.port}/")
        refused = _proxy_get(container, f"http://{NS_HOST_IP}:{other.port}/")
    finally:
        if container is not None:
            container.remove(force=True)
        session.close()
        service.close()
        other.close()
    assert service.accepted == 1
    assert other.accepted == 0  # same address, a port the acknowledgement does not cover
    assert "reason: egress_host_address" in refused
    (ack,) = [e for e in audit.events if e.type == "egress.host_addresses_acknowledged"]
    assert ack.fields["addresses"] == NS_HOST_IP
    assert ack.run_id == run_id
    connections = [e for e in audit.events if e.type == "egress.connection"]
    assert {(e.fields["port"], e.fields["host_address"]) for e in connections} == {
        (service.port, True),
        (other.port, False),
    }


def test_a_runs_proxy_never_dials_into_another_run_network() -> None:
    """Run A's policy allows the whole Docker address range; run B's container listens on its
    own internal network. The host can reach B's container (it holds B's gateway), so without
    the check A's proxy would relay A into B."""
    _require_root()
    require_docker()
    import docker  # noqa: PLC0415

    client = docker.from_env()
    image = busybox_image()
    empty = parse_policy({"allow": []})
    session_b = EgressSession.for_run(
        f"egress-b-{secrets.token_hex(4)}", empty, docker_client=docker_client(), launcher_id="it"
    )
    session_a: EgressSession | None = None
    containers: list[Any] = []
    try:
        target = client.containers.run(
            image,
            ["sh", "-c", "nc -l -p 8080 && echo CONNECTED"],
            detach=True,
            **session_b.host_config_overrides(),
        )
        containers.append(target)
        target.reload()
        b_ip = target.attrs["NetworkSettings"]["Networks"][session_b.network_name]["IPAddress"]
        policy = parse_policy(
            {
                "allow": [
                    {"cidr": str(session_b.network.subnet), "ports": [8080]},
                    {"cidr": "172.16.0.0/12", "ports": [8080]},
                ]
            }
        )
        session_a = EgressSession.for_run(
            f"egress-a-{secrets.token_hex(4)}",
            policy,
            docker_client=docker_client(),
            launcher_id="it",
        )
        run = client.containers.run(
            image,
            ["sleep", "120"],
            detach=True,
            read_only=True,
            cap_drop=["ALL"],
            environment=dict(session_a.proxy_env),
            **session_a.host_config_overrides(),
        )
        containers.append(run)
        answer = _proxy_get(run, f"http://{b_ip}:8080/")
        time.sleep(1)
        b_log = target.logs().decode("utf-8", "replace")
    finally:
        for container in containers:
            container.remove(force=True)
        if session_a is not None:
            session_a.close()
        session_b.close()
    assert "reason: egress_host_address" in answer, answer
    assert "CONNECTED" not in b_log
