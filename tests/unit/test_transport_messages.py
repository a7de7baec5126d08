"""The message protocol: round trips, strictness, and arbitrary bytes never crash."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.errors import UntrustedInputError
from hardened_launcher.transport.messages import (
    BODY_TYPES,
    CONTROL_PLANE_TYPES,
    CRITICAL_TYPES,
    MAX_MESSAGE_BYTES,
    WORKER_TYPES,
    Accept,
    Ack,
    Assign,
    Body,
    Bye,
    Cancel,
    Cycle,
    Drain,
    Gone,
    Heartbeat,
    LogUrl,
    LogUrls,
    LogUrlsRequest,
    Message,
    MessageError,
    MessageStream,
    PhaseStarted,
    Refuse,
    Register,
    Start,
    Status,
    Undrain,
    Witness,
)

ID = "0123456789abcdef0123456789abcdef"
NOW = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

_ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_slug = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), max_codepoint=0x2FFFF), max_size=50
)
_pool = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_times = st.datetimes(
    # hypothesis wants naive bounds; the values get UTC.
    min_value=datetime(1, 1, 1),  # noqa: DTZ001 - years before 1000 once broke encoding
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
_urls = st.lists(
    st.builds(
        LogUrl,
        chunk=st.integers(0, 2**31 - 1),
        url=st.from_regex(r"https://[a-z]{1,10}\.example/[A-Za-z0-9%&=?]{0,30}", fullmatch=True),
    ),
    max_size=4,
    unique_by=lambda u: u.chunk,
).map(tuple)
_run_ids = st.lists(_ident, max_size=4, unique=True).map(tuple)

BODIES: dict[type[Body], st.SearchStrategy[Body]] = {
    Register: st.builds(
        Register,
        worker_id=_ident,
        pool_id=_pool,
        version=_text,
        metadata=st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_.-]{1,10}", fullmatch=True), _text, max_size=3
        ),
        max_concurrent_runs=st.integers(1, 1024),
    ),
    Heartbeat: st.builds(
        Heartbeat, state=st.sampled_from(["IDLE", "BUSY", "DRAINED"]), running=_run_ids
    ),
    Accept: st.builds(Accept, run_id=_ident, lease_id=_ident),
    Refuse: st.builds(Refuse, run_id=_ident, lease_id=_ident, reason=_slug, message=_text),
    Status: st.builds(
        Status,
        run_id=_ident,
        state=st.sampled_from(["RUNNING", "FINISHED", "FAILED", "STOPPED", "CRASHED"]),
        exit_code=st.none() | st.integers(-(2**31), 2**31 - 1),
        reason=st.none() | _slug,
        message=st.none() | _text,
        outputs=st.dictionaries(
            st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,8}", fullmatch=True),
            st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode("ascii")),
            max_size=3,
        ),
        outputs_truncated=st.booleans(),
        plan_sha256=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
    ),
    PhaseStarted: st.builds(
        PhaseStarted,
        run_id=_ident,
        phase=st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
        started_at=_times,
    ),
    LogUrlsRequest: st.builds(LogUrlsRequest, run_id=_ident, from_chunk=st.integers(0, 2**31 - 1)),
    Witness: st.builds(
        Witness,
        key_id=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        pool_id=_pool,
        worker_id=_ident.filter(lambda v: len(v) <= 64),
        seq=st.integers(0, 2**63 - 1),
        hash=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        trigger=st.sampled_from(["records", "seconds", "segment_end", "recovery", "close"]),
        time=st.just("2030-01-02T03:04:05.000000+00:00"),
        signature=st.from_regex(r"[0-9a-f]{128}", fullmatch=True),
    ),
    Ack: st.builds(Ack, of=st.uuids().map(lambda u: u.hex)),
    Bye: st.builds(Bye, reason=_slug),
    Assign: st.builds(
        Assign.with_envelope,
        run_id=_ident,
        lease_id=_ident,
        lease_expires_at=_times,
        envelope=st.binary(min_size=1, max_size=200),
        log_urls=_urls,
        plan_url=st.none() | st.just("https://s3.example/plan?X-Amz-Signature=ab"),
    ),
    Start: st.builds(Start, run_id=_ident, lease_id=_ident),
    Cancel: st.builds(Cancel, run_id=_ident),
    Drain: st.just(Drain()),
    Undrain: st.just(Undrain()),
    Cycle: st.just(Cycle()),
    LogUrls: st.builds(LogUrls, run_id=_ident, urls=_urls),
}


def test_every_type_has_a_strategy_and_one_side() -> None:
    assert set(BODIES) | {Gone} == set(BODY_TYPES.values())
    assert {"ack"} == WORKER_TYPES & CONTROL_PLANE_TYPES
    assert {"assign", "accept", "refuse", "status", "start"} <= CRITICAL_TYPES
    assert "heartbeat" not in CRITICAL_TYPES
    assert "ack" not in CRITICAL_TYPES


@settings(max_examples=300)
@given(body=st.one_of(*BODIES.values()), seq=st.integers(1, 2**63 - 1), sent_at=_times)
def test_round_trip(body: Body, seq: int, sent_at: datetime) -> None:
    message = Message(id=ID, stream=ID, seq=seq, sent_at=sent_at, body=body)
    data = message.to_json()
    sender = "worker" if "worker" in body.SENDERS else "controlplane"
    assert Message.parse(data, sender=sender) == message  # type: ignore[arg-type]
    assert json.loads(data)["type"] == body.TYPE


@settings(max_examples=500)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for sender in ("worker", "controlplane"):
        try:
            Message.parse(data, sender=sender)
        except MessageError as exc:
            refusal: MessageError | None = exc
        else:
            refusal = None
        if refusal is not None:
            assert isinstance(refusal, UntrustedInputError)
            assert refusal.reason == "message_invalid"


@settings(max_examples=300)
@given(
    document=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["v", "type", "id", "stream", "seq", "sent_at", "body", "x"]),
                children,
                max_size=7,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes(document: object) -> None:
    with pytest.raises(MessageError):
        Message.parse(json.dumps(document).encode(), sender="worker")


def _valid(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "v": 1,
        "type": "accept",
        "id": ID,
        "stream": ID,
        "seq": 1,
        "sent_at": "2025-01-02T03:04:05.678901Z",
        "body": {"run_id": "run-1", "lease_id": "lease-1"},
    }
    doc.update(changes)
    return doc


def test_a_valid_document_parses() -> None:
    message = Message.parse(json.dumps(_valid()).encode(), sender="worker")
    assert message.body == Accept(run_id="run-1", lease_id="lease-1")
    assert message.sent_at == NOW


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"v": 2}, "version"),
        ({"v": True}, "version"),
        ({"type": "launch"}, "unknown"),
        ({"type": "assign"}, "side"),
        ({"id": "0123"}, "id"),
        ({"id": ID.upper()}, "id"),
        ({"seq": 0}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 1.0}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"sent_at": "2025-01-02T03:04:05+00:00"}, "timestamp"),
        ({"sent_at": "2025-13-02T03:04:05Z"}, "timestamp"),
        ({"extra": 1}, "unknown field"),
        ({"body": {"run_id": "run-1"}}, "missing field"),
        ({"body": {"run_id": "run-1", "lease_id": "l", "x": 1}}, "unknown body field"),
        ({"body": {"run_id": "../etc", "lease_id": "l"}}, "run id shape"),
        ({"body": {"run_id": "r" * 129, "lease_id": "l"}}, "run id length"),
        ({"body": []}, "body type"),
    ],
)
def test_strictness(changes: dict[str, object], why: str) -> None:
    with pytest.raises(MessageError):
        Message.parse(json.dumps(_valid(**changes)).encode(), sender="worker")
    assert why


def test_missing_header_field_is_refused() -> None:
    doc = _valid()
    del doc["stream"]
    with pytest.raises(MessageError):
        Message.parse(json.dumps(doc).encode(), sender="worker")


def test_duplicate_keys_and_constants_are_refused() -> None:
    text = json.dumps(_valid())
    with pytest.raises(MessageError, match="repeats"):
        Message.parse(text.replace('"seq": 1', '"seq": 1, "seq": 2').encode(), sender="worker")
    with pytest.raises(MessageError):
        Message.parse(text.replace('"seq": 1', '"seq": NaN').encode(), sender="worker")
    with pytest.raises(MessageError):
        Message.parse(b"\xff" + text.encode(), sender="worker")
    with pytest.raises(MessageError):
        Message.parse(b"[" * 100_000, sender="worker")


def test_oversized_messages_are_refused_both_ways() -> None:
    with pytest.raises(MessageError, match="larger"):
        Message.parse(b" " * (MAX_MESSAGE_BYTES + 1), sender="worker")
    huge = Refuse(run_id="r", lease_id="l", reason="x", message="m" * 1024)
    Message(id=ID, stream=ID, seq=1, sent_at=NOW, body=huge).to_json()
    with pytest.raises(MessageError):
        Assign.with_envelope(
            run_id="r", lease_id="l", lease_expires_at=NOW, envelope=b"x" * MAX_MESSAGE_BYTES
        )


def test_constructors_refuse_what_the_parser_would() -> None:
    with pytest.raises(MessageError):
        Heartbeat(state="SLEEPING")  # type: ignore[arg-type]
    with pytest.raises(MessageError):
        Heartbeat(state="BUSY", running=("a", "a"))
    with pytest.raises(MessageError):
        Register(worker_id="w/1", pool_id="p", version="1")
    with pytest.raises(MessageError):
        Register(worker_id="w1", pool_id="P", version="1")
    with pytest.raises(MessageError):
        Register(worker_id="w1", pool_id="p", version="1", metadata={"a b": "x"})
    with pytest.raises(MessageError):
        Refuse(run_id="r", lease_id="l", reason="Policy Denied", message="m")
    with pytest.raises(MessageError):
        Status(run_id="r", state="FINISHED", exit_code=True)
    with pytest.raises(MessageError):
        LogUrls(
            run_id="r",
            urls=(LogUrl(chunk=1, url="https://a/1"), LogUrl(chunk=1, url="https://a/2")),
        )
    with pytest.raises(MessageError):
        LogUrl(chunk=0, url="file:///etc/passwd")
    with pytest.raises(MessageError):
        Assign(run_id="r", lease_id="l", lease_expires_at=NOW, envelope_b64="not base64!")
    with pytest.raises(MessageError):
        Assign(run_id="r", lease_id="l", lease_expires_at=datetime(2025, 1, 1), envelope_b64="AA==")  # noqa: DTZ001


def test_control_characters_in_text_are_refused() -> None:
    with pytest.raises(MessageError):
        Refuse(run_id="r", lease_id="l", reason="x", message="line\nbreak")


def test_assign_carries_the_envelope_bytes() -> None:
    assign = Assign.with_envelope(
        run_id="r",
        lease_id="l",
        lease_expires_at=NOW + timedelta(seconds=30),
        envelope=b"\x00sealed",
    )
    assert assign.envelope == b"\x00sealed"


def test_stream_numbers_from_one_and_will_is_seq_zero() -> None:
    stream = MessageStream(clock=lambda: NOW)
    first = stream.next(Heartbeat(state="IDLE"))
    second = stream.next(Heartbeat(state="IDLE"))
    assert (first.seq, second.seq) == (1, 2)
    assert first.id != second.id
    assert first.stream == second.stream == stream.stream_id
    will = stream.last_will(Gone(worker_id="w1"))
    assert will.seq == 0
    assert stream.last_seq == 2
    assert Message.parse(will.to_json(), sender="worker") == will
    with pytest.raises(TypeError):
        stream.next(Gone(worker_id="w1"))
    with pytest.raises(MessageError):
        Message(id=ID, stream=ID, seq=0, sent_at=NOW, body=Heartbeat(state="IDLE"))
    with pytest.raises(MessageError):
        Message(id=ID, stream=ID, seq=3, sent_at=NOW, body=Gone(worker_id="w1"))


# -- the declarative schemas: the same strictness for every field of every body (issue 12) -------
def _samples() -> list[Any]:
    from hardened_launcher.transport import messages as m  # noqa: PLC0415 - local to the table

    url = m.LogUrl(chunk=0, url="https://s3.example/0")
    when = datetime(2030, 1, 1, tzinfo=UTC)
    return [
        m.Register(worker_id="w-1", pool_id="pool-a", version="1", metadata={"k": "v"}),
        m.Heartbeat(state="BUSY", running=("run-1",)),
        m.Accept(run_id="run-1", lease_id="l-1"),
        m.Refuse(run_id="run-1", lease_id="l-1", reason="worker_busy", message="busy"),
        m.Status(run_id="run-1", state="REFUSED", exit_code=None, reason="policy_denied"),
        m.Status(
            run_id="run-1",
            state="FINISHED",
            outputs={"result.json": "e30="},
            outputs_truncated=True,
            plan_sha256="ab" * 32,
        ),
        m.PhaseStarted(run_id="run-1", phase="planning", started_at=datetime.now(UTC)),
        m.LogUrlsRequest(run_id="run-1", from_chunk=3),
        m.Ack(of="a" * 32),
        m.Bye(reason="drained"),
        m.Gone(worker_id="w-1"),
        m.Assign.with_envelope(
            run_id="run-1",
            lease_id="l-1",
            lease_expires_at=when,
            envelope=b"sealed",
            ticket=b"{}",
            ticket_signature=b"s" * 64,
            log_urls=[url],
        ),
        m.Start(run_id="run-1", lease_id="l-1"),
        m.Cancel(run_id="run-1"),
        m.Drain(),
        m.Undrain(),
        m.Cycle(),
        m.LogUrls(run_id="run-1", urls=(url,)),
        m.Witness(
            key_id="a" * 64,
            pool_id="pool-a",
            worker_id="w1",
            seq=41,
            hash="b" * 64,
            trigger="records",
            time="2030-01-02T03:04:05.000000+00:00",
            signature="c" * 128,
        ),
    ]


def test_every_body_type_has_a_sample() -> None:
    from hardened_launcher.transport.messages import BODY_TYPES  # noqa: PLC0415

    assert {type(b).TYPE for b in _samples()} == set(BODY_TYPES)


@pytest.mark.parametrize("body", _samples(), ids=lambda b: type(b).TYPE)
def test_every_field_of_every_body_is_strict(body: Any) -> None:
    kind = type(body)
    document = body.to_dict()
    assert kind.from_dict(document) == body
    assert kind.from_dict(json.loads(json.dumps(document))) == body
    with pytest.raises(MessageError, match="unknown field"):
        kind.from_dict({**document, "extra": 1})
    for name in document:
        with pytest.raises(MessageError, match="lacks fields"):
            kind.from_dict({k: v for k, v in document.items() if k != name})
        for wrong in ({"x": 1}, [[1]], True, 1.5, "\x1b[31m" * 300):
            if wrong is True and isinstance(document[name], bool):
                continue  # a boolean field: True is one of its values
            with pytest.raises(MessageError):
                kind.from_dict({**document, name: wrong})
