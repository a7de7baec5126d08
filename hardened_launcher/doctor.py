"""Start-up checks, run together by ``hardened-launcher doctor`` *and* ``start``.

:func:`run_startup_checks` is the one function both commands run (``start`` through
:mod:`hardened_launcher.startup`), so a green ``doctor`` means ``start``'s checks pass: the same
list, the same context, the same results.

Each check is a function of a :class:`DoctorContext` that returns a :class:`CheckResult`; the
checks run in order and later ones read what earlier ones established (the token check needs the
settings, the certificate check needs the key and the token). A check that cannot run because an
earlier one failed is reported as skipped, naming what it waits for. Later issues append their
checks to :data:`CHECKS`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from hardened_launcher import __version__
from hardened_launcher.audit.keys import load_existing_signing_key
from hardened_launcher.audit.reader import list_segments
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.binaries import VerifiedBinary, verify_binary
from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.egress.isolation import missing_firewall_tools
from hardened_launcher.egress.policy import EgressPolicy
from hardened_launcher.egress.policy import load_policy as load_egress_policy
from hardened_launcher.errors import (
    EXIT_CONFIGURATION,
    EXIT_INFRASTRUCTURE,
    LauncherError,
)
from hardened_launcher.executor.container_spec import WORKER_NAME
from hardened_launcher.executor.mounts import ResolvedMounts, resolve_mounts
from hardened_launcher.identity import (
    PoolIdentity,
    PoolPrivateKey,
    Token,
    check_pool_identity,
    load_pool_private_key,
)
from hardened_launcher.pipeline import ReleaseDirectory
from hardened_launcher.policy import CompiledPolicy, Sanitizer
from hardened_launcher.policy.startup import compile_configured_policy, sanitizer_from
from hardened_launcher.policy.worker import SubprocessBackend, start_isolated
from hardened_launcher.settings import Settings, load_settings, shared_network_mode
from hardened_launcher.terminal import for_terminal


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check result, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    fix: str = ""
    exit_code: int = 0
    #: The machine-readable reason of a failure (the error's ``reason``), else empty.
    reason: str = ""


class DockerClient(Protocol):
    """The part of :class:`hardened_launcher.docker_api.DockerClient` the checks use (the test
    seam)."""

    def ping(self) -> bool: ...

    def info(self) -> Mapping[str, Any]: ...

    def inspect_network(self, network: str) -> Mapping[str, Any]: ...


DockerFactory = Callable[[], DockerClient]


def _real_docker_client() -> DockerClient:
    from hardened_launcher.docker_api import DockerClient  # noqa: PLC0415 - when the check runs

    return DockerClient.from_env(timeout_seconds=5)


@dataclass(kw_only=True)
class DoctorContext:
    environ: Mapping[str, str]
    now: datetime
    docker_factory: DockerFactory = _real_docker_client
    settings: Settings | None = None
    key: PoolPrivateKey | None = None
    token: Token | None = None
    identity: PoolIdentity | None = None
    notes: list[str] = field(default_factory=list)
    #: Established by the checks and kept by :mod:`hardened_launcher.startup` (built once).
    docker: DockerClient | None = None
    sanitizer: Sanitizer | None = None
    compiled_policy: CompiledPolicy | None = None
    worker_release: VerifiedBinary | None = None
    mounts: ResolvedMounts | None = None
    egress_policy: EgressPolicy | None = None
    #: ``start`` keeps the policy worker that passed the probe and runs its gate on it (the
    #: same process ``PolicyGate.start`` would start and probe again); the owner closes it.
    keep_policy_worker: bool = False
    policy_worker: SubprocessBackend | None = None


def _failed(name: str, exc: LauncherError) -> CheckResult:
    summary = exc.message
    if exc.detail:
        summary = f"{summary}: {exc.detail}".replace("\n", "; ")
    return CheckResult(
        name=name,
        status=Status.FAIL,
        summary=summary,
        fix=exc.hint or "see the README's configuration table",
        exit_code=exc.exit_code,
        reason=exc.reason,
    )


def check_settings(ctx: DoctorContext) -> CheckResult:
    try:
        ctx.settings = load_settings(ctx.environ)
    except LauncherError as exc:
        return _failed("settings", exc)
    if ctx.settings.warnings:
        return CheckResult(
            name="settings",
            status=Status.WARN,
            summary="; ".join(ctx.settings.warnings),
            fix="remove or rename the variables named",
        )
    return CheckResult(name="settings", status=Status.PASS, summary="all variables parse")


def _skip(name: str, waits_for: str) -> CheckResult:
    return CheckResult(
        name=name, status=Status.SKIP, summary=f"not checked: {waits_for} failed first"
    )


def check_pool_key(ctx: DoctorContext) -> CheckResult:
    name = "pool private key"
    if ctx.settings is None:
        return _skip(name, "settings")
    if ctx.settings.pool_private_key is None:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary="SPACELIFT_POOL_PRIVATE_KEY is not set",
            fix="export SPACELIFT_POOL_PRIVATE_KEY=$(base64 -w 0 spacelift.key)",
            exit_code=EXIT_CONFIGURATION,
        )
    try:
        ctx.key = load_pool_private_key(ctx.settings.pool_private_key)
    except LauncherError as exc:
        return _failed(name, exc)
    return CheckResult(name=name, status=Status.PASS, summary=f"{ctx.key.algorithm} key loaded")


def check_token(ctx: DoctorContext) -> CheckResult:
    name = "pool token"
    if ctx.settings is None:
        return _skip(name, "settings")
    if ctx.settings.token is None:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary="SPACELIFT_TOKEN is not set",
            fix="export SPACELIFT_TOKEN with the token printed when the pool was created",
            exit_code=EXIT_CONFIGURATION,
        )
    try:
        ctx.token = Token.from_encoded(ctx.settings.token)
    except LauncherError as exc:
        return _failed(name, exc)
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"version {ctx.token.version}, pool {ctx.token.pool_id}",
    )


def describe_validity(remaining: timedelta) -> str:
    """How long a certificate stays valid, in words that never read "-1 more days"."""
    if remaining <= timedelta(0):
        return f"expired {_span(-remaining)} ago, accepted only within the clock skew allowance"
    return f"valid for {_span(remaining)} more"


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def check_transport(ctx: DoctorContext) -> CheckResult:
    """Which transport ``start`` will use and where it connects (no network access here)."""
    from hardened_launcher.transport.factory import comms_endpoint  # noqa: PLC0415

    name = "transport"
    if ctx.settings is None or ctx.token is None:
        return _skip(name, "the settings or the token")
    try:
        endpoint = comms_endpoint(ctx.settings, ctx.token)
    except LauncherError as exc:
        return _failed(name, exc)
    return CheckResult(name=name, status=Status.PASS, summary=endpoint.describe())


def check_certificate(ctx: DoctorContext) -> CheckResult:
    name = "pool certificate"
    if ctx.settings is None or ctx.key is None or ctx.token is None:
        return _skip(name, "the key or the token")
    try:
        ctx.identity = check_pool_identity(
            token=ctx.token,
            private_key=ctx.key,
            pinned_ca_sha256=ctx.settings.pinned_ca_sha256,
            now=ctx.now,
            clock_skew=ctx.settings.clock_skew,
        )
    except LauncherError as exc:
        return _failed(name, exc)
    pin = "pinned CA" if ctx.settings.pinned_ca_sha256 else "CA from the token (not pinned)"
    remaining = ctx.identity.not_after - ctx.now
    summary = f"{describe_validity(remaining)}, matches the key, chains to the {pin}"
    if remaining <= timedelta(0):
        # Accepted only because of the clock skew allowance: it stops working any moment.
        return CheckResult(
            name=name,
            status=Status.WARN,
            summary=summary,
            fix="reset the pool (`controlplane pool reset`) and install the new token now",
        )
    if ctx.settings.pinned_ca_sha256 is None:
        return CheckResult(
            name=name,
            status=Status.WARN,
            summary=summary,
            fix="set HL_CA_FINGERPRINT to pin the CA you expect",
        )
    return CheckResult(name=name, status=Status.PASS, summary=summary)


def check_release_keys(ctx: DoctorContext) -> CheckResult:
    name = "release keys"
    if ctx.settings is None:
        return _skip(name, "settings")
    pins = ctx.settings.release_key_fingerprints
    if not pins:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary="HL_RELEASE_KEY_FINGERPRINTS is not set: no release key is trusted, so the "
            "hl-worker release (and every binary) is refused",
            fix="set HL_RELEASE_KEY_FINGERPRINTS to the full fingerprints of your release keys",
            exit_code=EXIT_CONFIGURATION,
            reason="release_keys_missing",
        )
    if ctx.settings.release_keyring is None:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"{len(pins)} key(s) pinned (HL_RELEASE_KEY_FINGERPRINTS) but "
            "HL_RELEASE_KEYRING is not set, so no keyring holds them",
            fix="set HL_RELEASE_KEYRING to a file of the release public keys "
            "(gpg --export --armor FPR > FILE)",
            exit_code=EXIT_CONFIGURATION,
            reason="release_keyring_missing",
        )
    try:
        keyring = Keyring.from_file(ctx.settings.release_keyring)
    except LauncherError as exc:
        return _failed(name, exc)
    missing = sorted(set(pins) - set(keyring.fingerprints))
    if missing:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"pinned key(s) not in {ctx.settings.release_keyring}: {', '.join(missing)}",
            fix="add those public keys to HL_RELEASE_KEYRING, or correct the pinned fingerprints",
            exit_code=EXIT_CONFIGURATION,
        )
    return CheckResult(
        name=name, status=Status.PASS, summary=f"{len(pins)} pinned key(s) found in the keyring"
    )


def _check_private_dir(path: Path) -> str | None:
    """Create ``path`` 0700 if needed; return a problem, or None when it is fine."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = path.stat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_mode & 0o022:
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by this user"
    return None


def check_directories(ctx: DoctorContext) -> CheckResult:
    name = "directories"
    if ctx.settings is None:
        return _skip(name, "settings")
    dirs = {
        "HL_STATE_DIR": ctx.settings.state_dir,
        "HL_CACHE_DIR": ctx.settings.cache_dir,
        "HL_AUDIT_DIR": ctx.settings.audit_dir,
    }
    problems = [f"{var}: {p}" for var, d in dirs.items() if (p := _check_private_dir(d))]
    if problems:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary="; ".join(problems),
            fix="create the directories owned by the launcher's user with mode 0700",
            exit_code=EXIT_CONFIGURATION,
        )
    return CheckResult(name=name, status=Status.PASS, summary="state, cache and audit writable")


def check_audit_log(ctx: DoctorContext) -> CheckResult:
    """The audit key is private and the existing log verifies (a live, open tail is fine)."""
    name = "audit log"
    if ctx.settings is None:
        return _skip(name, "settings")
    try:
        key = load_existing_signing_key(ctx.settings.state_dir)
    except LauncherError as exc:
        return _failed(name, exc)
    if key is None:
        return CheckResult(
            name=name, status=Status.PASS, summary="no log yet; the key is created at first start"
        )
    try:
        if not ctx.settings.audit_dir.exists() or not list_segments(ctx.settings.audit_dir):
            return CheckResult(name=name, status=Status.PASS, summary="key present, no records yet")
        report = verify_log(ctx.settings.audit_dir, key.public_key(), allow_open_tail=True)
    except LauncherError as exc:
        return _failed(name, exc)
    cut = (
        f"; a partial last record ({report.partial_tail_bytes} bytes, never acknowledged) is "
        "cut at start"
        if report.partial_tail_bytes
        else ""
    )
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{report.records} records in {report.segments} segment(s) verify "
        f"(key {report.key_id}){cut}",
    )


def check_docker(ctx: DoctorContext) -> CheckResult:
    name = "docker"
    try:
        client = ctx.docker_factory()
    except LauncherError as exc:  # DOCKER_HOST names an endpoint the launcher does not speak
        return _failed(name, exc)
    try:
        client.ping()
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - DockerError, or a fake's: all mean "unreachable"
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"the Docker daemon is not reachable ({type(exc).__name__})",
            fix="start dockerd, or point DOCKER_HOST at its socket; the launcher needs to write "
            "to it",
            exit_code=EXIT_INFRASTRUCTURE,
        )
    ctx.docker = client
    version = str(info.get("ServerVersion", "unknown version"))
    runtime = ctx.settings.worker_runtime if ctx.settings else None
    runtimes = info.get("Runtimes") or {}
    if runtime and runtime not in runtimes:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"SPACELIFT_WORKER_RUNTIME={runtime} is not a runtime of this daemon "
            f"(it has: {', '.join(sorted(runtimes)) or 'none'})",
            fix="register the runtime in the daemon's configuration or unset the variable",
            exit_code=EXIT_CONFIGURATION,
        )
    return CheckResult(name=name, status=Status.PASS, summary=f"dockerd {version} reachable")


def check_policy_file(ctx: DoctorContext) -> CheckResult:
    name = "run initialization policy"
    if ctx.settings is None:
        return _skip(name, "settings")
    path = ctx.settings.launcher_run_initialization_policy
    if path is None:
        return CheckResult(name=name, status=Status.PASS, summary="none configured")
    ctx.sanitizer = ctx.sanitizer or sanitizer_from(
        ctx.settings, None if ctx.token is None else ctx.token.policy_sanitize_key
    )
    try:
        compiled = compile_configured_policy(
            ctx.settings, ctx.sanitizer, probe=not ctx.keep_policy_worker
        )
        assert compiled is not None  # noqa: S101 - a configured path compiles or raises
        if ctx.keep_policy_worker:
            ctx.policy_worker = start_isolated(
                compiled,
                sanitizer=ctx.sanitizer,
                timeout_s=ctx.settings.policy_timeout.total_seconds(),
            )
    except LauncherError as exc:
        return _failed(name, exc)
    ctx.compiled_policy = compiled
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{path} compiles (sha256 {compiled.sha256[:12]})",
    )


def check_worker_release(ctx: DoctorContext) -> CheckResult:
    """The signed hl-worker release of this version is present and verifies (read-only: the
    verified cache is filled by ``start``)."""
    name = "worker release"
    if ctx.settings is None:
        return _skip(name, "settings")
    if ctx.settings.release_dir is None:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary="HL_RELEASE_DIR is not set: the launcher needs the signed hl-worker release",
            fix="set HL_RELEASE_DIR to <dir> holding <dir>/hl-worker/<version>/{hl-worker,"
            "SHA256SUMS,SHA256SUMS.sig}",
            exit_code=EXIT_CONFIGURATION,
            reason="release_dir_missing",
        )
    keyring = ctx.settings.release_keyring
    if not ctx.settings.release_key_fingerprints or keyring is None:
        return _skip(name, "release keys")
    directory = ReleaseDirectory(root=ctx.settings.release_dir)
    try:
        binary, sums, signature = directory.locate(WORKER_NAME, __version__)
        ctx.worker_release = verify_binary(
            binary,
            sums=sums,
            signature=signature,
            keyring=keyring,
            pins=ctx.settings.release_key_fingerprints,
            name=WORKER_NAME,
            # The signature is judged at the real time, as BinaryGate does for every run.
            max_clock_skew=ctx.settings.clock_skew,
        )
    except LauncherError as exc:
        return _failed(name, exc)
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{WORKER_NAME} {__version__} verifies "
        f"(signed by {ctx.worker_release.signer_fingerprint[-16:]})",
    )


#: Docker's own networks, which every daemon has (inspected only when named otherwise).
_BUILTIN_NETWORKS: Final = frozenset({"bridge", "default", "none"})


def check_worker_network(ctx: DoctorContext) -> CheckResult:
    """``SPACELIFT_WORKER_NETWORK`` exists and does not share the host's network namespace
    (a network whose driver is ``host`` is refused whatever its name or ID)."""
    name = "worker network"
    if ctx.settings is None:
        return _skip(name, "settings")
    network = ctx.settings.worker_network
    if ctx.settings.egress_policy is not None:
        return CheckResult(
            name=name,
            status=Status.PASS,
            summary="runs get their own network from the egress gate (HL_EGRESS_POLICY)",
        )
    if shared_network_mode(network) is not None:  # settings allowed it: the opt-in is set
        return CheckResult(
            name=name,
            status=Status.WARN,
            summary=f"{network} shares a network namespace with runs (HL_UNSAFE_SHARED_NETWORK)",
            fix="unset HL_UNSAFE_SHARED_NETWORK and use a bridge network",
        )
    if network in _BUILTIN_NETWORKS:
        return CheckResult(name=name, status=Status.PASS, summary=f"Docker's {network} network")
    if ctx.docker is None:
        return _skip(name, "docker")
    try:
        driver = str(ctx.docker.inspect_network(network).get("Driver", ""))
    except Exception as exc:  # noqa: BLE001 - NotFoundError, DockerError …: "no such network"
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"SPACELIFT_WORKER_NETWORK={network} is not a network of this Docker daemon "
            f"({type(exc).__name__}): every run would fail",
            fix=f"create it (docker network create {network}) or unset the variable",
            exit_code=EXIT_CONFIGURATION,
            reason="worker_network_missing",
        )
    if driver == "host" and not ctx.settings.unsafe_shared_network:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"SPACELIFT_WORKER_NETWORK={network} is the host's network (driver host)",
            fix="name a bridge network, or set HL_UNSAFE_SHARED_NETWORK=true if this deployment "
            "really needs the host network",
            exit_code=EXIT_CONFIGURATION,
            reason="worker_network_shared",
        )
    return CheckResult(name=name, status=Status.PASS, summary=f"{network} (driver {driver})")


def check_extra_mounts(ctx: DoctorContext) -> CheckResult:
    """Every operator mount judged in canonical form and again at its real path."""
    name = "extra mounts"
    if ctx.settings is None:
        return _skip(name, "settings")
    try:
        ctx.mounts = resolve_mounts(ctx.settings)
    except LauncherError as exc:
        return _failed(name, exc)
    count = len(ctx.mounts.mounts)
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{count} mount(s) resolved and allowed" if count else "none configured",
    )


def check_egress_policy(ctx: DoctorContext) -> CheckResult:
    """``HL_EGRESS_POLICY`` parses, with the private VCS endpoints added (once, at start-up)."""
    name = "egress policy"
    if ctx.settings is None:
        return _skip(name, "settings")
    path = ctx.settings.egress_policy
    if path is None:
        return CheckResult(
            name=name,
            status=Status.PASS,
            summary="none configured: runs join SPACELIFT_WORKER_NETWORK without a proxy",
        )
    try:
        policy = load_egress_policy(path)
        ctx.egress_policy = policy.with_private_vcs(ctx.settings.privatevcs_mappings)
    except LauncherError as exc:
        return _failed(name, exc)
    except ValueError as exc:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"cannot add the private VCS endpoints to the egress policy: {str(exc)[:300]}",
            fix="check SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_<n>",
            exit_code=EXIT_CONFIGURATION,
            reason="egress_policy_invalid",
        )
    missing = missing_firewall_tools()
    if missing:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"{' and '.join(missing)} not found: every run's host firewall rules would "
            "fail to install, so every run would be refused",
            fix="install iptables (it provides ip6tables too) on the launcher's host",
            exit_code=EXIT_CONFIGURATION,
            reason="egress_firewall_unavailable",
        )
    return CheckResult(name=name, status=Status.PASS, summary=f"{path} parses")


def check_unsafe_opt_ins(ctx: DoctorContext) -> CheckResult:
    """``HL_UNSAFE_*`` opt-ins in use: flagged here, audited at every start."""
    name = "unsafe opt-ins"
    if ctx.settings is None:
        return _skip(name, "settings")
    used = ctx.settings.unsafe_opt_ins
    if used:
        return CheckResult(
            name=name,
            status=Status.WARN,
            summary=f"isolation weakened on purpose: {', '.join(used)}",
            fix="unset them unless this deployment cannot run without; every start records "
            "them in the audit log",
        )
    return CheckResult(name=name, status=Status.PASS, summary="none")


Check = Callable[[DoctorContext], CheckResult]

CHECKS: list[Check] = [
    check_settings,
    check_pool_key,
    check_token,
    check_transport,
    check_certificate,
    check_release_keys,
    check_worker_release,
    check_directories,
    check_audit_log,
    check_docker,
    check_worker_network,
    check_extra_mounts,
    check_egress_policy,
    check_policy_file,
    check_unsafe_opt_ins,
]


def run_startup_checks(ctx: DoctorContext) -> list[CheckResult]:
    """Run every check of :data:`CHECKS` in order on ``ctx``: the one function ``doctor`` and
    ``start`` both call. ``ctx`` keeps what the checks established (identity, mounts …)."""
    return [check(ctx) for check in CHECKS]


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
    docker_factory: DockerFactory | None = None,
) -> list[CheckResult]:
    ctx = DoctorContext(
        environ=os.environ if environ is None else environ,
        now=now or datetime.now(UTC),
    )
    if docker_factory is not None:
        ctx.docker_factory = docker_factory
    return run_startup_checks(ctx)


def exit_code_for(results: list[CheckResult]) -> int:
    """0 when nothing failed, else the exit code of the first failure."""
    for result in results:
        if result.status is Status.FAIL:
            return result.exit_code or EXIT_CONFIGURATION
    return 0


def render_table(results: list[CheckResult]) -> str:
    rows = [("CHECK", "RESULT", "DETAIL", "HOW TO FIX")]
    rows += [
        (r.name, r.status.value.upper(), for_terminal(r.summary), for_terminal(r.fix))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
