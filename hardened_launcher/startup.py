"""The composition root: everything the daemon needs, built from the settings once, at start-up.

:func:`check_startup` runs :func:`hardened_launcher.doctor.run_startup_checks` — the very
function ``doctor`` runs — and refuses on the first failure, so a green ``doctor`` means these
checks pass. :func:`build_launcher` then turns what the checks established into a frozen
:class:`LauncherComponents`: the pool identity (proved), the operator mounts (resolved), the
egress policy (parsed, private VCS endpoints added), the run initialization policy (compiled
once, its gate started), the worker release (verified and admitted to the cache), the audit log
(opened with the ``HL_AUDIT_*`` tuning, every ``HL_UNSAFE_*`` opt-in recorded). The daemon and
the pipeline take these; nothing is parsed again when a run arrives.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hardened_launcher import __version__
from hardened_launcher.audit.chain import ChainedAuditLog
from hardened_launcher.audit.events import AuditEvent, AuditSink, Outcome
from hardened_launcher.audit.keys import load_or_create_signing_key
from hardened_launcher.binaries import VerifiedBinary, VerifiedBinaryCache
from hardened_launcher.doctor import (
    CheckResult,
    DockerFactory,
    DoctorContext,
    Status,
    run_startup_checks,
)
from hardened_launcher.egress.policy import EgressPolicy
from hardened_launcher.errors import EXIT_CONFIGURATION, ConfigurationError
from hardened_launcher.executor.cleanup import launcher_id_for
from hardened_launcher.executor.container_spec import WORKER_NAME
from hardened_launcher.executor.mounts import ResolvedMounts
from hardened_launcher.identity import PoolIdentity, PoolPrivateKey, Token
from hardened_launcher.pipeline import BinaryGate, PolicyStep, ReleaseDirectory
from hardened_launcher.policy import CompiledPolicy, PolicyGate, Sanitizer
from hardened_launcher.policy.input import LauncherFacts
from hardened_launcher.policy.startup import sanitizer_from
from hardened_launcher.policy.worker import SubprocessBackend
from hardened_launcher.settings import Settings

__all__ = [
    "LauncherComponents",
    "StartupCheckError",
    "StartupChecks",
    "build_launcher",
    "check_startup",
    "open_configured_audit_log",
]

log = logging.getLogger(__name__)


class StartupCheckError(ConfigurationError):
    """A start-up check failed; carries the check's own exit code and reason."""

    default_reason = "startup_check_failed"

    def __init__(self, result: CheckResult) -> None:
        super().__init__(
            f"start-up check '{result.name}' failed: {result.summary}",
            hint=result.fix or "run `hardened-launcher doctor` for every check",
            reason=result.reason or self.default_reason,
        )
        self.check = result.name
        self.exit_code = result.exit_code or EXIT_CONFIGURATION  # type: ignore[misc]


@dataclass(frozen=True, kw_only=True)
class StartupChecks:
    """What :func:`check_startup` established: every result, and the proved facts."""

    results: tuple[CheckResult, ...]
    settings: Settings
    pool_private_key: PoolPrivateKey
    token: Token
    identity: PoolIdentity
    sanitizer: Sanitizer
    #: The run initialization policy as the check compiled it (None: none configured).
    compiled_policy: CompiledPolicy | None
    mounts: ResolvedMounts
    egress_policy: EgressPolicy | None
    worker_release: VerifiedBinary
    docker: Any
    #: With ``keep_policy_worker``: the policy worker that passed the start-up probe, ready to
    #: evaluate; :func:`build_launcher` runs the gate on it (the owner closes it otherwise).
    policy_worker: SubprocessBackend | None = None

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.WARN)


def check_startup(
    environ: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
    docker_factory: DockerFactory | None = None,
    keep_policy_worker: bool = False,
) -> StartupChecks:
    """Run doctor's checks (the same function, the same list); raise :class:`StartupCheckError`
    for the first failure, log each warning.

    ``keep_policy_worker``: the policy's worker process that passed the probe is kept in the
    result (``policy_worker``) for :func:`build_launcher`, instead of being stopped and a new
    one started and probed again.
    """
    ctx = DoctorContext(
        environ=os.environ if environ is None else environ,
        now=now or datetime.now(UTC),
        keep_policy_worker=keep_policy_worker,
    )
    if docker_factory is not None:
        ctx.docker_factory = docker_factory
    try:
        return _established(ctx, run_startup_checks(ctx))
    except BaseException:
        if ctx.policy_worker is not None:
            ctx.policy_worker.close()
        raise


def _established(ctx: DoctorContext, results: list[CheckResult]) -> StartupChecks:
    for result in results:
        if result.status is Status.FAIL:
            raise StartupCheckError(result)
    for result in results:
        if result.status is Status.WARN:
            log.warning("startup.warning check=%s summary=%s", result.name, result.summary)
    # Every check passed, so each of these was established (a skip only follows a failure).
    if (
        ctx.settings is None
        or ctx.key is None
        or ctx.token is None
        or ctx.identity is None
        or ctx.mounts is None
        or ctx.worker_release is None
    ):  # pragma: no cover - a programming error in the checks
        raise ConfigurationError("start-up checks did not establish the launcher's facts")
    return StartupChecks(
        results=tuple(results),
        settings=ctx.settings,
        pool_private_key=ctx.key,
        token=ctx.token,
        identity=ctx.identity,
        sanitizer=ctx.sanitizer
        or sanitizer_from(
            ctx.settings, None if ctx.token is None else ctx.token.policy_sanitize_key
        ),
        compiled_policy=ctx.compiled_policy,
        mounts=ctx.mounts,
        egress_policy=ctx.egress_policy,
        worker_release=ctx.worker_release,
        docker=ctx.docker,
        policy_worker=ctx.policy_worker,
    )


def open_configured_audit_log(settings: Settings) -> ChainedAuditLog:
    """The launcher's audit log with the ``HL_AUDIT_*`` tuning of ``settings``."""
    return ChainedAuditLog(
        settings.audit_dir,
        signing_key=load_or_create_signing_key(settings.state_dir),
        segment_bytes=settings.audit_segment_bytes,
        segment_seconds=settings.audit_segment_max_age.total_seconds(),
        checkpoint_records=settings.audit_checkpoint_records,
        checkpoint_seconds=settings.audit_checkpoint_interval.total_seconds(),
        write_timeout_seconds=settings.audit_write_timeout.total_seconds(),
    )


def record_unsafe_opt_ins(settings: Settings, audit: AuditSink) -> None:
    """One ``startup.unsafe_opt_in`` record per ``HL_UNSAFE_*`` opt-in in use (every start)."""
    for variable in settings.unsafe_opt_ins:
        audit.record(
            AuditEvent(
                type="startup.unsafe_opt_in",
                outcome=Outcome.INFO,
                gate="startup",
                reason="unsafe_opt_in",
                fields={"variable": variable},
            )
        )
        log.warning("startup.unsafe_opt_in variable=%s", variable)


@dataclass(frozen=True, kw_only=True)
class LauncherComponents:
    """Everything the daemon and the pipeline take, built once by :func:`build_launcher`.

    The caller owns it and calls :meth:`close` (policy worker, audit log) when the daemon ends.
    """

    settings: Settings
    launcher_id: str
    pool_private_key: PoolPrivateKey
    token: Token
    #: The pool certificate proved at start-up (valid now, key matches, chains to the pin).
    identity: PoolIdentity
    #: Operator mounts, resolved; give to ``DockerRunner(mounts=...)`` (re-resolved per create).
    mounts: ResolvedMounts
    #: ``HL_EGRESS_POLICY`` parsed, private VCS endpoints added; None: no egress gate.
    egress_policy: EgressPolicy | None
    #: The run initialization policy compiled once and its gate started; None: no policy.
    policy: PolicyStep | None
    #: Gate 1 for runs (same releases, keyring, pins and cache as the start-up verification).
    binaries: BinaryGate
    #: The hl-worker release, verified and admitted to the cache at start-up.
    worker: VerifiedBinary
    audit: ChainedAuditLog
    #: ``HL_UNSAFE_*`` opt-ins in use (flagged by doctor, audited at this start).
    unsafe_opt_ins: tuple[str, ...]
    #: Every check's result (warnings included), as ``doctor`` shows them.
    checks: tuple[CheckResult, ...]

    def close(self) -> None:
        try:
            if self.policy is not None:
                self.policy.close()
        finally:
            self.audit.close()


def build_launcher(
    checks: StartupChecks, *, audit: ChainedAuditLog | None = None
) -> LauncherComponents:
    """Build the components from what :func:`check_startup` proved (nothing is re-parsed).

    ``audit`` is an already opened log (``start`` opens it before sweeping leftover
    containers); by default it is opened here with the ``HL_AUDIT_*`` tuning.
    """
    settings = checks.settings
    log_ = audit or open_configured_audit_log(settings)
    policy: PolicyStep | None = None
    try:
        record_unsafe_opt_ins(settings, log_)
        launcher_id = launcher_id_for(settings)
        policy = _start_policy(checks, launcher_id=launcher_id, audit=log_)
        assert settings.release_dir is not None  # noqa: S101 - the release check passed
        assert settings.release_keyring is not None  # noqa: S101 - the release check passed
        binaries = BinaryGate(
            releases=ReleaseDirectory(root=settings.release_dir),
            keyring=settings.release_keyring,
            pins=settings.release_key_fingerprints,
            cache=VerifiedBinaryCache.from_settings(settings, audit=log_),
            max_clock_skew=settings.clock_skew,
        )
        worker = binaries.verify(WORKER_NAME, __version__, run_id="startup", audit=log_)
        return LauncherComponents(
            settings=settings,
            launcher_id=launcher_id,
            pool_private_key=checks.pool_private_key,
            token=checks.token,
            identity=checks.identity,
            mounts=checks.mounts,
            egress_policy=checks.egress_policy,
            policy=policy,
            binaries=binaries,
            worker=worker,
            audit=log_,
            unsafe_opt_ins=settings.unsafe_opt_ins,
            checks=checks.results,
        )
    except BaseException:
        if policy is not None:
            policy.close()
        if audit is None:
            log_.close()
        raise


def _start_policy(
    checks: StartupChecks, *, launcher_id: str, audit: AuditSink
) -> PolicyStep | None:
    """Start the gate of the policy the checks compiled (compiled once, not again here)."""
    settings = checks.settings
    if checks.compiled_policy is None:
        return None
    if checks.policy_worker is not None:
        gate = PolicyGate(
            checks.compiled_policy,
            backend=checks.policy_worker,
            timeout_s=settings.policy_timeout.total_seconds(),
            audit=audit,
        )
    else:
        gate = PolicyGate.start(
            checks.compiled_policy,
            sanitizer=checks.sanitizer,
            timeout_s=settings.policy_timeout.total_seconds(),
            audit=audit,
        )
    facts = LauncherFacts(
        pool_id=checks.token.pool_id,
        worker_id=launcher_id,
        version=__version__,
        metadata=dict(settings.metadata),
    )
    return PolicyStep(gate=gate, sanitizer=checks.sanitizer, launcher=facts)
