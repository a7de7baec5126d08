"""Egress policy file, rule matcher and address classifier (pure; hypothesis suites)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.egress.classify import IPAddress, builtin_denial, normalise_name, parse_host
from hardened_launcher.egress.errors import (
    EgressDeniedError,
    EgressHostNotAllowedError,
    EgressIpLiteralError,
    EgressPolicyError,
    EgressPrivateAddressError,
)
from hardened_launcher.egress.matcher import check_addresses, check_target
from hardened_launcher.egress.policy import (
    EgressPolicy,
    HostPattern,
    load_policy,
    parse_policy,
    parse_policy_text,
    resolve_private_source,
)
from hardened_launcher.settings import PrivateVcsMapping

ip = ipaddress.ip_address
PUBLIC = ip("8.8.8.8")  # classified only; no test ever sends a packet anywhere

POLICY_YAML = """
version: 1
allow:
  - host: github.com
  - host: "*.githubusercontent.com"
    ports: [443, 80]
  - host: vcs.corp.example
    private: true
  - cidr: 198.18.7.0/24
    ports: [8080]
deny:
  - host: gist.github.com
  - cidr: 198.18.7.128/25
"""


@pytest.fixture
def policy() -> EgressPolicy:
    return parse_policy_text(POLICY_YAML, toml=False, source="test")


def test_yaml_and_toml_give_the_same_rules(tmp_path: Path) -> None:
    toml = tmp_path / "egress.toml"
    toml.write_text(
        'version = 1\n[[allow]]\nhost = "github.com"\n[[allow]]\ncidr = "198.18.7.0/24"\n'
        'ports = [8080]\n[[deny]]\nhost = "gist.github.com"\n'
    )
    from_toml = load_policy(toml)
    assert [str(r.pattern) for r in from_toml.allow_hosts] == ["github.com"]
    assert from_toml.allow_hosts[0].ports == frozenset({443})
    assert [str(r.network) for r in from_toml.allow_cidrs] == ["198.18.7.0/24"]
    assert from_toml.deny_hosts[0].ports is None  # deny rules cover every port by default


def test_empty_policy_denies_everything() -> None:
    empty = parse_policy(None)
    with pytest.raises(EgressHostNotAllowedError) as caught:
        check_target(empty, "github.com", 443)
    assert caught.value.reason == "egress_host_not_allowed"
    assert "github.com:443" in caught.value.message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("allow: [{host: a.com, cidr: 10.0.0.0/8}]", "exactly one"),
        ("allow: [{host: a.com, port: [1]}]", "unknown keys"),
        ("allow: [{host: 'a.*.com'}]", "'*'"),
        ("allow: [{host: 10.0.0.1}]", "cidr rule"),
        ("allow: [{cidr: 10.0.0.1/8}]", "host bits"),
        ("allow: [{host: a.com, ports: [0]}]", "1 to 65535"),
        ("allow: [{host: a.com, ports: []}]", "non-empty"),
        ("deny: [{host: a.com, private: true}]", "private applies"),
        ("version: 2", "must be 1"),
        ("rules: []", "unknown keys"),
        ("allow: &x [{host: a.com}]\ndeny: *x", "not valid YAML"),
    ],
)
def test_invalid_policy_files_are_refused_with_the_place(text: str, why: str) -> None:
    with pytest.raises(EgressPolicyError) as caught:
        parse_policy_text(text, toml=False, source="p.yaml")
    assert why in caught.value.message
    assert caught.value.exit_code == 78


def test_unreadable_policy_file(tmp_path: Path) -> None:
    with pytest.raises(EgressPolicyError) as caught:
        load_policy(tmp_path / "missing.yaml")
    assert caught.value.reason == "egress_policy_unreadable"


def test_exact_and_wildcard_hosts(policy: EgressPolicy) -> None:
    assert check_target(policy, "GitHub.com.", 443).name == "github.com"
    assert check_target(policy, "raw.githubusercontent.com", 80).port == 80
    with pytest.raises(EgressHostNotAllowedError):
        check_target(policy, "githubusercontent.com", 443)  # *.x is subdomains only
    with pytest.raises(EgressHostNotAllowedError):
        check_target(policy, "github.com", 22)  # port not listed
    with pytest.raises(EgressHostNotAllowedError):
        check_target(policy, "evilgithub.com", 443)


def test_deny_wins_over_allow(policy: EgressPolicy) -> None:
    wide = parse_policy(
        {"allow": [{"host": "*.github.com"}], "deny": [{"host": "gist.github.com"}]}
    )
    check_target(wide, "api.github.com", 443)
    with pytest.raises(EgressHostNotAllowedError, match="deny rule"):
        check_target(wide, "gist.github.com", 443)


def test_idna_names_are_normalised() -> None:
    rules = parse_policy({"allow": [{"host": "bücher.example"}]})
    assert check_target(rules, "xn--bcher-kva.example", 443).name == "xn--bcher-kva.example"
    assert check_target(rules, "BÜCHER.example", 443).name == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f000001",
        "127.1",
        "017700000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[fd00:ec2::254]",
        "169.254.169.254",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::]",
        "8.8.8.8",
    ],
)
def test_ip_literals_in_every_spelling_are_refused(policy: EgressPolicy, host: str) -> None:
    with pytest.raises(EgressDeniedError) as caught:
        check_target(policy, host, 8080)
    assert caught.value.reason == "egress_ip_literal"


def test_non_canonical_spelling_is_refused_even_inside_an_allowed_cidr(
    policy: EgressPolicy,
) -> None:
    check_target(policy, "198.18.7.5", 8080)
    with pytest.raises(EgressIpLiteralError, match="non-canonical"):
        check_target(policy, "198.18.1797", 8080)  # inet_aton form of 198.18.7.5
    with pytest.raises(EgressHostNotAllowedError) as caught:
        check_target(policy, "198.18.7.200", 8080)
    assert caught.value.reason == "egress_address_denied"


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "cgnat"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link_local"),
        ("fd00:ec2::254", "metadata"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - classified, never bound
        ("224.0.0.1", "multicast"),
        ("::ffff:8.8.8.8", "ipv4_mapped"),
        ("::ffff:0:8.8.8.8", "ipv4_translated"),  # SIIT; the standard library calls it global
        ("64:ff9b::808:808", "nat64"),
        ("2002:808:808::1", "6to4"),
        ("2001:0:4136:e378::1", "teredo"),
        ("fe80::1", "link_local"),
        ("fc00::1", "private"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_builtin_denials(address: str, category: str) -> None:
    denial = builtin_denial(ip(address))
    assert denial is not None
    assert denial[1] == category


def test_global_addresses_pass_the_classifier() -> None:
    assert builtin_denial(PUBLIC) is None
    assert builtin_denial(ip("2606:4700::1111")) is None


def test_name_resolving_to_private_or_metadata_is_refused(policy: EgressPolicy) -> None:
    target = check_target(policy, "github.com", 443)
    assert check_addresses(policy, target, [PUBLIC]) == PUBLIC
    for bad in ("169.254.169.254", "10.0.0.1", "::ffff:10.0.0.1", "127.0.0.1"):
        with pytest.raises(EgressPrivateAddressError) as caught:
            check_addresses(policy, target, [PUBLIC, ip(bad)])  # every answer must pass
        assert caught.value.reason == "egress_private_address"
        assert str(ip(bad)) in caught.value.message


def test_private_host_rule_allows_private_but_never_metadata_or_loopback(
    policy: EgressPolicy,
) -> None:
    target = check_target(policy, "vcs.corp.example", 443)
    assert check_addresses(policy, target, [ip("10.9.8.7")]) == ip("10.9.8.7")
    for bad in ("169.254.169.254", "127.0.0.1", "fe80::1"):
        with pytest.raises(EgressPrivateAddressError):
            check_addresses(policy, target, [ip(bad)])


def test_cidr_rule_lifts_builtin_denial_only_when_it_names_that_range() -> None:
    named = parse_policy({"allow": [{"host": "t.test"}, {"cidr": "198.18.0.0/24"}]})
    target = check_target(named, "t.test", 443)
    assert check_addresses(named, target, [ip("198.18.0.2")]) == ip("198.18.0.2")
    broad = parse_policy({"allow": [{"host": "t.test"}, {"cidr": "0.0.0.0/0"}]})
    with pytest.raises(EgressPrivateAddressError):
        check_addresses(broad, check_target(broad, "t.test", 443), [ip("10.0.0.1")])


def test_proxy_own_address_is_refused(policy: EgressPolicy) -> None:
    target = check_target(policy, "github.com", 443)
    with pytest.raises(EgressPrivateAddressError, match="proxy"):
        check_addresses(policy, target, [PUBLIC], self_addresses={PUBLIC})


def test_run_policy_narrows_never_widens(policy: EgressPolicy) -> None:
    run = parse_policy({"allow": [{"host": "github.com"}, {"host": "example.org"}]})
    narrowed = policy.narrowed(run)
    check_target(narrowed, "github.com", 443)
    with pytest.raises(EgressHostNotAllowedError):
        check_target(narrowed, "example.org", 443)  # the run cannot add a host
    with pytest.raises(EgressHostNotAllowedError):
        check_target(narrowed, "raw.githubusercontent.com", 443)  # the run did not ask for it


def test_private_vcs_mappings_become_reachable_and_private_urls_resolve(
    policy: EgressPolicy,
) -> None:
    mappings = (
        PrivateVcsMapping(name="corp-gitlab", base_endpoint="https://gitlab.corp.example:8443"),
        PrivateVcsMapping(name="ip-vcs", base_endpoint="10.20.30.40:7990"),
    )
    pool = policy.with_private_vcs(mappings)
    target = check_target(pool, "gitlab.corp.example", 8443)
    assert check_addresses(pool, target, [ip("10.1.1.1")]) == ip("10.1.1.1")
    assert check_target(pool, "10.20.30.40", 7990).address == ip("10.20.30.40")
    assert (
        resolve_private_source("private://corp-gitlab/group/repo.git", mappings)
        == "https://gitlab.corp.example:8443/group/repo.git"
    )
    assert resolve_private_source("https://x.example/r", mappings) == "https://x.example/r"
    with pytest.raises(EgressDeniedError) as caught:
        resolve_private_source("private://other/repo", mappings)
    assert caught.value.reason == "egress_private_vcs_unknown"


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
names = (
    st.lists(labels, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda n: not n.rsplit(".", 1)[-1].isdigit())
)


@given(names, names)
def test_wildcard_matches_exactly_the_proper_subdomains(prefix: str, base: str) -> None:
    pattern = HostPattern(text=f"*.{base}")
    assert pattern.matches(f"{prefix}.{base}")
    assert not pattern.matches(base)
    assert not pattern.matches(f"{prefix}{base}") or f"{prefix}{base}".endswith("." + base)


@given(names)
def test_normalisation_is_idempotent_and_case_insensitive(name: str) -> None:
    once = normalise_name(name.upper() + ".")
    assert normalise_name(once) == once == name


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_integer_spelling_of_an_ipv4_address_is_an_address(number: int) -> None:
    address = ipaddress.IPv4Address(number)
    for spelling in (str(number), hex(number), f"0{number:o}"):
        parsed = parse_host(spelling)
        assert parsed.address == address
        assert not parsed.canonical or spelling == str(address)


@given(st.ip_addresses(v=4) | st.ip_addresses(v=6))
def test_classifier_agrees_with_is_global(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    denial = builtin_denial(address)
    if denial is None:
        assert address.is_global
        assert not address.is_private
        assert not address.is_loopback
    else:
        assert address in denial[0]


@settings(max_examples=200)
@given(st.ip_addresses(v=4) | st.ip_addresses(v=6), st.integers(min_value=1, max_value=65535))
def test_a_literal_is_allowed_only_inside_an_allow_cidr(address: IPAddress, port: int) -> None:
    pol = parse_policy({"allow": [{"cidr": "198.18.7.0/24", "ports": [8080]}]})
    literal = f"[{address}]" if address.version == 6 else str(address)
    try:
        target = check_target(pol, literal, port)
    except EgressDeniedError:
        return
    assert address in ipaddress.ip_network("198.18.7.0/24")
    assert port == 8080
    assert target.address == address


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=4))
def test_any_denied_answer_refuses_the_whole_name(answers: list[IPAddress]) -> None:
    pol = parse_policy({"allow": [{"host": "t.example"}]})
    target = check_target(pol, "t.example", 443)
    if all(builtin_denial(a) is None for a in answers):
        assert check_addresses(pol, target, answers) == answers[0]
    else:
        with pytest.raises(EgressPrivateAddressError):
            check_addresses(pol, target, answers)
