"""``hardened-launcher start``: the launcher daemon, in the foreground, configured by environment.

Start-up order: doctor's checks, run by the same function
(:func:`~hardened_launcher.startup.check_startup`; first failure's exit code) → audit log →
leftover containers removed (reported as crashed) → the components built once
(:func:`~hardened_launcher.startup.build_launcher`: policy gate started, worker release
admitted to the cache, ``HL_UNSAFE_*`` opt-ins audited) → broker connection (refused: exit 78;
unavailable: retried with backoff) → register, then the loop
(:mod:`hardened_launcher.launcher.daemon`). One structured line per event goes to standard error
through the redacting logger.

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
from typing import Any, Final

from hardened_launcher import __version__, sd_notify
from hardened_launcher.audit.chain import ChainedAuditLog
from hardened_launcher.directory_lock import DirectoryLock
from hardened_launcher.egress.leftovers import remove_leftover_egress
from hardened_launcher.envelope import SqliteReplayCache
from hardened_launcher.executor.cleanup import launcher_id_for, remove_leftover_containers
from hardened_launcher.executor.runner import DockerRunner, docker_client
from hardened_launcher.launcher.daemon import Daemon
from hardened_launcher.launcher.gates import GatedRun, ShippingSinkFactory, SinkFactory
from hardened_launcher.launcher.health import HealthServer
from hardened_launcher.launcher.logship import ChunkedLogSink, resume_spooled
from hardened_launcher.launcher.machine import LauncherMachine, MachineConfig
from hardened_launcher.launcher.metrics import LauncherMetrics
from hardened_launcher.launcher.probes import LocalProbes, ProbeLoop
from hardened_launcher.native_memory import (
    fix_malloc_thresholds,
    limit_malloc_arenas,
    release_freed_memory,
)
from hardened_launcher.pipeline import EgressStep
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.logging import install, installed_redactor
from hardened_launcher.redaction.sources import launcher_secret_values
from hardened_launcher.settings import Settings
from hardened_launcher.startup import (
    LauncherComponents,
    build_launcher,
    check_startup,
    open_configured_audit_log,
)
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.factory import worker_transport
from hardened_launcher.transport.tls import BrokerUnavailableError

log = logging.getLogger("hardened_launcher.launcher")

#: How often the local probes (state directory, Docker) run.
PROBE_SECONDS: Final = 2.0


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
    values = launcher_secret_values(os.environ)
    # The process redactor (cli.main) masks these same values: one set of patterns and one
    # compiled engine serve both, not a second copy resident for the daemon's life.
    redactor = installed_redactor()
    if redactor is None or not redactor.covers(values):
        redactor = Redactor()
        redactor.add_many(values)
    install(redactor, logger)


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


def _probe_loop(
    settings: Settings,
    daemon: Daemon,
    client: Any,  # noqa: ANN401 - docker_api.DockerClient, or a test's fake
    launcher_id: str,
    audit: ChainedAuditLog,
) -> ProbeLoop:
    """The local probes (state directory, Docker) and the retried removal of containers a
    Docker outage interrupted (never those of runs still running here)."""

    def cleanup() -> None:
        for crashed in remove_leftover_containers(
            client,
            launcher_id=launcher_id,
            audit=audit if audit.healthy else None,
            stop_grace_seconds=int(settings.run_stop_grace.total_seconds()),
            keep_run_ids=daemon.running_run_ids(),
            reason="docker_restarted",
        ):
            log.warning(
                "run.container_removed run_id=%s container=%s",
                crashed.run_id,
                crashed.container_id[:12],
            )

    probes = LocalProbes(
        state_dir=settings.state_dir, docker_ping=client.ping, audit_dir=settings.audit_dir
    )
    return ProbeLoop(probes.faults, post=daemon.post, interval=PROBE_SECONDS, cleanup=cleanup)


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
    limit_malloc_arenas(2)  # before any thread: run threads share arenas (native_memory.py)
    fix_malloc_thresholds()  # large temporary blocks go back to the kernel when freed
    _setup_logging()
    # The same checks as `doctor` (one function); then everything is built once from them.
    # The policy worker that passed the check's probe becomes the gate's (no second start).
    checks = check_startup(
        now=datetime.now(UTC), docker_factory=docker_factory, keep_policy_worker=True
    )
    settings, key, token = checks.settings, checks.pool_private_key, checks.token
    # One daemon per state directory: a second one would share the launcher ID and remove the
    # first one's running containers as its own leftovers (and fork the audit log, which
    # takes its own lock as well). Held until this process exits.
    state_lock: DirectoryLock | None = None
    try:
        state_lock = DirectoryLock.acquire(
            settings.state_dir,
            what="the launcher state",
            reason="state_dir_in_use",
            hint="another `hardened-launcher start` uses this HL_STATE_DIR: stop it "
            "(`pgrep -af hardened-launcher`), or give this launcher its own HL_STATE_DIR",
        )
        audit = open_configured_audit_log(settings)
    except BaseException:
        if checks.policy_worker is not None:
            checks.policy_worker.close()
        if state_lock is not None:
            state_lock.release()
        raise
    metrics = metrics or LauncherMetrics()
    shipping = ShippingSinkFactory(
        settings=settings, metrics=metrics, stdout=sys.stdout, audit=audit
    )
    components: LauncherComponents | None = None
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
        remove_leftover_egress(client, audit=audit)  # networks, then firewall rules, of the dead
        components = build_launcher(checks, audit=audit)
        replay = SqliteReplayCache(settings.state_dir / "replay.sqlite3")
        egress = components.egress_policy
        run_function = GatedRun(
            settings=settings,
            identity=components.identity,
            pool_private_key=key,
            signer_public_key=token.run_state_signing_key,
            replay_cache=replay,
            launcher_id=launcher_id,
            worker_version=__version__,
            binaries=components.binaries,
            policy=components.policy,
            sanitizer=checks.sanitizer,
            runner=DockerRunner(
                client,
                logs_timeout=settings.launcher_logs_timeout,
                run_timeout=settings.launcher_run_timeout,
                stop_grace=settings.run_stop_grace,
                mounts=components.mounts,
                files_dir=settings.state_dir / "run-files",
            ),
            audit=audit,
            sink_factory=sink_factory or shipping,
            environ=dict(os.environ),
            egress=EgressStep(docker_client=client, policy=egress) if egress else None,
            metrics=metrics,
            shared_redaction=installed_redactor(logging.getLogger("hardened_launcher")),
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
                clock_skew=settings.clock_skew,
            )
        )
        daemon = Daemon(
            machine=machine,
            transport=transport,
            run_function=run_function,
            audit=audit,
            metrics=metrics,
        )
        probes = _probe_loop(settings, daemon, client, launcher_id, audit)
        daemon.on_run_ended = lambda status: (
            probes.owe_cleanup() if status.state != "FINISHED" else None  # also probes at once
        )

        def _on_sigterm(*_: object) -> None:
            sd_notify.stopping("draining after SIGTERM")
            daemon.terminate()

        signal.signal(signal.SIGTERM, _on_sigterm)
        signal.signal(signal.SIGINT, lambda *_: daemon.terminate())
        resumed: dict[str, ChunkedLogSink] = {}
        health: HealthServer | None = None
        try:
            resumed = _resume_logs(shipping.spool_dir, daemon, metrics)
            shipping.shippers.extend(resumed.values())  # HL_LOG_SPOOL_MAX_BYTES may drop them
            health = _start_health(settings, metrics, daemon)
            probes.start()
            log.info("launcher.started launcher_id=%s pool_id=%s", launcher_id, token.pool_id)
            sd_notify.ready(f"running: pool {token.pool_id}, launcher {launcher_id}")
            release_freed_memory()  # what the start-up checks and compiles left free
            return daemon.run()
        finally:
            probes.stop()
            sd_notify.stopping("draining: waiting for running runs to end")
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
        if components is not None:
            components.close()  # the policy worker and the audit log
        else:
            if checks.policy_worker is not None:
                checks.policy_worker.close()
            audit.close()
        state_lock.release()
