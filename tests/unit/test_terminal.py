"""Run-, policy- and control-plane-controlled text is escaped before it reaches a terminal."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.cli import main
from hardened_launcher.executor.logsink import StreamLogSink
from hardened_launcher.terminal import TerminalWriter, for_terminal, for_terminal_bytes

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Every C0 control, DEL, every C1 control, every bidi control, the Unicode line separators.
DANGEROUS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]
DANGEROUS += [*BIDI, "\u2028", "\u2029"]


def _unsafe(text: str, *, multiline: bool) -> list[str]:
    allowed = {"\n", "\t"} if multiline else set()
    return [ch for ch in text if ch in DANGEROUS and ch not in allowed]


@pytest.mark.parametrize("char", DANGEROUS, ids=lambda c: f"U+{ord(c):04X}")
def test_each_dangerous_character_is_shown_as_an_escape(char: str) -> None:
    shown = for_terminal(f"a{char}b")
    assert char not in shown
    assert shown.startswith("a\\")
    assert shown.endswith("b")
    assert shown.isascii()


@given(st.text())
def test_no_control_or_bidi_character_survives(text: str) -> None:
    assert not _unsafe(for_terminal(text), multiline=False)
    assert not _unsafe(for_terminal(text, multiline=True), multiline=True)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Zl", "Zp"))))
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert for_terminal(text) == text


def test_multiline_keeps_newlines_and_tabs_only() -> None:
    assert for_terminal("a\n\tb\r\x1b[1A", multiline=True) == "a\n\tb\\x0d\\x1b[1A"
    assert for_terminal("a\nb") == "a\\x0ab"


@given(st.binary(), st.lists(st.integers(min_value=0, max_value=64), max_size=8))
def test_terminal_writer_escapes_however_the_stream_is_split(data: bytes, cuts: list[int]) -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    sink = Tty()
    writer = TerminalWriter(sink)
    points = sorted({min(c, len(data)) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        writer.write(data[start:end])
    writer.finish()
    # Split anywhere (inside a UTF-8 sequence too), the result equals escaping it whole.
    assert sink.getvalue() == for_terminal_bytes(data)
    assert not _unsafe(sink.getvalue().decode("utf-8"), multiline=True)


def test_not_a_terminal_passes_bytes_unchanged() -> None:
    sink = io.BytesIO()
    writer = TerminalWriter(sink)
    writer.write(b"\x1b[2J\xff\r")
    writer.finish()
    assert sink.getvalue() == b"\x1b[2J\xff\r"


def test_exec_stream_sink_escapes_a_run_on_a_terminal() -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    out, err = Tty(), Tty()
    sink = StreamLogSink(out, err)
    sink.write("stdout", "ok \u202eexe.txt\x1b]0;title\x07\r\n".encode())
    sink.write("stderr", "\x9b31m".encode() + b"\x9b")  # CSI as a character, then a raw byte
    sink.close()
    assert out.getvalue() == b"ok \\u202eexe.txt\\x1b]0;title\\x07\\x0d\n"
    assert err.getvalue() == b"\\x9b31m\\x9b"


def test_error_lines_from_policies_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "p.rego"
    policy.write_text(
        'package spacelift\nimport rego.v1\ndeny contains "evil\\u001b[2J\\r\\u202eboom" if true\n'
    )
    document = tmp_path / "in.json"
    document.write_text("{}")
    code = main(["policy", "eval", "--policy", str(policy), "--input", str(document)])
    captured = capsys.readouterr()
    assert code == 3
    assert "\x1b" not in captured.out  # the decision is JSON, which escapes controls itself
    assert "\u202e" not in captured.out


def test_launcher_error_line_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    from hardened_launcher.errors import UntrustedInputError  # noqa: PLC0415

    def handler(_args: object) -> int:
        raise UntrustedInputError("denied: \x1b[31mred\r\u202etxt.exe", hint="no\x07bell")

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr("hardened_launcher.cli.keygen.run_keygen", handler)
    from hardened_launcher.cli import build_parser  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(["keygen"])
    args.handler = handler
    monkeypatch.setattr("hardened_launcher.cli.build_parser", lambda: _Fixed(parser, args))
    assert main(["keygen"]) == 65
    line = err.getvalue()
    assert line.count("\n") == 1
    assert not _unsafe(line.rstrip("\n"), multiline=False)
    assert "\\x1b[31mred" in line


class _Fixed:
    def __init__(self, parser: object, args: object) -> None:
        self.parser, self.args = parser, args

    def parse_args(self, _argv: object) -> object:
        return self.args
