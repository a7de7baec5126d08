"""Start-up clean-up of egress sessions a killed launcher left behind.

A launcher killed with SIGKILL (or a power loss) cannot close its runs' egress sessions: their
``hl-egress-*`` networks and their host firewall rules stay. :func:`remove_leftover_egress`
(called by ``start`` and ``exec`` right after leftover containers are removed) removes what a
dead owner left (:mod:`.owner` decides who is dead; a live launcher's sessions are never
touched):

1. every egress network whose owner is dead: its remaining endpoints are disconnected (a
   leftover container loses the network), then the network is removed;
2. then every firewall rule (IPv4 and IPv6, ``INPUT`` and ``FORWARD``) whose comment names a dead
   owner, unless its bridge still exists: a rule is only ever removed after its network is
   gone, so a surviving run container never loses the rules that fence it in.

Each network removed is recorded in the audit log (``egress.leftover_removed``).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.egress.isolation import (
    FIREWALL_COMMENT_PREFIX,
    LABEL_EGRESS_OWNER,
    LABEL_EGRESS_RUN,
    LABEL_PREFIX,
    LEGACY_LABEL_PREFIX,
    EgressIsolationError,
    ipv6_present,
    run_firewall_tool,
)
from hardened_launcher.egress.owner import OwnerState, owner_state
from hardened_launcher.errors import InfrastructureError

if TYPE_CHECKING:
    from hardened_launcher.docker_api import DockerClient
    from hardened_launcher.docker_api.models import NetworkInspect

__all__ = ["EgressLeftovers", "remove_leftover_egress"]

log = logging.getLogger(__name__)

CHAINS: Final = ("INPUT", "FORWARD")
_SYS_NET: Final = Path("/sys/class/net")


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressLeftovers:
    """What one clean-up removed, and what it had to keep."""

    networks: tuple[str, ...] = ()
    rules: int = 0
    kept_networks: tuple[str, ...] = ()


def _bridge_of(network: NetworkInspect) -> str | None:
    options = network.get("Options") or {}
    bridge = options.get("com.docker.network.bridge.name")
    return str(bridge) if bridge else None


def _remove_network(client: DockerClient, network_id: str) -> None:
    from hardened_launcher.docker_api import NotFoundError  # noqa: PLC0415 - only where networks are

    try:
        attached = client.inspect_network(network_id).get("Containers") or {}
    except NotFoundError:
        return
    for container_id in list(attached):
        try:
            client.disconnect_network(network_id, str(container_id))
        except NotFoundError:
            continue
    try:
        client.remove_network(network_id)
    except NotFoundError:
        return


def _egress_networks(client: DockerClient) -> list[NetworkInspect]:
    """Egress networks under the current label and under the one older versions used (so an
    upgraded launcher removes what its predecessor left), each once."""
    legacy = LEGACY_LABEL_PREFIX + LABEL_EGRESS_RUN.removeprefix(LABEL_PREFIX)
    found: dict[str, NetworkInspect] = {}
    for label in (LABEL_EGRESS_RUN, legacy):
        for network in client.networks(labels=[label]):
            found.setdefault(str(network.get("Id", "")), network)
    return list(found.values())


def _current_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` with the older versions' prefix read as the current one (current wins)."""
    renamed = {
        LABEL_PREFIX + key.removeprefix(LEGACY_LABEL_PREFIX): value
        for key, value in labels.items()
        if key.startswith(LEGACY_LABEL_PREFIX)
    }
    return {**renamed, **labels}


def _remove_networks(
    client: DockerClient,
    audit: AuditSink | None,
) -> tuple[list[str], list[str], set[str]]:
    from hardened_launcher.docker_api import DockerError  # noqa: PLC0415

    removed: list[str] = []
    kept: list[str] = []
    kept_bridges: set[str] = set()
    try:
        found = _egress_networks(client)
    except DockerError as exc:
        raise InfrastructureError(
            "cannot list leftover egress networks",
            hint="check that dockerd is running",
            reason="egress_cleanup_failed",
            detail=str(exc)[:500],
        ) from None
    for network in found:
        labels = _current_labels(network.get("Labels") or {})
        name = str(network.get("Name", ""))
        if owner_state(str(labels.get(LABEL_EGRESS_OWNER, ""))) is not OwnerState.DEAD:
            continue
        bridge = _bridge_of(network)
        try:
            _remove_network(client, str(network.get("Id", "")))
        except DockerError as exc:
            kept.append(name)
            if bridge:
                kept_bridges.add(bridge)
            log.warning("egress.leftover_kept", extra={"network": name, "error": str(exc)[:200]})
            continue
        removed.append(name)
        log.warning("egress.leftover_removed", extra={"network": name})
        if audit is not None:
            audit.record(
                AuditEvent(
                    type="egress.leftover_removed",
                    outcome=Outcome.INFO,
                    gate="egress",
                    run_id=str(labels.get(LABEL_EGRESS_RUN, "unknown"))[:200],
                    reason="launcher_restarted",
                    fields={"network": name, "bridge": bridge},
                )
            )
    return removed, kept, kept_bridges


def _rule_bridge(args: list[str]) -> str | None:
    for flag in ("-i", "-o"):
        if flag in args:
            index = args.index(flag)
            if index + 1 < len(args):
                return args[index + 1]
    return None


def _rule_owner(args: list[str]) -> str | None:
    if "--comment" not in args:
        return None
    index = args.index("--comment")
    comment = args[index + 1] if index + 1 < len(args) else ""
    if not comment.startswith(FIREWALL_COMMENT_PREFIX):
        return None
    return comment[len(FIREWALL_COMMENT_PREFIX) :]


def _remove_rules(kept_bridges: set[str]) -> int:
    if os.geteuid() != 0:
        # Without root there were no rules of ours (a session needs root to install them),
        # and listing them would fail: nothing to do, nothing to warn about.
        log.debug("egress.leftover_rules_skipped", extra={"why": "not root"})
        return 0
    tools = ["iptables", "ip6tables"] if ipv6_present() else ["iptables"]
    removed = 0
    for tool in tools:
        path = shutil.which(tool)
        if path is None:
            continue
        for chain in CHAINS:
            try:
                listing = run_firewall_tool(path, ["-S", chain], bridge="-")
            except EgressIsolationError as exc:
                # Leftover rules only fence a bridge in; keeping them is safe. Say so, go on.
                log.warning(
                    "egress.leftover_rules_unlisted",
                    extra={"tool": tool, "error": exc.detail[:200]},
                )
                continue
            for line in listing.splitlines():
                try:
                    args = shlex.split(line)
                except ValueError:
                    continue
                if len(args) < 2 or args[:2] != ["-A", chain]:
                    continue
                owner = _rule_owner(args)
                bridge = _rule_bridge(args)
                if owner is None or bridge is None or bridge in kept_bridges:
                    continue
                if owner_state(owner) is not OwnerState.DEAD:
                    continue
                if (_SYS_NET / bridge).exists():
                    continue  # its network is still there (not ours to judge): keep the fence
                try:
                    run_firewall_tool(path, ["-D", *args[1:]], bridge=bridge)
                except EgressIsolationError:
                    log.warning("egress.leftover_rule_kept", extra={"bridge": bridge})
                    continue
                removed += 1
    return removed


def remove_leftover_egress(
    client: DockerClient,
    *,
    audit: AuditSink | None = None,
    firewall: bool = True,
) -> EgressLeftovers:
    """Remove the networks, then the firewall rules, of egress sessions whose owner is dead."""
    removed, kept, kept_bridges = _remove_networks(client, audit)
    rules = _remove_rules(kept_bridges) if firewall else 0
    if rules:
        log.warning("egress.leftover_rules_removed", extra={"rules": rules})
    return EgressLeftovers(networks=tuple(removed), rules=rules, kept_networks=tuple(kept))
