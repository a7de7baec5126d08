"""``hardened-launcher exec SPEC.yaml``: one run spec, locally, through binaries → policy →
egress → execute.

For users testing images and policies before they deploy: the same gates as the daemon, the
redacted output streamed to the terminal (and optionally to a log file). With
``HL_EGRESS_POLICY`` set the run gets its own network and egress proxy on the local Docker
(root is needed for the host firewall rules).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hardened_launcher import __version__
from hardened_launcher.errors import InfrastructureError, UsageError

if TYPE_CHECKING:
    from hardened_launcher.audit.chain import ChainedAuditLog
    from hardened_launcher.executor.logsink import LogSink
    from hardened_launcher.executor.runspec import RunSpec
    from hardened_launcher.pipeline import PolicyStep
    from hardened_launcher.settings import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "exec",
        help="run one run spec locally through the binaries, policy and execute gates",
        description="Run SPEC (YAML, see docs/runspec.md) in a hardened container on the local "
        "Docker, streaming the redacted output. The worker program and every binary the spec "
        "asks for must be signed releases in --releases, verified against "
        "HL_RELEASE_KEY_FINGERPRINTS.",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.yaml", help="the run spec")
    parser.add_argument(
        "--releases",
        type=Path,
        required=True,
        help="directory of signed releases: <dir>/<name>/<version>/{<name>,SHA256SUMS,"
        "SHA256SUMS.sig}",
    )
    parser.add_argument(
        "--keyring", type=Path, help="OpenPGP public keys (default: HL_RELEASE_KEYRING)"
    )
    parser.add_argument("--log", type=Path, help="also write the redacted output to this new file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at module level: parsing `exec --help` must not load the Docker SDK.
    from hardened_launcher.audit.chain import open_audit_log  # noqa: PLC0415
    from hardened_launcher.executor.cleanup import launcher_id_for  # noqa: PLC0415
    from hardened_launcher.executor.container_spec import check_extra_mounts  # noqa: PLC0415
    from hardened_launcher.executor.logsink import FileLogSink, StreamLogSink  # noqa: PLC0415
    from hardened_launcher.executor.runspec import parse_run_spec  # noqa: PLC0415
    from hardened_launcher.pipeline import start_policy_step  # noqa: PLC0415
    from hardened_launcher.policy.startup import sanitizer_from  # noqa: PLC0415
    from hardened_launcher.settings import load_settings  # noqa: PLC0415

    settings = load_settings()
    check_extra_mounts(settings)  # a dangerous mount stops us before anything else
    keyring = args.keyring or settings.release_keyring
    if keyring is None:
        raise UsageError(
            "no release keyring: pass --keyring or set HL_RELEASE_KEYRING",
            hint="the keyring holds the public keys of HL_RELEASE_KEY_FINGERPRINTS",
        )
    try:
        data = args.spec.read_bytes()
    except OSError as exc:
        raise InfrastructureError(
            f"cannot read the run spec {args.spec}: {exc.strerror}",
            hint="check the path",
            reason="runspec_unreadable",
        ) from None
    audit = open_audit_log(settings.state_dir, settings.audit_dir)
    launcher_id = f"{launcher_id_for(settings)}-exec"[:63]
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
        return _execute(args, settings, spec, keyring, sinks, audit, launcher_id, policy)
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
) -> int:
    from hardened_launcher.binaries import VerifiedBinaryCache  # noqa: PLC0415
    from hardened_launcher.executor.logsink import TeeLogSink  # noqa: PLC0415
    from hardened_launcher.executor.runner import DockerRunner, docker_client  # noqa: PLC0415
    from hardened_launcher.pipeline import (  # noqa: PLC0415
        BinaryGate,
        EgressStep,
        ReleaseDirectory,
        run_pipeline,
    )
    from hardened_launcher.redaction import Redactor  # noqa: PLC0415

    client = docker_client()
    runner = DockerRunner(
        client,
        logs_timeout=settings.launcher_logs_timeout,
        run_timeout=settings.launcher_run_timeout,
        stop_grace=settings.run_stop_grace,
    )
    result = run_pipeline(
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
        redactor=Redactor(),
        sink=TeeLogSink(*sinks),
        audit=audit,
        environ=os.environ,
        # Used only when HL_EGRESS_POLICY is set: the run's network is made on this daemon.
        egress=EgressStep(docker_client=client),
    )
    sys.stderr.write(
        f"run {result.run_id}: {result.reason} (exit code {result.exit_code}, "
        f"{result.duration_seconds:.1f}s)\n"
    )
    if result.exit_code is None:
        return 1
    return result.exit_code if result.exit_code < 256 else 1
