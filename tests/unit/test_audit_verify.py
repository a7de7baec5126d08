"""The tamper suite: every modification of a closed log is found at the place it was made."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher.audit.reader import AuditFormatError, list_segments, split_lines
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.errors import InputFileError
from tests.unit.audit_support import KEY, OTHER_KEY, write_log

PUB = KEY.public_key()


@pytest.fixture(scope="module")
def pristine() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp())
    write_log(base, 30, segment_bytes=2500, checkpoint_records=4)
    assert len(list_segments(base)) >= 4
    yield base
    shutil.rmtree(base)


def _copy(pristine: Path) -> Path:
    target = Path(tempfile.mkdtemp())
    shutil.copytree(pristine, target, dirs_exist_ok=True)
    return target


def _failure(directory: Path) -> AuditFormatError:
    try:
        verify_log(directory, PUB)
    except AuditFormatError as exc:
        return exc
    finally:
        shutil.rmtree(directory)
    pytest.fail("verify accepted a tampered log")


RELAXED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_untouched_log_verifies(pristine: Path) -> None:
    report = verify_log(pristine, PUB)
    assert report.sealed
    assert report.unsigned_tail_records == 0


@given(st.integers(0, 29), st.integers(1, 40), st.integers(2, 8))
@settings(max_examples=25, deadline=None)
def test_any_untouched_log_verifies(count: int, checkpoint_records: int, kib: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_log(Path(d), count, segment_bytes=kib * 512, checkpoint_records=checkpoint_records)
        assert verify_log(Path(d), PUB).sealed


@given(data=st.data())
@RELAXED
def test_any_flipped_byte_is_found_on_its_line(pristine: Path, data: st.DataObject) -> None:
    segments = list_segments(pristine)
    _, name = data.draw(st.sampled_from(segments))
    raw = (pristine / name).read_bytes()
    offset = data.draw(st.integers(0, len(raw) - 1))
    mask = data.draw(st.integers(1, 255))
    target = _copy(pristine)
    changed = bytearray(raw)
    changed[offset] ^= mask
    (target / name).write_bytes(bytes(changed))
    exc = _failure(target)
    assert exc.segment == name
    assert exc.line == raw[:offset].count(b"\n")


@given(data=st.data())
@RELAXED
def test_any_removed_record_is_found_where_it_was(pristine: Path, data: st.DataObject) -> None:
    _, name = data.draw(st.sampled_from(list_segments(pristine)))
    lines = split_lines((pristine / name).read_bytes())
    index = data.draw(st.integers(0, len(lines) - 1))
    target = _copy(pristine)
    rest = lines[:index] + lines[index + 1 :]
    (target / name).write_bytes(b"".join(x + b"\n" for x in rest))
    exc = _failure(target)
    assert (exc.segment, exc.line) == (name, index)
    assert exc.reason in {"audit_sequence_broken", "audit_segment_truncated", "audit_tail_open"}


@given(data=st.data())
@RELAXED
def test_any_inserted_record_is_found(pristine: Path, data: st.DataObject) -> None:
    segments = list_segments(pristine)
    _, name = data.draw(st.sampled_from(segments))
    lines = split_lines((pristine / name).read_bytes())
    everything = [ln for _, n in segments for ln in split_lines((pristine / n).read_bytes())]
    index = data.draw(st.integers(0, len(lines)))
    copied = data.draw(st.sampled_from(everything))
    if index < len(lines) and copied == lines[index]:
        index += 1  # inserting a line before its twin is the same as inserting it after
    target = _copy(pristine)
    (target / name).write_bytes(
        b"".join(x + b"\n" for x in [*lines[:index], copied, *lines[index:]])
    )
    exc = _failure(target)
    assert (exc.segment, exc.line) == (name, index)


@given(data=st.data())
@RELAXED
def test_any_swapped_pair_is_found(pristine: Path, data: st.DataObject) -> None:
    _, name = data.draw(st.sampled_from(list_segments(pristine)))
    lines = split_lines((pristine / name).read_bytes())
    i = data.draw(st.integers(0, len(lines) - 2))
    j = data.draw(st.integers(i + 1, len(lines) - 1))
    swapped = list(lines)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    target = _copy(pristine)
    (target / name).write_bytes(b"".join(x + b"\n" for x in swapped))
    exc = _failure(target)
    assert (exc.segment, exc.line) == (name, i)
    assert exc.reason == "audit_sequence_broken"


@given(data=st.data())
@RELAXED
def test_any_deleted_segment_is_reported_missing(pristine: Path, data: st.DataObject) -> None:
    segments = list_segments(pristine)
    k = data.draw(st.integers(0, len(segments) - 1))
    target = _copy(pristine)
    (target / segments[k][1]).unlink()
    exc = _failure(target)
    assert exc.reason == "audit_segment_missing"
    if k + 1 < len(segments):
        assert (exc.segment, exc.line) == (segments[k + 1][1], 0)
    else:
        assert exc.segment == segments[k - 1][1]


@given(data=st.data())
@RELAXED
def test_any_truncated_segment_is_found_at_the_cut(pristine: Path, data: st.DataObject) -> None:
    segments = list_segments(pristine)
    _, name = data.draw(st.sampled_from(segments))
    raw = (pristine / name).read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    target = _copy(pristine)
    (target / name).write_bytes(raw[:cut])
    exc = _failure(target)
    assert (exc.segment, exc.line) == (name, raw[:cut].count(b"\n"))
    last = name == segments[-1][1]
    on_boundary = cut == 0 or raw[cut - 1 : cut] == b"\n"
    if last and on_boundary and cut > 0:
        assert exc.reason == "audit_tail_open"  # a cut after the last checkpoint, reported so
    else:
        assert exc.reason in {
            "audit_segment_truncated",
            "audit_record_unparseable",
            "audit_record_modified",
        }


def test_tail_cut_after_last_checkpoint_is_reported_as_such() -> None:
    target = Path(tempfile.mkdtemp())
    write_log(target, 10, segment_bytes=1 << 20, checkpoint_records=3)
    _, name = list_segments(target)[-1]
    lines = split_lines((target / name).read_bytes())
    # Cut the close checkpoint and the record before it: what is left ends unsigned.
    (target / name).write_bytes(b"".join(x + b"\n" for x in lines[:-2]))
    exc = _failure(target)
    assert exc.reason == "audit_tail_open"
    assert "unsigned" in exc.message
    assert (exc.segment, exc.line) == (name, len(lines) - 2)


def test_open_tail_is_accepted_for_a_live_log(pristine: Path) -> None:
    target = _copy(pristine)
    log = write_log(target, 2, close=False)
    report = verify_log(target, PUB, allow_open_tail=True)
    assert not report.sealed
    assert report.unsigned_tail_records == 3  # log_opened + 2 events
    log.close()
    assert verify_log(target, PUB).sealed
    shutil.rmtree(target)


def test_wrong_public_key_is_refused(pristine: Path) -> None:
    with pytest.raises(AuditFormatError) as info:
        verify_log(pristine, OTHER_KEY.public_key())
    assert info.value.reason == "audit_signature_invalid"


def test_rehashed_record_breaks_the_chain_at_the_next_record(pristine: Path) -> None:
    import json  # noqa: PLC0415

    from hardened_launcher.audit import canonical as c  # noqa: PLC0415

    target = _copy(pristine)
    _, name = list_segments(target)[0]
    lines = split_lines((target / name).read_bytes())
    record = json.loads(lines[2])
    record["outcome"] = "allow" if record["outcome"] != "allow" else "deny"
    record["hash"] = c.record_hash(record)
    lines[2] = c.canonical_json(record)
    (target / name).write_bytes(b"".join(x + b"\n" for x in lines))
    exc = _failure(target)
    assert (exc.segment, exc.line, exc.reason) == (name, 3, "audit_chain_broken")


def test_empty_directory_is_refused_without_claiming_tampering(tmp_path: Path) -> None:
    # A fresh install has no segments yet: refused (nothing was verified) but not an alarm.
    with pytest.raises(InputFileError) as info:
        verify_log(tmp_path, PUB)
    assert info.value.reason == "audit_log_empty"
    assert not isinstance(info.value, AuditFormatError)
    assert "modified" not in info.value.one_line()
    assert "tamper" not in info.value.one_line()
    with pytest.raises(InputFileError) as missing:
        verify_log(tmp_path / "never-created", PUB)
    assert missing.value.exit_code == 66
