"""Gate 6: the egress policy, the per-run proxy and the run's network isolation."""

from hardened_launcher.egress.isolation import EgressSession
from hardened_launcher.egress.matcher import check_addresses, check_target
from hardened_launcher.egress.policy import EgressPolicy, load_policy, resolve_private_source
from hardened_launcher.egress.proxy import EgressDecision, EgressProxy, ProxyLimits

__all__ = [
    "EgressDecision",
    "EgressPolicy",
    "EgressProxy",
    "EgressSession",
    "ProxyLimits",
    "check_addresses",
    "check_target",
    "load_policy",
    "resolve_private_source",
]
