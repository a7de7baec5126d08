"""Digits and white space mean ASCII everywhere a number or a trimmed value is read.

``str.isdigit()`` accepts a superscript two (then ``int()`` raises) and an Arabic-Indic three
(then ``int()`` reads 3);
``str.strip()`` drops NEL and Unicode spaces; Python's ``\\d`` matches every script's digits.
Each reader of a header, label, setting, file or name is tried with the same hostile members:
one clean error or the documented fallback, never a traceback and never a different number.
"""

from __future__ import annotations

import ast
import http.client
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardened_launcher.ascii_text import SPACE, is_digits, trim
from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.logs import _int_setting
from hardened_launcher.docker_api.connection import Endpoint, _error_length, _read_body
from hardened_launcher.docker_api.errors import DockerHostError, DockerProtocolError
from hardened_launcher.errors import ConfigurationError, InfrastructureError
from hardened_launcher.executor.cleanup import _read_id
from hardened_launcher.executor.ownership import LABEL_DEADLINE, is_stale
from hardened_launcher.launcher.health import parse_address
from hardened_launcher.transport.poll_wire import parse_retry_after

PACKAGE = Path(__file__).resolve().parents[2] / "hardened_launcher"

# Digits of other scripts and forms: superscripts (int() raises), Arabic-Indic, Devanagari,
# fullwidth, mathematical (int() reads them), and a run too long for int() to read at all.
NOT_ASCII_DIGITS = [
    "\u00b2",  # superscript two
    "\u00b3",
    "\u00b9",
    "\u0663",  # Arabic-Indic three
    "\u0967\u0968",  # Devanagari one two
    "\uff10",  # fullwidth zero
    "\U0001d7d7",  # mathematical bold nine
    "7\u00b2",
    "\u06630",
    "1\u0663",
]
TOO_LONG = "9" * 5000
# White space str.strip() drops but ASCII trimming keeps.
UNICODE_SPACE = ["\x85", "\xa0", "\u2028", "\u3000", "\x1c", "\x1f", "\u200b"]


def every_unicode_digit() -> list[str]:
    return [chr(c) for c in range(0x110000) if chr(c).isdigit() and not chr(c).isascii()]


def test_is_digits_is_ascii_digits_only() -> None:
    assert is_digits("0123456789")
    assert not is_digits("")
    others = every_unicode_digit()
    assert len(others) > 700  # every script's digits and the superscripts
    assert not any(is_digits(c) or is_digits("1" + c) for c in others)


@given(st.text(max_size=12))
def test_is_digits_is_the_ascii_definition(text: str) -> None:
    assert is_digits(text) == (text != "" and all("0" <= c <= "9" for c in text))


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(), max_size=8), st.text(SPACE, max_size=3))
def test_trim_drops_ascii_space_only(core: str, space: str) -> None:
    stripped = trim(space + core + space)
    assert stripped == core.strip(SPACE)
    for char in UNICODE_SPACE:
        assert trim(char + "x" + char) == char + "x" + char


# --- every reader, the same hostile members -----------------------------------------------

HOSTILE_NUMBERS = [*NOT_ASCII_DIGITS, TOO_LONG, "+7", "-7", "0x1f", "1_000", "7.0", " ", ""]


@pytest.mark.parametrize("text", HOSTILE_NUMBERS)
def test_a_log_storage_number_setting_is_refused_not_misread(text: str) -> None:
    environ = {"HL_X": text}
    if text.strip() == "":
        assert _int_setting(environ, "HL_X", 5, 100) == 5  # unset: the default
        return
    with pytest.raises(ControlPlaneConfigurationError, match="whole number"):
        _int_setting(environ, "HL_X", 5, 100)


@pytest.mark.parametrize("text", [t for t in HOSTILE_NUMBERS if t.strip()])
def test_a_metrics_port_is_refused_not_misread(text: str) -> None:
    with pytest.raises(ConfigurationError, match="host:port"):
        parse_address(f"127.0.0.1:{text}")


@pytest.mark.parametrize("text", HOSTILE_NUMBERS)
def test_a_retry_after_header_falls_back_to_the_default(text: str) -> None:
    assert parse_retry_after(text, default=2.5) == 2.5
    assert parse_retry_after(f" {text} ", default=2.5) == 2.5


class _Answer:
    """What ``_read_body`` reads of an ``http.client.HTTPResponse``."""

    chunked = False

    def __init__(self, length: str, body: bytes = b"") -> None:
        self._length = length
        self._body = body

    def getheader(self, name: str) -> str | None:
        return self._length if name == "Content-Length" else None

    def read1(self, _size: int) -> bytes:
        body, self._body = self._body, b""
        return body


@pytest.mark.parametrize("text", [t for t in HOSTILE_NUMBERS if t.strip()])
def test_a_docker_content_length_is_refused_not_misread(text: str) -> None:
    answer: http.client.HTTPResponse = _Answer(text, b"7")  # type: ignore[assignment]
    with pytest.raises(DockerProtocolError, match="Content-Length"):
        _read_body(answer, 1024, "GET /info")


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (b"12", 12),
        (b"\xb2", 64 * 1024),  # not digits: the whole bound
        (b"\xd9\xa3", 64 * 1024),
        (b"-1", 64 * 1024),
        (b"0x10", 64 * 1024),
        (b"9" * 5000, 0),  # too long to be a length: nothing more is read
        (b"9" * 19, 0),
        (b"9" * 18, 64 * 1024),  # a length, capped at the bound
    ],
    ids=lambda v: repr(v)[:24],
)
def test_an_error_answers_length_is_read_in_ascii_and_bounded(value: bytes, read: int) -> None:
    header = b"HTTP/1.1 500 Oops\r\nContent-Length: " + value + b"\r\n\r\n"
    assert _error_length(header) == read


@pytest.mark.parametrize("text", [*NOT_ASCII_DIGITS, TOO_LONG, "-1", ""])
def test_a_deadline_label_that_is_not_ours_never_decides(text: str, tmp_path: Path) -> None:
    # Not a deadline: staleness is left to the owner check (no owner label: not known dead).
    assert is_stale({LABEL_DEADLINE: text}, now=1e12, proc=tmp_path) is False


@pytest.mark.parametrize("space", UNICODE_SPACE)
def test_docker_host_keeps_unicode_space(space: str) -> None:
    # It names another path (which does not exist), not the default socket silently; alone it
    # is not an unset variable but an endpoint this client does not speak.
    endpoint = Endpoint.from_environ({"DOCKER_HOST": f"unix:///run/docker.sock{space}"})
    assert endpoint.socket_path == f"/run/docker.sock{space}"
    with pytest.raises(DockerHostError, match="not a unix socket"):
        Endpoint.from_environ({"DOCKER_HOST": space})
    assert Endpoint.from_environ({"DOCKER_HOST": " \t"}).socket_path == "/var/run/docker.sock"


@pytest.mark.parametrize(
    "content",
    [
        b"hl-0123abcd\n",
        b"hl-\xc3\xa9t\xc3\xa9\n",  # UTF-8 letters: not an ID
        b"hl-\xff\n",
        b"\x85hl-1\n",
        b"hl-1\xa0",
        b"-starts-with-dash\n",
        b"x" * 64,
        b"x" * 100_000,
        b"",
        b"\n\n",
    ],
    ids=lambda c: repr(c[:20]),
)
def test_a_launcher_id_file_is_read_by_the_settings_rule(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "launcher-id"
    path.write_bytes(content)
    if content == b"hl-0123abcd\n":
        assert _read_id(path) == "hl-0123abcd"
        return
    with pytest.raises(InfrastructureError) as info:
        _read_id(path)
    assert info.value.reason == "launcher_id_invalid"
    assert "HL_LAUNCHER_ID" in info.value.hint


def test_a_launcher_id_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "launcher-id").mkdir()
    with pytest.raises(InfrastructureError) as info:
        _read_id(tmp_path / "launcher-id")
    assert info.value.reason == "launcher_id_invalid"
    with pytest.raises(FileNotFoundError):
        _read_id(tmp_path / "absent")


# --- the guard: no Unicode-digit parsing left in the package -------------------------------

_RE_FUNCTIONS = {"compile", "match", "fullmatch", "search", "sub", "subn", "split", "findall"}


def _regex_literals_with_unicode_classes(tree: ast.AST) -> list[int]:
    """Lines of ``re.<function>(pattern, ...)`` calls whose str pattern uses ``\\d`` without
    ``re.ASCII`` (bytes patterns are ASCII already)."""
    lines = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.func.attr in _RE_FUNCTIONS
            and node.args
        ):
            continue
        pattern = node.args[0]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            continue
        flags = ast.unparse(node)
        if "\\d" in pattern.value and "ASCII" not in flags:
            lines.append(node.lineno)
    return lines


def test_no_regular_expression_reads_other_scripts_digits() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = _regex_literals_with_unicode_classes(ast.parse(path.read_text()))
        if lines:
            found[str(path.relative_to(PACKAGE))] = lines
    assert not found, f"use [0-9] (or re.ASCII): \\d matches every script's digits: {found}"


#: ``.isdigit()`` of bytes (ASCII by definition): the Docker answer's status line and length.
_BYTES_ISDIGIT = {
    "docker_api/connection.py": ("parts[1].isdigit()", "digits.isdigit()"),
}


def test_no_isdigit_outside_the_ascii_helper() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(PACKAGE))
        if name == "ascii_text.py":
            continue
        allowed = _BYTES_ISDIGIT.get(name, ())
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ".isdigit()" in line and not any(snippet in line for snippet in allowed):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, f"use ascii_text.is_digits: {found}"
