"""Start-up checks, run together by ``hardened-launcher doctor``.

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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from hardened_launcher.audit.keys import load_existing_signing_key
from hardened_launcher.audit.reader import list_segments
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.binaries.openpgp import Keyring
from hardened_launcher.errors import (
    EXIT_CONFIGURATION,
    EXIT_INFRASTRUCTURE,
    LauncherError,
)
from hardened_launcher.identity import (
    PoolIdentity,
    PoolPrivateKey,
    Token,
    check_pool_identity,
    load_pool_private_key,
)
from hardened_launcher.policy.startup import compile_configured_policy, sanitizer_from
from hardened_launcher.settings import Settings, load_settings


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


class DockerClient(Protocol):
    """The part of ``docker.DockerClient`` the checks use (the test seam)."""

    def ping(self) -> bool: ...

    def info(self) -> dict[str, Any]: ...


DockerFactory = Callable[[], DockerClient]


def _real_docker_client() -> DockerClient:
    import docker  # noqa: PLC0415 - imported only when the check runs

    client: DockerClient = docker.from_env(timeout=5)
    return client


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
    days = (ctx.identity.not_after - ctx.now).days
    summary = f"valid for {days} more days, matches the key, chains to the {pin}"
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
            status=Status.WARN,
            summary="no release key is pinned: every binary will be refused",
            fix="set HL_RELEASE_KEY_FINGERPRINTS to the fingerprints of your release keys",
        )
    if ctx.settings.release_keyring is None:
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"{len(pins)} key(s) pinned but no keyring holds them",
            fix="set HL_RELEASE_KEYRING to a file of the release public keys "
            "(gpg --export --armor FPR > FILE)",
            exit_code=EXIT_CONFIGURATION,
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
    if not list_segments(ctx.settings.audit_dir):
        return CheckResult(name=name, status=Status.PASS, summary="key present, no records yet")
    try:
        report = verify_log(ctx.settings.audit_dir, key.public_key(), allow_open_tail=True)
    except LauncherError as exc:
        return _failed(name, exc)
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{report.records} records in {report.segments} segment(s) verify "
        f"(key {report.key_id})",
    )


def check_docker(ctx: DoctorContext) -> CheckResult:
    name = "docker"
    try:
        client = ctx.docker_factory()
        client.ping()
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types; all mean "unreachable"
        return CheckResult(
            name=name,
            status=Status.FAIL,
            summary=f"the Docker daemon is not reachable ({type(exc).__name__})",
            fix="start dockerd, or point DOCKER_HOST at its socket; the launcher needs to write "
            "to it",
            exit_code=EXIT_INFRASTRUCTURE,
        )
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
    try:
        compiled = compile_configured_policy(ctx.settings, sanitizer_from(ctx.settings))
    except LauncherError as exc:
        return _failed(name, exc)
    assert compiled is not None  # noqa: S101 - a configured path compiles or raises
    return CheckResult(
        name=name,
        status=Status.PASS,
        summary=f"{path} compiles (sha256 {compiled.sha256[:12]})",
    )


Check = Callable[[DoctorContext], CheckResult]

CHECKS: list[Check] = [
    check_settings,
    check_pool_key,
    check_token,
    check_transport,
    check_certificate,
    check_release_keys,
    check_directories,
    check_audit_log,
    check_docker,
    check_policy_file,
]


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
    return [check(ctx) for check in CHECKS]


def exit_code_for(results: list[CheckResult]) -> int:
    """0 when nothing failed, else the exit code of the first failure."""
    for result in results:
        if result.status is Status.FAIL:
            return result.exit_code or EXIT_CONFIGURATION
    return 0


def render_table(results: list[CheckResult]) -> str:
    rows = [("CHECK", "RESULT", "DETAIL", "HOW TO FIX")]
    rows += [(r.name, r.status.value.upper(), r.summary, r.fix) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
