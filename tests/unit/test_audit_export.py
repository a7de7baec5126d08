from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.audit import AuditEvent, Outcome
from hardened_launcher.audit.cef import escape_extension, escape_header, to_cef
from hardened_launcher.audit.export import (
    Selection,
    export_to_file,
    export_to_stream,
    iter_selected,
)
from hardened_launcher.audit.ocsf import to_ocsf, validate_ocsf_event
from hardened_launcher.audit.reader import AuditFormatError, list_segments
from hardened_launcher.audit.s3export import parse_s3_url
from hardened_launcher.cli import main
from hardened_launcher.errors import EXIT_UNTRUSTED_INPUT, UsageError
from tests.unit.audit_support import KEY, T0, event, open_log, write_log

PUB = KEY.public_key()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "audit"
    write_log(d, 24, segment_bytes=3000, checkpoint_records=5)
    return d


@pytest.fixture
def pub_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.pub"
    path.write_bytes(
        PUB.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# -- a strict CEF parser ----------------------------------------------------------------------
_EXT_KEY = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """Strict: exactly 7 header fields after 'CEF:0'; only \\\\ and \\| escapes in the header;
    in extensions only \\\\ \\= \\n \\r escapes, no raw '=' inside a value, no raw newline."""
    assert "\n" not in line
    assert "\r" not in line
    header: list[str] = []
    cur = ""
    i = 0
    while len(header) < 7:
        ch = line[i]
        if ch == "\\":
            nxt = line[i + 1]
            assert nxt in "\\|", f"bad header escape \\{nxt}"
            cur += nxt
            i += 2
        elif ch == "|":
            header.append(cur)
            cur = ""
            i += 1
        else:
            cur += ch
            i += 1
    assert header[0] == "CEF:0"
    assert header[6].isdigit()
    assert 0 <= int(header[6]) <= 10
    rest = line[i:]
    ext: dict[str, str] = {}
    tokens: list[tuple[str, str]] = []  # (key, raw value)
    pos = 0
    while pos < len(rest):
        m = _EXT_KEY.match(rest, pos)
        assert m, f"expected a key at {pos}: {rest[pos : pos + 20]!r}"
        assert rest[m.end()] == "=", f"expected '=' after {m.group()!r}"
        key = m.group()
        pos = m.end() + 1
        value = ""
        while pos < len(rest):
            ch = rest[pos]
            if ch == "\\":
                nxt = rest[pos + 1]
                assert nxt in "\\=nr", f"bad extension escape \\{nxt}"
                value += {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}[nxt]
                pos += 2
                continue
            assert ch != "=", "unescaped '=' inside a value"
            if ch == " ":
                nm = _EXT_KEY.match(rest, pos + 1)
                if nm and nm.end() < len(rest) and rest[nm.end()] == "=":
                    pos += 1
                    break
            value += ch
            pos += 1
        tokens.append((key, value))
    for key, value in tokens:
        assert key not in ext, f"duplicate key {key}"
        ext[key] = value
    return header, ext


def test_cef_lines_parse_strictly_and_round_trip(log_dir: Path) -> None:
    records, _ = iter_selected(log_dir, PUB, Selection())
    seen = 0
    for record in records:
        if record.is_checkpoint:
            continue
        header, ext = parse_cef(to_cef(record))
        assert header[4] == record.type
        assert ext["externalId"] == str(record.seq)
        assert ext["cs2"] == record.hash
        assert ext["act"] == record.outcome
        if record.fields:
            assert json.loads(ext["cs3"]) == dict(record.fields)  # survives escaping
        seen += 1
    assert seen > 10


@given(st.text(alphabet=st.sampled_from("ab\\|=\n\r x"), max_size=30))
@settings(max_examples=200)
def test_cef_escaping_round_trips_any_text(text: str) -> None:
    line = f"CEF:0|{escape_header(text)}|p|1|sig|name|3|cs1={escape_extension(text)} act=x"
    header, ext = parse_cef(line)
    assert header[1] == text.replace("\r", " ").replace("\n", " ")
    assert ext["cs1"] == text.replace("\r\n", "\n")
    assert ext["act"] == "x"


def test_cef_escapes_pipes_in_the_header_and_equals_in_extensions(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.record(
        AuditEvent(
            type="policy.evaluated",
            outcome=Outcome.DENY,
            gate="po|icy",
            reason="a=b\\c",
            fields={"k": "v=1\nw"},
            time=T0,
        )
    )
    log.close()
    records, _ = iter_selected(tmp_path, PUB, Selection())
    line = to_cef(next(r for r in records if r.type == "policy.evaluated"))
    assert "reason=a\\=b\\\\c" in line
    assert "\n" not in line
    _, ext = parse_cef(line)
    assert ext["cat"] == "po|icy"
    assert ext["reason"] == "a=b\\c"


# -- OCSF -------------------------------------------------------------------------------------
def test_every_ocsf_event_follows_the_documented_rules(log_dir: Path) -> None:
    records, _ = iter_selected(log_dir, PUB, Selection())
    outcomes = set()
    for record in records:
        if record.is_checkpoint:
            continue
        ev = to_ocsf(record)
        assert validate_ocsf_event(ev) == []
        assert ev["type_uid"] == 600399
        assert ev["metadata"]["uid"] == record.hash  # type: ignore[index]
        outcomes.add((record.outcome, ev["status_id"], ev["severity_id"]))
    assert ("deny", 2, 3) in outcomes
    assert ("allow", 1, 1) in outcomes
    assert ("error", 2, 4) in outcomes


def test_the_ocsf_validator_catches_broken_events(log_dir: Path) -> None:
    records, _ = iter_selected(log_dir, PUB, Selection())
    good = to_ocsf(next(r for r in records if not r.is_checkpoint))
    for change, expected in (
        ({"type_uid": 600301}, "type_uid"),
        ({"class_uid": 3002}, "6003"),
        ({"severity_id": 7}, "severity_id"),
        ({"time": "now"}, "time"),
        ({"api": {}}, "api.operation"),
    ):
        assert any(expected in p for p in validate_ocsf_event({**good, **change}))


# -- export -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "ocsf", "cef"])
def test_export_of_the_same_range_is_identical_twice(
    log_dir: Path, tmp_path: Path, fmt: str
) -> None:
    sel = Selection(since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=15))
    a, b = tmp_path / "a", tmp_path / "b"
    s1 = export_to_file(log_dir, PUB, fmt=fmt, selection=sel, path=a)  # type: ignore[arg-type]
    s2 = export_to_file(log_dir, PUB, fmt=fmt, selection=sel, path=b)  # type: ignore[arg-type]
    assert a.read_bytes() == b.read_bytes()
    assert s1.records == s2.records == 12
    assert s1.first_seq is not None


def test_export_interrupted_then_rerun_gives_the_same_file(log_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.cef"
    export_to_file(log_dir, PUB, fmt="cef", selection=Selection(), path=out)
    expected = out.read_bytes()
    out.unlink()

    class Boom(io.BytesIO):
        def write(self, _data: bytes) -> int:  # type: ignore[override]
            raise OSError(28, "No space left on device")

        def fileno(self) -> int:
            return -1

    with pytest.raises(Exception, match="cannot write the export"):
        export_to_file(
            log_dir, PUB, fmt="cef", selection=Selection(), path=out, opener=lambda _p: Boom()
        )
    assert not out.exists()
    assert list(tmp_path.glob(".*partial")) == []
    export_to_file(log_dir, PUB, fmt="cef", selection=Selection(), path=out)
    assert out.read_bytes() == expected


def test_export_filters_by_run(log_dir: Path) -> None:
    buf = io.BytesIO()
    summary = export_to_stream(
        log_dir, PUB, fmt="jsonl", selection=Selection(run_id="run-1"), out=buf
    )
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines
    assert {x["run_id"] for x in lines} == {"run-1"}
    assert summary.records == len(lines)


def test_export_refuses_a_tampered_log_and_writes_nothing(log_dir: Path, tmp_path: Path) -> None:
    _, name = list_segments(log_dir)[1]
    data = (log_dir / name).read_bytes()
    (log_dir / name).write_bytes(data.replace(b'"outcome":"deny"', b'"outcome":"allo"', 1))
    out = tmp_path / "x.jsonl"
    with pytest.raises(AuditFormatError):
        export_to_file(log_dir, PUB, fmt="jsonl", selection=Selection(), path=out)
    assert not out.exists()


def test_s3_url_parsing() -> None:
    assert parse_s3_url("s3://my-bucket/a/b/") == ("my-bucket", "a/b")
    assert parse_s3_url("s3://my-bucket") == ("my-bucket", "")
    for bad in ("s3://B/x", "https://bucket/x", "s3://user:pw@bucket/x", "s3://bu/x"):
        with pytest.raises(UsageError):
            parse_s3_url(bad)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_verify_ok_and_tampered(
    log_dir: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", str(log_dir), "--public-key", str(pub_file)]) == 0
    assert "sealed" in capsys.readouterr().out
    _, name = list_segments(log_dir)[0]
    raw = bytearray((log_dir / name).read_bytes())
    raw[300] ^= 1
    (log_dir / name).write_bytes(bytes(raw))
    code = main(["audit", "verify", str(log_dir), "--public-key", str(pub_file)])
    assert code == EXIT_UNTRUSTED_INPUT
    err = capsys.readouterr().err
    assert f"{name} line 1" in err or f"{name} line 2" in err


def test_cli_show_table_and_json(
    log_dir: Path, pub_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["audit", "show", str(log_dir), "--public-key", str(pub_file), "--run", "run-2"]
    assert main(base) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["SEQ", "TIME", "GATE", "EVENT", "OUTCOME"]
    assert len(table) == 1 + 8
    assert main([*base, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["run_id"] for d in data} == {"run-2"}
    assert main([*base[:-1], "no-such-run"]) != 0


def test_cli_export_to_stdout_and_file(
    log_dir: Path, pub_file: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    args = ["audit", "export", str(log_dir), "--public-key", str(pub_file), "--format", "ocsf"]
    assert main([*args, "--out", "-", "--since", "2030-01-02T03:04:10Z"]) == 0
    captured = capsysbinary.readouterr()
    events = [json.loads(x) for x in captured.out.splitlines()]
    assert events
    assert all(validate_ocsf_event(e) == [] for e in events)
    assert b"exported" in captured.err
    out = tmp_path / "o.jsonl"
    assert main([*args, "--out", str(out), "--since", "2030-01-02T03:04:10Z"]) == 0
    assert out.read_bytes() == captured.out


def test_cli_export_rejects_naive_time(log_dir: Path, pub_file: Path) -> None:
    args = ["audit", "export", str(log_dir), "--public-key", str(pub_file), "--format", "cef"]
    assert main([*args, "--out", "-", "--since", "2030-01-02T03:04:10"]) != 0


def test_records_never_hold_a_secret_value(tmp_path: Path) -> None:
    from hardened_launcher.secrets import Secret  # noqa: PLC0415

    with pytest.raises(TypeError):
        event_with_secret = AuditEvent(  # noqa: F841
            type="x.y",
            outcome=Outcome.INFO,
            fields={"t": Secret("CANARY")},  # type: ignore[dict-item]
        )
    log = open_log(tmp_path)
    log.record(event(1))
    log.close()
    assert b"CANARY" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
