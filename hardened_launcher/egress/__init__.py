"""Gate 6: the egress policy, the per-run proxy and the run's network isolation."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardened_launcher.egress.isolation import EgressSession
    from hardened_launcher.egress.matcher import check_addresses, check_target
    from hardened_launcher.egress.policy import EgressPolicy, load_policy, resolve_private_source
    from hardened_launcher.egress.proxy import EgressDecision, EgressProxy, ProxyLimits

#: Where each name lives; loaded on first use, so that importing one submodule (the leftover
#: clean-up at start) does not load the proxy and asyncio into an idle launcher.
_HOMES = {
    "EgressDecision": "proxy",
    "EgressPolicy": "policy",
    "EgressProxy": "proxy",
    "EgressSession": "isolation",
    "ProxyLimits": "proxy",
    "check_addresses": "matcher",
    "check_target": "matcher",
    "load_policy": "policy",
    "resolve_private_source": "policy",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401  # PEP 562: the names in __all__
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


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
