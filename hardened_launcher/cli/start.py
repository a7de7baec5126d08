"""``hardened-launcher start``: the launcher daemon, in the foreground, configured by environment.

Start-up order: settings and doctor's checks (first failure's exit code) → audit log → leftover
containers removed (reported as crashed) → policy gate (compile errors exit 78) → worker release
verified → broker connection (refused: exit 78; unavailable: retried with backoff) → register,
then the loop (:mod:`hardened_launcher.launcher.daemon`). One structured line per event goes to
standard error through the redacting logger.

Run logs go to object storage (:class:`~hardened_launcher.launcher.logship.ChunkedLogSink`,
spooled under ``<state_dir>/log-spool``; what earlier processes left there is resumed before
the loop starts), to a file copy under ``<state_dir>/runs`` (canary-scanned), and optionally to
standard output as JSON lines. ``HL_METRICS_ADDRESS`` opens ``/healthz``, ``/readyz`` and
``/metrics`` while the daemon runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hardened_launcher import __version__
from hardened_launcher.audit.chain import open_audit_log
from hardened_launcher.binaries import VerifiedBinaryCache
from hardened_launcher.doctor import CHECKS, DockerFactory, DoctorContext, Status
from hardened_launcher.envelope import SqliteReplayCache
from hardened_launcher.errors import ConfigurationError
from hardened_launcher.executor.cleanup import launcher_id_for, remove_leftover_containers
from hardened_launcher.executor.container_spec import WORKER_NAME
from hardened_launcher.executor.runner import DockerRunner, docker_client
from hardened_launcher.launcher.daemon import Daemon
from hardened_launcher.launcher.gates import GatedRun, ShippingSinkFactory, SinkFactory
from hardened_launcher.launcher.health import HealthServer
from hardened_launcher.launcher.logship import ChunkedLogSink, resume_spooled
from hardened_launcher.launcher.machine import LauncherMachine, MachineConfig
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.pipeline import BinaryGate, EgressStep, ReleaseDirectory, start_policy_step
from hardened_launcher.policy.startup import sanitizer_from
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.logging import install
from hardened_launcher.redaction.sources import launcher_secret_values
from hardened_launcher.settings import Settings
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.client import BrokerUnavailableError
from hardened_launcher.transport.factory import worker_transport

log = logging.getLogger("hardened_launcher.launcher")


@dataclass(frozen=True, kw_only=True)
class ConnectRetry:
    """How the first broker connection is retried while the broker is unavailable."""

    #: How long one attempt waits for the connection.
    attempt_timeout_seconds: float = 30.0
    first_delay_seconds: float = 1.0
    #: The delay doubles after each failed attempt, up to this cap (then jittered to half).
    max_delay_seconds: float = 60.0
    #: ``None``: retry until connected (the daemon's behaviour); else give up after this many.
    max_attempts: int | None = None


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "start",
        help="run the launcher daemon (foreground; configured by environment)",
        description="Check the configuration like `doctor`, connect to the broker, register "
        "and run assigned runs through every gate until SIGTERM (drain, finish, exit 0; a "
        "second SIGTERM stops the runs).",
    )
    parser.set_defaults(handler=run)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": record.getMessage(),
            },
            ensure_ascii=True,
        )


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    logger = logging.getLogger("hardened_launcher")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    redactor = Redactor()
    redactor.add_many(launcher_secret_values(os.environ))
    install(redactor, logger)


def _checks(now: datetime, docker_factory: DockerFactory | None = None) -> DoctorContext:
    ctx = DoctorContext(environ=os.environ, now=now)
    if docker_factory is not None:
        ctx.docker_factory = docker_factory
    for check in CHECKS:
        result = check(ctx)
        if result.status is Status.FAIL:
            raise _StartupError(
                f"start-up check '{result.name}' failed: {result.summary}",
                hint=result.fix,
                reason="startup_check_failed",
                exit_code=result.exit_code,
            )
        if result.status is Status.WARN:
            log.warning("startup.warning check=%s summary=%s", result.name, result.summary)
    return ctx


class _StartupError(ConfigurationError):
    def __init__(self, message: str, *, hint: str, reason: str, exit_code: int) -> None:
        super().__init__(message, hint=hint, reason=reason)
        self.exit_code = exit_code or 78  # type: ignore[misc]


def _connect(
    factory: Callable[[], Transport], *, retry: ConnectRetry, stop: list[bool]
) -> Transport:
    delay = retry.first_delay_seconds
    attempt = 0
    while True:
        attempt += 1
        transport = factory()
        try:
            transport.start(timeout_seconds=retry.attempt_timeout_seconds)
        except BrokerUnavailableError as exc:
            if stop or (retry.max_attempts is not None and attempt >= retry.max_attempts):
                raise
            log.warning(
                "broker.unavailable attempt=%d retry_in=%.1fs detail=%s",
                attempt,
                delay,
                exc.detail[:200],
            )
            time.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, retry.max_delay_seconds)
            continue
        return transport


def _release_sources(settings: Settings) -> tuple[ReleaseDirectory, Path]:
    """The worker release directory and the keyring, or a :class:`ConfigurationError` naming
    the variable to set (``start`` cannot run a single container without them)."""
    if settings.release_dir is None:
        raise ConfigurationError(
            "HL_RELEASE_DIR is not set: the launcher needs the signed hl-worker release",
            hint="set HL_RELEASE_DIR to <dir> holding <dir>/hl-worker/<version>/{hl-worker,"
            "SHA256SUMS,SHA256SUMS.sig}",
            reason="release_dir_missing",
        )
    if not settings.release_key_fingerprints:
        raise ConfigurationError(
            "HL_RELEASE_KEY_FINGERPRINTS is not set: no release key is trusted, so the "
            "hl-worker release cannot be verified",
            hint="set HL_RELEASE_KEY_FINGERPRINTS to the full fingerprints of your release keys",
            reason="release_keys_missing",
        )
    if settings.release_keyring is None:
        raise ConfigurationError(
            "HL_RELEASE_KEYRING is not set: the pinned release keys "
            "(HL_RELEASE_KEY_FINGERPRINTS) are in no keyring",
            hint="set HL_RELEASE_KEYRING to a file of the release public keys "
            "(gpg --export --armor FPR > FILE)",
            reason="release_keyring_missing",
        )
    return ReleaseDirectory(root=settings.release_dir), settings.release_keyring


def _start_health(
    settings: Settings, metrics: LauncherMetrics, daemon: Daemon
) -> HealthServer | None:
    if settings.metrics_address is None:
        return None
    server = HealthServer(settings.metrics_address, metrics=metrics, readiness=daemon.readiness)
    server.start()
    if not server.is_loopback:
        log.warning(
            "metrics.exposed address=%s detail=unauthenticated endpoints on a non-loopback address",
            settings.metrics_address,
        )
    log.info("metrics.listening url=%s", server.url)
    return server


def _resume_logs(
    spool_dir: Path, daemon: Daemon, metrics: LauncherMetrics
) -> dict[str, ChunkedLogSink]:
    """Ship what earlier processes left in the spool (before any new sink is made)."""
    resumed = resume_spooled(spool_dir, request_more=daemon.request_log_urls, metrics=metrics)
    daemon.adopt_log_sinks(resumed)
    for run_id, sink in resumed.items():
        report = sink.report()
        log.info("logs.resumed run_id=%s chunks=%d", run_id, report.spooled)
    return resumed


def run(
    args: argparse.Namespace,
    *,
    sink_factory: SinkFactory | None = None,
    connect_retry: ConnectRetry | None = None,
    docker_factory: Callable[[], Any] | None = None,
    metrics: LauncherMetrics | None = None,
) -> int:
    """The daemon. ``sink_factory``, ``connect_retry``, ``docker_factory`` (used for the
    start-up check and every Docker call) and ``metrics`` are test seams; the defaults are the
    log shipping sinks, the real broker backoff, Docker and a fresh registry."""
    del args
    _setup_logging()
    ctx = _checks(datetime.now(UTC), docker_factory)
    settings, key, token, identity = ctx.settings, ctx.key, ctx.token, ctx.identity
    if settings is None or key is None or token is None or identity is None:  # pragma: no cover
        raise ConfigurationError("start-up checks did not establish the identity")
    releases, keyring = _release_sources(settings)
    metrics = metrics or LauncherMetrics()
    shipping = ShippingSinkFactory(settings=settings, metrics=metrics, stdout=sys.stdout)
    audit = open_audit_log(settings.state_dir, settings.audit_dir)
    policy = None
    replay = None
    try:
        launcher_id = launcher_id_for(settings)
        client = (docker_factory or docker_client)()
        for crashed in remove_leftover_containers(
            client,
            launcher_id=launcher_id,
            audit=audit,
            stop_grace_seconds=int(settings.run_stop_grace.total_seconds()),
        ):
            log.warning(
                "run.crashed run_id=%s container=%s", crashed.run_id, crashed.container_id[:12]
            )
        policy = start_policy_step(
            settings,
            sanitizer=sanitizer_from(settings),
            pool_id=token.pool_id,
            worker_id=launcher_id,
            audit=audit,
        )
        binaries = BinaryGate(
            releases=releases,
            keyring=keyring,
            pins=settings.release_key_fingerprints,
            cache=VerifiedBinaryCache.from_settings(settings, audit=audit),
            max_clock_skew=settings.clock_skew,
        )
        binaries.verify(WORKER_NAME, __version__, run_id="startup", audit=audit)
        replay = SqliteReplayCache(settings.state_dir / "replay.sqlite3")
        run_function = GatedRun(
            settings=settings,
            identity=identity,
            pool_private_key=key,
            signer_public_key=token.run_state_signing_key,
            replay_cache=replay,
            launcher_id=launcher_id,
            worker_version=__version__,
            binaries=binaries,
            policy=policy,
            runner=DockerRunner(
                client,
                logs_timeout=settings.launcher_logs_timeout,
                run_timeout=settings.launcher_run_timeout,
                stop_grace=settings.run_stop_grace,
            ),
            audit=audit,
            sink_factory=sink_factory or shipping,
            environ=dict(os.environ),
            egress=EgressStep(docker_client=client) if settings.egress_policy else None,
            metrics=metrics,
        )
        stop: list[bool] = []
        transport = _connect(
            lambda: worker_transport(settings, token=token, key=key, worker_id=launcher_id),
            retry=connect_retry or ConnectRetry(),
            stop=stop,
        )
        machine = LauncherMachine(
            MachineConfig(
                worker_id=launcher_id,
                pool_id=token.pool_id,
                version=__version__,
                metadata=settings.metadata,
                max_concurrent_runs=settings.max_concurrent_runs,
                heartbeat_interval=settings.heartbeat_interval,
                shutdown_grace=settings.shutdown_grace,
            )
        )
        daemon = Daemon(
            machine=machine,
            transport=transport,
            run_function=run_function,
            audit=audit,
            metrics=metrics,
        )
        signal.signal(signal.SIGTERM, lambda *_: daemon.terminate())
        signal.signal(signal.SIGINT, lambda *_: daemon.terminate())
        resumed: dict[str, ChunkedLogSink] = {}
        health: HealthServer | None = None
        try:
            resumed = _resume_logs(shipping.spool_dir, daemon, metrics)
            health = _start_health(settings, metrics, daemon)
            log.info("launcher.started launcher_id=%s pool_id=%s", launcher_id, token.pool_id)
            return daemon.run()
        finally:
            daemon.join_runs(settings.run_stop_grace.total_seconds() + 30)
            if health is not None:
                health.stop()
            shipping.shutdown()
            for sink in resumed.values():
                sink.shutdown()
            transport.close(bye_reason="shutdown")
    finally:
        if replay is not None:
            replay.close()
        if policy is not None:
            policy.close()
        audit.close()
