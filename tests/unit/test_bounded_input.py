"""Every input bounded: the shared reader, document depth and YAML rules, and the places that use
them (policy data, run specs, values files, keyrings, audit lines, config files)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.audit.reader import AuditFormatError, parse_record
from hardened_launcher.audit.verify import verify_log
from hardened_launcher.bounded_input import (
    DocumentTooDeepError,
    check_json_depth,
    load_json,
    load_toml,
    load_yaml,
    read_bounded,
)
from hardened_launcher.cli import main
from hardened_launcher.egress.errors import EgressPolicyError
from hardened_launcher.egress.policy import parse_policy_text
from hardened_launcher.errors import InputFileError, UntrustedInputError
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.runspec import parse_run_spec
from hardened_launcher.policy.errors import PolicyCompileError
from hardened_launcher.policy.gate import check_policy_path
from tests.unit.audit_support import KEY, write_log

NEVER_DENY = 'package spacelift\nimport rego.v1\ndeny contains "x" if input.never == 1\n'

# -- the reader ------------------------------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "link-to-zero").symlink_to("/dev/zero")
    return {
        "missing": tmp_path / "missing",
        "fifo": tmp_path / "fifo",
        "directory": tmp_path / "dir",
        "dev_zero": Path("/dev/zero"),
        "dev_null": Path("/dev/null"),
        "link_to_zero": tmp_path / "link-to-zero",
        "loop": tmp_path / "loop1",
        "dangling": tmp_path / "dangling",
    }


@pytest.mark.parametrize(
    "kind",
    ["missing", "fifo", "directory", "dev_zero", "dev_null", "link_to_zero", "loop", "dangling"],
)
def test_anything_but_a_regular_file_is_refused_unread(
    kind: str, odd_files: dict[str, Path]
) -> None:
    with pytest.raises(InputFileError) as caught:
        read_bounded(odd_files[kind], max_bytes=10, what="values file")
    assert caught.value.exit_code == 66
    assert "values file" in caught.value.message


def test_an_oversized_file_costs_at_most_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big"
    with path.open("wb") as handle:
        handle.truncate(512 * 1024 * 1024)  # sparse: 512 MiB claimed, nothing on disk
    read_sizes: list[int] = []
    real_readv = os.readv

    def spy(fd: int, buffers: list[memoryview]) -> int:
        count = real_readv(fd, buffers)
        read_sizes.append(count)
        return count

    monkeypatch.setattr(os, "readv", spy)
    with pytest.raises(UntrustedInputError) as caught:
        read_bounded(path, max_bytes=4096, what="values file")
    assert caught.value.reason == "input_too_large"
    assert sum(read_sizes) <= 4097


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=4000))
def test_read_bounded_returns_the_file_or_refuses(data: bytes, limit: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "f")
        path.write_bytes(data)
        if len(data) <= limit:
            assert read_bounded(path, max_bytes=limit, what="file") == data
        else:
            with pytest.raises(UntrustedInputError):
                read_bounded(path, max_bytes=limit, what="file")


# -- depth -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(min_value=1, max_value=8))
def test_json_depth_is_counted_exactly_with_brackets_inside_strings(
    value: object, limit: int
) -> None:
    text = json.dumps(value)
    if _depth(value) <= limit:
        check_json_depth(text, max_depth=limit)
        assert load_json(text, max_depth=limit) == value
    else:
        with pytest.raises(DocumentTooDeepError):
            check_json_depth(text, max_depth=limit)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"a":' * 50_000, "[" * 65 + "]" * 65, '[{"a": ' * 40 + "1" + "}]" * 40],
)
def test_deep_json_is_refused_with_its_place(text: str) -> None:
    with pytest.raises(DocumentTooDeepError) as caught:
        load_json(text, max_depth=64)
    assert caught.value.line == 1
    assert caught.value.column > 64


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\nb: *x\n",
        "a: &x [1]\n",
        "base: &b {k: v}\nmerged:\n  <<: *b\n",
        "- &a [x, x]\n- [*a, *a]\n",
        "a: " + "[" * 100_000,
        "a: " + "[" * 70 + "]" * 70,
        "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)) + "  " * 80 + "v: 1\n",
        "a: 1\na: 2\n",
        "1: one\n",
        "? [a]\n: b\n",
    ],
)
def test_yaml_rules(text: str) -> None:
    with pytest.raises(yaml.YAMLError):
        load_yaml(text, what="test document", max_depth=64)


def test_plain_yaml_loads() -> None:
    assert load_yaml("a: [1, {b: c}]\n", what="x") == {"a": [1, {"b": "c"}]}


def test_deep_toml_is_a_value_error() -> None:
    with pytest.raises(DocumentTooDeepError):
        load_toml("a = " + "[" * 100_000 + "]" * 100_000)
    assert load_toml("a = [[1]]") == {"a": [[1]]}


# -- where it is used ------------------------------------------------------------------------

DATA_FILES = [
    ("data.yaml", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a]\n"),
    ("data.yaml", "base: &b {k: v}\nmerged:\n  <<: *b\n"),
    ("data.yml", "a: " + "[" * 200),
    ("data.yaml", "a: " + "{b: " * 100 + "1" + "}" * 100),
    ("data.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("data.json", '{"a": ' + "[" * 65 + "]" * 65 + "}"),
    ("data.yaml", "when: 2020-01-01\n"),
    ("data.yaml", "blob: !!binary aGVsbG8=\n"),
    ("data.yaml", "n: .nan\n"),
    ("data.yaml", "a: 1\na: 2\n"),
    ("data.json", "[1, 2]"),
]


@pytest.mark.parametrize(("name", "text"), DATA_FILES)
def test_policy_data_is_bounded_and_plain(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "p.rego").write_text(NEVER_DENY)
    (tmp_path / name).write_text(text)
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(tmp_path)
    assert name in caught.value.message


def test_policy_file_names_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(NEVER_DENY)
    Path(os.fsdecode(bytes(tmp_path) + b"/\xff\xfe.rego")).write_text(NEVER_DENY)
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(tmp_path)
    assert "\\xff\\xfe.rego" in caught.value.message


def test_a_fifo_in_a_policy_directory_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(NEVER_DENY)
    os.mkfifo(tmp_path / "q.rego")
    with pytest.raises(PolicyCompileError, match=r"q\.rego"):
        check_policy_path(tmp_path)


def test_an_unlistable_policy_subdirectory_is_not_skipped(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root lists a mode 000 directory")
    (tmp_path / "p.rego").write_text(NEVER_DENY)
    hidden = tmp_path / "sub"
    hidden.mkdir(mode=0)
    try:
        with pytest.raises(PolicyCompileError, match="cannot list"):
            check_policy_path(tmp_path)
    finally:
        hidden.chmod(0o700)


SLOW_POLICY = (
    "package spacelift\nimport rego.v1\n"
    "n := count([1 | some i in numbers.range(1, 4000); some j in numbers.range(1, 4000); "
    "i * j == -1])\n"
    'deny contains "x" if n < 0\n'
)
HUNGRY_POLICY = (
    "package spacelift\nimport rego.v1\n"
    "n := count(numbers.range(0, 1000000000))\n"
    'deny contains "x" if n < 0\n'
)


def test_the_start_up_probe_runs_under_the_policy_timeout(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(SLOW_POLICY)
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(tmp_path, timeout_s=0.2)
    assert caught.value.reason == "policy_timeout"


def test_the_start_up_probe_runs_under_the_memory_limit(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text(HUNGRY_POLICY)
    with pytest.raises(PolicyCompileError) as caught:
        check_policy_path(tmp_path, timeout_s=30)
    assert caught.value.reason == "policy_engine_crashed"
    assert "memory limit" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        b"image: " + b"[" * 5000 + b"]" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b"{a: " * 3000 + b"1" + b"}" * 3000,
        b"image: &x busybox\nphases: *x\n",
    ],
)
def test_run_specs_are_bounded(text: bytes) -> None:
    with pytest.raises(RunSpecError):
        parse_run_spec(text)


@pytest.mark.parametrize(
    ("text", "toml"),
    [("a = " + "[" * 100_000 + "]" * 100_000, True), ("a: " + "[" * 100_000, False)],
)
def test_egress_policy_files_are_bounded(text: str, toml: bool) -> None:
    with pytest.raises(EgressPolicyError):
        parse_policy_text(text, toml=toml, source="policy")


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000,
        b'{"a":' * 50_000,
        b'{"fields":' + b"[" * 40 + b"]" * 40 + b"}",
    ],
)
def test_deep_audit_lines_are_refused_at_their_place(line: bytes) -> None:
    with pytest.raises(AuditFormatError) as caught:
        parse_record(line, segment="audit-0.jsonl", line=3)
    assert caught.value.reason == "audit_record_unparseable"
    assert caught.value.message.startswith("audit-0.jsonl line 4:")


def test_audit_verify_reports_a_deep_line_with_exit_65(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log"
    write_log(log, 6, checkpoint_records=3)
    segment = sorted(log.iterdir())[0]
    lines = segment.read_bytes().split(b"\n")
    lines[1] = b"[" * 200_000
    segment.write_bytes(b"\n".join(lines))
    key = tmp_path / "key.pem"
    from hardened_launcher.audit.keys import public_key_pem  # noqa: PLC0415

    key.write_text(public_key_pem(KEY.public_key()))
    code = main(["audit", "verify", str(log), "--public-key", str(key)])
    err = capsys.readouterr().err
    assert code == 65
    assert f"{segment.name} line 2:" in err
    assert "deeper than" in err
    with pytest.raises(AuditFormatError):
        verify_log(log, KEY.public_key())
    shutil.rmtree(log)


def test_fresh_install_audit_verify_is_not_an_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("HL_STATE_DIR", str(state))
    for name in [n for n in os.environ if n.startswith("SPACELIFT_")]:
        monkeypatch.delenv(name)
    assert main(["audit", "key"]) == 0
    capsys.readouterr()
    for _ in range(2):  # no audit directory yet; then an empty one
        code = main(["audit", "verify"])
        err = capsys.readouterr().err
        assert code == 66
        assert "modified" not in err
        assert "damaged" not in err
        assert "tamper" not in err
        (state / "audit").mkdir(exist_ok=True, mode=0o700)


def test_values_file_from_dev_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["redact", "--values-file", "/dev/zero"]) == 66
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1", "1e300", "nan", "inf", "-inf", "61", "0.001", ""])
@pytest.mark.parametrize("command", ["eval", "check"])
def test_policy_timeouts_out_of_range_are_usage_errors(
    tmp_path: Path, value: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.rego").write_text(NEVER_DENY)
    (tmp_path / "in.json").write_text("{}")
    argv = ["policy", command, "--timeout", value]
    argv += (
        ["--policy", str(tmp_path / "p.rego"), "--input", str(tmp_path / "in.json")]
        if command == "eval"
        else [str(tmp_path / "p.rego")]
    )
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 64
    assert "--timeout" in capsys.readouterr().err


def test_policy_check_timeout_bounds_the_probe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.rego").write_text(SLOW_POLICY)
    assert main(["policy", "check", str(tmp_path), "--timeout", "0.05"]) == 1
    assert "longer than 0.05 s" in capsys.readouterr().err
