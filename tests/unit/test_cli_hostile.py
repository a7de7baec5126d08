"""Every command, driven with hostile arguments and files: no traceback, never exit 70, one line.

The command table is read from the real parser, so a new command is driven without editing this
file. Each argument that names a file gets one of the hostile files below (missing, a directory,
a FIFO, /dev/zero, a 64 MiB file, binary garbage, a non-UTF-8 name, JSON/YAML nested 100 000
deep, YAML aliases, a symlink loop, a dangling link, an empty file) or, to reach deeper code, a
valid file of the kind the command expects. Every other argument gets hostile text (empty, a
lone dash, terminal escapes, bidi overrides, 10 000 characters, an undecodable byte) or a hostile
number. The contract, for every command and every input:

* the exit code is never 70 (an internal error) and no traceback is printed;
* a failure prints exactly one ``error:`` line (argparse's usage line aside);
* a file named on the command line that is missing or unreadable exits 66 on every command.

Commands run in-process through ``main(argv)``; a sample runs as a real process too (the
interpreter's own handling of stdout, broken pipes and non-UTF-8 argv).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import resource
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardened_launcher import cli
from hardened_launcher.cli import build_parser, main
from hardened_launcher.identity.keys import PoolPrivateKey

# Commands that start long-lived services or a whole demo stack; each is driven only with
# arguments that make it stop before it starts (see test_long_running_commands_stop_on_hostile).
LONG_RUNNING = {("demo",), ("controlplane", "serve"), ("start",)}

# Argument destinations that hold a path even though argparse types them as plain text.
PATH_DESTS = {"key_out", "csr_out", "dir", "out", "config", "paths", "path", "spec", "policy"}

NEVER_DENY = 'package spacelift\nimport rego.v1\ndeny contains "x" if false\n'
REDACT = ("redact", "--values-file")

HOSTILE_TEXT = [
    "",
    "-",
    "--",
    "\x1b[2J\x1b]0;owned\x07",
    "a\rb\nc",
    "\u202eevil",
    "x" * 10_000,
    "../../../../etc/passwd",
    "\udcff\udcfe",
    "%s%n{0}",
    "0",
    "NaN",
]
HOSTILE_NUMBERS = ["0", "-1", "99999999", "1e300", "nan", "inf", "-0", "9" * 400, "0x10", " 7 "]

FILE_KINDS = (
    "missing",
    "directory",
    "fifo",
    "dev_zero",
    "huge",
    "garbage",
    "non_utf8_name",
    "deep_json",
    "deep_yaml",
    "alias_yaml",
    "symlink_loop",
    "dangling",
    "empty",
)
VALID_KINDS = ("policy_dir", "input_json", "csr", "run_spec", "cp_dir", "values")


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    actions: tuple[argparse.Action, ...]


def _leaf_commands() -> list[Command]:
    found: list[Command] = []

    def walk(parser: argparse.ArgumentParser, words: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*words, name))
                return
        actions = tuple(
            a
            for a in parser._actions
            if not isinstance(a, argparse._HelpAction | argparse._VersionAction)
        )
        found.append(Command(words=words, actions=actions))

    walk(build_parser(), ())
    return found


COMMANDS = _leaf_commands()
SHORT_COMMANDS = [c for c in COMMANDS if c.words not in LONG_RUNNING]


def _is_path(action: argparse.Action) -> bool:
    return action.type is Path or action.dest in PATH_DESTS


# -- the hostile (and valid) files ----------------------------------------------------------


def _small_csr(path: Path) -> None:
    from hardened_launcher.identity.csr import create_csr, csr_to_pem, parse_subject  # noqa: PLC0415

    key = PoolPrivateKey.generate(rsa_key_bits=2048)
    path.write_bytes(csr_to_pem(create_csr(key, parse_subject("/CN=pool"))))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    made: dict[str, Path] = {"missing": root / "does-not-exist", "dev_zero": Path("/dev/zero")}
    (root / "dir").mkdir()
    made["directory"] = root / "dir"
    os.mkfifo(root / "fifo")
    made["fifo"] = root / "fifo"
    try:  # the null device's numbers; root only (otherwise a second FIFO stands in)
        os.mknod(root / "device", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        os.mkfifo(root / "device")
    made["device"] = root / "device"
    with (root / "huge").open("wb") as handle:  # sparse: larger than every input limit
        handle.truncate(64 * 1024 * 1024 + 1)
    made["huge"] = root / "huge"
    (root / "garbage").write_bytes(bytes(range(256)) * 64 + b"\xff\xfe\x00\x1b[2J")
    made["garbage"] = root / "garbage"
    odd = Path(os.fsdecode(bytes(root) + b"/\xff\xfe-name.yaml"))
    odd.write_bytes(b"a: 1\n")
    made["non_utf8_name"] = odd
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    made["deep_json"] = root / "deep.json"
    (root / "deep.yaml").write_text("a: " + "[" * 100_000)
    made["deep_yaml"] = root / "deep.yaml"
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    laughs += [f"{chr(98 + i)}: &{chr(98 + i)} [" + f"*{chr(97 + i)}, " * 9 + "]" for i in range(8)]
    (root / "alias.yaml").write_text("\n".join(laughs) + "\n")
    made["alias_yaml"] = root / "alias.yaml"
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    made["symlink_loop"] = root / "loop1"
    (root / "dangling").symlink_to(root / "nowhere")
    made["dangling"] = root / "dangling"
    (root / "empty").write_bytes(b"")
    made["empty"] = root / "empty"
    # Valid inputs of each kind, so that hostile values meet code past the first check.
    policy = root / "policy"
    policy.mkdir()
    (policy / "p.rego").write_text(
        'package spacelift\nimport rego.v1\ndeny contains "no" if input.deny == true\n'
    )
    (policy / "data.yaml").write_text("allowed: [a, b]\n")
    made["policy_dir"] = policy
    (root / "input.json").write_text('{"deny": false}')
    made["input_json"] = root / "input.json"
    _small_csr(root / "pool.csr")
    made["csr"] = root / "pool.csr"
    (root / "spec.yaml").write_text(
        "image: busybox\nphases:\n  - name: plan\n    commands: [echo hi]\n"
    )
    made["run_spec"] = root / "spec.yaml"
    (root / "values").write_text("s3cr3t-value\n")
    made["values"] = root / "values"
    cp = root / "cp"
    with _isolated(root):
        assert main(["controlplane", "init", "--dir", str(cp), "--no-broker"]) == 0
    made["cp_dir"] = cp
    (root / "outputs").mkdir()
    made["_root"] = root
    return made


# -- running one command ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class _HungError(BaseException):  # not caught by main's handlers
    pass


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _HungError


@contextlib.contextmanager
def _isolated(root: Path) -> Iterator[None]:
    """No SPACELIFT_/HL_ settings from the caller; state under ``root``; small RSA keys."""
    saved = dict(os.environ)
    original = PoolPrivateKey.generate.__func__  # type: ignore[attr-defined]

    def generate(cls: type[PoolPrivateKey], *, rsa_key_bits: int = 4096) -> PoolPrivateKey:
        del rsa_key_bits
        return original(cls, rsa_key_bits=2048)  # type: ignore[no-any-return]

    try:
        for name in list(os.environ):
            if name.startswith(("SPACELIFT_", "HL_", "XDG_")):
                del os.environ[name]
        os.environ["HL_STATE_DIR"] = str(root / "state")
        os.environ["HL_CP_DIR"] = str(root / "no-cp-here")
        os.environ["HOME"] = str(root)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PoolPrivateKey, "generate", classmethod(generate))
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(argv: list[str], root: Path, *, stdin: bytes = b"") -> Outcome:
    out, err = io.BytesIO(), io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace")
    stderr = io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace")
    fake_in = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        with _isolated(root), pytest.MonkeyPatch.context() as patch:
            patch.chdir(root / "outputs")  # default output paths (keygen's) land here
            patch.setattr(sys, "stdout", stdout)
            patch.setattr(sys, "stderr", stderr)
            patch.setattr(sys, "stdin", fake_in)
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except _HungError:
                pytest.fail(f"hung for 60 s: {argv!r}")
            stdout.flush()
            stderr.flush()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return Outcome(
        code=code,
        out=out.getvalue().decode("utf-8", "replace"),
        err=err.getvalue().decode("utf-8", "replace"),
    )


def assert_contract(argv: list[str], outcome: Outcome) -> None:
    shown = f"{argv!r}: exit {outcome.code}\n{outcome.err[-2000:]}"
    assert outcome.code != 70, shown
    assert "Traceback" not in outcome.err, shown
    assert "internal error" not in outcome.err, shown
    errors = [line for line in outcome.err.splitlines() if "error:" in line]
    if argv[:1] == ["doctor"] and outcome.code != 64:
        assert not errors, shown  # doctor reports in its table, one row per check
    elif outcome.code in (64, 65, 66, 69, 75, 78):
        assert len(errors) == 1, shown
    else:
        assert len(errors) <= 1, shown
    # What reaches the terminal on stderr never carries a raw escape or carriage return.
    assert "\x1b" not in outcome.err, shown
    assert "\r" not in outcome.err, shown


# -- argv generation -------------------------------------------------------------------------


# Outputs: never a fixture file (a forced keygen would replace it), but every non-regular kind.
OUTPUT_DESTS = {"key_out", "csr_out", "out", "log"}
# "device" is a character device made for the test (never a real /dev node: a keygen that
# replaced it would break the host).
OUTPUT_KINDS = ("directory", "fifo", "device", "symlink_loop")


def _fresh_name() -> st.SearchStrategy[str]:
    return st.uuids().map(lambda u: f"fresh-{u.hex}")


def _values(
    action: argparse.Action, files: dict[str, Path], words: tuple[str, ...] = ()
) -> st.SearchStrategy[str]:
    if action.dest in OUTPUT_DESTS or (action.dest == "dir" and "init" in words):
        fresh = _fresh_name().map(lambda name: str(files["_root"] / "outputs" / name))
        return st.one_of(fresh, st.sampled_from(OUTPUT_KINDS).map(lambda k: str(files[k])))
    if _is_path(action):
        kinds = st.sampled_from(FILE_KINDS + VALID_KINDS)
        return kinds.map(lambda kind: str(files[kind]))
    if action.choices is not None:
        return st.sampled_from([str(c) for c in action.choices] + HOSTILE_TEXT[:3])
    if action.type in (int, float) or getattr(action.type, "__name__", "") in ("int", "_timeout"):
        return st.sampled_from(HOSTILE_NUMBERS)
    return st.sampled_from(HOSTILE_TEXT)


@st.composite
def argvs(draw: st.DrawFn, command: Command, files: dict[str, Path]) -> list[str]:
    argv = list(command.words)
    positionals: list[str] = []
    for action in command.actions:
        if action.dest in ("verbose",) and action.option_strings == ["-v", "--verbose"]:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            if draw(st.booleans()):
                argv.append(action.option_strings[0])
            continue
        if not action.option_strings:
            count = 1 if action.nargs in (None, "?") else draw(st.integers(0, 2))
            if action.nargs == "?" and draw(st.booleans()):
                count = 0
            positionals += [draw(_values(action, files, command.words)) for _ in range(count)]
            continue
        if action.required or draw(st.booleans()):
            repeat = 2 if isinstance(action, argparse._AppendAction) and draw(st.booleans()) else 1
            for _ in range(repeat):
                argv += [action.option_strings[-1], draw(_values(action, files, command.words))]
    if positionals:
        argv.append("--")
        argv += positionals
    return argv


# -- the tests -------------------------------------------------------------------------------


def test_every_command_is_driven() -> None:
    names = {" ".join(c.words) for c in COMMANDS}
    assert {"keygen", "redact", "policy eval", "audit verify", "controlplane pool create"} <= names
    assert len(SHORT_COMMANDS) >= 25


@pytest.mark.parametrize("command", SHORT_COMMANDS, ids=lambda c: "-".join(c.words))
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_hostile_arguments_never_crash(
    command: Command, files: dict[str, Path], data: st.DataObject
) -> None:
    argv = data.draw(argvs(command, files))
    assert_contract(argv, run_cli(argv, files["_root"]))


def _file_arguments(command: Command) -> list[argparse.Action]:
    return [a for a in command.actions if a.type is Path or a.dest in PATH_DESTS]


FILE_COMMANDS = [
    c
    for c in SHORT_COMMANDS
    if any(a.type is Path for a in c.actions)
    and c.words not in {("keygen",), ("audit", "export"), ("policy", "library")}  # outputs
]


def _argv_with(command: Command, path: str, files: dict[str, Path]) -> list[str]:
    """Every input-file argument ``path``; other required arguments valid or plain."""
    argv = list(command.words)
    positionals: list[str] = []
    for action in command.actions:
        if action.type is Path:
            if action.option_strings:
                argv += [action.option_strings[-1], path]
            else:
                positionals.append(path)
        elif action.required:
            value = str(files["cp_dir"]) if action.dest == "dir" else "p1"
            argv += [action.option_strings[-1], value]
    if command.words[:1] == ("controlplane",) and "--dir" not in argv:
        argv += ["--dir", str(files["cp_dir"])]
    return [*argv, "--", *positionals] if positionals else argv


UNREADABLE_KINDS = ("missing", "directory", "fifo", "dev_zero", "symlink_loop", "dangling")


@pytest.mark.parametrize("kind", FILE_KINDS)
@pytest.mark.parametrize("command", FILE_COMMANDS, ids=lambda c: "-".join(c.words))
def test_each_hostile_file_on_each_command(
    command: Command, kind: str, files: dict[str, Path]
) -> None:
    argv = _argv_with(command, str(files[kind]), files)
    outcome = run_cli(argv, files["_root"])
    assert_contract(argv, outcome)
    takes_directory = command.words[0] in ("policy", "audit", "exec")
    if kind == "directory" and takes_directory:
        return  # a policy, audit log or releases directory is a directory
    if kind in (*UNREADABLE_KINDS, "huge"):
        assert outcome.code != 0, argv
    if kind in UNREADABLE_KINDS and outcome.code not in (64, 78):
        # 64/78: a usage or settings problem was found before any file was opened.
        assert outcome.code == 66, f"{argv!r}: exit {outcome.code}\n{outcome.err}"


@pytest.mark.parametrize("via_link", [False, True])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_keygen_never_writes_through_a_hostile_target(
    kind: str, via_link: bool, files: dict[str, Path]
) -> None:
    target = files[kind]
    if via_link:
        link = files["_root"] / f"link-to-{kind}"
        if not link.is_symlink():
            link.symlink_to(target)
        target = link
    before = target.lstat()
    pointed = files[kind].lstat()
    for flag in ("--key-out", "--csr-out"):
        fresh = str(files["_root"] / "outputs" / f"fresh-{kind}-{via_link}-{flag}")
        other = "--csr-out" if flag == "--key-out" else "--key-out"
        argv = ["keygen", flag, str(target), other, fresh]
        for force in ([], ["--force"]):
            outcome = run_cli(argv + force, files["_root"])
            assert_contract(argv, outcome)
            assert outcome.code in (64, 78), outcome.err
            after = target.lstat()
            assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
            still = files[kind].lstat()
            assert (still.st_ino, still.st_mode) == (pointed.st_ino, pointed.st_mode)
            assert not Path(fresh).exists()  # checked before any key was generated


def test_policy_data_aliases_and_depth_are_refused_quickly(files: dict[str, Path]) -> None:
    root = files["_root"]
    for kind in ("alias_yaml", "deep_yaml", "deep_json"):
        policy = root / f"policy-{kind}"
        policy.mkdir(exist_ok=True)
        (policy / "p.rego").write_text(
            'package spacelift\nimport rego.v1\ndeny contains "x" if false\n'
        )
        suffix = ".json" if kind == "deep_json" else ".yaml"
        (policy / f"data{suffix}").write_bytes(files[kind].read_bytes())
        outcome = run_cli(["policy", "check", str(policy)], root)
        assert_contract(["policy", "check", str(policy)], outcome)
        assert outcome.code == 1
        assert f"data{suffix}" in outcome.err


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_long_running_commands_stop_on_hostile(kind: str, files: dict[str, Path]) -> None:
    root = files["_root"]
    for argv in (["controlplane", "serve", "--dir", str(files[kind])], ["start"]):
        outcome = run_cli(argv, root)
        assert_contract(argv, outcome)
        assert outcome.code in (66, 78), (argv, outcome.err)


# -- as real processes -------------------------------------------------------------------------


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def _process(
    argv: list[str | bytes], root: Path, **kwargs: object
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACELIFT_", "HL_"))}
    env.update(HL_STATE_DIR=str(root / "state"), HL_CP_DIR=str(root / "no-cp-here"))
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "hardened_launcher", *argv],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
        preexec_fn=_limits,
        **kwargs,
    )


SAMPLE = [
    ["redact", "--values-file", "dev_zero"],
    ["redact", "--values-file", "huge"],
    ["policy", "check", "non_utf8_name_dir"],
    ["policy", "eval", "--policy", "policy_dir", "--input", "deep_json"],
    ["audit", "verify", "--public-key", "fifo", "directory"],
    ["verify-binary", "fifo", "--sums", "dev_zero", "--sig", "missing", "--keyring", "huge"],
    [
        "controlplane",
        "pool",
        "create",
        "--dir",
        "cp_dir",
        "--name",
        "p",
        "--csr",
        "csr",
        "--days",
        "99999999",
    ],
    ["settings", "show", "--config", "fifo"],
]


@pytest.mark.parametrize("sample", SAMPLE, ids=lambda s: "-".join(s[:2]))
def test_sample_as_a_process(sample: list[str], files: dict[str, Path]) -> None:
    root = files["_root"]
    odd_dir = root / "odd-policy"
    if not odd_dir.exists():
        odd_dir.mkdir()
        (odd_dir / "p.rego").write_text(
            'package spacelift\nimport rego.v1\ndeny contains "x" if false\n'
        )
        (Path(os.fsdecode(bytes(odd_dir) + b"/\xff.rego"))).write_text("package spacelift\n")
    named = {**files, "non_utf8_name_dir": odd_dir}
    argv: list[str | bytes] = [str(named[a]) if a in named else a for a in sample]
    done = _process(argv, root)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode not in (70, 1) or sample[0] == "policy", err
    assert done.returncode != 70, err
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


def test_non_utf8_argv_as_a_process(files: dict[str, Path]) -> None:
    root = files["_root"]
    for argv in (
        [b"redact", b"--values-file", b"/nonexistent-\xff"],
        [b"policy", b"check", b"/nonexistent-\xff"],
        [b"keygen", b"--key-out", bytes(root) + b"/no-dir-\xff/k"],
        [b"audit", b"verify", b"--public-key", b"\xff", b"\xfe"],
    ):
        done = _process(list(argv), root)
        err = done.stderr.decode("utf-8", "replace")
        assert done.returncode in (66, 78), (argv, err)
        assert "Traceback" not in err
        assert "\\xff" in err or "\\xfe" in err, err  # shown escaped, not as a raw byte


def test_broken_pipe_is_quiet(files: dict[str, Path]) -> None:
    reader = subprocess.Popen(
        ["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert reader.stdin is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACELIFT_", "HL_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hardened_launcher",
            "redact",
            "--values-file",
            str(files["values"]),
        ],
        input=b"line of text that is not secret\n" * 200_000,
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        env=env,
        timeout=120,
        check=False,
    )
    reader.stdin.close()
    reader.wait(timeout=30)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 141, err
    assert "Traceback" not in err
    assert "error" not in err.lower(), err


@pytest.mark.parametrize("via_link", [False, True])
@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_audit_export_never_replaces_a_hostile_target(
    kind: str, via_link: bool, files: dict[str, Path]
) -> None:
    from hardened_launcher.audit.keys import public_key_pem  # noqa: PLC0415
    from tests.unit.audit_support import KEY, write_log  # noqa: PLC0415

    root = files["_root"]
    log = root / "export-log"
    if not log.exists():
        write_log(log, 5, checkpoint_records=2)
        (root / "export-key.pem").write_text(public_key_pem(KEY.public_key()))
    target = files[kind]
    if via_link:
        target = root / f"export-link-to-{kind}"
        if not target.is_symlink():
            target.symlink_to(files[kind])
    before = target.lstat()
    pointed = files[kind].lstat()
    argv = ["audit", "export", str(log), "--public-key", str(root / "export-key.pem")]
    outcome = run_cli([*argv, "--format", "jsonl", "--out", str(target)], root)
    assert_contract(argv, outcome)
    assert outcome.code in (64, 69), outcome.err
    assert (target.lstat().st_ino, target.lstat().st_mode) == (before.st_ino, before.st_mode)
    assert (files[kind].lstat().st_ino, files[kind].lstat().st_mode) == (
        pointed.st_ino,
        pointed.st_mode,
    )
    fresh = root / "outputs" / f"export-{kind}-{via_link}.jsonl"
    assert run_cli([*argv, "--format", "jsonl", "--out", str(fresh)], root).code == 0
    assert fresh.read_bytes().count(b"\n") >= 5


@pytest.mark.parametrize("argv", [["settings", "table"], ["network", "requirements"]])
def test_a_full_disk_under_stdout_is_not_a_bug(argv: list[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with Path("/dev/full").open("wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "hardened_launcher", *argv],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 69, err
    assert err.count("error:") == 1
    assert "No space left" in err


@pytest.mark.parametrize(
    "kind", [*(k for k in OUTPUT_KINDS if k != "directory"), "dev_zero", "garbage"]
)
def test_policy_library_out_refuses_hostile_targets_in_one_line(
    kind: str, files: dict[str, Path]
) -> None:
    """``--out`` is a directory to create or fill: a FIFO, a device, a file or a link loop in
    the way is one usage error, never a traceback or exit 70, and nothing is written."""
    target = files[kind]
    argv = ["policy", "library", "--out", str(target)]
    outcome = run_cli(argv, files["_root"])
    assert_contract(argv, outcome)
    assert outcome.code == 64, f"{argv!r}: exit {outcome.code}\n{outcome.err}"
    assert outcome.err.count("error:") == 1


@pytest.mark.parametrize(
    "code", [errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EACCES, errno.ENOENT]
)
def test_a_refused_path_no_command_named_is_an_input_error_not_a_bug(
    code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last line of defence: an ``OSError`` about a path that reaches the top level (a
    command forgot to name it) exits 66 with the path and the system's reason, not 70."""

    def refuse(_args: object) -> int:
        raise OSError(code, os.strerror(code), "/some/\x1b[31mpath")

    parser = cli.build_parser(["docs"])
    args = parser.parse_args(["docs"])
    args.handler = refuse
    monkeypatch.setattr(cli, "build_parser", lambda _argv: _Fixed(args))
    assert cli.main(["docs"]) == 66
    err = capsys.readouterr().err
    assert err.startswith("error: cannot use /some/")
    assert os.strerror(code) in err
    assert "\x1b" not in err
    assert "internal error" not in err


class _Fixed:
    def __init__(self, args: object) -> None:
        self._args = args

    def parse_args(self, _argv: object) -> object:
        return self._args
