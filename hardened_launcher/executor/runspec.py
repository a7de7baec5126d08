"""The run spec: the shape of a decrypted run state, validated strictly when built.

A :class:`RunSpec` is what gate 4 (envelope) hands to gate 5 (execute). It is untrusted input
until built: :func:`parse_run_spec` refuses unknown fields, wrong types, duplicate keys, YAML
aliases and anything over its size bound, with :class:`~.errors.RunSpecError` naming the field
(never a value). Secret values become :class:`~hardened_launcher.secrets.Secret` at once.

The format is documented in ``docs/runspec.md``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from hardened_launcher.bounded_input import load_yaml
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.secret_files import TooManyValuesError, extract_values
from hardened_launcher.executor.source import GitSource, RunSource, parse_source
from hardened_launcher.secrets import Secret, wipe_bytearray

__all__ = [
    "MAX_RUN_SPEC_BYTES",
    "RESERVED_BINARY_NAMES",
    "BinaryRequest",
    "Phase",
    "RunLimits",
    "RunSpec",
    "WorkspaceFile",
    "parse_run_spec",
    "run_spec_from_mapping",
    "split_for_confirmation",
]

SPEC_VERSION: Final = 1
MAX_RUN_SPEC_BYTES: Final = 16 * 1024 * 1024
MAX_RUN_SPEC_DEPTH: Final = 32
MAX_PHASES: Final = 16
MAX_COMMANDS_PER_PHASE: Final = 256
MAX_COMMAND_CHARS: Final = 64 * 1024
MAX_ENV_ENTRIES: Final = 512
MAX_ENV_VALUE_CHARS: Final = 128 * 1024
MAX_FILES: Final = 256
MAX_FILE_PATH_CHARS: Final = 1024
MAX_FILE_BYTES: Final = 8 * 1024 * 1024
MAX_BINARIES: Final = 32
MAX_METADATA_ENTRIES: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 1024
MAX_IMAGE_CHARS: Final = 255
MAX_LIMIT_MEMORY_BYTES: Final = 1 << 40
MAX_LIMIT_PIDS: Final = 1 << 20
MAX_LIMIT_CPUS: Final = 1024.0
MIN_LIMIT_MEMORY_BYTES: Final = 6 * 1024 * 1024  # Docker's own minimum
MAX_LIMIT_TIME_SECONDS: Final = 30 * 24 * 3600

#: Binary names the launcher itself provides; a run cannot ask for them.
RESERVED_BINARY_NAMES: Final = frozenset({"hl-worker"})

RunType = Literal["ro", "wo"]
#: ``plan``: the planning stage of a confirmed run (writes ``$HL_PLAN_FILE``); ``apply``: the
#: stage after confirmation (finds the planning stage's artifact at ``$HL_PLAN_FILE``).
Stage = Literal["plan", "apply"]
#: Suffix of the applying run's id (``<run_id>.apply``); the run id leaves room for it.
APPLY_SUFFIX: Final = ".apply"

_RUN_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PHASE_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ENV_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_BINARY_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION_RE: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: Release names and versions (they become path components of the release directory).
BINARY_NAME_PATTERN: Final = _BINARY_RE
VERSION_PATTERN: Final = _VERSION_RE
#: Each ``/``-separated component starts with a letter or digit (never ``.`` or ``..``); the
#: length is bounded by MAX_IMAGE_CHARS.
_IMAGE_RE: Final = re.compile(r"[a-z0-9][a-z0-9._:@-]*(?:/[a-z0-9][a-z0-9._:@-]*)*")
_META_KEY_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_MODE_RE: Final = re.compile(r"0?[0-7]{3}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: Environment names the worker program owns (plumbing) or the loader would be confused by.
_RESERVED_ENV_PREFIX: Final = "HL_"
_RESERVED_ENV: Final = frozenset({"PATH", "HOME", "PWD", "IFS", "ENV", "LD_PRELOAD"})


def _fail(where: str, why: str) -> RunSpecError:
    return RunSpecError(
        f"the run spec is invalid: {where} {why}",
        hint="fix the run spec (docs/runspec.md documents every field)",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """A named list of shell commands, run in order; the first failure ends the run."""

    name: str
    commands: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceFile:
    """A file placed in the workspace before the first phase. ``path`` is relative."""

    path: str
    content: Secret | bytes
    mode: int = 0o644
    #: For a secret file: each value inside it (YAML, JSON, dotenv, tfvars, INI…), masked on
    #: its own (see :mod:`.secret_files`).
    values: tuple[Secret, ...] = ()

    @property
    def secret(self) -> bool:
        return isinstance(self.content, Secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class BinaryRequest:
    """A binary the run needs, verified against signed sums before it is mounted."""

    name: str
    version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunLimits:
    """Limits the run asks for; the launcher's settings cap each (the lower one wins)."""

    memory_bytes: int | None = None
    pids: int | None = None
    cpus: float | None = None
    time_seconds: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One run, validated. Build it with :func:`parse_run_spec` or :func:`run_spec_from_mapping`."""

    run_id: str
    run_type: RunType
    #: None: the spec names no image; the launcher's ``SPACELIFT_DEFAULT_RUNNER_IMAGE`` applies
    #: (:func:`~.images.with_default_image`).
    image: str | None
    phases: tuple[Phase, ...]
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    secret_env: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    files: tuple[WorkspaceFile, ...] = ()
    binaries: tuple[BinaryRequest, ...] = ()
    limits: RunLimits = field(default_factory=RunLimits)
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: The project: a git commit fetched inside the run, or a checked archive (see .source).
    source: RunSource | None = None
    #: The phase after which the control plane stops the run for confirmation (it splits the
    #: spec into a planning and an applying run at submit; a local ``exec`` runs every phase).
    confirm_after: str | None = None
    #: Set by the control plane's split (never written by hand): see :data:`Stage`.
    stage: Stage | None = None
    #: ``stage: apply``: the planning run whose plan artifact this run applies.
    plan_of: str | None = None

    @property
    def commit_sha(self) -> str:
        """The commit the run is for (its git source's, else ``metadata.commit_sha``; empty
        when neither names one): a plan artifact is bound to it."""
        if isinstance(self.source, GitSource):
            return self.source.commit_sha
        return self.metadata.get("commit_sha", "")

    def secrets(self) -> tuple[tuple[str, Secret], ...]:
        """Every secret the spec carries, named (for the redactor and for wiping)."""
        named = [(f"env:{name}", value) for name, value in self.secret_env.items()]
        for f in self.files:
            if isinstance(f.content, Secret):
                named.append((f"file:{f.path}", f.content))
                named += [(f"file:{f.path}#{i}", value) for i, value in enumerate(f.values, 1)]
        auth = self.source.auth if isinstance(self.source, GitSource) else None
        if auth is not None and auth.basic is not None:
            named.append(("source:auth", auth.basic))  # the fetch's HTTP basic credentials
        return tuple(named)

    def wipe(self) -> None:
        """Wipe every secret this spec holds (after the run)."""
        for _, secret in self.secrets():
            secret.wipe()


# ---------------------------------------------------------------------------------------------
# YAML: safe, no aliases (no billion laughs), no duplicate keys
# ---------------------------------------------------------------------------------------------
def _load_spec_yaml(text: str) -> Any:  # noqa: ANN401 - any YAML document
    # Safe YAML, no anchors or aliases, string keys, no duplicates, bounded nesting: the rules
    # every YAML input of the launcher follows (hardened_launcher.strict_yaml).
    return load_yaml(text, what="run spec", max_depth=MAX_RUN_SPEC_DEPTH)


def parse_run_spec(data: bytes | bytearray, *, max_bytes: int = MAX_RUN_SPEC_BYTES) -> RunSpec:
    """Parse YAML (or JSON) bytes into a :class:`RunSpec`, or raise :class:`RunSpecError`."""
    if len(data) > max_bytes:
        raise _fail("document", f"is larger than {max_bytes} bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("document", "is not UTF-8") from None
    import yaml  # noqa: PLC0415  # PyYAML with the first run spec, not at the daemon's start

    try:
        document = _load_spec_yaml(text)
    except yaml.YAMLError as exc:
        # PyYAML's message may quote the document (which holds secrets): keep only the position.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        own = str(exc) if type(exc) is yaml.YAMLError else "is not valid YAML"
        raise _fail("document", f"{own}{where}") from None
    if not isinstance(document, dict):
        raise _fail("document", "is not a mapping")
    return run_spec_from_mapping(document)


# ---------------------------------------------------------------------------------------------
# Validation of the plain structure
# ---------------------------------------------------------------------------------------------
def _fields(where: str, value: object, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "is not a mapping")
    mapping = cast("dict[str, Any]", value)
    unknown = set(mapping) - required - optional
    if unknown:
        names = ", ".join(sorted(str(n)[:64] for n in unknown))
        raise _fail(where, f"has unknown field(s): {names}")
    missing = required - set(mapping)
    if missing:
        raise _fail(where, f"is missing field(s): {', '.join(sorted(missing))}")
    return mapping


def _text(where: str, value: object, *, max_chars: int, pattern: re.Pattern[str] | None) -> str:
    if not isinstance(value, str):
        raise _fail(where, "is not a string")
    if len(value) > max_chars:
        raise _fail(where, f"is longer than {max_chars} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, f"does not match {pattern.pattern}")
    return value


def _free_text(where: str, value: object, *, max_chars: int, allow_empty: bool = True) -> str:
    text = _text(where, value, max_chars=max_chars, pattern=None)
    if "\x00" in text:
        raise _fail(where, "contains a NUL character")
    if not allow_empty and not text.strip():
        raise _fail(where, "is empty")
    return text


def _list(where: str, value: object, *, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(where, "is not a list")
    if len(value) > max_items:
        raise _fail(where, f"has more than {max_items} items")
    return value


def _int(where: str, value: object, *, minimum: int, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, "is not a whole number")
    if not minimum <= value <= maximum:
        raise _fail(where, f"is not from {minimum} to {maximum}")
    return value


def _env_map(where: str, value: object, *, secret: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "is not a mapping")
    if len(value) > MAX_ENV_ENTRIES:
        raise _fail(where, f"has more than {MAX_ENV_ENTRIES} entries")
    out: dict[str, Any] = {}
    for name, item in cast("dict[str, Any]", value).items():
        _text(f"{where} name", name, max_chars=128, pattern=_ENV_RE)
        if name.startswith(_RESERVED_ENV_PREFIX) or name in _RESERVED_ENV:
            raise _fail(f"{where}.{name}", "is reserved for the worker program")
        text = _free_text(f"{where}.{name}", item, max_chars=MAX_ENV_VALUE_CHARS)
        out[name] = Secret(text) if secret else text
    return out


def _relative_path(where: str, value: object) -> str:
    path = _text(where, value, max_chars=MAX_FILE_PATH_CHARS, pattern=None)
    if not path or path.startswith("/") or _CONTROL_RE.search(path) or "\n" in path:
        raise _fail(where, "is not a relative path without control characters")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _fail(where, "has an empty, '.' or '..' component")
    return path


def _basic(username: str, secret: Secret) -> Secret:
    """``base64(username:secret)`` as a new secret (the intermediate bytes are wiped)."""
    raw = bytearray(username.encode() + b":")
    with secret.view() as view:
        raw += view
    encoded = bytearray(base64.b64encode(raw))
    wipe_bytearray(raw)
    try:
        return Secret(encoded)
    finally:
        wipe_bytearray(encoded)


def run_spec_from_mapping(document: Mapping[str, Any]) -> RunSpec:
    """Validate an already-decoded document (e.g. from JSON) into a :class:`RunSpec`."""
    top = _fields(
        "document",
        dict(document),
        {"version", "run_id", "run_type", "phases"},
        {
            "image",
            "env",
            "secret_env",
            "files",
            "binaries",
            "limits",
            "metadata",
            "source",
            "confirm_after",
            "stage",
            "plan_of",
        },
    )
    if top["version"] != SPEC_VERSION or isinstance(top["version"], bool):
        raise _fail("version", f"is not {SPEC_VERSION} (the only version this launcher reads)")
    run_id = _text("run_id", top["run_id"], max_chars=128, pattern=_RUN_ID_RE)
    run_type = top["run_type"]
    if run_type not in ("ro", "wo"):
        raise _fail("run_type", "is not 'ro' or 'wo'")
    image = (
        None
        if top.get("image") is None
        else _text("image", top["image"], max_chars=MAX_IMAGE_CHARS, pattern=_IMAGE_RE)
    )

    phases: list[Phase] = []
    raw_phases = _list("phases", top["phases"], max_items=MAX_PHASES)
    if not raw_phases:
        raise _fail("phases", "is empty")
    for index, raw in enumerate(raw_phases):
        where = f"phases[{index}]"
        item = _fields(where, raw, {"name", "commands"}, set())
        name = _text(f"{where}.name", item["name"], max_chars=32, pattern=_PHASE_RE)
        if any(p.name == name for p in phases):
            raise _fail(f"{where}.name", "repeats an earlier phase name")
        raw_commands = _list(
            f"{where}.commands", item["commands"], max_items=MAX_COMMANDS_PER_PHASE
        )
        commands = tuple(
            _free_text(f"{where}.commands[{i}]", c, max_chars=MAX_COMMAND_CHARS, allow_empty=False)
            for i, c in enumerate(raw_commands)
        )
        if not commands:
            raise _fail(f"{where}.commands", "is empty")
        phases.append(Phase(name=name, commands=commands))

    env = _env_map("env", top.get("env", {}), secret=False)
    secret_env = _env_map("secret_env", top.get("secret_env", {}), secret=True)
    both = set(env) & set(secret_env)
    if both:
        raise _fail("secret_env", f"repeats names from env: {', '.join(sorted(both))}")

    files: list[WorkspaceFile] = []
    for index, raw in enumerate(_list("files", top.get("files", []), max_items=MAX_FILES)):
        where = f"files[{index}]"
        item = _fields(where, raw, {"path", "content"}, {"mode", "secret"})
        path = _relative_path(f"{where}.path", item["path"])
        if any(f.path == path for f in files):
            raise _fail(f"{where}.path", "repeats an earlier file")
        content = _free_text(f"{where}.content", item["content"], max_chars=MAX_FILE_BYTES)
        raw_mode = item.get("mode", "0644")
        if isinstance(raw_mode, str):
            # A string of octal digits ("0600") means the same in YAML 1.1, YAML 1.2 and JSON.
            _text(f"{where}.mode", raw_mode, max_chars=4, pattern=_MODE_RE)
            raw_mode = int(raw_mode, 8)
        mode = _int(f"{where}.mode", raw_mode, minimum=0, maximum=0o777)
        secret = item.get("secret", False)
        if not isinstance(secret, bool):
            raise _fail(f"{where}.secret", "is not true or false")
        data = content.encode("utf-8")
        if len(data) > MAX_FILE_BYTES:
            raise _fail(f"{where}.content", f"is larger than {MAX_FILE_BYTES} bytes")
        values: tuple[Secret, ...] = ()
        if secret:
            try:
                values = tuple(Secret(v) for v in extract_values(path, data))
            except TooManyValuesError as exc:
                raise _fail(f"{where}.content", str(exc)) from None
        files.append(
            WorkspaceFile(
                path=path, content=Secret(data) if secret else data, mode=mode, values=values
            )
        )

    binaries: list[BinaryRequest] = []
    for index, raw in enumerate(_list("binaries", top.get("binaries", []), max_items=MAX_BINARIES)):
        where = f"binaries[{index}]"
        item = _fields(where, raw, {"name", "version"}, set())
        name = _text(f"{where}.name", item["name"], max_chars=64, pattern=_BINARY_RE)
        if name in RESERVED_BINARY_NAMES:
            raise _fail(f"{where}.name", "is reserved for the launcher's own worker program")
        if any(b.name == name for b in binaries):
            raise _fail(f"{where}.name", "repeats an earlier binary")
        version = _text(f"{where}.version", item["version"], max_chars=64, pattern=_VERSION_RE)
        binaries.append(BinaryRequest(name=name, version=version))

    limits = RunLimits()
    if "limits" in top:
        raw_limits = _fields(
            "limits", top["limits"], set(), {"memory_bytes", "pids", "cpus", "time_seconds"}
        )
        time_seconds = raw_limits.get("time_seconds")
        memory = raw_limits.get("memory_bytes")
        pids = raw_limits.get("pids")
        cpus = raw_limits.get("cpus")
        if cpus is not None and (
            isinstance(cpus, bool)
            or not isinstance(cpus, int | float)
            or not 0.01 <= cpus <= MAX_LIMIT_CPUS
        ):
            raise _fail("limits.cpus", f"is not a number from 0.01 to {MAX_LIMIT_CPUS}")
        limits = RunLimits(
            memory_bytes=None
            if memory is None
            else _int(
                "limits.memory_bytes",
                memory,
                minimum=MIN_LIMIT_MEMORY_BYTES,
                maximum=MAX_LIMIT_MEMORY_BYTES,
            ),
            pids=None
            if pids is None
            else _int("limits.pids", pids, minimum=8, maximum=MAX_LIMIT_PIDS),
            cpus=None if cpus is None else float(cpus),
            time_seconds=None
            if time_seconds is None
            else _int(
                "limits.time_seconds", time_seconds, minimum=1, maximum=MAX_LIMIT_TIME_SECONDS
            ),
        )

    metadata: dict[str, str] = {}
    raw_meta = top.get("metadata", {})
    if not isinstance(raw_meta, dict) or len(raw_meta) > MAX_METADATA_ENTRIES:
        raise _fail("metadata", f"is not a mapping of at most {MAX_METADATA_ENTRIES} entries")
    for key, value in cast("dict[str, Any]", raw_meta).items():
        _text("metadata key", key, max_chars=64, pattern=_META_KEY_RE)
        metadata[key] = _free_text(f"metadata.{key}", value, max_chars=MAX_METADATA_VALUE_CHARS)

    source = None if top.get("source") is None else parse_source(top["source"])
    if isinstance(source, GitSource) and metadata.get("commit_sha", source.commit_sha) != (
        source.commit_sha
    ):
        # The policy reads both; they must not tell two stories.
        raise _fail("metadata.commit_sha", "is not source.commit_sha")
    if (
        isinstance(source, GitSource)
        and source.auth is not None
        and source.auth.secret_env not in secret_env
    ):
        raise _fail("source.auth.secret_env", "names no variable of secret_env")
    if isinstance(source, GitSource) and source.auth is not None:
        source = replace(
            source,
            auth=replace(
                source.auth, basic=_basic(source.auth.username, secret_env[source.auth.secret_env])
            ),
        )

    confirm_after, stage, plan_of = _confirmation(top, run_id, phases)
    return RunSpec(
        confirm_after=confirm_after,
        stage=stage,
        plan_of=plan_of,
        run_id=run_id,
        run_type=cast("RunType", run_type),
        image=image,
        phases=tuple(phases),
        env=MappingProxyType(env),
        secret_env=MappingProxyType(secret_env),
        files=tuple(files),
        binaries=tuple(binaries),
        limits=limits,
        metadata=MappingProxyType(metadata),
        source=source,
    )


def _confirmation(
    top: Mapping[str, Any], run_id: str, phases: list[Phase]
) -> tuple[str | None, Stage | None, str | None]:
    confirm_after = top.get("confirm_after")
    stage = top.get("stage")
    plan_of = top.get("plan_of")
    if confirm_after is not None:
        name = _text("confirm_after", confirm_after, max_chars=32, pattern=_PHASE_RE)
        names = [p.name for p in phases]
        if name not in names:
            raise _fail("confirm_after", "does not name a phase of the run")
        if name == names[-1]:
            raise _fail("confirm_after", "names the last phase: no phase is left to confirm")
        if stage is not None:
            raise _fail("confirm_after", "cannot be given with stage")
        if len(run_id) + len(APPLY_SUFFIX) > 128:
            raise _fail("run_id", f"is too long for a confirmed run (at most {128 - 6})")
    if stage is not None and stage not in ("plan", "apply"):
        raise _fail("stage", "is not 'plan' or 'apply'")
    if (stage == "apply") != (plan_of is not None):
        raise _fail("plan_of", "is required with stage: apply, and only there")
    if plan_of is not None:
        _text("plan_of", plan_of, max_chars=128, pattern=_RUN_ID_RE)
    return (
        None if confirm_after is None else str(confirm_after),
        cast("Stage | None", stage),
        None if plan_of is None else str(plan_of),
    )


def split_for_confirmation(data: bytes | bytearray) -> tuple[bytes, bytes] | None:
    """A spec with ``confirm_after`` as two specs (JSON, each valid on its own): the planning
    run (the phases up to ``confirm_after``, ``stage: plan``, the same run id) and the applying
    run (the phases after it, ``stage: apply``, run id ``<run_id>.apply``). None without
    ``confirm_after``. ``data`` must already have parsed (:func:`parse_run_spec`)."""
    document = _load_spec_yaml(bytes(data).decode("utf-8"))
    after = document.get("confirm_after")
    if after is None:
        return None
    run_id = document["run_id"]
    phases = document["phases"]
    cut = next(i for i, p in enumerate(phases) if p["name"] == after) + 1
    base = {k: v for k, v in document.items() if k != "confirm_after"}
    plan = {**base, "phases": phases[:cut], "stage": "plan"}
    apply = {
        **base,
        "run_id": run_id + APPLY_SUFFIX,
        "phases": phases[cut:],
        "stage": "apply",
        "plan_of": run_id,
    }
    encoded = tuple(
        json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        for d in (plan, apply)
    )
    for item in encoded:
        parse_run_spec(item).wipe()  # both halves are valid specs (else a bug here)
    return encoded[0], encoded[1]
