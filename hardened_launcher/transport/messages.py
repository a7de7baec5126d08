"""The wire protocol between launchers (workers) and the control plane (docs/transport.md).

Pure: no I/O, no clock unless a caller asks :class:`MessageStream` for the next message.

Every message is one JSON object of at most :data:`MAX_MESSAGE_BYTES` bytes::

    {"v": 1, "type": "accept", "id": "<uuid4 hex>", "stream": "<uuid4 hex>", "seq": 7,
     "sent_at": "2025-01-01T00:00:00.000000Z", "body": {...}}

``stream`` (an addition to the first draft of the protocol) names one sender's sequence: a new
process, or the control plane talking to one more worker, starts a new stream whose ``seq``
starts at 1. Without it a restarted sender would look like a stream that went backwards.

Parsing is strict: unknown or missing fields, unknown types, a type the sender's side may not
send, duplicate keys, non-finite numbers, booleans where integers belong, over-long strings and
oversized documents are all :class:`MessageError` (an untrusted-input error).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, NoReturn, Self, TypeVar

from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.identity.token import is_valid_pool_id

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_ENVELOPE_B64_CHARS: Final = 900 * 1024
#: Base64 of the run ticket (envelope/ticket.py's MAX_TICKET_BYTES, 96 KiB).
MAX_TICKET_B64_CHARS: Final = 128 * 1024
MAX_METADATA_TAGS: Final = 64
MAX_METADATA_TAG_CHARS: Final = 64
MAX_METADATA_VALUE_CHARS: Final = 256
MAX_RUNNING_RUNS: Final = 1024
MAX_CONCURRENT_RUNS: Final = 1024
MAX_LOG_URLS: Final = 1024
MAX_URL_CHARS: Final = 4096
MAX_TEXT_CHARS: Final = 1024
MAX_VERSION_CHARS: Final = 64
MAX_SEQ: Final = 2**63 - 1
MAX_CHUNK: Final = 2**31 - 1
MIN_EXIT_CODE: Final = -(2**31)
MAX_EXIT_CODE: Final = 2**31 - 1
#: Run outputs in a final ``status``: at most this many files and base64 characters in all
#: (the launcher drops what does not fit and says ``outputs_truncated``).
MAX_STATUS_OUTPUTS: Final = 64
MAX_STATUS_OUTPUTS_B64_CHARS: Final = 512 * 1024

Side = Literal["worker", "controlplane"]

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,63}")
_METADATA_TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?Z"
)
_URL = re.compile(r"https?://[\x21-\x7e]+")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_PHASE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MessageError(UntrustedInputError):
    """A message from the broker is not a valid protocol message; it is dropped."""

    default_reason = "message_invalid"


def _fail(message: str) -> NoReturn:
    raise MessageError(message, hint="the sender speaks another protocol or is broken")


# -- value checks ------------------------------------------------------------------------------


def is_valid_worker_id(value: str) -> bool:
    """A worker id is one MQTT topic level: 1-64 of ``A-Z a-z 0-9 _ . -``, alnum first."""
    return _WORKER_ID.fullmatch(value) is not None


def is_valid_run_id(value: str) -> bool:
    """A run id as the envelope carries it: 1-128 of ``A-Z a-z 0-9 _ . -``, alnum first."""
    return _RUN_ID.fullmatch(value) is not None


def new_message_id() -> str:
    """A fresh message id: a UUID4 as 32 lower-case hex digits."""
    return uuid.uuid4().hex


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``; ``value`` must be timezone-aware."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    # Not strftime("%Y"): glibc does not zero-pad years before 1000 (found by the fuzzer).
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond:06d}Z"
    )


def parse_timestamp(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        _fail(f"{what} is not a string")
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        _fail(f"{what} is not an RFC 3339 UTC timestamp (YYYY-MM-DDTHH:MM:SS[.ffffff]Z)")
    year, month, day, hour, minute, second, fraction = match.groups()
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:
        _fail(f"{what} is not a valid date and time")


def _string(
    value: object, what: str, *, max_chars: int = MAX_TEXT_CHARS, pattern: re.Pattern[str] | None
) -> str:
    if not isinstance(value, str):
        _fail(f"{what} is not a string")
    if len(value) > max_chars:
        _fail(f"{what} is longer than {max_chars} characters")
    if pattern is not None and pattern.fullmatch(value) is None:
        _fail(f"{what} has characters or a shape it may not have")
    if pattern is None and any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        _fail(f"{what} contains control characters")
    return value


def _integer(value: object, what: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} is not an integer")
    if not minimum <= value <= maximum:
        _fail(f"{what} is out of range ({minimum}..{maximum})")
    return value


def _object(value: object, what: str, keys: Iterable[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        _fail(f"{what} is not a JSON object")
    expected = set(keys)
    present = set(value)
    if present - expected:
        # Field names come from outside: count them, never echo them into logs.
        _fail(f"{what} has {len(present - expected)} unknown field(s)")
    if expected - present:
        _fail(f"{what} lacks fields: {', '.join(sorted(expected - present))}")
    return value


def _list(value: object, what: str, *, max_items: int) -> list[object]:
    if not isinstance(value, list):
        _fail(f"{what} is not a JSON array")
    if len(value) > max_items:
        _fail(f"{what} has more than {max_items} items")
    return value


# Value checks used by constructors: they raise MessageError too, so a built object is valid and
# the sending side cannot produce what the receiving side would refuse.


def _check_worker_id(value: object, what: str = "worker_id") -> str:
    return _string(value, what, max_chars=64, pattern=_WORKER_ID)


def _check_run_id(value: object, what: str = "run_id") -> str:
    return _string(value, what, max_chars=128, pattern=_RUN_ID)


def _check_message_id(value: object, what: str) -> str:
    return _string(value, what, max_chars=32, pattern=_HEX_ID)


def _check_slug(value: object, what: str) -> str:
    return _string(value, what, max_chars=64, pattern=_SLUG)


def _check_pool_id(value: object) -> str:
    if not isinstance(value, str) or not is_valid_pool_id(value):
        _fail("pool_id is not a pool id (1-63 lower-case letters, digits, inner hyphens)")
    return value


def _check_optional_text(value: object, what: str) -> str | None:
    return None if value is None else _string(value, what, pattern=None)


def _check_run_ids(values: Iterable[object], what: str) -> tuple[str, ...]:
    checked = tuple(_check_run_id(v, f"an item of {what}") for v in values)
    if len(checked) > MAX_RUNNING_RUNS:
        _fail(f"{what} has more than {MAX_RUNNING_RUNS} items")
    if len(set(checked)) != len(checked):
        _fail(f"{what} lists a run twice")
    return checked


# -- field codecs ------------------------------------------------------------------------------
#
# Every body is a frozen dataclass whose fields each carry one :class:`Codec` (``_wire(...)``).
# The base class does the rest: the constructor checks every field once (so a built body is a
# valid one, and a sender cannot produce what a receiver would refuse), ``from_dict`` requires
# exactly the declared keys and only converts JSON shapes into Python values (the constructor
# checks them), ``to_dict`` encodes. A new message is a class with typed, annotated fields.


def _same(value: object, _what: str) -> object:
    return value


def _as_is(value: object) -> object:
    return value


@dataclass(frozen=True)
class Codec:
    """How one field is checked (in the constructor), read from JSON and written to JSON."""

    check: Callable[[object, str], object]
    decode: Callable[[object, str], object] = _same
    encode: Callable[[object], object] = _as_is


def _wire(codec: Codec, **kwargs: Any) -> Any:  # noqa: ANN401 - a dataclass field
    return field(metadata={"codec": codec}, **kwargs)


def _text_codec(*, max_chars: int = MAX_TEXT_CHARS, pattern: re.Pattern[str] | None) -> Codec:
    return Codec(check=lambda v, what: _string(v, what, max_chars=max_chars, pattern=pattern))


def _optional(codec: Codec) -> Codec:
    return Codec(
        check=lambda v, what: None if v is None else codec.check(v, what),
        decode=lambda v, what: None if v is None else codec.decode(v, what),
        encode=lambda v: None if v is None else codec.encode(v),
    )


def _int_codec(*, minimum: int, maximum: int) -> Codec:
    return Codec(check=lambda v, what: _integer(v, what, minimum=minimum, maximum=maximum))


def _choice_codec(choices: tuple[str, ...]) -> Codec:
    def check(value: object, what: str) -> object:
        if not isinstance(value, str) or value not in choices:
            _fail(f"{what} is not one of {', '.join(choices)}")
        return value

    return Codec(check=check)


def _check_aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        _fail(f"{what} is not a timezone-aware datetime")
    return value.astimezone(UTC)


def _check_b64(
    value: object, what: str = "envelope_b64", *, max_chars: int = MAX_ENVELOPE_B64_CHARS
) -> str:
    text = _string(value, what, max_chars=max_chars, pattern=_B64)
    if len(text) % 4 or (not text and what == "envelope_b64"):
        _fail(f"{what} is not padded standard base64")
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        _fail(f"{what} is not standard base64")
    return text


def _b64_codec(max_chars: int) -> Codec:
    return Codec(check=lambda v, what: _check_b64(v, what, max_chars=max_chars))


def _check_metadata(value: object, what: str) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        _fail(f"{what} is not an object")
    if len(value) > MAX_METADATA_TAGS:
        _fail(f"{what} has more than {MAX_METADATA_TAGS} tags")
    for tag, item in value.items():
        _string(tag, "a metadata tag", max_chars=MAX_METADATA_TAG_CHARS, pattern=_METADATA_TAG)
        _string(item, "a metadata value", max_chars=MAX_METADATA_VALUE_CHARS, pattern=None)
    return MappingProxyType(dict(value))


def _decode_object(value: object, what: str) -> object:
    if not isinstance(value, dict):
        _fail(f"{what} is not an object")
    return value


def _decode_list(max_items: int) -> Callable[[object, str], object]:
    return lambda value, what: tuple(_list(value, what, max_items=max_items))


def _encode_timestamp(value: object) -> str:
    return format_timestamp(_check_aware(value, "a timestamp"))


def _encode_mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, Mapping) else {}


def _encode_sequence(value: object) -> list[object]:
    return list(value) if isinstance(value, tuple | list) else []


def _check_run_id_list(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        _fail(f"{what} is not a list")
    return _check_run_ids(value, what)


_WORKER_ID_CODEC: Final = Codec(check=_check_worker_id)
_POOL_ID_CODEC: Final = Codec(check=lambda v, _what: _check_pool_id(v))
_RUN_ID_CODEC: Final = Codec(check=_check_run_id)
_SLUG_CODEC: Final = Codec(check=_check_slug)
_MESSAGE_ID_CODEC: Final = Codec(check=_check_message_id)
_TEXT_CODEC: Final = _text_codec(pattern=None)
_VERSION_CODEC: Final = _text_codec(max_chars=MAX_VERSION_CHARS, pattern=None)
_CHUNK_CODEC: Final = _int_codec(minimum=0, maximum=MAX_CHUNK)
_TIMESTAMP_CODEC: Final = Codec(
    check=_check_aware,
    decode=parse_timestamp,
    encode=_encode_timestamp,
)
_METADATA_CODEC: Final = Codec(
    check=_check_metadata,
    decode=_decode_object,
    encode=_encode_mapping,
)
_RUN_IDS_CODEC: Final = Codec(
    check=_check_run_id_list,
    decode=_decode_list(MAX_RUNNING_RUNS),
    encode=_encode_sequence,
)


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        _fail(f"{what} is not true or false")
    return value


def _check_outputs(value: object, what: str) -> Mapping[str, str]:
    """Run outputs: file name -> base64 content, bounded in count and in total size."""
    if not isinstance(value, Mapping):
        _fail(f"{what} is not an object")
    if len(value) > MAX_STATUS_OUTPUTS:
        _fail(f"{what} has more than {MAX_STATUS_OUTPUTS} files")
    total = 0
    for name, content in value.items():
        _string(name, "an output name", max_chars=128, pattern=_OUTPUT_NAME)
        total += len(_check_b64(content, "an output", max_chars=MAX_STATUS_OUTPUTS_B64_CHARS))
    if total > MAX_STATUS_OUTPUTS_B64_CHARS:
        _fail(f"{what} are larger than {MAX_STATUS_OUTPUTS_B64_CHARS} base64 characters")
    return MappingProxyType(dict(value))


_BOOL_CODEC: Final = Codec(check=_check_bool)
_PHASE_CODEC: Final = _text_codec(max_chars=32, pattern=_PHASE)
_OUTPUTS_CODEC: Final = Codec(
    check=_check_outputs,
    decode=_decode_object,
    encode=_encode_mapping,
)


class _Record:
    """A frozen dataclass whose fields each carry a :class:`Codec` (see the section above)."""

    KIND: ClassVar[str] = "record"

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            codec: Codec = item.metadata["codec"]
            object.__setattr__(self, item.name, codec.check(getattr(self, item.name), item.name))

    def to_dict(self) -> dict[str, object]:
        return {
            item.name: item.metadata["codec"].encode(getattr(self, item.name))
            for item in fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_dict(cls, value: object) -> Self:
        declared = fields(cls)  # type: ignore[arg-type]
        doc = _object(value, cls.KIND, [item.name for item in declared])
        return cls(
            **{
                item.name: item.metadata["codec"].decode(doc[item.name], item.name)
                for item in declared
            }
        )


# -- bodies ------------------------------------------------------------------------------------


class Body(_Record):
    """Base of every message body. Subclasses are frozen, keyword-only dataclasses."""

    TYPE: ClassVar[str]
    SENDERS: ClassVar[frozenset[str]]
    #: Critical bodies are acknowledged by the receiver and retransmitted until they are.
    CRITICAL: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed through
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            cls.KIND = f"{cls.TYPE} body"


_WORKER: Final = frozenset({"worker"})
_CONTROL_PLANE: Final = frozenset({"controlplane"})
_BOTH: Final = frozenset({"worker", "controlplane"})


@dataclass(frozen=True, kw_only=True)
class Register(Body):
    """Worker → control plane, after every (re)connect: who it is and what it can do."""

    TYPE: ClassVar[str] = "register"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    worker_id: str = _wire(_WORKER_ID_CODEC)
    pool_id: str = _wire(_POOL_ID_CODEC)
    version: str = _wire(_VERSION_CODEC)
    metadata: Mapping[str, str] = _wire(
        _METADATA_CODEC, default_factory=lambda: MappingProxyType({})
    )
    max_concurrent_runs: int = _wire(_int_codec(minimum=1, maximum=MAX_CONCURRENT_RUNS), default=1)

    def __hash__(self) -> int:
        return hash((self.worker_id, self.pool_id, self.version, self.max_concurrent_runs))


WorkerState = Literal["IDLE", "BUSY", "DRAINED"]
WORKER_STATES: Final[tuple[WorkerState, ...]] = ("IDLE", "BUSY", "DRAINED")


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Body):
    """Worker → control plane, periodically. Not acknowledged: the next one replaces it."""

    TYPE: ClassVar[str] = "heartbeat"
    SENDERS: ClassVar[frozenset[str]] = _WORKER

    state: WorkerState = _wire(_choice_codec(WORKER_STATES))  # noqa: RUF009 - a field()
    running: tuple[str, ...] = _wire(_RUN_IDS_CODEC, default=())


@dataclass(frozen=True, kw_only=True)
class Accept(Body):
    """Worker → control plane: the worker takes the assignment under ``lease_id``."""

    TYPE: ClassVar[str] = "accept"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    lease_id: str = _wire(_RUN_ID_CODEC)


@dataclass(frozen=True, kw_only=True)
class Refuse(Body):
    """Worker → control plane: a gate refused the run (``reason`` is a slug, e.g. policy_denied)."""

    TYPE: ClassVar[str] = "refuse"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    lease_id: str = _wire(_RUN_ID_CODEC)
    reason: str = _wire(_SLUG_CODEC)
    message: str = _wire(_TEXT_CODEC)


#: ``REFUSED``: a gate refused the run after ``start`` and before its container was created.
RunState = Literal["RUNNING", "FINISHED", "FAILED", "STOPPED", "CRASHED", "REFUSED"]
RUN_STATES: Final[tuple[RunState, ...]] = (
    "RUNNING",
    "FINISHED",
    "FAILED",
    "STOPPED",
    "CRASHED",
    "REFUSED",
)


@dataclass(frozen=True, kw_only=True)
class Status(Body):
    """Worker → control plane: a run changed state."""

    TYPE: ClassVar[str] = "status"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    state: RunState = _wire(_choice_codec(RUN_STATES))  # noqa: RUF009 - a field()
    exit_code: int | None = _wire(
        _optional(_int_codec(minimum=MIN_EXIT_CODE, maximum=MAX_EXIT_CODE)), default=None
    )
    reason: str | None = _wire(_optional(_SLUG_CODEC), default=None)
    message: str | None = _wire(_optional(_TEXT_CODEC), default=None)
    #: The run's outputs (docs/runspec.md): name -> base64 of the redacted content; final
    #: states only, bounded (``outputs_truncated``: some did not fit or were over the run's cap).
    outputs: Mapping[str, str] = _wire(_OUTPUTS_CODEC, default_factory=lambda: MappingProxyType({}))
    outputs_truncated: bool = _wire(_BOOL_CODEC, default=False)
    #: A planning run (``stage: plan``): SHA-256 of the sealed plan artifact it uploaded.
    plan_sha256: str | None = _wire(
        _optional(_text_codec(max_chars=64, pattern=_SHA256_HEX)), default=None
    )

    def output_files(self) -> dict[str, bytes]:
        """The outputs decoded (each was checked to be base64 when the status was built)."""
        return {k: base64.b64decode(v, validate=True) for k, v in self.outputs.items()}


@dataclass(frozen=True, kw_only=True)
class PhaseStarted(Body):
    """Worker -> control plane: the run's phase ``phase`` started (its worker's marker)."""

    TYPE: ClassVar[str] = "phase"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    phase: str = _wire(_PHASE_CODEC)
    started_at: datetime = _wire(_TIMESTAMP_CODEC)  # noqa: RUF009 - a field()


@dataclass(frozen=True, kw_only=True)
class LogUrlsRequest(Body):
    """Worker → control plane: presigned URLs for chunks ``from_chunk`` onwards, please."""

    TYPE: ClassVar[str] = "log_urls_request"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    from_chunk: int = _wire(_CHUNK_CODEC)


_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_HEX128: Final = re.compile(r"[0-9a-f]{128}")
_AUDIT_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}\+00:00"
)
#: Checkpoint triggers (audit/canonical.py ALL_TRIGGERS; this module stays free of audit code).
_CHECKPOINT_TRIGGERS: Final = ("records", "seconds", "segment_end", "recovery", "close")


@dataclass(frozen=True, kw_only=True)
class Witness(Body):
    """Worker → control plane: an outside witness of one signed audit checkpoint.

    The fields are the witness record of docs/audit.md ("Outside witness"), signed by the
    launcher's audit key; ``pool_id``/``worker_id`` must be the sender's own.
    """

    TYPE: ClassVar[str] = "witness"
    SENDERS: ClassVar[frozenset[str]] = _WORKER
    CRITICAL: ClassVar[bool] = True

    key_id: str = _wire(_text_codec(max_chars=64, pattern=_HEX64))
    pool_id: str = _wire(_POOL_ID_CODEC)
    worker_id: str = _wire(_WORKER_ID_CODEC)
    seq: int = _wire(_int_codec(minimum=0, maximum=MAX_SEQ))
    hash: str = _wire(_text_codec(max_chars=64, pattern=_HEX64))
    trigger: str = _wire(_choice_codec(_CHECKPOINT_TRIGGERS))
    time: str = _wire(_text_codec(max_chars=32, pattern=_AUDIT_TIME))
    signature: str = _wire(_text_codec(max_chars=128, pattern=_HEX128))


@dataclass(frozen=True, kw_only=True)
class Ack(Body):
    """Either way: the message ``of`` arrived. Sent by the transport itself for critical ones."""

    TYPE: ClassVar[str] = "ack"
    SENDERS: ClassVar[frozenset[str]] = _BOTH

    of: str = _wire(_MESSAGE_ID_CODEC)


@dataclass(frozen=True, kw_only=True)
class Bye(Body):
    """Worker → control plane: a clean exit (``reason`` is a slug: drained, cycled, sigterm…)."""

    TYPE: ClassVar[str] = "bye"
    SENDERS: ClassVar[frozenset[str]] = _WORKER

    reason: str = _wire(_SLUG_CODEC)


@dataclass(frozen=True, kw_only=True)
class Gone(Body):
    """The worker's last will, published by the broker when the worker vanishes uncleanly.

    It is prepared at connect time, so it carries ``seq`` 0 (outside the sender's sequence).
    """

    TYPE: ClassVar[str] = "gone"
    SENDERS: ClassVar[frozenset[str]] = _WORKER

    worker_id: str = _wire(_WORKER_ID_CODEC)


@dataclass(frozen=True, kw_only=True)
class LogUrl(_Record):
    """A presigned PUT URL for one log chunk."""

    KIND: ClassVar[str] = "a log URL"

    chunk: int = _wire(_CHUNK_CODEC)
    url: str = _wire(_text_codec(max_chars=MAX_URL_CHARS, pattern=_URL))


def _check_log_urls(values: object, what: str) -> tuple[LogUrl, ...]:
    if not isinstance(values, Iterable) or isinstance(values, str | bytes | Mapping):
        _fail(f"{what} is not a list of log URLs")
    urls = tuple(values)
    if len(urls) > MAX_LOG_URLS:
        _fail(f"{what} has more than {MAX_LOG_URLS} items")
    if not all(isinstance(u, LogUrl) for u in urls):
        _fail(f"{what} holds something that is not a LogUrl")
    checked = tuple(u for u in urls if isinstance(u, LogUrl))
    if len({u.chunk for u in checked}) != len(checked):
        _fail(f"{what} lists a chunk twice")
    return checked


def _parse_log_urls(value: object, what: str) -> tuple[LogUrl, ...]:
    items = _list(value, what, max_items=MAX_LOG_URLS)
    return tuple(LogUrl.from_dict(item) for item in items)


_LOG_URLS_CODEC: Final = Codec(
    check=_check_log_urls,
    decode=_parse_log_urls,
    encode=lambda urls: [u.to_dict() for u in _check_log_urls(urls, "log URLs")],
)


@dataclass(frozen=True, kw_only=True)
class Assign(Body):
    """Control plane → worker: run ``run_id`` under ``lease_id`` (accept before it expires)."""

    TYPE: ClassVar[str] = "assign"
    SENDERS: ClassVar[frozenset[str]] = _CONTROL_PLANE
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    lease_id: str = _wire(_RUN_ID_CODEC)
    lease_expires_at: datetime = _wire(_TIMESTAMP_CODEC)  # noqa: RUF009 - a field()
    envelope_b64: str = _wire(Codec(check=_check_b64))
    #: The run ticket (docs/envelope.md): the run's non-secret manifest bound to this lease and
    #: to the sealed bytes, and the control plane's Ed25519 signature over it.
    ticket_b64: str = _wire(_b64_codec(MAX_TICKET_B64_CHARS), default="")
    ticket_signature_b64: str = _wire(_b64_codec(88), default="")
    log_urls: tuple[LogUrl, ...] = _wire(_LOG_URLS_CODEC, default=())
    #: A planning run: where to PUT its sealed plan artifact. An applying run: where to GET
    #: the planning run's (its digest is in the signed ticket). Empty otherwise.
    plan_url: str | None = _wire(
        _optional(_text_codec(max_chars=MAX_URL_CHARS, pattern=_URL)), default=None
    )

    @property
    def envelope(self) -> bytes:
        """The sealed run state (still sealed: open it with the envelope gate)."""
        return base64.b64decode(self.envelope_b64, validate=True)

    @property
    def ticket(self) -> bytes:
        """The encoded run ticket (unverified: the identity gate checks it)."""
        return base64.b64decode(self.ticket_b64, validate=True)

    @property
    def ticket_signature(self) -> bytes:
        return base64.b64decode(self.ticket_signature_b64, validate=True)

    @classmethod
    def with_envelope(
        cls,
        *,
        run_id: str,
        lease_id: str,
        lease_expires_at: datetime,
        envelope: bytes,
        ticket: bytes = b"",
        ticket_signature: bytes = b"",
        log_urls: Iterable[LogUrl] = (),
        plan_url: str | None = None,
    ) -> Self:
        return cls(
            run_id=run_id,
            lease_id=lease_id,
            lease_expires_at=lease_expires_at,
            envelope_b64=base64.b64encode(envelope).decode("ascii"),
            ticket_b64=base64.b64encode(ticket).decode("ascii"),
            ticket_signature_b64=base64.b64encode(ticket_signature).decode("ascii"),
            log_urls=tuple(log_urls),
            plan_url=plan_url,
        )


@dataclass(frozen=True, kw_only=True)
class Cancel(Body):
    """Control plane → worker: stop ``run_id`` (through the executor's stop path)."""

    TYPE: ClassVar[str] = "cancel"
    SENDERS: ClassVar[frozenset[str]] = _CONTROL_PLANE
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)


@dataclass(frozen=True, kw_only=True)
class Start(Body):
    """Control plane → worker: your ``accept`` of ``run_id`` under ``lease_id`` won; run it now.

    The transport acks every critical message on receipt, so an ``ack`` of ``accept`` only means
    "received", never "go". The control plane answers each ``accept`` with exactly one of
    ``start`` (this accept holds the lease; at most one ``start`` per run, ever) or ``cancel``
    (the accept was stale or superseded). A worker opens the envelope and runs only after
    ``start`` for the same run and lease id.
    """

    TYPE: ClassVar[str] = "start"
    SENDERS: ClassVar[frozenset[str]] = _CONTROL_PLANE
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    lease_id: str = _wire(_RUN_ID_CODEC)


@dataclass(frozen=True, kw_only=True)
class _Empty(Body):
    SENDERS: ClassVar[frozenset[str]] = _CONTROL_PLANE
    CRITICAL: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class Drain(_Empty):
    """Control plane → worker: accept nothing new."""

    TYPE: ClassVar[str] = "drain"


@dataclass(frozen=True, kw_only=True)
class Undrain(_Empty):
    """Control plane → worker: accept runs again."""

    TYPE: ClassVar[str] = "undrain"


@dataclass(frozen=True, kw_only=True)
class Cycle(_Empty):
    """Control plane → worker: exit after the current runs (the pool was reset or cycled)."""

    TYPE: ClassVar[str] = "cycle"


@dataclass(frozen=True, kw_only=True)
class LogUrls(Body):
    """Control plane → worker: more presigned URLs for ``run_id``."""

    TYPE: ClassVar[str] = "log_urls"
    SENDERS: ClassVar[frozenset[str]] = _CONTROL_PLANE
    CRITICAL: ClassVar[bool] = True

    run_id: str = _wire(_RUN_ID_CODEC)
    urls: tuple[LogUrl, ...] = _wire(_LOG_URLS_CODEC)


BODY_TYPES: Final[Mapping[str, type[Body]]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Register,
            Heartbeat,
            Accept,
            Refuse,
            Status,
            PhaseStarted,
            LogUrlsRequest,
            Witness,
            Ack,
            Bye,
            Gone,
            Assign,
            Start,
            Cancel,
            Drain,
            Undrain,
            Cycle,
            LogUrls,
        )
    }
)
CRITICAL_TYPES: Final = frozenset(t for t, cls in BODY_TYPES.items() if cls.CRITICAL)
WORKER_TYPES: Final = frozenset(t for t, cls in BODY_TYPES.items() if "worker" in cls.SENDERS)
CONTROL_PLANE_TYPES: Final = frozenset(
    t for t, cls in BODY_TYPES.items() if "controlplane" in cls.SENDERS
)

B = TypeVar("B", bound=Body)


# -- the message -------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    _fail(f"the message contains {name}, which JSON does not allow")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _fail("the message repeats a field")
        result[key] = value
    return result


_HEADER_FIELDS: Final = ("v", "type", "id", "stream", "seq", "sent_at", "body")


@dataclass(frozen=True, kw_only=True)
class Message:
    """One protocol message: header fields plus a typed body."""

    id: str
    stream: str
    seq: int
    sent_at: datetime
    body: Body

    def __post_init__(self) -> None:
        _check_message_id(self.id, "id")
        _check_message_id(self.stream, "stream")
        minimum = 0 if isinstance(self.body, Gone) else 1
        _integer(self.seq, "seq", minimum=minimum, maximum=MAX_SEQ)
        if isinstance(self.body, Gone) and self.seq != 0:
            _fail("a gone message (the last will) carries seq 0")
        if not isinstance(self.sent_at, datetime) or self.sent_at.utcoffset() is None:
            _fail("sent_at is not a timezone-aware datetime")
        object.__setattr__(self, "sent_at", self.sent_at.astimezone(UTC))
        if not isinstance(self.body, Body) or type(self.body) not in BODY_TYPES.values():
            _fail("body is not a protocol body")

    @property
    def type(self) -> str:
        return self.body.TYPE

    @property
    def critical(self) -> bool:
        return self.body.CRITICAL

    def to_json(self) -> bytes:
        """The wire form (compact UTF-8 JSON). Raises MessageError when it would be oversized."""
        data = json.dumps(
            {
                "v": PROTOCOL_VERSION,
                "type": self.body.TYPE,
                "id": self.id,
                "stream": self.stream,
                "seq": self.seq,
                "sent_at": format_timestamp(self.sent_at),
                "body": self.body.to_dict(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode("utf-8")
        if len(data) > MAX_MESSAGE_BYTES:
            _fail(f"the message would be {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
        return data

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, *, sender: Side) -> Self:
        """Parse ``data`` sent by ``sender``; any deviation from the protocol is MessageError."""
        if len(data) > MAX_MESSAGE_BYTES:
            _fail(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            text = bytes(data).decode("utf-8")
            document = json.loads(
                text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
            )
        except MessageError:
            raise
        except (ValueError, RecursionError) as exc:
            raise MessageError(
                "the message is not UTF-8 JSON",
                hint="the sender speaks another protocol or is broken",
            ) from exc
        doc = _object(document, "the message", _HEADER_FIELDS)
        version = doc["v"]
        if isinstance(version, bool) or version != PROTOCOL_VERSION:
            _fail(f"the message's protocol version is not {PROTOCOL_VERSION}")
        kind = doc["type"]
        if not isinstance(kind, str) or kind not in BODY_TYPES:
            _fail("the message's type is unknown")
        body_type = BODY_TYPES[kind]
        if sender not in body_type.SENDERS:
            _fail(f"a {kind} message may not come from the {sender} side")
        body = body_type.from_dict(doc["body"])
        return cls(
            id=_check_message_id(doc["id"], "id"),
            stream=_check_message_id(doc["stream"], "stream"),
            seq=_integer(doc["seq"], "seq", minimum=0, maximum=MAX_SEQ),
            sent_at=parse_timestamp(doc["sent_at"], "sent_at"),
            body=body,
        )


def parse_message(data: bytes | bytearray | memoryview, *, sender: Side) -> Message:
    """Same as :meth:`Message.parse`."""
    return Message.parse(data, sender=sender)


class MessageStream:
    """One sender's sequence towards one receiver: fresh ids, ``seq`` 1, 2, 3…

    Not thread-safe on its own; the transport serialises calls.
    """

    __slots__ = ("_clock", "_seq", "stream_id")

    def __init__(
        self, *, clock: Callable[[], datetime] | None = None, stream_id: str | None = None
    ) -> None:
        self.stream_id = stream_id or new_message_id()
        _check_message_id(self.stream_id, "stream")
        self._seq = 0
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def last_seq(self) -> int:
        return self._seq

    def next(self, body: Body) -> Message:
        """The next message of this stream carrying ``body`` (``gone`` is not a stream member)."""
        if isinstance(body, Gone):
            raise TypeError("use MessageStream.last_will for the gone message")
        self._seq += 1
        return Message(
            id=new_message_id(),
            stream=self.stream_id,
            seq=self._seq,
            sent_at=self._clock(),
            body=body,
        )

    def last_will(self, body: Gone) -> Message:
        """The last-will message: seq 0, ``sent_at`` = when the will was registered."""
        return Message(
            id=new_message_id(), stream=self.stream_id, seq=0, sent_at=self._clock(), body=body
        )
