"""``hardened-launcher audit``: key, verify, show, export and hash for the tamper-evident log.

See docs/audit.md. Every sub-command reads the log in ``PATH`` (default ``HL_AUDIT_DIR``) and
checks it against the public key given with ``--public-key`` (the PEM printed by ``audit key``);
without it the launcher's own key in ``HL_STATE_DIR`` is used, which only proves the log is
consistent with the key on this host: auditors should pin the key.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from hardened_launcher.audit.export import (
    EXPORT_FORMATS,
    Selection,
    export_to_file,
    export_to_stream,
)
from hardened_launcher.audit.keys import (
    key_id,
    keyed_hash,
    load_existing_signing_key,
    load_or_create_hmac_key,
    load_or_create_signing_key,
    load_public_key,
    public_key_pem,
)
from hardened_launcher.audit.show import render_json, render_table, run_records
from hardened_launcher.audit.verify import VerifyReport, verify_log
from hardened_launcher.durations import DurationError, parse_duration
from hardened_launcher.errors import ConfigurationError, UsageError

MAX_HASH_INPUT_BYTES = 64 * 1024


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "audit",
        help="check, show and export the tamper-evident audit log",
        description="The audit log records every decision of every gate, hash-chained and "
        "signed. See docs/audit.md.",
    )
    group = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    group.required = True

    key = group.add_parser("key", help="print the audit public key (create it if missing)")
    key.set_defaults(handler=run_key)

    def log_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", nargs="?", type=Path, metavar="PATH", help="audit directory "
                       "(default: HL_AUDIT_DIR)")  # fmt: skip
        p.add_argument("--public-key", type=Path, metavar="K", help="pinned PEM public key")

    verify = group.add_parser("verify", help="check hashes, chain, signatures and segments")
    log_args(verify)
    verify.add_argument(
        "--allow-open-tail",
        action="store_true",
        help="accept unsigned records after the last checkpoint (a live launcher's log)",
    )
    verify.add_argument(
        "--witness",
        metavar="FILE|DIR|s3://BUCKET/PREFIX",
        help="compare with the checkpoint witnesses the control plane kept: detects a log "
        "rolled back or cut at a checkpoint",
    )
    verify.add_argument("--endpoint-url", help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    verify.set_defaults(handler=run_verify)

    show = group.add_parser("show", help="the story of one run, gate by gate")
    log_args(show)
    show.add_argument("--run", required=True, metavar="ID", help="the run id")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(handler=run_show)

    export = group.add_parser("export", help="export records as JSON lines, OCSF or CEF")
    log_args(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    export.add_argument("--since", metavar="T", help="ISO 8601 time, or a duration ago (24h)")
    export.add_argument("--until", metavar="T", help="ISO 8601 time (exclusive), or duration ago")
    export.add_argument("--run", metavar="ID", help="only this run's records")
    export.add_argument("--out", required=True, metavar="FILE|-|s3://BUCKET/PREFIX")
    export.add_argument("--endpoint-url", help="S3-compatible endpoint (else AWS_ENDPOINT_URL)")
    export.add_argument("--retain-days", type=int, help="S3 Object Lock retention of new objects")
    export.add_argument("--lock-mode", choices=("GOVERNANCE", "COMPLIANCE"), default="GOVERNANCE")
    export.set_defaults(handler=run_export)

    hashed = group.add_parser(
        "hash", help="keyed hash of a value read from stdin, to look it up in the log"
    )
    hashed.set_defaults(handler=run_hash)


def _settings_dirs() -> tuple[Path, Path]:
    from hardened_launcher.settings import load_settings  # noqa: PLC0415 - only when needed

    settings = load_settings()
    return settings.state_dir, settings.audit_dir


def _log_and_key(args: argparse.Namespace) -> tuple[Path, ed25519.Ed25519PublicKey]:
    path: Path | None = args.path
    if args.public_key is not None and path is not None:
        return path, load_public_key(args.public_key)
    state_dir, audit_dir = _settings_dirs()
    directory = path or audit_dir
    if args.public_key is not None:
        return directory, load_public_key(args.public_key)
    private = load_existing_signing_key(state_dir)
    if private is None:
        raise ConfigurationError(
            f"no audit key in {state_dir} and no --public-key",
            hint="pass the auditor's pinned key with --public-key",
            reason="audit_key_missing",
        )
    sys.stderr.write(
        "note: checking against this host's own audit key; pass --public-key for an "
        "independent check\n"
    )
    return directory, private.public_key()


def run_key(_args: argparse.Namespace) -> int:
    state_dir, _ = _settings_dirs()
    public = load_or_create_signing_key(state_dir).public_key()
    sys.stdout.write(public_key_pem(public))
    sys.stdout.write(f"# key id (sha256 of the raw key): {key_id(public)}\n")
    return 0


def _witnessed(
    args: argparse.Namespace, directory: Path, public: ed25519.Ed25519PublicKey
) -> tuple[VerifyReport, str]:
    """Verify, then compare with the witnesses named by ``--witness`` (docs/audit.md)."""
    from hardened_launcher.audit.witness import (  # noqa: PLC0415 - only with --witness
        load_witness_path,
        verify_log_with_witnesses,
    )

    source: str = args.witness
    if source.startswith("s3://"):
        from hardened_launcher.audit.witness_s3 import load_witness_s3  # noqa: PLC0415 - boto3

        witnesses = load_witness_s3(source, key_id=key_id(public), endpoint_url=args.endpoint_url)
    else:
        witnesses = load_witness_path(Path(source))
    report, judged = verify_log_with_witnesses(
        directory, public, witnesses, allow_open_tail=args.allow_open_tail, source=source
    )
    who = ", ".join(f"{pool}/{worker}" for pool, worker in judged.bindings[:4])
    more = f" (+{len(judged.bindings) - 4})" if len(judged.bindings) > 4 else ""
    return report, (
        f"; {judged.witnesses} witness(es) agree, the newest at seq {judged.latest_seq} "
        f"({who}{more})"
    )


def run_verify(args: argparse.Namespace) -> int:
    directory, public = _log_and_key(args)
    if args.witness:
        report, witnessed = _witnessed(args, directory, public)
    else:
        report = verify_log(directory, public, allow_open_tail=args.allow_open_tail)
        witnessed = ""
    state = (
        "sealed"
        if report.sealed
        else f"open tail: {report.unsigned_tail_records} unsigned record(s) after the last "
        "checkpoint"
    )
    sys.stdout.write(
        f"ok: {report.records} records (seq 0..{report.last_seq}) in {report.segments} "
        f"segment(s), {report.checkpoints} checkpoints signed by {report.key_id[:16]}…; {state}"
        + (f"; {report.unclean_stops} unclean stop(s)" if report.unclean_stops else "")
        + witnessed
        + "\n"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    directory, public = _log_and_key(args)
    records = run_records(directory, public, args.run)
    sys.stdout.write(render_json(records) if args.format == "json" else render_table(records))
    return 0


def parse_time(text: str | None, *, now: datetime) -> datetime | None:
    """ISO 8601 (a time zone is required; ``Z`` accepted) or a duration ago (``24h``)."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - parse_duration(text)
        except DurationError:
            raise UsageError(
                f"{text!r} is neither an ISO 8601 time nor a duration",
                hint="e.g. 2030-01-02T03:04:05Z or 24h",
            ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"{text!r} has no time zone", hint="append Z or +00:00")
    return parsed


def run_export(args: argparse.Namespace) -> int:
    directory, public = _log_and_key(args)
    now = datetime.now(UTC)
    selection = Selection(
        since=parse_time(args.since, now=now),
        until=parse_time(args.until, now=now),
        run_id=args.run,
    )
    out: str = args.out
    if out.startswith("s3://"):
        from hardened_launcher.audit.s3export import export_to_s3  # noqa: PLC0415 - boto3

        summary = export_to_s3(
            directory,
            public,
            fmt=args.format,
            selection=selection,
            url=out,
            endpoint_url=args.endpoint_url,
            retain_days=args.retain_days,
            lock_mode=args.lock_mode,
        )
    elif out == "-":
        summary = export_to_stream(
            directory, public, fmt=args.format, selection=selection, out=sys.stdout.buffer
        )
    else:
        summary = export_to_file(
            directory, public, fmt=args.format, selection=selection, path=Path(out)
        )
    sys.stderr.write(summary.line() + "\n")
    return 0


def run_hash(_args: argparse.Namespace) -> int:
    state_dir, _ = _settings_dirs()
    value = sys.stdin.buffer.read(MAX_HASH_INPUT_BYTES + 1)
    if len(value) > MAX_HASH_INPUT_BYTES:
        raise UsageError(f"the value is longer than {MAX_HASH_INPUT_BYTES} bytes")
    value = value.removesuffix(b"\n")
    key = load_or_create_hmac_key(state_dir)
    try:
        sys.stdout.write(keyed_hash(key, value) + "\n")
    finally:
        key.wipe()
    return 0
