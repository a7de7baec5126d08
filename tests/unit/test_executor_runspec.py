"""Run spec parsing: strict, bounded, secrets wrapped at once, errors never echo values."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.errors import EXIT_UNTRUSTED_INPUT
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.runspec import (
    MAX_PHASES,
    parse_run_spec,
    run_spec_from_mapping,
    split_for_confirmation,
)
from hardened_launcher.secrets import Secret

CANARY = "CANARY-runspec-5e1f"


def doc(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "run_id": "run-1",
        "run_type": "wo",
        "image": "busybox:1.36",
        "phases": [{"name": "main", "commands": ["echo hi"]}],
    }
    base.update(extra)
    return base


def refused(document: Any) -> RunSpecError:
    with pytest.raises(RunSpecError) as info:
        run_spec_from_mapping(document)
    assert info.value.reason == "runspec_invalid"
    assert info.value.exit_code == EXIT_UNTRUSTED_INPUT
    return info.value


def test_full_spec_parses_from_yaml() -> None:
    text = f"""
version: 1
run_id: run-42
run_type: ro
image: registry.example/app:1.0
phases:
  - name: before_init
    commands: ["echo a"]
  - name: main
    commands: ["terraform plan", "echo done"]
env: {{REGION: eu-west-1}}
secret_env: {{TOKEN: {CANARY}}}
files:
  - {{path: dir/a.tf, content: "x", mode: "0600"}}
  - {{path: key.pem, content: "{CANARY}", secret: true}}
binaries: [{{name: terraform, version: 1.5.7}}]
limits: {{memory_bytes: 104857600, pids: 100, cpus: 0.5}}
metadata: {{stack: prod}}
""".encode()
    spec = parse_run_spec(text)
    assert [p.name for p in spec.phases] == ["before_init", "main"]
    assert spec.phases[1].commands == ("terraform plan", "echo done")
    assert spec.env == {"REGION": "eu-west-1"}
    assert isinstance(spec.secret_env["TOKEN"], Secret)
    assert spec.secret_env["TOKEN"].reveal_text() == CANARY
    assert spec.files[0].mode == 0o600
    assert not spec.files[0].secret
    assert spec.files[1].secret
    assert spec.binaries[0].name == "terraform"
    assert spec.limits.cpus == 0.5
    assert CANARY not in repr(spec)
    spec.wipe()
    assert spec.secret_env["TOKEN"].wiped


@pytest.mark.parametrize(
    ("document", "where"),
    [
        (doc(extra=1), "unknown field"),
        (doc(version=2), "version"),
        (doc(version=True), "version"),
        (doc(run_type="rw"), "run_type"),
        (doc(run_id="../x"), "run_id"),
        (doc(image="UPPER/case"), "image"),
        (doc(phases=[]), "phases is empty"),
        (doc(phases=[{"name": "main", "commands": []}]), "commands is empty"),
        (doc(phases=[{"name": "main", "commands": ["  "]}]), "is empty"),
        (doc(phases=[{"name": "Main", "commands": ["x"]}]), "name"),
        (doc(phases=[{"name": "a", "commands": ["x"]}] * 2), "repeats"),
        (doc(phases=[{"name": f"p{i}", "commands": ["x"]} for i in range(MAX_PHASES + 1)]), "more"),
        (doc(phases=[{"name": "a", "commands": ["x\x00"]}]), "NUL"),
        (doc(phases=[{"name": "a", "commands": ["x"], "when": "always"}]), "unknown"),
        (doc(env={"1BAD": "x"}), "env name"),
        (doc(env={"PATH": "/evil"}), "reserved"),
        (doc(env={"HL_WORKSPACE": "/"}), "reserved"),
        (doc(env={"A": 1}), "not a string"),
        (doc(env={"A": "x"}, secret_env={"A": "y"}), "repeats names"),
        (doc(files=[{"path": "/etc/passwd", "content": "x"}]), "relative path"),
        (doc(files=[{"path": "a/../../b", "content": "x"}]), "'..'"),
        (doc(files=[{"path": "a//b", "content": "x"}]), "empty"),
        (doc(files=[{"path": "a", "content": "x", "mode": "0999"}]), "mode"),
        (doc(files=[{"path": "a", "content": "x", "mode": 0o4755}]), "mode"),
        (doc(files=[{"path": "a", "content": "x", "secret": "yes"}]), "secret"),
        (doc(files=[{"path": "a", "content": "x"}, {"path": "a", "content": "y"}]), "repeats"),
        (doc(binaries=[{"name": "hl-worker", "version": "1"}]), "reserved"),
        (doc(binaries=[{"name": "tf", "version": "1 2"}]), "version"),
        (doc(limits={"memory_bytes": 1}), "memory_bytes"),
        (doc(limits={"pids": 2}), "pids"),
        (doc(limits={"cpus": 0}), "cpus"),
        (doc(limits={"cpus": True}), "cpus"),
        (doc(limits={"swap": 1}), "unknown"),
        (doc(metadata={"Bad Key": "x"}), "metadata key"),
        ([1, 2], "not a mapping"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(document: Any, where: str) -> None:
    exc = refused(document) if isinstance(document, dict) else None
    if exc is None:
        with pytest.raises(RunSpecError) as info:
            parse_run_spec(yaml.safe_dump(document).encode())
        exc = info.value
    assert where in exc.message


def test_secret_values_are_never_echoed_in_errors() -> None:
    exc = refused(doc(secret_env={"TOKEN": CANARY + "\x00"}))
    assert CANARY not in f"{exc.message} {exc.hint} {exc.detail}"
    with pytest.raises(RunSpecError) as info:
        parse_run_spec(f"version: 1\nsecret_env: {{A: {CANARY}\n".encode())
    assert CANARY not in f"{info.value.message} {info.value.detail}"


def test_yaml_aliases_duplicates_size_and_encoding_are_refused() -> None:
    bomb = b"a: &a [x, x]\nb: [*a, *a]\n"
    with pytest.raises(RunSpecError, match="aliases"):
        parse_run_spec(bomb)
    with pytest.raises(RunSpecError, match="duplicate key"):
        parse_run_spec(b"version: 1\nversion: 1\n")
    with pytest.raises(RunSpecError, match="larger than"):
        parse_run_spec(b"x" * 2048, max_bytes=1024)
    with pytest.raises(RunSpecError, match="UTF-8"):
        parse_run_spec(b"\xff\xfe")
    with pytest.raises(RunSpecError, match="not a mapping"):
        parse_run_spec(b"- 1\n")


@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_spec_or_a_runspec_error(data: bytes) -> None:
    try:
        parse_run_spec(data)
    except RunSpecError as exc:
        reason = exc.reason
    else:
        reason = "runspec_invalid"
    assert reason == "runspec_invalid"


# -- confirmation (confirm_after, stage, plan_of) ------------------------------------------------


def _phased(**extra: Any) -> dict[str, Any]:
    return doc(
        phases=[
            {"name": "initializing", "commands": ["echo init"]},
            {"name": "planning", "commands": ["echo plan"]},
            {"name": "applying", "commands": ["echo apply"]},
        ],
        secret_env={"TOKEN": "CANARY-split-0042"},
        **extra,
    )


def test_split_for_confirmation_makes_two_valid_halves() -> None:
    data = yaml.safe_dump(_phased(confirm_after="planning")).encode()
    halves = split_for_confirmation(data)
    assert halves is not None
    plan, apply = (parse_run_spec(h) for h in halves)
    assert [p.name for p in plan.phases] == ["initializing", "planning"]
    assert (plan.run_id, plan.stage, plan.plan_of, plan.confirm_after) == (
        "run-1",
        "plan",
        None,
        None,
    )
    assert [p.name for p in apply.phases] == ["applying"]
    assert (apply.run_id, apply.stage, apply.plan_of) == ("run-1.apply", "apply", "run-1")
    assert apply.secret_env["TOKEN"].reveal() == b"CANARY-split-0042"
    assert split_for_confirmation(yaml.safe_dump(_phased()).encode()) is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"confirm_after": "nope"}, "confirm_after"),
        ({"confirm_after": "applying"}, "confirm_after"),  # nothing left to confirm
        ({"confirm_after": "planning", "stage": "plan"}, "confirm_after"),
        ({"stage": "apply"}, "plan_of"),
        ({"stage": "plan", "plan_of": "run-0"}, "plan_of"),
        ({"stage": "later"}, "stage"),
        ({"stage": "apply", "plan_of": "../x"}, "plan_of"),
        ({"confirm_after": "planning", "run_id": "r" * 123}, "run_id"),
    ],
)
def test_confirmation_fields_are_checked(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(RunSpecError, match=field):
        run_spec_from_mapping(_phased(**extra))


@pytest.mark.parametrize(
    "image",
    ["a/../../containers/x", "a/./b", "a//b", "a/", "..", "a/.hidden", "x" * 256],
)
def test_an_image_with_a_dot_or_empty_component_is_refused(image: str) -> None:
    """As part of an Engine API path such a name would address another resource."""
    assert "image" in refused(doc(image=image)).message


@pytest.mark.parametrize(
    "image", ["busybox:1.36", "registry.example:5000/team/runner:1.0", "r@sha256:" + "a" * 64]
)
def test_image_references_are_accepted(image: str) -> None:
    assert run_spec_from_mapping(doc(image=image)).image == image
