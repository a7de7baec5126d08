from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hardened_launcher.cli import settings_cmd
from hardened_launcher.durations import format_duration
from hardened_launcher.errors import ConfigurationError
from hardened_launcher.policy import DEFAULT_TIMEOUT_S, Sanitizer, Syntax
from hardened_launcher.secrets import MASK, Secret
from hardened_launcher.settings import (
    VARIABLES,
    Mount,
    PolicySyntax,
    PrivateVcsMapping,
    Settings,
    SettingsError,
    WhitelistedEnv,
    effective_values,
    load_settings,
    markdown_table,
)
from tests.unprivileged import unprivileged

CANARY_TOKEN = "CANARY-TOKEN-7f3a"
CANARY_KEY = "CANARY-KEY-19c2"
CANARY_CRED = "CANARY-PASSWORD-51d0"
CANARY_SANITIZE = b"CANARY-SANITIZE-KEY-8e21"
SANITIZE_B64 = base64.b64encode(CANARY_SANITIZE).decode("ascii")
HOME = "/home/operator"
FPR_V4 = "0123456789ABCDEF0123456789ABCDEF01234567"
FPR_V6 = "a" * 64
#: What the settings trim around a value (and nothing else).
ASCII_SPACE = " \t\n\r\x0b\x0c"
CA_HEX = "ab" * 32

# Same-run hypothesis examples build temp files through a fixture that does not reset between
# examples; that is fine here because every example writes its own fresh file.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def load(env: Mapping[str, str] | None = None, **kwargs: Any) -> Settings:
    return load_settings({"HOME": HOME, **(env or {})}, **kwargs)


def outcome(env: Mapping[str, str]) -> Settings | SettingsError:
    """The loader's result for ``env``; any exception but SettingsError escapes the test."""
    try:
        return load_settings(env)
    except SettingsError as exc:
        return exc


def failure(env: Mapping[str, str], **kwargs: Any) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load(env, **kwargs)
    return info.value


def all_text(exc: SettingsError) -> str:
    return "\n".join([exc.message, exc.hint, exc.detail, str(exc), exc.one_line(), repr(exc)])


def write_toml(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------
def test_defaults_match_the_seed_documentation() -> None:
    s = load()
    assert s.worker_network == "bridge"
    assert s.launcher_logs_timeout == timedelta(minutes=7)
    assert s.launcher_run_timeout == timedelta(minutes=70)
    documented = {spec.name: spec.default for spec in VARIABLES}
    assert documented["SPACELIFT_WORKER_NETWORK"] == "`bridge`"
    assert documented["SPACELIFT_LAUNCHER_LOGS_TIMEOUT"] == "`7m0s`"
    assert documented["SPACELIFT_LAUNCHER_RUN_TIMEOUT"] == "`1h10m0s`"


def test_every_other_default() -> None:
    s = load()
    assert s.token is None
    assert s.pool_private_key is None
    assert s.docker_config_dir is None
    assert s.mask_envs == ()
    assert s.worker_extra_mounts == s.worker_extra_mounts_ro == s.worker_extra_mounts_wo == ()
    assert s.worker_runtime is None
    assert s.whitelist_envs == ()
    assert s.launcher_run_initialization_policy is None
    assert dict(s.metadata) == {}
    assert s.privatevcs_mappings == ()
    assert s.run_logs_on_standard_output_enabled is False
    assert s.debug is False
    assert s.worker_comms_protocol == "poll"  # the vendor's current default
    assert s.worker_comms_url is None
    assert s.config_file is None
    assert s.pinned_ca_sha256 is None
    assert s.release_key_fingerprints == ()
    assert s.release_keyring is None
    assert s.release_dir is None
    assert s.heartbeat_interval == timedelta(seconds=10)
    assert s.shutdown_grace == timedelta(minutes=15)
    assert s.state_dir == Path(HOME, ".local/state/hardened-launcher")
    assert s.cache_dir == Path(HOME, ".cache/hardened-launcher")
    assert s.audit_dir == s.state_dir / "audit"
    assert s.max_concurrent_runs == 1
    assert s.max_envelope_bytes == 16 * 1024 * 1024
    assert s.clock_skew == timedelta(minutes=5)
    assert s.policy_syntax == "auto"
    assert s.policy_timeout == timedelta(seconds=1)
    assert s.policy_sanitize_key is None
    assert s.warnings == ()


def test_xdg_directories_are_honoured_when_absolute() -> None:
    s = load({"XDG_STATE_HOME": "/xdg/state", "XDG_CACHE_HOME": "/xdg/cache"})
    assert s.state_dir == Path("/xdg/state/hardened-launcher")
    assert s.cache_dir == Path("/xdg/cache/hardened-launcher")
    assert s.audit_dir == Path("/xdg/state/hardened-launcher/audit")


def test_relative_xdg_directories_are_ignored_as_the_spec_says() -> None:
    s = load({"XDG_STATE_HOME": "relative/state", "XDG_CACHE_HOME": "cache"})
    assert s.state_dir == Path(HOME, ".local/state/hardened-launcher")
    assert s.cache_dir == Path(HOME, ".cache/hardened-launcher")


def test_audit_dir_follows_an_explicit_state_dir() -> None:
    s = load({"HL_STATE_DIR": "/srv/hl"})
    assert s.audit_dir == Path("/srv/hl/audit")


def test_without_home_the_default_comes_from_the_password_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Path, "home", classmethod(lambda _cls: Path("/from/pwd")))
    s = load_settings({})
    assert s.state_dir == Path("/from/pwd/.local/state/hardened-launcher")


def test_without_any_home_the_directories_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_home(cls: type[Path]) -> Path:
        raise RuntimeError("no home")

    monkeypatch.setattr(Path, "home", classmethod(no_home))
    with pytest.raises(SettingsError) as info:
        load_settings({})
    assert {p.variable for p in info.value.problems} == {"HL_STATE_DIR", "HL_CACHE_DIR"}
    s = load_settings({"HL_STATE_DIR": "/s", "HL_CACHE_DIR": "/c"})
    assert s.audit_dir == Path("/s/audit")


def test_empty_values_count_as_unset() -> None:
    s = load(
        {
            "SPACELIFT_WORKER_NETWORK": "",
            "SPACELIFT_LAUNCHER_RUN_TIMEOUT": "   ",
            "SPACELIFT_TOKEN": "",
            "HL_MAX_CONCURRENT_RUNS": "",
        }
    )
    assert s.worker_network == "bridge"
    assert s.launcher_run_timeout == timedelta(minutes=70)
    assert s.token is None
    assert s.max_concurrent_runs == 1


# ---------------------------------------------------------------------------------------------
# Every variable parses
# ---------------------------------------------------------------------------------------------
def full_env(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.rego"
    policy.write_text("package spacelift\n", encoding="utf-8")
    keyring = tmp_path / "release-keys.asc"
    keyring.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n", encoding="utf-8")
    (tmp_path / "releases").mkdir()
    return {
        "SPACELIFT_TOKEN": CANARY_TOKEN,
        "SPACELIFT_POOL_PRIVATE_KEY": CANARY_KEY,
        "SPACELIFT_DOCKER_CONFIG_DIR": "/etc/docker-config",
        "SPACELIFT_MASK_ENVS": "TF_VAR_secret, AWS_SECRET_ACCESS_KEY",
        "SPACELIFT_WORKER_NETWORK": "runs-net",
        "SPACELIFT_WORKER_EXTRA_MOUNTS": "/opt/tools:/opt/tools:ro",
        "SPACELIFT_WORKER_RO_EXTRA_MOUNTS": "/srv/ro:/mnt/ro",
        "SPACELIFT_WORKER_WO_EXTRA_MOUNTS": "/srv/wo:/mnt/wo:rw",
        "SPACELIFT_WORKER_RUNTIME": "runsc",
        "SPACELIFT_WHITELIST_ENVS": "AWS_REGION,ro_READ_TOKEN,wo_WRITE_TOKEN",
        "SPACELIFT_LAUNCHER_LOGS_TIMEOUT": "1000s",
        "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy),
        "SPACELIFT_LAUNCHER_RUN_TIMEOUT": "120m",
        "SPACELIFT_METADATA_instance_id": "i-0abc",
        "SPACELIFT_METADATA_Zone": "eu-west-1a",
        "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0": "github-enterprise",
        "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0": "https://ghe.internal:8443",
        "SPACELIFT_PRIVATEVCS_MAPPING_NAME_1": "gitlab",
        "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "gitlab.internal:443",
        "SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED": "true",
        "SPACELIFT_DEBUG": "YES",
        "SPACELIFT_WORKER_COMMS_PROTOCOL": "mqtt",
        "HL_CA_FINGERPRINT": ":".join([CA_HEX[i : i + 2] for i in range(0, 64, 2)]).upper(),
        "HL_RELEASE_KEY_FINGERPRINTS": f"{FPR_V4}, {FPR_V6}",
        "HL_RELEASE_KEYRING": str(keyring),
        "HL_RELEASE_DIR": str(tmp_path / "releases"),
        "HL_HEARTBEAT_INTERVAL": "30s",
        "HL_SHUTDOWN_GRACE": "1h",
        "HL_STATE_DIR": "/var/lib/hl",
        "HL_CACHE_DIR": "/var/cache/hl",
        "HL_AUDIT_DIR": "/var/log/hl-audit",
        "HL_MAX_CONCURRENT_RUNS": "4",
        "HL_MAX_ENVELOPE_BYTES": "32MiB",
        "HL_CLOCK_SKEW": "90s",
        "HL_POLICY_SYNTAX": "V0",
        "HL_POLICY_TIMEOUT": "250ms",
        "HL_POLICY_SANITIZE_KEY": SANITIZE_B64,
    }


def test_every_variable_parses(tmp_path: Path) -> None:
    env = full_env(tmp_path)
    s = load(env)
    assert s.token is not None
    assert s.token.reveal_text() == CANARY_TOKEN
    assert s.pool_private_key is not None
    assert s.pool_private_key.reveal_text() == CANARY_KEY
    assert s.docker_config_dir == Path("/etc/docker-config")
    assert s.mask_envs == ("TF_VAR_secret", "AWS_SECRET_ACCESS_KEY")
    assert s.worker_network == "runs-net"
    assert s.worker_extra_mounts == (
        Mount(host_path="/opt/tools", container_path="/opt/tools", read_only=True),
    )
    assert s.worker_extra_mounts_ro == (Mount(host_path="/srv/ro", container_path="/mnt/ro"),)
    assert s.worker_extra_mounts_wo == (Mount(host_path="/srv/wo", container_path="/mnt/wo"),)
    assert s.worker_runtime == "runsc"
    assert s.whitelisted_env_names_for("ro") == ("AWS_REGION", "READ_TOKEN")
    assert s.whitelisted_env_names_for("wo") == ("AWS_REGION", "WRITE_TOKEN")
    assert s.launcher_logs_timeout == timedelta(seconds=1000)
    assert s.launcher_run_initialization_policy == Path(
        env["SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"]
    )
    assert s.launcher_run_timeout == timedelta(minutes=120)
    assert dict(s.metadata) == {"instance_id": "i-0abc", "Zone": "eu-west-1a"}
    assert s.privatevcs_mappings == (
        PrivateVcsMapping(name="github-enterprise", base_endpoint="https://ghe.internal:8443"),
        PrivateVcsMapping(name="gitlab", base_endpoint="gitlab.internal:443"),
    )
    assert s.run_logs_on_standard_output_enabled is True
    assert s.debug is True
    assert s.worker_comms_protocol == "mqtt"
    assert s.pinned_ca_sha256 == bytes.fromhex(CA_HEX)
    assert s.release_key_fingerprints == (FPR_V4.lower(), FPR_V6)
    assert s.release_keyring == Path(env["HL_RELEASE_KEYRING"])
    assert s.release_dir == Path(env["HL_RELEASE_DIR"])
    assert s.heartbeat_interval == timedelta(seconds=30)
    assert s.shutdown_grace == timedelta(hours=1)
    assert s.state_dir == Path("/var/lib/hl")
    assert s.cache_dir == Path("/var/cache/hl")
    assert s.audit_dir == Path("/var/log/hl-audit")
    assert s.max_concurrent_runs == 4
    assert s.max_envelope_bytes == 32 * 1024 * 1024
    assert s.clock_skew == timedelta(seconds=90)
    assert s.policy_syntax == "v0"
    assert s.policy_timeout == timedelta(milliseconds=250)
    assert s.policy_sanitize_key is not None
    assert s.policy_sanitize_key.reveal() == CANARY_SANITIZE
    assert s.warnings == ()


def test_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SPACELIFT_", "HL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", HOME)
    monkeypatch.setenv("SPACELIFT_WORKER_NETWORK", "from-os-environ")
    assert load_settings().worker_network == "from-os-environ"


# ---------------------------------------------------------------------------------------------
# Booleans, names, lists
# ---------------------------------------------------------------------------------------------
TRUE_WORDS = [("true", True), ("TRUE", True), ("1", True), ("Yes", True), (" yes ", True)]
FALSE_WORDS = [("false", False), ("False", False), ("0", False), ("NO", False)]


@pytest.mark.parametrize(("text", "value"), [*TRUE_WORDS, *FALSE_WORDS])
def test_booleans(text: str, value: bool) -> None:
    s = load({"SPACELIFT_DEBUG": text, "SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED": text})
    assert s.debug is value
    assert s.run_logs_on_standard_output_enabled is value


@pytest.mark.parametrize("text", ["on", "off", "2", "t", "y", "truee", "enabled"])
def test_bad_booleans_name_the_variable(text: str) -> None:
    exc = failure({"SPACELIFT_DEBUG": text})
    assert exc.problems[0].variable == "SPACELIFT_DEBUG"
    assert exc.message.startswith("SPACELIFT_DEBUG:")
    assert repr(text) in exc.message
    assert "true/false" in exc.message


@given(st.text(max_size=20))
@example("\xa0")  # str.strip() would drop it: only ASCII white space is trimmed
def test_boolean_parser_accepts_exactly_the_documented_words(text: str) -> None:
    word = text.strip(ASCII_SPACE).lower()
    accepted = word in {"true", "false", "1", "0", "yes", "no"}
    env = {"HOME": HOME, "SPACELIFT_DEBUG": text}
    if not word:
        assert load_settings(env).debug is False
    elif accepted:
        assert load_settings(env).debug is (word in {"true", "1", "yes"})
    else:
        with pytest.raises(SettingsError):
            load_settings(env)


def test_mask_envs_are_stripped_deduplicated_in_order() -> None:
    s = load({"SPACELIFT_MASK_ENVS": " B , A,,B , C ,"})
    assert s.mask_envs == ("B", "A", "C")


@pytest.mark.parametrize("text", ["1ABC", "A-B", "A B", "ÄB", "A=B", "$A"])
def test_bad_mask_env_names(text: str) -> None:
    exc = failure({"SPACELIFT_MASK_ENVS": f"OK,{text}"})
    assert exc.problems[0].variable == "SPACELIFT_MASK_ENVS"
    assert repr(text) in exc.message


ENV_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
SPACES = st.sampled_from(["", " ", "  ", "\t"])


@given(st.lists(st.tuples(SPACES, ENV_NAMES, SPACES), max_size=8), st.booleans())
def test_comma_list_property(items: list[tuple[str, str, str]], trailing: bool) -> None:
    text = ",".join(f"{a}{name}{b}" for a, name, b in items) + ("," if trailing else "")
    s = load_settings({"HOME": HOME, "SPACELIFT_MASK_ENVS": text})
    assert s.mask_envs == tuple(dict.fromkeys(name for _, name, _ in items))


def test_whitelist_prefixes_select_run_types() -> None:
    s = load({"SPACELIFT_WHITELIST_ENVS": "A,ro_B,wo_C,ro_D,wo_D,E"})
    assert s.whitelisted_env_names_for("ro") == ("A", "B", "D", "E")
    assert s.whitelisted_env_names_for("wo") == ("A", "C", "D", "E")
    by_name = {env.name: env.run_types for env in s.whitelist_envs}
    assert by_name["D"] == frozenset({"ro", "wo"})
    assert by_name["B"] == frozenset({"ro"})


@pytest.mark.parametrize("text", ["ro_", "wo_", "ro_1A", "A B"])
def test_bad_whitelist_entries(text: str) -> None:
    exc = failure({"SPACELIFT_WHITELIST_ENVS": text})
    assert exc.problems[0].variable == "SPACELIFT_WHITELIST_ENVS"
    assert "ro_" in exc.message  # the expected form explains the prefixes


@given(st.lists(st.tuples(st.sampled_from(["", "ro_", "wo_"]), ENV_NAMES), max_size=8))
def test_whitelist_property(items: list[tuple[str, str]]) -> None:
    text = ",".join(prefix + name for prefix, name in items)
    s = load_settings({"HOME": HOME, "SPACELIFT_WHITELIST_ENVS": text})
    for run_type in ("ro", "wo"):
        wanted = [n for p, n in items if p in ("", f"{run_type}_")]
        assert s.whitelisted_env_names_for(run_type) == tuple(
            n for n in dict.fromkeys(n for _, n in items) if n in wanted
        )


def test_whitelisted_env_value_type_validates() -> None:
    with pytest.raises(ValueError, match="name"):
        WhitelistedEnv(name="1BAD")
    with pytest.raises(ValueError, match="run_types"):
        WhitelistedEnv(name="OK", run_types=frozenset())
    assert str(WhitelistedEnv(name="X", run_types=frozenset({"wo"}))) == "wo_X"


# ---------------------------------------------------------------------------------------------
# Mounts
# ---------------------------------------------------------------------------------------------
def test_mounts_parse_modes_and_spaces() -> None:
    s = load({"SPACELIFT_WORKER_EXTRA_MOUNTS": " /a:/b , /c d:/e:RO,/f:/g:rw ,"})
    assert s.worker_extra_mounts == (
        Mount(host_path="/a", container_path="/b"),
        Mount(host_path="/c d", container_path="/e", read_only=True),
        Mount(host_path="/f", container_path="/g"),
    )


def test_extra_mounts_for_combines_common_and_run_type() -> None:
    s = load(
        {
            "SPACELIFT_WORKER_EXTRA_MOUNTS": "/common:/common",
            "SPACELIFT_WORKER_RO_EXTRA_MOUNTS": "/ro:/ro",
            "SPACELIFT_WORKER_WO_EXTRA_MOUNTS": "/wo:/wo",
        }
    )
    assert [m.host_path for m in s.extra_mounts_for("ro")] == ["/common", "/ro"]
    assert [m.host_path for m in s.extra_mounts_for("wo")] == ["/common", "/wo"]
    with pytest.raises(ValueError, match="run type"):
        s.extra_mounts_for("rw")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run type"):
        s.whitelisted_env_names_for("x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variable", "text", "why"),
    [
        ("SPACELIFT_WORKER_EXTRA_MOUNTS", "relative:/b", "host path is not absolute"),
        ("SPACELIFT_WORKER_EXTRA_MOUNTS", "/a:relative", "container path is not absolute"),
        ("SPACELIFT_WORKER_RO_EXTRA_MOUNTS", "/a:/b:rx", "not ro or rw"),
        ("SPACELIFT_WORKER_WO_EXTRA_MOUNTS", "/a", "not host:container"),
        ("SPACELIFT_WORKER_WO_EXTRA_MOUNTS", "/a:/b:ro:x", "not host:container"),
        ("SPACELIFT_WORKER_EXTRA_MOUNTS", "/a\x00:/b", "control characters"),
    ],
)
def test_bad_mounts_name_the_variable(variable: str, text: str, why: str) -> None:
    exc = failure({variable: text})
    assert exc.problems[0].variable == variable
    assert why in exc.message
    assert "/host/path:/container/path" in exc.message


PATH_SEGMENT = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=",:/"
    ).filter(str.strip),
    min_size=1,
    max_size=10,
)
ABS_PATH = st.lists(PATH_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
MOUNTS = st.builds(
    lambda h, c, ro: Mount(host_path=h.strip(), container_path=c.strip(), read_only=ro),
    ABS_PATH,
    ABS_PATH,
    st.booleans(),
)


@given(st.lists(MOUNTS, max_size=5), st.sampled_from(["full", "short"]))
def test_mount_list_round_trip(mounts: list[Mount], style: str) -> None:
    def render(m: Mount) -> str:
        if style == "short" and not m.read_only:
            return f"{m.host_path}:{m.container_path}"
        return str(m)

    text = ",".join(render(m) for m in mounts)
    s = load_settings({"HOME": HOME, "SPACELIFT_WORKER_EXTRA_MOUNTS": text})
    assert s.worker_extra_mounts == tuple(mounts)


@given(st.text(max_size=60))
@example("/a:/b:ro,")
@example(":::")
def test_mount_parser_on_arbitrary_text_returns_valid_mounts_or_settings_error(
    text: str,
) -> None:
    result = outcome({"HOME": HOME, "SPACELIFT_WORKER_EXTRA_MOUNTS": text})
    if isinstance(result, SettingsError):
        assert result.problems[0].variable == "SPACELIFT_WORKER_EXTRA_MOUNTS"
    else:
        for mount in result.worker_extra_mounts:
            assert mount.host_path.startswith("/")
            assert mount.container_path.startswith("/")


def test_mount_value_type_validates() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Mount(host_path="rel", container_path="/b")
    with pytest.raises(ValueError, match="':'"):
        Mount(host_path="/a:b", container_path="/b")


# ---------------------------------------------------------------------------------------------
# Durations, numbers, names
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variable", ["SPACELIFT_LAUNCHER_LOGS_TIMEOUT", "SPACELIFT_LAUNCHER_RUN_TIMEOUT"]
)
@pytest.mark.parametrize("text", ["-5m", "0", "0s", "5", "5 m", "5d", "forever", "1ns"])
def test_timeouts_must_be_positive_go_durations(variable: str, text: str) -> None:
    exc = failure({variable: text})
    assert exc.problems[0].variable == variable
    assert repr(text) in exc.message
    assert "Go duration" in exc.message


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("0s", 0), ("15m", 900), ("90s", 90)])
def test_clock_skew_range(text: str, value: int) -> None:
    assert load({"HL_CLOCK_SKEW": text}).clock_skew == timedelta(seconds=value)


@pytest.mark.parametrize("text", ["-1s", "15m1s", "1h", "abc"])
def test_bad_clock_skew(text: str) -> None:
    exc = failure({"HL_CLOCK_SKEW": text})
    assert exc.problems[0].variable == "HL_CLOCK_SKEW"
    assert "15m0s" in exc.message


@given(st.integers(min_value=1, max_value=10**9))
def test_timeout_round_trip_through_go_format(seconds: int) -> None:
    td = timedelta(seconds=seconds)
    env = {"HOME": HOME, "SPACELIFT_LAUNCHER_RUN_TIMEOUT": format_duration(td)}
    assert load_settings(env).launcher_run_timeout == td


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16MiB", 16 << 20),
        ("16 MiB", 16 << 20),
        ("512KiB", 512 << 10),
        ("512kib", 512 << 10),
        ("1048576", 1 << 20),
        ("1024", 1024),
        ("256MiB", 256 << 20),
    ],
)
def test_envelope_sizes(text: str, value: int) -> None:
    assert load({"HL_MAX_ENVELOPE_BYTES": text}).max_envelope_bytes == value


@pytest.mark.parametrize("text", ["1023", "257MiB", "16MB", "16M", "16 GiB", "-1", "1.5MiB", "x"])
def test_bad_envelope_sizes(text: str) -> None:
    exc = failure({"HL_MAX_ENVELOPE_BYTES": text})
    assert exc.problems[0].variable == "HL_MAX_ENVELOPE_BYTES"
    assert "KiB or MiB" in exc.message


@given(st.integers(min_value=0, max_value=1 << 30), st.sampled_from(["", "KiB", "MiB"]))
def test_envelope_size_property(number: int, suffix: str) -> None:
    size = number * {"": 1, "KiB": 1024, "MiB": 1 << 20}[suffix]
    env = {"HOME": HOME, "HL_MAX_ENVELOPE_BYTES": f"{number}{suffix}"}
    if 1024 <= size <= 256 << 20:
        assert load_settings(env).max_envelope_bytes == size
    else:
        with pytest.raises(SettingsError):
            load_settings(env)


@pytest.mark.parametrize("text", ["0", "65", "+5", "5.0", "\u0663", "1_0", "many"])
def test_bad_concurrency(text: str) -> None:
    exc = failure({"HL_MAX_CONCURRENT_RUNS": text})
    assert exc.problems[0].variable == "HL_MAX_CONCURRENT_RUNS"
    assert "1 to 64" in exc.message


@given(st.integers(min_value=-10, max_value=100))
def test_concurrency_property(number: int) -> None:
    env = {"HOME": HOME, "HL_MAX_CONCURRENT_RUNS": str(number)}
    if 1 <= number <= 64:
        assert load_settings(env).max_concurrent_runs == number
    else:
        with pytest.raises(SettingsError):
            load_settings(env)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("SPACELIFT_WORKER_NETWORK", "my net"),
        ("SPACELIFT_WORKER_NETWORK", "-net"),
        ("SPACELIFT_WORKER_RUNTIME", "run sc"),
        ("SPACELIFT_WORKER_RUNTIME", "runsc;rm"),
    ],
)
def test_bad_docker_names(variable: str, text: str) -> None:
    exc = failure({variable: text})
    assert exc.problems[0].variable == variable


def test_docker_names_accept_real_values() -> None:
    s = load({"SPACELIFT_WORKER_NETWORK": "ci-runs_1.net", "SPACELIFT_WORKER_RUNTIME": "io.x.v2"})
    assert s.worker_network == "ci-runs_1.net"
    assert s.worker_runtime == "io.x.v2"


# ---------------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------------
def test_mqtt_is_accepted_in_any_case() -> None:
    assert load({"SPACELIFT_WORKER_COMMS_PROTOCOL": "MQTT"}).worker_comms_protocol == "mqtt"


def test_poll_is_accepted_in_any_case() -> None:
    assert load({"SPACELIFT_WORKER_COMMS_PROTOCOL": " Poll "}).worker_comms_protocol == "poll"


def test_unknown_protocol_is_refused() -> None:
    for value in ("http", "https", "mqtts", "websocket", "pol", "poll,mqtt"):
        exc = failure({"SPACELIFT_WORKER_COMMS_PROTOCOL": value})
        assert exc.reason == "setting_invalid"
        assert "not a known protocol" in exc.message


@pytest.mark.parametrize(
    "url",
    [
        "https://cp.example.com",
        "https://cp.example.com:8443",
        "https://cp.example.com/spacelift/",
        "https://10.0.0.5:443/a/b",
        "https://[::1]:8443",
        "HTTPS://CP.example.com",
    ],
)
def test_comms_url_accepts_https_urls(url: str) -> None:
    s = load({"SPACELIFT_WORKER_COMMS_PROTOCOL": "poll", "SPACELIFT_WORKER_COMMS_URL": url})
    assert s.worker_comms_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://cp.example.com",
        "mqtts://cp.example.com:8883",
        "ftp://cp.example.com",
        "cp.example.com:443",
        "https://",
        "https://cp.example.com:0",
        "https://cp.example.com:99999",
        "https://cp.example.com:port",
        "https://cp.example.com/?token=x",
        "https://cp.example.com/#frag",
        "https://cp exa.com",
        "https://cp.example.com/\x00",
        "https://-bad-.example.com",
        "https://" + "a" * 3000 + ".com",
    ],
)
def test_comms_url_refuses_everything_but_https(url: str) -> None:
    exc = failure({"SPACELIFT_WORKER_COMMS_URL": url})
    assert "SPACELIFT_WORKER_COMMS_URL" in exc.message + exc.detail


@pytest.mark.parametrize(
    "url",
    [
        "https://user:CANARY-pw-1234@cp.example.com",
        "https://CANARY-pw-1234@cp.example.com:8443/x",
        "https://u:CANARY-pw-1234@[::1]",
    ],
)
def test_comms_url_with_credentials_is_refused_without_echoing_them(url: str) -> None:
    exc = failure({"SPACELIFT_WORKER_COMMS_URL": url})
    assert exc.reason == "comms_url_has_credentials"
    assert "CANARY" not in f"{exc.message} {exc.detail} {exc.hint} {exc!r}"


def test_settings_cannot_be_built_with_an_http_comms_url() -> None:
    with pytest.raises(SettingsError, match="SPACELIFT_WORKER_COMMS_URL"):
        Settings(
            state_dir=Path("/s"),
            cache_dir=Path("/c"),
            audit_dir=Path("/a"),
            worker_comms_url="http://cp.example.com",
        )


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        CA_HEX,
        CA_HEX.upper(),
        ":".join(CA_HEX[i : i + 2] for i in range(0, 64, 2)),
        f"  {CA_HEX}  ",
    ],
)
def test_ca_fingerprint_forms(text: str) -> None:
    assert load({"HL_CA_FINGERPRINT": text}).pinned_ca_sha256 == bytes.fromhex(CA_HEX)


@pytest.mark.parametrize(
    "text", [CA_HEX[:-2], CA_HEX + "ab", "zz" * 32, "ab:" * 31 + "a:b", "sha256:" + CA_HEX]
)
def test_bad_ca_fingerprints(text: str) -> None:
    exc = failure({"HL_CA_FINGERPRINT": text})
    assert exc.problems[0].variable == "HL_CA_FINGERPRINT"
    assert "64 hex digits" in exc.message


@given(st.binary(min_size=32, max_size=32), st.booleans(), st.booleans())
def test_ca_fingerprint_property(digest: bytes, colons: bool, upper: bool) -> None:
    text = digest.hex()
    if colons:
        text = ":".join(text[i : i + 2] for i in range(0, 64, 2))
    if upper:
        text = text.upper()
    env = {"HOME": HOME, "HL_CA_FINGERPRINT": text}
    assert load_settings(env).pinned_ca_sha256 == digest


def test_release_key_fingerprints_are_normalised_and_deduplicated() -> None:
    spaced = " ".join(FPR_V4[i : i + 4] for i in range(0, 40, 4))
    s = load({"HL_RELEASE_KEY_FINGERPRINTS": f"{spaced}, {FPR_V4.lower()},0x{FPR_V6.upper()}"})
    assert s.release_key_fingerprints == (FPR_V4.lower(), FPR_V6)


@pytest.mark.parametrize("short", ["DEADBEEF", "0123456789ABCDEF", "0xDEADBEEF", "DEAD BEEF"])
def test_short_key_ids_are_refused_with_the_reason(short: str) -> None:
    exc = failure({"HL_RELEASE_KEY_FINGERPRINTS": f"{FPR_V4},{short}"})
    assert exc.problems[0].variable == "HL_RELEASE_KEY_FINGERPRINTS"
    assert exc.reason == "release_key_short_id"
    assert "short key ID" in exc.message
    assert "forged" in exc.message


@pytest.mark.parametrize("bad", [FPR_V4[:-1], FPR_V4 + "0", "g" * 40, "a" * 50])
def test_malformed_fingerprints(bad: str) -> None:
    exc = failure({"HL_RELEASE_KEY_FINGERPRINTS": bad})
    assert exc.reason == "release_key_fingerprint_invalid"
    assert "40 hex digits" in exc.message


@given(
    st.lists(
        st.one_of(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=32)),
        max_size=4,
    ),
    st.booleans(),
    st.integers(min_value=1, max_value=8),
)
def test_fingerprint_list_property(keys: list[bytes], upper: bool, group: int) -> None:
    def render(key: bytes) -> str:
        text = key.hex().upper() if upper else key.hex()
        return " ".join(text[i : i + group] for i in range(0, len(text), group))

    env = {"HOME": HOME, "HL_RELEASE_KEY_FINGERPRINTS": " , ".join(render(k) for k in keys)}
    assert load_settings(env).release_key_fingerprints == tuple(
        dict.fromkeys(k.hex() for k in keys)
    )


# ---------------------------------------------------------------------------------------------
# Paths and the policy file
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variable",
    [
        "SPACELIFT_DOCKER_CONFIG_DIR",
        "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY",
        "HL_RELEASE_KEYRING",
        "HL_RELEASE_DIR",
        "HL_EGRESS_POLICY",
        "HL_STATE_DIR",
        "HL_CACHE_DIR",
        "HL_AUDIT_DIR",
        "HL_CONFIG_FILE",
    ],
)
def test_relative_paths_are_refused_naming_the_variable(variable: str) -> None:
    exc = failure({variable: "relative/dir"})
    assert exc.problems[0].variable == variable
    assert exc.message.startswith(variable)
    assert "absolute" in exc.message
    assert "relative/dir" in exc.message


def test_policy_file_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.rego"
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(missing)})
    assert exc.reason == "policy_file_missing"
    assert "cannot be read" in exc.message


def test_policy_file_parses(tmp_path: Path) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text("package spacelift\n", encoding="utf-8")
    s = load({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": f" {policy} "})
    assert s.launcher_run_initialization_policy == policy


def test_policy_directory_parses(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "deny.rego").write_text("package spacelift\n", encoding="utf-8")
    s = load({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(tmp_path / "policies")})
    assert s.launcher_run_initialization_policy == tmp_path / "policies"
    values = dict(effective_values(s))
    assert values["SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"] == str(tmp_path / "policies")


def test_policy_path_must_be_a_file_or_a_directory(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(fifo)})
    assert exc.problems[0].variable == "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"
    assert exc.reason == "policy_file_missing"
    assert "neither a regular file nor a directory" in exc.message
    assert "a .rego file, or a directory" in exc.message


@unprivileged
@pytest.mark.parametrize(("mode", "why"), [(0o311, "cannot be listed"), (0o644, "searched")])
def test_policy_directory_must_be_listable_and_searchable(
    tmp_path: Path, mode: int, why: str
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    policies.chmod(mode)
    try:
        exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policies)})
    finally:
        policies.chmod(0o755)
    assert exc.reason == "policy_file_unreadable"
    assert why in exc.message


def test_policy_directory_list_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(tmp_path)})
    assert exc.problems[0].variable == "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"
    assert exc.reason == "policy_file_unreadable"
    assert "is a directory that cannot be listed (Permission denied)" in exc.message


def test_policy_directory_search_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = os.stat

    def denied(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> Any:
        if dir_fd is not None:
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(tmp_path)})
    assert exc.reason == "policy_file_unreadable"
    assert "is a directory that cannot be searched (Permission denied)" in exc.message


@unprivileged
def test_policy_file_must_be_readable(tmp_path: Path) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text("package x\n", encoding="utf-8")
    policy.chmod(0)
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy)})
    assert exc.reason == "policy_file_unreadable"


def test_policy_file_read_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text("package x\n", encoding="utf-8")

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    exc = failure({"SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY": str(policy)})
    assert exc.reason == "policy_file_unreadable"
    assert "Permission denied" in exc.message


def write_keyring(path: Path) -> Path:
    path.write_bytes(b"\x99\x00\x0d")  # the start of a binary public key packet
    return path


def test_release_keyring_parses(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keys.gpg")
    s = load({"HL_RELEASE_KEYRING": f"  {keyring}  "})
    assert s.release_keyring == keyring
    assert dict(effective_values(s))["HL_RELEASE_KEYRING"] == str(keyring)


def test_release_keyring_must_exist(tmp_path: Path) -> None:
    exc = failure({"HL_RELEASE_KEYRING": str(tmp_path / "absent.asc")})
    assert exc.problems[0].variable == "HL_RELEASE_KEYRING"
    assert exc.message.startswith("HL_RELEASE_KEYRING")
    assert exc.reason == "release_keyring_missing"
    assert "cannot be read" in exc.message
    assert "OpenPGP public keys" in exc.message


def test_release_keyring_must_be_a_file(tmp_path: Path) -> None:
    exc = failure({"HL_RELEASE_KEYRING": str(tmp_path)})
    assert exc.problems[0].variable == "HL_RELEASE_KEYRING"
    assert exc.message.startswith("HL_RELEASE_KEYRING")
    assert exc.reason == "release_keyring_missing"
    assert "not a regular file" in exc.message


@unprivileged
def test_release_keyring_must_be_readable(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keys.gpg")
    keyring.chmod(0)
    exc = failure({"HL_RELEASE_KEYRING": str(keyring)})
    assert exc.problems[0].variable == "HL_RELEASE_KEYRING"
    assert exc.reason == "release_keyring_unreadable"


def test_release_keyring_read_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = write_keyring(tmp_path / "keys.gpg")

    def denied(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)
    exc = failure({"HL_RELEASE_KEYRING": str(keyring)})
    assert exc.problems[0].variable == "HL_RELEASE_KEYRING"
    assert exc.message.startswith("HL_RELEASE_KEYRING")
    assert exc.reason == "release_keyring_unreadable"
    assert "Permission denied" in exc.message


# ---------------------------------------------------------------------------------------------
# Policy gate settings (HL_POLICY_*)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("auto", "auto"), ("AUTO", "auto"), ("v0", "v0"), ("V0", "v0"), (" v1 ", "v1"), ("V1", "v1")],
)
def test_policy_syntax_parses_in_any_case(text: str, value: str) -> None:
    s = load({"HL_POLICY_SYNTAX": text})
    assert s.policy_syntax == value
    assert dict(effective_values(s))["HL_POLICY_SYNTAX"] == value


@pytest.mark.parametrize("text", ["v2", "rego.v1", "0", "1", "legacy", "v 1"])
def test_bad_policy_syntax_names_the_variable(text: str) -> None:
    exc = failure({"HL_POLICY_SYNTAX": text})
    assert exc.problems[0].variable == "HL_POLICY_SYNTAX"
    assert exc.message.startswith("HL_POLICY_SYNTAX:")
    assert repr(text) in exc.message
    assert "auto (detect per file), v0 (legacy Rego) or v1 (Rego v1)" in exc.message


def test_policy_syntax_values_are_those_of_the_policy_gate() -> None:
    values: tuple[PolicySyntax, ...] = get_args(PolicySyntax)
    assert {syntax.value for syntax in Syntax} == set(values)
    for value in values:
        assert Syntax(load({"HL_POLICY_SYNTAX": value.upper()}).policy_syntax) is Syntax(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10ms", timedelta(milliseconds=10)),
        ("250ms", timedelta(milliseconds=250)),
        ("1s", timedelta(seconds=1)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("10000us", timedelta(milliseconds=10)),
        ("60s", timedelta(seconds=60)),
        ("1m", timedelta(seconds=60)),
    ],
)
def test_policy_timeout_parses(text: str, value: timedelta) -> None:
    s = load({"HL_POLICY_TIMEOUT": text})
    assert s.policy_timeout == value
    assert dict(effective_values(s))["HL_POLICY_TIMEOUT"] == format_duration(value)


@pytest.mark.parametrize("text", ["9ms", "9999us", "0", "0s", "-1s", "61s", "1m1ms", "2m", "1 s"])
def test_bad_policy_timeout_names_the_variable(text: str) -> None:
    exc = failure({"HL_POLICY_TIMEOUT": text})
    assert exc.problems[0].variable == "HL_POLICY_TIMEOUT"
    assert exc.message.startswith("HL_POLICY_TIMEOUT:")
    assert repr(text) in exc.message
    assert "at least 10ms and at most 1m0s" in exc.message


@given(st.integers(min_value=0, max_value=70_000))
def test_policy_timeout_range_property(milliseconds: int) -> None:
    env = {"HOME": HOME, "HL_POLICY_TIMEOUT": f"{milliseconds}ms"}
    if 10 <= milliseconds <= 60_000:
        assert load_settings(env).policy_timeout == timedelta(milliseconds=milliseconds)
    else:
        with pytest.raises(SettingsError):
            load_settings(env)


def test_policy_timeout_default_is_the_gate_default() -> None:
    assert load().policy_timeout.total_seconds() == DEFAULT_TIMEOUT_S


def test_policy_sanitize_key_holds_the_decoded_key() -> None:
    s = load({"HL_POLICY_SANITIZE_KEY": SANITIZE_B64})
    assert isinstance(s.policy_sanitize_key, Secret)
    assert s.policy_sanitize_key.reveal() == CANARY_SANITIZE
    assert dict(effective_values(s))["HL_POLICY_SANITIZE_KEY"] == "set"
    assert dict(effective_values(load()))["HL_POLICY_SANITIZE_KEY"] == "unset"


def test_policy_sanitize_key_keeps_the_sanitized_form_stable() -> None:
    # Two launchers (or two starts) with the same key show policies the same sanitized form.
    forms = []
    for _ in range(2):
        key = load({"HL_POLICY_SANITIZE_KEY": SANITIZE_B64}).policy_sanitize_key
        assert key is not None
        forms.append(Sanitizer(key.reveal()).sanitize("hunter2"))
    assert forms[0] == forms[1]
    assert forms[0].startswith("sanitized:")


@pytest.mark.parametrize(
    "render",
    [
        lambda key: base64.b64encode(key).decode(),
        lambda key: base64.urlsafe_b64encode(key).decode(),
        lambda key: base64.b64encode(key).decode().rstrip("="),
        lambda key: "\n".join(base64.encodebytes(key).decode().split()) + "\n",
        lambda key: f"  {base64.b64encode(key).decode()}  ",
    ],
    ids=["standard", "url-safe", "unpadded", "wrapped", "spaces"],
)
def test_policy_sanitize_key_forms(render: Any) -> None:
    key = bytes(range(200, 256))  # 56 bytes: wraps, and holds + and / (or - and _)
    s = load({"HL_POLICY_SANITIZE_KEY": render(key)})
    assert s.policy_sanitize_key is not None
    assert s.policy_sanitize_key.reveal() == key


@given(st.binary(max_size=64), st.booleans(), st.booleans())
def test_policy_sanitize_key_length_property(key: bytes, url_safe: bool, pad: bool) -> None:
    text = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(key).decode()
    text = text if pad else text.rstrip("=")
    env = {"HOME": HOME, "HL_POLICY_SANITIZE_KEY": text}
    if len(key) >= 16:
        secret = load_settings(env).policy_sanitize_key
        assert secret is not None
        assert secret.reveal() == key
    elif key:
        with pytest.raises(SettingsError) as info:
            load_settings(env)
        assert info.value.reason == "secret_too_short"
    else:
        assert load_settings(env).policy_sanitize_key is None  # empty counts as unset


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (base64.b64encode(CANARY_SANITIZE[:15]).decode(), "secret_too_short"),
        (f"{CANARY_SANITIZE.decode()}!", "secret_not_base64"),
        (SANITIZE_B64 + "\u00e9", "secret_not_base64"),
        (SANITIZE_B64.rstrip("=") + "A", "secret_not_base64"),  # 33 characters: not base64
        ("=" + SANITIZE_B64, "secret_not_base64"),
        (SANITIZE_B64 * 3000, "secret_too_long"),
    ],
    ids=["too-short", "punctuation", "non-ascii", "bad-length", "padding-first", "too-long"],
)
def test_bad_policy_sanitize_key_is_refused_without_its_value(text: str, reason: str) -> None:
    exc = failure({"HL_POLICY_SANITIZE_KEY": text})
    assert exc.problems[0].variable == "HL_POLICY_SANITIZE_KEY"
    assert exc.message.startswith("HL_POLICY_SANITIZE_KEY:")
    assert exc.reason == reason
    assert "value not shown" in exc.message
    assert "base64 of at least 16 random bytes" in exc.message
    text_out = all_text(exc) + repr(exc.problems)
    assert "CANARY" not in text_out
    assert SANITIZE_B64[:12] not in text_out


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------
def test_metadata_keeps_tag_case_and_is_read_only() -> None:
    s = load({"SPACELIFT_METADATA_instance_id": "i-1", "SPACELIFT_METADATA_AZ": "b"})
    assert dict(s.metadata) == {"instance_id": "i-1", "AZ": "b"}
    with pytest.raises(TypeError):
        s.metadata["x"] = "y"  # type: ignore[index]


def test_metadata_of_a_directly_built_settings_is_copied() -> None:
    tags = {"a": "1"}
    s = Settings(state_dir=Path("/s"), cache_dir=Path("/c"), audit_dir=Path("/a"), metadata=tags)
    tags["b"] = "2"
    assert dict(s.metadata) == {"a": "1"}
    with pytest.raises(TypeError):
        s.metadata["c"] = "3"  # type: ignore[index]


def test_metadata_with_empty_value_is_dropped() -> None:
    assert dict(load({"SPACELIFT_METADATA_x": ""}).metadata) == {}


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("SPACELIFT_METADATA_", "v", "tag name after the prefix is empty"),
        ("SPACELIFT_METADATA_a b", "v", "is not allowed"),
        ("SPACELIFT_METADATA_" + "t" * 65, "v", "is not allowed"),
        ("SPACELIFT_METADATA_ok", "x" * 257, "too long"),
        ("SPACELIFT_METADATA_ok", "bell\x07", "control characters"),
    ],
)
def test_bad_metadata(name: str, value: str, why: str) -> None:
    exc = failure({name: value})
    assert exc.problems[0].variable == name
    assert exc.message.startswith(name)
    assert why in exc.message


def test_too_many_metadata_tags() -> None:
    exc = failure({f"SPACELIFT_METADATA_t{i}": "v" for i in range(65)})
    assert exc.problems[0].variable == "SPACELIFT_METADATA_<tag>"
    assert "at most 64" in exc.message


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
        st.text(
            alphabet=st.characters(min_codepoint=0x20, blacklist_categories=["Cc", "Cs"]),
            min_size=1,
            max_size=256,
        ).filter(str.strip),
        max_size=8,
    )
)
def test_metadata_property(tags: dict[str, str]) -> None:
    env = {"HOME": HOME, **{f"SPACELIFT_METADATA_{k}": v for k, v in tags.items()}}
    assert dict(load_settings(env).metadata) == tags


# ---------------------------------------------------------------------------------------------
# Private VCS mappings
# ---------------------------------------------------------------------------------------------
def vcs(index: int, name: str | None, endpoint: str | None) -> dict[str, str]:
    env = {}
    if name is not None:
        env[f"SPACELIFT_PRIVATEVCS_MAPPING_NAME_{index}"] = name
    if endpoint is not None:
        env[f"SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_{index}"] = endpoint
    return env


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://ghe.internal",
        "http://10.0.0.5:8080/api/v3",
        "HTTPS://VCS.EXAMPLE.COM",
        "vcs.internal:443",
        "10.1.2.3:7990",
        "[fd00::1]:443",
        "https://[fd00::1]:8443/",
        "under_score.internal:22",
    ],
)
def test_vcs_endpoints(endpoint: str) -> None:
    s = load({**vcs(0, "pool", endpoint)})
    assert s.privatevcs_mappings == (PrivateVcsMapping(name="pool", base_endpoint=endpoint),)


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://vcs.internal",
        "https://",
        "vcs.internal",
        "vcs.internal:0",
        "vcs.internal:65536",
        "vcs.internal:http",
        "https://vcs.internal:99999",
        "https://vcs.internal:0",
        "https://bad host",
        "[fd00::zz]:443",
        "-bad.internal:443",
        "https://vcs.internal/#frag",
        ":443",
    ],
)
def test_bad_vcs_endpoints(endpoint: str) -> None:
    exc = failure(vcs(0, "pool", endpoint))
    assert exc.problems[0].variable == "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0"
    assert "host:port" in exc.message


@pytest.mark.parametrize(
    "endpoint",
    [f"https://user:{CANARY_CRED}@vcs.internal", f"{CANARY_CRED}@vcs.internal:443"],
)
def test_endpoint_credentials_are_refused_without_echoing_them(endpoint: str) -> None:
    exc = failure(vcs(0, "pool", endpoint))
    assert exc.reason == "endpoint_has_credentials"
    assert CANARY_CRED not in all_text(exc)
    assert "value not shown" in exc.message


def test_vcs_mappings_in_index_order() -> None:
    env = {**vcs(1, "b", "b.internal:1"), **vcs(0, "a", "a.internal:1"), **vcs(10, "k", "k:1")}
    env.update({k: v for i in range(2, 10) for k, v in vcs(i, f"n{i}", f"h{i}:1").items()})
    names = [m.name for m in load(env).privatevcs_mappings]
    assert names == ["a", "b"] + [f"n{i}" for i in range(2, 10)] + ["k"]


def test_vcs_gap_is_an_error() -> None:
    exc = failure({**vcs(0, "a", "a:1"), **vcs(2, "c", "c:1")})
    assert exc.reason == "privatevcs_gap"
    assert exc.problems[0].variable == "SPACELIFT_PRIVATEVCS_MAPPING_NAME_1"
    assert "gap" in exc.message


def test_vcs_must_start_at_zero() -> None:
    exc = failure(vcs(1, "a", "a:1"))
    assert exc.problems[0].variable == "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        (vcs(0, "a", None), "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0"),
        (vcs(0, None, "a:1"), "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0"),
    ],
)
def test_unpaired_vcs_halves(env: dict[str, str], missing: str) -> None:
    exc = failure(env)
    assert exc.problems[0].variable == missing
    assert "is unset but" in exc.message


def test_duplicate_vcs_names() -> None:
    exc = failure({**vcs(0, "same", "a:1"), **vcs(1, "same", "b:1")})
    assert exc.reason == "privatevcs_duplicate_name"
    assert exc.problems[0].variable == "SPACELIFT_PRIVATEVCS_MAPPING_NAME_1"
    assert "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0" in exc.message


@pytest.mark.parametrize("suffix", ["01", "x", "-1", "", "100"])
def test_bad_vcs_index(suffix: str) -> None:
    name = f"SPACELIFT_PRIVATEVCS_MAPPING_NAME_{suffix}"
    exc = failure({name: "a"})
    assert exc.problems[0].variable == name
    assert "index" in exc.message


def test_bad_vcs_name() -> None:
    exc = failure(vcs(0, "bad\x01name", "a:1"))
    assert exc.problems[0].variable == "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0"
    assert "control characters" in exc.message


def test_vcs_value_type_validates() -> None:
    with pytest.raises(ValueError, match="base_endpoint"):
        PrivateVcsMapping(name="a", base_endpoint="not an endpoint")
    with pytest.raises(ValueError, match="name"):
        PrivateVcsMapping(name="", base_endpoint="a:1")


HOSTNAMES = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}", fullmatch=True
)


@given(
    st.lists(
        st.tuples(
            st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
            HOSTNAMES,
            st.integers(min_value=1, max_value=65535),
            st.booleans(),
        ),
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_vcs_mapping_property(items: list[tuple[str, str, int, bool]]) -> None:
    env = {"HOME": HOME}
    expected = []
    for index, (name, host, port, as_url) in enumerate(items):
        endpoint = f"https://{host}:{port}" if as_url else f"{host}:{port}"
        env.update(vcs(index, name, endpoint))
        expected.append(PrivateVcsMapping(name=name, base_endpoint=endpoint))
    assert load_settings(env).privatevcs_mappings == tuple(expected)


# ---------------------------------------------------------------------------------------------
# Unknown variables
# ---------------------------------------------------------------------------------------------
def test_unknown_hl_variable_is_an_error_with_a_suggestion() -> None:
    exc = failure({"HL_CLOCKSKEW": "5m"})
    assert exc.reason == "unknown_variable"
    assert exc.problems[0].variable == "HL_CLOCKSKEW"
    assert "did you mean HL_CLOCK_SKEW?" in exc.message


def test_unknown_hl_variable_without_a_close_match() -> None:
    exc = failure({"HL_SOMETHING_ELSE_ENTIRELY": "x"})
    assert "did you mean" not in exc.message
    assert "not a hardened-launcher setting" in exc.message


def test_the_test_suite_variable_is_ignored() -> None:
    assert load({"HL_REQUIRE_INTEGRATION": "1"}).warnings == ()


def test_unknown_spacelift_variable_is_a_warning_with_a_suggestion() -> None:
    s = load(
        {
            "SPACELIFT_WORKER_NETWROK": "x",
            "SPACELIFT_LAUNCHER_IMAGE": "y",
            "SPACELIFT_METADTA_zone": "z",
        }
    )
    assert len(s.warnings) == 3
    text = "\n".join(s.warnings)
    assert "SPACELIFT_LAUNCHER_IMAGE is not a setting hardened-launcher knows" in text
    assert "did you mean SPACELIFT_WORKER_NETWORK?" in text
    assert "did you mean SPACELIFT_METADATA_...?" in text
    assert s.worker_network == "bridge"


def test_wrong_case_is_a_warning() -> None:
    s = load({"spacelift_worker_network": "x", "hl_clock_skew": "1s"})
    assert any("case-sensitive" in w and "SPACELIFT_WORKER_NETWORK" in w for w in s.warnings)
    assert any("HL_CLOCK_SKEW" in w for w in s.warnings)


def test_unrelated_variables_are_ignored() -> None:
    assert load({"PATH": "/bin", "AWS_REGION": "x", "HLX": "y"}).warnings == ()


# ---------------------------------------------------------------------------------------------
# One error listing everything; every variable named
# ---------------------------------------------------------------------------------------------
BAD_VALUES: list[tuple[str, str]] = [
    ("SPACELIFT_TOKEN_FILE", "relative/token"),
    ("SPACELIFT_POOL_PRIVATE_KEY_FILE", "key.pem"),
    ("SPACELIFT_DOCKER_CONFIG_DIR", "docker"),
    ("SPACELIFT_MASK_ENVS", "A B"),
    ("SPACELIFT_WORKER_NETWORK", "a b"),
    ("SPACELIFT_WORKER_EXTRA_MOUNTS", "a:b"),
    ("SPACELIFT_WORKER_RO_EXTRA_MOUNTS", "a:b"),
    ("SPACELIFT_WORKER_WO_EXTRA_MOUNTS", "a:b"),
    ("SPACELIFT_WORKER_RUNTIME", "a b"),
    ("SPACELIFT_DEFAULT_RUNNER_IMAGE", "Runner:1"),
    ("SPACELIFT_WHITELIST_ENVS", "A B"),
    ("SPACELIFT_LAUNCHER_LOGS_TIMEOUT", "7 minutes"),
    ("SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY", "/nonexistent/policy.rego"),
    ("SPACELIFT_LAUNCHER_RUN_TIMEOUT", "-70m"),
    ("SPACELIFT_METADATA_", "x"),
    ("SPACELIFT_PRIVATEVCS_MAPPING_NAME_0", "lonely"),
    ("SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED", "maybe"),
    ("SPACELIFT_DEBUG", "verbose"),
    ("SPACELIFT_WORKER_COMMS_PROTOCOL", "pull"),
    ("SPACELIFT_WORKER_COMMS_URL", "http://cp.example.com"),
    ("HL_CONFIG_FILE", "/nonexistent/hl.toml"),
    ("HL_CA_FINGERPRINT", "abcd"),
    ("HL_RELEASE_KEY_FINGERPRINTS", "DEADBEEF"),
    ("HL_RELEASE_KEYRING", "/nonexistent/keys.asc"),
    ("HL_RELEASE_DIR", "/nonexistent/releases"),
    ("HL_EGRESS_POLICY", "relative/egress.yaml"),
    ("HL_STATE_DIR", "state"),
    ("HL_CACHE_DIR", "cache"),
    ("HL_AUDIT_DIR", "audit"),
    ("HL_MAX_CONCURRENT_RUNS", "0"),
    ("HL_MAX_ENVELOPE_BYTES", "1GiB"),
    ("HL_CLOCK_SKEW", "1h"),
    ("HL_LAUNCHER_ID", "bad id"),
    ("HL_WORKER_UID", "root"),
    ("HL_WORKER_GID", "-5"),
    ("HL_RUN_MEMORY_BYTES", "1KiB"),
    ("HL_RUN_PIDS_LIMIT", "0"),
    ("HL_RUN_CPUS", "9999"),
    ("HL_RUN_WORKSPACE_BYTES", "big"),
    ("HL_RUN_TMP_BYTES", "1TB"),
    ("HL_RUN_STOP_GRACE", "forever"),
    ("HL_HEARTBEAT_INTERVAL", "500ms"),
    ("HL_SHUTDOWN_GRACE", "25h"),
    ("HL_POLICY_SYNTAX", "v2"),
    ("HL_POLICY_TIMEOUT", "5ms"),
    ("HL_POLICY_SANITIZE_KEY", "c2hvcnQ="),
    ("HL_METRICS_ADDRESS", "9464"),
    ("HL_LOG_CHUNK_BYTES", "1KiB"),
    ("HL_LOG_SPOOL_MAX_BYTES", "512KiB"),
    ("HL_RUN_LOG_RETENTION", "7d"),
    ("HL_TYPO", "x"),
    ("HL_UNSAFE_ROOT_WORKER", "perhaps"),
    ("HL_UNSAFE_SHARED_NETWORK", "2"),
    ("HL_AUDIT_SEGMENT_BYTES", "1KiB"),
    ("HL_AUDIT_SEGMENT_MAX_AGE", "0s"),
    ("HL_AUDIT_CHECKPOINT_RECORDS", "0"),
    ("HL_AUDIT_CHECKPOINT_INTERVAL", "forever"),
    ("HL_AUDIT_WRITE_TIMEOUT", "9999h"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", "127.0.0.1:9464"), (" [::1]:1 ", "[::1]:1"), ("node-1.lan:65535", None)],
)
def test_metrics_address(text: str, expected: str | None) -> None:
    s = load({"HOME": HOME, "HL_METRICS_ADDRESS": text})
    assert s.metrics_address == (expected or text.strip())
    assert load({"HOME": HOME}).metrics_address is None


@pytest.mark.parametrize(
    "text", ["9464", ":9464", "host:0", "host:65536", "::1:9464", "[nope]:1", "a b:1", "h:x"]
)
def test_bad_metrics_address(text: str) -> None:
    exc = failure({"HL_METRICS_ADDRESS": text})
    assert exc.problems[0].variable == "HL_METRICS_ADDRESS"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 256 * 1024), ("4096", 4096), ("64KiB", 65536), ("16mib", 16 * 1024 * 1024)],
)
def test_log_chunk_bytes(text: str, expected: int) -> None:
    assert load({"HOME": HOME, "HL_LOG_CHUNK_BYTES": text}).log_chunk_bytes == expected


@pytest.mark.parametrize("text", ["4095", "17MiB", "1GiB", "big", "64KB", "-1"])
def test_bad_log_chunk_bytes(text: str) -> None:
    exc = failure({"HL_LOG_CHUNK_BYTES": text})
    assert exc.problems[0].variable == "HL_LOG_CHUNK_BYTES"


def test_bad_values_cover_every_fixed_variable() -> None:
    covered = {name for name, _ in BAD_VALUES}
    fixed = {spec.name for spec in VARIABLES if "<" not in spec.name}
    secret = {spec.name for spec in VARIABLES if spec.secret}
    assert fixed - secret <= covered


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_every_error_names_its_variable_and_the_expected_form(variable: str, value: str) -> None:
    exc = failure({variable: value})
    assert isinstance(exc, ConfigurationError)
    assert len(exc.problems) >= 1
    problem = exc.problems[0]
    assert variable in problem.text
    assert problem.variable in problem.text
    assert exc.message == problem.text
    assert exc.detail == problem.text
    assert exc.hint
    assert exc.reason == problem.reason
    assert "expected" in problem.text or "chmod" in problem.text


def test_all_problems_are_reported_at_once() -> None:
    env = dict(BAD_VALUES)
    exc = failure(env)
    assert exc.reason == "settings_invalid"
    lines = exc.detail.splitlines()
    assert len(lines) == len(exc.problems) >= len(BAD_VALUES)
    for variable, _ in BAD_VALUES:
        assert any(variable in line for line in lines), variable
    assert exc.message.startswith(f"{len(exc.problems)} settings problems:")
    assert "HL_CLOCK_SKEW" in exc.message
    assert "-v" in exc.hint


def test_long_bad_values_are_shortened_in_messages() -> None:
    exc = failure({"SPACELIFT_WORKER_NETWORK": "x" * 500})
    assert "x" * 81 not in exc.message
    assert "(500 characters)" in exc.message


# ---------------------------------------------------------------------------------------------
# Secrets never leak
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SPACELIFT_TOKEN", f"{CANARY_TOKEN}\u00e9"),
        ("SPACELIFT_TOKEN", f"{CANARY_TOKEN} ; rm"),
        ("SPACELIFT_TOKEN", CANARY_TOKEN * 5000),
        ("SPACELIFT_POOL_PRIVATE_KEY", f"{CANARY_KEY}\x00"),
        ("SPACELIFT_POOL_PRIVATE_KEY", CANARY_KEY * 5000),
        ("HL_POLICY_SANITIZE_KEY", CANARY_TOKEN),
        ("HL_POLICY_SANITIZE_KEY", f"{CANARY_KEY} ; rm"),
        ("HL_POLICY_SANITIZE_KEY", CANARY_KEY * 5000),
    ],
)
def test_bad_secrets_are_reported_without_their_value(variable: str, value: str) -> None:
    exc = failure({variable: value, "HL_CLOCK_SKEW": "bad"})
    text = all_text(exc)
    assert variable in text
    assert "value not shown" in text
    for canary in (CANARY_TOKEN, CANARY_KEY, "CANARY"):
        assert canary not in text
    assert "CANARY" not in repr(exc.problems)


def test_secret_values_are_kept_raw() -> None:
    raw = "LS0tLS1CRUdJTi\nBQUklWQVRFIEtFWS0tLS0t\n"
    s = load({"SPACELIFT_POOL_PRIVATE_KEY": raw})
    assert s.pool_private_key is not None
    assert s.pool_private_key.reveal_text() == raw


def test_repr_and_rendering_never_show_secrets(tmp_path: Path) -> None:
    s = load(full_env(tmp_path))
    rendered = [repr(s), str(s), f"{s}", repr(effective_values(s)), "\n".join(s.warnings)]
    for text in rendered:
        assert CANARY_TOKEN not in text
        assert CANARY_KEY not in text
        assert CANARY_SANITIZE.decode() not in text
        assert SANITIZE_B64 not in text
    assert f"token=Secret('{MASK}')" in repr(s)
    assert f"policy_sanitize_key=Secret('{MASK}')" in repr(s)
    values = dict(effective_values(s))
    assert values["SPACELIFT_TOKEN"] == "set"
    assert values["SPACELIFT_POOL_PRIVATE_KEY"] == "set"
    assert values["HL_POLICY_SANITIZE_KEY"] == "set"
    assert dict(effective_values(load()))["SPACELIFT_TOKEN"] == "unset"


def test_values_of_unknown_variables_are_never_echoed() -> None:
    s = load({"SPACELIFT_TOKNE": CANARY_TOKEN})
    assert "SPACELIFT_TOKNE" in s.warnings[0]
    assert CANARY_TOKEN not in "\n".join(s.warnings)
    exc = failure({"HL_TOKEN": CANARY_TOKEN})
    assert CANARY_TOKEN not in all_text(exc)


def test_a_wiped_secret_in_settings_stays_masked() -> None:
    # Settings holds the Secret objects themselves: wiping one wipes the only long-lived copy.
    s = load({"SPACELIFT_TOKEN": CANARY_TOKEN})
    assert s.token is not None
    s.token.wipe()
    assert CANARY_TOKEN not in repr(s)
    assert not s.token


# ---------------------------------------------------------------------------------------------
# TOML config file
# ---------------------------------------------------------------------------------------------
def test_config_file_supplies_hl_settings(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "keys.gpg")
    path = write_toml(
        tmp_path / "hl.toml",
        f'clock_skew = "2m"\nmax_concurrent_runs = 3\nmax_envelope_bytes = "1MiB"\n'
        f'release_key_fingerprints = ["{FPR_V4}"]\nca_fingerprint = "{CA_HEX}"\n'
        f'state_dir = "/from/file"\nrelease_keyring = "{keyring}"\n',
    )
    s = load({"HL_CONFIG_FILE": str(path)})
    assert s.config_file == path
    assert s.clock_skew == timedelta(minutes=2)
    assert s.max_concurrent_runs == 3
    assert s.max_envelope_bytes == 1 << 20
    assert s.release_key_fingerprints == (FPR_V4.lower(),)
    assert s.pinned_ca_sha256 == bytes.fromhex(CA_HEX)
    assert s.state_dir == Path("/from/file")
    assert s.audit_dir == Path("/from/file/audit")
    assert s.release_keyring == keyring


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "2m"\nmax_concurrent_runs = 3\n')
    s = load({"HL_CONFIG_FILE": str(path), "HL_CLOCK_SKEW": "30s", "HL_MAX_CONCURRENT_RUNS": ""})
    assert s.clock_skew == timedelta(seconds=30)
    assert s.max_concurrent_runs == 3  # an empty variable is unset, so the file applies


def test_release_keyring_from_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    from_file = write_keyring(tmp_path / "file-keys.gpg")
    from_env = write_keyring(tmp_path / "env-keys.gpg")
    path = write_toml(tmp_path / "hl.toml", f'release_keyring = "{from_file}"\n')
    assert load({"HL_CONFIG_FILE": str(path)}).release_keyring == from_file
    assert load({"HL_CONFIG_FILE": str(path), "HL_RELEASE_KEYRING": ""}).release_keyring == (
        from_file
    )
    s = load({"HL_CONFIG_FILE": str(path), "HL_RELEASE_KEYRING": str(from_env)})
    assert s.release_keyring == from_env


def test_release_keyring_errors_from_the_file_name_the_variable_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", f'release_keyring = "{tmp_path / "absent.asc"}"\n')
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.problems[0].variable == "HL_RELEASE_KEYRING"
    assert exc.message.startswith(f"HL_RELEASE_KEYRING (key 'release_keyring' in {path}):")
    assert exc.reason == "release_keyring_missing"


def test_config_file_argument_wins_over_the_variable(tmp_path: Path) -> None:
    env_file = write_toml(tmp_path / "env.toml", 'clock_skew = "1m"\n')
    arg_file = write_toml(tmp_path / "arg.toml", 'clock_skew = "3m"\n')
    s = load({"HL_CONFIG_FILE": str(env_file)}, config_file=arg_file)
    assert s.config_file == arg_file
    assert s.clock_skew == timedelta(minutes=3)


@given(
    file_value=st.one_of(st.none(), st.integers(min_value=1, max_value=64)),
    env_value=st.one_of(st.none(), st.just(""), st.integers(min_value=1, max_value=64)),
)
@fixture_ok
def test_precedence_property(
    tmp_path: Path, file_value: int | None, env_value: int | str | None
) -> None:
    path = tmp_path / "prop.toml"
    path.unlink(missing_ok=True)
    write_toml(path, "" if file_value is None else f"max_concurrent_runs = {file_value}\n")
    env = {"HOME": HOME, "HL_CONFIG_FILE": str(path)}
    if env_value is not None:
        env["HL_MAX_CONCURRENT_RUNS"] = str(env_value)
    expected = 1
    if file_value is not None:
        expected = file_value
    if isinstance(env_value, int):
        expected = env_value
    assert load_settings(env).max_concurrent_runs == expected


def test_unknown_file_key_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skw = "1m"\nHL_STATE_DIR = "/x"\n')
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert {p.reason for p in exc.problems} == {"config_file_unknown_key"}
    assert "did you mean 'clock_skew'?" in exc.detail
    assert "did you mean 'state_dir'?" in exc.detail


@pytest.mark.parametrize("key", ["config_file", "token", "worker_network"])
def test_file_holds_only_hl_settings(tmp_path: Path, key: str) -> None:
    path = write_toml(tmp_path / "hl.toml", f'{key} = "x"\n')
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.reason == "config_file_unknown_key"


def test_policy_settings_from_the_config_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'policy_syntax = "V1"\npolicy_timeout = "2s"\n')
    s = load(config_file=path)
    assert (s.policy_syntax, s.policy_timeout) == ("v1", timedelta(seconds=2))
    s = load({"HL_POLICY_SYNTAX": "v0", "HL_POLICY_TIMEOUT": "50ms"}, config_file=path)
    assert (s.policy_syntax, s.policy_timeout) == ("v0", timedelta(milliseconds=50))


def test_policy_timeout_errors_from_the_file_name_the_variable_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'policy_timeout = "2m"\n')
    exc = failure(config_file=path, env={})
    assert exc.problems[0].variable == "HL_POLICY_TIMEOUT"
    assert exc.message.startswith(f"HL_POLICY_TIMEOUT (key 'policy_timeout' in {path}):")
    assert "'2m'" in exc.message


@pytest.mark.parametrize("key", ["policy_sanitize_key", "HL_POLICY_SANITIZE_KEY"])
def test_secrets_are_refused_in_the_config_file(tmp_path: Path, key: str) -> None:
    path = write_toml(tmp_path / "hl.toml", f'{key} = "{SANITIZE_B64}"\nclock_skew = "1m"\n')
    for env in ({}, {"HL_POLICY_SANITIZE_KEY": SANITIZE_B64}):  # even when the env sets it too
        exc = failure(env, config_file=path)
        assert [p.variable for p in exc.problems] == ["HL_POLICY_SANITIZE_KEY"]
        assert exc.reason == "config_file_secret_key"
        assert exc.message.startswith(f"HL_POLICY_SANITIZE_KEY (key {key!r} in {path}):")
        assert "secrets are not read from the config file" in exc.message
        assert "in the environment only" in exc.message
        assert "value not shown" in exc.message
        text = all_text(exc) + repr(exc.problems)
        assert SANITIZE_B64 not in text
        assert "CANARY" not in text


def test_secret_settings_have_no_file_key() -> None:
    for spec in VARIABLES:
        if spec.secret:
            assert spec.file_key is None, spec.name
    (row,) = [line for line in markdown_table().splitlines() if "`HL_POLICY_SANITIZE_KEY`" in line]
    assert "| yes | project | — |" in row


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_writable_config_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "1m"\n', mode=mode)
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.reason == "config_file_insecure"
    assert f"chmod go-w {path}" in exc.message


def test_readable_by_others_is_fine(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "1m"\n', mode=0o644)
    assert load({"HL_CONFIG_FILE": str(path)}).clock_skew == timedelta(minutes=1)


def test_missing_config_file(tmp_path: Path) -> None:
    exc = failure({"HL_CONFIG_FILE": str(tmp_path / "absent.toml")})
    assert exc.reason == "config_file_unreadable"
    assert exc.problems[0].variable == "HL_CONFIG_FILE"


def test_config_file_must_be_regular(tmp_path: Path) -> None:
    exc = failure({"HL_CONFIG_FILE": str(tmp_path)})
    assert exc.reason == "config_file_unreadable"
    assert "not a regular file" in exc.message


def test_relative_config_file_argument(tmp_path: Path) -> None:
    exc = failure({}, config_file=Path("relative.toml"))
    assert exc.problems[0].variable == "config_file argument"
    assert "absolute" in exc.message


def test_oversized_config_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", "# " + "x" * (1 << 20) + "\n")
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.reason == "config_file_invalid"


@pytest.mark.parametrize(
    ("content", "why"),
    [("clock_skew = ", "is not TOML"), ("[table\n", "is not TOML")],
)
def test_invalid_toml(tmp_path: Path, content: str, why: str) -> None:
    path = write_toml(tmp_path / "hl.toml", content)
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.reason == "config_file_invalid"
    assert why in exc.message


def test_non_utf8_config_file(tmp_path: Path) -> None:
    path = tmp_path / "hl.toml"
    path.write_bytes(b'clock_skew = "\xff"\n')
    path.chmod(0o600)
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert "is not UTF-8" in exc.message


@pytest.mark.parametrize(
    "line",
    [
        "clock_skew = 5",
        "state_dir = true",
        "max_concurrent_runs = true",
        "max_concurrent_runs = 1.5",
        'release_key_fingerprints = [1, "x"]',
        "release_keyring = { a = 1 }",
    ],
)
def test_wrong_toml_types(tmp_path: Path, line: str) -> None:
    path = write_toml(tmp_path / "hl.toml", line + "\n")
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert "in " + str(path) in exc.message
    assert "expected a string" in exc.message


def test_file_errors_name_the_variable_and_the_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "1h"\n')
    exc = failure({"HL_CONFIG_FILE": str(path)})
    assert exc.problems[0].variable == "HL_CLOCK_SKEW"
    assert exc.message.startswith(f"HL_CLOCK_SKEW (key 'clock_skew' in {path}):")
    assert "'1h'" in exc.message


def test_config_file_problems_are_collected_with_the_rest(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "1m"\n', mode=0o666)
    exc = failure({"HL_CONFIG_FILE": str(path), "SPACELIFT_DEBUG": "perhaps"})
    assert {p.variable for p in exc.problems} == {"HL_CONFIG_FILE", "SPACELIFT_DEBUG"}


def test_fifo_config_file_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    exc = failure({"HL_CONFIG_FILE": str(fifo)})
    assert "not a regular file" in exc.message


# ---------------------------------------------------------------------------------------------
# Direct construction and the whole-loader property
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"launcher_logs_timeout": timedelta(0)}, "SPACELIFT_LAUNCHER_LOGS_TIMEOUT"),
        ({"launcher_run_timeout": timedelta(seconds=-1)}, "SPACELIFT_LAUNCHER_RUN_TIMEOUT"),
        ({"clock_skew": timedelta(hours=1)}, "HL_CLOCK_SKEW"),
        ({"max_concurrent_runs": 0}, "HL_MAX_CONCURRENT_RUNS"),
        ({"max_envelope_bytes": 10}, "HL_MAX_ENVELOPE_BYTES"),
        ({"pinned_ca_sha256": b"short"}, "HL_CA_FINGERPRINT"),
        ({"release_keyring": Path("keys.asc")}, "HL_RELEASE_KEYRING"),
        ({"worker_network": ""}, "SPACELIFT_WORKER_NETWORK"),
        ({"state_dir": Path("rel")}, "HL_STATE_DIR"),
        ({"policy_syntax": "v2"}, "HL_POLICY_SYNTAX"),
        ({"policy_timeout": timedelta(0)}, "HL_POLICY_TIMEOUT"),
        ({"policy_timeout": timedelta(minutes=2)}, "HL_POLICY_TIMEOUT"),
        ({"policy_sanitize_key": Secret(b"short")}, "HL_POLICY_SANITIZE_KEY"),
        ({"policy_sanitize_key": Secret(b"")}, "HL_POLICY_SANITIZE_KEY"),
    ],
)
def test_direct_construction_checks_invariants(changes: dict[str, Any], variable: str) -> None:
    base: dict[str, Any] = {
        "state_dir": Path("/s"),
        "cache_dir": Path("/c"),
        "audit_dir": Path("/a"),
    }
    with pytest.raises(SettingsError) as info:
        Settings(**{**base, **changes})
    assert info.value.problems[0].variable == variable


def test_settings_is_frozen() -> None:
    s = load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.debug = True  # type: ignore[misc]


HERMETIC = [
    spec.name
    for spec in VARIABLES
    if "<" not in spec.name
    and spec.name
    not in ("HL_CONFIG_FILE", "HL_RELEASE_KEYRING", "SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY")
]


@given(st.dictionaries(st.sampled_from(HERMETIC), st.text(max_size=40), max_size=6))
@settings(max_examples=300)
def test_loader_returns_settings_or_raises_settings_error(env: dict[str, str]) -> None:
    result = outcome({"HOME": HOME, **env})
    if isinstance(result, SettingsError):
        assert result.problems
        for problem in result.problems:
            assert problem.variable in problem.text
    else:
        assert set(env) <= {spec.name for spec in VARIABLES}
        assert result.worker_comms_protocol in ("mqtt", "poll")


# ---------------------------------------------------------------------------------------------
# effective_values and the CLI
# ---------------------------------------------------------------------------------------------
def test_effective_values_list_every_variable(tmp_path: Path) -> None:
    values = dict(effective_values(load(full_env(tmp_path))))
    assert values["SPACELIFT_METADATA_instance_id"] == "i-0abc"
    assert values["SPACELIFT_PRIVATEVCS_MAPPING_NAME_1"] == "gitlab"
    assert values["SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0"] == "https://ghe.internal:8443"
    assert values["SPACELIFT_WORKER_EXTRA_MOUNTS"] == "/opt/tools:/opt/tools:ro"
    assert values["SPACELIFT_WHITELIST_ENVS"] == "AWS_REGION,ro_READ_TOKEN,wo_WRITE_TOKEN"
    assert values["SPACELIFT_LAUNCHER_LOGS_TIMEOUT"] == "16m40s"
    assert values["HL_MAX_ENVELOPE_BYTES"] == "32MiB"
    assert values["HL_CA_FINGERPRINT"] == CA_HEX
    assert values["SPACELIFT_DEBUG"] == "true"
    assert values["HL_POLICY_SYNTAX"] == "v0"
    assert values["HL_POLICY_TIMEOUT"] == "250ms"
    assert values["HL_POLICY_SANITIZE_KEY"] == "set"
    defaults = dict(effective_values(load({"HL_MAX_ENVELOPE_BYTES": "1500"})))
    assert defaults["SPACELIFT_METADATA_<tag>"] == "none"
    assert defaults["SPACELIFT_PRIVATEVCS_MAPPING_NAME_<n>"] == "none"
    assert defaults["HL_MAX_ENVELOPE_BYTES"] == "1500 bytes"
    assert defaults["SPACELIFT_WORKER_RUNTIME"] == "unset"
    assert defaults["HL_POLICY_SYNTAX"] == "auto"
    assert defaults["HL_POLICY_TIMEOUT"] == "1s"
    assert defaults["HL_POLICY_SANITIZE_KEY"] == "unset"


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hardened-launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    settings_cmd.register(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def isolated_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith(("SPACELIFT_", "HL_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", HOME)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_cli_show_prints_every_setting_with_secrets_as_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    isolated_environment(
        monkeypatch, {"SPACELIFT_TOKEN": CANARY_TOKEN, "SPACELIFT_WORKER_NETWROK": "x"}
    )
    assert run_cli(["settings", "show"]) == 0
    out, err = capsys.readouterr()
    assert CANARY_TOKEN not in out + err
    lines = out.splitlines()
    assert any(line.split() == ["SPACELIFT_TOKEN", "set"] for line in lines)
    assert any(line.split() == ["SPACELIFT_POOL_PRIVATE_KEY", "unset"] for line in lines)
    assert any(line.split() == ["SPACELIFT_LAUNCHER_RUN_TIMEOUT", "1h10m0s"] for line in lines)
    for spec in VARIABLES:
        assert spec.name in out
    assert "warning: SPACELIFT_WORKER_NETWROK" in err


def test_cli_show_uses_the_config_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    isolated_environment(monkeypatch, {})
    path = write_toml(tmp_path / "hl.toml", 'clock_skew = "42s"\n')
    monkeypatch.chdir(tmp_path)
    assert run_cli(["settings", "show", "--config", "hl.toml"]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["HL_CLOCK_SKEW", "42s"] for line in out.splitlines())
    assert any(line.split() == ["HL_CONFIG_FILE", str(path)] for line in out.splitlines())


def test_cli_show_lists_every_problem_then_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    isolated_environment(
        monkeypatch,
        {"SPACELIFT_TOKEN": f"{CANARY_TOKEN}!", "SPACELIFT_DEBUG": "meh", "HL_CLOCK_SKEW": "1d"},
    )
    with pytest.raises(SettingsError) as info:
        run_cli(["settings", "show"])
    err = capsys.readouterr().err
    assert len(info.value.problems) == 3
    assert err.count("problem: ") == 3
    assert CANARY_TOKEN not in err
    assert info.value.exit_code == ConfigurationError.exit_code


def test_cli_table_prints_the_markdown_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["settings", "table"]) == 0
    assert capsys.readouterr().out == markdown_table()


def test_secret_type_is_used_for_secret_fields() -> None:
    s = load({"SPACELIFT_TOKEN": "dG9rZW4=", "SPACELIFT_POOL_PRIVATE_KEY": "a2V5"})
    assert isinstance(s.token, Secret)
    assert isinstance(s.pool_private_key, Secret)
    secret_fields = {spec.field for spec in VARIABLES if spec.secret}
    assert secret_fields == {"token", "pool_private_key", "policy_sanitize_key"}


def test_config_file_mode_check_uses_the_opened_file(tmp_path: Path) -> None:
    # A symlink to a safe file is judged by the file it points at.
    target = write_toml(tmp_path / "real.toml", 'clock_skew = "1m"\n', mode=0o600)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert load({"HL_CONFIG_FILE": str(link)}).clock_skew == timedelta(minutes=1)
    target.chmod(0o666)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666
    exc = failure({"HL_CONFIG_FILE": str(link)})
    assert exc.reason == "config_file_insecure"


# ---------------------------------------------------------------------------------------------
# Executor settings (HL_LAUNCHER_ID, HL_WORKER_*, HL_RUN_*)
# ---------------------------------------------------------------------------------------------
def test_executor_defaults() -> None:
    s = load()
    assert s.launcher_id is None
    assert (s.worker_uid, s.worker_gid) == (1983, 1983)
    assert s.run_memory_bytes == 4 * 1024**3
    assert s.run_pids_limit == 1024
    assert s.run_cpus == 2.0
    assert s.run_workspace_bytes == 1024**3
    assert s.run_tmp_bytes == 256 * 1024**2
    assert s.run_stop_grace == timedelta(seconds=10)


def test_executor_settings_parse() -> None:
    s = load(
        {
            "HL_LAUNCHER_ID": "launcher-a.1",
            "HL_WORKER_UID": "2000",
            "HL_WORKER_GID": "0",
            "HL_UNSAFE_ROOT_WORKER": "true",
            "HL_RUN_MEMORY_BYTES": "512MiB",
            "HL_RUN_PIDS_LIMIT": "64",
            "HL_RUN_CPUS": "0.5",
            "HL_RUN_WORKSPACE_BYTES": "2GiB",
            "HL_RUN_TMP_BYTES": "1048576",
            "HL_RUN_STOP_GRACE": "2s",
        }
    )
    assert s.launcher_id == "launcher-a.1"
    assert (s.worker_uid, s.worker_gid) == (2000, 0)
    assert s.run_memory_bytes == 512 * 1024**2
    assert s.run_pids_limit == 64
    assert s.run_cpus == 0.5
    assert s.run_workspace_bytes == 2 * 1024**3
    assert s.run_tmp_bytes == 1024 * 1024
    assert s.run_stop_grace == timedelta(seconds=2)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        ("HL_LAUNCHER_ID", "-bad"),
        ("HL_LAUNCHER_ID", "a" * 64),
        ("HL_WORKER_UID", "-1"),
        ("HL_WORKER_UID", "abc"),
        ("HL_WORKER_GID", "4294967296"),
        ("HL_RUN_MEMORY_BYTES", "1MiB"),
        ("HL_RUN_MEMORY_BYTES", "4GB"),
        ("HL_RUN_PIDS_LIMIT", "7"),
        ("HL_RUN_CPUS", "0"),
        ("HL_RUN_CPUS", "two"),
        ("HL_RUN_WORKSPACE_BYTES", "10"),
        ("HL_RUN_TMP_BYTES", "2048GiB"),
        ("HL_RUN_STOP_GRACE", "6m"),
        ("HL_RUN_STOP_GRACE", "-1s"),
    ],
)
def test_bad_executor_settings_name_the_variable(variable: str, text: str) -> None:
    exc = failure({variable: text})
    assert exc.problems[0].variable == variable
    assert exc.message.startswith(variable)


def test_executor_settings_from_the_config_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "hl.toml", 'worker_uid = 4242\nrun_pids_limit = 99\nrun_cpus = "1.5"\n'
    )
    s = load(config_file=path)
    assert (s.worker_uid, s.run_pids_limit, s.run_cpus) == (4242, 99, 1.5)


def test_settings_built_directly_check_executor_invariants() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(
            state_dir=Path("/s"),
            cache_dir=Path("/c"),
            audit_dir=Path("/a"),
            run_pids_limit=1,
            run_stop_grace=timedelta(hours=1),
        )
    assert {p.variable for p in info.value.problems} == {"HL_RUN_PIDS_LIMIT", "HL_RUN_STOP_GRACE"}


def test_egress_policy_path_parses(tmp_path: Path) -> None:
    policy = tmp_path / "egress.yaml"
    policy.write_text("version: 1\n")
    s = load({"HL_EGRESS_POLICY": str(policy)})
    assert s.egress_policy == policy
    assert load().egress_policy is None
    assert dict(effective_values(s))["HL_EGRESS_POLICY"] == str(policy)


def test_egress_policy_must_exist(tmp_path: Path) -> None:
    exc = failure({"HL_EGRESS_POLICY": str(tmp_path / "absent.yaml")})
    assert exc.problems[0].variable == "HL_EGRESS_POLICY"
    assert exc.reason == "egress_policy_missing"
    assert "egress policy file" in exc.message


# ---------------------------------------------------------------------------------------------
# Launcher daemon settings (HL_RELEASE_DIR, HL_HEARTBEAT_INTERVAL, HL_SHUTDOWN_GRACE)
# ---------------------------------------------------------------------------------------------
def test_release_dir_parses(tmp_path: Path) -> None:
    s = load({"HL_RELEASE_DIR": f"  {tmp_path}  "})
    assert s.release_dir == tmp_path
    assert dict(effective_values(s))["HL_RELEASE_DIR"] == str(tmp_path)
    assert dict(effective_values(load()))["HL_RELEASE_DIR"] == "unset"


def test_release_dir_must_exist(tmp_path: Path) -> None:
    exc = failure({"HL_RELEASE_DIR": str(tmp_path / "absent")})
    assert exc.problems[0].variable == "HL_RELEASE_DIR"
    assert exc.message.startswith("HL_RELEASE_DIR")
    assert exc.reason == "release_dir_missing"
    assert "cannot be read" in exc.message
    assert "SHA256SUMS" in exc.message


def test_release_dir_must_be_a_directory(tmp_path: Path) -> None:
    file = tmp_path / "hl-worker"
    file.write_bytes(b"\x7fELF")
    exc = failure({"HL_RELEASE_DIR": str(file)})
    assert exc.problems[0].variable == "HL_RELEASE_DIR"
    assert exc.reason == "release_dir_missing"
    assert "is not a directory" in exc.message


@unprivileged
@pytest.mark.parametrize(("mode", "why"), [(0o311, "cannot be listed"), (0o644, "searched")])
def test_release_dir_must_be_listable_and_searchable(tmp_path: Path, mode: int, why: str) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    releases.chmod(mode)
    try:
        exc = failure({"HL_RELEASE_DIR": str(releases)})
    finally:
        releases.chmod(0o755)
    assert exc.problems[0].variable == "HL_RELEASE_DIR"
    assert exc.reason == "release_dir_unreadable"
    assert why in exc.message


def test_release_dir_list_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_DIRECTORY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    exc = failure({"HL_RELEASE_DIR": str(tmp_path)})
    assert exc.reason == "release_dir_unreadable"
    assert "is a directory that cannot be listed (Permission denied)" in exc.message


def test_release_dir_search_failure_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = os.stat

    def denied(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> Any:
        if dir_fd is not None:
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", denied)
    exc = failure({"HL_RELEASE_DIR": str(tmp_path)})
    assert exc.reason == "release_dir_unreadable"
    assert "is a directory that cannot be searched (Permission denied)" in exc.message


@pytest.mark.parametrize(
    ("text", "value"),
    [("1s", timedelta(seconds=1)), ("10s", timedelta(seconds=10)), ("5m", timedelta(minutes=5))],
)
def test_heartbeat_interval_range(text: str, value: timedelta) -> None:
    assert load({"HL_HEARTBEAT_INTERVAL": text}).heartbeat_interval == value


@pytest.mark.parametrize("text", ["0s", "999ms", "5m1s", "1h", "-10s", "often"])
def test_bad_heartbeat_interval_names_the_variable(text: str) -> None:
    exc = failure({"HL_HEARTBEAT_INTERVAL": text})
    assert exc.problems[0].variable == "HL_HEARTBEAT_INTERVAL"
    assert exc.message.startswith("HL_HEARTBEAT_INTERVAL")
    assert "at least 1s and at most 5m0s" in exc.message


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0s", timedelta(0)),
        ("0", timedelta(0)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
    ],
)
def test_shutdown_grace_range(text: str, value: timedelta) -> None:
    assert load({"HL_SHUTDOWN_GRACE": text}).shutdown_grace == value


@pytest.mark.parametrize("text", ["-1s", "24h0m1s", "48h", "a while"])
def test_bad_shutdown_grace_names_the_variable(text: str) -> None:
    exc = failure({"HL_SHUTDOWN_GRACE": text})
    assert exc.problems[0].variable == "HL_SHUTDOWN_GRACE"
    assert exc.message.startswith("HL_SHUTDOWN_GRACE")


def test_daemon_durations_round_trip_through_effective_values() -> None:
    s = load({"HL_HEARTBEAT_INTERVAL": "90s", "HL_SHUTDOWN_GRACE": "2h"})
    values = dict(effective_values(s))
    assert values["HL_HEARTBEAT_INTERVAL"] == "1m30s"
    assert values["HL_SHUTDOWN_GRACE"] == "2h0m0s"
    again = load({"HL_HEARTBEAT_INTERVAL": "1m30s", "HL_SHUTDOWN_GRACE": "2h0m0s"})
    assert (again.heartbeat_interval, again.shutdown_grace) == (
        s.heartbeat_interval,
        s.shutdown_grace,
    )


def test_daemon_settings_from_the_config_file(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path / "hl.toml",
        f'release_dir = "{tmp_path}"\nheartbeat_interval = "3s"\nshutdown_grace = "0s"\n',
    )
    s = load(config_file=path)
    assert s.release_dir == tmp_path
    assert s.heartbeat_interval == timedelta(seconds=3)
    assert s.shutdown_grace == timedelta(0)


def test_settings_built_directly_check_daemon_invariants() -> None:
    with pytest.raises(SettingsError) as info:
        Settings(
            state_dir=Path("/s"),
            cache_dir=Path("/c"),
            audit_dir=Path("/a"),
            release_dir=Path("relative"),
            heartbeat_interval=timedelta(0),
            shutdown_grace=timedelta(hours=25),
        )
    assert {p.variable for p in info.value.problems} == {
        "HL_RELEASE_DIR",
        "HL_HEARTBEAT_INTERVAL",
        "HL_SHUTDOWN_GRACE",
    }


GOOD_IMAGES = [
    "busybox",
    "busybox:1.36",
    "registry.example:5000/team/runner:1.0",
    "a.b/c_d/e-f:1.0",
    "runner@sha256:" + "a" * 64,
]
#: Empty, ``.`` or ``..`` components: no Docker reference has them, and as part of an Engine API
#: path (``/images/<name>/json``) they would name another resource.
BAD_IMAGES = [
    "a/../../containers/x",
    "a/./b",
    "a//b",
    "a/",
    "a/.hidden",
    "a/-x",
    "x" * 256,
]


@pytest.mark.parametrize("image", GOOD_IMAGES)
def test_default_runner_image_accepts_references(image: str) -> None:
    assert load({"SPACELIFT_DEFAULT_RUNNER_IMAGE": image}).default_runner_image == image


@pytest.mark.parametrize("image", BAD_IMAGES)
def test_default_runner_image_refuses_dot_and_empty_components(image: str) -> None:
    exc = failure({"SPACELIFT_DEFAULT_RUNNER_IMAGE": image})
    assert exc.problems[0].variable == "SPACELIFT_DEFAULT_RUNNER_IMAGE"


# ---------------------------------------------------------------------------------------------
# Only ASCII white space is trimmed
# ---------------------------------------------------------------------------------------------
#: Characters ``str.strip()`` removes that are not ASCII white space: information separators,
#: NEL, and Unicode spaces.
NOT_ASCII_SPACE = ("\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u2028", "\u3000")


@pytest.mark.parametrize("extra", NOT_ASCII_SPACE)
@pytest.mark.parametrize("where", ["before", "after"])
def test_no_setting_silently_drops_a_character_that_is_not_ascii_space(
    tmp_path: Path, extra: str, where: str
) -> None:
    """A value with such a character around it is refused or kept as written; it never loads
    as if the character were not there (``/var/lib/hl\\x85`` must not mean ``/var/lib/hl``)."""
    env = full_env(tmp_path)
    baseline = load(env)
    silent = []
    for name, value in env.items():
        changed = {**env, name: extra + value if where == "before" else value + extra}
        result = outcome({"HOME": HOME, **changed})
        if not isinstance(result, SettingsError) and result == baseline:
            silent.append(name)
    assert silent == []


@pytest.mark.parametrize("space", [" ", "\t", "\n", "\r\n", "\x0b", "\x0c"])
def test_ascii_white_space_around_every_value_is_trimmed(tmp_path: Path, space: str) -> None:
    """Except where the value is kept as given: the base64 secrets (checked as they are) and
    metadata values (free text)."""
    env = full_env(tmp_path)
    verbatim = ("SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY", "SPACELIFT_METADATA_")
    padded = {
        name: value if name.startswith(verbatim) else f"{space}{value}{space}"
        for name, value in env.items()
    }
    assert load(padded) == load(env)


@pytest.mark.parametrize("extra", NOT_ASCII_SPACE)
def test_a_value_of_only_such_characters_is_not_taken_as_unset(extra: str) -> None:
    assert isinstance(outcome({"HOME": HOME, "HL_STATE_DIR": extra}), SettingsError)
