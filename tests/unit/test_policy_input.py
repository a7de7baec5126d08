"""Input document builder and the sanitized form: secrets never reach the policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.binaries.verify import VerifiedBinary
from hardened_launcher.policy import (
    LauncherFacts,
    PolicyGate,
    PolicyInputError,
    Sanitizer,
    build_input,
    check_policy_path,
    encode_input,
)
from hardened_launcher.policy.input import MAX_INPUT_DEPTH
from hardened_launcher.policy.sanitize import is_sanitized
from hardened_launcher.secrets import Secret

CANARY = "CANARY-8f1e2d3c-never-in-policy-input"
FACTS = LauncherFacts(pool_id="pool-1", worker_id="w-1", version="0.1.0", metadata={"zone": "a"})
KEY = b"k" * 32


def env_of(doc: dict[str, Any]) -> dict[str, Any]:
    env: dict[str, Any] = doc["static_run_environment"]["environment_variables"]
    return env


def metadata(env: dict[str, object]) -> dict[str, object]:
    return {
        "docker_image": "ghcr.io/acme/runner:1",
        "worker_version": "v1.0.0",
        "run": {"id": "01RUN", "type": "TRACKED", "commit": {"branch": "main", "hash": "abc"}},
        "static_run_environment": {"stack_slug": "core", "environment_variables": env},
    }


def test_secret_values_are_sanitized_everywhere() -> None:
    sanitizer = Sanitizer(KEY)
    doc = build_input(
        metadata({"DB_PASSWORD": Secret(CANARY), "API_TOKEN": CANARY, "TF_LOG": "debug"})
        | {"run": {"user_provided_metadata": [Secret(CANARY)]}},
        launcher=FACTS,
        sanitizer=sanitizer,
        secret_variables={"API_TOKEN"},
    )
    text = encode_input(doc)
    assert CANARY not in text
    env = env_of(doc)
    assert env["DB_PASSWORD"] == env["API_TOKEN"] == sanitizer.sanitize(CANARY)
    assert is_sanitized(env["API_TOKEN"])
    assert env["TF_LOG"] == "debug"


def test_sanitized_form_is_keyed() -> None:
    assert Sanitizer(KEY).sanitize(CANARY) != Sanitizer(b"x" * 32).sanitize(CANARY)
    assert Sanitizer(KEY).sanitize(CANARY) == Sanitizer(KEY).sanitize(Secret(CANARY))
    assert "k" not in repr(Sanitizer(KEY)).replace("key", "")


@pytest.mark.parametrize("isolated", [False, True])
def test_builtin_matches_input_form_and_canary_never_reaches_engine(
    tmp_path: Path, isolated: bool
) -> None:
    (tmp_path / "p.rego").write_text(
        "package spacelift\nimport rego.v1\n"
        'deny contains "known leaked password" if '
        'input.static_run_environment.environment_variables.DB_PASSWORD == sanitized("hunter2")\n'
        "deny contains v if {\n"
        "  some v in input.static_run_environment.environment_variables\n"
        '  contains(v, "CANARY")\n'
        "}\n"
    )
    sanitizer = Sanitizer.random()
    compiled = check_policy_path(tmp_path, sanitizer=sanitizer)
    with PolicyGate.start(compiled, sanitizer=sanitizer, isolated=isolated) as gate:
        leaked = build_input(
            metadata({"DB_PASSWORD": Secret("hunter2")}), launcher=FACTS, sanitizer=sanitizer
        )
        assert gate.evaluate(leaked).deny == ("known leaked password",)
        canary = build_input(
            metadata({"DB_PASSWORD": Secret(CANARY)}), launcher=FACTS, sanitizer=sanitizer
        )
        assert gate.evaluate(canary).deny == ()


def test_launcher_section_and_binaries() -> None:
    binary = VerifiedBinary(
        name="spacelift-worker",
        path=Path("/x"),
        sha256="a" * 64,
        size=1,
        signer_fingerprint="F" * 40,
        signing_key_fingerprint="F" * 40,
        signature_created=datetime.now(UTC),
        sums_sha256="b" * 64,
    )
    doc = build_input(metadata({}), launcher=FACTS, sanitizer=Sanitizer(KEY), binaries=[binary])
    assert doc["launcher"] == {
        "pool_id": "pool-1",
        "worker_id": "w-1",
        "version": "0.1.0",
        "metadata": {"zone": "a"},
        "binaries": {"spacelift-worker": "a" * 64},
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"launcher": {"pool_id": "forged"}},
        {"unknown_field": 1},
        {"run": {"x": float("nan")}},
        {"run": {"x": 2**64}},  # beyond 64 bits: the engine would round it, OPA would not
        {"run": {"x": [-(2**63) - 1]}},
        {"run": {"x": {"y": 10**30}}},
        {"run": {"x": object()}},
        {"run": {1: "non-string key"}},
    ],
)
def test_refuses_bad_metadata_without_echoing_values(bad: dict[object, object]) -> None:
    with pytest.raises(PolicyInputError) as caught:
        build_input(bad, launcher=FACTS, sanitizer=Sanitizer(KEY))  # type: ignore[arg-type]
    assert caught.value.reason == "policy_input_invalid"
    assert "forged" not in caught.value.message


@pytest.mark.parametrize("edge", [2**64 - 1, -(2**63), 2**53 + 1])
def test_integers_within_64_bits_are_kept_exact(edge: int) -> None:
    doc = build_input({"run": {"x": edge}}, launcher=FACTS, sanitizer=Sanitizer(KEY))
    run = doc["run"]
    assert isinstance(run, dict)
    assert run["x"] == edge


@pytest.mark.parametrize("number", [1.0, -2.0, 1e-05, 1.5e16, 1e300])
def test_refuses_numbers_whose_text_opa_keeps(number: float) -> None:
    # OPA prints 1.0 and 1e-05 as written (json.marshal, sprintf); the engine cannot
    with pytest.raises(PolicyInputError, match=r"written 1\.0 or with an exponent"):
        build_input({"run": {"x": number}}, launcher=FACTS, sanitizer=Sanitizer(KEY))


@pytest.mark.parametrize("number", [0.5, 0.1, 1234.25, 0.0001])
def test_keeps_plain_floats(number: float) -> None:
    doc = build_input({"run": {"x": number}}, launcher=FACTS, sanitizer=Sanitizer(KEY))
    run = doc["run"]
    assert isinstance(run, dict)
    assert run["x"] == number


def test_refuses_deep_nesting() -> None:
    deep: object = "x"
    for _ in range(MAX_INPUT_DEPTH + 2):
        deep = [deep]
    with pytest.raises(PolicyInputError):
        build_input({"run": deep}, launcher=FACTS, sanitizer=Sanitizer(KEY))


def _plain_float(value: float) -> bool:
    """Floats the input accepts: not integral (1.0) and written without an exponent."""
    return not value.is_integer() and "e" not in repr(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False).filter(_plain_float)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    run=json_values,
    env=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=6),
    secret_names=st.sets(st.text(min_size=1, max_size=10), max_size=3),
)
def test_builder_round_trips_and_hides_secret_variables(
    run: object, env: dict[str, str], secret_names: set[str]
) -> None:
    sanitizer = Sanitizer(KEY)
    doc = build_input(
        metadata(dict(env)) | {"run": run},
        launcher=FACTS,
        sanitizer=sanitizer,
        secret_variables=secret_names,
    )
    assert json.loads(encode_input(doc)) == json.loads(json.dumps(doc))
    assert doc["run"] == json.loads(json.dumps(run))
    built_env = env_of(doc)
    for name, value in env.items():
        expected = sanitizer.sanitize(value) if name in secret_names else value
        assert built_env[name] == expected
