"""Every endpoint the launcher's host must reach, computed from the settings (a firewall list).

Sources: the token (MQTT broker, control plane; object storage is reached through presigned
URLs from the control plane), the private VCS mappings, the container registry of run images,
and the egress policy's allow rules (runs reach those through the launcher's proxy, so the
launcher's host connects to them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

from hardened_launcher.egress.policy import endpoint_host_port, load_policy
from hardened_launcher.identity.token import Token
from hardened_launcher.settings import Settings

__all__ = ["DOCKER_HUB_ENDPOINTS", "Endpoint", "network_requirements", "render_text"]

#: Docker Hub, where run images come from unless they name another registry.
DOCKER_HUB_ENDPOINTS: Final = (
    ("registry-1.docker.io", 443),
    ("auth.docker.io", 443),
    ("production.cloudflare.docker.com", 443),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One outbound destination: ``host`` may be a name, ``*.name``, an address or a CIDR."""

    purpose: str
    host: str
    ports: tuple[int, ...]
    protocol: str
    source: str


def network_requirements(settings: Settings) -> tuple[Endpoint, ...]:
    """The launcher's outbound endpoints, in a stable order."""
    out: list[Endpoint] = []
    if settings.token is not None:
        token = Token.from_encoded(settings.token)
        out.append(
            Endpoint(
                purpose="MQTT broker (run dispatch, status)",
                host=token.broker_host,
                ports=(token.broker_port,),
                protocol="tcp (MQTT over TLS)",
                source="SPACELIFT_TOKEN broker_url",
            )
        )
        host, port = endpoint_host_port(token.control_plane_url)
        out.append(
            Endpoint(
                purpose="control plane (API; object storage via presigned URLs it issues)",
                host=host,
                ports=(port,),
                protocol="tcp (HTTPS)",
                source="SPACELIFT_TOKEN control_plane_url",
            )
        )
    for index, mapping in enumerate(settings.privatevcs_mappings):
        host, port = endpoint_host_port(mapping.base_endpoint)
        out.append(
            Endpoint(
                purpose=f"private VCS {mapping.name}",
                host=host,
                ports=(port,),
                protocol="tcp (HTTPS)" if port == 443 else "tcp",
                source=f"SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_{index}",
            )
        )
    for host, port in DOCKER_HUB_ENDPOINTS:
        out.append(
            Endpoint(
                purpose="container registry (Docker Hub, run images)",
                host=host,
                ports=(port,),
                protocol="tcp (HTTPS)",
                source="default registry",
            )
        )
    if settings.egress_policy is not None:
        policy = load_policy(settings.egress_policy)
        for rule in policy.allow_hosts:
            out.append(
                Endpoint(
                    purpose="run egress (through the launcher's proxy)",
                    host=str(rule.pattern),
                    ports=tuple(sorted(rule.ports)) if rule.ports else (),
                    protocol="tcp",
                    source="HL_EGRESS_POLICY",
                )
            )
        for cidr in policy.allow_cidrs:
            out.append(
                Endpoint(
                    purpose=(
                        "run egress to the launcher's own host (allow_host_address)"
                        if cidr.host_address
                        else "run egress (through the launcher's proxy)"
                    ),
                    host=str(cidr.network),
                    ports=tuple(sorted(cidr.ports)) if cidr.ports else (),
                    protocol="tcp",
                    source="HL_EGRESS_POLICY",
                )
            )
    return tuple(out)


def as_json(endpoints: tuple[Endpoint, ...]) -> list[dict[str, object]]:
    return [{**asdict(e), "ports": list(e.ports)} for e in endpoints]


def render_text(endpoints: tuple[Endpoint, ...]) -> str:
    """One line per endpoint: ``host:ports  protocol  purpose  (source)``."""
    if not endpoints:
        return "no outbound endpoints"
    rows = []
    for e in endpoints:
        ports = ",".join(map(str, e.ports)) or "any"
        rows.append((f"{e.host}:{ports}", e.protocol, e.purpose, e.source))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["# outbound allowlist for the launcher's host (computed from settings)"]
    lines += [
        f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c.ljust(widths[2])}  ({d})"
        for a, b, c, d in rows
    ]
    return "\n".join(lines)
