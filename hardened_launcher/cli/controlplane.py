"""CLI command group: ``hardened-launcher controlplane …`` (the reference control plane).

Parsing and output only; the work is in :mod:`hardened_launcher.controlplane`. The state
directory comes from ``--dir`` or ``HL_CP_DIR``. A pool token is printed to stdout and nowhere
else.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from hardened_launcher.bounded_input import read_bounded
from hardened_launcher.cli.arguments import int_in_range
from hardened_launcher.controlplane.ca import (
    ControlPlaneSettings,
    StateDir,
    init_state_dir,
    open_state_dir,
)
from hardened_launcher.controlplane.dispatch import TERMINAL_RUN_STATES, RunState
from hardened_launcher.controlplane.doorbell import ring
from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.pools import (
    DEFAULT_POOL_CERTIFICATE_DAYS,
    MAX_POOL_CERTIFICATE_DAYS,
    IssuedPool,
    create_pool,
    reset_pool,
)
from hardened_launcher.controlplane.runs import (
    cancel_run,
    confirm_run,
    discard_run,
    submit_run,
)
from hardened_launcher.controlplane.settings import load_controlplane_config
from hardened_launcher.errors import ConfigurationError, UsageError
from hardened_launcher.executor.runspec import MAX_RUN_SPEC_BYTES
from hardened_launcher.identity.csr import MAX_CSR_PEM_BYTES, load_csr_pem
from hardened_launcher.secrets import wipe_bytearray
from hardened_launcher.terminal import TerminalWriter, for_terminal
from hardened_launcher.transport.base import Transport
from hardened_launcher.transport.broker_config import reload_broker

DIR_VARIABLE = "HL_CP_DIR"
FOLLOW_POLL_SECONDS = 2.0
#: ``run show`` prints at most this many lines of each output file.
MAX_OUTPUT_LINES_SHOWN = 200


def _iso(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _state_dir_arg(args: argparse.Namespace) -> Path:
    # Every command comes here first: every HL_CP_* variable is checked (unknown ones too).
    config = load_controlplane_config(os.environ)
    raw = args.dir or config.state_dir
    if not raw:
        raise UsageError(
            "no control-plane state directory given",
            hint=f"Pass --dir DIR or set {DIR_VARIABLE}",
            reason="state_dir_missing",
        )
    return Path(raw)


def _state(args: argparse.Namespace) -> StateDir:
    return open_state_dir(_state_dir_arg(args))


def _read_bounded(path: Path, max_bytes: int, what: str) -> bytearray:
    return read_bounded(path, max_bytes=max_bytes, what=what, too_large=ConfigurationError)


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", default=None, help=f"control-plane state directory (default: ${DIR_VARIABLE})"
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "controlplane",
        help="the reference control plane (CA, pools, run queue, dispatch)",
        description="The reference control plane. See docs/controlplane.md.",
    )
    group = parser.add_subparsers(dest="cp_command", metavar="ACTION")
    group.required = True

    init = group.add_parser("init", help="create a state directory: CA, keys, store, broker")
    _add_dir(init)
    init.add_argument("--broker-host", default="127.0.0.1", help="broker listener address")
    init.add_argument(
        "--broker-port", type=int_in_range(1, 65535), default=8883, help="broker listener port"
    )
    init.add_argument("--broker-url", default=None, help="broker URL put in tokens")
    init.add_argument(
        "--control-plane-url",
        default=None,
        help="URL put in tokens (default: the long-poll endpoint https://localhost:PORT with "
        "poll, http://localhost:8080 with mqtt)",
    )
    init.add_argument(
        "--protocol",
        choices=("poll", "mqtt"),
        default="poll",
        help="worker transport `serve` offers: HTTPS long polling (default, no broker) or MQTT",
    )
    init.add_argument("--poll-host", default="127.0.0.1", help="long-poll listener address")
    init.add_argument("--poll-port", type=int, default=8443, help="long-poll listener port")
    init.add_argument("--namespace", default="spacelift", help="first MQTT topic level")
    init.add_argument(
        "--no-broker", action="store_true", help="do not write the mosquitto configuration"
    )
    init.set_defaults(handler=run_init)

    pool = group.add_parser("pool", help="create, reset or cycle a worker pool")
    pool_actions = pool.add_subparsers(dest="pool_command", metavar="ACTION")
    pool_actions.required = True
    for action, handler, text in (
        ("create", run_pool_create, "issue a pool certificate from a CSR; prints the token"),
        ("reset", run_pool_reset, "re-issue the certificate and revoke the old one"),
    ):
        p = pool_actions.add_parser(action, help=text)
        _add_dir(p)
        p.add_argument("--name", required=True, help="pool name (= pool id, a DNS label)")
        p.add_argument("--csr", required=True, type=Path, help="PEM CSR (from keygen/openssl)")
        p.add_argument("--broker-url", default=None, help="override the broker URL in the token")
        p.add_argument("--control-plane-url", default=None, help="override the control-plane URL")
        p.add_argument(
            "--days",
            type=int_in_range(1, MAX_POOL_CERTIFICATE_DAYS, unit="days"),
            default=DEFAULT_POOL_CERTIFICATE_DAYS,
            help=f"certificate validity in days (1 to {MAX_POOL_CERTIFICATE_DAYS}; never beyond "
            "the CA certificate)",
        )
        if handler is run_pool_reset:
            p.add_argument(
                "--broker-pid-file",
                type=Path,
                default=None,
                help="mosquitto's pid file, to SIGHUP it after the CRL is rewritten "
                "(default: HL_CP_BROKER_PID_FILE, else <dir>/broker/mosquitto.pid if present)",
            )
        p.set_defaults(handler=handler)
    cycle = pool_actions.add_parser("cycle", help="tell every worker of the pool to exit")
    _add_dir(cycle)
    cycle.add_argument("--name", required=True)
    cycle.set_defaults(handler=run_pool_cycle)
    listing = pool_actions.add_parser("list", help="list pools")
    _add_dir(listing)
    listing.set_defaults(handler=run_pool_list)

    workers = group.add_parser("workers", help="list workers")
    workers_actions = workers.add_subparsers(dest="workers_command", metavar="ACTION")
    workers_actions.required = True
    wl = workers_actions.add_parser("list", help="id, pool, state, tags, last heartbeat")
    _add_dir(wl)
    wl.add_argument("--pool", default=None)
    wl.set_defaults(handler=run_workers_list)

    worker = group.add_parser("worker", help="drain or undrain one worker")
    worker_actions = worker.add_subparsers(dest="worker_command", metavar="ACTION")
    worker_actions.required = True
    for action, handler in (("drain", run_worker_drain), ("undrain", run_worker_undrain)):
        w = worker_actions.add_parser(action, help=f"{action} a worker")
        _add_dir(w)
        w.add_argument("worker_id")
        w.set_defaults(handler=handler)

    run = group.add_parser(
        "run", help="submit, show, follow logs of, cancel, confirm or discard a run"
    )
    run_actions = run.add_subparsers(dest="run_command", metavar="ACTION")
    run_actions.required = True
    submit = run_actions.add_parser("submit", help="validate, seal and queue a run spec")
    _add_dir(submit)
    submit.add_argument("--pool", required=True)
    submit.add_argument(
        "--expires-in",
        type=int_in_range(1, 24 * 3600, unit="seconds"),
        default=24 * 3600,
        help="seconds the sealed run state stays valid (max 86400)",
    )
    submit.add_argument("spec", type=Path, help="run spec YAML (docs/runspec.md)")
    submit.set_defaults(handler=run_submit)
    show = run_actions.add_parser("show", help="one run's state and history")
    _add_dir(show)
    show.add_argument("run_id")
    show.set_defaults(handler=run_show)
    logs = run_actions.add_parser("logs", help="print a run's log chunks (HL_CP_S3_*)")
    _add_dir(logs)
    logs.add_argument("run_id")
    logs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    logs.set_defaults(handler=run_logs)
    cancel = run_actions.add_parser("cancel", help="cancel a queued or running run")
    _add_dir(cancel)
    cancel.add_argument("run_id")
    cancel.set_defaults(handler=run_cancel)
    for action, handler, text in (
        ("confirm", run_confirm, "apply an UNCONFIRMED planning run's plan (queues its apply run)"),
        ("discard", run_discard, "end an UNCONFIRMED planning run without applying"),
    ):
        decide = run_actions.add_parser(action, help=text)
        _add_dir(decide)
        decide.add_argument("run_id")
        decide.set_defaults(handler=handler)

    runs = group.add_parser("runs", help="list runs")
    runs_actions = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs_actions.required = True
    rl = runs_actions.add_parser("list", help="id, pool, state, worker, reason")
    _add_dir(rl)
    rl.add_argument("--pool", default=None)
    rl.set_defaults(handler=run_runs_list)

    witnesses = group.add_parser(
        "witnesses", help="the audit witnesses launchers sent, as JSON lines (docs/audit.md)"
    )
    _add_dir(witnesses)
    witnesses.add_argument("--key-id", default=None, help="only this audit key's (64 hex)")
    witnesses.set_defaults(handler=run_witnesses)

    serve = group.add_parser("serve", help="dispatch runs over MQTT until SIGTERM")
    _add_dir(serve)
    serve.set_defaults(handler=run_serve)


# -- handlers ---------------------------------------------------------------------------------


def run_init(args: argparse.Namespace) -> int:
    path = _state_dir_arg(args)
    host = args.broker_host
    broker_url = args.broker_url or (
        f"mqtts://localhost:{args.broker_port}"
        if host in ("127.0.0.1", "localhost", "::1")
        else f"mqtts://{host}:{args.broker_port}"
    )
    control_plane_url = args.control_plane_url
    if control_plane_url is None:
        poll_host = args.poll_host
        local = poll_host in ("127.0.0.1", "localhost", "::1")
        control_plane_url = (
            f"https://{'localhost' if local else poll_host}:{args.poll_port}"
            if args.protocol == "poll"
            else "http://localhost:8080"
        )
    settings = ControlPlaneSettings(
        broker_url=broker_url,
        control_plane_url=control_plane_url,
        namespace=args.namespace,
        broker_host=host,
        broker_port=args.broker_port,
        protocol=args.protocol,
        poll_host=args.poll_host,
        poll_port=args.poll_port,
    )
    state = init_state_dir(path, settings=settings, with_broker=not args.no_broker)
    print(f"initialised control plane in {state.path}")
    if args.protocol == "poll":
        print(f"workers: long polling at {control_plane_url} (`serve` listens; no broker)")
    elif not args.no_broker:
        print(f"broker: mosquitto -c {state.broker_dir / 'mosquitto.conf'}")
    return 0


def _csr(path: Path) -> x509.CertificateSigningRequest:
    return load_csr_pem(bytes(_read_bounded(path, MAX_CSR_PEM_BYTES, "CSR")))


def _issue_and_print(
    args: argparse.Namespace, issue: Callable[..., IssuedPool]
) -> tuple[StateDir, IssuedPool]:
    """Create or reset a pool from the CSR and print its token on stdout (only there)."""
    state = _state(args)
    with state.open_store() as store:
        issued = issue(
            state,
            store,
            name=args.name,
            csr=_csr(args.csr),
            now=datetime.now(UTC),
            broker_url=args.broker_url,
            control_plane_url=args.control_plane_url,
            days=args.days,
        )
    with issued.token, issued.token.view() as view:
        sys.stdout.write(bytes(view).decode("ascii") + "\n")
    sys.stdout.flush()
    return state, issued


def run_pool_create(args: argparse.Namespace) -> int:
    _issue_and_print(args, create_pool)
    return 0


def run_pool_reset(args: argparse.Namespace) -> int:
    # A pid file that cannot be used is refused before the certificate is revoked.
    pid = _state(args).broker_pid(args.broker_pid_file, environ=os.environ)
    state, issued = _issue_and_print(args, reset_pool)
    revoked = issued.revoked.serial if issued.revoked else "-"
    if issued.revocation_list is not None:
        if pid is not None:
            reload_broker(pid)
            applied = f"broker (pid {pid}) reloaded with SIGHUP"
        elif state.settings.protocol == "poll":
            applied = "serve refuses the old certificate within 2 s (long polling; no SIGHUP)"
        else:
            applied = "send mosquitto SIGHUP to apply it (no broker pid file known)"
        sys.stderr.write(
            f"revoked certificate serial {revoked}; CRL rewritten at {issued.revocation_list}: "
            f"{applied}; {len(issued.cycled_workers)} connected worker(s) told to cycle\n"
        )
    else:
        sys.stderr.write(
            f"revoked certificate serial {revoked} (recorded in the store; no broker directory, "
            "so no CRL was written)\n"
        )
    return 0


def run_pool_cycle(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        pool = store.get_pool(args.name)
        ids = store.cycle_pool(pool.id, now=time.time())
    print(f"cycle queued for {len(ids)} worker(s) of pool {pool.id}")
    return 0


def run_pool_list(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        pools = store.list_pools()
    print(f"{'POOL':<24} {'CERT SERIAL':<34} {'CREATED':<20}")
    for p in pools:
        print(for_terminal(f"{p.id:<24} {p.certificate_serial:<34} {_iso(p.created_at):<20}"))
    return 0


def run_workers_list(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        records = store.list_workers(pool_id=args.pool)
    print(f"{'WORKER':<28} {'POOL':<20} {'STATE':<8} {'LAST HEARTBEAT':<20} {'VERSION':<10} TAGS")
    for r in records:
        w = r.worker
        state_text = "DRAINED" if w.drained and w.alive else w.state.value
        tags = ",".join(f"{k}={v}" for k, v in sorted(r.metadata.items()))
        print(
            for_terminal(
                f"{w.id:<28} {w.pool_id:<20} {state_text:<8} {_iso(w.last_heartbeat_at):<20} "
                f"{r.version:<10} {tags}"
            )
        )
    return 0


def _drain(args: argparse.Namespace, *, drained: bool) -> int:
    state = _state(args)
    with state.open_store() as store:
        store.set_worker_drained(args.worker_id, drained=drained, now=time.time())
    ring(state.path)  # serve sends the notice now
    print(for_terminal(f"worker {args.worker_id} {'drained' if drained else 'undrained'}"))
    return 0


def run_worker_drain(args: argparse.Namespace) -> int:
    return _drain(args, drained=True)


def run_worker_undrain(args: argparse.Namespace) -> int:
    return _drain(args, drained=False)


def run_submit(args: argparse.Namespace) -> int:
    state = _state(args)
    spec = _read_bounded(args.spec, MAX_RUN_SPEC_BYTES, "run spec")
    try:
        with state.open_store() as store:
            run = submit_run(
                state,
                store,
                pool=args.pool,
                spec=spec,
                now=datetime.now(UTC),
                lifetime=timedelta(seconds=args.expires_in),
            )
    finally:
        wipe_bytearray(spec)
    print(run.id)
    return 0


def run_runs_list(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        runs = store.list_runs(pool_id=args.pool)
        phases = store.current_phases()
    print(
        f"{'RUN':<32} {'POOL':<20} {'STATE':<11} {'PHASE':<16} {'WORKER':<28} {'UPDATED':<20} "
        "REASON"
    )
    for r in runs:
        print(
            for_terminal(
                f"{r.id:<32} {r.pool_id:<20} {r.state.value:<11} {phases.get(r.id, '-'):<16} "
                f"{r.worker_id or '-':<28} {_iso(r.updated_at):<20} {r.reason or '-'}"
            )
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        details = store.get_run_details(args.run_id)
        events = store.events(run_id=args.run_id)
        phases = store.phases(args.run_id)
        outputs = store.outputs(args.run_id)
        plan = store.plan_of(args.run_id)
        applies = store.plan_applied_by(args.run_id)
    r = details.run
    rows: list[tuple[str, str]] = [
        ("run", r.id),
        ("pool", r.pool_id),
        ("state", r.state.value + (" (cancel requested)" if r.cancel_requested else "")),
        ("worker", r.worker_id or "-"),
        ("reason", r.reason or "-"),
        ("message", r.message or "-"),
        ("exit code", "-" if r.exit_code is None else str(r.exit_code)),
        ("lease attempts", str(r.attempts)),
        ("spec sha256", details.spec_sha256),
        ("log chunks issued", str(details.log_chunks)),
        ("created", _iso(r.created_at)),
        ("started", _iso(r.started_at)),
        ("finished", _iso(r.finished_at)),
        ("envelope expires", _iso(r.envelope_expires_at)),
    ]
    if plan is not None:
        rows += [("apply run", plan.apply_run_id), ("plan sha256", plan.artifact_sha256 or "-")]
    if applies is not None:
        rows.append(("applies plan of", applies.run_id))
    for key, value in rows:
        print(for_terminal(f"{key + ':':<19}{value}"))
    if phases:
        print("phases:")
        for p in phases:
            print(for_terminal(f"  {_iso(p.started_at)} {p.name}"))
    if outputs is not None:
        files, truncated = outputs
        print("outputs:" + (" (truncated: some did not fit)" if truncated else ""))
        for name, encoded in sorted(files.items()):
            print(for_terminal(f"  {name}:"))
            text = base64.b64decode(encoded).decode("utf-8", "replace")
            for line in text.splitlines()[:MAX_OUTPUT_LINES_SHOWN]:
                print(for_terminal(f"    {line}"))
    print("history:")
    for at, kind, fields in events:
        extra = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        print(for_terminal(f"  {_iso(at)} {kind} {extra}".rstrip()))
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from hardened_launcher.controlplane.logs import LogStorage  # noqa: PLC0415

    state = _state(args)
    config = load_controlplane_config(os.environ).log_storage
    if config is None:
        raise ControlPlaneConfigurationError(
            "no log storage configured",
            hint="Set HL_CP_S3_BUCKET (and HL_CP_S3_ENDPOINT_URL etc., docs/controlplane.md)",
            reason="log_storage_missing",
        )
    storage = LogStorage(config)
    next_chunk = 0
    out = TerminalWriter(sys.stdout.buffer)  # a run's log: escaped when stdout is a terminal
    with state.open_store() as store:
        while True:
            run = store.get_run(args.run_id)  # before reading, so no chunk is missed
            for chunk, data in storage.read_from(run.id, next_chunk):
                out.write(data)
                next_chunk = chunk + 1
            out.flush()
            # An UNCONFIRMED run's log is complete too (its applying run has its own).
            if not args.follow or run.state in TERMINAL_RUN_STATES | {RunState.UNCONFIRMED}:
                break
            time.sleep(FOLLOW_POLL_SECONDS)
    out.finish()
    missing = [c for c in storage.list_chunks(args.run_id) if c >= next_chunk]
    if missing:
        sys.stderr.write(
            f"warning: chunk {next_chunk} is missing; {len(missing)} later chunk(s) not shown\n"
        )
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        run = cancel_run(store, args.run_id, now=time.time())
    ring(state.path)
    suffix = " (the worker was told to stop it)" if run.cancel_requested else ""
    print(for_terminal(f"run {run.id}: {run.state.value}{suffix}"))
    return 0


def run_confirm(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        run, apply_run_id = confirm_run(store, args.run_id, now=time.time())
    ring(state.path)
    print(for_terminal(f"run {run.id}: {run.state.value}; applying run {apply_run_id} queued"))
    return 0


def run_discard(args: argparse.Namespace) -> int:
    state = _state(args)
    with state.open_store() as store:
        run = discard_run(store, args.run_id, now=time.time())
    print(for_terminal(f"run {run.id}: {run.state.value}; nothing was applied"))
    return 0


def run_witnesses(args: argparse.Namespace) -> int:
    """Print the stored audit witnesses (JSON lines), for ``audit verify --witness FILE``."""
    key: str | None = args.key_id
    if key is not None and (len(key) != 64 or not all(c in "0123456789abcdef" for c in key)):
        raise UsageError(
            "--key-id is not an audit key id (64 lower-case hex digits)",
            hint="`hardened-launcher audit key` on the launcher host prints it",
            reason="usage",
        )
    state = _state(args)
    with state.open_store() as store:
        records = store.witnesses(key_id=key)
    # Canonical ASCII JSON the store holds as the control plane encoded it (no control bytes).
    sys.stdout.buffer.write("".join(f"{r}\n" for r in records).encode("ascii"))
    sys.stdout.flush()
    sys.stderr.write(f"{len(records)} witness record(s)\n")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from hardened_launcher.directory_lock import DirectoryLock  # noqa: PLC0415

    state = _state(args)

    # One serve per state directory: two would race for the same assignments and messages,
    # and the second would take over the doorbell. Held until this process exits.
    serve_lock = DirectoryLock.acquire(
        state.path,
        what="the control plane state",
        reason="state_dir_in_use",
        hint="another `controlplane serve` uses this state directory: stop it first "
        "(`pgrep -af 'controlplane serve'`)",
    )
    try:
        return _serve(state)
    finally:
        serve_lock.release()


def _serve(state: StateDir) -> int:
    from hardened_launcher.controlplane.logs import LogStorage  # noqa: PLC0415
    from hardened_launcher.controlplane.serve import (  # noqa: PLC0415 - only serve needs it
        Coordinator,
        ServeConfig,
        serve,
        stop_on_signals,
    )

    cp_config = load_controlplane_config(os.environ)
    config = cp_config.log_storage
    storage = LogStorage(config) if config is not None else None
    stop = threading.Event()
    stop_on_signals(stop)
    settings = state.settings
    with state.open_store() as store:
        # A fresh CRL at every start, so its next_update never lapses (mosquitto reads it on
        # its own start and on SIGHUP; the long-poll server when it starts).
        state.update_revocation_list(store, now=datetime.now(UTC))
        transport, where = _serve_transport(state)
        transport.start()
        try:
            sys.stderr.write(
                f"control plane serving on {where} "
                f"({settings.protocol}, namespace {settings.namespace})\n"
            )
            sys.stderr.flush()
            exporter = None
            if storage is not None:
                from hardened_launcher.controlplane.witness import (  # noqa: PLC0415
                    WitnessExporter,
                )

                exporter = WitnessExporter(storage)
            try:
                serve(
                    Coordinator(
                        store,
                        transport,
                        config=ServeConfig(policy=cp_config.dispatch),
                        log_urls=storage,
                        signing_key=state.signing_key(),
                        plan_urls=storage,
                        witness_exporter=exporter,
                    ),
                    stop=stop,
                    doorbell_dir=state.path,
                )
            finally:
                if exporter is not None:
                    exporter.close()
        finally:
            transport.close()
    return 0


def _serve_transport(state: StateDir) -> tuple[Transport, str]:
    """The control plane's transport for ``serve``: the long-poll server or the MQTT client."""
    settings = state.settings
    if settings.protocol == "poll":
        from hardened_launcher.controlplane.store import (  # noqa: PLC0415
            SqliteOutboxJournal,
            current_certificate_serials,
            retired_certificate_serials,
        )
        from hardened_launcher.transport.poll_server import (  # noqa: PLC0415
            PollServer,
            PoolCertificates,
        )

        store_path = state.store_path
        server = PollServer(
            host=settings.poll_host,
            port=settings.poll_port,
            namespace=settings.namespace,
            ssl_context=state.poll_server_tls(),
            certificates=PoolCertificates(
                lambda: current_certificate_serials(store_path),
                load_retired=lambda since: retired_certificate_serials(store_path, since=since),
                grace_seconds=load_controlplane_config(os.environ).reset_grace_seconds,
            ),
            # Unacknowledged messages to workers survive a restart of serve (same ids).
            session_options={"journal": SqliteOutboxJournal(store_path)},
        )
        return server, f"https://{settings.poll_host}:{settings.poll_port}"
    from hardened_launcher.transport.client import MqttTransport  # noqa: PLC0415

    credentials = state.tls_credentials()
    try:
        transport = MqttTransport.for_control_plane(
            host=settings.broker_host,
            port=settings.broker_port,
            namespace=settings.namespace,
            credentials=credentials,
        )
    finally:
        credentials.private_key_pem.wipe()
    return transport, f"{settings.broker_host}:{settings.broker_port}"
