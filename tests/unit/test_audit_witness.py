"""Outside witnesses: signed checkpoint digests detect a log rolled back or cut at a checkpoint."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit.reader import AuditFormatError, list_segments, split_lines
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.audit.witness import (
    MAX_WITNESS_BYTES,
    WitnessError,
    WitnessPoint,
    WitnessRecord,
    compare_with_witnesses,
    load_witness_path,
    parse_witness,
    sign_witness,
    verify_log_with_witnesses,
)
from hardened_launcher.errors import InputFileError
from tests.unit.audit_support import KEY, OTHER_KEY, event, open_log

PUB = KEY.public_key()
POINT = WitnessPoint(
    seq=41, hash="a" * 64, trigger="records", time="2030-01-02T03:04:05.000000+00:00"
)


def _witness(**changes: object) -> WitnessRecord:
    record = sign_witness(POINT, key=KEY, pool_id="pool-a", worker_id="w1")
    return replace(record, **changes)  # type: ignore[arg-type]


def _write(directory: Path, count: int, *, checkpoint_records: int = 3) -> list[WitnessRecord]:
    """A closed log of ``count`` records and every witness its launcher would have sent."""
    log = open_log(directory, segment_bytes=3000, checkpoint_records=checkpoint_records)
    witnesses = log.take_witnesses(pool_id="pool-a", worker_id="w1")
    for i in range(count):
        log.record(event(i))
        witnesses += log.take_witnesses(pool_id="pool-a", worker_id="w1")
    log.close()
    return witnesses + log.take_witnesses(pool_id="pool-a", worker_id="w1")


def _checkpoint_lines(directory: Path) -> list[tuple[str, int, int]]:
    """(segment, line index, seq) of every checkpoint."""
    found = []
    for _, name in list_segments(directory):
        for number, line in enumerate(split_lines((directory / name).read_bytes())):
            doc = json.loads(line)
            if doc["type"] == "audit.checkpoint":
                found.append((name, number, doc["seq"]))
    return found


def _cut_after(directory: Path, segment: str, line: int) -> None:
    """Keep the log up to and including ``line`` of ``segment``; delete what follows."""
    names = [name for _, name in list_segments(directory)]
    for name in names[names.index(segment) + 1 :]:
        (directory / name).unlink()
    path = directory / segment
    lines = split_lines(path.read_bytes())
    path.write_bytes(b"".join(x + b"\n" for x in lines[: line + 1]))


# -- the record --------------------------------------------------------------------------------


def test_a_witness_round_trips_in_canonical_form() -> None:
    witness = _witness()
    data = witness.to_json()
    assert parse_witness(data) == witness
    assert len(data) <= MAX_WITNESS_BYTES
    witness.verify(PUB)
    assert json.loads(data)["kind"] == "audit-witness"


@pytest.mark.parametrize(
    "changes",
    [
        {"pool_id": "pool-b"},
        {"worker_id": "w2"},
        {"seq": 42},
        {"hash": "b" * 64},
        {"time": "2030-01-02T03:04:06.000000+00:00"},
    ],
)
def test_a_witness_moved_to_another_place_or_worker_does_not_verify(
    changes: dict[str, object],
) -> None:
    with pytest.raises(WitnessError, match="does not verify") as caught:
        _witness(**changes).verify(PUB)
    assert caught.value.reason == "audit_witness_invalid"


def test_a_witness_of_another_key_is_named_as_such() -> None:
    other = sign_witness(POINT, key=OTHER_KEY, pool_id="pool-a", worker_id="w1")
    with pytest.raises(WitnessError, match="signed by audit key"):
        other.verify(PUB)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(extra=1),
        lambda d: d.pop("pool_id"),
        lambda d: d.update(seq=True),
        lambda d: d.update(seq=-1),
        lambda d: d.update(seq="41"),
        lambda d: d.update(v=2),
        lambda d: d.update(kind="other"),
        lambda d: d.update(trigger="later"),
        lambda d: d.update(hash="A" * 64),
        lambda d: d.update(signature="00"),
        lambda d: d.update(pool_id="Pool_A"),
        lambda d: d.update(worker_id="w/1"),
        lambda d: d.update(time="yesterday"),
    ],
)
def test_malformed_witnesses_are_refused_with_one_clear_error(mutate: object) -> None:
    doc = json.loads(_witness().to_json())
    mutate(doc)  # type: ignore[operator]
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(WitnessError) as caught:
        parse_witness(data, where="w.jsonl line 1")
    assert caught.value.reason == "audit_witness_invalid"
    assert "w.jsonl line 1" in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"\xff\xfe",
        b"{" * 5000,
        b" " + b"x" * MAX_WITNESS_BYTES,
        json.dumps(json.loads(_witness().to_json()), indent=1).encode(),  # not canonical
        _witness().to_json()[:-1] + b',"v":1}',  # a member twice
    ],
)
def test_hostile_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(WitnessError):
        parse_witness(data)


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    with contextlib.suppress(WitnessError):
        parse_witness(data)


# -- the log's side ----------------------------------------------------------------------------


def test_every_durable_checkpoint_is_witnessed_once(tmp_path: Path) -> None:
    witnesses = _write(tmp_path, 20)
    points = {seq for _, _, seq in _checkpoint_lines(tmp_path)}
    assert [w.seq for w in witnesses] == sorted(points)
    assert {(w.pool_id, w.worker_id) for w in witnesses} == {("pool-a", "w1")}
    for w in witnesses:
        w.verify(PUB)
    _, judged = verify_log_with_witnesses(tmp_path, PUB, witnesses)
    assert judged.latest_seq == max(points)


def test_pending_witnesses_are_bounded_newest_kept(tmp_path: Path) -> None:
    log = open_log(tmp_path, checkpoint_records=1, segment_bytes=10**9)
    for i in range(200):
        log.record(event(i))
    taken = log.take_witnesses(pool_id="pool-a", worker_id="w1")
    log.close()
    assert len(taken) == 64
    assert taken[-1].seq == max(seq for _, _, seq in _checkpoint_lines(tmp_path)) - 1


def test_rollback_to_an_earlier_sealed_state_passes_alone_and_fails_with_witnesses(
    tmp_path: Path,
) -> None:
    first = _write(tmp_path, 6)
    sealed_at = len(list_segments(tmp_path))
    log = open_log(tmp_path, segment_bytes=3000, checkpoint_records=3)
    for i in range(9):
        log.record(event(i))
    later = log.take_witnesses(pool_id="pool-a", worker_id="w1")
    log.close()
    for _, name in list_segments(tmp_path)[sealed_at:]:
        (tmp_path / name).unlink()
    assert verify_log(tmp_path, PUB).sealed  # the files alone cannot tell
    with pytest.raises(WitnessError, match="removed from the end") as caught:
        verify_log_with_witnesses(tmp_path, PUB, first + later)
    assert caught.value.reason == "audit_log_rolled_back"
    assert caught.value.exit_code == 65


def test_a_log_cut_right_after_a_checkpoint_is_detected(tmp_path: Path) -> None:
    witnesses = _write(tmp_path, 20)
    segment, line, _ = _checkpoint_lines(tmp_path)[-3]
    _cut_after(tmp_path, segment, line)
    verify_log(tmp_path, PUB, allow_open_tail=True)  # the files alone cannot tell
    with pytest.raises(WitnessError) as caught:
        verify_log_with_witnesses(tmp_path, PUB, witnesses, allow_open_tail=True)
    assert caught.value.reason == "audit_log_rolled_back"


def test_a_log_rewritten_with_the_key_differs_from_its_witnesses(tmp_path: Path) -> None:
    witnesses = _write(tmp_path, 8)
    shutil.rmtree(tmp_path)
    # The same key writes another story of the same length (an attacker holding the key).
    log = open_log(tmp_path, segment_bytes=3000, checkpoint_records=3)
    for i in range(8):
        log.record(event(i + 100))
    log.close()
    with pytest.raises(WitnessError) as caught:
        verify_log_with_witnesses(tmp_path, PUB, witnesses)
    assert caught.value.reason == "audit_witness_mismatch"


def test_no_witness_is_not_an_all_clear() -> None:
    with pytest.raises(InputFileError) as caught:
        compare_with_witnesses([], PUB, last_seq=3, checkpoint_hashes={})
    assert caught.value.reason == "audit_witness_missing"


def test_witness_files_and_directories_load(tmp_path: Path) -> None:
    records = [
        _witness(),
        sign_witness(replace(POINT, seq=50), key=KEY, pool_id="pool-a", worker_id="w1"),
    ]
    one = tmp_path / "all.jsonl"
    one.write_bytes(b"".join(r.to_json() + b"\n" for r in records))
    assert load_witness_path(one) == records
    folder = tmp_path / "dir"
    folder.mkdir()
    for r in records:
        (folder / f"{r.seq:020d}.json").write_bytes(r.to_json() + b"\n")
    (folder / "README").write_text("ignored")
    assert load_witness_path(folder) == records
    with pytest.raises(InputFileError):
        load_witness_path(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFileError):
        load_witness_path(empty)
    # Paths the system refuses before any byte is read: one clear input error each.
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for refused in (tmp_path / ("n" * 5000), tmp_path / ("n" * 300), loop, one / "below"):
        with pytest.raises(InputFileError):
            load_witness_path(refused)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(records[0].to_json() + b"\n{}\n")
    with pytest.raises(WitnessError, match="line 2"):
        load_witness_path(bad)


@given(
    count=st.integers(1, 25),
    every=st.integers(1, 6),
    seen=st.floats(0.0, 1.0),
    cut=st.floats(0.0, 1.0),
)
@settings(max_examples=40, deadline=None)
def test_a_cut_log_is_detected_exactly_when_it_lost_a_witnessed_checkpoint(
    count: int, every: int, seen: float, cut: float
) -> None:
    """Witnesses reached the control plane up to some checkpoint; the log is then cut right
    after any checkpoint. The comparison fails exactly when the cut removed a witnessed one."""
    base = Path(tempfile.mkdtemp())
    try:
        witnesses = _write(base, count, checkpoint_records=every)
        delivered = witnesses[: max(1, round(seen * len(witnesses)))]
        points = _checkpoint_lines(base)
        segment, line, kept = points[min(len(points) - 1, int(cut * len(points)))]
        _cut_after(base, segment, line)
        verify_log(base, PUB, allow_open_tail=True)
        lost = max(w.seq for w in delivered) > kept
        if lost:
            with pytest.raises(WitnessError) as caught:
                verify_log_with_witnesses(base, PUB, delivered, allow_open_tail=True)
            assert caught.value.reason == "audit_log_rolled_back"
        else:
            verify_log_with_witnesses(base, PUB, delivered, allow_open_tail=True)
    finally:
        shutil.rmtree(base)


@given(st.lists(st.integers(0, 60), min_size=1, max_size=8), st.integers(0, 60))
@settings(max_examples=100, deadline=None)
def test_comparison_against_a_model(seqs: list[int], last_seq: int) -> None:
    """compare_with_witnesses agrees with the obvious model for any witnessed seqs."""
    hashes = {s: f"{s:064x}" for s in range(0, last_seq + 1, 3)}
    witnesses = [
        sign_witness(replace(POINT, seq=s, hash=f"{s:064x}"), key=KEY, pool_id="p", worker_id="w")
        for s in seqs
    ]
    if max(seqs) > last_seq:
        expected: str | None = "audit_log_rolled_back"
    elif any(s not in hashes for s in seqs):
        expected = "audit_witness_mismatch"
    else:
        expected = None
    if expected is None:
        compare_with_witnesses(witnesses, PUB, last_seq=last_seq, checkpoint_hashes=hashes)
    else:
        with pytest.raises(WitnessError) as caught:
            compare_with_witnesses(witnesses, PUB, last_seq=last_seq, checkpoint_hashes=hashes)
        assert caught.value.reason == expected


def test_a_damaged_log_is_still_reported_as_damage_first(tmp_path: Path) -> None:
    witnesses = _write(tmp_path, 6)
    first = tmp_path / list_segments(tmp_path)[0][1]
    first.write_bytes(first.read_bytes().replace(b'"n":1', b'"n":7', 1))
    with pytest.raises(AuditFormatError):
        verify_log_with_witnesses(tmp_path, PUB, witnesses)


def test_witnesses_of_other_launchers_are_set_aside(tmp_path: Path) -> None:
    witnesses = _write(tmp_path, 8)
    other = sign_witness(POINT, key=OTHER_KEY, pool_id="pool-a", worker_id="w2")
    _, judged = verify_log_with_witnesses(tmp_path, PUB, [other, *witnesses])
    assert judged.witnesses == len(witnesses)
    with pytest.raises(InputFileError, match="none of audit key") as caught:
        verify_log_with_witnesses(tmp_path, PUB, [other])
    assert caught.value.reason == "audit_witness_missing"


def test_taking_witnesses_never_waits_for_a_hung_log(tmp_path: Path) -> None:
    log = open_log(tmp_path, checkpoint_records=1)
    log.record(event(0))
    with log._write_lock:
        assert log.take_witnesses(pool_id="pool-a", worker_id="w1") == []
    assert log.take_witnesses(pool_id="pool-a", worker_id="w1")
    log.close()
