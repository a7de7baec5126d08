"""The control plane's own variables (``HL_CP_*``): typed, validated, documented, one model.

:func:`load_controlplane_config` parses every ``HL_CP_*`` variable once and returns a frozen
:class:`ControlPlaneConfig`, or raises one :class:`ControlPlaneConfigurationError` listing every
problem (an unknown ``HL_CP_*`` name with the closest known one). Every ``controlplane`` command
loads it first. :data:`CP_VARIABLES` is the one table: docs/controlplane.md's table is generated
from it (:func:`markdown_table`, a test checks drift). The launcher ignores ``HL_CP_*``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from hardened_launcher.controlplane.dispatch import DispatchPolicy
from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.logs import (
    DEFAULT_URL_EXPIRY_SECONDS,
    DEFAULT_URLS_PER_BATCH,
    MAX_URL_EXPIRY_SECONDS,
    MAX_URLS_PER_BATCH,
    LogStorageConfig,
)
from hardened_launcher.secrets import Secret
from hardened_launcher.urls import split_url

__all__ = [
    "CP_PREFIX",
    "CP_VARIABLES",
    "ControlPlaneConfig",
    "CpVariable",
    "load_controlplane_config",
    "markdown_table",
]

CP_PREFIX: Final = "HL_CP_"
MAX_VALUE_CHARS: Final = 4096
DEFAULT_REGION: Final = "us-east-1"
#: Upper bound of each dispatch timing (seconds): a day.
MAX_DISPATCH_SECONDS: Final = 86_400
_DEFAULT_POLICY: Final = DispatchPolicy()
_REGION_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEY_ID_RE: Final = re.compile(r"[A-Za-z0-9_+=,.@/-]{1,256}")

DEFAULT_RESET_GRACE_SECONDS: Final = 120
MAX_RESET_GRACE_SECONDS: Final = 3600

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpVariable:
    """One row of the control plane's configuration table."""

    name: str
    default: str
    description: str
    secret: bool = False


CP_VARIABLES: Final[tuple[CpVariable, ...]] = (
    CpVariable(
        name="HL_CP_DIR",
        default="(required unless `--dir`)",
        description="State directory for every `controlplane` command.",
    ),
    CpVariable(
        name="HL_CP_BROKER_PID_FILE",
        default="`<dir>/broker/mosquitto.pid` if present",
        description="mosquitto's pid file, signalled by `pool reset` after the CRL is rewritten.",
    ),
    CpVariable(
        name="HL_CP_S3_BUCKET",
        default="unset (no log URLs)",
        description="Bucket for run logs (an S3 bucket name).",
    ),
    CpVariable(
        name="HL_CP_S3_ENDPOINT_URL",
        default="unset (AWS)",
        description="S3 endpoint (SeaweedFS, MinIO…): an `http://` or `https://` URL.",
    ),
    CpVariable(
        name="HL_CP_S3_REGION",
        default=f"`{DEFAULT_REGION}`",
        description="Signing region (lower-case letters, digits and `-`).",
    ),
    CpVariable(
        name="HL_CP_S3_PREFIX",
        default="empty",
        description="Object key prefix: empty or ending in `/` (letters, digits, `_ . -`).",
    ),
    CpVariable(
        name="HL_CP_S3_ACCESS_KEY_ID",
        default="unset (boto3's chain)",
        description="Access key id; give it with `HL_CP_S3_SECRET_ACCESS_KEY` or neither.",
    ),
    CpVariable(
        name="HL_CP_S3_SECRET_ACCESS_KEY",
        default="unset (boto3's chain)",
        description="Secret access key; give it with `HL_CP_S3_ACCESS_KEY_ID` or neither.",
        secret=True,
    ),
    CpVariable(
        name="HL_CP_LOG_URL_EXPIRY_SECONDS",
        default=f"`{DEFAULT_URL_EXPIRY_SECONDS}`",
        description=f"Lifetime of each presigned log URL (1 to {MAX_URL_EXPIRY_SECONDS}).",
    ),
    CpVariable(
        name="HL_CP_LOG_URLS_PER_BATCH",
        default=f"`{DEFAULT_URLS_PER_BATCH}`",
        description=f"Log URLs per assignment or request (1 to {MAX_URLS_PER_BATCH}).",
    ),
    CpVariable(
        name="HL_CP_RESET_GRACE_SECONDS",
        default=f"`{DEFAULT_RESET_GRACE_SECONDS}`",
        description="Long poll: seconds after `pool reset` during which the old certificate "
        "may still deliver statuses, bye, acks and log-URL requests (never take a lease); "
        f"0 to {MAX_RESET_GRACE_SECONDS}, 0 refuses it at once.",
    ),
    CpVariable(
        name="HL_CP_LEASE_SECONDS",
        default=f"`{int(_DEFAULT_POLICY.lease_seconds)}`",
        description="How long an assigned run waits for the worker's `accept` before it is "
        f"re-queued (1 to {MAX_DISPATCH_SECONDS}).",
    ),
    CpVariable(
        name="HL_CP_HEARTBEAT_TIMEOUT_SECONDS",
        default=f"`{int(_DEFAULT_POLICY.heartbeat_timeout_seconds)}`",
        description="Silence after which a worker is lost, counted from its last heartbeat or "
        f"from the control plane's own (re)connection, whichever is later (1 to "
        f"{MAX_DISPATCH_SECONDS}).",
    ),
    CpVariable(
        name="HL_CP_LOST_RUN_GRACE_SECONDS",
        default=f"`{int(_DEFAULT_POLICY.lost_run_grace_seconds)}`",
        description="How long a worker marked gone by its will, or a RUNNING run missing from "
        "its worker's heartbeats, has to reappear before the run is CRASHED (1 to "
        f"{MAX_DISPATCH_SECONDS}).",
    ),
)
_NAMES: Final = tuple(v.name for v in CP_VARIABLES)
_SECRET_NAMES: Final = frozenset(v.name for v in CP_VARIABLES if v.secret)


@dataclass(frozen=True, kw_only=True)
class ControlPlaneConfig:
    """Every ``HL_CP_*`` setting, parsed and checked. Build it with
    :func:`load_controlplane_config`."""

    state_dir: Path | None = None
    broker_pid_file: Path | None = None
    #: Where run logs go; None when ``HL_CP_S3_BUCKET`` is unset.
    log_storage: LogStorageConfig | None = field(default=None, repr=False)
    #: ``HL_CP_RESET_GRACE_SECONDS``: how long a reset pool's old certificate may still finish.
    reset_grace_seconds: int = DEFAULT_RESET_GRACE_SECONDS
    #: Dispatch timings (``HL_CP_LEASE_SECONDS``, ``HL_CP_HEARTBEAT_TIMEOUT_SECONDS``,
    #: ``HL_CP_LOST_RUN_GRACE_SECONDS``); the defaults of :class:`DispatchPolicy` when unset.
    dispatch: DispatchPolicy = field(default_factory=DispatchPolicy)


class _InvalidError(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _text(value: str) -> str:
    if len(value) > MAX_VALUE_CHARS:
        raise _InvalidError(f"is longer than {MAX_VALUE_CHARS} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _InvalidError("holds control characters")
    return value.strip()


def _path(value: str) -> Path:
    return Path(_text(value))


def _url(value: str) -> str:
    text = _text(value)
    parts = split_url(text)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _InvalidError("is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise _InvalidError("holds credentials; use HL_CP_S3_ACCESS_KEY_ID and _SECRET_ACCESS_KEY")
    return text


def _region(value: str) -> str:
    text = _text(value)
    if not _REGION_RE.fullmatch(text):
        raise _InvalidError("is not a region name such as us-east-1")
    return text


def _key_id(value: str) -> str:
    text = _text(value)
    if not _KEY_ID_RE.fullmatch(text):
        raise _InvalidError("is not an access key id")
    return text


def _number(maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = _text(value)
        if not re.fullmatch(r"[0-9]{1,10}", text) or not 1 <= int(text) <= maximum:
            raise _InvalidError(f"is not a whole number from 1 to {maximum}")
        return int(text)

    return parse


def _seconds(maximum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = _text(value)
        if not re.fullmatch(r"[0-9]{1,10}", text) or not 0 <= int(text) <= maximum:
            raise _InvalidError(f"is not a whole number of seconds from 0 to {maximum}")
        return int(text)

    return parse


def _suggestion(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), _NAMES, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


class _Loader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[str] = []

    def get(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return None
        try:
            return parse(raw)
        except _InvalidError as exc:
            shown = "value not shown" if name in _SECRET_NAMES else f"got {raw[:80]!r}"
            self.problems.append(f"{name}: {exc.why} ({shown})")
            return None

    def unknown(self) -> None:
        for name in sorted(self.env):
            if name.upper().startswith(CP_PREFIX) and name not in _NAMES:
                self.problems.append(
                    f"{name[:80]}: is not a control-plane setting{_suggestion(name)}; the "
                    "HL_CP_* variables are listed in docs/controlplane.md"
                )


def load_controlplane_config(environ: Mapping[str, str]) -> ControlPlaneConfig:
    """Parse every ``HL_CP_*`` variable of ``environ``; raise one error listing every problem."""
    loader = _Loader(environ)
    loader.unknown()
    state_dir = loader.get("HL_CP_DIR", _path)
    pid_file = loader.get("HL_CP_BROKER_PID_FILE", _path)
    bucket = loader.get("HL_CP_S3_BUCKET", _text)
    endpoint = loader.get("HL_CP_S3_ENDPOINT_URL", _url)
    region = loader.get("HL_CP_S3_REGION", _region)
    prefix = loader.get("HL_CP_S3_PREFIX", _text)
    key_id = loader.get("HL_CP_S3_ACCESS_KEY_ID", _key_id)
    secret = loader.get("HL_CP_S3_SECRET_ACCESS_KEY", _text)
    expiry = loader.get("HL_CP_LOG_URL_EXPIRY_SECONDS", _number(MAX_URL_EXPIRY_SECONDS))
    per_batch = loader.get("HL_CP_LOG_URLS_PER_BATCH", _number(MAX_URLS_PER_BATCH))
    reset_grace = loader.get("HL_CP_RESET_GRACE_SECONDS", _seconds(MAX_RESET_GRACE_SECONDS))
    lease = loader.get("HL_CP_LEASE_SECONDS", _number(MAX_DISPATCH_SECONDS))
    timeout = loader.get("HL_CP_HEARTBEAT_TIMEOUT_SECONDS", _number(MAX_DISPATCH_SECONDS))
    grace = loader.get("HL_CP_LOST_RUN_GRACE_SECONDS", _number(MAX_DISPATCH_SECONDS))
    storage: LogStorageConfig | None = None
    if bucket is not None and not loader.problems:
        try:
            storage = LogStorageConfig(
                bucket=bucket,
                endpoint_url=endpoint,
                region=region or DEFAULT_REGION,
                prefix=prefix or "",
                access_key_id=key_id,
                secret_access_key=Secret(secret) if secret else None,
                url_expiry_seconds=expiry or DEFAULT_URL_EXPIRY_SECONDS,
                urls_per_batch=per_batch or DEFAULT_URLS_PER_BATCH,
            )
        except ControlPlaneConfigurationError as exc:
            loader.problems.append(f"{exc.message} ({exc.hint})")
    if loader.problems:
        count = len(loader.problems)
        raise ControlPlaneConfigurationError(
            loader.problems[0]
            if count == 1
            else f"{count} control-plane settings problems: " + "; ".join(loader.problems),
            hint="fix the HL_CP_* variables named (docs/controlplane.md lists them)",
            reason="controlplane_settings_invalid",
            detail="\n".join(loader.problems),
        )
    dispatch = DispatchPolicy(
        lease_seconds=lease or _DEFAULT_POLICY.lease_seconds,
        heartbeat_timeout_seconds=timeout or _DEFAULT_POLICY.heartbeat_timeout_seconds,
        max_lease_attempts=_DEFAULT_POLICY.max_lease_attempts,
        lost_run_grace_seconds=grace or _DEFAULT_POLICY.lost_run_grace_seconds,
    )
    return ControlPlaneConfig(
        state_dir=state_dir,
        broker_pid_file=pid_file,
        log_storage=storage,
        dispatch=dispatch,
        reset_grace_seconds=DEFAULT_RESET_GRACE_SECONDS if reset_grace is None else reset_grace,
    )


def markdown_table() -> str:
    """docs/controlplane.md's table of ``HL_CP_*`` variables (generated; a test checks it)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| variable | default | secret | meaning |", "|---|---|---|---|"]
    lines += [
        f"| `{v.name}` | {cell(v.default)} | {'yes' if v.secret else 'no'} | "
        f"{cell(v.description)} |"
        for v in CP_VARIABLES
    ]
    return "\n".join(lines) + "\n"
