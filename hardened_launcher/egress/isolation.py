"""Per-run network isolation: an internal Docker network whose only reachable peer is the run's
egress proxy, and the session object the executor uses to put a run on it.

Layout for one run::

    run container ──(internal bridge hle-<hash>, no route out, no NAT)──▶ gateway = host
                                                         proxy listens on gateway:PORT only

- The network is ``internal`` (Docker installs no route or masquerading to the outside) and has
  inter-container traffic disabled.
- The host is reachable from the bridge (it holds the gateway address), so host INPUT rules
  (iptables and ip6tables alike) accept only TCP to the proxy's port from that bridge and drop
  everything else, IPv6 forwarding to and from the bridge is dropped, and the bridge's IPv6 is
  turned off: a run cannot reach other services listening on the host. Networks and rules
  carry the owner token of this process (:mod:`.owner`) for :mod:`.leftovers`.
- DNS: Docker's embedded resolver (127.0.0.11) would forward names upstream; the container's
  upstream is set to an address inside the run's own subnet that nobody holds (the *DNS sink*),
  so names never leave the run (no DNS exfiltration path). Runs need no DNS: they name hosts to
  the proxy, which resolves them itself.
- ``HTTP_PROXY``/``HTTPS_PROXY`` (and lower-case forms) point at the proxy; ``NO_PROXY`` lists
  only the container's own loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hardened_launcher.audit.events import AuditEvent, AuditSink, Outcome
from hardened_launcher.egress.classify import IPAddress, IPNetwork
from hardened_launcher.egress.host_addresses import (
    RUN_BRIDGE_PREFIX,
    HostAddresses,
    HostAddressesUnavailableError,
    system_host_addresses,
)
from hardened_launcher.egress.owner import current_owner
from hardened_launcher.egress.policy import EgressPolicy
from hardened_launcher.errors import InfrastructureError

if TYPE_CHECKING:
    from hardened_launcher.docker_api import DockerClient

    # The proxy (and asyncio) load with the first run that has an egress policy: an idle
    # launcher does not carry them (docs/launcher.md, memory).
    from hardened_launcher.egress.proxy import (
        Connector,
        EgressDecision,
        EgressProxy,
        ProxyLimits,
        Resolver,
    )

__all__ = [
    "LABEL_EGRESS_RUN",
    "EgressSession",
    "HostFirewall",
    "RunNetwork",
    "create_run_network",
    "proxy_environment",
]

log = logging.getLogger(__name__)

#: One label prefix for everything the launcher makes in Docker (the executor's).
LABEL_PREFIX: Final = "io.hardened-launcher."
LABEL_EGRESS_RUN: Final = LABEL_PREFIX + "egress-run"
#: The owner token of the process that made the network (:mod:`.owner`, :mod:`.leftovers`).
LABEL_EGRESS_OWNER: Final = LABEL_PREFIX + "egress-owner"
LABEL_EGRESS_LAUNCHER: Final = LABEL_PREFIX + "egress-launcher-id"
LABEL_MANAGED: Final = LABEL_PREFIX + "managed"
#: The prefix older versions gave egress networks; only read (leftovers cleanup after upgrade).
LEGACY_LABEL_PREFIX: Final = "dev.hardened-launcher."
NETWORK_PREFIX: Final = "hl-egress-"
NO_PROXY: Final = "localhost,127.0.0.1,::1"


class EgressIsolationError(InfrastructureError):
    """The run's network, firewall rules or proxy could not be set up."""

    default_reason = "egress_isolation_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunNetwork:
    """An internal Docker network made for one run."""

    name: str
    network_id: str
    bridge: str
    subnet: IPNetwork
    gateway: IPAddress

    @property
    def dns_sink(self) -> IPAddress:
        """An address of the run's subnet that no container holds (Docker allocates from the
        bottom): DNS forwarded there goes nowhere."""
        return self.subnet.broadcast_address - 1


def _short_hash(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def create_run_network(client: DockerClient, run_id: str, *, launcher_id: str) -> RunNetwork:
    """Create the run's internal network (the caller removes it with :func:`remove_network`)."""
    from hardened_launcher.docker_api import DockerError  # noqa: PLC0415 - only where runs are

    name = f"{NETWORK_PREFIX}{run_id}"[:64]
    bridge = f"{RUN_BRIDGE_PREFIX}{_short_hash(f'{launcher_id}/{run_id}', 10)}"
    try:
        network_id = client.create_network(
            name,
            driver="bridge",
            internal=True,
            labels={
                LABEL_MANAGED: "true",
                LABEL_EGRESS_RUN: run_id,
                LABEL_EGRESS_OWNER: current_owner(),
                LABEL_EGRESS_LAUNCHER: launcher_id,
            },
            options={
                "com.docker.network.bridge.name": bridge,
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
        )
        configs = (client.inspect_network(network_id).get("IPAM") or {}).get("Config") or []
        config = configs[0]
        subnet = ipaddress.ip_network(config["Subnet"])
        gateway = ipaddress.ip_address(config.get("Gateway") or str(subnet.network_address + 1))
    except (DockerError, KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise EgressIsolationError(
            f"cannot create the run's internal network {name}",
            hint="check that dockerd is running and has free address pools",
            detail=str(exc)[:500],
        ) from exc
    return RunNetwork(
        name=name, network_id=network_id, bridge=bridge, subnet=subnet, gateway=gateway
    )


def remove_network(client: DockerClient, network: RunNetwork) -> None:
    """Remove the run's network (after its container is gone); best effort, logged."""
    from hardened_launcher.docker_api import DockerError, NotFoundError  # noqa: PLC0415

    try:
        client.remove_network(network.network_id)
    except NotFoundError:
        return
    except DockerError as exc:
        log.warning(
            "egress.network_remove_failed",
            extra={"network": network.name, "error": type(exc).__name__},
        )


FIREWALL_COMMENT_PREFIX: Final = "hl-egress:"
_IF_INET6: Final = Path("/proc/net/if_inet6")
_TOOL: Final = {4: "iptables", 6: "ip6tables"}


def missing_firewall_tools() -> list[str]:
    """The firewall programs the run rules need that are not on PATH (ip6tables only where the
    host has IPv6): what :meth:`HostFirewall.install` would refuse on, checked at start-up."""
    needed = ["iptables", "ip6tables"] if ipv6_present() else ["iptables"]
    return [tool for tool in needed if shutil.which(tool) is None]


def ipv6_present() -> bool:
    """Whether the kernel has IPv6 at all (booted with ``ipv6.disable=1`` it has none)."""
    return _IF_INET6.exists()


class HostFirewall:
    """Host rules for one run bridge, IPv4 and IPv6 alike: INPUT accepts TCP to the proxy port
    and drops the rest; IPv6 also drops everything forwarded to or from the bridge (Docker
    manages no IPv6 rules for a network without IPv6). Every rule carries the comment
    ``hl-egress:<owner token>`` so that a later launcher can remove a dead owner's rules
    (:mod:`.leftovers`)."""

    def __init__(
        self, bridge: str, gateway: IPAddress, port: int, *, owner: str | None = None
    ) -> None:
        self.bridge = bridge
        tag = ["-m", "comment", "--comment", f"{FIREWALL_COMMENT_PREFIX}{owner or current_owner()}"]
        accept = ["-i", bridge, "-p", "tcp", "-d", str(gateway), "--dport", str(port), *tag]
        drop_in = ["-i", bridge, *tag, "-j", "DROP"]
        self.rules: list[tuple[str, str, list[str]]] = [
            ("iptables", "INPUT", drop_in),
            ("ip6tables", "INPUT", drop_in),
            ("ip6tables", "FORWARD", drop_in),
            ("ip6tables", "FORWARD", ["-o", bridge, *tag, "-j", "DROP"]),
            # Inserted last at position 1, so it is evaluated before the DROP.
            (_TOOL[gateway.version], "INPUT", [*accept, "-j", "ACCEPT"]),
        ]
        if not ipv6_present():
            self.rules = [r for r in self.rules if r[0] == "iptables"]
        self._installed: list[tuple[str, str, list[str]]] = []
        self._tools = {tool: shutil.which(tool) for tool in ("iptables", "ip6tables")}

    def install(self) -> None:
        for tool, _chain, _rule in self.rules:
            if self._tools[tool] is None:
                raise EgressIsolationError(
                    f"{tool} is not installed; a run could reach services on the launcher's host",
                    hint="install iptables (with ip6tables), or run the launcher where it is",
                    reason="egress_firewall_unavailable",
                )
        for tool, chain, rule in self.rules:
            self._run(tool, ["-I", chain, "1", *rule])
            self._installed.append((tool, chain, rule))

    def remove(self) -> None:
        while self._installed:
            tool, chain, rule = self._installed.pop()
            with contextlib.suppress(EgressIsolationError):
                self._run(tool, ["-D", chain, *rule])

    def _run(self, tool: str, args: list[str]) -> None:
        run_firewall_tool(self._tools[tool], args, bridge=self.bridge)


def run_firewall_tool(path: str | None, args: list[str], *, bridge: str) -> str:
    """Run ``iptables``/``ip6tables`` (waiting for the xtables lock); its output, or raise."""
    if path is None:
        raise EgressIsolationError(
            "iptables is not installed", reason="egress_firewall_unavailable"
        )
    done = subprocess.run(
        [path, "-w", "5", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if done.returncode != 0:
        raise EgressIsolationError(
            f"cannot change the host firewall for {bridge}",
            hint="the launcher needs root (CAP_NET_ADMIN) to isolate runs",
            reason="egress_firewall_failed",
            detail=done.stderr.strip()[:500],
        )
    return done.stdout


def disable_bridge_ipv6(bridge: str) -> None:
    """Turn IPv6 off on the run's bridge (the host then holds no link-local address a run could
    reach there). The ip6tables rules hold even if this cannot be done."""
    knob = Path("/proc/sys/net/ipv6/conf") / bridge / "disable_ipv6"
    if not knob.exists():
        return
    try:
        knob.write_text("1\n", encoding="ascii")
    except OSError as exc:
        raise EgressIsolationError(
            f"cannot turn IPv6 off on the run's bridge {bridge}",
            hint="the launcher needs root to isolate runs",
            reason="egress_firewall_failed",
            detail=str(exc)[:500],
        ) from None


def proxy_environment(proxy_url: str) -> dict[str, str]:
    """The run's proxy variables (both spellings: tools disagree on case)."""
    env = {"HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url, "NO_PROXY": NO_PROXY}
    env.update({key.lower(): value for key, value in env.items()})
    return env


class _LoopThread:
    """An asyncio loop in a daemon thread, for callers (the Docker runner) that are blocking."""

    def __init__(self, name: str) -> None:
        import asyncio  # noqa: PLC0415  # only runs with an egress policy need it

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:  # noqa: ANN401 - generic
        import asyncio  # noqa: PLC0415  # loaded by __init__

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass(kw_only=True)
class EgressSession:
    """One run's egress: its internal network, host firewall rules and proxy.

    Build it with :meth:`for_run` before the container is created, give the container
    :attr:`network_name`, :meth:`host_config_overrides` and :attr:`proxy_env`, and call
    :meth:`close` after the container is removed (it removes the network).
    """

    run_id: str
    network: RunNetwork
    proxy: EgressProxy
    proxy_url: str
    proxy_env: Mapping[str, str]
    _client: DockerClient
    _loop: _LoopThread
    _firewall: HostFirewall | None
    _closed: bool = field(default=False)

    @property
    def network_name(self) -> str:
        return self.network.name

    @classmethod
    def for_run(
        cls,
        run_id: str,
        policy: EgressPolicy,
        *,
        docker_client: DockerClient,
        launcher_id: str,
        audit: AuditSink | None = None,
        on_decision: Callable[[EgressDecision], None] | None = None,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        limits: ProxyLimits | None = None,
        firewall: bool = True,
        host_addresses: HostAddresses | None = None,
    ) -> EgressSession:
        """Create the network, start the proxy on its gateway, install the firewall rules
        (IPv4 and IPv6) and turn IPv6 off on the run's bridge."""
        host_addresses = host_addresses or system_host_addresses()
        try:
            host_addresses.snapshot()  # fail before the run, not at its first connection
        except HostAddressesUnavailableError as exc:
            raise EgressIsolationError(
                exc.message, hint=exc.hint, reason=exc.reason, detail=exc.detail
            ) from None
        network = create_run_network(docker_client, run_id, launcher_id=launcher_id)
        loop: _LoopThread | None = None
        fw: HostFirewall | None = None
        try:
            from hardened_launcher.egress.proxy import EgressProxy  # noqa: PLC0415  # see imports

            loop = _LoopThread(f"egress-{run_id}"[:15])
            proxy = EgressProxy(
                policy,
                run_id=run_id,
                audit=audit,
                resolver=resolver,
                connector=connector,
                limits=limits,
                on_decision=on_decision,
                self_addresses={network.gateway},
                allowed_clients=(network.subnet,),
                host_addresses=host_addresses,
            )
            try:
                host, port = loop.call(proxy.start(str(network.gateway), 0))
            except OSError as exc:
                raise EgressIsolationError(
                    f"cannot start the egress proxy on {network.gateway}",
                    detail=str(exc)[:500],
                ) from exc
            if firewall:
                fw = HostFirewall(network.bridge, network.gateway, port)
                fw.install()
                disable_bridge_ipv6(network.bridge)
        except BaseException:
            if fw is not None:
                fw.remove()
            if loop is not None:
                loop.stop()
            remove_network(docker_client, network)
            raise
        acknowledged = policy.acknowledged_host_addresses
        if audit is not None and acknowledged:
            # The operator let this run dial addresses of the launcher's own host: on the record.
            audit.record(
                AuditEvent(
                    type="egress.host_addresses_acknowledged",
                    outcome=Outcome.ALLOW,
                    gate="egress",
                    run_id=run_id,
                    reason="allow_host_address",
                    fields={"addresses": ",".join(str(n.network_address) for n in acknowledged)},
                )
            )
        url = f"http://{host}:{port}"
        return cls(
            run_id=run_id,
            network=network,
            proxy=proxy,
            proxy_url=url,
            proxy_env=proxy_environment(url),
            _client=docker_client,
            _loop=loop,
            _firewall=fw,
        )

    def host_config_overrides(self) -> dict[str, Any]:
        """Keys to set in the container's host config (``create_host_config`` arguments)."""
        return {
            "network_mode": self.network.name,
            "dns": [str(self.network.dns_sink)],
            "dns_search": [],
            "dns_opt": ["timeout:1", "attempts:1"],
        }

    def close(self) -> None:
        """Stop the proxy (recording open tunnels), remove the firewall rules and the network.
        Call after the run's container is removed; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.call(self.proxy.close())
        finally:
            self._loop.stop()
            if self._firewall is not None:
                self._firewall.remove()
            remove_network(self._client, self.network)

    def __enter__(self) -> EgressSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
