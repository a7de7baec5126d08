# ruff: noqa: ARG002, ARG005 - fakes implement interfaces whose arguments they do not need
"""The pipeline's gates in order; a refused run never reaches the runner; secrets wiped."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.errors import LauncherError, UntrustedInputError
from hardened_launcher.executor.errors import MountRefusedError, PolicyDeniedError
from hardened_launcher.executor.runner import RunResult, StopReason, _Demux
from hardened_launcher.executor.runspec import RunSpec, run_spec_from_mapping
from hardened_launcher.pipeline import run_pipeline
from hardened_launcher.settings import Mount, Settings, load_settings

CANARY = "CANARY-pipeline-90ab"


class StandInRedactor:
    """A naive redactor (the real one is tested in tests/unit/test_redaction_*)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self, name: str, value: Any) -> None:
        self.names.append(name)

    def stream(self, channel: str) -> Any:
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
        }
    )


def settings(**extra: Any) -> Settings:
    return Settings(state_dir=Path("/s"), cache_dir=Path("/c"), audit_dir=Path("/a"), **extra)


def go(
    spec: RunSpec,
    *,
    binaries: FakeBinaries | None = None,
    policy: Callable[[Mapping[str, Any]], object] | None = None,
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
    seen: list[Mapping[str, Any]] = []

    def policy(document: Mapping[str, Any]) -> object:
        seen.append(document)
        return "allow"

    binaries = FakeBinaries()
    runner, audit, redactor, sink, result = go(spec, binaries=binaries, policy=policy, environ={})
    assert isinstance(result, RunResult)
    assert binaries.asked == [("hl-worker", "0.1.0"), ("tf", "1.0")]
    assert len(runner.calls) == 1
    assert CANARY not in str(seen)
    assert [e.type for e in audit.events] == [
        "binaries.passed",
        "policy.allowed",
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
        (FakeBinaries(), lambda doc: None, "policy_denied"),
        (FakeBinaries(), lambda doc: type("D", (), {"allowed": False})(), "policy_denied"),
        (FakeBinaries(), lambda doc: 1 / 0, "policy_error"),
        (
            FakeBinaries(),
            lambda doc: (_ for _ in ()).throw(PolicyDeniedError("no", reason="policy_denied")),
            "policy_denied",
        ),
    ],
)
def test_refused_runs_never_reach_the_runner(
    binaries: FakeBinaries, policy: Any, reason: str
) -> None:
    spec = make_spec()
    runner, audit, _, sink, outcome = go(spec, binaries=binaries, policy=policy)
    assert isinstance(outcome, LauncherError)
    assert outcome.reason == reason
    assert runner.calls == []
    assert spec.secret_env["TOKEN"].wiped
    assert sink.closed == 1
    assert all(e.type != "run.started" for e in audit.events)


def test_dangerous_mount_stops_before_any_gate() -> None:
    s = settings(
        worker_extra_mounts=(Mount(host_path="/var/run/docker.sock", container_path="/d"),)
    )
    binaries = FakeBinaries()
    runner, _, _, _, outcome = go(make_spec(), binaries=binaries, s=s)
    assert isinstance(outcome, MountRefusedError)
    assert binaries.asked == []
    assert runner.calls == []


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


def test_demux_splits_frames_across_reads() -> None:
    frames = b"\x01\x00\x00\x00\x00\x00\x00\x03out" + b"\x02\x00\x00\x00\x00\x00\x00\x03err"
    demux = _Demux()
    got: list[tuple[str, bytes]] = []
    for i in range(len(frames)):
        got += demux.feed(frames[i : i + 1])
    assert got == [("stdout", b"out"), ("stderr", b"err")]
