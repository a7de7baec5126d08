"""The run pipeline (DESIGN.md §2): the one module that composes the gates, in the mission's order.

Every run the launcher receives goes through, failing closed at each:

1. **binaries** — the worker program and every binary the run names, verified against signed
   SHA256SUMS by pinned keys (:func:`verify_binaries` → :class:`BinariesVerified`);
2. **identity** — the pool certificate valid now, and the run's ticket signed by the control
   plane for this pool, this worker and this lease (:func:`prove_identity` →
   :class:`IdentityProved`);
3. **policy** — the run initialization policy judges the signed, non-secret manifest
   (:func:`evaluate_policy` → :class:`PolicyAllowed`);
4. **envelope** — only then is the sealed run state decrypted, in memory, and it must be
   exactly what the policy judged (:func:`open_envelope` → :class:`RunOpened`);
5. **execute** — a hardened container, every output stream redacted, with
6. **egress** — its own network and allowlisting proxy around it (:func:`execute`).

Each gate's entry point takes the previous gate's proof, so a call out of order does not type
check, and only this module can make a proof. The daemon calls :func:`run_assignment`; ``exec``
calls :func:`run_pipeline` (a local, plaintext spec: no identity or envelope to check, which the
audit log records). Every refusal, at any gate, is one ``run.refused`` audit record with the
run id, the gate and the reason (beside the gate's own events), and raises :class:`RunRefused`;
nothing executes unless every gate passed, and the spec's secrets are wiped at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hardened_launcher import __version__
from hardened_launcher.audit import AuditEvent, AuditSink, Outcome
from hardened_launcher.audit.events import FieldValue
from hardened_launcher.binaries import VerifiedBinary, VerifiedBinaryCache, verify_binary
from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.egress.errors import EgressPolicyError
from hardened_launcher.egress.isolation import EgressIsolationError, EgressSession
from hardened_launcher.egress.policy import EgressPolicy, load_policy, resolve_private_source
from hardened_launcher.envelope import ReplayCache, open_run_state
from hardened_launcher.envelope.plan import PlanArtifactError, open_plan, seal_plan
from hardened_launcher.envelope.ticket import (
    RunManifest,
    TicketError,
    VerifiedTicket,
    check_spec_matches,
    manifest_from_spec,
    sanitize_key_id,
    verify_ticket,
)
from hardened_launcher.errors import LauncherError, UntrustedInputError
from hardened_launcher.executor.container_spec import (
    WORKER_NAME,
    NetworkPlan,
    build_container_spec,
    check_extra_mounts,
)
from hardened_launcher.executor.errors import BinaryUnavailableError, ImageUnsetError
from hardened_launcher.executor.images import with_default_image
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.limits import check_limits
from hardened_launcher.executor.logsink import Channel, FileLogSink, LogSink, TeeLogSink
from hardened_launcher.executor.redaction_port import RedactorLike, add_secrets
from hardened_launcher.executor.runner import RunResult
from hardened_launcher.executor.runspec import RunLimits, RunSpec, parse_run_spec
from hardened_launcher.executor.source import GitSource
from hardened_launcher.identity import PoolIdentity, PoolPrivateKey
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
from hardened_launcher.steptimes import StepTimes

if TYPE_CHECKING:
    # Loaded with the first run that has an egress policy (egress/isolation.py).
    from hardened_launcher.egress.proxy import Connector, EgressDecision, ProxyLimits, Resolver

__all__ = [
    "Assignment",
    "BinariesVerified",
    "BinaryGate",
    "EgressSessionLike",
    "EgressStep",
    "EnvelopeKeys",
    "IdentityProved",
    "PolicyAllowed",
    "PolicyCheck",
    "PolicyStep",
    "ReleaseDirectory",
    "RunOpened",
    "RunRefused",
    "RunServices",
    "Runner",
    "evaluate_policy",
    "execute",
    "local_identity",
    "local_spec",
    "open_envelope",
    "prove_identity",
    "run_assignment",
    "run_pipeline",
    "start_policy_step",
    "verify_binaries",
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
        timer: StepTimes | None = None,
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


def _record_what_happened(
    audit: AuditSink,
    kind: str,
    outcome: Outcome,
    *,
    gate: str,
    run_id: str,
    reason: str | None = None,
    **fields: FieldValue,
) -> None:
    """Record a fact about a run that already happened (its container ran and exited).

    The audit log failing now (disk full) must not change what is reported: the run's outcome
    is what happened. The lost record is logged (``audit.record_lost``) and the log's own
    ``audit.log_recovered`` record marks the gap once it heals."""
    try:
        _record(audit, kind, outcome, gate=gate, run_id=run_id, reason=reason, **fields)
    except LauncherError as exc:
        if exc.reason != "audit_unavailable":
            raise
        log.warning("audit.record_lost type=%s run_id=%s", kind, run_id)


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
    manifest: RunManifest,
    *,
    worker_version: str,
    environment: Mapping[str, str | Secret],
    image: str | None = None,
) -> dict[str, object]:
    """The run's signed manifest in the documented input shape. Secret variables are already in
    their sanitized form (the sealer computed it under the pool's key); masked whitelisted
    variables are sanitized here, and any ``Secret`` left becomes its sanitized form in
    :func:`~hardened_launcher.policy.build_input`."""
    static: dict[str, object] = {
        "run_type": manifest.run_type,
        "environment_variables": dict(environment),
    }
    for name, commands in manifest.phases:
        static["command" if name == "main" else name] = list(commands)
    # Documented fields the control plane puts in the (signed) manifest's metadata.
    metadata = manifest.metadata
    for key in STATIC_METADATA_KEYS:
        if key in metadata:
            static[key] = metadata[key]
    source = manifest.source
    if source is not None:
        # The commit the worker must check out (it refuses the run otherwise): the policy judges
        # exactly what will run.
        static["source"] = dict(source)
        if "commit_sha" in source:
            static["commit_sha"] = source["commit_sha"]
            static["commit_branch"] = source["ref"]
    if manifest.stage is not None:
        # A half of a confirmed run (docs/runspec.md): "plan", or "apply" with the planning run
        # it applies. The control plane queues an applying run only on `run confirm`, and its
        # signed ticket binds the plan, so `stage == "apply"` means an operator confirmed it.
        static["stage"] = manifest.stage
    if manifest.plan_of is not None:
        static["plan_of"] = manifest.plan_of
    return {
        "docker_image": image or manifest.image,
        "worker_version": worker_version,
        "run": {
            "id": manifest.run_id,
            "user_provided_metadata": [f"{k}={v}" for k, v in sorted(metadata.items())],
        },
        "static_run_environment": static,
    }


def _policy_gate(
    policy: PolicyStep | None,
    manifest: RunManifest,
    *,
    image: str | None = None,
    worker_version: str,
    environment: Mapping[str, str | Secret],
    binaries: Sequence[VerifiedBinary],
    audit: AuditSink,
) -> PolicyDecision | None:
    if policy is None:
        _record(audit, "policy.skipped", Outcome.INFO, gate="policy", run_id=manifest.run_id)
        return None
    try:
        document = build_input(
            policy_metadata(
                manifest, worker_version=worker_version, environment=environment, image=image
            ),
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
            run_id=manifest.run_id,
            reason=exc.reason,
        )
        raise
    try:
        decision = policy.gate.check(document, run_id=manifest.run_id)
    except LauncherError:
        raise  # the gate recorded its own decision
    except Exception as exc:  # noqa: BLE001 - any other failure of the gate denies (fail closed)
        _record(
            audit,
            "policy.failed",
            Outcome.ERROR,
            gate="policy",
            run_id=manifest.run_id,
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
        docker_client: Any,  # noqa: ANN401 - docker_api.DockerClient, or a test's fake
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
    docker_client: Any,  # noqa: ANN401 - docker_api.DockerClient, or a test's fake
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
        _record_what_happened(  # the leak is reported whatever the audit log says
            audit,
            "run.leak_detected",
            Outcome.DENY,
            gate="execute",
            run_id=run_id,
            reason=exc.reason,
            variables=tuple(sorted(exc.counts)),
        )
        raise
    _record_what_happened(audit, "run.log_clean", Outcome.ALLOW, gate="execute", run_id=run_id)


# ---------------------------------------------------------------------------------------------
# The proofs: each gate's entry point takes the previous gate's proof, so mypy rejects a call
# out of order. Only this module makes them (the constructor checks a private seal).
# ---------------------------------------------------------------------------------------------
_SEAL: Final = object()


@dataclass(frozen=True, kw_only=True)
class _Proof:
    seal: object = dataclasses.field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seal is not _SEAL:
            raise TypeError(f"{type(self).__name__} is made by its gate in pipeline.py only")


@dataclass(frozen=True, kw_only=True)
class BinariesVerified(_Proof):
    """Gate 1: the worker program and every binary the run names verified and cached."""

    run_id: str
    manifest: RunManifest
    worker: VerifiedBinary
    requested: tuple[VerifiedBinary, ...]

    @property
    def all(self) -> tuple[VerifiedBinary, ...]:
        return (self.worker, *self.requested)


@dataclass(frozen=True, kw_only=True)
class IdentityProved(_Proof):
    """Gate 2: our certificate is valid now and the run was signed for this pool and worker
    (``ticket`` is None for a local ``exec`` run, which has no control plane)."""

    binaries: BinariesVerified
    ticket: VerifiedTicket | None

    @property
    def run_id(self) -> str:
        return self.binaries.run_id

    @property
    def manifest(self) -> RunManifest:
        return self.binaries.manifest


@dataclass(frozen=True, kw_only=True)
class PolicyAllowed(_Proof):
    """Gate 3: the run initialization policy allowed the manifest (``decision`` is None when
    no policy is configured: then the run is allowed and the audit log says so)."""

    identity: IdentityProved
    decision: PolicyDecision | None


@dataclass(frozen=True, kw_only=True)
class RunOpened(_Proof):
    """Gate 4: the run state, decrypted in memory, equal to the manifest the policy judged."""

    allowed: PolicyAllowed
    spec: RunSpec
    #: An applying run: the plan artifact its planning run made, checked (:func:`check_plan`).
    plan: Secret | None = None


class RunRefused(Exception):  # noqa: N818 - a refusal, not a bug: it carries the gate's error
    """A gate refused the run before anything executed; ``error`` is that gate's error."""

    def __init__(self, gate: str, error: LauncherError) -> None:
        super().__init__(f"{gate}: {error.reason}")
        self.gate = gate
        self.error = error


@contextmanager
def _gate(gate: str, run_id: str, audit: AuditSink) -> Iterator[None]:
    """Every refusal, whatever the gate and whether or not the gate recorded its own event,
    becomes one ``run.refused`` record with the run id, the gate and the reason."""
    try:
        yield
    except LauncherError as exc:
        _record(
            audit,
            "run.refused",
            Outcome.DENY if isinstance(exc, UntrustedInputError) else Outcome.ERROR,
            gate=gate,
            run_id=run_id,
            reason=exc.reason,
        )
        raise RunRefused(gate, exc) from exc


# -- gate 1: binaries ----------------------------------------------------------------------------
def verify_binaries(
    manifest: RunManifest,
    *,
    binaries: BinaryGate,
    worker_version: str,
    audit: AuditSink,
) -> BinariesVerified:
    """Gate 1: the worker program and the run's binaries, each against signed SHA256SUMS."""
    run_id = manifest.run_id
    worker = binaries.verify(WORKER_NAME, worker_version, run_id=run_id, audit=audit)
    requested = tuple(
        binaries.verify(name, version, run_id=run_id, audit=audit)
        for name, version in manifest.binaries
    )
    _record(
        audit,
        "binaries.passed",
        Outcome.ALLOW,
        gate="binaries",
        run_id=run_id,
        count=len(requested) + 1,
    )
    return BinariesVerified(
        seal=_SEAL, run_id=run_id, manifest=manifest, worker=worker, requested=requested
    )


# -- gate 2: identity ----------------------------------------------------------------------------
def prove_identity(
    binaries: BinariesVerified,
    *,
    identity: PoolIdentity,
    ticket: VerifiedTicket,
    worker_id: str,
    sanitizer: Sanitizer,
    now: datetime,
    audit: AuditSink,
) -> IdentityProved:
    """Gate 2: the pool certificate is valid now (chain and key were proved at start-up), and
    the run's signed ticket names this pool, this worker and the sanitize key we hold."""
    identity.recheck(now)
    if ticket.pool_id != identity.pool_id or ticket.worker_id != worker_id:
        raise TicketError(
            "the run ticket is for another pool or worker, so the run is refused",
            hint="the control plane assigned a run that is not this worker's; report it",
            reason="ticket_identity_mismatch",
        )
    if ticket.manifest.sanitize_key_id != sanitize_key_id(sanitizer):
        raise TicketError(
            "the run's secret variables were sanitized under another key than this launcher's, "
            "so the policy could not compare them",
            hint="use the token the control plane issued last (pool reset re-issues it), and "
            "unset HL_POLICY_SANITIZE_KEY when the token carries the pool's key",
            reason="sanitize_key_mismatch",
        )
    _record(
        audit,
        "identity.passed",
        Outcome.ALLOW,
        gate="identity",
        run_id=binaries.run_id,
        pool_id=identity.pool_id,
        worker_id=worker_id,
        lease_id=ticket.lease_id,
        certificate_sha256=identity.certificate_sha256.hex(),
        not_after=identity.not_after.isoformat(),
        envelope_sha256=ticket.envelope_sha256,
    )
    return IdentityProved(seal=_SEAL, binaries=binaries, ticket=ticket)


def local_identity(binaries: BinariesVerified, *, audit: AuditSink) -> IdentityProved:
    """Gate 2 for a local ``exec`` run: no control plane, no pool certificate to check."""
    _record(
        audit,
        "identity.skipped",
        Outcome.INFO,
        gate="identity",
        run_id=binaries.run_id,
        detail="local run spec (exec): no pool identity",
    )
    return IdentityProved(seal=_SEAL, binaries=binaries, ticket=None)


# -- gate 3: policy ------------------------------------------------------------------------------
def evaluate_policy(
    identity: IdentityProved,
    *,
    policy: PolicyStep | None,
    settings: Settings,
    worker_version: str,
    environ: Mapping[str, str],
    sanitizer: Sanitizer,
    audit: AuditSink,
) -> PolicyAllowed:
    """Gate 3: the policy judges the signed manifest, before any decryption."""
    manifest = identity.manifest
    environment: dict[str, str | Secret] = dict(manifest.env)
    for name in settings.whitelisted_env_names_for(manifest.run_type):
        value = environ.get(name)
        if value is not None:
            environment[name] = sanitizer.sanitize(value) if name in settings.mask_envs else value
    environment.update(manifest.secret_env)  # already in sanitized form
    # The launcher's own rules first: limits above the operator's are refused, never lowered
    # (before anything is decrypted), and the image that will run is the spec's, else
    # SPACELIFT_DEFAULT_RUNNER_IMAGE (or refused).
    check_limits(RunLimits(**manifest.document["limits"]), settings)
    image = manifest.image or settings.default_runner_image
    if image is None:
        raise ImageUnsetError(
            "the run names no image and SPACELIFT_DEFAULT_RUNNER_IMAGE is not set",
            hint="name an image in the run spec, or set SPACELIFT_DEFAULT_RUNNER_IMAGE",
        )
    decision = _policy_gate(
        policy,
        manifest,
        image=image,
        worker_version=worker_version,
        environment=environment,
        binaries=identity.binaries.all,
        audit=audit,
    )
    return PolicyAllowed(seal=_SEAL, identity=identity, decision=decision)


# -- gate 4: envelope ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EnvelopeKeys:
    """What gate 4 needs to open a run state sealed to this pool."""

    pool_private_key: PoolPrivateKey
    signer_public_key: Ed25519PublicKey
    replay_cache: ReplayCache


def open_envelope(
    allowed: PolicyAllowed,
    envelope: bytes,
    *,
    keys: EnvelopeKeys,
    sanitizer: Sanitizer,
    settings: Settings,
    now: datetime,
    audit: AuditSink,
) -> RunOpened:
    """Gate 4: only after the policy allowed: the sealed bytes must be those the ticket names,
    then open (in memory), then the spec must be exactly the manifest the policy judged."""
    identity = allowed.identity
    run_id = identity.run_id
    ticket = identity.ticket
    if ticket is None:  # pragma: no cover - a local run has no envelope; mypy cannot tell
        raise TypeError("a local run has no envelope to open")
    if hashlib.sha256(envelope).hexdigest() != ticket.envelope_sha256:
        raise TicketError(
            "the sealed run state is not the one the signed ticket names, so it is not opened",
            hint="the assignment was altered or mixed up in transit; report it",
            reason="envelope_ticket_mismatch",
        )
    opened = open_run_state(
        envelope,
        pool_private_key=keys.pool_private_key.private_key,
        signer_public_key=keys.signer_public_key,
        expected_pool_id=ticket.pool_id,
        replay_cache=keys.replay_cache,
        now=now,
        clock_skew=settings.clock_skew,
        max_envelope_bytes=settings.max_envelope_bytes,
        audit=audit,
        run_id=run_id,
    )
    with opened:
        if opened.run_id != run_id:
            raise TicketError(
                "the sealed run state is for another run",
                hint="the control plane sealed the wrong run; report it",
                reason="envelope_run_mismatch",
            )
        spec = parse_run_spec(opened.plaintext.reveal(), max_bytes=settings.max_envelope_bytes)
    try:
        _check_opened_spec(spec, run_id, identity.manifest, sanitizer)
    except BaseException:
        spec.wipe()
        raise
    return RunOpened(seal=_SEAL, allowed=allowed, spec=spec)


def check_plan(
    opened: RunOpened,
    fetch: Callable[[], bytes] | None,
    *,
    keys: EnvelopeKeys,
    settings: Settings,
    now: datetime,
    audit: AuditSink,
) -> RunOpened:
    """Gate 4b, an applying run only (``stage: apply``): fetch the planning run's sealed plan
    and check it against the signed ticket's binding, the pool key, the planning run and the
    commit (:func:`~.envelope.plan.open_plan`), or raise. Other runs pass unchanged."""
    spec = opened.spec
    ticket = opened.allowed.identity.ticket
    if spec.stage != "apply":
        return opened
    binding = None if ticket is None else ticket.plan
    if binding is None or fetch is None or ticket is None:
        raise PlanArtifactError(
            "the applying run has no plan to apply",
            hint="confirm the planning run on the control plane (`controlplane run confirm`)",
            reason="plan_unavailable",
        )
    if binding.commit_sha != spec.commit_sha:
        raise PlanArtifactError(
            "the plan was made for another commit than the applying run's",
            hint="discard the planning run and plan the commit again",
            reason="plan_commit_mismatch",
        )
    binding_pool = ticket.pool_id
    plan = open_plan(
        fetch(),
        expected_sha256=binding.sha256,
        planning_run_id=binding.run_id,
        commit_sha=spec.commit_sha,
        pool_private_key=keys.pool_private_key.private_key,
        pool_id=binding_pool,
        replay_cache=keys.replay_cache,
        now=now,
        clock_skew=settings.clock_skew,
    )
    _record(
        audit,
        "plan.verified",
        Outcome.ALLOW,
        gate="plan",
        run_id=spec.run_id,
        plan_of=binding.run_id,
        plan_sha256=binding.sha256,
    )
    return dataclasses.replace(opened, plan=plan)


def seal_result_plan(
    result: RunResult,
    manifest: RunManifest,
    *,
    keys: EnvelopeKeys,
    pool_id: str,
    now: datetime,
    audit: AuditSink,
) -> RunResult:
    """A planning run (``stage: plan``) that succeeded: its plan sealed to the pool key, bound
    to the run and its commit (``sealed_plan``); the plaintext is wiped either way."""
    plan = result.plan
    if plan is None or manifest.stage != "plan" or not result.succeeded:
        if plan is not None:
            plan.wipe()
        return dataclasses.replace(result, plan=None)
    try:
        sealed = seal_plan(
            plan,
            pool_private_key=keys.pool_private_key.private_key,
            run_id=result.run_id,
            pool_id=pool_id,
            commit_sha=manifest.commit_sha,
            now=now,
        )
    finally:
        plan.wipe()
    _record(
        audit,
        "plan.sealed",
        Outcome.INFO,
        gate="execute",
        run_id=result.run_id,
        plan_sha256=sealed.sha256,
        plan_bytes=sealed.artifact_bytes,
    )
    return dataclasses.replace(result, plan=None, sealed_plan=sealed.data)


def _check_opened_spec(
    spec: RunSpec, run_id: str, manifest: RunManifest, sanitizer: Sanitizer
) -> None:
    if spec.run_id != run_id:
        raise TicketError(
            "the run spec names another run",
            hint="the control plane sealed a spec for another run; report it",
            reason="runspec_run_mismatch",
        )
    check_spec_matches(spec, manifest, sanitizer)


def local_spec(allowed: PolicyAllowed, spec: RunSpec, *, audit: AuditSink) -> RunOpened:
    """Gate 4 for a local ``exec`` run: the spec was never sealed (it is a file the operator
    gave), and the manifest the policy judged was made from it."""
    _record(
        audit,
        "envelope.skipped",
        Outcome.INFO,
        gate="envelope",
        run_id=spec.run_id,
        detail="local run spec (exec): nothing sealed",
    )
    return RunOpened(seal=_SEAL, allowed=allowed, spec=spec)


# -- the two ways in ---------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Assignment:
    """One run as the control plane assigned it: still sealed, with its signed ticket."""

    run_id: str
    lease_id: str
    envelope: bytes
    ticket: bytes
    ticket_signature: bytes
    #: An applying run: fetches the planning run's sealed plan (called in gate 4b only).
    fetch_plan: Callable[[], bytes] | None = None


@dataclass(frozen=True, kw_only=True)
class RunServices:
    """What every run shares: the gates' configuration, built once at start-up."""

    settings: Settings
    launcher_id: str
    worker_version: str
    binaries: BinaryGate
    policy: PolicyStep | None
    sanitizer: Sanitizer
    runner: Runner
    audit: AuditSink
    environ: Mapping[str, str]
    egress: EgressStep | None = None


def run_assignment(
    assignment: Assignment,
    *,
    services: RunServices,
    identity: PoolIdentity,
    keys: EnvelopeKeys,
    clock: Callable[[], datetime],
    redactor: RedactorLike,
    open_sink: Callable[[], LogSink],
    cancel: threading.Event | None = None,
    on_started: Callable[[str], None] | None = None,
    timer: StepTimes | None = None,
) -> RunResult:
    """The mission's order for one assigned run:

    binaries → identity → policy → envelope → execute (redaction, egress).

    A refusal before execution raises :class:`RunRefused` (recorded as ``run.refused`` with its
    gate); a failure while executing raises the gate's own error. ``open_sink`` is called only
    when the run is about to execute. ``timer`` (if any) gets a mark as each gate ends.
    """
    run_id = assignment.run_id
    audit = services.audit
    timer = timer or StepTimes()
    with _gate("identity", run_id, audit):  # the ticket's signature: is this our run at all?
        ticket = verify_ticket(
            assignment.ticket,
            assignment.ticket_signature,
            signer_public_key=keys.signer_public_key,
            run_id=run_id,
            pool_id=identity.pool_id,
            worker_id=services.launcher_id,
            lease_id=assignment.lease_id,
        )
    timer.mark("ticket")
    with _gate("binaries", run_id, audit):
        verified = verify_binaries(
            ticket.manifest,
            binaries=services.binaries,
            worker_version=services.worker_version,
            audit=audit,
        )
    timer.mark("binaries")
    with _gate("identity", run_id, audit):
        proved = prove_identity(
            verified,
            identity=identity,
            ticket=ticket,
            worker_id=services.launcher_id,
            sanitizer=services.sanitizer,
            now=clock(),
            audit=audit,
        )
    timer.mark("identity")
    with _gate("policy", run_id, audit):
        allowed = evaluate_policy(
            proved,
            policy=services.policy,
            settings=services.settings,
            worker_version=services.worker_version,
            environ=services.environ,
            sanitizer=services.sanitizer,
            audit=audit,
        )
    timer.mark("policy")
    with _gate("envelope", run_id, audit):
        opened = open_envelope(
            allowed,
            assignment.envelope,
            keys=keys,
            sanitizer=services.sanitizer,
            settings=services.settings,
            now=clock(),
            audit=audit,
        )
    timer.mark("envelope")
    try:
        with _gate("plan", run_id, audit):
            opened = check_plan(
                opened,
                assignment.fetch_plan,
                keys=keys,
                settings=services.settings,
                now=clock(),
                audit=audit,
            )
    except BaseException:
        opened.spec.wipe()
        raise
    result = execute(
        opened,
        services=services,
        redactor=redactor,
        open_sink=open_sink,
        cancel=cancel,
        on_started=on_started,
        timer=timer,
    )
    return seal_result_plan(
        result, ticket.manifest, keys=keys, pool_id=identity.pool_id, now=clock(), audit=audit
    )


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
    """A local run spec (``exec``) through the same gates: binaries → identity (none: local) →
    policy → envelope (none: the spec is plaintext) → execute. Wipes the spec's secrets at the
    end and closes ``sink`` whatever happens; a refusal raises the refusing gate's error.

    ``environ`` supplies the values of ``SPACELIFT_WHITELIST_ENVS``. Gate 6 runs when
    ``settings.egress_policy`` is set (or ``egress`` holds a policy); a configured policy
    without ``egress`` refuses the run.
    """
    services = RunServices(
        settings=settings,
        launcher_id=launcher_id,
        worker_version=worker_version,
        binaries=binaries,
        policy=policy,
        sanitizer=policy.sanitizer if policy is not None else Sanitizer.random(),
        runner=runner,
        audit=audit,
        environ=environ or {},
        egress=egress,
    )
    handed_over = False

    def open_sink() -> LogSink:
        nonlocal handed_over
        handed_over = True
        return sink

    run_id = spec.run_id
    try:
        manifest = manifest_from_spec(spec, services.sanitizer)
        with _gate("binaries", run_id, audit):
            verified = verify_binaries(
                manifest, binaries=binaries, worker_version=worker_version, audit=audit
            )
        proved = local_identity(verified, audit=audit)
        with _gate("policy", run_id, audit):
            allowed = evaluate_policy(
                proved,
                policy=policy,
                settings=settings,
                worker_version=worker_version,
                environ=services.environ,
                sanitizer=services.sanitizer,
                audit=audit,
            )
        opened = local_spec(allowed, spec, audit=audit)
        return execute(
            opened,
            services=services,
            redactor=redactor,
            open_sink=open_sink,
            cancel=cancel,
            on_started=on_started,
        )
    except RunRefused as refused:
        raise refused.error from None
    finally:
        spec.wipe()
        if not handed_over:
            sink.close()


# -- gate 5 (and 6): execute -----------------------------------------------------------------
def execute(
    opened: RunOpened,
    *,
    services: RunServices,
    redactor: RedactorLike,
    open_sink: Callable[[], LogSink],
    cancel: threading.Event | None = None,
    on_started: Callable[[str], None] | None = None,
    timer: StepTimes | None = None,
) -> RunResult:
    """Gate 5 with gate 6 around it. Refusals before the container exists raise
    :class:`RunRefused` (gate ``execute`` or ``egress``); the spec's secrets are wiped at the
    end, whatever happened."""
    spec = opened.spec
    settings, audit = services.settings, services.audit
    run_id = spec.run_id
    timer = timer or StepTimes()
    extra_env: dict[str, Secret] = {}
    sink: LogSink | None = None
    handed_over = False  # once the runner has the sink, the runner closes it
    session: EgressSessionLike | None = None
    run_log: EgressRunLog | None = None
    try:
        with _gate("execute", run_id, audit):
            check_extra_mounts(settings)
            # SPACELIFT_DEFAULT_RUNNER_IMAGE (the policy judged the same image and the limits,
            # see evaluate_policy).
            spec = with_default_image(spec, settings)
        with _gate("egress", run_id, audit):
            egress_policy = _egress_policy(settings, services.egress, run_id=run_id, audit=audit)
            # private://<name>/… through SPACELIFT_PRIVATEVCS_MAPPING_* (an unknown name is
            # refused here, before the container exists).
            source_url = (
                resolve_private_source(spec.source.url, settings.privatevcs_mappings)
                if isinstance(spec.source, GitSource)
                else None
            )
        binaries = opened.allowed.identity.binaries
        for name in settings.whitelisted_env_names_for(spec.run_type):
            value = services.environ.get(name)
            if value is not None:
                extra_env[name] = Secret(value)
        # Masked in the run's output: the launcher's own credentials and SPACELIFT_MASK_ENVS
        # values, the run's secret variables (each value of a secret file on its own too), and
        # masked whitelisted variables. One call, so the engine is compiled once. The daemon's
        # run redactors are layered over the launcher's own (``Redactor(shared=...)``): its
        # values (~700 patterns, ~0.5 MB, ~0.2-0.4 s to compile here) are recognized as masked
        # already and only the run's own secrets are compiled (about 1 ms for a few).
        masked: list[tuple[str, Secret | bytes]] = list(launcher_secret_values(services.environ))
        masked.extend(spec.secrets())
        masked.extend((f"env:{n}", v) for n, v in extra_env.items() if n in settings.mask_envs)
        add_secrets(redactor, masked)
        timer.mark("redactor")
        with _gate("execute", run_id, audit):
            sink = open_sink()
        timer.mark("sink")
        # Gate 6: the run's own network and proxy, open before the container exists.
        network: NetworkPlan | None = None
        if egress_policy is not None:
            egress = services.egress
            assert egress is not None  # noqa: S101 - _egress_policy refuses a policy without it
            run_log = EgressRunLog(sink, redactor)
            with _gate("egress", run_id, audit):
                session = _open_egress(
                    egress,
                    egress_policy,
                    run_id=run_id,
                    launcher_id=services.launcher_id,
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
            timer.mark("egress")
        with _gate("execute", run_id, audit):
            container = build_container_spec(
                spec,
                settings,
                launcher_id=services.launcher_id,
                worker=binaries.worker,
                binaries=list(binaries.requested),
                network=network,
            )
            instructions = encode_instructions(
                spec, extra_env=extra_env, source_url=source_url, plan=opened.plan
            )
        timer.mark("spec")
        _record(
            audit, "run.started", Outcome.ALLOW, gate="execute", run_id=run_id, image=spec.image
        )
        timer.mark("audit_started")

        def started(container_id: str) -> None:
            log.info("run.timings run_id=%s %s", run_id, timer.render())
            if on_started is not None:
                on_started(container_id)

        handed_over = True
        try:
            result = services.runner.run(
                container,
                instructions,
                redactor=redactor,
                sink=sink if run_log is None else run_log,
                cancel=cancel,
                on_started=started,
                timer=timer,
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
        if result.source_refused is not None:
            # The worker refused the source before the run's first command (the commit it got
            # is not the commit the policy judged, or it could not fetch it).
            _record_what_happened(
                audit,
                "source.refused",
                Outcome.DENY,
                gate="execute",
                run_id=run_id,
                reason=result.source_refused,
            )
        elif result.source_commit is not None:
            _record_what_happened(
                audit,
                "source.verified",
                Outcome.ALLOW,
                gate="execute",
                run_id=run_id,
                commit_sha=result.source_commit,
            )
        _record_what_happened(
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
            elif sink is not None and not handed_over:
                sink.close()
        finally:
            spec.wipe()
            if opened.plan is not None:
                opened.plan.wipe()
            for secret in extra_env.values():
                secret.wipe()
