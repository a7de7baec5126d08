"""Every ``SPACELIFT_*`` and ``HL_*`` variable: parsed once, validated, frozen, documented.

:func:`load_settings` reads an environment mapping (``os.environ`` by default) into one frozen
:class:`Settings`. Nothing else in the launcher reads the environment for configuration.

Contract
--------
- ``SPACELIFT_*`` variables follow the vendor's private worker pool contract, so an existing
  launcher configuration works unchanged. Unknown ``SPACELIFT_*`` variables are not errors (the
  vendor may add some); they are listed in :attr:`Settings.warnings` with a close-match hint.
- ``HL_*`` variables are this project's own. An unknown ``HL_*`` variable is an error, because in
  our own namespace it is most likely a typo of a security setting. (``HL_REQUIRE_INTEGRATION`` is
  read by the test suite only and is ignored here.)
- ``HL_*`` settings can also come from a TOML file (``HL_CONFIG_FILE`` or the ``config_file``
  argument, which wins). Its keys are the lower-case names without ``HL_`` (``clock_skew =
  "5m"``); unknown keys are errors; the file must be a regular file that is not group- or
  world-writable. A non-empty environment variable wins over the file. Secret ``HL_*``
  settings (``HL_POLICY_SANITIZE_KEY``) come from the environment only: the file is refused if
  it holds one, so a secret never ends up in a configuration file that is copied around.
- A variable that is set but empty (or only whitespace) counts as unset, as with most Go
  launchers; the same holds for an empty string in the file.
- Every problem is collected; :class:`SettingsError` lists them all (summary in ``message``, one
  per line in ``detail``) so the operator fixes everything in one go. Each problem names the
  variable, shows the bad value (never for secret variables, and never a URL's credentials) and
  says the expected form.
- ``SPACELIFT_WORKER_COMMS_PROTOCOL`` is ``poll`` (HTTPS long polling, the default) or ``mqtt``;
  ``SPACELIFT_WORKER_COMMS_URL`` is the control plane's ``https://`` URL for ``poll`` (unset:
  the token's ``control_plane_url``). docs/transport.md describes both transports.

:data:`VARIABLES` is the single source of truth for the README's configuration table
(:func:`markdown_table`); a unit test keeps the two, and the fields of :class:`Settings`, in step.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, TypeVar, get_args

from hardened_launcher.ascii_text import SPACE
from hardened_launcher.bounded_input import DocumentTooDeepError, load_toml
from hardened_launcher.credential_files import CredentialFileError, credential_text, file_variable
from hardened_launcher.durations import DurationError, format_duration, parse_duration
from hardened_launcher.errors import ConfigurationError
from hardened_launcher.launcher.runlogs import (
    DEFAULT_RUN_LOG_RETENTION,
    RETENTION_FORM,
    RunLogRetention,
    parse_retention,
)
from hardened_launcher.secrets import Secret
from hardened_launcher.urls import split_url

__all__ = [
    "DERIVED_FIELDS",
    "VARIABLES",
    "CommsProtocol",
    "Mount",
    "PolicySyntax",
    "PrivateVcsMapping",
    "RunType",
    "Settings",
    "SettingsError",
    "SettingsProblem",
    "VariableSpec",
    "WhitelistedEnv",
    "effective_values",
    "load_settings",
    "markdown_table",
]

RunType = Literal["ro", "wo"]
RUN_TYPES: Final[tuple[RunType, ...]] = get_args(RunType)
CommsProtocol = Literal["mqtt", "poll"]
#: The Rego dialect of policy files; the values of :class:`hardened_launcher.policy.Syntax`.
PolicySyntax = Literal["auto", "v0", "v1"]
POLICY_SYNTAXES: Final[tuple[PolicySyntax, ...]] = get_args(PolicySyntax)

KIB: Final = 1024
MIB: Final = 1024 * KIB

DEFAULT_WORKER_NETWORK: Final = "bridge"
DEFAULT_LOGS_TIMEOUT: Final = timedelta(minutes=7)
DEFAULT_RUN_TIMEOUT: Final = timedelta(minutes=70)
DEFAULT_CLOCK_SKEW: Final = timedelta(minutes=5)
MAX_CLOCK_SKEW: Final = timedelta(minutes=15)
DEFAULT_MAX_CONCURRENT_RUNS: Final = 1
MAX_CONCURRENT_RUNS_LIMIT: Final = 64
DEFAULT_MAX_ENVELOPE_BYTES: Final = 16 * MIB
MIN_ENVELOPE_BYTES: Final = 1 * KIB
MAX_ENVELOPE_BYTES_LIMIT: Final = 256 * MIB
APP_DIR_NAME: Final = "hardened-launcher"
GIB: Final = 1024 * MIB
DEFAULT_LOG_SPOOL_MAX_BYTES: Final = 2 * GIB
MIN_LOG_SPOOL_MAX_BYTES: Final = 1 * MIB
MAX_LOG_SPOOL_MAX_BYTES: Final = 1024 * GIB
DEFAULT_WORKER_UID: Final = 1983
DEFAULT_WORKER_GID: Final = 1983
MAX_WORKER_ID: Final = 2**31 - 1
DEFAULT_RUN_MEMORY_BYTES: Final = 4 * GIB
DEFAULT_RUN_PIDS_LIMIT: Final = 1024
DEFAULT_RUN_CPUS: Final = 2.0
DEFAULT_RUN_WORKSPACE_BYTES: Final = 1 * GIB
DEFAULT_RUN_TMP_BYTES: Final = 256 * MIB
DEFAULT_RUN_STOP_GRACE: Final = timedelta(seconds=10)
MAX_RUN_STOP_GRACE: Final = timedelta(minutes=5)
DEFAULT_HEARTBEAT_INTERVAL: Final = timedelta(seconds=10)
MIN_HEARTBEAT_INTERVAL: Final = timedelta(seconds=1)
MAX_HEARTBEAT_INTERVAL: Final = timedelta(minutes=5)
DEFAULT_SHUTDOWN_GRACE: Final = timedelta(minutes=15)
MAX_SHUTDOWN_GRACE: Final = timedelta(hours=24)
MIN_RUN_MEMORY_BYTES: Final = 16 * MIB
DEFAULT_LOG_CHUNK_BYTES: Final = 256 * KIB
MIN_LOG_CHUNK_BYTES: Final = 4 * KIB
MAX_LOG_CHUNK_BYTES: Final = 16 * MIB  # the most ``controlplane run logs`` reads back per chunk
MAX_RUN_BYTES: Final = 1024 * GIB
MIN_RUN_TMPFS_BYTES: Final = 1 * MIB
MAX_RUN_PIDS_LIMIT: Final = 1 << 20
MAX_RUN_CPUS: Final = 1024.0
DEFAULT_POLICY_SYNTAX: Final[PolicySyntax] = "auto"
DEFAULT_POLICY_TIMEOUT: Final = timedelta(seconds=1)
MIN_POLICY_TIMEOUT: Final = timedelta(milliseconds=10)
MAX_POLICY_TIMEOUT: Final = timedelta(seconds=60)
#: Fewest bytes a configured policy sanitizer key may have (what ``policy.Sanitizer`` accepts).
MIN_SANITIZE_KEY_BYTES: Final = 16
#: Audit log tuning (``HL_AUDIT_*``): segment rotation, signed checkpoints, write timeout.
DEFAULT_AUDIT_SEGMENT_BYTES: Final = 64 * MIB
MIN_AUDIT_SEGMENT_BYTES: Final = 1 * MIB
MAX_AUDIT_SEGMENT_BYTES: Final = 4 * GIB
DEFAULT_AUDIT_SEGMENT_MAX_AGE: Final = timedelta(hours=24)
DEFAULT_AUDIT_CHECKPOINT_RECORDS: Final = 1000
MAX_AUDIT_CHECKPOINT_RECORDS: Final = 1_000_000
DEFAULT_AUDIT_CHECKPOINT_INTERVAL: Final = timedelta(seconds=60)
DEFAULT_AUDIT_WRITE_TIMEOUT: Final = timedelta(seconds=30)
MAX_AUDIT_INTERVAL: Final = timedelta(days=31)
#: Prefix of the control plane's own variables (its own settings model, not the launcher's).
CONTROL_PLANE_PREFIX: Final = "HL_CP_"
#: Names a launcher variable has; a whitelisted name that matches one in any case is refused.
LAUNCHER_VARIABLE_PREFIXES: Final = ("SPACELIFT_", "HL_")
#: Docker network modes that share another network namespace (the host's, a container's).
SHARED_NETWORK_MODES: Final = ("host",)
SHARED_NETWORK_PREFIXES: Final = ("container:",)

MAX_SECRET_CHARS: Final = 64 * 1024
MAX_CONFIG_FILE_BYTES: Final = 1 * MIB
MAX_METADATA_TAGS: Final = 64
MAX_METADATA_TAG_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 256
MAX_PRIVATEVCS_MAPPINGS: Final = 100
MAX_PRIVATEVCS_NAME_CHARS: Final = 256
MAX_ENDPOINT_CHARS: Final = 2048
MAX_SHOWN_VALUE_CHARS: Final = 80

METADATA_PREFIX: Final = "SPACELIFT_METADATA_"
PRIVATEVCS_NAME_PREFIX: Final = "SPACELIFT_PRIVATEVCS_MAPPING_NAME_"
PRIVATEVCS_ENDPOINT_PREFIX: Final = "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_"
CONFIG_FILE_VARIABLE: Final = "HL_CONFIG_FILE"
#: ``HL_*`` variables that are not launcher settings (read by the test suite only).
IGNORED_HL_VARIABLES: Final = frozenset({"HL_REQUIRE_INTEGRATION"})

_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METADATA_TAG_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_INDEX_RE: Final = re.compile(r"0|[1-9][0-9]{0,5}")
_DOCKER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")
_RUNTIME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]+")
_LAUNCHER_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CPUS_RE: Final = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,3})?")
_CA_COLON_RE: Final = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){31}")
_HOST_LABEL_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SIZE_RE: Final = re.compile(r"([0-9]{1,12})\s*([A-Za-z]*)")
_BASE64_TEXT_RE: Final = re.compile(r"[A-Za-z0-9+/=_\-\s]*", re.ASCII)
_BASE64_KEY_RE: Final = re.compile(r"[A-Za-z0-9+/_\-]+={0,2}", re.ASCII)
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsProblem:
    """One thing wrong with the configuration. ``text`` starts with the variable's name."""

    variable: str
    text: str
    reason: str = "setting_invalid"

    def __str__(self) -> str:
        return self.text


class SettingsError(ConfigurationError):
    """One or more settings are wrong. ``problems`` lists each; ``detail`` has one per line."""

    default_reason = "settings_invalid"

    def __init__(
        self,
        message: str,
        *,
        hint: str = "",
        reason: str | None = None,
        detail: str = "",
        problems: Sequence[SettingsProblem] = (),
    ) -> None:
        super().__init__(message, hint=hint, reason=reason, detail=detail)
        self.problems: tuple[SettingsProblem, ...] = tuple(problems)

    @classmethod
    def from_problems(cls, problems: Sequence[SettingsProblem]) -> SettingsError:
        """Build the single error that reports every problem at once."""
        problems = tuple(problems)
        detail = "\n".join(p.text for p in problems)
        if len(problems) == 1:
            only = problems[0]
            return cls(
                only.text,
                hint="fix this setting and start again (the README's configuration table "
                "documents every variable)",
                reason=only.reason,
                detail=detail,
                problems=problems,
            )
        names = ", ".join(dict.fromkeys(p.variable for p in problems))
        return cls(
            f"{len(problems)} settings problems: {names}",
            hint="fix each of them and start again; run with -v (or `hardened-launcher settings "
            "show`) to see what is wrong with each",
            reason="settings_invalid",
            detail=detail,
            problems=problems,
        )


class _InvalidValueError(Exception):
    """A parser's refusal: why, the expected form, a reason slug, and whether to hide the value."""

    def __init__(
        self, why: str, *, expected: str, reason: str = "setting_invalid", hide_value: bool = False
    ) -> None:
        super().__init__(why)
        self.why = why
        self.expected = expected
        self.reason = reason
        self.hide_value = hide_value


def _show(value: str) -> str:
    """A bounded, escaped rendering of a (non-secret) bad value for an error message."""
    if len(value) <= MAX_SHOWN_VALUE_CHARS:
        return repr(value)
    return f"{value[:MAX_SHOWN_VALUE_CHARS]!r}… ({len(value)} characters)"


#: What surrounding a value is trimmed: ASCII white space only. ``str.strip()`` also drops the
#: separators U+001C..U+001F, U+0085 and Unicode spaces, so ``/var/lib/hl\x85`` would silently
#: name ``/var/lib/hl``; kept, they reach each value's own checks (control characters refused).
_SPACE: Final = SPACE
_DROP_SPACE: Final = str.maketrans("", "", _SPACE)


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """An extra bind mount for run containers. Syntax is checked here; the executor judges which
    host paths are too dangerous to mount."""

    host_path: str
    container_path: str
    read_only: bool = False

    def __post_init__(self) -> None:
        for label, path in (("host path", self.host_path), ("container path", self.container_path)):
            if not path.startswith("/"):
                raise ValueError(f"mount {label} must be absolute")
            if _has_control(path) or ":" in path or "," in path:
                raise ValueError(f"mount {label} must not contain ':', ',' or control characters")

    def __str__(self) -> str:
        return f"{self.host_path}:{self.container_path}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WhitelistedEnv:
    """A launcher variable passed to runs of the listed types (``ro`` read-only, ``wo`` write)."""

    name: str
    run_types: frozenset[RunType] = frozenset(RUN_TYPES)

    def __post_init__(self) -> None:
        if not _ENV_NAME_RE.fullmatch(self.name):
            raise ValueError("a whitelisted variable name must match [A-Za-z_][A-Za-z0-9_]*")
        if not self.run_types or not self.run_types <= frozenset(RUN_TYPES):
            raise ValueError("run_types must be a non-empty subset of {'ro', 'wo'}")

    def applies_to(self, run_type: RunType) -> bool:
        return run_type in self.run_types

    def __str__(self) -> str:
        if self.run_types == frozenset(RUN_TYPES):
            return self.name
        (only,) = self.run_types
        return f"{only}_{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateVcsMapping:
    """A VCS agent pool name and the network address the launcher reaches its VCS at."""

    name: str
    base_endpoint: str

    def __post_init__(self) -> None:
        _check_vcs_name(self.name)
        try:
            _check_endpoint(self.base_endpoint)
        except _InvalidValueError as exc:
            raise ValueError(f"base_endpoint {exc.why}; expected {exc.expected}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class VariableSpec:
    """One row of the configuration table."""

    name: str
    field: str
    default: str
    description: str
    source: Literal["seed", "project"]
    secret: bool = False

    @property
    def file_key(self) -> str | None:
        """The TOML key for ``HL_*`` settings that the config file may hold; ``None`` for
        ``SPACELIFT_*`` variables, ``HL_CONFIG_FILE`` and secrets (environment only)."""
        return None if self.secret else self.toml_name

    @property
    def toml_name(self) -> str | None:
        """The key an ``HL_*`` setting has in the config file (lower case, no ``HL_``), whether
        or not the file may hold it: for a secret it names a key the file is refused for."""
        if self.source != "project" or self.name == CONFIG_FILE_VARIABLE:
            return None
        return self.name.removeprefix("HL_").lower()

    @property
    def is_pattern(self) -> bool:
        return "<" in self.name


# ---------------------------------------------------------------------------------------------
# Parsers: text -> value, or _InvalidValueError. A secret value is never echoed.
# ---------------------------------------------------------------------------------------------
def _split_list(text: str) -> list[str]:
    """Comma list: items stripped, empties dropped."""
    return [item.strip(_SPACE) for item in text.split(",") if item.strip(_SPACE)]


def _parse_secret(text: str) -> Secret:
    if len(text) > MAX_SECRET_CHARS:
        raise _InvalidValueError(
            f"is longer than {MAX_SECRET_CHARS} characters",
            expected="base64 text of a few kilobytes",
            reason="secret_too_long",
            hide_value=True,
        )
    if not _BASE64_TEXT_RE.fullmatch(text):
        raise _InvalidValueError(
            "contains characters that never appear in base64 text",
            expected="base64 text on one line (for a key: `base64 -w 0 < spacelift.key`)",
            reason="secret_not_base64",
            hide_value=True,
        )
    return Secret(text)


_SANITIZE_KEY_FORM: Final = (
    f"base64 of at least {MIN_SANITIZE_KEY_BYTES} random bytes, e.g. from `openssl rand -base64 32`"
)


def _parse_sanitize_key(text: str) -> Secret:
    """Base64 (standard or URL-safe, padding optional, ASCII white space and line breaks
    ignored) of a key of at least :data:`MIN_SANITIZE_KEY_BYTES` bytes; the :class:`Secret`
    holds the decoded key bytes."""
    if len(text) > MAX_SECRET_CHARS:
        raise _InvalidValueError(
            f"is longer than {MAX_SECRET_CHARS} characters",
            expected=_SANITIZE_KEY_FORM,
            reason="secret_too_long",
            hide_value=True,
        )
    compact = text.translate(_DROP_SPACE)
    if not _BASE64_KEY_RE.fullmatch(compact):
        raise _InvalidValueError(
            "is not base64 text",
            expected=_SANITIZE_KEY_FORM,
            reason="secret_not_base64",
            hide_value=True,
        )
    if "=" not in compact:
        compact += "=" * (-len(compact) % 4)
    try:
        key = base64.b64decode(compact.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise _InvalidValueError(
            "is not well-formed base64 (check the length and the = padding)",
            expected=_SANITIZE_KEY_FORM,
            reason="secret_not_base64",
            hide_value=True,
        ) from None
    if len(key) < MIN_SANITIZE_KEY_BYTES:
        raise _InvalidValueError(
            f"decodes to fewer than {MIN_SANITIZE_KEY_BYTES} bytes, too few for an HMAC key",
            expected=_SANITIZE_KEY_FORM,
            reason="secret_too_short",
            hide_value=True,
        )
    return Secret(key)


def _parse_policy_syntax(text: str) -> PolicySyntax:
    value = text.strip(_SPACE).lower()
    for syntax in POLICY_SYNTAXES:
        if value == syntax:
            return syntax
    raise _InvalidValueError(
        "is not a policy syntax",
        expected="auto (detect per file), v0 (legacy Rego) or v1 (Rego v1), in any case",
    )


def _parse_bool(text: str) -> bool:
    value = text.strip(_SPACE).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _InvalidValueError("is not a boolean", expected="true/false, 1/0 or yes/no (any case)")


def _parse_env_name(name: str) -> str:
    if not _ENV_NAME_RE.fullmatch(name):
        raise _InvalidValueError(
            f"{name!r} is not a valid variable name",
            expected="a comma list of names made of letters, digits and _ (not starting "
            "with a digit), e.g. TF_VAR_token,AWS_SECRET_ACCESS_KEY",
        )
    return name


def _parse_env_names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_parse_env_name(item) for item in _split_list(text)))


_MOUNT_FORM: Final = (
    "a comma list of /host/path:/container/path, each optionally followed by :ro or :rw, "
    "both paths absolute and free of ',' and ':'"
)


def _parse_mount(item: str) -> Mount:
    parts = item.split(":")
    read_only = False
    if len(parts) == 3:
        mode = parts[2].strip(_SPACE).lower()
        if mode not in ("ro", "rw"):
            raise _InvalidValueError(
                f"mount {item!r} has mode {parts[2]!r}, which is not ro or rw",
                expected=_MOUNT_FORM,
            )
        read_only = mode == "ro"
    elif len(parts) != 2:
        raise _InvalidValueError(f"mount {item!r} is not host:container", expected=_MOUNT_FORM)
    host, container = parts[0].strip(_SPACE), parts[1].strip(_SPACE)
    for label, path in (("host path", host), ("container path", container)):
        if not path.startswith("/"):
            raise _InvalidValueError(
                f"mount {item!r}: {label} is not absolute", expected=_MOUNT_FORM
            )
        if _has_control(path):
            raise _InvalidValueError(
                f"mount {item!r}: {label} contains control characters", expected=_MOUNT_FORM
            )
    return Mount(host_path=host, container_path=container, read_only=read_only)


def _parse_mounts(text: str) -> tuple[Mount, ...]:
    return tuple(_parse_mount(item) for item in _split_list(text))


_WHITELIST_FORM: Final = (
    "a comma list of variable names, each optionally prefixed ro_ (read-only runs only) or "
    "wo_ (write runs only), e.g. AWS_REGION,ro_READ_TOKEN"
)


def _parse_whitelist(text: str) -> tuple[WhitelistedEnv, ...]:
    merged: dict[str, set[RunType]] = {}
    for item in _split_list(text):
        run_types: set[RunType] = set(RUN_TYPES)
        name = item
        for run_type in RUN_TYPES:
            prefix = f"{run_type}_"
            if item.startswith(prefix):
                name = item[len(prefix) :]
                run_types = {run_type}
                break
        if not _ENV_NAME_RE.fullmatch(name):
            raise _InvalidValueError(
                f"{item!r} is not a valid variable name", expected=_WHITELIST_FORM
            )
        merged.setdefault(name, set()).update(run_types)
    return tuple(WhitelistedEnv(name=n, run_types=frozenset(t)) for n, t in merged.items())


def whitelist_refusal(name: str) -> str | None:
    """Why a ``SPACELIFT_WHITELIST_ENVS`` name may not reach runs, or None when it may.

    Refused: any launcher variable (``SPACELIFT_*``, ``HL_*``: the pool key, the token, the
    policy sanitizer key and every future one), compared in any case and under any number of
    ``ro_``/``wo_`` prefixes, so no spelling of a launcher secret is passed on.
    """
    bare = name
    while bare[:3].upper() in ("RO_", "WO_"):
        bare = bare[3:]
    if bare.upper().startswith(LAUNCHER_VARIABLE_PREFIXES):
        return (
            f"{name!r} names a launcher variable ({bare.upper()}), which must never reach run "
            "code; remove it from SPACELIFT_WHITELIST_ENVS and give runs their own variable"
        )
    return None


def shared_network_mode(network: str) -> str | None:
    """What ``SPACELIFT_WORKER_NETWORK`` shares with runs (``host``, ``container``), or None.

    Compared in any case: Docker's own names are lower case, and a look-alike is refused too.
    ``none`` (no network) is accepted: it isolates more, not less.
    """
    lowered = network.strip(_SPACE).lower()
    if lowered in SHARED_NETWORK_MODES:
        return "the host's network namespace"
    if lowered.startswith(SHARED_NETWORK_PREFIXES):
        return "another container's network namespace"
    return None


def _duration_parser(
    *, minimum: timedelta, maximum: timedelta | None, inclusive_minimum: bool, example: str
) -> Callable[[str], timedelta]:
    bound = f"{'at least' if inclusive_minimum else 'more than'} {format_duration(minimum)}"
    if maximum is not None:
        bound += f" and at most {format_duration(maximum)}"
    expected = f"a Go duration {bound}, such as {example} (units ns, us, ms, s, m, h)"

    def parse(text: str) -> timedelta:
        try:
            value = parse_duration(text.strip(_SPACE))
        except DurationError as exc:
            raise _InvalidValueError(
                f"is not a Go duration: {exc.why}", expected=expected, reason="duration_invalid"
            ) from None
        too_small = value < minimum if inclusive_minimum else value <= minimum
        if too_small or (maximum is not None and value > maximum):
            raise _InvalidValueError(
                "is negative" if value < timedelta(0) else "is out of range",
                expected=expected,
                reason="duration_out_of_range",
            )
        return value

    return parse


def _parse_abs_path(text: str) -> Path:
    path = text.strip(_SPACE)
    if not path.startswith("/"):
        raise _InvalidValueError(
            "is not an absolute path", expected="an absolute path such as /var/lib/x"
        )
    if _has_control(path):
        raise _InvalidValueError("contains control characters", expected="an absolute path")
    return Path(path)


def _readable_file_parser(what: str, *, missing: str, unreadable: str) -> Callable[[str], Path]:
    """A parser of the absolute path of an existing, readable regular file.

    ``what`` names the file in the expected form; ``missing`` is the reason slug when the path
    does not lead to a regular file, ``unreadable`` when it does but cannot be opened.
    """
    expected = f"the absolute path of a readable {what}"

    def parse(text: str) -> Path:
        path = _parse_abs_path(text)
        try:
            st = path.stat()
        except OSError as exc:
            raise _InvalidValueError(
                f"cannot be read ({exc.strerror})", expected=expected, reason=missing
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise _InvalidValueError("is not a regular file", expected=expected, reason=missing)
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise _InvalidValueError(
                f"cannot be opened ({exc.strerror})", expected=expected, reason=unreadable
            ) from None
        return path

    return parse


_POLICY_PATH_FORM: Final = (
    "the absolute path of a readable run initialization policy: a .rego file, or a directory "
    "of them that can be listed and searched"
)


def _check_searchable_directory(path: Path, *, expected: str, reason: str) -> None:
    """Refuse a directory that cannot be listed or searched (its files could not be opened)."""
    try:
        # Opening a directory needs read (list) permission; looking up "." inside it needs
        # search permission, without which none of its files can be opened.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _InvalidValueError(
            f"is a directory that cannot be listed ({exc.strerror})",
            expected=expected,
            reason=reason,
        ) from None
    try:
        os.stat(".", dir_fd=fd)
    except OSError as exc:
        raise _InvalidValueError(
            f"is a directory that cannot be searched ({exc.strerror})",
            expected=expected,
            reason=reason,
        ) from None
    finally:
        os.close(fd)


def _parse_policy_path(text: str) -> Path:
    """The absolute path of a readable regular file, or of a directory that can be both read
    (listed) and searched (its files opened). What is inside is the policy loader's business."""
    path = _parse_abs_path(text)
    try:
        st = path.stat()
    except OSError as exc:
        raise _InvalidValueError(
            f"cannot be read ({exc.strerror})",
            expected=_POLICY_PATH_FORM,
            reason="policy_file_missing",
        ) from None
    if stat.S_ISREG(st.st_mode):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise _InvalidValueError(
                f"cannot be opened ({exc.strerror})",
                expected=_POLICY_PATH_FORM,
                reason="policy_file_unreadable",
            ) from None
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise _InvalidValueError(
            "is neither a regular file nor a directory",
            expected=_POLICY_PATH_FORM,
            reason="policy_file_missing",
        )
    _check_searchable_directory(path, expected=_POLICY_PATH_FORM, reason="policy_file_unreadable")
    return path


_parse_egress_policy: Final = _readable_file_parser(
    "egress policy file (YAML, or TOML when the name ends in .toml; see docs/egress.md)",
    missing="egress_policy_missing",
    unreadable="egress_policy_unreadable",
)
_parse_release_keyring: Final = _readable_file_parser(
    "file of OpenPGP public keys (armored or binary), e.g. from `gpg --export --armor FPR`",
    missing="release_keyring_missing",
    unreadable="release_keyring_unreadable",
)


_RELEASE_DIR_FORM: Final = (
    "the absolute path of a directory of signed releases that can be listed and searched "
    "(<dir>/<name>/<version>/{<name>,SHA256SUMS,SHA256SUMS.sig|.asc})"
)


def _parse_release_dir(text: str) -> Path:
    """The absolute path of an existing directory that can be listed and searched. What is
    inside (the signed releases) is the binary gate's business."""
    path = _parse_abs_path(text)
    try:
        st = path.stat()
    except OSError as exc:
        raise _InvalidValueError(
            f"cannot be read ({exc.strerror})",
            expected=_RELEASE_DIR_FORM,
            reason="release_dir_missing",
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise _InvalidValueError(
            "is not a directory", expected=_RELEASE_DIR_FORM, reason="release_dir_missing"
        )
    _check_searchable_directory(path, expected=_RELEASE_DIR_FORM, reason="release_dir_unreadable")
    return path


def _parse_docker_name(text: str) -> str:
    value = text.strip(_SPACE)
    if not _DOCKER_NAME_RE.fullmatch(value):
        raise _InvalidValueError(
            "is not a Docker network name or ID",
            expected="letters, digits and _ . : - (starting with a letter or digit), e.g. bridge",
        )
    return value


def _parse_runtime(text: str) -> str:
    value = text.strip(_SPACE)
    if not _RUNTIME_RE.fullmatch(value):
        raise _InvalidValueError(
            "is not a container runtime name",
            expected="a runtime registered with Docker, e.g. runc or runsc",
        )
    return value


#: Every ``/``-separated component starts with a letter or digit (no empty, ``.`` or ``..``
#: component, which Docker's reference grammar has none of and an Engine API path must not get).
_IMAGE_REF_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:@-]*(?:/[a-z0-9][a-z0-9._:@-]*)*")
_MAX_IMAGE_REF_CHARS: Final = 255


def _parse_image(text: str) -> str:
    value = text.strip(_SPACE)
    if len(value) > _MAX_IMAGE_REF_CHARS or not _IMAGE_REF_RE.fullmatch(value):
        raise _InvalidValueError(
            "is not an image reference",
            expected="lower-case letters, digits and . _ / : @ -, each /-separated part starting"
            " with a letter or digit, at most 255 characters, e.g. registry.example/runner:1",
        )
    return value


def _parse_protocol(text: str) -> CommsProtocol:
    value = text.strip(_SPACE).lower()
    if value == "mqtt":
        return "mqtt"
    if value == "poll":
        return "poll"
    raise _InvalidValueError("is not a known protocol", expected="poll or mqtt (or leave it unset)")


_COMMS_URL_FORM: Final = (
    "an https:// URL with a host, an optional port and path, and no credentials, query or "
    "fragment (e.g. https://controlplane.example.com or https://10.0.0.5:8443/spacelift)"
)


def _parse_comms_url(text: str) -> str:
    """The long-poll transport's base URL: https only; never echoes credentials."""
    value = text.strip(_SPACE)
    if len(value) > MAX_ENDPOINT_CHARS or _has_control(value) or any(c.isspace() for c in value):
        raise _InvalidValueError(
            "is too long or contains spaces or control characters", expected=_COMMS_URL_FORM
        )
    parts = split_url(value)
    if parts is None:
        raise _InvalidValueError("is not a well-formed URL", expected=_COMMS_URL_FORM)
    if "@" in parts.netloc:
        raise _InvalidValueError(
            "carries credentials in the URL; the pool certificate authenticates the launcher",
            expected=_COMMS_URL_FORM,
            reason="comms_url_has_credentials",
            hide_value=True,
        )
    if parts.scheme.lower() != "https":
        raise _InvalidValueError("is not an https:// URL", expected=_COMMS_URL_FORM)
    try:
        port = parts.port
    except ValueError:
        raise _InvalidValueError("has an invalid port", expected=_COMMS_URL_FORM) from None
    if port == 0:
        raise _InvalidValueError("has an invalid port", expected=_COMMS_URL_FORM)
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise _InvalidValueError("has a query or fragment", expected=_COMMS_URL_FORM)
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if not _valid_host(host):
        raise _InvalidValueError("does not name a valid host", expected=_COMMS_URL_FORM)
    return value


_CA_FORM: Final = (
    "the SHA-256 fingerprint of the CA certificate: 64 hex digits, optionally in colon-separated "
    "pairs (from `openssl x509 -in ca.pem -noout -fingerprint -sha256`, the part after '=')"
)


def _parse_ca_fingerprint(text: str) -> bytes:
    value = text.strip(_SPACE)
    if _CA_COLON_RE.fullmatch(value):
        value = value.replace(":", "")
    if len(value) != 64 or not _HEX_RE.fullmatch(value):
        raise _InvalidValueError("is not a SHA-256 fingerprint", expected=_CA_FORM)
    return bytes.fromhex(value)


_FINGERPRINT_FORM: Final = (
    "a comma list of full OpenPGP fingerprints, 40 hex digits (v4 keys) or 64 (v6 keys); "
    "spaces inside are ignored (`gpg --fingerprint` output works)"
)


def _normalise_fingerprint(item: str) -> str:
    value = item.replace(" ", "").replace("\t", "")
    if value[:2] in ("0x", "0X"):
        value = value[2:]
    if _HEX_RE.fullmatch(value) and len(value) in (8, 16):
        raise _InvalidValueError(
            f"{item!r} is a short key ID, not a fingerprint; short IDs can be forged (keys with "
            "colliding IDs are cheap to make), so only full fingerprints are pinned",
            expected=_FINGERPRINT_FORM,
            reason="release_key_short_id",
        )
    if not _HEX_RE.fullmatch(value) or len(value) not in (40, 64):
        raise _InvalidValueError(
            f"{item!r} is not an OpenPGP fingerprint",
            expected=_FINGERPRINT_FORM,
            reason="release_key_fingerprint_invalid",
        )
    return value.lower()


def _parse_fingerprints(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_normalise_fingerprint(item) for item in _split_list(text)))


def _parse_concurrency(text: str) -> int:
    value = text.strip(_SPACE)
    expected = f"a whole number from 1 to {MAX_CONCURRENT_RUNS_LIMIT}"
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise _InvalidValueError("is not a whole number", expected=expected)
    number = int(value)
    if not 1 <= number <= MAX_CONCURRENT_RUNS_LIMIT:
        raise _InvalidValueError(
            "is out of range", expected=expected, reason="setting_out_of_range"
        )
    return number


_SIZE_FORM: Final = (
    "a size from 1 KiB to 256 MiB: a number of bytes, or a number followed by KiB or MiB "
    "(e.g. 16MiB, 512KiB, 1048576)"
)


def _parse_size(text: str) -> int:
    match = _SIZE_RE.fullmatch(text.strip(_SPACE))
    if match is None:
        raise _InvalidValueError("is not a size", expected=_SIZE_FORM)
    number, suffix = int(match.group(1)), match.group(2).lower()
    factors = {"": 1, "kib": KIB, "mib": MIB}
    if suffix not in factors:
        raise _InvalidValueError(
            f"has unit {match.group(2)!r}; only KiB and MiB are accepted (KB/MB are ambiguous)",
            expected=_SIZE_FORM,
        )
    size = number * factors[suffix]
    if not MIN_ENVELOPE_BYTES <= size <= MAX_ENVELOPE_BYTES_LIMIT:
        raise _InvalidValueError(
            "is out of range", expected=_SIZE_FORM, reason="setting_out_of_range"
        )
    return size


def _whole_number_parser(minimum: int, maximum: int) -> Callable[[str], int]:
    expected = f"a whole number from {minimum} to {maximum}"

    def parse(text: str) -> int:
        value = text.strip(_SPACE)
        if not re.fullmatch(r"[0-9]{1,10}", value):
            raise _InvalidValueError("is not a whole number", expected=expected)
        number = int(value)
        if not minimum <= number <= maximum:
            raise _InvalidValueError(
                "is out of range", expected=expected, reason="setting_out_of_range"
            )
        return number

    return parse


def _byte_size_parser(minimum: int, maximum: int, example: str) -> Callable[[str], int]:
    form = (
        f"a size from {minimum // MIB} MiB to {maximum // GIB} GiB: a number of bytes, or a "
        f"number followed by KiB, MiB or GiB (e.g. {example})"
    )

    def parse(text: str) -> int:
        match = _SIZE_RE.fullmatch(text.strip(_SPACE))
        if match is None:
            raise _InvalidValueError("is not a size", expected=form)
        number, suffix = int(match.group(1)), match.group(2).lower()
        factors = {"": 1, "kib": KIB, "mib": MIB, "gib": GIB}
        if suffix not in factors:
            raise _InvalidValueError(
                f"has unit {match.group(2)!r}; only KiB, MiB and GiB are accepted",
                expected=form,
            )
        size = number * factors[suffix]
        if not minimum <= size <= maximum:
            raise _InvalidValueError(
                "is out of range", expected=form, reason="setting_out_of_range"
            )
        return size

    return parse


def _parse_cpus(text: str) -> float:
    value = text.strip(_SPACE)
    expected = f"a number of CPUs from 0.01 to {MAX_RUN_CPUS:g}, e.g. 2 or 0.5"
    if not _CPUS_RE.fullmatch(value):
        raise _InvalidValueError("is not a number of CPUs", expected=expected)
    number = float(value)
    if not 0.01 <= number <= MAX_RUN_CPUS:
        raise _InvalidValueError(
            "is out of range", expected=expected, reason="setting_out_of_range"
        )
    return number


def _parse_launcher_id(text: str) -> str:
    value = text.strip(_SPACE)
    if not _LAUNCHER_ID_RE.fullmatch(value):
        raise _InvalidValueError(
            "is not a launcher ID",
            expected="1 to 63 letters, digits and _ . - (starting with a letter or digit)",
        )
    return value


_parse_worker_id: Final = _whole_number_parser(0, MAX_WORKER_ID)
_parse_pids_limit: Final = _whole_number_parser(8, MAX_RUN_PIDS_LIMIT)
_parse_run_memory: Final = _byte_size_parser(MIN_RUN_MEMORY_BYTES, MAX_RUN_BYTES, "4GiB or 512MiB")
_parse_tmpfs_size: Final = _byte_size_parser(MIN_RUN_TMPFS_BYTES, MAX_RUN_BYTES, "1GiB or 64MiB")


_LOG_CHUNK_FORM: Final = (
    "a size from 4 KiB to 16 MiB: a number of bytes, or a number followed by KiB or MiB "
    "(e.g. 256KiB)"
)


def _parse_run_log_retention(text: str) -> RunLogRetention:
    try:
        return parse_retention(text)
    except ValueError as exc:
        raise _InvalidValueError(str(exc), expected=RETENTION_FORM) from None


def _parse_log_chunk_bytes(text: str) -> int:
    match = _SIZE_RE.fullmatch(text.strip(_SPACE))
    if match is None:
        raise _InvalidValueError("is not a size", expected=_LOG_CHUNK_FORM)
    factors = {"": 1, "kib": KIB, "mib": MIB}
    suffix = match.group(2).lower()
    if suffix not in factors:
        raise _InvalidValueError(
            f"has unit {match.group(2)!r}; only KiB and MiB are accepted", expected=_LOG_CHUNK_FORM
        )
    size = int(match.group(1)) * factors[suffix]
    if not MIN_LOG_CHUNK_BYTES <= size <= MAX_LOG_CHUNK_BYTES:
        raise _InvalidValueError(
            "is out of range", expected=_LOG_CHUNK_FORM, reason="setting_out_of_range"
        )
    return size


_LOG_SPOOL_FORM: Final = (
    "a size from 1 MiB to 1024 GiB: a number followed by MiB or GiB (e.g. 2GiB)"
)


def _parse_log_spool_max_bytes(text: str) -> int:
    match = _SIZE_RE.fullmatch(text.strip(_SPACE))
    if match is None:
        raise _InvalidValueError("is not a size", expected=_LOG_SPOOL_FORM)
    factors = {"mib": MIB, "gib": GIB}
    suffix = match.group(2).lower()
    if suffix not in factors:
        raise _InvalidValueError(
            f"has unit {match.group(2)!r}; only MiB and GiB are accepted",
            expected=_LOG_SPOOL_FORM,
        )
    size = int(match.group(1)) * factors[suffix]
    if not MIN_LOG_SPOOL_MAX_BYTES <= size <= MAX_LOG_SPOOL_MAX_BYTES:
        raise _InvalidValueError(
            "is out of range", expected=_LOG_SPOOL_FORM, reason="setting_out_of_range"
        )
    return size


_METRICS_ADDRESS_FORM: Final = "host:port or [IPv6]:port, port 1-65535 (e.g. 127.0.0.1:9464)"


def _parse_metrics_address(text: str) -> str:
    value = text.strip(_SPACE)
    host, sep, port = value.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise _InvalidValueError("is not host:port", expected=_METRICS_ADDRESS_FORM)
    if not _valid_host(host) or (":" in host and not host.startswith("[")):
        raise _InvalidValueError("does not name a valid host", expected=_METRICS_ADDRESS_FORM)
    return value


def _check_vcs_name(name: str) -> None:
    if not name or len(name) > MAX_PRIVATEVCS_NAME_CHARS or _has_control(name):
        raise ValueError(
            f"a VCS agent pool name must be 1 to {MAX_PRIVATEVCS_NAME_CHARS} characters "
            "without control characters"
        )


_ENDPOINT_FORM: Final = (
    "an http:// or https:// URL with a host and no credentials, or host:port "
    "(e.g. https://vcs.internal:8443 or vcs.internal:443)"
)


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if len(host) > 253 or not host:
        return False
    return all(_HOST_LABEL_RE.fullmatch(label) for label in host.split("."))


def _check_endpoint(text: str) -> None:
    """Refuse anything but an http(s) URL or host:port; never echoes credentials."""
    if len(text) > MAX_ENDPOINT_CHARS or _has_control(text) or any(c.isspace() for c in text):
        raise _InvalidValueError(
            "is too long or contains spaces or control characters", expected=_ENDPOINT_FORM
        )
    if "://" in text:
        parts = split_url(text)
        if parts is None:
            raise _InvalidValueError("is not a well-formed URL", expected=_ENDPOINT_FORM)
        if "@" in parts.netloc:
            raise _InvalidValueError(
                "carries credentials in the URL; give them to the VCS agent, not here",
                expected=_ENDPOINT_FORM,
                reason="endpoint_has_credentials",
                hide_value=True,
            )
        if parts.scheme.lower() not in ("http", "https"):
            raise _InvalidValueError(f"has scheme {parts.scheme!r}", expected=_ENDPOINT_FORM)
        try:
            port = parts.port
        except ValueError:
            raise _InvalidValueError("has an invalid port", expected=_ENDPOINT_FORM) from None
        if port == 0:
            raise _InvalidValueError("has an invalid port", expected=_ENDPOINT_FORM)
        host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
        if not _valid_host(host) or parts.fragment:
            raise _InvalidValueError("does not name a valid host", expected=_ENDPOINT_FORM)
        return
    if "@" in text:
        raise _InvalidValueError(
            "carries credentials; give them to the VCS agent, not here",
            expected=_ENDPOINT_FORM,
            reason="endpoint_has_credentials",
            hide_value=True,
        )
    host, sep, port_text = text.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise _InvalidValueError(
            "is not host:port with a port from 1 to 65535", expected=_ENDPOINT_FORM
        )
    if not _valid_host(host):
        raise _InvalidValueError("does not name a valid host", expected=_ENDPOINT_FORM)


def _parse_endpoint(text: str) -> str:
    value = text.strip(_SPACE)
    _check_endpoint(value)
    return value


# ---------------------------------------------------------------------------------------------
# The registry: one row per variable (patterns are one row each)
# ---------------------------------------------------------------------------------------------
def _duration_default(value: timedelta) -> str:
    return f"`{format_duration(value)}`"


VARIABLES: Final[tuple[VariableSpec, ...]] = (
    VariableSpec(
        name="SPACELIFT_TOKEN",
        field="token",
        default="unset",
        secret=True,
        source="seed",
        description="The pool token received when the worker pool was created (base64 text); "
        "required to run.",
    ),
    VariableSpec(
        name="SPACELIFT_POOL_PRIVATE_KEY",
        field="pool_private_key",
        default="unset",
        secret=True,
        source="seed",
        description="The pool's private key: the whole PEM file, base64-encoded on one line "
        "(`base64 -w 0 < spacelift.key`); required to run.",
    ),
    VariableSpec(
        name="SPACELIFT_TOKEN_FILE",
        field="token_file",
        default="unset",
        source="seed",
        description="(Extension of the vendor contract.) Absolute path of a file holding the "
        "token instead of `SPACELIFT_TOKEN` "
        "(not both); without either, the systemd credential `spacelift-token` is read from "
        "`$CREDENTIALS_DIRECTORY`. Mode 0600/0640, at most 64 KiB (docs/install.md).",
    ),
    VariableSpec(
        name="SPACELIFT_POOL_PRIVATE_KEY_FILE",
        field="pool_private_key_file",
        default="unset",
        source="seed",
        description="Absolute path of a file holding the pool key (the PEM itself or its base64) "
        "instead of `SPACELIFT_POOL_PRIVATE_KEY` (not both); else the systemd credential "
        "`spacelift-pool-private-key`. Mode 0600/0640, at most 64 KiB.",
    ),
    VariableSpec(
        name="SPACELIFT_DOCKER_CONFIG_DIR",
        field="docker_config_dir",
        default="unset",
        source="seed",
        description="Absolute path of a Docker configuration directory (credentials for "
        "private registries, e.g. after `docker login`).",
    ),
    VariableSpec(
        name="SPACELIFT_MASK_ENVS",
        field="mask_envs",
        default="none",
        source="seed",
        description="Comma list of whitelisted variable names passed to runs whose values "
        "must never appear in logs.",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_NETWORK",
        field="worker_network",
        default=f"`{DEFAULT_WORKER_NETWORK}`",
        source="seed",
        description="Docker network ID or name that run containers join.",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_EXTRA_MOUNTS",
        field="worker_extra_mounts",
        default="none",
        source="seed",
        description="Comma list of `/host/path:/container/path` mounts (optionally ending "
        "`:ro` or `:rw`, default rw) added to every run container.",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_RO_EXTRA_MOUNTS",
        field="worker_extra_mounts_ro",
        default="none",
        source="seed",
        description="Like `SPACELIFT_WORKER_EXTRA_MOUNTS`, for read-only runs only.",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_WO_EXTRA_MOUNTS",
        field="worker_extra_mounts_wo",
        default="none",
        source="seed",
        description="Like `SPACELIFT_WORKER_EXTRA_MOUNTS`, for write runs only.",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_RUNTIME",
        field="worker_runtime",
        default="Docker's default",
        source="seed",
        description="Container runtime for run containers (e.g. `runsc` for gVisor).",
    ),
    VariableSpec(
        name="SPACELIFT_DEFAULT_RUNNER_IMAGE",
        field="default_runner_image",
        default="none (a run spec must name its image)",
        source="seed",
        description="Image of a run whose spec names none (already on the Docker host).",
    ),
    VariableSpec(
        name="SPACELIFT_WHITELIST_ENVS",
        field="whitelist_envs",
        default="none",
        source="seed",
        description="Comma list of the launcher's own variables passed to runs; a name "
        "prefixed `ro_` or `wo_` goes to read-only or write runs only (prefix removed).",
    ),
    VariableSpec(
        name="SPACELIFT_LAUNCHER_LOGS_TIMEOUT",
        field="launcher_logs_timeout",
        default=_duration_default(DEFAULT_LOGS_TIMEOUT),
        source="seed",
        description="Kill a run that has produced no logs for this long (Go duration "
        "above 0, e.g. `1000s`).",
    ),
    VariableSpec(
        name="SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY",
        field="launcher_run_initialization_policy",
        default="unset",
        source="seed",
        description="Absolute path of the run initialization policy: a readable `.rego` file, "
        "or a directory (readable and searchable) whose `.rego` files, and `.json`/`.yaml` data "
        "files, are read recursively.",
    ),
    VariableSpec(
        name="SPACELIFT_LAUNCHER_RUN_TIMEOUT",
        field="launcher_run_timeout",
        default=_duration_default(DEFAULT_RUN_TIMEOUT),
        source="seed",
        description="Maximum run time (Go duration above 0, e.g. `120m`).",
    ),
    VariableSpec(
        name="SPACELIFT_METADATA_<tag>",
        field="metadata",
        default="none",
        source="seed",
        description=f"Tag `<tag>` (case kept; letters, digits, `_`, `.`, `-`; at most "
        f"{MAX_METADATA_TAG_CHARS} characters) sent at registration, e.g. "
        f"`SPACELIFT_METADATA_instance_id`; values at most {MAX_METADATA_VALUE_CHARS} "
        f"characters, at most {MAX_METADATA_TAGS} tags.",
    ),
    VariableSpec(
        name="SPACELIFT_PRIVATEVCS_MAPPING_NAME_<n>",
        field="privatevcs_mappings",
        default="none",
        source="seed",
        description="Name of VCS agent pool number `<n>` (`0`, `1`, `2`… without gaps); "
        "pairs with the endpoint of the same `<n>`.",
    ),
    VariableSpec(
        name="SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_<n>",
        field="privatevcs_mappings",
        default="none",
        source="seed",
        description="Address of that private VCS: an `http(s)://` URL without credentials, "
        "or `host:port`.",
    ),
    VariableSpec(
        name="SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED",
        field="run_logs_on_standard_output_enabled",
        default="`false`",
        source="seed",
        description="Also print run logs on the launcher's standard output (`true`/`false`, "
        "`1`/`0`, `yes`/`no`).",
    ),
    VariableSpec(
        name="SPACELIFT_DEBUG",
        field="debug",
        default="`false`",
        source="seed",
        description="Debug logging for the launcher (never payloads or secrets).",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_COMMS_PROTOCOL",
        field="worker_comms_protocol",
        default="`poll`",
        source="seed",
        description="Transport to the control plane: `poll` (HTTPS long polling with the pool "
        "certificate; passes HTTP proxies) or `mqtt` (the token's broker).",
    ),
    VariableSpec(
        name="SPACELIFT_WORKER_COMMS_URL",
        field="worker_comms_url",
        default="the token's `control_plane_url`",
        source="seed",
        description="Control plane URL for `poll`: `https://` only, no credentials, query or "
        "fragment; `HTTPS_PROXY`/`NO_PROXY` apply to it.",
    ),
    VariableSpec(
        name=CONFIG_FILE_VARIABLE,
        field="config_file",
        default="unset",
        source="project",
        description="Absolute path of a TOML file holding `HL_*` settings (keys as in the File "
        "key column); not group/world-writable; the environment wins over it.",
    ),
    VariableSpec(
        name="HL_CA_FINGERPRINT",
        field="pinned_ca_sha256",
        default="unset (CA from the token)",
        source="project",
        description="SHA-256 of the CA certificate (DER) the pool certificate must chain to: "
        "64 hex digits, colons optional.",
    ),
    VariableSpec(
        name="HL_RELEASE_KEY_FINGERPRINTS",
        field="release_key_fingerprints",
        default="none (no binary trusted)",
        source="project",
        description="Comma list of full OpenPGP fingerprints (40 or 64 hex digits) of keys "
        "trusted to sign binaries; short key IDs are refused.",
    ),
    VariableSpec(
        name="HL_RELEASE_KEYRING",
        field="release_keyring",
        default="unset",
        source="project",
        description="Absolute path of a readable file holding the OpenPGP public keys (armored "
        "or binary) that the pinned fingerprints refer to; `verify-binary` uses it when "
        "`--keyring` is not given.",
    ),
    VariableSpec(
        name="HL_RELEASE_DIR",
        field="release_dir",
        default="unset (`start` refuses to run)",
        source="project",
        description="Absolute path of a readable, searchable directory of signed releases, "
        "`<dir>/<name>/<version>/{<name>,SHA256SUMS,SHA256SUMS.sig|.asc}`; it must hold the "
        "`hl-worker` release the launcher runs in every container.",
    ),
    VariableSpec(
        name="HL_EGRESS_POLICY",
        field="egress_policy",
        default="unset (no egress proxy: runs join `SPACELIFT_WORKER_NETWORK` as configured)",
        source="project",
        description="Absolute path of the egress policy file (YAML, or TOML if it ends in "
        "`.toml`): the hosts, ports and networks runs may reach through their egress proxy "
        "(docs/egress.md).",
    ),
    VariableSpec(
        name="HL_STATE_DIR",
        field="state_dir",
        default=f"`$XDG_STATE_HOME/{APP_DIR_NAME}`, else `~/.local/state/{APP_DIR_NAME}`",
        source="project",
        description="Absolute path of the launcher's state directory.",
    ),
    VariableSpec(
        name="HL_CACHE_DIR",
        field="cache_dir",
        default=f"`$XDG_CACHE_HOME/{APP_DIR_NAME}`, else `~/.cache/{APP_DIR_NAME}`",
        source="project",
        description="Absolute path of the cache directory (verified binaries).",
    ),
    VariableSpec(
        name="HL_AUDIT_DIR",
        field="audit_dir",
        default="`<state_dir>/audit`",
        source="project",
        description="Absolute path of the audit log directory.",
    ),
    VariableSpec(
        name="HL_MAX_CONCURRENT_RUNS",
        field="max_concurrent_runs",
        default=f"`{DEFAULT_MAX_CONCURRENT_RUNS}`",
        source="project",
        description=f"Runs this launcher executes at once (1 to {MAX_CONCURRENT_RUNS_LIMIT}).",
    ),
    VariableSpec(
        name="HL_MAX_ENVELOPE_BYTES",
        field="max_envelope_bytes",
        default=f"`{DEFAULT_MAX_ENVELOPE_BYTES // MIB}MiB`",
        source="project",
        description="Largest sealed run state accepted: bytes, or with a `KiB`/`MiB` suffix "
        "(1 KiB to 256 MiB).",
    ),
    VariableSpec(
        name="HL_CLOCK_SKEW",
        field="clock_skew",
        default=_duration_default(DEFAULT_CLOCK_SKEW),
        source="project",
        description=f"Allowed clock difference for certificate and envelope times (Go duration, "
        f"0s to {format_duration(MAX_CLOCK_SKEW)}).",
    ),
    VariableSpec(
        name="HL_LAUNCHER_ID",
        field="launcher_id",
        default="a random ID kept in `<state_dir>/launcher-id`",
        source="project",
        description="Name of this launcher on run containers' labels; containers left by an "
        "earlier life of the same ID are removed at start-up, and a start is refused "
        "(`launcher_id_in_use`) while another live launcher holds containers under it (1 to 63 "
        "of `A-Za-z0-9_.-`; one per launcher on a host).",
    ),
    VariableSpec(
        name="HL_WORKER_UID",
        field="worker_uid",
        default=f"`{DEFAULT_WORKER_UID}`",
        source="project",
        description="User ID run containers run as (never root unless set to 0 on purpose).",
    ),
    VariableSpec(
        name="HL_WORKER_GID",
        field="worker_gid",
        default=f"`{DEFAULT_WORKER_GID}`",
        source="project",
        description="Group ID run containers run as.",
    ),
    VariableSpec(
        name="HL_RUN_MEMORY_BYTES",
        field="run_memory_bytes",
        default=f"`{DEFAULT_RUN_MEMORY_BYTES // GIB}GiB`",
        source="project",
        description="Memory limit of a run container (bytes, or `KiB`/`MiB`/`GiB`); a run spec "
        "may ask for less, never more.",
    ),
    VariableSpec(
        name="HL_RUN_PIDS_LIMIT",
        field="run_pids_limit",
        default=f"`{DEFAULT_RUN_PIDS_LIMIT}`",
        source="project",
        description=f"Most processes a run container may hold (8 to {MAX_RUN_PIDS_LIMIT}).",
    ),
    VariableSpec(
        name="HL_RUN_CPUS",
        field="run_cpus",
        default=f"`{DEFAULT_RUN_CPUS:g}`",
        source="project",
        description="CPU limit of a run container, in CPUs (e.g. `0.5`, `2`).",
    ),
    VariableSpec(
        name="HL_RUN_WORKSPACE_BYTES",
        field="run_workspace_bytes",
        default=f"`{DEFAULT_RUN_WORKSPACE_BYTES // GIB}GiB`",
        source="project",
        description="Size of the run's in-memory workspace (`/workspace`, counted in its memory).",
    ),
    VariableSpec(
        name="HL_RUN_TMP_BYTES",
        field="run_tmp_bytes",
        default=f"`{DEFAULT_RUN_TMP_BYTES // MIB}MiB`",
        source="project",
        description="Size of the run's in-memory `/tmp`.",
    ),
    VariableSpec(
        name="HL_RUN_STOP_GRACE",
        field="run_stop_grace",
        default=_duration_default(DEFAULT_RUN_STOP_GRACE),
        source="project",
        description="Time between SIGTERM and SIGKILL when a run is stopped (timeout, cancel; "
        f"Go duration, 0s to {format_duration(MAX_RUN_STOP_GRACE)}).",
    ),
    VariableSpec(
        name="HL_HEARTBEAT_INTERVAL",
        field="heartbeat_interval",
        default=_duration_default(DEFAULT_HEARTBEAT_INTERVAL),
        source="project",
        description="Time between the launcher's heartbeats to the control plane (Go duration, "
        f"{format_duration(MIN_HEARTBEAT_INTERVAL)} to "
        f"{format_duration(MAX_HEARTBEAT_INTERVAL)}).",
    ),
    VariableSpec(
        name="HL_SHUTDOWN_GRACE",
        field="shutdown_grace",
        default=_duration_default(DEFAULT_SHUTDOWN_GRACE),
        source="project",
        description="After the first SIGTERM, how long running runs may finish before they are "
        f"stopped (Go duration, 0s to {format_duration(MAX_SHUTDOWN_GRACE)}).",
    ),
    VariableSpec(
        name="HL_METRICS_ADDRESS",
        field="metrics_address",
        default="unset (no listener)",
        source="project",
        description="`host:port` (or `[v6]:port`) of a local HTTP listener with `/healthz`, "
        "`/readyz` and Prometheus `/metrics` (docs/logs.md); no authentication, so prefer "
        "loopback or a network only your monitoring reaches.",
    ),
    VariableSpec(
        name="HL_LOG_CHUNK_BYTES",
        field="log_chunk_bytes",
        default=f"`{DEFAULT_LOG_CHUNK_BYTES // KIB}KiB`",
        source="project",
        description="Size at which a run's log is cut into a chunk uploaded to object storage "
        "(bytes, or with a `KiB`/`MiB` suffix, 4 KiB to 16 MiB); a chunk is also cut after 2s.",
    ),
    VariableSpec(
        name="HL_LOG_SPOOL_MAX_BYTES",
        field="log_spool_max_bytes",
        default="`2GiB`",
        source="project",
        description="Size cap of the run-log spool (`<HL_STATE_DIR>/log-spool`, chunks not yet "
        "in object storage; `MiB`/`GiB`, 1 MiB to 1024 GiB): before each run, the spools of the "
        "oldest finished runs are dropped until it fits, never a running run's; each drop is "
        "audited `run.logs_dropped` and counted in `hl_log_bytes_lost` (docs/logs.md).",
    ),
    VariableSpec(
        name="HL_RUN_LOG_RETENTION",
        field="run_log_retention",
        default="`168h,1000`",
        source="project",
        description="How long local per-run log copies (`<HL_STATE_DIR>/runs`) are kept: a "
        "Go duration (age, 1m to 8760h) and/or a count (1 to 1000000), comma-separated, or "
        "`off`; a copy whose run still has chunks not in object storage, or written in the last "
        "10 minutes, is never removed (docs/launcher.md).",
    ),
    VariableSpec(
        name="HL_POLICY_SYNTAX",
        field="policy_syntax",
        default=f"`{DEFAULT_POLICY_SYNTAX}`",
        source="project",
        description="Rego dialect of the policy files (any case): `auto` detects it per file, "
        '`v0` is the legacy `deny["msg"] { … }` syntax, `v1` is `deny contains msg if`.',
    ),
    VariableSpec(
        name="HL_POLICY_TIMEOUT",
        field="policy_timeout",
        default=_duration_default(DEFAULT_POLICY_TIMEOUT),
        source="project",
        description=f"Longest a policy evaluation may take (Go duration, "
        f"{format_duration(MIN_POLICY_TIMEOUT)} to {format_duration(MAX_POLICY_TIMEOUT)}); an "
        "evaluation that takes longer denies the run.",
    ),
    VariableSpec(
        name="HL_POLICY_SANITIZE_KEY",
        field="policy_sanitize_key",
        default="a random key per start",
        secret=True,
        source="project",
        description="Key of the HMAC that turns secret values into the `sanitized:` form "
        f"policies see (base64 of at least {MIN_SANITIZE_KEY_BYTES} bytes, e.g. `openssl rand "
        "-base64 32`); set it to keep that form stable across restarts and launchers. "
        "Environment only: the config file may not hold it.",
    ),
    VariableSpec(
        name="HL_UNSAFE_ROOT_WORKER",
        field="unsafe_root_worker",
        default="`false`",
        source="project",
        description="UNSAFE opt-in: allow `HL_WORKER_UID=0` or `HL_WORKER_GID=0` (runs as root "
        "in their container). `doctor` flags it and the audit log records it at every start.",
    ),
    VariableSpec(
        name="HL_UNSAFE_SHARED_NETWORK",
        field="unsafe_shared_network",
        default="`false`",
        source="project",
        description="UNSAFE opt-in: allow `SPACELIFT_WORKER_NETWORK=host` or `container:<id>` "
        "(runs share the host's or another container's network namespace). `doctor` flags it "
        "and the audit log records it at every start.",
    ),
    VariableSpec(
        name="HL_AUDIT_SEGMENT_BYTES",
        field="audit_segment_bytes",
        default=f"`{DEFAULT_AUDIT_SEGMENT_BYTES // MIB}MiB`",
        source="project",
        description="Audit segment size that starts a new segment (1 MiB to 4 GiB; bytes or "
        "with a `KiB`/`MiB`/`GiB` suffix).",
    ),
    VariableSpec(
        name="HL_AUDIT_SEGMENT_MAX_AGE",
        field="audit_segment_max_age",
        default=_duration_default(DEFAULT_AUDIT_SEGMENT_MAX_AGE),
        source="project",
        description="Age that starts a new audit segment (Go duration, 1s to 744h).",
    ),
    VariableSpec(
        name="HL_AUDIT_CHECKPOINT_RECORDS",
        field="audit_checkpoint_records",
        default=f"`{DEFAULT_AUDIT_CHECKPOINT_RECORDS}`",
        source="project",
        description="Records between two signed audit checkpoints (1 to "
        f"{MAX_AUDIT_CHECKPOINT_RECORDS}).",
    ),
    VariableSpec(
        name="HL_AUDIT_CHECKPOINT_INTERVAL",
        field="audit_checkpoint_interval",
        default=_duration_default(DEFAULT_AUDIT_CHECKPOINT_INTERVAL),
        source="project",
        description="Longest time between two signed audit checkpoints (Go duration, 1s to 744h).",
    ),
    VariableSpec(
        name="HL_AUDIT_WRITE_TIMEOUT",
        field="audit_write_timeout",
        default=_duration_default(DEFAULT_AUDIT_WRITE_TIMEOUT),
        source="project",
        description="Longest an audit write may block before the log counts as unavailable "
        "and runs are refused (Go duration, 1s to 744h).",
    ),
)

#: Fields of :class:`Settings` that no variable sets.
DERIVED_FIELDS: Final = frozenset({"warnings"})

_BY_NAME: Final[dict[str, VariableSpec]] = {spec.name: spec for spec in VARIABLES}
_FIXED_NAMES: Final = tuple(spec.name for spec in VARIABLES if not spec.is_pattern)
_FILE_KEYS: Final[dict[str, VariableSpec]] = {
    key: spec for spec in VARIABLES if (key := spec.file_key) is not None
}
#: Keys of secret ``HL_*`` settings: refused in the config file with their own message.
_SECRET_FILE_KEYS: Final[dict[str, VariableSpec]] = {
    key: spec for spec in VARIABLES if spec.secret and (key := spec.toml_name) is not None
}


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
def _empty_mapping() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The launcher's whole configuration. Build it with :func:`load_settings`.

    Direct construction (handy in tests) checks the invariants that do not need the file system
    and raises :class:`SettingsError` naming the variable behind each bad field.
    """

    # -- SPACELIFT_* (the vendor contract) -----------------------------------------------------
    token: Secret | None = None
    pool_private_key: Secret | None = None
    token_file: Path | None = None
    pool_private_key_file: Path | None = None
    docker_config_dir: Path | None = None
    mask_envs: tuple[str, ...] = ()
    worker_network: str = DEFAULT_WORKER_NETWORK
    worker_extra_mounts: tuple[Mount, ...] = ()
    worker_extra_mounts_ro: tuple[Mount, ...] = ()
    worker_extra_mounts_wo: tuple[Mount, ...] = ()
    worker_runtime: str | None = None
    default_runner_image: str | None = None
    whitelist_envs: tuple[WhitelistedEnv, ...] = ()
    launcher_logs_timeout: timedelta = DEFAULT_LOGS_TIMEOUT
    launcher_run_initialization_policy: Path | None = None
    launcher_run_timeout: timedelta = DEFAULT_RUN_TIMEOUT
    metadata: Mapping[str, str] = field(default_factory=_empty_mapping)
    privatevcs_mappings: tuple[PrivateVcsMapping, ...] = ()
    run_logs_on_standard_output_enabled: bool = False
    debug: bool = False
    worker_comms_protocol: CommsProtocol = "poll"
    worker_comms_url: str | None = None
    # -- HL_* (this project) -------------------------------------------------------------------
    config_file: Path | None = None
    pinned_ca_sha256: bytes | None = None
    release_key_fingerprints: tuple[str, ...] = ()
    release_keyring: Path | None = None
    release_dir: Path | None = None
    egress_policy: Path | None = None
    state_dir: Path
    cache_dir: Path
    audit_dir: Path
    max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    launcher_id: str | None = None
    worker_uid: int = DEFAULT_WORKER_UID
    worker_gid: int = DEFAULT_WORKER_GID
    run_memory_bytes: int = DEFAULT_RUN_MEMORY_BYTES
    run_pids_limit: int = DEFAULT_RUN_PIDS_LIMIT
    run_cpus: float = DEFAULT_RUN_CPUS
    run_workspace_bytes: int = DEFAULT_RUN_WORKSPACE_BYTES
    run_tmp_bytes: int = DEFAULT_RUN_TMP_BYTES
    run_stop_grace: timedelta = DEFAULT_RUN_STOP_GRACE
    heartbeat_interval: timedelta = DEFAULT_HEARTBEAT_INTERVAL
    shutdown_grace: timedelta = DEFAULT_SHUTDOWN_GRACE
    policy_syntax: PolicySyntax = DEFAULT_POLICY_SYNTAX
    policy_timeout: timedelta = DEFAULT_POLICY_TIMEOUT
    #: The decoded HMAC key bytes (not the base64 text); ``None``: a random key per start.
    policy_sanitize_key: Secret | None = None
    metrics_address: str | None = None
    log_chunk_bytes: int = DEFAULT_LOG_CHUNK_BYTES
    log_spool_max_bytes: int = DEFAULT_LOG_SPOOL_MAX_BYTES
    run_log_retention: RunLogRetention = DEFAULT_RUN_LOG_RETENTION
    unsafe_root_worker: bool = False
    unsafe_shared_network: bool = False
    audit_segment_bytes: int = DEFAULT_AUDIT_SEGMENT_BYTES
    audit_segment_max_age: timedelta = DEFAULT_AUDIT_SEGMENT_MAX_AGE
    audit_checkpoint_records: int = DEFAULT_AUDIT_CHECKPOINT_RECORDS
    audit_checkpoint_interval: timedelta = DEFAULT_AUDIT_CHECKPOINT_INTERVAL
    audit_write_timeout: timedelta = DEFAULT_AUDIT_WRITE_TIMEOUT
    # -- derived ------------------------------------------------------------------------------
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A read-only copy, so neither the caller's dict nor anyone else can change it later.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        problems = [
            SettingsProblem(variable=_variable_of(name), text=f"{_variable_of(name)}: {why}")
            for name, why in self._invariant_violations()
        ]
        if problems:
            raise SettingsError.from_problems(problems)

    def _invariant_violations(self) -> list[tuple[str, str]]:
        bad: list[tuple[str, str]] = []
        if self.launcher_logs_timeout <= timedelta(0):
            bad.append(("launcher_logs_timeout", "must be more than 0s"))
        if self.launcher_run_timeout <= timedelta(0):
            bad.append(("launcher_run_timeout", "must be more than 0s"))
        if not timedelta(0) <= self.clock_skew <= MAX_CLOCK_SKEW:
            bad.append(("clock_skew", f"must be from 0s to {format_duration(MAX_CLOCK_SKEW)}"))
        if not 1 <= self.max_concurrent_runs <= MAX_CONCURRENT_RUNS_LIMIT:
            bad.append(("max_concurrent_runs", f"must be 1 to {MAX_CONCURRENT_RUNS_LIMIT}"))
        if not MIN_ENVELOPE_BYTES <= self.max_envelope_bytes <= MAX_ENVELOPE_BYTES_LIMIT:
            bad.append(("max_envelope_bytes", "must be from 1 KiB to 256 MiB"))
        if self.worker_comms_protocol not in ("mqtt", "poll"):
            bad.append(("worker_comms_protocol", "must be poll or mqtt"))
        if self.worker_comms_url is not None:
            try:
                _parse_comms_url(self.worker_comms_url)
            except _InvalidValueError:
                bad.append(("worker_comms_url", "must be an https:// URL without credentials"))
        if self.pinned_ca_sha256 is not None and len(self.pinned_ca_sha256) != 32:
            bad.append(("pinned_ca_sha256", "must be 32 bytes (a SHA-256 digest)"))
        if not _DOCKER_NAME_RE.fullmatch(self.worker_network):
            bad.append(("worker_network", "is not a Docker network name or ID"))
        if self.launcher_id is not None and not _LAUNCHER_ID_RE.fullmatch(self.launcher_id):
            bad.append(("launcher_id", "is not a launcher ID"))
        for name in ("worker_uid", "worker_gid"):
            if not 0 <= getattr(self, name) <= MAX_WORKER_ID:
                bad.append((name, f"must be from 0 to {MAX_WORKER_ID}"))
        bad += self._isolation_violations()
        bad += self._audit_tuning_violations()
        if not MIN_RUN_MEMORY_BYTES <= self.run_memory_bytes <= MAX_RUN_BYTES:
            bad.append(("run_memory_bytes", "is out of range"))
        if not 8 <= self.run_pids_limit <= MAX_RUN_PIDS_LIMIT:
            bad.append(("run_pids_limit", f"must be from 8 to {MAX_RUN_PIDS_LIMIT}"))
        if not 0.01 <= self.run_cpus <= MAX_RUN_CPUS:
            bad.append(("run_cpus", f"must be from 0.01 to {MAX_RUN_CPUS:g}"))
        for name in ("run_workspace_bytes", "run_tmp_bytes"):
            if not MIN_RUN_TMPFS_BYTES <= getattr(self, name) <= MAX_RUN_BYTES:
                bad.append((name, "is out of range"))
        if not timedelta(0) <= self.run_stop_grace <= MAX_RUN_STOP_GRACE:
            bad.append(
                ("run_stop_grace", f"must be from 0s to {format_duration(MAX_RUN_STOP_GRACE)}")
            )
        if not MIN_HEARTBEAT_INTERVAL <= self.heartbeat_interval <= MAX_HEARTBEAT_INTERVAL:
            low = format_duration(MIN_HEARTBEAT_INTERVAL)
            high = format_duration(MAX_HEARTBEAT_INTERVAL)
            bad.append(("heartbeat_interval", f"must be from {low} to {high}"))
        if not timedelta(0) <= self.shutdown_grace <= MAX_SHUTDOWN_GRACE:
            bad.append(
                ("shutdown_grace", f"must be from 0s to {format_duration(MAX_SHUTDOWN_GRACE)}")
            )
        if self.policy_syntax not in POLICY_SYNTAXES:
            bad.append(("policy_syntax", "must be auto, v0 or v1"))
        if not MIN_POLICY_TIMEOUT <= self.policy_timeout <= MAX_POLICY_TIMEOUT:
            low, high = format_duration(MIN_POLICY_TIMEOUT), format_duration(MAX_POLICY_TIMEOUT)
            bad.append(("policy_timeout", f"must be from {low} to {high}"))
        if not MIN_LOG_CHUNK_BYTES <= self.log_chunk_bytes <= MAX_LOG_CHUNK_BYTES:
            bad.append(("log_chunk_bytes", "must be from 4 KiB to 16 MiB"))
        if not MIN_LOG_SPOOL_MAX_BYTES <= self.log_spool_max_bytes <= MAX_LOG_SPOOL_MAX_BYTES:
            bad.append(("log_spool_max_bytes", "must be from 1 MiB to 1024 GiB"))
        key = self.policy_sanitize_key
        if key is not None and (not key or len(key) < MIN_SANITIZE_KEY_BYTES):
            bad.append(
                ("policy_sanitize_key", f"must hold at least {MIN_SANITIZE_KEY_BYTES} bytes")
            )
        for name in (
            "docker_config_dir",
            "launcher_run_initialization_policy",
            "config_file",
            "release_keyring",
            "release_dir",
            "egress_policy",
            "state_dir",
            "cache_dir",
            "audit_dir",
        ):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                bad.append((name, "must be an absolute path"))
        return bad

    def _isolation_violations(self) -> list[tuple[str, str]]:
        """Settings that would weaken a run's isolation, each with what to do instead."""
        bad: list[tuple[str, str]] = []
        for env in self.whitelist_envs:
            why = whitelist_refusal(env.name)
            if why is not None:
                bad.append(("whitelist_envs", why))
        network = shared_network_mode(self.worker_network)
        if network is not None and not self.unsafe_shared_network:
            bad.append(
                (
                    "worker_network",
                    (
                        f"{self.worker_network!r} shares {network} with runs, so run code could "
                        "reach what only the launcher should; name a Docker bridge network (or "
                        "unset it for `bridge`), or set HL_UNSAFE_SHARED_NETWORK=true if this "
                        "deployment really needs it"
                    ),
                )
            )
        for name in ("worker_uid", "worker_gid"):
            if getattr(self, name) == 0 and not self.unsafe_root_worker:
                bad.append(
                    (
                        name,
                        (
                            "is 0 (root in the run's container); set another ID (default "
                            f"{DEFAULT_WORKER_UID}), or set HL_UNSAFE_ROOT_WORKER=true if runs "
                            "really need root"
                        ),
                    )
                )
        return bad

    def _audit_tuning_violations(self) -> list[tuple[str, str]]:
        bad: list[tuple[str, str]] = []
        if not MIN_AUDIT_SEGMENT_BYTES <= self.audit_segment_bytes <= MAX_AUDIT_SEGMENT_BYTES:
            bad.append(("audit_segment_bytes", "must be from 1 MiB to 4 GiB"))
        if not 1 <= self.audit_checkpoint_records <= MAX_AUDIT_CHECKPOINT_RECORDS:
            bad.append(
                ("audit_checkpoint_records", f"must be from 1 to {MAX_AUDIT_CHECKPOINT_RECORDS}")
            )
        for name in ("audit_segment_max_age", "audit_checkpoint_interval", "audit_write_timeout"):
            if not timedelta(seconds=1) <= getattr(self, name) <= MAX_AUDIT_INTERVAL:
                bad.append((name, f"must be from 1s to {format_duration(MAX_AUDIT_INTERVAL)}"))
        return bad

    @property
    def unsafe_opt_ins(self) -> tuple[str, ...]:
        """The ``HL_UNSAFE_*`` opt-ins that are set, needed or not (flagged by ``doctor``,
        audited at every start)."""
        used: list[str] = []
        if self.unsafe_root_worker:
            used.append("HL_UNSAFE_ROOT_WORKER")
        if self.unsafe_shared_network:
            used.append("HL_UNSAFE_SHARED_NETWORK")
        return tuple(used)

    def extra_mounts_for(self, run_type: RunType) -> tuple[Mount, ...]:
        """The extra mounts of a run of ``run_type``: the common ones, then the type's own."""
        if run_type == "ro":
            return self.worker_extra_mounts + self.worker_extra_mounts_ro
        if run_type == "wo":
            return self.worker_extra_mounts + self.worker_extra_mounts_wo
        raise ValueError(f"unknown run type {run_type!r}; expected 'ro' or 'wo'")

    def whitelisted_env_names_for(self, run_type: RunType) -> tuple[str, ...]:
        """Names of the launcher variables passed to a run of ``run_type``, in list order."""
        if run_type not in RUN_TYPES:
            raise ValueError(f"unknown run type {run_type!r}; expected 'ro' or 'wo'")
        return tuple(env.name for env in self.whitelist_envs if env.applies_to(run_type))


def _variable_of(field_name: str) -> str:
    for spec in VARIABLES:
        if spec.field == field_name:
            return spec.name
    return field_name


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Raw:
    text: str
    label: str


class _Loader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = dict(environ)
        self.file_values: dict[str, _Raw] = {}
        self.problems: list[SettingsProblem] = []
        self.warnings: list[str] = []

    def problem(self, variable: str, text: str, reason: str = "setting_invalid") -> None:
        self.problems.append(SettingsProblem(variable=variable, text=text, reason=reason))

    def env_value(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip(_SPACE):
            return None
        return value

    def raw(self, name: str) -> _Raw | None:
        value = self.env_value(name)
        if value is not None:
            return _Raw(value, name)
        return self.file_values.get(name)

    def report(self, variable: str, label: str, text: str, exc: _InvalidValueError) -> None:
        secret = _BY_NAME[variable].secret if variable in _BY_NAME else False
        shown = "value not shown" if secret or exc.hide_value else f"got {_show(text)}"
        self.problem(variable, f"{label}: {exc.why} ({shown}); expected {exc.expected}", exc.reason)

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.raw(name)
        if raw is None:
            return default
        try:
            return parse(raw.text)
        except _InvalidValueError as exc:
            self.report(name, raw.label, raw.text, exc)
            return default

    def seed_secret(self, name: str) -> Secret | None:
        """The token or pool key: from its variable, its ``_FILE`` variant or a systemd
        credential (hardened_launcher/credential_files.py), with the same validation."""
        via_file = file_variable(name)
        file_raw = self.raw(via_file)  # the path may also come from the config file
        if self.env_value(name) is not None:
            if file_raw is not None:
                self.problem(
                    name,
                    f"{name} and {via_file} are both set; expected only one of them",
                    "secret_set_twice",
                )
                return None
            return self.get(name, _parse_secret, None)
        try:
            view = dict(self.env)
            if file_raw is not None:
                view[via_file] = file_raw.text
            found = credential_text(view, name)
        except CredentialFileError as exc:
            self.problem(name, f"{exc.label}: {exc.why}; expected {exc.expected}", exc.reason)
            return None
        if found is None:
            return None
        try:
            return _parse_secret(found.text)
        except _InvalidValueError as exc:
            self.report(name, found.label, found.text, exc)
            return None

    # -- the config file -----------------------------------------------------------------------
    def read_config_file(self, path: Path, variable: str) -> None:
        expected = "an absolute path of a TOML file that is not group- or world-writable"
        if not path.is_absolute():
            self.problem(
                variable,
                f"{variable}: is not an absolute path (got {_show(str(path))}); "
                f"expected {expected}",
            )
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            self.problem(
                variable,
                f"{variable}: the config file {path} cannot be opened ({exc.strerror}); "
                f"expected {expected}",
                "config_file_unreadable",
            )
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.problem(
                    variable,
                    f"{variable}: {path} is not a regular file; expected {expected}",
                    "config_file_unreadable",
                )
                return
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                self.problem(
                    variable,
                    f"{variable}: {path} is writable by group or others (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}), so others could change the launcher's "
                    f"trust settings; run `chmod go-w {path}`",
                    "config_file_insecure",
                )
                return
            if st.st_size > MAX_CONFIG_FILE_BYTES:
                self.problem(
                    variable,
                    f"{variable}: {path} is larger than {MAX_CONFIG_FILE_BYTES} bytes; expected "
                    "a small TOML file of HL_ settings",
                    "config_file_invalid",
                )
                return
            with os.fdopen(fd, "rb", closefd=False) as handle:
                data = handle.read(MAX_CONFIG_FILE_BYTES + 1)
        except OSError as exc:
            self.problem(
                variable,
                f"{variable}: the config file {path} cannot be read ({exc.strerror})",
                "config_file_unreadable",
            )
            return
        finally:
            os.close(fd)
        try:
            document = load_toml(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, DocumentTooDeepError) as exc:
            why = "is not UTF-8" if isinstance(exc, UnicodeDecodeError) else f"is not TOML ({exc})"
            self.problem(
                variable,
                f'{variable}: {path} {why}; expected TOML such as clock_skew = "5m"',
                "config_file_invalid",
            )
            return
        for key, value in document.items():
            self._file_entry(path, variable, key, value)

    def _file_entry(self, path: Path, variable: str, key: str, value: object) -> None:
        spec = _FILE_KEYS.get(key)
        guess = key.lower().removeprefix("hl_")
        secret_spec = _SECRET_FILE_KEYS.get(guess)
        if secret_spec is not None:
            # Never the value: it is a secret that should not have been written down here.
            self.problem(
                secret_spec.name,
                f"{secret_spec.name} (key {key[:80]!r} in {path}): is a secret, and secrets are "
                f"not read from the config file (value not shown); expected {secret_spec.name} "
                f"in the environment only: remove the key from {path} (and treat the key as "
                "exposed if the file was shared)",
                "config_file_secret_key",
            )
            return
        if spec is None:
            import difflib  # noqa: PLC0415  # only to suggest a name

            close = difflib.get_close_matches(guess, list(_FILE_KEYS), n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(
                variable,
                f"{variable}: {path} has unknown key {key[:80]!r}{suggestion}; expected only "
                f"these keys: {', '.join(_FILE_KEYS)}",
                "config_file_unknown_key",
            )
            return
        label = f"{spec.name} (key {key!r} in {path})"
        text: str | None = None
        if isinstance(value, str):
            text = value
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and spec.field
            in (
                "max_concurrent_runs",
                "max_envelope_bytes",
                "worker_uid",
                "worker_gid",
                "run_memory_bytes",
                "run_pids_limit",
                "run_cpus",
                "run_workspace_bytes",
                "run_tmp_bytes",
                "audit_segment_bytes",
                "audit_checkpoint_records",
            )
        ):
            text = str(value)
        elif (
            isinstance(value, list)
            and spec.field == "release_key_fingerprints"
            and all(isinstance(item, str) for item in value)
        ):
            text = ",".join(value)
        if text is None:
            self.problem(
                spec.name,
                f"{label}: has a TOML {type(value).__name__}; expected a string as for the "
                "environment variable",
            )
            return
        if text.strip(_SPACE):
            self.file_values[spec.name] = _Raw(text, label)

    # -- variables with a computed default -----------------------------------------------------
    def home(self) -> Path | None:
        home = self.env.get("HOME", "")
        if home and Path(home).is_absolute():
            return Path(home)
        try:
            fallback = Path.home()
        except (RuntimeError, KeyError):
            return None
        return fallback if fallback.is_absolute() else None

    def default_dir(self, name: str, xdg_variable: str, home_relative: str) -> Path | None:
        xdg = self.env.get(xdg_variable, "")
        if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are to be ignored
            return Path(xdg) / APP_DIR_NAME
        home = self.home()
        if home is None:
            self.problem(
                name,
                f"{name}: is unset and no default can be worked out ({xdg_variable} and HOME are "
                f"not absolute paths); expected an absolute path in {name}",
            )
            return None
        return home / home_relative / APP_DIR_NAME

    # -- patterns --------------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        tags: dict[str, str] = {}
        expected = (
            f"SPACELIFT_METADATA_<tag>=<value>: a tag of 1 to {MAX_METADATA_TAG_CHARS} letters, "
            f"digits, _ . -, a value of at most {MAX_METADATA_VALUE_CHARS} printable characters"
        )
        for name in sorted(self.env):
            if not name.startswith(METADATA_PREFIX):
                continue
            tag = name[len(METADATA_PREFIX) :]
            value = self.env[name]
            if not tag:
                self.problem(
                    name, f"{name}: the tag name after the prefix is empty; expected {expected}"
                )
                continue
            if len(tag) > MAX_METADATA_TAG_CHARS or not _METADATA_TAG_RE.fullmatch(tag):
                self.problem(
                    name, f"{name}: the tag name {tag[:80]!r} is not allowed; expected {expected}"
                )
                continue
            if not value.strip(_SPACE):
                continue
            if len(value) > MAX_METADATA_VALUE_CHARS or _has_control(value):
                self.problem(
                    name,
                    f"{name}: the value is too long or has control characters (got "
                    f"{_show(value)}); expected {expected}",
                )
                continue
            tags[tag] = value
        if len(tags) > MAX_METADATA_TAGS:
            self.problem(
                "SPACELIFT_METADATA_<tag>",
                f"SPACELIFT_METADATA_<tag>: {len(tags)} tags are set; expected at most "
                f"{MAX_METADATA_TAGS}",
            )
        return tags

    def privatevcs(self) -> tuple[PrivateVcsMapping, ...]:
        names: dict[int, str] = {}
        endpoints: dict[int, str] = {}
        form = "SPACELIFT_PRIVATEVCS_MAPPING_NAME_<n> and _BASE_ENDPOINT_<n> pairs, n = 0, 1, 2…"
        for var in sorted(self.env):
            if var.startswith(PRIVATEVCS_NAME_PREFIX):
                target, prefix = names, PRIVATEVCS_NAME_PREFIX
            elif var.startswith(PRIVATEVCS_ENDPOINT_PREFIX):
                target, prefix = endpoints, PRIVATEVCS_ENDPOINT_PREFIX
            else:
                continue
            suffix = var[len(prefix) :]
            if not _INDEX_RE.fullmatch(suffix) or int(suffix) >= MAX_PRIVATEVCS_MAPPINGS:
                self.problem(
                    var,
                    f"{var}: the index {suffix[:20]!r} is not a number from 0 to "
                    f"{MAX_PRIVATEVCS_MAPPINGS - 1} without leading zeros; expected {form}",
                )
                continue
            value = self.env_value(var)
            if value is not None:
                target[int(suffix)] = value
        mappings: list[PrivateVcsMapping] = []
        seen: dict[str, int] = {}
        valid = True
        for index in sorted(set(names) | set(endpoints)):
            name_var = f"{PRIVATEVCS_NAME_PREFIX}{index}"
            endpoint_var = f"{PRIVATEVCS_ENDPOINT_PREFIX}{index}"
            if index not in names or index not in endpoints:
                missing, present = (
                    (name_var, endpoint_var) if index not in names else (endpoint_var, name_var)
                )
                self.problem(missing, f"{missing}: is unset but {present} is set; expected {form}")
                valid = False
                continue
            name = names[index].strip(_SPACE)
            try:
                _check_vcs_name(name)
            except ValueError as exc:
                self.problem(name_var, f"{name_var}: {exc} (got {_show(name)}); expected {form}")
                valid = False
                continue
            if name in seen:
                self.problem(
                    name_var,
                    f"{name_var}: the name {_show(name)} is already used by "
                    f"{PRIVATEVCS_NAME_PREFIX}{seen[name]}; expected each name once",
                    "privatevcs_duplicate_name",
                )
                valid = False
                continue
            seen[name] = index
            endpoint = self.get(endpoint_var, _parse_endpoint, None)
            if endpoint is None:
                valid = False
                continue
            mappings.append(PrivateVcsMapping(name=name, base_endpoint=endpoint))
        indexes = sorted(set(names) | set(endpoints))
        for expected_index, index in enumerate(indexes):
            if index != expected_index:
                self.problem(
                    f"{PRIVATEVCS_NAME_PREFIX}{expected_index}",
                    f"{PRIVATEVCS_NAME_PREFIX}{expected_index}: is missing, so mapping {index} "
                    f"follows a gap; expected {form} with no gaps",
                    "privatevcs_gap",
                )
                valid = False
                break
        return tuple(mappings) if valid else ()

    # -- unknown variables -----------------------------------------------------------------------
    def unknown_variables(self) -> None:
        fixed = set(_FIXED_NAMES)
        for name in sorted(self.env):
            upper = name.upper()
            if name not in fixed and upper in fixed:
                self.warnings.append(
                    f"{name} is ignored: variable names are case-sensitive (did you mean {upper}?)"
                )
                continue
            if name.startswith("HL_"):
                if name in fixed or name in IGNORED_HL_VARIABLES:
                    continue
                if name.startswith(CONTROL_PLANE_PREFIX):
                    # The control plane's own settings: checked by its commands, not here.
                    continue
                self.problem(
                    name,
                    f"{name}: is not a hardened-launcher setting{_suggest(name)}; expected only "
                    "the HL_ variables in the README's configuration table",
                    "unknown_variable",
                )
            elif name.startswith("SPACELIFT_"):
                if name in fixed or name.startswith(
                    (METADATA_PREFIX, PRIVATEVCS_NAME_PREFIX, PRIVATEVCS_ENDPOINT_PREFIX)
                ):
                    continue
                self.warnings.append(
                    f"{name} is not a setting hardened-launcher knows and is ignored"
                    f"{_suggest(name)}"
                )


def _suggest(name: str) -> str:
    """A close known name in the same namespace, compared without the shared prefix."""
    import difflib  # noqa: PLC0415  # only when a name is unknown

    namespace = "HL_" if name.startswith("HL_") else "SPACELIFT_"
    rest = name.removeprefix(namespace)
    if namespace == "SPACELIFT_":
        # A misspelt pattern prefix: compare the same number of leading characters.
        for prefix in (METADATA_PREFIX, PRIVATEVCS_NAME_PREFIX, PRIVATEVCS_ENDPOINT_PREFIX):
            short = prefix.removeprefix(namespace)
            if difflib.SequenceMatcher(None, rest[: len(short)], short).ratio() >= 0.85:
                return f" (did you mean {prefix}...?)"
    known = {n.removeprefix(namespace): n for n in _FIXED_NAMES if n.startswith(namespace)}
    close = difflib.get_close_matches(rest, list(known), n=1, cutoff=0.8)
    return f" (did you mean {known[close[0]]}?)" if close else ""


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Parse every setting from ``environ`` (default ``os.environ``) and the optional TOML file.

    ``config_file`` wins over ``HL_CONFIG_FILE``. Raises :class:`SettingsError` listing every
    problem found; never returns a partly valid object.
    """
    loader = _Loader(os.environ if environ is None else environ)

    config_path: Path | None = None
    if config_file is not None:
        config_path = Path(config_file)
        loader.read_config_file(config_path, "config_file argument")
    else:
        config_text = loader.env_value(CONFIG_FILE_VARIABLE)
        if config_text is not None:
            config_path = Path(config_text.strip(_SPACE))
            loader.read_config_file(config_path, CONFIG_FILE_VARIABLE)

    loader.unknown_variables()
    get = loader.get
    no_path: Path | None = None
    no_names: tuple[str, ...] = ()
    no_mounts: tuple[Mount, ...] = ()
    no_whitelist: tuple[WhitelistedEnv, ...] = ()
    logs_timeout = _duration_parser(
        minimum=timedelta(0), maximum=None, inclusive_minimum=False, example="7m or 1000s"
    )
    run_timeout = _duration_parser(
        minimum=timedelta(0), maximum=None, inclusive_minimum=False, example="70m or 2h"
    )
    skew = _duration_parser(
        minimum=timedelta(0), maximum=MAX_CLOCK_SKEW, inclusive_minimum=True, example="5m or 90s"
    )

    token = loader.seed_secret("SPACELIFT_TOKEN")
    pool_private_key = loader.seed_secret("SPACELIFT_POOL_PRIVATE_KEY")
    token_file = get("SPACELIFT_TOKEN_FILE", _parse_abs_path, no_path)
    pool_private_key_file = get("SPACELIFT_POOL_PRIVATE_KEY_FILE", _parse_abs_path, no_path)
    docker_config_dir = get("SPACELIFT_DOCKER_CONFIG_DIR", _parse_abs_path, no_path)
    mask_envs = get("SPACELIFT_MASK_ENVS", _parse_env_names, no_names)
    worker_network = get("SPACELIFT_WORKER_NETWORK", _parse_docker_name, DEFAULT_WORKER_NETWORK)
    extra_mounts = get("SPACELIFT_WORKER_EXTRA_MOUNTS", _parse_mounts, no_mounts)
    extra_mounts_ro = get("SPACELIFT_WORKER_RO_EXTRA_MOUNTS", _parse_mounts, no_mounts)
    extra_mounts_wo = get("SPACELIFT_WORKER_WO_EXTRA_MOUNTS", _parse_mounts, no_mounts)
    worker_runtime = get("SPACELIFT_WORKER_RUNTIME", _parse_runtime, None)
    default_runner_image = get("SPACELIFT_DEFAULT_RUNNER_IMAGE", _parse_image, None)
    whitelist_envs = get("SPACELIFT_WHITELIST_ENVS", _parse_whitelist, no_whitelist)
    launcher_logs_timeout = get(
        "SPACELIFT_LAUNCHER_LOGS_TIMEOUT", logs_timeout, DEFAULT_LOGS_TIMEOUT
    )
    policy = get("SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY", _parse_policy_path, no_path)
    launcher_run_timeout = get("SPACELIFT_LAUNCHER_RUN_TIMEOUT", run_timeout, DEFAULT_RUN_TIMEOUT)
    metadata = loader.metadata()
    privatevcs_mappings = loader.privatevcs()
    run_logs_stdout = get("SPACELIFT_RUN_LOGS_ON_STANDARD_OUTPUT_ENABLED", _parse_bool, False)
    debug = get("SPACELIFT_DEBUG", _parse_bool, False)
    protocol: CommsProtocol = get("SPACELIFT_WORKER_COMMS_PROTOCOL", _parse_protocol, "poll")
    comms_url = get("SPACELIFT_WORKER_COMMS_URL", _parse_comms_url, None)

    pinned_ca_sha256 = get("HL_CA_FINGERPRINT", _parse_ca_fingerprint, None)
    release_keys = get("HL_RELEASE_KEY_FINGERPRINTS", _parse_fingerprints, no_names)
    release_keyring = get("HL_RELEASE_KEYRING", _parse_release_keyring, no_path)
    release_dir = get("HL_RELEASE_DIR", _parse_release_dir, no_path)
    egress_policy = get("HL_EGRESS_POLICY", _parse_egress_policy, no_path)
    state_dir = get("HL_STATE_DIR", _parse_abs_path, no_path)
    if state_dir is None and loader.raw("HL_STATE_DIR") is None:
        state_dir = loader.default_dir("HL_STATE_DIR", "XDG_STATE_HOME", ".local/state")
    cache_dir = get("HL_CACHE_DIR", _parse_abs_path, no_path)
    if cache_dir is None and loader.raw("HL_CACHE_DIR") is None:
        cache_dir = loader.default_dir("HL_CACHE_DIR", "XDG_CACHE_HOME", ".cache")
    audit_dir = get("HL_AUDIT_DIR", _parse_abs_path, no_path)
    if audit_dir is None and loader.raw("HL_AUDIT_DIR") is None and state_dir is not None:
        audit_dir = state_dir / "audit"
    max_concurrent_runs = get(
        "HL_MAX_CONCURRENT_RUNS", _parse_concurrency, DEFAULT_MAX_CONCURRENT_RUNS
    )
    max_envelope_bytes = get("HL_MAX_ENVELOPE_BYTES", _parse_size, DEFAULT_MAX_ENVELOPE_BYTES)
    clock_skew = get("HL_CLOCK_SKEW", skew, DEFAULT_CLOCK_SKEW)
    stop_grace = _duration_parser(
        minimum=timedelta(0), maximum=MAX_RUN_STOP_GRACE, inclusive_minimum=True, example="10s"
    )
    launcher_id = get("HL_LAUNCHER_ID", _parse_launcher_id, None)
    worker_uid = get("HL_WORKER_UID", _parse_worker_id, DEFAULT_WORKER_UID)
    worker_gid = get("HL_WORKER_GID", _parse_worker_id, DEFAULT_WORKER_GID)
    run_memory_bytes = get("HL_RUN_MEMORY_BYTES", _parse_run_memory, DEFAULT_RUN_MEMORY_BYTES)
    run_pids_limit = get("HL_RUN_PIDS_LIMIT", _parse_pids_limit, DEFAULT_RUN_PIDS_LIMIT)
    run_cpus = get("HL_RUN_CPUS", _parse_cpus, DEFAULT_RUN_CPUS)
    run_workspace_bytes = get(
        "HL_RUN_WORKSPACE_BYTES", _parse_tmpfs_size, DEFAULT_RUN_WORKSPACE_BYTES
    )
    run_tmp_bytes = get("HL_RUN_TMP_BYTES", _parse_tmpfs_size, DEFAULT_RUN_TMP_BYTES)
    run_stop_grace = get("HL_RUN_STOP_GRACE", stop_grace, DEFAULT_RUN_STOP_GRACE)
    heartbeat = _duration_parser(
        minimum=MIN_HEARTBEAT_INTERVAL,
        maximum=MAX_HEARTBEAT_INTERVAL,
        inclusive_minimum=True,
        example="10s or 1m",
    )
    heartbeat_interval = get("HL_HEARTBEAT_INTERVAL", heartbeat, DEFAULT_HEARTBEAT_INTERVAL)
    shutdown = _duration_parser(
        minimum=timedelta(0), maximum=MAX_SHUTDOWN_GRACE, inclusive_minimum=True, example="15m"
    )
    shutdown_grace = get("HL_SHUTDOWN_GRACE", shutdown, DEFAULT_SHUTDOWN_GRACE)
    evaluation_limit = _duration_parser(
        minimum=MIN_POLICY_TIMEOUT,
        maximum=MAX_POLICY_TIMEOUT,
        inclusive_minimum=True,
        example="1s or 250ms",
    )
    policy_syntax = get("HL_POLICY_SYNTAX", _parse_policy_syntax, DEFAULT_POLICY_SYNTAX)
    policy_timeout = get("HL_POLICY_TIMEOUT", evaluation_limit, DEFAULT_POLICY_TIMEOUT)
    policy_sanitize_key = get("HL_POLICY_SANITIZE_KEY", _parse_sanitize_key, None)
    metrics_address = get("HL_METRICS_ADDRESS", _parse_metrics_address, None)
    log_chunk_bytes = get("HL_LOG_CHUNK_BYTES", _parse_log_chunk_bytes, DEFAULT_LOG_CHUNK_BYTES)
    log_spool_max_bytes = get(
        "HL_LOG_SPOOL_MAX_BYTES", _parse_log_spool_max_bytes, DEFAULT_LOG_SPOOL_MAX_BYTES
    )
    run_log_retention = get(
        "HL_RUN_LOG_RETENTION", _parse_run_log_retention, DEFAULT_RUN_LOG_RETENTION
    )
    unsafe_root_worker = get("HL_UNSAFE_ROOT_WORKER", _parse_bool, False)
    unsafe_shared_network = get("HL_UNSAFE_SHARED_NETWORK", _parse_bool, False)
    audit_interval = _duration_parser(
        minimum=timedelta(seconds=1),
        maximum=MAX_AUDIT_INTERVAL,
        inclusive_minimum=True,
        example="60s or 24h",
    )
    audit_segment_bytes = get(
        "HL_AUDIT_SEGMENT_BYTES",
        _byte_size_parser(MIN_AUDIT_SEGMENT_BYTES, MAX_AUDIT_SEGMENT_BYTES, "64MiB"),
        DEFAULT_AUDIT_SEGMENT_BYTES,
    )
    audit_segment_max_age = get(
        "HL_AUDIT_SEGMENT_MAX_AGE", audit_interval, DEFAULT_AUDIT_SEGMENT_MAX_AGE
    )
    audit_checkpoint_records = get(
        "HL_AUDIT_CHECKPOINT_RECORDS",
        _whole_number_parser(1, MAX_AUDIT_CHECKPOINT_RECORDS),
        DEFAULT_AUDIT_CHECKPOINT_RECORDS,
    )
    audit_checkpoint_interval = get(
        "HL_AUDIT_CHECKPOINT_INTERVAL", audit_interval, DEFAULT_AUDIT_CHECKPOINT_INTERVAL
    )
    audit_write_timeout = get("HL_AUDIT_WRITE_TIMEOUT", audit_interval, DEFAULT_AUDIT_WRITE_TIMEOUT)

    if loader.problems or state_dir is None or cache_dir is None or audit_dir is None:
        raise SettingsError.from_problems(loader.problems)
    return Settings(
        token=token,
        pool_private_key=pool_private_key,
        token_file=token_file,
        pool_private_key_file=pool_private_key_file,
        docker_config_dir=docker_config_dir,
        mask_envs=mask_envs,
        worker_network=worker_network,
        worker_extra_mounts=extra_mounts,
        worker_extra_mounts_ro=extra_mounts_ro,
        worker_extra_mounts_wo=extra_mounts_wo,
        worker_runtime=worker_runtime,
        default_runner_image=default_runner_image,
        whitelist_envs=whitelist_envs,
        launcher_logs_timeout=launcher_logs_timeout,
        launcher_run_initialization_policy=policy,
        launcher_run_timeout=launcher_run_timeout,
        metadata=metadata,
        privatevcs_mappings=privatevcs_mappings,
        run_logs_on_standard_output_enabled=run_logs_stdout,
        debug=debug,
        worker_comms_protocol=protocol,
        worker_comms_url=comms_url,
        config_file=config_path,
        pinned_ca_sha256=pinned_ca_sha256,
        release_key_fingerprints=release_keys,
        release_keyring=release_keyring,
        release_dir=release_dir,
        egress_policy=egress_policy,
        state_dir=state_dir,
        cache_dir=cache_dir,
        audit_dir=audit_dir,
        max_concurrent_runs=max_concurrent_runs,
        max_envelope_bytes=max_envelope_bytes,
        clock_skew=clock_skew,
        launcher_id=launcher_id,
        worker_uid=worker_uid,
        worker_gid=worker_gid,
        run_memory_bytes=run_memory_bytes,
        run_pids_limit=run_pids_limit,
        run_cpus=run_cpus,
        run_workspace_bytes=run_workspace_bytes,
        run_tmp_bytes=run_tmp_bytes,
        run_stop_grace=run_stop_grace,
        heartbeat_interval=heartbeat_interval,
        shutdown_grace=shutdown_grace,
        policy_syntax=policy_syntax,
        policy_timeout=policy_timeout,
        policy_sanitize_key=policy_sanitize_key,
        metrics_address=metrics_address,
        log_chunk_bytes=log_chunk_bytes,
        log_spool_max_bytes=log_spool_max_bytes,
        run_log_retention=run_log_retention,
        unsafe_root_worker=unsafe_root_worker,
        unsafe_shared_network=unsafe_shared_network,
        audit_segment_bytes=audit_segment_bytes,
        audit_segment_max_age=audit_segment_max_age,
        audit_checkpoint_records=audit_checkpoint_records,
        audit_checkpoint_interval=audit_checkpoint_interval,
        audit_write_timeout=audit_write_timeout,
        warnings=tuple(loader.warnings),
    )


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
def _display(value: object) -> str:
    if isinstance(value, Secret):
        return "set"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) if value else "none"
    return str(value)


def effective_values(settings: Settings) -> tuple[tuple[str, str], ...]:
    """(variable, shown value) for every variable; secrets only as ``set``/``unset``."""
    rows: list[tuple[str, str]] = []
    for spec in VARIABLES:
        value: object = getattr(settings, spec.field)
        if spec.field == "metadata":
            if settings.metadata:
                rows.extend((f"{METADATA_PREFIX}{k}", v) for k, v in settings.metadata.items())
            else:
                rows.append((spec.name, "none"))
        elif spec.field == "privatevcs_mappings":
            is_name = spec.name.startswith(PRIVATEVCS_NAME_PREFIX)
            prefix = PRIVATEVCS_NAME_PREFIX if is_name else PRIVATEVCS_ENDPOINT_PREFIX
            if not settings.privatevcs_mappings:
                rows.append((spec.name, "none"))
            for index, mapping in enumerate(settings.privatevcs_mappings):
                shown = mapping.name if is_name else mapping.base_endpoint
                rows.append((f"{prefix}{index}", shown))
        elif spec.secret:
            rows.append((spec.name, "set" if value is not None else "unset"))
        elif spec.field == "max_envelope_bytes":
            size = settings.max_envelope_bytes
            shown = f"{size // MIB}MiB" if size % MIB == 0 else f"{size} bytes"
            rows.append((spec.name, shown))
        else:
            rows.append((spec.name, _display(value)))
    return tuple(rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """The README's configuration table, generated from :data:`VARIABLES`."""
    lines = [
        "| Variable | Default | Secret | Source | File key | Description |",
        "|---|---|---|---|---|---|",
    ]
    for spec in VARIABLES:
        key = f"`{spec.file_key}`" if spec.file_key else "—"
        lines.append(
            "| "
            + " | ".join(
                _cell(part)
                for part in (
                    f"`{spec.name}`",
                    spec.default,
                    "yes" if spec.secret else "no",
                    spec.source,
                    key,
                    spec.description,
                )
            )
            + " |"
        )
    lines.append("")
    lines.append(
        "Source `seed` marks the vendor's `SPACELIFT_*` contract (existing configurations work "
        "unchanged); `project` marks this project's `HL_*` settings. A variable set to an empty "
        "value counts as unset. Unknown `HL_*` variables are errors; unknown `SPACELIFT_*` "
        "variables are warnings. `HL_*` settings may also come from the TOML file named by "
        "`HL_CONFIG_FILE` (File key column); the environment wins over the file. Secret "
        "`HL_*` settings come from the environment only; the file is refused if it holds one. "
        "`HL_REQUIRE_INTEGRATION` belongs to the test suite and is ignored by the launcher; "
        "`HL_CP_*` variables belong to the control plane (docs/controlplane.md) and are ignored "
        "by the launcher."
    )
    return "\n".join(lines) + "\n"


def _check_fields_cover_variables() -> None:  # pragma: no cover - import-time guard
    names = {f.name for f in fields(Settings)} - DERIVED_FIELDS
    mapped = {spec.field for spec in VARIABLES}
    if names != mapped:
        raise RuntimeError(f"Settings fields and VARIABLES disagree: {sorted(names ^ mapped)}")


_check_fields_cover_variables()
