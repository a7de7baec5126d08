"""Per-run network isolation: an internal Docker network whose only reachable peer is the run's
egress proxy, and the session object the executor uses to put a run on it.

Layout for one run::

    run container ──(internal bridge hle-<hash>, no route out, no NAT)──▶ gateway = host
                                                         proxy listens on gateway:PORT only

- The network is ``internal`` (Docker installs no route or masquerading to the outside) and has
  inter-container traffic disabled.
- The host is reachable from the bridge (it holds the gateway address), so host INPUT rules
  (iptables) accept only TCP to the proxy's port from that bridge and drop everything else:
  a run cannot reach other services listening on the host.
- DNS: Docker's embedded resolver (127.0.0.11) would forward names upstream; the container's
  upstream is set to an address inside the run's own subnet that nobody holds (the *DNS sink*),
  so names never leave the run (no DNS exfiltration path). Runs need no DNS: they name hosts to
  the proxy, which resolves them itself.
- ``HTTP_PROXY``/``HTTPS_PROXY`` (and lower-case forms) point at the proxy; ``NO_PROXY`` lists
  only the container's own loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from hardened_launcher.audit.events import AuditSink
from hardened_launcher.egress.classify import IPAddress, IPNetwork
from hardened_launcher.egress.policy import EgressPolicy
from hardened_launcher.egress.proxy import (
    Connector,
    EgressDecision,
    EgressProxy,
    ProxyLimits,
    Resolver,
)
from hardened_launcher.errors import InfrastructureError

__all__ = [
    "LABEL_EGRESS_RUN",
    "EgressSession",
    "HostFirewall",
    "RunNetwork",
    "create_run_network",
    "proxy_environment",
]

log = logging.getLogger(__name__)

LABEL_EGRESS_RUN: Final = "dev.hardened-launcher.egress-run"
LABEL_MANAGED: Final = "dev.hardened-launcher.managed"
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


def create_run_network(client: Any, run_id: str, *, launcher_id: str) -> RunNetwork:  # noqa: ANN401 - docker SDK
    """Create the run's internal network (the caller removes it with :func:`remove_network`)."""
    import docker.errors  # noqa: PLC0415 - docker is needed only where containers are made

    name = f"{NETWORK_PREFIX}{run_id}"[:64]
    bridge = f"hle-{_short_hash(f'{launcher_id}/{run_id}', 10)}"
    try:
        network = client.networks.create(
            name,
            driver="bridge",
            internal=True,
            check_duplicate=True,
            labels={LABEL_MANAGED: "true", LABEL_EGRESS_RUN: run_id},
            options={
                "com.docker.network.bridge.name": bridge,
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
        )
        network.reload()
        config = network.attrs["IPAM"]["Config"][0]
        subnet = ipaddress.ip_network(config["Subnet"])
        gateway = ipaddress.ip_address(config.get("Gateway") or str(subnet.network_address + 1))
    except (docker.errors.DockerException, KeyError, IndexError, ValueError) as exc:
        raise EgressIsolationError(
            f"cannot create the run's internal network {name}",
            hint="check that dockerd is running and has free address pools",
            detail=str(exc)[:500],
        ) from exc
    return RunNetwork(
        name=name, network_id=network.id, bridge=bridge, subnet=subnet, gateway=gateway
    )


def remove_network(client: Any, network: RunNetwork) -> None:  # noqa: ANN401 - docker SDK
    """Remove the run's network (after its container is gone); best effort, logged."""
    import docker.errors  # noqa: PLC0415

    try:
        client.networks.get(network.network_id).remove()
    except docker.errors.NotFound:
        return
    except docker.errors.DockerException as exc:
        log.warning(
            "egress.network_remove_failed",
            extra={"network": network.name, "error": type(exc).__name__},
        )


class HostFirewall:
    """Host INPUT rules for one run bridge: accept TCP to the proxy port, drop the rest."""

    def __init__(self, bridge: str, gateway: IPAddress, port: int) -> None:
        self.bridge = bridge
        self.rules: list[list[str]] = [
            ["-i", bridge, "-p", "tcp", "-d", str(gateway), "--dport", str(port), "-j", "ACCEPT"],
            ["-i", bridge, "-j", "DROP"],
        ]
        self._installed: list[list[str]] = []
        self._iptables = shutil.which("iptables")

    def install(self) -> None:
        if self._iptables is None:
            raise EgressIsolationError(
                "iptables is not installed; a run could reach services on the launcher's host",
                hint="install iptables, or run the launcher where it is available",
                reason="egress_firewall_unavailable",
            )
        # Inserted at the top in reverse, so ACCEPT comes before DROP.
        for rule in reversed(self.rules):
            self._run(["-I", "INPUT", "1", *rule])
            self._installed.append(rule)

    def remove(self) -> None:
        while self._installed:
            rule = self._installed.pop()
            with contextlib.suppress(EgressIsolationError):
                self._run(["-D", "INPUT", *rule])

    def _run(self, args: list[str]) -> None:
        assert self._iptables is not None  # noqa: S101 - checked by install()
        done = subprocess.run(
            [self._iptables, "-w", "5", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise EgressIsolationError(
                f"cannot change the host firewall for {self.bridge}",
                hint="the launcher needs root (CAP_NET_ADMIN) to isolate runs",
                reason="egress_firewall_failed",
                detail=done.stderr.strip()[:500],
            )


def proxy_environment(proxy_url: str) -> dict[str, str]:
    """The run's proxy variables (both spellings: tools disagree on case)."""
    env = {"HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url, "NO_PROXY": NO_PROXY}
    env.update({key.lower(): value for key, value in env.items()})
    return env


class _LoopThread:
    """An asyncio loop in a daemon thread, for callers (the Docker runner) that are blocking."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coroutine: Any, timeout: float = 30.0) -> Any:  # noqa: ANN401 - generic
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
    _client: Any
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
        docker_client: Any,  # noqa: ANN401 - docker SDK
        launcher_id: str,
        audit: AuditSink | None = None,
        on_decision: Callable[[EgressDecision], None] | None = None,
        resolver: Resolver | None = None,
        connector: Connector | None = None,
        limits: ProxyLimits | None = None,
        firewall: bool = True,
    ) -> EgressSession:
        """Create the network, start the proxy on its gateway, install the firewall rules."""
        network = create_run_network(docker_client, run_id, launcher_id=launcher_id)
        loop: _LoopThread | None = None
        fw: HostFirewall | None = None
        try:
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
        except BaseException:
            if fw is not None:
                fw.remove()
            if loop is not None:
                loop.stop()
            remove_network(docker_client, network)
            raise
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
