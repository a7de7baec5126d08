"""The run pipeline (DESIGN.md §2): the one module that composes the gates.

For now it composes gate 2 (binaries) → gate 3 (policy) → gate 6 (egress, when a policy is
configured) → gate 5 (execute); the credentials and envelope gates join here as they land. Each
gate returns a proof the next one needs, or raises a
:class:`~hardened_launcher.errors.LauncherError` that stops the run; every decision is recorded
to the :class:`~hardened_launcher.audit.AuditSink`. Nothing executes unless every gate passed,
and the run spec's secrets are wiped when the pipeline returns, whatever happened.

Gate 6 wraps gate 5: the run's egress session (its own internal network and proxy) is opened
before the container is created and closed after the container is removed, whatever happened;
every egress decision goes to the audit sink and, as a ``::hl:: egress:`` line, to the run's log.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
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
from hardened_launcher.egress.errors import EgressPolicyError
from hardened_launcher.egress.isolation import EgressIsolationError, EgressSession
from hardened_launcher.egress.policy import EgressPolicy, load_policy
from hardened_launcher.egress.proxy import Connector, EgressDecision, ProxyLimits, Resolver
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.container_spec import (
    WORKER_NAME,
    NetworkPlan,
    build_container_spec,
    check_extra_mounts,
)
from hardened_launcher.executor.errors import BinaryUnavailableError, LimitRefusedError
from hardened_launcher.executor.images import with_default_image
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.limits import check_run_limits
from hardened_launcher.executor.logsink import Channel, FileLogSink, LogSink, TeeLogSink
from hardened_launcher.executor.redaction_port import RedactorLike, add_secret, add_secrets
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
    "EgressSessionLike",
    "EgressStep",
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


# ---------------------------------------------------------------------------------------------
# Gate 6: egress
# ---------------------------------------------------------------------------------------------
#: Marks the launcher's egress lines in the run's log, like the worker's phase markers.
EGRESS_LOG_PREFIX: Final = "::hl:: "


class EgressSessionLike(Protocol):
    """:class:`~hardened_launcher.egress.isolation.EgressSession` as the pipeline uses it."""

    @property
    def network_name(self) -> str: ...

    @property
    def proxy_env(self) -> Mapping[str, str]: ...

    def host_config_overrides(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class SessionOpener(Protocol):
    """:meth:`EgressSession.for_run <hardened_launcher.egress.isolation.EgressSession.for_run>`."""

    def __call__(
        self,
        run_id: str,
        policy: EgressPolicy,
        *,
        docker_client: Any,  # noqa: ANN401 - docker SDK
        launcher_id: str,
        audit: AuditSink | None,
        on_decision: Callable[[EgressDecision], None] | None,
        resolver: Resolver | None,
        connector: Connector | None,
        limits: ProxyLimits | None,
    ) -> EgressSessionLike: ...


def _open_egress_session(
    run_id: str,
    policy: EgressPolicy,
    *,
    docker_client: Any,  # noqa: ANN401 - docker SDK
    launcher_id: str,
    audit: AuditSink | None,
    on_decision: Callable[[EgressDecision], None] | None,
    resolver: Resolver | None,
    connector: Connector | None,
    limits: ProxyLimits | None,
) -> EgressSessionLike:
    return EgressSession.for_run(
        run_id,
        policy,
        docker_client=docker_client,
        launcher_id=launcher_id,
        audit=audit,
        on_decision=on_decision,
        resolver=resolver,
        connector=connector,
        limits=limits,
    )


@dataclass(frozen=True, kw_only=True)
class EgressStep:
    """Gate 6 as the pipeline runs it: the Docker daemon where run networks are made and,
    optionally, the pool's policy already loaded.

    Without ``policy`` the pipeline loads ``settings.egress_policy`` (``HL_EGRESS_POLICY``) once
    per run. Either way the pool's private VCS endpoints are added to it. ``resolver``,
    ``connector`` and ``limits`` go to the run's proxy (defaults: the host's resolver, plain
    TCP, :class:`~hardened_launcher.egress.proxy.ProxyLimits`); ``open_session`` is the seam
    for tests.
    """

    docker_client: Any
    policy: EgressPolicy | None = None
    resolver: Resolver | None = None
    connector: Connector | None = None
    limits: ProxyLimits | None = None
    open_session: SessionOpener = _open_egress_session


class _RedactingAudit:
    """Redacts the string fields of egress events (a run may put a secret in a host name)."""

    def __init__(self, inner: AuditSink, redactor: RedactorLike) -> None:
        self._inner = inner
        self._redactor = redactor

    def _field(self, value: FieldValue) -> FieldValue:
        if isinstance(value, str):
            return self._redactor.redact_text(value)
        if isinstance(value, tuple):
            return tuple(self._redactor.redact_text(v) if isinstance(v, str) else v for v in value)
        return value

    def record(self, event: AuditEvent) -> None:
        self._inner.record(
            dataclasses.replace(
                event,
                reason=None if event.reason is None else self._redactor.redact_text(event.reason),
                fields={k: self._field(v) for k, v in event.fields.items()},
            )
        )


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a host name cannot start a line of its own."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


class EgressRunLog:
    """The run's log sink, shared by the runner and the run's egress proxy.

    The runner writes the run's output from the pipeline's thread; egress decisions arrive from
    the proxy's loop thread. A lock orders both. Decision lines go through the run's redactor
    (host names are chosen by the run, so they may hold a secret) and have control characters
    escaped, so a host name cannot forge a line of its own.

    A decision line never cuts a line of the run's output: while the output is in the middle of
    a line, decisions wait for its end (at most ``max_defer_seconds``, checked at the next write
    or decision, and never past the end of the output).

    The runner's ``close`` leaves the inner sink open: decisions still arrive while the session
    closes (tunnels that were open when the container went away). :meth:`finish` closes it,
    once; a decision after that is counted but not written (the audit sink has it).
    """

    def __init__(
        self,
        inner: LogSink,
        redactor: RedactorLike,
        *,
        max_defer_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._redactor = redactor
        self._max_defer = max_defer_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._at_line_start = True
        self._output_done = False
        self._finished = False
        self._pending: list[bytes] = []
        self._pending_since = 0.0
        self.allowed = 0
        self.denied = 0
        self.errors = 0
        self.unlogged = 0

    # -- under the lock ---------------------------------------------------------------------
    def _emit(self, channel: Channel, data: bytes) -> None:
        self._inner.write(channel, data)
        self._at_line_start = data.endswith(b"\n")

    def _flush_pending(self, *, force: bool = False) -> None:
        if not self._pending:
            return
        waiting = not (force or self._at_line_start or self._output_done)
        if waiting and self._clock() - self._pending_since < self._max_defer:
            return
        lines = b"".join(self._pending)
        self._pending.clear()
        self._emit("stderr", lines if self._at_line_start else b"\n" + lines)

    # -- the LogSink the runner sees -------------------------------------------------------------
    def write(self, channel: Channel, data: bytes) -> None:
        with self._lock:
            if self._pending and not self._at_line_start:
                end = data.find(b"\n")
                if end >= 0:  # the run's line ends here: then the decisions that waited for it
                    head, data = data[: end + 1], data[end + 1 :]
                    self._emit(channel, head)
            self._flush_pending()
            if data:
                self._emit(channel, data)

    def close(self) -> None:
        """The runner is done with the sink (the output is complete); :meth:`finish` closes it."""
        with self._lock:
            self._output_done = True
            self._flush_pending(force=True)

    # -- the proxy's side ------------------------------------------------------------------------
    def decision(self, decision: EgressDecision) -> None:
        """``on_decision`` of the run's proxy. Never raises (it runs inside the proxy)."""
        try:
            text = _printable(self._redactor.redact_text(decision.log_line()))
            line = f"{EGRESS_LOG_PREFIX}{text}\n".encode("utf-8", "replace")
            with self._lock:
                if decision.outcome is Outcome.ALLOW:
                    self.allowed += 1
                elif decision.outcome is Outcome.DENY:
                    self.denied += 1
                else:
                    self.errors += 1
                if self._finished:
                    self.unlogged += 1
                    return
                if not self._pending:
                    self._pending_since = self._clock()
                self._pending.append(line)
                self._flush_pending()
        except Exception:  # a log failure must not break the run's proxy
            log.warning("egress.run_log_write_failed run_id=%s", decision.run_id, exc_info=True)

    def finish(self) -> None:
        """Write what still waits and close the inner sink (once)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            try:
                self._flush_pending(force=True)
            finally:
                self._inner.close()


def _egress_policy(
    settings: Settings, egress: EgressStep | None, *, run_id: str, audit: AuditSink
) -> EgressPolicy | None:
    """The run's egress policy (the pool's plus private VCS endpoints), or None without one."""
    preloaded = None if egress is None else egress.policy
    if settings.egress_policy is None and preloaded is None:
        return None
    try:
        if egress is None:
            raise EgressIsolationError(
                "an egress policy is configured (HL_EGRESS_POLICY) but the run has no egress "
                "gate, so it is refused",
                hint="this is a bug in the caller: run_pipeline needs egress=EgressStep(...)",
            )
        if preloaded is not None:
            policy = preloaded
        else:
            assert settings.egress_policy is not None  # noqa: S101 - checked above
            policy = load_policy(settings.egress_policy)
        try:
            return policy.with_private_vcs(settings.privatevcs_mappings)
        except ValueError as exc:
            raise EgressPolicyError(
                "cannot add the private VCS endpoints to the egress policy",
                hint="check SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_<n>",
                detail=str(exc)[:300],
            ) from None
    except LauncherError as exc:
        _record(
            audit, "egress.failed", Outcome.ERROR, gate="egress", run_id=run_id, reason=exc.reason
        )
        raise


_HOST_CONFIG_KEYS: Final = frozenset({"network_mode", "dns", "dns_search", "dns_opt"})


def network_plan(session: EgressSessionLike) -> NetworkPlan:
    """The container's network from the run's egress session (strict: an override this does
    not know would be silently lost, so it is refused)."""
    overrides = session.host_config_overrides()
    unknown = set(overrides) - _HOST_CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown egress host config keys {sorted(unknown)}")
    return NetworkPlan(
        network_mode=str(overrides["network_mode"]),
        dns=tuple(str(a) for a in overrides.get("dns", ())),
        dns_search=tuple(str(a) for a in overrides.get("dns_search", ())),
        dns_options=tuple(str(a) for a in overrides.get("dns_opt", ())),
        environment=dict(session.proxy_env),
    )


def _open_egress(
    egress: EgressStep,
    policy: EgressPolicy,
    *,
    run_id: str,
    launcher_id: str,
    audit: AuditSink,
    redactor: RedactorLike,
    run_log: EgressRunLog,
) -> EgressSessionLike:
    try:
        return egress.open_session(
            run_id,
            policy,
            docker_client=egress.docker_client,
            launcher_id=launcher_id,
            audit=_RedactingAudit(audit, redactor),
            on_decision=run_log.decision,
            resolver=egress.resolver,
            connector=egress.connector,
            limits=egress.limits,
        )
    except LauncherError as exc:
        _record(
            audit, "egress.failed", Outcome.ERROR, gate="egress", run_id=run_id, reason=exc.reason
        )
        raise
    except Exception as exc:
        _record(
            audit,
            "egress.failed",
            Outcome.ERROR,
            gate="egress",
            run_id=run_id,
            reason="egress_isolation_failed",
            error=type(exc).__name__,
        )
        raise EgressIsolationError(
            "cannot set up the run's egress isolation",
            hint="check that dockerd is running and the launcher may change the host firewall",
            detail=f"{type(exc).__name__}: {str(exc)[:300]}",
        ) from exc


def _close_egress(
    session: EgressSessionLike, run_log: EgressRunLog, *, run_id: str, audit: AuditSink
) -> None:
    """Close the session (after the container is removed), then the run's log; record the
    session's totals. Never raises: the run's outcome stands, a failure is audited."""
    failure: str | None = None
    try:
        session.close()
    except Exception as exc:  # recorded below; leftovers are the cleaner's job
        failure = type(exc).__name__
        log.warning("egress.session_close_failed run_id=%s", run_id, exc_info=True)
    try:
        run_log.finish()
    finally:
        fields: dict[str, FieldValue] = {
            "network": session.network_name,
            "allowed": run_log.allowed,
            "denied": run_log.denied,
            "errors": run_log.errors,
        }
        if run_log.unlogged:
            fields["unlogged"] = run_log.unlogged
        if failure is not None:
            fields["error"] = failure
        _record(
            audit,
            "egress.session",
            Outcome.INFO if failure is None else Outcome.ERROR,
            gate="egress",
            run_id=run_id,
            reason=None if failure is None else "egress_close_failed",
            **fields,
        )


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


def _check_limits(spec: RunSpec, settings: Settings, *, audit: AuditSink) -> None:
    """A spec asking for more than the operator allows is refused before any gate works."""
    try:
        check_run_limits(spec, settings)
    except LimitRefusedError as exc:
        _record(
            audit,
            "run.refused",
            Outcome.DENY,
            gate="execute",
            run_id=spec.run_id,
            reason=exc.reason,
        )
        raise


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
    egress: EgressStep | None = None,
) -> RunResult:
    """Run ``spec`` through binaries → policy → egress → execute. Wipes the spec's secrets at
    the end.

    ``environ`` supplies the values of ``SPACELIFT_WHITELIST_ENVS`` (the launcher's own
    environment by default is the caller's choice; nothing is read here implicitly).

    Gate 6 runs when ``settings.egress_policy`` is set (or ``egress`` holds a policy): the run
    gets its own egress session, which ``egress`` says how to open; a configured policy
    without ``egress`` refuses the run. Without a policy the container joins
    ``SPACELIFT_WORKER_NETWORK``, as before.
    """
    run_id = spec.run_id
    extra_env: dict[str, Secret] = {}
    handed_over = False  # once the runner has the sink, the runner closes it
    session: EgressSessionLike | None = None
    run_log: EgressRunLog | None = None
    try:
        check_extra_mounts(settings)
        spec = with_default_image(spec, settings)  # SPACELIFT_DEFAULT_RUNNER_IMAGE
        _check_limits(spec, settings, audit=audit)
        egress_policy = _egress_policy(settings, egress, run_id=run_id, audit=audit)
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
        add_secrets(redactor, spec.secrets())  # each value of a secret file on its own too
        for name, secret in extra_env.items():
            if name in settings.mask_envs:
                add_secret(redactor, f"env:{name}", secret)
        # Gate 6: the run's own network and proxy, open before the container exists.
        network: NetworkPlan | None = None
        if egress_policy is not None:
            assert egress is not None  # noqa: S101 - _egress_policy refuses a policy without it
            run_log = EgressRunLog(sink, redactor)
            session = _open_egress(
                egress,
                egress_policy,
                run_id=run_id,
                launcher_id=launcher_id,
                audit=audit,
                redactor=redactor,
                run_log=run_log,
            )
            try:
                network = network_plan(session)
            except ValueError as exc:
                raise EgressIsolationError(
                    "the run's egress session gave a network the container cannot use",
                    hint="this is a bug in the egress session; please report it",
                    detail=str(exc)[:300],
                ) from None
        container = build_container_spec(
            spec,
            settings,
            launcher_id=launcher_id,
            worker=worker,
            binaries=verified,
            network=network,
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
                sink=sink if run_log is None else run_log,
                cancel=cancel,
                on_started=on_started,
            )
        except LauncherError as exc:
            _record(
                audit, "run.failed", Outcome.ERROR, gate="execute", run_id=run_id, reason=exc.reason
            )
            raise
        # The container is gone: close the run's egress (its last decisions reach the log).
        if session is not None and run_log is not None:
            closing, session = session, None
            _close_egress(closing, run_log, run_id=run_id, audit=audit)
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
        try:
            if session is not None and run_log is not None:
                # Whatever happened: the container is gone (the runner removes it) or was never
                # created, so the run's network and proxy go too.
                _close_egress(session, run_log, run_id=run_id, audit=audit)
            if run_log is not None:
                run_log.finish()  # the inner sink, once, whoever had it
            elif not handed_over:
                sink.close()
        finally:
            spec.wipe()
            for secret in extra_env.values():
                secret.wipe()
