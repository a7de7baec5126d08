# ruff: noqa: ARG002, ARG005 - fakes implement interfaces whose arguments they do not need
"""The pipeline's gates in order; a refused run never reaches the runner; secrets wiped."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.errors import LauncherError, UntrustedInputError
from hardened_launcher.executor.errors import MountRefusedError
from hardened_launcher.executor.runner import RunResult, StopReason
from hardened_launcher.executor.runspec import RunSpec, run_spec_from_mapping
from hardened_launcher.pipeline import PolicyStep, run_pipeline
from hardened_launcher.policy import (
    LauncherFacts,
    PolicyDecision,
    PolicyDeniedError,
    PolicyGate,
    PolicyTimeoutError,
    Sanitizer,
    check_policy_path,
)
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction import redactor as redactor_module
from hardened_launcher.redaction.engine import build_engine
from hardened_launcher.settings import Mount, Settings, load_settings

CANARY = "CANARY-pipeline-90ab"


class StandInRedactor:
    """A naive redactor (the real one is tested in tests/unit/test_redaction_*)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str, value: Any) -> None:
        self.names.append(name)

    def stream(self, channel: str, *, whole_lines: bool = False) -> Any:
        raise AssertionError("the fake runner never streams")

    def redact_text(self, text: str) -> str:
        return text

    def counts(self) -> dict[str, int]:
        return {}


class FakeSink:
    closed = 0

    def write(self, channel: str, data: bytes) -> None:
        raise AssertionError("not used")

    def close(self) -> None:
        self.closed += 1


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, bytes]] = []

    def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
        self.calls.append((container, bytes(instructions)))
        kwargs["sink"].close()
        return RunResult(
            run_id=container.run_id,
            container_id="c1",
            exit_code=0,
            stopped_by=StopReason.EXITED,
            duration_seconds=0.1,
            output_bytes=0,
        )


def proof(name: str) -> VerifiedBinary:
    return VerifiedBinary(
        name=name,
        path=Path(f"/cache/{name}"),
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        size=1,
        signer_fingerprint="f" * 40,
        signing_key_fingerprint="f" * 40,
        signature_created=datetime.now(UTC),
        sums_sha256="0" * 64,
    )


class FakeBinaries:
    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.asked: list[tuple[str, str]] = []

    def verify(self, name: str, version: str, *, run_id: str, audit: Any) -> VerifiedBinary:
        self.asked.append((name, version))
        if name == self.refuse:
            raise UntrustedInputError("bad signature", reason="signature_invalid")
        return proof(name)


class FakePolicyGate:
    """Stands in for PolicyGate: returns or raises what the test says, keeps the documents."""

    def __init__(self, outcome: Callable[[Mapping[str, Any]], object]) -> None:
        self.outcome = outcome
        self.documents: list[Mapping[str, Any]] = []

    def check(self, document: Mapping[str, Any], *, run_id: str | None = None) -> Any:
        self.documents.append(document)
        return self.outcome(document)

    def close(self) -> None:
        pass


def allow(document: Mapping[str, Any]) -> PolicyDecision:
    return PolicyDecision(
        run_id="run-p", policy_sha256="a" * 64, input_sha256="b" * 64, sample=False, duration_ns=1
    )


def step(outcome: Callable[[Mapping[str, Any]], object]) -> PolicyStep:
    return PolicyStep(
        gate=FakePolicyGate(outcome),
        sanitizer=Sanitizer(b"k" * 32),
        launcher=LauncherFacts(pool_id="p", worker_id="w", version="0.1.0"),
    )


def _raise(exc: BaseException) -> Callable[[Mapping[str, Any]], object]:
    def fail(document: Mapping[str, Any]) -> object:
        raise exc

    return fail


def make_spec() -> RunSpec:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "run-p",
            "run_type": "ro",
            "image": "busybox",
            "phases": [{"name": "main", "commands": ["true"]}],
            "secret_env": {"TOKEN": CANARY},
            "binaries": [{"name": "tf", "version": "1.0"}],
            "metadata": {"stack_slug": "prod-db", "owner": "team-a"},
        }
    )


def settings(**extra: Any) -> Settings:
    return Settings(state_dir=Path("/s"), cache_dir=Path("/c"), audit_dir=Path("/a"), **extra)


def go(
    spec: RunSpec,
    *,
    binaries: FakeBinaries | None = None,
    policy: PolicyStep | None = None,
    s: Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[FakeRunner, MemoryAuditLog, StandInRedactor, FakeSink, RunResult | LauncherError]:
    runner, audit, redactor, sink = FakeRunner(), MemoryAuditLog(), StandInRedactor(), FakeSink()
    outcome: RunResult | LauncherError
    try:
        outcome = run_pipeline(
            spec,
            settings=s or settings(),
            launcher_id="L",
            worker_version="0.1.0",
            binaries=binaries or FakeBinaries(),  # type: ignore[arg-type]
            policy=policy,
            runner=runner,
            redactor=redactor,
            sink=sink,
            audit=audit,
            environ=environ,
        )
    except LauncherError as exc:
        outcome = exc
    return runner, audit, redactor, sink, outcome


def test_allowed_run_passes_every_gate_in_order() -> None:
    spec = make_spec()
    policy = step(allow)
    binaries = FakeBinaries()
    runner, audit, redactor, sink, result = go(spec, binaries=binaries, policy=policy, environ={})
    assert isinstance(result, RunResult)
    assert binaries.asked == [("hl-worker", "0.1.0"), ("tf", "1.0")]
    assert len(runner.calls) == 1
    assert isinstance(policy.gate, FakePolicyGate)
    (document,) = policy.gate.documents
    assert CANARY not in str(document)
    # The documented shape: secret values only in their sanitized form, binaries by digest.
    assert document["docker_image"] == "busybox"
    env = document["static_run_environment"]["environment_variables"]
    assert env["TOKEN"] == Sanitizer(b"k" * 32).sanitize(CANARY)
    assert document["static_run_environment"]["command"] == ["true"]
    assert document["static_run_environment"]["stack_slug"] == "prod-db"
    assert document["run"]["user_provided_metadata"] == ["owner=team-a", "stack_slug=prod-db"]
    assert set(document["launcher"]["binaries"]) == {"hl-worker", "tf"}
    # The gate records its own decision (the fake does not), the pipeline the rest.
    assert [e.type for e in audit.events] == [
        "binaries.passed",
        "identity.skipped",
        "envelope.skipped",
        "run.started",
        "run.finished",
    ]
    assert redactor.names == ["env:TOKEN"]
    assert spec.secret_env["TOKEN"].wiped
    assert sink.closed == 1


@pytest.mark.parametrize(
    ("binaries", "policy", "reason"),
    [
        (FakeBinaries(refuse="hl-worker"), None, "signature_invalid"),
        (FakeBinaries(refuse="tf"), None, "signature_invalid"),
        (FakeBinaries(), lambda doc: None, "policy_evaluation_error"),
        (FakeBinaries(), lambda doc: "allow", "policy_evaluation_error"),
        (FakeBinaries(), _raise(ZeroDivisionError()), "policy_evaluation_error"),
        (
            FakeBinaries(),
            _raise(PolicyDeniedError(("no",), policy_sha256="a" * 64)),
            "policy_denied",
        ),
        (FakeBinaries(), _raise(PolicyTimeoutError("slow")), "policy_timeout"),
    ],
)
def test_refused_runs_never_reach_the_runner(
    binaries: FakeBinaries, policy: Callable[[Mapping[str, Any]], object] | None, reason: str
) -> None:
    spec = make_spec()
    runner, audit, _, sink, outcome = go(
        spec, binaries=binaries, policy=None if policy is None else step(policy)
    )
    assert isinstance(outcome, LauncherError)
    assert outcome.reason == reason
    assert runner.calls == []
    assert spec.secret_env["TOKEN"].wiped
    assert sink.closed == 1
    assert all(e.type != "run.started" for e in audit.events)
    refused = [e for e in audit.events if e.type == "run.refused"]
    assert [e.reason for e in refused] == [reason]


def test_dangerous_mount_is_refused_again_before_the_container_exists() -> None:
    """Start-up refuses it first (exec and start); the check repeats right before the
    container is made, so a mount that turned dangerous since is refused too."""
    s = settings(
        worker_extra_mounts=(Mount(host_path="/var/run/docker.sock", container_path="/d"),)
    )
    binaries = FakeBinaries()
    runner, audit, _, _, outcome = go(make_spec(), binaries=binaries, s=s)
    assert isinstance(outcome, MountRefusedError)
    assert runner.calls == []
    refused = [e for e in audit.events if e.type == "run.refused"]
    assert [(e.gate, e.reason) for e in refused] == [("execute", outcome.reason)]
    assert "run.started" not in [e.type for e in audit.events]


def test_whitelisted_env_goes_over_stdin_and_masked_ones_are_redacted() -> None:
    s = load_settings(
        {
            "HOME": "/home/x",
            "SPACELIFT_WHITELIST_ENVS": "AWS_REGION,ro_READ_TOKEN,wo_WRITE_TOKEN",
            "SPACELIFT_MASK_ENVS": "READ_TOKEN",
        }
    )
    runner, _, redactor, _, result = go(
        make_spec(),
        s=s,
        environ={"AWS_REGION": "eu-1", "READ_TOKEN": "rt-secret", "WRITE_TOKEN": "wt"},
    )
    assert isinstance(result, RunResult)
    ((_, instructions),) = runner.calls
    assert b"E AWS_REGION " in instructions
    assert b"E READ_TOKEN " in instructions
    assert b"WRITE_TOKEN" not in instructions
    assert b"rt-secret" not in instructions
    assert redactor.names == ["env:TOKEN", "env:READ_TOKEN"]


def test_the_launchers_values_and_the_runs_secrets_compile_one_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every value the run's output is masked for is added at once: one compile per run (the
    launcher's key alone is ~800 patterns; one compile per value tripled its start time)."""
    built: list[int] = []
    real_build = build_engine

    def counting(patterns: Any, preference: str | None = None) -> Any:
        built.append(len(patterns))
        return real_build(patterns, preference)

    monkeypatch.setattr(redactor_module, "build_engine", counting)
    s = load_settings(
        {
            "HOME": "/home/x",
            "SPACELIFT_WHITELIST_ENVS": "ro_READ_TOKEN",
            "SPACELIFT_MASK_ENVS": "READ_TOKEN",
        }
    )
    redactor = Redactor(engine="reference")
    run_pipeline(
        make_spec(),
        settings=s,
        launcher_id="L",
        worker_version="0.1.0",
        binaries=FakeBinaries(),  # type: ignore[arg-type]
        policy=None,
        runner=FakeRunner(),
        redactor=redactor,
        sink=FakeSink(),
        audit=MemoryAuditLog(),
        environ={"SPACELIFT_TOKEN": "tok-launcher-5e6f7a8b", "READ_TOKEN": "rt-secret-1234"},
    )
    assert len(built) == 1
    masked = redactor.redact_text(f"tok-launcher-5e6f7a8b {CANARY} rt-secret-1234")
    assert "tok-launcher" not in masked
    assert CANARY not in masked
    assert "rt-secret" not in masked
    assert set(redactor.counts()) == {"SPACELIFT_TOKEN", "env:TOKEN", "env:READ_TOKEN"}


def test_the_run_logs_its_start_step_by_step_once_the_container_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class StartingRunner(FakeRunner):
        def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
            kwargs["timer"].mark("start")
            kwargs["on_started"]("c1")
            return super().run(container, instructions, **kwargs)

    caplog.set_level(logging.INFO, logger="hardened_launcher.pipeline")
    run_pipeline(
        make_spec(),
        settings=settings(),
        launcher_id="L",
        worker_version="0.1.0",
        binaries=FakeBinaries(),  # type: ignore[arg-type]
        policy=None,
        runner=StartingRunner(),
        redactor=StandInRedactor(),
        sink=FakeSink(),
        audit=MemoryAuditLog(),
    )
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("run.timings")]
    names = [part.partition("=")[0] for part in line.split()[1:]]
    assert names == ["run_id", "redactor", "sink", "spec", "audit_started", "start", "total"]
    assert line.startswith("run.timings run_id=run-p ")
    assert CANARY not in line


REGO_DENY_SECRET = """package spacelift

deny contains msg if {
    input.static_run_environment.environment_variables.TOKEN == sanitized("%s")
    msg := "this token is revoked"
}

deny contains msg if {
    not startswith(input.docker_image, "registry.internal/")
    msg := sprintf("image %%s is not from registry.internal", [input.docker_image])
}
"""


def test_real_policy_denies_by_sanitized_secret_and_image(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.rego"
    policy_file.write_text(REGO_DENY_SECRET % CANARY)
    sanitizer = Sanitizer(b"s" * 32)
    audit = MemoryAuditLog()
    compiled = check_policy_path(policy_file, sanitizer=sanitizer)
    with PolicyGate.start(compiled, sanitizer=sanitizer, audit=audit, isolated=False) as gate:
        policy = PolicyStep(
            gate=gate,
            sanitizer=sanitizer,
            launcher=LauncherFacts(pool_id="p", worker_id="w", version="0.1.0"),
        )
        runner = FakeRunner()
        spec = make_spec()
        with pytest.raises(PolicyDeniedError) as info:
            run_pipeline(
                spec,
                settings=settings(),
                launcher_id="L",
                worker_version="0.1.0",
                binaries=FakeBinaries(),  # type: ignore[arg-type]
                policy=policy,
                runner=runner,
                redactor=StandInRedactor(),
                sink=FakeSink(),
                audit=audit,
            )
    assert runner.calls == []
    assert set(info.value.messages) == {
        "this token is revoked",
        "image busybox is not from registry.internal",
    }
    denied = [e for e in audit.events if e.type == "policy.denied"]
    assert len(denied) == 1
    assert CANARY not in str([e.to_json_dict() for e in audit.events])
