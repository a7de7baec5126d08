"""Settings that would weaken a run's isolation are refused at load time, naming the variable and
what to do: launcher variables in the whitelist (every case and prefix spelling), shared network
namespaces, root workers; the ``HL_UNSAFE_*`` opt-ins; ``HL_CP_*`` left to the control plane;
``HL_AUDIT_*`` tuning."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from hardened_launcher.settings import (
    VARIABLES,
    Settings,
    SettingsError,
    load_settings,
    shared_network_mode,
    whitelist_refusal,
)

HOME = "/home/tester"
CANARY = "CANARY-whitelist-secret-91f3"


def load(env: dict[str, str]) -> Settings:
    return load_settings({"HOME": HOME, **env})


def refused(env: dict[str, str]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load(env)
    return info.value


LAUNCHER_NAMES = sorted(
    {spec.name for spec in VARIABLES if "<" not in spec.name}
    | {"SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY", "HL_POLICY_SANITIZE_KEY", "HL_FUTURE_X"}
)


def _case_forms(name: str) -> list[str]:
    return [name, name.lower(), name.title(), name[:1].lower() + name[1:], name.swapcase()]


@pytest.mark.parametrize("name", LAUNCHER_NAMES)
def test_every_launcher_variable_is_refused_in_the_whitelist(name: str) -> None:
    for form in _case_forms(name):
        for prefix in ("", "ro_", "wo_", "RO_", "Wo_", "ro_wo_", "ro_ro_"):
            exc = refused({"SPACELIFT_WHITELIST_ENVS": f"AWS_REGION,{prefix}{form}"})
            assert exc.problems[0].variable == "SPACELIFT_WHITELIST_ENVS"
            assert "remove it from SPACELIFT_WHITELIST_ENVS" in exc.problems[0].text


@pytest.mark.parametrize("name", ["SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY"])
def test_refusal_never_shows_the_secret_value(name: str) -> None:
    exc = refused({"SPACELIFT_WHITELIST_ENVS": f"ro_{name.lower()}", name: CANARY})
    assert any(p.variable == "SPACELIFT_WHITELIST_ENVS" for p in exc.problems)
    assert CANARY not in str(exc)
    assert CANARY not in repr(exc)
    assert all(CANARY not in p.text for p in exc.problems)


@given(
    prefixes=st.lists(st.sampled_from(["ro_", "wo_", "RO_", "WO_", "rO_", "Wo_"]), max_size=3),
    stem=st.sampled_from(["SPACELIFT_", "HL_"]),
    rest=st.from_regex(r"[A-Za-z0-9_]{0,20}", fullmatch=True),
    flips=st.lists(st.booleans(), min_size=12, max_size=12),
)
@hsettings(max_examples=400, deadline=None)
def test_property_no_spelling_of_a_launcher_prefix_passes(
    prefixes: list[str], stem: str, rest: str, flips: list[bool]
) -> None:
    cased = "".join(c.lower() if flip else c for c, flip in zip(stem, flips, strict=False))
    name = "".join(prefixes) + cased + rest
    assert whitelist_refusal(name) is not None


@pytest.mark.parametrize(
    "name", ["AWS_REGION", "TF_VAR_x", "ro_READ_TOKEN", "wo_DEPLOY_KEY", "HLX", "SPACELIFTY"]
)
def test_ordinary_names_stay_allowed(name: str) -> None:
    assert whitelist_refusal(name) is None
    assert load({"SPACELIFT_WHITELIST_ENVS": name}).whitelist_envs


@pytest.mark.parametrize(
    ("network", "shares"),
    [
        ("host", "host"),
        ("HOST", "host"),
        ("Host", "host"),
        (" host", "host"),
        ("container:abc123", "container"),
        ("container:my-db", "container"),
        ("CONTAINER:abc", "container"),
        ("Container:0123456789ab", "container"),
    ],
)
def test_shared_network_namespaces_are_refused(network: str, shares: str) -> None:
    mode = shared_network_mode(network)
    assert mode is not None
    assert shares in mode
    if network.strip() == network:  # the parser strips; all these reach the check
        exc = refused({"SPACELIFT_WORKER_NETWORK": network})
        assert exc.problems[0].variable == "SPACELIFT_WORKER_NETWORK"
        assert "HL_UNSAFE_SHARED_NETWORK=true" in exc.problems[0].text
        s = load({"SPACELIFT_WORKER_NETWORK": network, "HL_UNSAFE_SHARED_NETWORK": "1"})
        assert s.unsafe_opt_ins == ("HL_UNSAFE_SHARED_NETWORK",)


@pytest.mark.parametrize("network", ["bridge", "none", "default", "ci-runs", "hosted", "hostnet"])
def test_own_or_no_network_is_accepted(network: str) -> None:
    assert shared_network_mode(network) is None
    assert load({"SPACELIFT_WORKER_NETWORK": network}).worker_network == network


@pytest.mark.parametrize(
    "env",
    [
        {"HL_WORKER_UID": "0"},
        {"HL_WORKER_GID": "0"},
        {"HL_WORKER_UID": "0", "HL_WORKER_GID": "0"},
        {"HL_WORKER_UID": "00"},
    ],
)
def test_root_worker_needs_the_unsafe_opt_in(env: dict[str, str]) -> None:
    exc = refused(env)
    assert {p.variable for p in exc.problems} <= {"HL_WORKER_UID", "HL_WORKER_GID"}
    assert all("HL_UNSAFE_ROOT_WORKER=true" in p.text for p in exc.problems)
    s = load({**env, "HL_UNSAFE_ROOT_WORKER": "yes"})
    assert s.unsafe_opt_ins == ("HL_UNSAFE_ROOT_WORKER",)


def test_direct_construction_refuses_the_same() -> None:
    base = {"state_dir": Path("/s"), "cache_dir": Path("/c"), "audit_dir": Path("/a")}
    with pytest.raises(SettingsError, match="HL_WORKER_UID"):
        Settings(**base, worker_uid=0)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="SPACELIFT_WORKER_NETWORK"):
        Settings(**base, worker_network="host")  # type: ignore[arg-type]


def test_no_opt_in_by_default() -> None:
    assert load({}).unsafe_opt_ins == ()


@pytest.mark.parametrize(
    "name",
    [
        "HL_CP_DIR",
        "HL_CP_S3_BUCKET",
        "HL_CP_S3_SECRET_ACCESS_KEY",
        "HL_CP_BROKER_PID_FILE",
        "HL_CP_WHATEVER",
    ],
)
def test_control_plane_variables_do_not_stop_the_launcher(name: str) -> None:
    s = load({name: "x"})
    assert s.warnings == ()


def test_audit_tuning_is_a_setting() -> None:
    s = load(
        {
            "HL_AUDIT_SEGMENT_BYTES": "8MiB",
            "HL_AUDIT_SEGMENT_MAX_AGE": "1h",
            "HL_AUDIT_CHECKPOINT_RECORDS": "50",
            "HL_AUDIT_CHECKPOINT_INTERVAL": "5s",
            "HL_AUDIT_WRITE_TIMEOUT": "2s",
        }
    )
    assert s.audit_segment_bytes == 8 * 1024 * 1024
    assert s.audit_segment_max_age == timedelta(hours=1)
    assert s.audit_checkpoint_records == 50
    assert s.audit_checkpoint_interval == timedelta(seconds=5)
    assert s.audit_write_timeout == timedelta(seconds=2)
