"""The run pipeline (DESIGN.md §2): the one module that composes the gates.

For now it composes gate 2 (binaries) → gate 3 (policy) → gate 5 (execute); the credentials,
envelope and egress gates join here as they land. Each gate returns a proof the next one needs,
or raises a :class:`~hardened_launcher.errors.LauncherError` that stops the run; every decision
is recorded to the :class:`~hardened_launcher.audit.AuditSink`. Nothing executes unless every
gate passed, and the run spec's secrets are wiped when the pipeline returns, whatever happened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from hardened_launcher import __version__
from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.audit.events import FieldValue
from hardened_launcher.binaries import VerifiedBinary, VerifiedBinaryCache, verify_binary
from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.container_spec import (
    WORKER_NAME,
    build_container_spec,
    check_extra_mounts,
)
from hardened_launcher.executor.errors import BinaryUnavailableError
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.logsink import FileLogSink, LogSink, TeeLogSink
from hardened_launcher.executor.redaction_port import RedactorLike, add_secret
from hardened_launcher.executor.runner import RunResult
from hardened_launcher.executor.runspec import RunSpec
from hardened_launcher.policy import (
    LauncherFacts,
    PolicyDecision,
    PolicyEvaluationError,
    PolicyGate,
    Sanitizer,
    build_input,
)
from hardened_launcher.policy.input import JSONValue
from hardened_launcher.policy.startup import compile_configured_policy
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.canary import LeakDetectedError, verify_log_clean
from hardened_launcher.redaction.sources import launcher_secret_values
from hardened_launcher.secrets import Secret
from hardened_launcher.settings import Settings

__all__ = [
    "BinaryGate",
    "PolicyCheck",
    "PolicyStep",
    "ReleaseDirectory",
    "Runner",
    "run_pipeline",
    "start_policy_step",
]

log = logging.getLogger(__name__)

_SIGNATURE_SUFFIXES: Final = ("SHA256SUMS.sig", "SHA256SUMS.asc")


class Runner(Protocol):
    """Gate 5's effects; the real one is :class:`~.executor.runner.DockerRunner`."""

    def run(
        self,
        container: Any,  # noqa: ANN401 - ContainerSpec; Any keeps fakes light
        instructions: bytearray,
        *,
        redactor: RedactorLike,
        sink: LogSink,
        cancel: threading.Event | None = None,
        on_started: Callable[[str], None] | None = None,
    ) -> RunResult: ...


@dataclass(frozen=True, kw_only=True)
class ReleaseDirectory:
    """Signed releases on disk: ``<root>/<name>/<version>/{<name>, SHA256SUMS, SHA256SUMS.sig}``.

    The signature may also be armored, as ``SHA256SUMS.asc``.
    """

    root: Path

    def locate(self, name: str, version: str) -> tuple[Path, Path, Path]:
        directory = self.root / name / version
        binary, sums = directory / name, directory / "SHA256SUMS"
        signature = next(
            (directory / s for s in _SIGNATURE_SUFFIXES if (directory / s).is_file()), None
        )
        if not binary.is_file() or not sums.is_file() or signature is None:
            raise BinaryUnavailableError(
                f"the release {name} {version} is not complete in {self.root}",
                hint=f"put {name}, SHA256SUMS and SHA256SUMS.sig (or .asc) in {directory}",
            )
        return binary, sums, signature


@dataclass(frozen=True, kw_only=True)
class BinaryGate:
    """Gate 2 for runs: locate a release, verify it against pinned keys, admit it to the cache."""

    releases: ReleaseDirectory
    keyring: Keyring | Path
    pins: Sequence[str]
    cache: VerifiedBinaryCache
    max_clock_skew: timedelta = timedelta(minutes=5)

    def verify(
        self, name: str, version: str, *, run_id: str, audit: AuditSink | None
    ) -> VerifiedBinary:
        binary, sums, signature = self.releases.locate(name, version)
        proof = verify_binary(
            binary,
            sums=sums,
            signature=signature,
            keyring=self.keyring,
            pins=self.pins,
            name=name,
            max_clock_skew=self.max_clock_skew,
            audit=audit,
            run_id=run_id,
        )
        return self.cache.admit(binary, proof)


def _record(
    audit: AuditSink,
    kind: str,
    outcome: Outcome,
    *,
    gate: str,
    run_id: str,
    reason: str | None = None,
    **fields: FieldValue,
) -> None:
    audit.record(
        AuditEvent(
            type=kind, outcome=outcome, gate=gate, run_id=run_id, reason=reason, fields=fields
        )
    )


@dataclass(frozen=True, kw_only=True)
class PolicyStep:
    """Gate 3 as the pipeline runs it: the compiled policy's gate, and how to build its input."""

    gate: PolicyCheck
    sanitizer: Sanitizer
    launcher: LauncherFacts

    def close(self) -> None:
        self.gate.close()


class PolicyCheck(Protocol):
    """:class:`~hardened_launcher.policy.PolicyGate` (audits its own decisions)."""

    def check(
        self, document: Mapping[str, JSONValue], *, run_id: str | None = None
    ) -> PolicyDecision: ...

    def close(self) -> None: ...


def start_policy_step(
    settings: Settings,
    *,
    sanitizer: Sanitizer,
    pool_id: str,
    worker_id: str,
    audit: AuditSink | None,
) -> PolicyStep | None:
    """Compile the configured policy and start its gate (isolated, with the configured timeout).

    None when no policy is configured; :class:`~hardened_launcher.policy.PolicyCompileError`
    when it does not compile. The caller closes the step.
    """
    compiled = compile_configured_policy(settings, sanitizer)
    if compiled is None:
        return None
    gate = PolicyGate.start(
        compiled,
        sanitizer=sanitizer,
        timeout_s=settings.policy_timeout.total_seconds(),
        audit=audit,
    )
    facts = LauncherFacts(
        pool_id=pool_id, worker_id=worker_id, version=__version__, metadata=dict(settings.metadata)
    )
    return PolicyStep(gate=gate, sanitizer=sanitizer, launcher=facts)


#: Run spec metadata entries that fill the same-named ``static_run_environment`` fields.
STATIC_METADATA_KEYS: Final = (
    "account_name",
    "stack_slug",
    "commit_branch",
    "commit_sha",
    "project_root",
    "repository_path",
    "terraform_version",
)


def policy_metadata(
    spec: RunSpec, *, worker_version: str, environment: Mapping[str, str | Secret]
) -> dict[str, object]:
    """The run's metadata in the documented input shape; secret values stay ``Secret``s here
    and become their sanitized form in :func:`~hardened_launcher.policy.build_input`."""
    static: dict[str, object] = {
        "run_type": spec.run_type,
        "environment_variables": dict(environment),
    }
    for phase in spec.phases:
        static["command" if phase.name == "main" else phase.name] = list(phase.commands)
    # Documented fields the control plane puts in the (signed, sealed) spec's metadata.
    for key in STATIC_METADATA_KEYS:
        if key in spec.metadata:
            static[key] = spec.metadata[key]
    return {
        "docker_image": spec.image,
        "worker_version": worker_version,
        "run": {
            "id": spec.run_id,
            "user_provided_metadata": [f"{k}={v}" for k, v in sorted(spec.metadata.items())],
        },
        "static_run_environment": static,
    }


def _policy_gate(
    policy: PolicyStep | None,
    spec: RunSpec,
    *,
    worker_version: str,
    environment: Mapping[str, str | Secret],
    binaries: Sequence[VerifiedBinary],
    audit: AuditSink,
) -> PolicyDecision | None:
    if policy is None:
        _record(audit, "policy.skipped", Outcome.INFO, gate="policy", run_id=spec.run_id)
        return None
    try:
        document = build_input(
            policy_metadata(spec, worker_version=worker_version, environment=environment),
            launcher=policy.launcher,
            sanitizer=policy.sanitizer,
            binaries=binaries,
        )
    except LauncherError as exc:
        _record(
            audit,
            "policy.failed",
            Outcome.ERROR,
            gate="policy",
            run_id=spec.run_id,
            reason=exc.reason,
        )
        raise
    try:
        decision = policy.gate.check(document, run_id=spec.run_id)
    except LauncherError:
        raise  # the gate recorded its own decision
    except Exception as exc:  # noqa: BLE001 - any other failure of the gate denies (fail closed)
        _record(
            audit,
            "policy.failed",
            Outcome.ERROR,
            gate="policy",
            run_id=spec.run_id,
            reason="policy_evaluation_error",
            error=type(exc).__name__,
        )
        raise PolicyEvaluationError(
            "the run initialization policy failed to evaluate, so the run is refused",
            hint="run `hardened-launcher policy test` against the policy",
            detail=type(exc).__name__,
        ) from None
    if not isinstance(decision, PolicyDecision):  # a gate must return the proof or raise
        raise PolicyEvaluationError(
            "the policy gate returned no decision, so the run is refused",
            hint="this is a bug in the policy gate; please report it",
        )
    return decision


def _stored_logs(sink: LogSink) -> list[Path]:
    if isinstance(sink, FileLogSink):
        return [sink.path]
    if isinstance(sink, TeeLogSink):
        return [path for inner in sink.sinks for path in _stored_logs(inner)]
    return []


def _canary_scan(
    sink: LogSink, redactor: RedactorLike, *, settings: Settings, run_id: str, audit: AuditSink
) -> None:
    """Scan the stored log once more for every variant; a hit quarantines it and fails the run.

    Only a stored log (a file) can be scanned, and only with the real redactor, which knows the
    variants; other sinks are streams that have already left the launcher.
    """
    if not isinstance(redactor, Redactor):
        return
    stored = _stored_logs(sink)
    if not stored:
        return
    try:
        for path in stored:
            verify_log_clean(path, redactor, quarantine_dir=settings.state_dir / "quarantine")
    except LeakDetectedError as exc:
        _record(
            audit,
            "run.leak_detected",
            Outcome.DENY,
            gate="execute",
            run_id=run_id,
            reason=exc.reason,
            variables=tuple(sorted(exc.counts)),
        )
        raise
    _record(audit, "run.log_clean", Outcome.ALLOW, gate="execute", run_id=run_id)


def run_pipeline(
    spec: RunSpec,
    *,
    settings: Settings,
    launcher_id: str,
    worker_version: str,
    binaries: BinaryGate,
    policy: PolicyStep | None,
    runner: Runner,
    redactor: RedactorLike,
    sink: LogSink,
    audit: AuditSink,
    environ: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    on_started: Callable[[str], None] | None = None,
) -> RunResult:
    """Run ``spec`` through binaries → policy → execute. Wipes the spec's secrets at the end.

    ``environ`` supplies the values of ``SPACELIFT_WHITELIST_ENVS`` (the launcher's own
    environment by default is the caller's choice; nothing is read here implicitly).
    """
    run_id = spec.run_id
    extra_env: dict[str, Secret] = {}
    handed_over = False  # once the runner has the sink, the runner closes it
    try:
        check_extra_mounts(settings)
        # Gate 2: the worker program and every binary the run asks for.
        worker = binaries.verify(WORKER_NAME, worker_version, run_id=run_id, audit=audit)
        verified = [
            binaries.verify(b.name, b.version, run_id=run_id, audit=audit) for b in spec.binaries
        ]
        _record(
            audit,
            "binaries.passed",
            Outcome.ALLOW,
            gate="binaries",
            run_id=run_id,
            count=len(verified) + 1,
        )
        for name in settings.whitelisted_env_names_for(spec.run_type):
            value = (environ or {}).get(name)
            if value is not None:
                extra_env[name] = Secret(value)
        # Gate 3: policy sees metadata only; secret values appear in sanitized form.
        environment: dict[str, str | Secret] = dict(spec.env)
        environment.update(
            (name, secret if name in settings.mask_envs else secret.reveal_text())
            for name, secret in extra_env.items()
        )
        environment.update(spec.secret_env)
        _policy_gate(
            policy,
            spec,
            worker_version=worker_version,
            environment=environment,
            binaries=[worker, *verified],
            audit=audit,
        )
        # Gate 5: execute.
        # Masked in the run's output: the launcher's own credentials and SPACELIFT_MASK_ENVS
        # values, the run's secret variables, and masked whitelisted variables.
        for variable, secret_value in launcher_secret_values(environ or {}):
            redactor.add(variable, secret_value)
        for name, secret in spec.secrets():
            add_secret(redactor, name, secret)
        for name, secret in extra_env.items():
            if name in settings.mask_envs:
                add_secret(redactor, f"env:{name}", secret)
        container = build_container_spec(
            spec, settings, launcher_id=launcher_id, worker=worker, binaries=verified
        )
        instructions = encode_instructions(spec, extra_env=extra_env)
        _record(
            audit, "run.started", Outcome.ALLOW, gate="execute", run_id=run_id, image=spec.image
        )
        handed_over = True
        try:
            result = runner.run(
                container,
                instructions,
                redactor=redactor,
                sink=sink,
                cancel=cancel,
                on_started=on_started,
            )
        except LauncherError as exc:
            _record(
                audit, "run.failed", Outcome.ERROR, gate="execute", run_id=run_id, reason=exc.reason
            )
            raise
        _record(
            audit,
            "run.finished",
            Outcome.INFO if result.succeeded else Outcome.ERROR,
            gate="execute",
            run_id=run_id,
            reason=result.reason,
            exit_code=result.exit_code,
            seconds=round(result.duration_seconds, 3),
            output_bytes=result.output_bytes,
            redactions=tuple(
                f"{name}={count}" for name, count in sorted(redactor.counts().items())
            ),
        )
        _canary_scan(sink, redactor, settings=settings, run_id=run_id, audit=audit)
        return result
    finally:
        if not handed_over:
            sink.close()
        spec.wipe()
        for secret in extra_env.values():
            secret.wipe()
