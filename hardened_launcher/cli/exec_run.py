"""The work of ``hardened-launcher exec SPEC.yaml``: one run spec, locally, through the pipeline.

Its parser is in :mod:`.exec_cmd`, which imports this module only when the command runs, so
parsing never loads the executor and its Docker client.

For users testing images and policies before they deploy: the same gates as the daemon, the
redacted output streamed to the terminal (and optionally to a log file). With
``HL_EGRESS_POLICY`` set the run gets its own network and egress proxy on the local Docker
(root is needed for the host firewall rules).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hardened_launcher import __version__
from hardened_launcher.audit.chain import ChainedAuditLog
from hardened_launcher.binaries import VerifiedBinaryCache
from hardened_launcher.bounded_input import read_bounded
from hardened_launcher.egress.leftovers import remove_leftover_egress
from hardened_launcher.errors import UsageError
from hardened_launcher.executor.cleanup import (
    exec_launcher_id,
    launcher_id_for,
    remove_stale_containers,
)
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.logsink import FileLogSink, LogSink, StreamLogSink, TeeLogSink
from hardened_launcher.executor.mounts import ResolvedMounts, resolve_mounts
from hardened_launcher.executor.runner import DockerRunner, RunResult, docker_client
from hardened_launcher.executor.runspec import RunSpec, parse_run_spec
from hardened_launcher.pipeline import (
    BinaryGate,
    EgressStep,
    PolicyStep,
    ReleaseDirectory,
    run_pipeline,
    start_policy_step,
)
from hardened_launcher.policy.startup import sanitizer_from
from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.logging import installed_redactor
from hardened_launcher.settings import Settings, load_settings
from hardened_launcher.startup import open_configured_audit_log
from hardened_launcher.terminal import for_terminal


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    mounts = resolve_mounts(settings)  # a dangerous mount stops us before anything else
    keyring = args.keyring or settings.release_keyring
    if keyring is None:
        raise UsageError(
            "no release keyring: pass --keyring or set HL_RELEASE_KEYRING",
            hint="the keyring holds the public keys of HL_RELEASE_KEY_FINGERPRINTS",
        )
    data = read_bounded(
        args.spec,
        max_bytes=settings.max_envelope_bytes,
        what="run spec",
        too_large=RunSpecError,
    )
    audit = open_configured_audit_log(settings)  # with the HL_AUDIT_* tuning
    launcher_id = exec_launcher_id(launcher_id_for(settings))
    # The policy compiles before the spec is even parsed: a broken policy stops us here, with
    # file:line:col and the engine's message.
    try:
        policy = start_policy_step(
            settings,
            sanitizer=sanitizer_from(settings),
            pool_id="local",
            worker_id=launcher_id,
            audit=audit,
        )
    except BaseException:
        audit.close()
        raise
    try:
        spec = parse_run_spec(data, max_bytes=settings.max_envelope_bytes)
        sinks: list[LogSink] = [StreamLogSink(sys.stdout.buffer, sys.stderr.buffer)]
        if args.log is not None:
            sinks.append(FileLogSink(args.log))
        return _execute(args, settings, spec, keyring, sinks, audit, launcher_id, policy, mounts)
    finally:
        if policy is not None:
            policy.close()
        audit.close()


def _execute(
    args: argparse.Namespace,
    settings: Settings,
    spec: RunSpec,
    keyring: Path,
    sinks: list[LogSink],
    audit: ChainedAuditLog,
    launcher_id: str,
    policy: PolicyStep | None,
    mounts: ResolvedMounts,
) -> int:
    client = docker_client()
    # Leftovers of a killed exec (or daemon) of this launcher: owner gone or deadline passed.
    for crashed in remove_stale_containers(
        client,
        launcher_ids=(launcher_id, launcher_id_for(settings)),
        audit=audit,
        stop_grace_seconds=int(settings.run_stop_grace.total_seconds()),
    ):
        sys.stderr.write(f"removed the leftover container of run {crashed.run_id!a}\n")
    remove_leftover_egress(client, audit=audit)  # a killed exec's network and firewall rules
    runner = DockerRunner(
        client,
        logs_timeout=settings.launcher_logs_timeout,
        run_timeout=settings.launcher_run_timeout,
        stop_grace=settings.run_stop_grace,
        mounts=mounts,
        files_dir=settings.state_dir / "run-files",
    )
    # SIGTERM or Ctrl-C stops the run like a cancel (SIGTERM, grace, SIGKILL) and the container
    # is removed; a SIGKILL cannot be caught, so the next exec removes what it leaves behind.
    cancel = threading.Event()

    def _cancel(signum: int, frame: object) -> None:
        del signum, frame
        cancel.set()

    previous = {sig: signal.signal(sig, _cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = _run(
            args, settings, spec, keyring, sinks, audit, launcher_id, policy, client, runner, cancel
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stderr.write(
        for_terminal(
            f"run {result.run_id}: {result.reason} (exit code {result.exit_code}, "
            f"{result.duration_seconds:.1f}s)"
        )
        + "\n"
    )
    for name, content in sorted(result.outputs.items()):  # names are checked: [A-Za-z0-9._-]
        sys.stderr.write(f"output {name}: {len(content)} bytes (redacted)\n")
    if result.outputs_truncated:
        sys.stderr.write("outputs truncated: more than 64 files or 1 MiB\n")
    if result.exit_code is None:
        return 1
    return result.exit_code if result.exit_code < 256 else 1


def _run(
    args: argparse.Namespace,
    settings: Settings,
    spec: RunSpec,
    keyring: Path,
    sinks: list[LogSink],
    audit: ChainedAuditLog,
    launcher_id: str,
    policy: PolicyStep | None,
    client: Any,  # noqa: ANN401 - docker_api.DockerClient, or a test's fake
    runner: DockerRunner,
    cancel: threading.Event,
) -> RunResult:
    return run_pipeline(
        spec,
        settings=settings,
        launcher_id=launcher_id,
        worker_version=__version__,
        binaries=BinaryGate(
            releases=ReleaseDirectory(root=args.releases),
            keyring=keyring,
            pins=settings.release_key_fingerprints,
            cache=VerifiedBinaryCache.from_settings(settings, audit=audit),
            max_clock_skew=settings.clock_skew,
        ),
        policy=policy,
        runner=runner,
        # Layered over the process redactor (cli.main): the launcher's own values are compiled
        # once, not again beside the run's secrets.
        redactor=Redactor(shared=installed_redactor()),
        sink=TeeLogSink(*sinks),
        audit=audit,
        environ=os.environ,
        # Used only when HL_EGRESS_POLICY is set: the run's network is made on this daemon.
        egress=EgressStep(docker_client=client),
        cancel=cancel,
    )
