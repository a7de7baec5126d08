# ruff: noqa: ARG002 - fakes implement interfaces whose arguments they do not need
"""``GatedRun``, the real gate sequence, with real crypto and a real policy; Docker is faked.

ticket (signed manifest) → binaries → identity (certificate recheck, pool, worker, sanitize key)
→ policy (on the manifest, before decryption) → envelope (ticket digest, seal_run_state /
open_run_state, replay cache, run ids, spec equals manifest) → execute. Every refusal before
execution is a final ``status REFUSED`` with its reason and a ``run.refused`` audit record, the
runner is never called for a refused run, and no status carries a secret from the run spec.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher import pipeline
from hardened_launcher.audit import MemoryAuditLog
from hardened_launcher.binaries import VerifiedBinary
from hardened_launcher.envelope import Reason, SqliteReplayCache, seal_run_state
from hardened_launcher.envelope.ticket import (
    RunManifest,
    TicketError,
    manifest_from_spec,
    sign_ticket,
    verify_ticket,
)
from hardened_launcher.errors import InfrastructureError
from hardened_launcher.executor.errors import BinaryUnavailableError
from hardened_launcher.executor.logsink import LogSink, TeeLogSink
from hardened_launcher.executor.runner import RunResult, StopReason
from hardened_launcher.executor.runspec import parse_run_spec
from hardened_launcher.identity import PoolIdentity, PoolPrivateKey
from hardened_launcher.identity.certificates import check_pool_identity
from hardened_launcher.identity.csr import create_csr, parse_subject
from hardened_launcher.identity.issuing import CertificateAuthority, issue_pool_token
from hardened_launcher.identity.token import Token
from hardened_launcher.launcher.gates import GatedRun, RunContext, ShippingSinkFactory, log_shipper
from hardened_launcher.launcher.logship import ChunkedLogSink, StdoutJsonLinesSink
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.pipeline import PolicyStep
from hardened_launcher.policy import LauncherFacts, PolicyGate, Sanitizer, check_policy_path
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.canary import LeakDetectedError
from hardened_launcher.redaction.sources import launcher_secret_values
from hardened_launcher.redaction.variants import variants
from hardened_launcher.settings import Settings
from hardened_launcher.transport.messages import Assign, LogUrl, Status

POOL = "pool-gates"
RUN = "run-gates-1"
CANARY = "CANARY-gated-run-4c1e"
WORKER_VERSION = "0.1.0"
ISSUED = datetime.now(UTC)
SANITIZE_KEY = b"s" * 32
SANITIZER = Sanitizer(SANITIZE_KEY)
#: The control plane's run-state key (module-wide: the ``pool`` fixture's token carries it).
POOL_SIGNER = (ed25519.Ed25519PrivateKey.generate(),)

DENY_PROD_DB = """package spacelift

import rego.v1

deny contains sprintf("runs on stack %q need a change ticket", [stack]) if {
    stack := input.static_run_environment.stack_slug
    stack == "prod-db"
}
"""


# -- the pool's credentials, made once per module (real CA, real pool key, real token) ----------
@dataclass(frozen=True)
class Pool:
    key: PoolPrivateKey
    signer: ed25519.Ed25519PrivateKey
    token: Token
    identity: PoolIdentity


@pytest.fixture(scope="module")
def pool() -> Pool:
    ca = CertificateAuthority.generate()
    key = PoolPrivateKey.generate_ec()
    signer = POOL_SIGNER[0]
    token = issue_pool_token(
        ca,
        create_csr(key, parse_subject("/CN=ignored")),
        policy_sanitize_key=SANITIZE_KEY,
        pool_id=POOL,
        broker_url="mqtts://127.0.0.1:8883",
        control_plane_url="https://cp.example",
        run_state_signing_key=signer.public_key(),
        not_before=ISSUED,
        not_after=ISSUED + timedelta(days=1),
    )
    identity = check_pool_identity(
        token=token,
        private_key=key,
        pinned_ca_sha256=ca.fingerprint_sha256,
        now=ISSUED + timedelta(seconds=1),
        clock_skew=timedelta(minutes=5),
    )
    return Pool(key=key, signer=signer, token=token, identity=identity)


# -- fakes for everything that would touch Docker ------------------------------------------------
class FakeSink:
    def __init__(self) -> None:
        self.closed = 0
        self.data: list[tuple[str, bytes]] = []

    def write(self, channel: str, data: bytes) -> None:
        self.data.append((channel, data))

    def close(self) -> None:
        self.closed += 1


class FakeRunner:
    """Records what it is asked to run; ends as told (exit code, cancel, or an error)."""

    def __init__(
        self, *, exit_code: int = 0, wait_for_cancel: bool = False, fail: Exception | None = None
    ) -> None:
        self.exit_code = exit_code
        self.wait_for_cancel = wait_for_cancel
        self.fail = fail
        self.calls: list[tuple[Any, bytes]] = []

    def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
        self.calls.append((container, bytes(instructions)))
        kwargs["sink"].close()
        if self.fail is not None:
            raise self.fail
        on_started = kwargs.get("on_started")
        if on_started is not None:
            on_started("container-1")
        cancel: threading.Event | None = kwargs.get("cancel")
        if self.wait_for_cancel:
            assert cancel is not None
            assert cancel.wait(5), "the run was never cancelled"
            return RunResult(
                run_id=container.run_id,
                container_id="container-1",
                exit_code=None,
                stopped_by=StopReason.CANCELLED,
                duration_seconds=0.1,
                output_bytes=0,
            )
        return RunResult(
            run_id=container.run_id,
            container_id="container-1",
            exit_code=self.exit_code,
            stopped_by=StopReason.EXITED,
            duration_seconds=0.1,
            output_bytes=0,
        )


class FakeBinaries:
    """Stands in for the BinaryGate (real signature checks: tests/unit/test_binaries_*)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def verify(self, name: str, version: str, *, run_id: str, audit: Any) -> VerifiedBinary:
        self.asked.append((name, version))
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


# -- helpers ---------------------------------------------------------------------------------
def spec_yaml(run_id: str = RUN, *, stack: str = "dev") -> bytes:
    document = {
        "version": 1,
        "run_id": run_id,
        "run_type": "ro",
        "image": "busybox",
        "phases": [{"name": "main", "commands": ["echo hello"]}],
        "secret_env": {"TOKEN": CANARY},
        "metadata": {"stack_slug": stack},
    }
    return yaml.safe_dump(document, sort_keys=False).encode()


@dataclass(frozen=True)
class Sealed:
    """A sealed run state and the plaintext the control plane sealed (for its manifest)."""

    envelope: bytes
    plaintext: bytes


def seal(pool: Pool, plaintext: bytes, *, run_id: str = RUN) -> Sealed:
    now = datetime.now(UTC)
    envelope = seal_run_state(
        plaintext,
        pool_public_key=pool.key.public_key,
        signing_key=pool.signer,
        run_id=run_id,
        pool_id=POOL,
        issued_at=now - timedelta(seconds=1),
        expires_at=now + timedelta(minutes=5),
    )
    return Sealed(envelope=envelope, plaintext=plaintext)


def manifest_of(plaintext: bytes) -> RunManifest:
    spec = parse_run_spec(plaintext)
    try:
        return manifest_from_spec(spec, SANITIZER)
    finally:
        spec.wipe()


def assignment(
    sealed: Sealed,
    run_id: str = RUN,
    *,
    envelope: bytes | None = None,
    manifest: RunManifest | None = None,
    signer: ed25519.Ed25519PrivateKey | None = None,
    pool_id: str = POOL,
    worker_id: str = "launcher-t",
    lease_id: str = "lease-1",
    signed_envelope: bytes | None = None,
) -> Assign:
    """The control plane's ``assign`` for ``sealed``: its ticket names the sealed bytes (or
    ``signed_envelope``); ``envelope`` replaces the bytes sent (a tampering in transit)."""
    ticket = sign_ticket(
        manifest or manifest_of(sealed.plaintext),
        pool_id=pool_id,
        worker_id=worker_id,
        lease_id=lease_id,
        envelope=sealed.envelope if signed_envelope is None else signed_envelope,
        signing_key=signer or POOL_SIGNER[0],
    )
    return Assign.with_envelope(
        run_id=run_id,
        lease_id="lease-1",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=30),
        envelope=sealed.envelope if envelope is None else envelope,
        ticket=ticket.encoded,
        ticket_signature=ticket.signature,
        log_urls=(LogUrl(chunk=0, url="https://s3.example/0"),),
    )


@dataclass
class Harness:
    pool: Pool
    state_dir: Path
    runner: FakeRunner = field(default_factory=FakeRunner)
    binaries: FakeBinaries = field(default_factory=FakeBinaries)
    audit: MemoryAuditLog = field(default_factory=MemoryAuditLog)
    policy: PolicyStep | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sinks: list[FakeSink] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    replay: SqliteReplayCache | None = None
    environ: dict[str, str] = field(default_factory=dict)
    shared_redaction: Redactor | None = None

    def gated_run(self) -> GatedRun:
        if self.replay is None:
            self.replay = SqliteReplayCache(self.state_dir / "replay.sqlite3")

        def sink_factory(
            run_id: str, initial_urls: Sequence[LogUrl], request_more: Callable[[int], None]
        ) -> LogSink:
            sink = FakeSink()
            self.sinks.append(sink)
            return sink

        return GatedRun(
            settings=Settings(
                state_dir=self.state_dir,
                cache_dir=self.state_dir / "cache",
                audit_dir=self.state_dir / "audit",
            ),
            identity=self.pool.identity,
            pool_private_key=self.pool.key,
            signer_public_key=self.pool.signer.public_key(),
            replay_cache=self.replay,
            launcher_id="launcher-t",
            worker_version=WORKER_VERSION,
            binaries=self.binaries,  # type: ignore[arg-type]
            policy=self.policy,
            sanitizer=SANITIZER,
            runner=self.runner,
            audit=self.audit,
            sink_factory=sink_factory,
            environ=self.environ,
            clock=self.clock,
            shared_redaction=self.shared_redaction,
        )

    def run(self, assign: Assign, *, on_started: Callable[[str], None] | None = None) -> Status:
        def started(container_id: str) -> None:
            self.started.append(container_id)
            if on_started is not None:
                on_started(container_id)

        context = RunContext(
            cancel=self.cancel,
            on_started=started,
            request_more=lambda _from_chunk: None,
            on_sink=lambda _sink: None,
        )
        status = self.gated_run()(assign, context)
        assert CANARY not in repr(status)
        assert CANARY not in (status.message or "")
        return status


@pytest.fixture
def harness(pool: Pool, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(pool=pool, state_dir=tmp_path)
    yield h
    if h.replay is not None:
        h.replay.close()
    assert CANARY not in str([event.to_json_dict() for event in h.audit.events])


def refused_without_running(h: Harness, status: Status, reason: str) -> None:
    assert status.state == "REFUSED"
    assert status.reason == reason
    assert status.run_id == RUN
    assert h.runner.calls == []
    assert h.started == []
    refused = [e for e in h.audit.events if e.type == "run.refused"]
    assert [(e.run_id, e.reason) for e in refused][-1:] == [(RUN, reason)]


# -- the happy path ----------------------------------------------------------------------------
def test_a_sealed_envelope_opens_and_runs_to_finished(harness: Harness) -> None:
    status = harness.run(assignment(seal(harness.pool, spec_yaml())))
    assert (status.state, status.run_id, status.exit_code) == ("FINISHED", RUN, 0)
    assert status.reason == "run_succeeded"
    assert len(harness.runner.calls) == 1
    container, instructions = harness.runner.calls[0]
    assert container.run_id == RUN
    # The secret reaches the container (base64 in the instruction stream), and only it.
    assert base64.b64encode(CANARY.encode()) in instructions
    assert harness.binaries.asked == [("hl-worker", WORKER_VERSION)]
    assert harness.started == ["container-1"]
    assert len(harness.sinks) == 1
    types = [event.type for event in harness.audit.events]
    assert "envelope.opened" in types
    assert types.index("envelope.opened") < types.index("run.started")


def test_a_failing_run_is_failed_with_its_exit_code(pool: Pool, tmp_path: Path) -> None:
    h = Harness(pool=pool, state_dir=tmp_path, runner=FakeRunner(exit_code=3))
    status = h.run(assignment(seal(pool, spec_yaml())))
    assert (status.state, status.exit_code, status.reason) == ("FAILED", 3, "run_failed")


# -- gate 1: credentials -----------------------------------------------------------------------
def test_an_expired_certificate_fails_the_run_before_anything_else(
    pool: Pool, tmp_path: Path
) -> None:
    later = ISSUED + timedelta(days=2)
    h = Harness(pool=pool, state_dir=tmp_path, clock=lambda: later)
    envelope = seal(pool, spec_yaml())
    status = h.run(assignment(envelope))
    refused_without_running(h, status, "certificate_expired")
    assert status.message
    assert h.sinks == []
    # Binaries come first (the mission's order); the envelope was never opened.
    assert h.binaries.asked == [("hl-worker", WORKER_VERSION)]
    assert "envelope.opened" not in [e.type for e in h.audit.events]
    # The envelope was not even opened: the same envelope still opens afterwards.
    h.clock = lambda: datetime.now(UTC)
    assert h.run(assignment(envelope)).state == "FINISHED"


# -- gate 4: the envelope ----------------------------------------------------------------------
def test_an_envelope_altered_in_transit_is_refused_before_any_key_operation(
    harness: Harness,
) -> None:
    sealed = seal(harness.pool, spec_yaml())
    envelope = bytearray(sealed.envelope)
    envelope[-1] ^= 0x01
    status = harness.run(assignment(sealed, envelope=bytes(envelope)))
    refused_without_running(harness, status, "envelope_ticket_mismatch")
    assert harness.sinks == []
    assert "envelope.rejected" not in [e.type for e in harness.audit.events]


def test_a_tampered_envelope_the_ticket_names_fails_with_the_envelope_reason(
    harness: Harness,
) -> None:
    sealed = seal(harness.pool, spec_yaml())
    envelope = bytearray(sealed.envelope)
    envelope[-1] ^= 0x01
    status = harness.run(
        assignment(sealed, envelope=bytes(envelope), signed_envelope=bytes(envelope))
    )
    refused_without_running(harness, status, Reason.SIGNATURE_INVALID.value)
    assert harness.sinks == []
    rejected = [e for e in harness.audit.events if e.type == "envelope.rejected"]
    assert [e.run_id for e in rejected] == [RUN]  # the refusal names its run


def test_an_envelope_signed_by_another_key_is_refused(harness: Harness) -> None:
    other = Pool(
        key=harness.pool.key,
        signer=ed25519.Ed25519PrivateKey.generate(),
        token=harness.pool.token,
        identity=harness.pool.identity,
    )
    status = harness.run(assignment(seal(other, spec_yaml())))
    refused_without_running(harness, status, Reason.SIGNATURE_INVALID.value)


def test_a_replayed_envelope_is_refused(harness: Harness) -> None:
    envelope = seal(harness.pool, spec_yaml())
    assert harness.run(assignment(envelope)).state == "FINISHED"
    again = harness.run(assignment(envelope))
    assert (again.state, again.reason) == ("REFUSED", Reason.REPLAYED.value)
    assert len(harness.runner.calls) == 1


def test_the_replay_cache_survives_a_restart(pool: Pool, tmp_path: Path) -> None:
    envelope = seal(pool, spec_yaml())
    first = Harness(pool=pool, state_dir=tmp_path)
    assert first.run(assignment(envelope)).state == "FINISHED"
    assert first.replay is not None
    first.replay.close()
    second = Harness(pool=pool, state_dir=tmp_path)
    try:
        status = second.run(assignment(envelope))
    finally:
        assert second.replay is not None
        second.replay.close()
    refused_without_running(second, status, Reason.REPLAYED.value)


def test_an_envelope_for_another_run_is_refused(harness: Harness) -> None:
    envelope = seal(harness.pool, spec_yaml("run-other"), run_id="run-other")
    status = harness.run(assignment(envelope, run_id=RUN, manifest=manifest_of(spec_yaml())))
    refused_without_running(harness, status, "envelope_run_mismatch")
    assert harness.sinks == []


# -- the run spec ------------------------------------------------------------------------------
def test_a_run_spec_naming_another_run_is_refused(harness: Harness) -> None:
    envelope = seal(harness.pool, spec_yaml("run-other"), run_id=RUN)
    status = harness.run(assignment(envelope, manifest=manifest_of(spec_yaml())))
    refused_without_running(harness, status, "runspec_run_mismatch")
    assert harness.sinks == []


def test_a_malformed_run_spec_is_refused(harness: Harness) -> None:
    envelope = seal(harness.pool, b"version: 1\nrun_id: [not, a, string]\n")
    status = harness.run(assignment(envelope, manifest=manifest_of(spec_yaml())))
    assert status.state == "REFUSED"
    assert status.reason is not None
    assert status.reason.startswith("runspec_")
    assert harness.runner.calls == []


# -- gate 3: policy (real Rego) ----------------------------------------------------------------
@pytest.fixture
def deny_prod_db(tmp_path: Path) -> Iterator[PolicyStep]:
    policy_file = tmp_path / "policy.rego"
    policy_file.write_text(DENY_PROD_DB)
    sanitizer = Sanitizer(b"s" * 32)
    compiled = check_policy_path(policy_file, sanitizer=sanitizer)
    with PolicyGate.start(compiled, sanitizer=sanitizer, isolated=False) as gate:
        yield PolicyStep(
            gate=gate,
            sanitizer=sanitizer,
            launcher=LauncherFacts(pool_id=POOL, worker_id="launcher-t", version=WORKER_VERSION),
        )


def test_a_policy_deny_fails_the_run_unrun(harness: Harness, deny_prod_db: PolicyStep) -> None:
    harness.policy = deny_prod_db
    status = harness.run(assignment(seal(harness.pool, spec_yaml(stack="prod-db"))))
    refused_without_running(harness, status, "policy_denied")
    assert status.message is not None
    assert "prod-db" in status.message


def test_a_policy_allow_runs(harness: Harness, deny_prod_db: PolicyStep) -> None:
    harness.policy = deny_prod_db
    status = harness.run(assignment(seal(harness.pool, spec_yaml(stack="dev"))))
    assert status.state == "FINISHED"


# -- cancel, and secrets in errors -------------------------------------------------------------
def test_a_cancelled_run_is_stopped(harness: Harness) -> None:
    harness.runner = FakeRunner(wait_for_cancel=True)
    # The daemon sets the run's cancel event when a `cancel` arrives after the container started.
    status = harness.run(
        assignment(seal(harness.pool, spec_yaml())), on_started=lambda _id: harness.cancel.set()
    )
    assert (status.state, status.run_id) == ("STOPPED", RUN)
    assert status.reason == StopReason.CANCELLED.value
    assert harness.started == ["container-1"]


def test_an_error_echoing_a_secret_is_redacted_in_the_status(pool: Pool, tmp_path: Path) -> None:
    leak = InfrastructureError(
        f"the container died: TOKEN={CANARY}", reason="container_failed", detail=CANARY
    )
    h = Harness(pool=pool, state_dir=tmp_path, runner=FakeRunner(fail=leak))
    try:
        status = h.run(assignment(seal(pool, spec_yaml())))  # asserts the canary is absent
    finally:
        assert h.replay is not None
        h.replay.close()
    assert (status.state, status.reason) == ("FAILED", "container_failed")
    assert status.message is not None
    assert "the container died" in status.message


class RedactorRecorder(FakeRunner):
    """Keeps the redactor each run was given (and fails as told)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redactors: list[Redactor] = []

    def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
        self.redactors.append(kwargs["redactor"])
        return super().run(container, instructions, **kwargs)


def test_each_runs_redactor_is_layered_over_the_launchers_own(pool: Pool, tmp_path: Path) -> None:
    """The launcher's own values are compiled once (the daemon's redactor); a run compiles only
    its own secrets, and still masks both, in its status text too."""
    token = "launcher-token-" + hashlib.sha256(b"token").hexdigest()
    environ = {"SPACELIFT_TOKEN": token}
    shared = Redactor()
    shared.add_many(launcher_secret_values(environ))
    runner = RedactorRecorder(
        fail=InfrastructureError(f"died: {token} {CANARY}", reason="container_failed")
    )
    h = Harness(
        pool=pool, state_dir=tmp_path, runner=runner, environ=environ, shared_redaction=shared
    )
    try:
        status = h.run(assignment(seal(pool, spec_yaml())))
    finally:
        assert h.replay is not None
        h.replay.close()
    assert status.message is not None
    assert token not in status.message
    assert status.message.count("***") == 2
    (redactor,) = runner.redactors
    own = redactor._state[0].patterns  # compiled for this run: its secret variable only
    assert set(own) == variants(CANARY.encode())
    assert redactor.pattern_count == len(own) + shared.pattern_count


def test_an_internal_error_fails_closed_without_details(harness: Harness) -> None:
    harness.runner = FakeRunner(fail=RuntimeError(CANARY))
    status = harness.run(assignment(seal(harness.pool, spec_yaml())))
    assert (status.state, status.reason) == ("FAILED", "internal_error")
    assert status.message == "internal error (RuntimeError)"
    (failed,) = [e for e in harness.audit.events if e.reason == "internal_error"]
    assert (failed.type, failed.run_id, failed.fields) == (
        "run.failed",
        RUN,
        {"error": "RuntimeError"},
    )


# -- log shipping, canary scan of the shipped bytes, metrics -------------------------------------
class FakeUploader:
    def __init__(self) -> None:
        self.puts: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def __call__(self, url: str, data: bytes) -> None:
        with self.lock:
            self.puts[url] = data


def shipping_settings(state_dir: Path, **extra: Any) -> Settings:
    return Settings(
        state_dir=state_dir,
        cache_dir=state_dir / "cache",
        audit_dir=state_dir / "audit",
        **extra,
    )


def test_the_shipping_factory_tees_storage_a_file_copy_and_stdout(tmp_path: Path) -> None:
    uploader = FakeUploader()
    out = io.StringIO()
    factory = ShippingSinkFactory(
        settings=shipping_settings(tmp_path, run_logs_on_standard_output_enabled=True),
        metrics=LauncherMetrics(),
        stdout=out,
        uploader=uploader,
    )
    urls = (LogUrl(chunk=0, url="https://s3.example/0"),)
    sink = factory("run-ship-1", urls, lambda _n: None)
    assert isinstance(sink, TeeLogSink)
    assert log_shipper(sink) is not None
    sink.write("stdout", b"hello\n")
    sink.close()
    inner: list[object] = list(sink.sinks)
    chunked = next(s for s in inner if isinstance(s, ChunkedLogSink))
    assert chunked.wait(5).complete
    assert uploader.puts == {"https://s3.example/0": b"hello\n"}
    (copy,) = (tmp_path / "runs").iterdir()
    assert copy.read_bytes() == b"hello\n"
    assert json.loads(out.getvalue())["line"] == "hello"
    assert not (tmp_path / "log-spool" / "run-ship-1").exists()


def test_without_stdout_enabled_there_is_no_json_lines_sink(tmp_path: Path) -> None:
    factory = ShippingSinkFactory(
        settings=shipping_settings(tmp_path), stdout=io.StringIO(), uploader=FakeUploader()
    )
    sink = factory("run-ship-2", (), lambda _n: None)
    assert isinstance(sink, TeeLogSink)
    assert not any(isinstance(s, StdoutJsonLinesSink) for s in sink.sinks)
    sink.close()
    factory.shutdown()


def test_a_leak_in_the_shipped_log_is_detected(tmp_path: Path) -> None:
    """The file copy holds exactly the shipped bytes, so the canary scan sees the leak."""
    uploader = FakeUploader()
    settings = shipping_settings(tmp_path)
    factory = ShippingSinkFactory(settings=settings, uploader=uploader)
    sink = factory("run-leak-1", (LogUrl(chunk=0, url="https://s3.example/0"),), lambda _n: None)
    leaked = f"oops {CANARY}\n".encode()  # as if the redactor had missed it
    sink.write("stdout", leaked)
    sink.close()
    redactor = Redactor()
    redactor.add("TOKEN", CANARY)
    audit = MemoryAuditLog()
    with pytest.raises(LeakDetectedError):
        pipeline._canary_scan(sink, redactor, settings=settings, run_id="run-leak-1", audit=audit)
    assert uploader.puts["https://s3.example/0"] == leaked
    assert "run.leak_detected" in [event.type for event in audit.events]


class WritingRunner(FakeRunner):
    def run(self, container: Any, instructions: bytearray, **kwargs: Any) -> RunResult:
        kwargs["sink"].write("stdout", kwargs["redactor"].redact_text(f"x {CANARY}\n").encode())
        return super().run(container, instructions, **kwargs)


def test_a_run_ships_its_log_and_feeds_metrics_and_audit(harness: Harness) -> None:
    uploader = FakeUploader()
    metrics = LauncherMetrics()
    harness.runner = WritingRunner()
    factory = ShippingSinkFactory(
        settings=shipping_settings(harness.state_dir), metrics=metrics, uploader=uploader
    )
    gated = dataclasses.replace(harness.gated_run(), sink_factory=factory, metrics=metrics)
    context = RunContext(
        cancel=harness.cancel,
        on_started=lambda _c: None,
        request_more=lambda _n: None,
        on_sink=lambda _s: None,
    )
    status = gated(assignment(seal(harness.pool, spec_yaml())), context)
    assert status.state == "FINISHED"
    (shipped,) = uploader.puts.values()
    assert CANARY.encode() not in shipped
    events = [e for e in harness.audit.events if e.type == "run.logs_shipped"]
    assert len(events) == 1
    fields = events[0].to_json_dict()
    assert "uploaded" in json.dumps(fields)
    assert "https://" not in json.dumps(fields)
    assert events[0].outcome.value == "info"
    text = metrics.render().decode()
    assert 'hl_runs_total{outcome="finished"} 1.0' in text
    assert "hl_run_duration_seconds_count 1.0" in text
    assert "hl_redactions_total{variable=" in text
    assert "hl_log_chunks_uploaded_total 1.0" in text


def test_refusals_and_policy_durations_reach_the_metrics(
    harness: Harness, deny_prod_db: PolicyStep
) -> None:
    metrics = LauncherMetrics()
    harness.policy = deny_prod_db
    gated = dataclasses.replace(harness.gated_run(), metrics=metrics)
    context = RunContext(
        cancel=harness.cancel,
        on_started=lambda _c: None,
        request_more=lambda _n: None,
        on_sink=lambda _s: None,
    )
    denied = gated(assignment(seal(harness.pool, spec_yaml(stack="prod-db"))), context)
    assert denied.reason == "policy_denied"
    text = metrics.render().decode()
    assert 'hl_run_refusals_total{reason="policy_denied"} 1.0' in text
    assert 'hl_runs_total{outcome="refused"} 1.0' in text
    assert "hl_policy_evaluation_seconds_count 1.0" in text
    allowed = gated(
        assignment(
            seal(harness.pool, spec_yaml(run_id="run-gates-2"), run_id="run-gates-2"), "run-gates-2"
        ),
        context,
    )
    assert allowed.state == "FINISHED"
    assert "hl_policy_evaluation_seconds_count 2.0" in metrics.render().decode()


# -- the mission's order, proofs, and every refusal audited (issue 12) ----------------------------
def _first(types: list[str], *names: str) -> int:
    return min(types.index(n) for n in names if n in types)


def test_the_audit_log_reads_in_the_missions_order(harness: Harness, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.rego"
    policy_file.write_text(DENY_PROD_DB)
    compiled = check_policy_path(policy_file, sanitizer=SANITIZER)
    gate = PolicyGate.start(compiled, sanitizer=SANITIZER, isolated=False, audit=harness.audit)
    harness.policy = PolicyStep(
        gate=gate,
        sanitizer=SANITIZER,
        launcher=LauncherFacts(pool_id=POOL, worker_id="launcher-t", version=WORKER_VERSION),
    )
    assert harness.run(assignment(seal(harness.pool, spec_yaml()))).state == "FINISHED"
    types = [e.type for e in harness.audit.events]
    order = [
        _first(types, "binaries.passed"),
        _first(types, "identity.passed"),
        _first(types, "policy.allowed"),
        _first(types, "envelope.opened"),
        _first(types, "run.started"),
    ]
    assert order == sorted(order), types
    identity = next(e for e in harness.audit.events if e.type == "identity.passed")
    assert identity.run_id == RUN
    assert identity.fields["lease_id"] == "lease-1"
    assert identity.fields["worker_id"] == "launcher-t"
    gate.close()


def test_a_denied_run_is_never_decrypted(harness: Harness, deny_prod_db: PolicyStep) -> None:
    harness.policy = deny_prod_db
    sealed = seal(harness.pool, spec_yaml(stack="prod-db"))
    status = harness.run(assignment(sealed))
    refused_without_running(harness, status, "policy_denied")
    types = [e.type for e in harness.audit.events]
    assert "envelope.opened" not in types
    assert "run.started" not in types
    (refused,) = [e for e in harness.audit.events if e.type == "run.refused"]
    assert refused.gate == "policy"
    # Not decrypted means not in the replay cache either: without the policy it opens.
    harness.policy = None
    assert harness.run(assignment(sealed)).state == "FINISHED"


class FailingBinaries(FakeBinaries):
    def verify(self, name: str, version: str, *, run_id: str, audit: Any) -> VerifiedBinary:
        raise BinaryUnavailableError("the release is missing", hint="put it there")


def _other_manifest(**changes: Any) -> RunManifest:
    document = dict(manifest_of(spec_yaml()).document)
    document.update(changes)
    return RunManifest(document=document)


#: (name, how to make the assignment, expected gate, expected reason). Every refusal reason on
#: the run path before execution: each must end REFUSED with one ``run.refused`` record.
REFUSALS: list[tuple[str, Callable[[Harness], Assign], str, str]] = [
    (
        "ticket signed by another key",
        lambda h: assignment(
            seal(h.pool, spec_yaml()), signer=ed25519.Ed25519PrivateKey.generate()
        ),
        "identity",
        "ticket_signature_invalid",
    ),
    (
        "no ticket at all",
        lambda h: dataclasses.replace(
            assignment(seal(h.pool, spec_yaml())), ticket_b64="", ticket_signature_b64=""
        ),
        "identity",
        "ticket_signature_invalid",
    ),
    (
        "ticket for another run",
        lambda h: assignment(seal(h.pool, spec_yaml()), manifest=manifest_of(spec_yaml("run-x"))),
        "identity",
        "ticket_run_mismatch",
    ),
    (
        "ticket for another pool",
        lambda h: assignment(seal(h.pool, spec_yaml()), pool_id="pool-other"),
        "identity",
        "ticket_pool_mismatch",
    ),
    (
        "ticket for another worker",
        lambda h: assignment(seal(h.pool, spec_yaml()), worker_id="launcher-other"),
        "identity",
        "ticket_worker_mismatch",
    ),
    (
        "ticket for another lease",
        lambda h: assignment(seal(h.pool, spec_yaml()), lease_id="lease-old"),
        "identity",
        "ticket_lease_mismatch",
    ),
    (
        "secrets sanitized under another key",
        lambda h: assignment(
            seal(h.pool, spec_yaml()),
            manifest=manifest_from_spec(parse_run_spec(spec_yaml()), Sanitizer(b"k" * 32)),
        ),
        "identity",
        "sanitize_key_mismatch",
    ),
    (
        "manifest names another image",
        lambda h: assignment(seal(h.pool, spec_yaml()), manifest=_other_manifest(image="alpine")),
        "envelope",
        "manifest_mismatch",
    ),
    (
        "manifest hides a command",
        lambda h: assignment(
            seal(h.pool, spec_yaml()),
            manifest=_other_manifest(phases=[{"name": "main", "commands": ["true"]}]),
        ),
        "envelope",
        "manifest_mismatch",
    ),
    (
        "manifest claims another secret value",
        lambda h: assignment(
            seal(h.pool, spec_yaml()),
            manifest=_other_manifest(secret_env={"TOKEN": SANITIZER.sanitize("other")}),
        ),
        "envelope",
        "manifest_mismatch",
    ),
    (
        "manifest hides the stack",
        lambda h: assignment(seal(h.pool, spec_yaml()), manifest=_other_manifest(metadata={})),
        "envelope",
        "manifest_mismatch",
    ),
    (
        "sealed bytes are not the ticket's",
        lambda h: assignment(
            seal(h.pool, spec_yaml()), envelope=seal(h.pool, spec_yaml()).envelope
        ),
        "envelope",
        "envelope_ticket_mismatch",
    ),
]


@pytest.mark.parametrize(("name", "make", "gate", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_is_refused_and_audited_with_its_gate(
    harness: Harness, name: str, make: Callable[[Harness], Assign], gate: str, reason: str
) -> None:
    status = harness.run(make(harness))
    refused_without_running(harness, status, reason)
    refused = [e for e in harness.audit.events if e.type == "run.refused"]
    assert [(e.gate, e.run_id, e.reason) for e in refused] == [(gate, RUN, reason)]
    assert "run.started" not in [e.type for e in harness.audit.events]
    if gate != "envelope":
        assert "envelope.opened" not in [e.type for e in harness.audit.events]


def test_the_refusal_table_covers_every_gate_before_execution(
    pool: Pool, tmp_path: Path, deny_prod_db: PolicyStep
) -> None:
    """The gates the table above does not reach by a crafted assignment: binaries, the
    certificate, the policy, a replay and the sink; together every refusing gate is audited."""
    gates: set[str] = {r[2] for r in REFUSALS}
    cases: list[tuple[Harness, Assign, str]] = []
    h = Harness(pool=pool, state_dir=tmp_path / "b", binaries=FailingBinaries())
    cases.append((h, assignment(seal(pool, spec_yaml())), "binaries"))
    h = Harness(pool=pool, state_dir=tmp_path / "i", clock=lambda: ISSUED + timedelta(days=3))
    cases.append((h, assignment(seal(pool, spec_yaml())), "identity"))
    h = Harness(pool=pool, state_dir=tmp_path / "p", policy=deny_prod_db)
    cases.append((h, assignment(seal(pool, spec_yaml(stack="prod-db"))), "policy"))
    for harness, assign, gate in cases:
        harness.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            status = harness.run(assign)
        finally:
            if harness.replay is not None:
                harness.replay.close()
        assert status.state == "REFUSED"
        (refused,) = [e for e in harness.audit.events if e.type == "run.refused"]
        assert (refused.gate, refused.run_id, refused.reason) == (gate, RUN, status.reason)
        gates.add(gate)
    assert gates >= {"binaries", "identity", "policy", "envelope"}


def test_a_sink_that_cannot_be_made_refuses_the_run_at_execute(harness: Harness) -> None:
    gated = harness.gated_run()

    def broken(*_args: Any) -> LogSink:
        raise InfrastructureError("no space for the run's log", reason="log_sink_unavailable")

    gated = dataclasses.replace(gated, sink_factory=broken)
    context = RunContext(
        cancel=harness.cancel,
        on_started=lambda _c: None,
        request_more=lambda _n: None,
        on_sink=lambda _s: None,
    )
    status = gated(assignment(seal(harness.pool, spec_yaml())), context)
    assert (status.state, status.reason) == ("REFUSED", "log_sink_unavailable")
    (refused,) = [e for e in harness.audit.events if e.type == "run.refused"]
    assert refused.gate == "execute"
    assert harness.runner.calls == []


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_altered_ticket_byte_is_refused(pool: Pool, position: int, flip: int) -> None:
    sealed = seal(pool, spec_yaml())
    good = assignment(sealed)
    ticket = bytearray(good.ticket)
    ticket[position % len(ticket)] ^= flip
    signer = pool.signer.public_key()
    with pytest.raises(TicketError) as caught:
        verify_ticket(
            bytes(ticket),
            good.ticket_signature,
            signer_public_key=signer,
            run_id=RUN,
            pool_id=POOL,
            worker_id="launcher-t",
            lease_id="lease-1",
        )
    assert caught.value.reason == "ticket_signature_invalid"


def test_proofs_are_made_by_their_gates_only() -> None:
    with pytest.raises(TypeError, match=r"pipeline\.py"):
        pipeline.PolicyAllowed(seal=object(), identity=None, decision=None)  # type: ignore[arg-type]


def test_status_outputs_fit_the_protocol_and_say_when_some_did_not() -> None:
    from hardened_launcher.launcher.gates import status_for_result  # noqa: PLC0415
    from hardened_launcher.transport.messages import MAX_STATUS_OUTPUTS_B64_CHARS  # noqa: PLC0415

    big = b"x" * (MAX_STATUS_OUTPUTS_B64_CHARS // 4 * 3 - 3)
    result = RunResult(
        run_id="run-1",
        container_id="c",
        exit_code=0,
        stopped_by=StopReason.EXITED,
        duration_seconds=1.0,
        output_bytes=1,
        outputs={"a.txt": b"small", "b.bin": big, "c.txt": b"more"},
    )
    status = status_for_result(result)
    assert status.outputs_truncated
    assert status.output_files()["a.txt"] == b"small"
    assert sum(len(v) for v in status.outputs.values()) <= MAX_STATUS_OUTPUTS_B64_CHARS
    assert len(wire_json(status)) < 1024 * 1024
    whole = status_for_result(dataclasses.replace(result, outputs={"a.txt": b"small"}))
    assert not whole.outputs_truncated
    assert whole.output_files() == {"a.txt": b"small"}


def wire_json(body: Any) -> bytes:
    from hardened_launcher.transport.messages import MessageStream  # noqa: PLC0415

    return MessageStream().next(body).to_json()
