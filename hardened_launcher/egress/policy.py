"""The egress policy: which hosts, ports and networks a run may reach. Validated when built.

File format (YAML, or TOML when the file name ends in ``.toml``); ``docs/egress.md`` has examples::

    version: 1
    allow:
      - host: github.com            # exact name (IDNA-normalised)
        ports: [443]                # default [443]
      - host: "*.githubusercontent.com"   # subdomains only, not the name itself
      - cidr: 10.20.0.0/16          # IP literals in this range; lifts the built-in private
        ports: [8443]               # denial for addresses inside it
      - host: vcs.corp.internal
        private: true               # this name may resolve to private/CGNAT/ULA addresses
      - cidr: 10.20.0.5/32          # one address of the launcher's own host: refused unless
        ports: [8443]               # a rule names exactly it and acknowledges that it is the
        allow_host_address: true    # host (audited with every connection)
    deny:                           # deny wins over allow; ports default to all
      - host: gist.github.com
      - cidr: 140.82.112.0/20

Default deny: an empty or absent ``allow`` list allows nothing. A run may narrow the pool's
policy (:meth:`EgressPolicy.narrowed`), never widen it: a narrowed policy allows a connection only
when the pool's policy and the run's both do.
"""

from __future__ import annotations

import functools
import ipaddress
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hardened_launcher.bounded_input import DocumentTooDeepError, load_toml
from hardened_launcher.egress.classify import (
    HostSyntaxError,
    IPNetwork,
    parse_host,
)
from hardened_launcher.egress.errors import EgressDeniedError, EgressPolicyError
from hardened_launcher.settings import PrivateVcsMapping
from hardened_launcher.urls import split_url

__all__ = [
    "DEFAULT_ALLOW_PORTS",
    "MAX_POLICY_BYTES",
    "MAX_RULES",
    "CidrRule",
    "EgressPolicy",
    "HostPattern",
    "HostRule",
    "load_policy",
    "parse_policy",
    "resolve_private_source",
]

POLICY_VERSION: Final = 1
MAX_POLICY_BYTES: Final = 1024 * 1024
MAX_RULES: Final = 10_000
DEFAULT_ALLOW_PORTS: Final = frozenset({443})
_RULE_KEYS: Final = frozenset({"host", "cidr", "ports", "private", "allow_host_address"})
_TOP_KEYS: Final = frozenset({"version", "allow", "deny"})


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPattern:
    """``example.com`` (that name only) or ``*.example.com`` (its subdomains, not itself)."""

    text: str
    suffix: str = field(init=False)
    wildcard: bool = field(init=False)

    def __post_init__(self) -> None:
        wildcard = self.text.startswith("*.")
        body = self.text[2:] if wildcard else self.text
        if "*" in body:
            raise ValueError("'*' is allowed only as the whole first label ('*.example.com')")
        try:
            parsed = parse_host(body)
        except HostSyntaxError as exc:
            raise ValueError(f"is not a host name ({exc})") from None
        if parsed.name is None:
            raise ValueError("is an IP address; use a cidr rule for addresses")
        object.__setattr__(self, "suffix", parsed.name)
        object.__setattr__(self, "wildcard", wildcard)

    def matches(self, name: str) -> bool:
        """Whether the normalised ``name`` matches."""
        if self.wildcard:
            return name.endswith("." + self.suffix)
        return name == self.suffix

    def __str__(self) -> str:
        return f"*.{self.suffix}" if self.wildcard else self.suffix


@dataclass(frozen=True, slots=True, kw_only=True)
class HostRule:
    """A host pattern and its ports (``None``: every port). ``private`` lets the name resolve to
    private, CGNAT and unique-local addresses (never loopback, link-local or metadata)."""

    pattern: HostPattern
    ports: frozenset[int] | None
    private: bool = False

    def matches(self, name: str, port: int) -> bool:
        return self.pattern.matches(name) and (self.ports is None or port in self.ports)


@dataclass(frozen=True, slots=True, kw_only=True)
class CidrRule:
    """A network and its ports (``None``: every port). ``host_address`` (policy key
    ``allow_host_address``) acknowledges that the rule's one address is the launcher's own host:
    only such a rule lets the proxy dial a host address (docs/egress.md)."""

    network: IPNetwork
    ports: frozenset[int] | None
    host_address: bool = False

    def __post_init__(self) -> None:
        if self.host_address and self.network.num_addresses != 1:
            raise ValueError("allow_host_address applies to a single address (/32 or /128)")

    def covers_port(self, port: int) -> bool:
        return self.ports is None or port in self.ports


@dataclass(frozen=True, slots=True, kw_only=True)
class EgressPolicy:
    """Allow and deny rules; ``parent`` is the wider policy this one narrows (or ``None``)."""

    allow_hosts: tuple[HostRule, ...] = ()
    allow_cidrs: tuple[CidrRule, ...] = ()
    deny_hosts: tuple[HostRule, ...] = ()
    deny_cidrs: tuple[CidrRule, ...] = ()
    parent: EgressPolicy | None = None
    source: str = "<memory>"

    @property
    def acknowledged_host_addresses(self) -> tuple[IPNetwork, ...]:
        """Addresses some level acknowledges as the launcher's host (for the audit log)."""
        found: list[IPNetwork] = []
        for level in self.levels:
            found.extend(r.network for r in level.allow_cidrs if r.host_address)
        return tuple(dict.fromkeys(found))

    @property
    def levels(self) -> tuple[EgressPolicy, ...]:
        """The pool's policy first, then each narrowing."""
        chain: list[EgressPolicy] = []
        level: EgressPolicy | None = self
        while level is not None:
            chain.append(level)
            level = level.parent
        return tuple(reversed(chain))

    def narrowed(self, run_policy: EgressPolicy) -> EgressPolicy:
        """``run_policy`` applied inside this one: allowed only where both allow."""
        for level in run_policy.levels:
            if level.parent is not None:
                raise ValueError("a run policy must not itself be narrowed")
        return EgressPolicy(
            allow_hosts=run_policy.allow_hosts,
            allow_cidrs=run_policy.allow_cidrs,
            deny_hosts=run_policy.deny_hosts,
            deny_cidrs=run_policy.deny_cidrs,
            parent=self,
            source=run_policy.source,
        )

    def with_private_vcs(self, mappings: Sequence[PrivateVcsMapping]) -> EgressPolicy:
        """This policy plus allow rules for each private VCS endpoint (on the pool level)."""
        if not mappings:
            return self
        if self.parent is not None:
            raise ValueError("add private VCS endpoints to the pool's policy before narrowing")
        hosts = list(self.allow_hosts)
        cidrs = list(self.allow_cidrs)
        for mapping in mappings:
            host, port = endpoint_host_port(mapping.base_endpoint)
            parsed = parse_host(host)
            if parsed.address is not None:
                prefix = 32 if parsed.address.version == 4 else 128
                network = ipaddress.ip_network(f"{parsed.address}/{prefix}")
                cidrs.append(CidrRule(network=network, ports=frozenset({port})))
            else:
                hosts.append(
                    HostRule(pattern=HostPattern(text=host), ports=frozenset({port}), private=True)
                )
        return EgressPolicy(
            allow_hosts=tuple(hosts),
            allow_cidrs=tuple(cidrs),
            deny_hosts=self.deny_hosts,
            deny_cidrs=self.deny_cidrs,
            source=self.source,
        )


def endpoint_host_port(endpoint: str) -> tuple[str, int]:
    """Host and port of an ``http(s)://`` URL or a ``host:port`` endpoint (as in settings)."""
    text = endpoint if "://" in endpoint else f"tcp://{endpoint}"
    parts = split_url(text)
    if parts is None:
        raise ValueError("endpoint is not a well-formed URL")
    host = parts.hostname
    if host is None:
        raise ValueError("endpoint has no host")
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    port = parts.port or default
    if port is None:
        raise ValueError("endpoint has no port")
    if ":" in host:
        host = f"[{host}]"
    return host, port


def resolve_private_source(url: str, mappings: Sequence[PrivateVcsMapping]) -> str:
    """The real URL behind ``private://NAME/path``: the mapping's base endpoint plus the path.

    Any other URL is returned unchanged. An unknown NAME is refused
    (``egress_private_vcs_unknown``): the run asked for a VCS this pool does not map.
    """
    if not url.lower().startswith("private://"):
        return url
    rest = url[len("private://") :]
    name, _, path = rest.partition("/")
    for mapping in mappings:
        if mapping.name == name:
            base = mapping.base_endpoint
            if "://" not in base:
                base = f"https://{base}"
            return f"{base.rstrip('/')}/{path}" if path else base
    raise EgressDeniedError(
        f"the source URL names private VCS {name!r}, which this worker pool does not map",
        hint="set SPACELIFT_PRIVATEVCS_MAPPING_NAME_<n> and _BASE_ENDPOINT_<n> for it",
        reason="egress_private_vcs_unknown",
    )


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
def _fail(source: str, where: str, why: str) -> EgressPolicyError:
    return EgressPolicyError(
        f"the egress policy {source} is invalid: {where} {why}",
        hint="fix the file (docs/egress.md documents the format)",
    )


def _ports(source: str, where: str, value: object) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise _fail(source, where, "ports must be a non-empty list of port numbers")
    ports: set[int] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 65535:
            raise _fail(source, where, "ports must be whole numbers from 1 to 65535")
        ports.add(item)
    return frozenset(ports)


def _rule(source: str, where: str, raw: object, *, allow: bool) -> HostRule | CidrRule:
    if not isinstance(raw, Mapping):
        raise _fail(source, where, "must be a table with 'host' or 'cidr'")
    keys = set(raw)
    if unknown := keys - _RULE_KEYS:
        raise _fail(source, where, f"has unknown keys {sorted(map(str, unknown))}")
    if ("host" in keys) == ("cidr" in keys):
        raise _fail(source, where, "must have exactly one of 'host' and 'cidr'")
    if "ports" in keys:
        ports: frozenset[int] | None = _ports(source, where, raw["ports"])
    else:
        ports = DEFAULT_ALLOW_PORTS if allow else None
    private = raw.get("private", False)
    if not isinstance(private, bool):
        raise _fail(source, where, "private must be true or false")
    if private and ("host" not in keys or not allow):
        raise _fail(source, where, "private applies to allow rules with a host only")
    host_address = raw.get("allow_host_address", False)
    if not isinstance(host_address, bool):
        raise _fail(source, where, "allow_host_address must be true or false")
    if host_address and ("cidr" not in keys or not allow):
        raise _fail(source, where, "allow_host_address applies to allow rules with a cidr only")
    if "host" in keys:
        host = raw["host"]
        if not isinstance(host, str):
            raise _fail(source, where, "host must be a string")
        try:
            return HostRule(pattern=HostPattern(text=host), ports=ports, private=private)
        except ValueError as exc:
            raise _fail(source, where, f"host {host!r} {exc}") from None
    cidr = raw["cidr"]
    if not isinstance(cidr, str):
        raise _fail(source, where, "cidr must be a string such as 10.0.0.0/8")
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        raise _fail(
            source, where, f"cidr {cidr!r} is not a network (host bits must be zero)"
        ) from None
    if host_address and network.num_addresses != 1:
        raise _fail(
            source,
            where,
            f"allow_host_address names one address of the launcher's host; {cidr!r} is a range "
            "(write the exact address as /32 or /128)",
        )
    return CidrRule(network=network, ports=ports, host_address=host_address)


def parse_policy(document: object, *, source: str = "<memory>") -> EgressPolicy:
    """Build a policy from a decoded YAML/TOML document, refusing anything unexpected."""
    if document is None:
        document = {}
    if not isinstance(document, Mapping):
        raise _fail(source, "the top level", "must be a table")
    if unknown := set(document) - _TOP_KEYS:
        raise _fail(source, "the top level", f"has unknown keys {sorted(map(str, unknown))}")
    version = document.get("version", POLICY_VERSION)
    if version != POLICY_VERSION or isinstance(version, bool):
        raise _fail(source, "version", f"must be {POLICY_VERSION}")
    lists: dict[str, list[HostRule | CidrRule]] = {"allow": [], "deny": []}
    total = 0
    for key in ("allow", "deny"):
        raw_rules = document.get(key, [])
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            raise _fail(source, key, "must be a list of rules")
        total += len(raw_rules)
        if total > MAX_RULES:
            raise _fail(source, key, f"has more than {MAX_RULES} rules in all")
        for index, raw in enumerate(raw_rules):
            lists[key].append(_rule(source, f"{key}[{index}]", raw, allow=key == "allow"))
    return EgressPolicy(
        allow_hosts=tuple(r for r in lists["allow"] if isinstance(r, HostRule)),
        allow_cidrs=tuple(r for r in lists["allow"] if isinstance(r, CidrRule)),
        deny_hosts=tuple(r for r in lists["deny"] if isinstance(r, HostRule)),
        deny_cidrs=tuple(r for r in lists["deny"] if isinstance(r, CidrRule)),
        source=source,
    )


@functools.cache
def _no_alias_loader() -> type[Any]:
    """SafeLoader that refuses anchors and aliases (no billion-laughs expansion); PyYAML loads
    with the first YAML egress policy."""
    import yaml  # noqa: PLC0415

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - yaml's own API
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases are not allowed")
            event = self.peek_event()  # type: ignore[no-untyped-call]
            if getattr(event, "anchor", None) is not None:
                raise yaml.YAMLError("anchors are not allowed")
            return super().compose_node(parent, index)

    return NoAliasLoader


def parse_policy_text(text: str, *, toml: bool, source: str = "<memory>") -> EgressPolicy:
    """Decode YAML (or TOML) text and build the policy."""
    import yaml  # noqa: PLC0415  # PyYAML with the first YAML policy

    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise _fail(source, "the file", f"is larger than {MAX_POLICY_BYTES} bytes")
    try:
        document: object = (
            load_toml(text) if toml else yaml.load(text, Loader=_no_alias_loader())  # noqa: S506
        )
    except RecursionError:
        raise EgressPolicyError(
            f"the egress policy {source} nests too deeply",
            hint="fix the file's syntax (docs/egress.md has examples)",
        ) from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError, DocumentTooDeepError) as exc:
        kind = "TOML" if toml else "YAML"
        raise EgressPolicyError(
            f"the egress policy {source} is not valid {kind}",
            hint="fix the file's syntax (docs/egress.md has examples)",
            detail=str(exc)[:500],
        ) from None
    return parse_policy(document, source=source)


def load_policy(path: Path) -> EgressPolicy:
    """Read and build the policy file at ``path`` (``.toml`` is TOML, anything else YAML)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise EgressPolicyError(
            f"cannot read the egress policy {path}: {exc.strerror}",
            hint="check HL_EGRESS_POLICY and the file's permissions",
            reason="egress_policy_unreadable",
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(str(path), "the file", "is not UTF-8 text") from None
    return parse_policy_text(text, toml=path.suffix.lower() == ".toml", source=str(path))
